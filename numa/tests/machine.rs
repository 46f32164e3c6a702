//! Checks against this machine's kernel: the memory-policy syscalls really place and report
//! pages, the topology matches `numactl --hardware` where numactl is installed, and the
//! fast current-CPU paths agree with `getcpu` and `sched_getcpu`.

use std::process::Command;

use tessera_numa::{
    CpuId, CpuSource, MbindFlags, NodeId, NodeMask, NumaError, Policy, Source, Topology,
};

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(pages: usize) -> Mapping {
        let len = pages * page_size();
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap failed");
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    fn pages(&self) -> Vec<*const u8> {
        (0..self.len / page_size())
            // SAFETY: every offset is inside the mapping.
            .map(|i| unsafe { self.ptr.add(i * page_size()) } as *const u8)
            .collect()
    }

    fn touch(&self) {
        for p in self.pages() {
            // SAFETY: `p` is a writable page of this mapping.
            unsafe { (p as *mut u8).write_volatile(1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn node0() -> NodeMask {
    NodeMask::single(NodeId::ZERO)
}

#[test]
fn this_machine_has_a_sysfs_topology_covering_our_cpus() {
    let t = Topology::get();
    assert_eq!(t.source(), Source::Sysfs);
    assert!(t.node_count() >= 1);
    assert!(t.node(NodeId::ZERO).is_some() || t.node_ids().first().is_some());
    for cpu in t.allowed_cpus().iter() {
        assert!(t.node_of_cpu(cpu).is_some(), "{cpu:?} has no node");
    }
    // The static is the same data as a fresh read.
    let fresh = Topology::read_from(b"/sys");
    assert_eq!(fresh.node_ids(), t.node_ids());
    for node in fresh.nodes() {
        assert_eq!(node.cpus(), t.node(node.id()).unwrap().cpus());
    }
}

#[test]
fn racing_first_calls_see_one_topology() {
    let ptrs: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Topology::get() as *const Topology as usize))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]));
    assert!(Topology::get().node_count() >= 1);
}

#[test]
fn mbind_bind_node0_places_and_reports_every_page() {
    let m = Mapping::new(64);
    tessera_numa::mbind(m.ptr, m.len, &Policy::Bind(node0()), MbindFlags::STRICT).unwrap();

    let pages = m.pages();
    let mut status = vec![i32::MIN; pages.len()];
    tessera_numa::nodes_of_pages(&pages, &mut status).unwrap();
    assert!(
        status.iter().all(|&s| s == -libc::ENOENT),
        "untouched pages are not present yet: {status:?}"
    );

    m.touch();
    assert_eq!(
        tessera_numa::policy_of(m.ptr).unwrap(),
        Policy::Bind(node0())
    );
    // SAFETY: the last page of the mapping.
    let last = unsafe { m.ptr.add(m.len - 1) };
    assert_eq!(
        tessera_numa::policy_of(last).unwrap(),
        Policy::Bind(node0())
    );
    assert_eq!(tessera_numa::node_of_address(m.ptr).unwrap(), NodeId::ZERO);

    tessera_numa::nodes_of_pages(&pages, &mut status).unwrap();
    assert!(status.iter().all(|&s| s == 0), "{status:?}");
    assert_eq!(
        tessera_numa::node_of_page(pages[7]).unwrap(),
        Some(NodeId::ZERO)
    );
}

#[test]
fn each_policy_round_trips_through_get_mempolicy() {
    for policy in [
        Policy::Preferred(NodeId::ZERO),
        Policy::Interleave(node0()),
        Policy::Local,
        Policy::Bind(node0()),
    ] {
        let m = Mapping::new(4);
        tessera_numa::mbind(m.ptr, m.len, &policy, MbindFlags::NONE).unwrap();
        assert_eq!(tessera_numa::policy_of(m.ptr).unwrap(), policy);
        m.touch();
        assert_eq!(
            tessera_numa::node_of_page(m.ptr).unwrap(),
            Some(NodeId::ZERO)
        );
    }
    let m = Mapping::new(1);
    assert_eq!(tessera_numa::policy_of(m.ptr).unwrap(), Policy::Default);
}

#[test]
fn thread_policy_is_per_thread() {
    std::thread::spawn(|| {
        tessera_numa::set_mempolicy(&Policy::Interleave(node0())).unwrap();
        assert_eq!(
            tessera_numa::thread_policy().unwrap(),
            Policy::Interleave(node0())
        );
        tessera_numa::set_mempolicy(&Policy::Default).unwrap();
        assert_eq!(tessera_numa::thread_policy().unwrap(), Policy::Default);
    })
    .join()
    .unwrap();
    assert!(tessera_numa::mems_allowed().unwrap().contains(NodeId::ZERO));
}

#[test]
fn bad_requests_are_errors_with_errno() {
    let m = Mapping::new(2);
    // A node that does not exist on this machine.
    let missing = Topology::get()
        .node_ids()
        .iter()
        .last()
        .map_or(1, |n| n.get() + 1);
    let err = tessera_numa::mbind(
        m.ptr,
        m.len,
        &Policy::Bind(NodeMask::single(NodeId::new(missing))),
        MbindFlags::NONE,
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL, "{err}");
    // An empty bind mask.
    let err = tessera_numa::mbind(
        m.ptr,
        m.len,
        &Policy::Bind(NodeMask::EMPTY),
        MbindFlags::NONE,
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    // A misaligned address.
    // SAFETY: one byte into the mapping.
    let odd = unsafe { m.ptr.add(1) };
    let err = tessera_numa::mbind(odd, 16, &Policy::Local, MbindFlags::NONE).unwrap_err();
    assert!(matches!(
        err,
        NumaError::Os {
            call: tessera_numa::Call::Mbind,
            errno: libc::EINVAL
        }
    ));
    // An address with no mapping. Not one we unmapped ourselves: another test's thread may
    // map something there again before the kernel is asked (it did, in CI, turning EFAULT
    // into ENOENT). The kernel looks the address up in this process's VMAs in both
    // calls and fails with EFAULT when none covers it, which is what a page no thread can
    // ever map gives too.
    let addr = never_mapped();
    let os = |call, errno| NumaError::Os { call, errno };
    assert_eq!(
        tessera_numa::policy_of(addr),
        Err(os(tessera_numa::Call::GetMempolicy, libc::EFAULT))
    );
    let mut status = [0];
    tessera_numa::nodes_of_pages(&[addr], &mut status).unwrap();
    assert_eq!(status[0], -libc::EFAULT);
    // `node_of_page` turns that per-page status into an error of its own.
    assert_eq!(
        tessera_numa::node_of_page(addr),
        Err(os(tessera_numa::Call::MovePages, libc::EFAULT))
    );
}

/// A page-aligned address that no thread of this process can ever have mapped: the first
/// page of the kernel's half of the address space. User mappings end below 2^47 (x86_64
/// with 4-level paging, aarch64 with 48-bit VAs) or 2^56 / 2^52 (5-level paging, 52-bit
/// VAs); addresses with the top 17 bits set belong to the kernel under every one of those
/// layouts. Bits 55 and 63 are both set, so the address also stays a kernel one when the
/// kernel strips a tag from it (aarch64 TBI sign-extends bit 55; x86 LAM leaves kernel
/// addresses alone) and cannot alias page 0, which a root process may map.
fn never_mapped() -> *const u8 {
    (usize::MAX << 47) as *const u8
}

// ---------------------------------------------------------------------------------------
// numactl cross-check
// ---------------------------------------------------------------------------------------

/// What `numactl --hardware` says: node ids, CPUs per node, distance matrix.
struct Numactl {
    nodes: Vec<u16>,
    cpus: Vec<(u16, Vec<u32>)>,
    distances: Vec<Vec<u8>>,
}

fn numactl_hardware() -> Option<Numactl> {
    let out = Command::new("numactl").arg("--hardware").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut nodes = Vec::new();
    let mut cpus = Vec::new();
    let mut distances = Vec::new();
    let mut in_distances = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("available: ") {
            // "1 nodes (0)" or "2 nodes (0-1)" or "2 nodes (0,2)"
            let list = rest.split('(').nth(1)?.trim_end_matches(')');
            for part in list.split(',') {
                let mut r = part.split('-').map(|x| x.parse::<u16>().unwrap());
                let lo = r.next()?;
                let hi = r.next().unwrap_or(lo);
                nodes.extend(lo..=hi);
            }
        } else if line.starts_with("node ") && line.contains(" cpus:") {
            let id: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            let list = line.split(':').nth(1)?;
            let v = list
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect();
            cpus.push((id, v));
        } else if line.starts_with("node distances:") {
            in_distances = true;
        } else if in_distances && line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            let row = line.split(':').nth(1)?;
            distances.push(row.split_whitespace().map(|d| d.parse().unwrap()).collect());
        }
    }
    Some(Numactl {
        nodes,
        cpus,
        distances,
    })
}

#[test]
fn topology_matches_numactl_hardware() {
    let Some(hw) = numactl_hardware() else {
        println!("SKIP: numactl is not installed (apt-get install -y numactl); not compared");
        return;
    };
    let t = Topology::read_from(b"/sys");
    println!("comparing with numactl: {} node(s)", hw.nodes.len());
    let ours: Vec<u16> = t.node_ids().iter().map(NodeId::get).collect();
    assert_eq!(ours, hw.nodes, "node ids");
    assert_eq!(t.node_count(), hw.nodes.len());
    for (id, cpus) in &hw.cpus {
        // numactl lists the node's CPUs that are configured (it reads the same cpumap).
        let node = t.node(NodeId::new(*id)).expect("node numactl lists");
        let ours: Vec<u32> = node.cpus().iter().map(CpuId::get).collect();
        assert_eq!(&ours, cpus, "cpus of node {id}");
    }
    assert_eq!(hw.distances.len(), hw.nodes.len());
    for (i, row) in hw.distances.iter().enumerate() {
        for (j, d) in row.iter().enumerate() {
            let from = NodeId::new(hw.nodes[i]);
            let to = NodeId::new(hw.nodes[j]);
            assert_eq!(t.distance(from, to), *d, "distance {from:?}->{to:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Current CPU and node
// ---------------------------------------------------------------------------------------

fn pin_to(cpu: CpuId) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for ids below
    // CPU_SETSIZE (checked); pid 0 is this thread.
    unsafe {
        if cpu.index() >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu.index(), &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Pinned to one CPU, a thread cannot migrate, so every source must give the same answer.
fn check_pinned_agreement() {
    let t = Topology::get();
    let cpus: Vec<CpuId> = t
        .allowed_cpus()
        .intersection(t.online_cpus())
        .iter()
        .collect();
    assert!(!cpus.is_empty());
    std::thread::scope(|s| {
        for &cpu in &cpus {
            s.spawn(move || {
                assert!(pin_to(cpu), "could not pin to {cpu:?}");
                let (gc, gn) = tessera_numa::getcpu().unwrap();
                // SAFETY: no preconditions.
                let sched = unsafe { libc::sched_getcpu() };
                assert_eq!(gc, cpu);
                assert_eq!(sched as u32, cpu.get());
                assert_eq!(tessera_numa::current_cpu(), cpu);
                assert_eq!(tessera_numa::current_node(), gn);
                assert_eq!(tessera_numa::current_cpu_and_node(), (cpu, gn));
                assert_eq!(t.node_of_cpu(cpu), Some(gn));
            });
        }
    });
}

#[test]
fn current_cpu_and_node_agree_with_getcpu_and_sched_getcpu() {
    check_pinned_agreement();
    // Unpinned the answer is only a hint, but it is always a real CPU and node.
    let (cpu, node) = tessera_numa::current_cpu_and_node();
    assert!(Topology::get().online_cpus().contains(cpu));
    assert!(Topology::get().node(node).is_some());
}

/// One thread moved from CPU to CPU: each read must see the CPU it runs on now, so the
/// rseq field is re-read on every call rather than cached.
#[test]
fn current_cpu_follows_the_thread_when_it_migrates() {
    let t = Topology::get();
    let cpus: Vec<CpuId> = t
        .allowed_cpus()
        .intersection(t.online_cpus())
        .iter()
        .collect();
    std::thread::spawn(move || {
        for _round in 0..3 {
            for &cpu in &cpus {
                assert!(pin_to(cpu));
                assert_eq!(tessera_numa::current_cpu(), cpu);
                assert_eq!(tessera_numa::current_cpu_and_node().0, cpu);
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn rseq_is_the_fast_path_here() {
    // glibc 2.36 registers rseq unless told not to; this kernel (6.3+) maintains node_id.
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        println!("SKIP: GLIBC_TUNABLES is set; rseq may be disabled on purpose");
        return;
    }
    let source = tessera_numa::cpu_source();
    println!("cpu source: {source:?}");
    assert_ne!(source, CpuSource::Syscall);
}

/// Re-runs this test binary with rseq disabled in glibc, so the `getcpu` fallback is the
/// path under test, and checks it still agrees with the kernel.
#[test]
fn getcpu_fallback_without_rseq_registration() {
    if std::env::var_os("TESSERA_NUMA_CHILD").is_some() {
        assert_eq!(tessera_numa::cpu_source(), CpuSource::Syscall);
        check_pinned_agreement();
        println!("child: fallback path agreed");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "getcpu_fallback_without_rseq_registration",
            "--nocapture",
        ])
        .env("TESSERA_NUMA_CHILD", "1")
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child: fallback path agreed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
