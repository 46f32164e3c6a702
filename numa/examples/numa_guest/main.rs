//! The program `.ci/numa-vm.sh` runs inside a QEMU guest with two NUMA nodes, to prove real
//! multi-node placement (ARCHITECTURE.md#numa: this development machine has one node).
//!
//! It runs a list of named checks, prints `CHECK <name>: PASS|FAIL <detail>` for each and a
//! final verdict line, `NUMA-VM: PASS ...` or `NUMA-VM: FAIL ...`, which the script greps.
//! To add a check (e.g. the allocator's per-node heaps), write a `fn() -> CheckResult` and
//! add it to [`CHECKS`]. A check that panics counts as failed.
//!
//! Usage: `numa_guest [--nodes N]` (default 2: the node count the guest must have).

mod alloc;

use std::panic;
use std::thread;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

use tessera_numa::{CpuId, CpuSet, MbindFlags, NodeId, NodeMask, Policy, Topology};

/// `Ok(detail)` for a pass, `Err(detail)` for a failure.
type CheckResult = Result<String, String>;

/// A named check.
struct Check {
    name: &'static str,
    run: fn(&Ctx) -> CheckResult,
}

/// What every check may need.
struct Ctx {
    topology: &'static Topology,
    expect_nodes: usize,
}

const CHECKS: &[Check] = &[
    Check {
        name: "topology",
        run: check_topology,
    },
    Check {
        name: "current-cpu-node",
        run: check_current_cpu_node,
    },
    Check {
        name: "current-cpu-node-getcpu",
        run: check_current_without_rseq,
    },
    Check {
        name: "local-first-touch",
        run: check_local_first_touch,
    },
    Check {
        name: "mbind-remote",
        run: check_mbind_remote,
    },
    Check {
        name: "interleave",
        run: check_interleave,
    },
    Check {
        name: "tessera-local",
        run: alloc::check_tessera_local,
    },
    Check {
        name: "tessera-interleave",
        run: alloc::check_tessera_interleave,
    },
    Check {
        name: "bench-placement",
        run: alloc::bench_placement,
    },
];

/// Set in the environment of a re-executed copy of this program that only runs
/// [`check_current_cpu_node`] (see [`check_current_without_rseq`]).
const CHILD_ENV: &str = "NUMA_GUEST_CHILD";

fn main() {
    if std::env::var_os(alloc::INTERLEAVE_CHILD_ENV).is_some() {
        alloc::interleave_child();
        return;
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        let ctx = Ctx {
            topology: Topology::get(),
            expect_nodes: 0,
        };
        let source = tessera_numa::cpu_source();
        match check_current_cpu_node(&ctx) {
            Ok(d) => println!("CHILD {source:?} PASS {d}"),
            Err(d) => println!("CHILD {source:?} FAIL {d}"),
        }
        return;
    }
    let mut expect_nodes = 2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                expect_nodes = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
            }
            other => eprintln!("numa_guest: ignoring argument {other:?}"),
        }
    }
    let ctx = Ctx {
        topology: Topology::get(),
        expect_nodes,
    };
    println!("numa_guest: {:?}", ctx.topology);
    println!("numa_guest: cpu source {:?}", tessera_numa::cpu_source());

    // Keep a panicking check's message short and on our output.
    panic::set_hook(Box::new(|info| println!("  panic: {info}")));
    let mut failed = Vec::new();
    for check in CHECKS {
        let result = panic::catch_unwind(|| (check.run)(&ctx))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        match result {
            Ok(detail) => println!("CHECK {}: PASS {detail}", check.name),
            Err(detail) => {
                println!("CHECK {}: FAIL {detail}", check.name);
                failed.push(check.name);
            }
        }
    }
    let passed = CHECKS.len() - failed.len();
    if failed.is_empty() {
        println!(
            "NUMA-VM: PASS {passed}/{} checks on {} nodes",
            CHECKS.len(),
            ctx.topology.node_count()
        );
    } else {
        println!(
            "NUMA-VM: FAIL {passed}/{} checks passed; failed: {}",
            CHECKS.len(),
            failed.join(", ")
        );
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Pins the calling thread to `cpus`.
fn pin(cpus: &CpuSet) -> Result<(), String> {
    // SAFETY: a zeroed `cpu_set_t` is the empty set; `CPU_SET` is only called with ids below
    // `CPU_SETSIZE`; pid 0 is the calling thread.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus.iter() {
            if cpu.index() < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu.index(), &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity({cpus}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(pages: usize) -> Result<Mapping, String> {
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
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        // Transparent huge pages would make the kernel place (and interleave) 2 MiB at a
        // time, so a census of 4 KiB pages would measure THP alignment, not the policy.
        // SAFETY: `ptr..ptr + len` is the mapping just made; the advice only changes how
        // future faults are served, never the contents.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn pages(&self) -> Vec<*const u8> {
        (0..self.len / page_size())
            .map(|i| self.ptr.wrapping_add(i * page_size()) as *const u8)
            .collect()
    }

    /// Writes one byte per page, so every page is faulted in by this thread.
    fn touch(&self) {
        for p in self.pages() {
            // SAFETY: `p` is a writable page of this mapping.
            unsafe { (p as *mut u8).write_volatile(0x5a) };
        }
    }

    /// Page counts per node (index = node id), from `move_pages`; errors if any page is not
    /// present or the call fails.
    fn census(&self) -> Result<Vec<usize>, String> {
        let pages = self.pages();
        let mut status = vec![i32::MIN; pages.len()];
        tessera_numa::nodes_of_pages(&pages, &mut status).map_err(|e| e.to_string())?;
        let mut counts = vec![0usize; tessera_numa::MAX_NODES];
        for (i, &s) in status.iter().enumerate() {
            if s < 0 {
                return Err(format!("page {i}: move_pages status {s}"));
            }
            counts[s as usize] += 1;
        }
        Ok(counts)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner to another
// thread moves the responsibility to unmap it with it.
unsafe impl Send for Mapping {}

/// The nodes with both CPUs we may run on and memory: where placement can be tested.
fn test_nodes(t: &Topology) -> Vec<NodeId> {
    t.memory_nodes()
        .iter()
        .filter(|&n| !t.usable_cpus(n).is_empty())
        .collect()
}

/// Runs `f` on a new thread pinned to `node`'s usable CPUs.
fn on_node<R: Send>(
    t: &Topology,
    node: NodeId,
    f: impl FnOnce() -> Result<R, String> + Send,
) -> Result<R, String> {
    let cpus = t.usable_cpus(node);
    thread::scope(|s| {
        s.spawn(move || {
            pin(&cpus)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err("thread panicked".to_string()))
    })
}

const PAGES: usize = 2048;

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// The guest must show the expected number of nodes, each with CPUs and memory, and a
/// distance matrix that says remote is farther than local.
fn check_topology(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let mut detail = Vec::new();
    for node in t.nodes() {
        detail.push(format!(
            "node{} cpus={} mem={}MiB",
            node.id(),
            node.cpus(),
            node.mem_total_kib() / 1024
        ));
    }
    let detail = detail.join("; ");
    if t.node_count() != ctx.expect_nodes {
        return Err(format!(
            "expected {} nodes, saw {}: {detail}",
            ctx.expect_nodes,
            t.node_count()
        ));
    }
    if test_nodes(t).len() != ctx.expect_nodes {
        return Err(format!(
            "not every node has usable CPUs and memory: {detail}"
        ));
    }
    for a in t.node_ids().iter() {
        for b in t.node_ids().iter() {
            let (d, back) = (t.distance(a, b), t.distance(b, a));
            if (a == b && d != 10) || (a != b && (d <= 10 || d != back)) {
                return Err(format!(
                    "distance {a}->{b} = {d}, {b}->{a} = {back}: {detail}"
                ));
            }
        }
    }
    let allowed = tessera_numa::mems_allowed().map_err(|e| e.to_string())?;
    if allowed != t.memory_nodes() {
        return Err(format!(
            "mems_allowed {allowed} != memory nodes {}",
            t.memory_nodes()
        ));
    }
    Ok(detail)
}

/// Pinned to each CPU in turn, the fast path and `getcpu` must agree with the topology.
fn check_current_cpu_node(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let cpus: Vec<CpuId> = t
        .online_cpus()
        .intersection(t.allowed_cpus())
        .iter()
        .collect();
    let mut seen = Vec::new();
    for cpu in cpus {
        let mut one = CpuSet::EMPTY;
        one.insert(cpu);
        let got = thread::scope(|s| {
            s.spawn(|| -> Result<_, String> {
                pin(&one)?;
                let fast = tessera_numa::current_cpu_and_node();
                let slow = tessera_numa::getcpu().map_err(|e| e.to_string())?;
                Ok((fast, slow))
            })
            .join()
            .unwrap_or_else(|_| Err("thread panicked".to_string()))
        })?;
        let ((fc, fnode), (sc, snode)) = got;
        let want = t.node_of_cpu(cpu);
        if fc != cpu || sc != cpu || Some(fnode) != want || Some(snode) != want {
            return Err(format!(
                "pinned to {cpu:?} (topology {want:?}): fast ({fc:?}, {fnode:?}), \
                 getcpu ({sc:?}, {snode:?})"
            ));
        }
        seen.push(format!("{}->{}", cpu.get(), fnode.get()));
    }
    Ok(format!(
        "{} via {:?}",
        seen.join(" "),
        tessera_numa::cpu_source()
    ))
}

/// The same as [`check_current_cpu_node`] with glibc's rseq registration turned off, so the
/// `getcpu` fallback is the path under test (the program runs again as a child).
fn check_current_without_rseq(_ctx: &Ctx) -> CheckResult {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .env(CHILD_ENV, "1")
        .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
        .output()
        .map_err(|e| format!("re-exec: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD "))
        .ok_or_else(|| format!("child printed no result: {stdout:?}"))?;
    match line.strip_prefix("CHILD Syscall PASS ") {
        Some(detail) => Ok(detail.to_string()),
        None => Err(line.to_string()),
    }
}

/// A thread pinned to a node, with the local policy, gets its first-touched pages there.
fn check_local_first_touch(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let mut detail = Vec::new();
    for node in test_nodes(t) {
        let counts = on_node(t, node, || {
            tessera_numa::set_mempolicy(&Policy::Local).map_err(|e| e.to_string())?;
            let here = tessera_numa::current_node();
            if here != node {
                return Err(format!("pinned to node {node} but current_node() = {here}"));
            }
            let m = Mapping::new(PAGES)?;
            m.touch();
            m.census()
        })?;
        let local = counts[node.index()];
        detail.push(format!("node{node}: {local}/{PAGES} local"));
        if local != PAGES {
            return Err(format!(
                "{}; counts {:?}",
                detail.join(", "),
                nonzero(&counts)
            ));
        }
    }
    Ok(detail.join(", "))
}

/// `mbind` beats first touch: a thread on one node binds a range to *another* node, touches
/// it, and every page lands on the other node; `get_mempolicy(MPOL_F_ADDR)` reports the
/// policy and the node.
fn check_mbind_remote(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let nodes = test_nodes(t);
    if nodes.len() < 2 {
        return Err("needs two nodes with CPUs and memory".to_string());
    }
    let mut detail = Vec::new();
    for (i, &run_on) in nodes.iter().enumerate() {
        let target = nodes[(i + 1) % nodes.len()];
        let counts = on_node(t, run_on, || {
            let m = Mapping::new(PAGES)?;
            let policy = Policy::Bind(NodeMask::single(target));
            tessera_numa::mbind(m.ptr, m.len, &policy, MbindFlags::STRICT)
                .map_err(|e| e.to_string())?;
            m.touch();
            let reported = tessera_numa::policy_of(m.ptr).map_err(|e| e.to_string())?;
            if reported != policy {
                return Err(format!(
                    "get_mempolicy reports {reported:?}, set {policy:?}"
                ));
            }
            let last = m.ptr.wrapping_add(m.len - 1);
            let at = tessera_numa::node_of_address(last).map_err(|e| e.to_string())?;
            if at != target {
                return Err(format!("get_mempolicy(F_NODE|F_ADDR) says node {at}"));
            }
            m.census()
        })?;
        let on_target = counts[target.index()];
        detail.push(format!(
            "cpu node{run_on} -> mem node{target}: {on_target}/{PAGES}"
        ));
        if on_target != PAGES {
            return Err(format!(
                "{}; counts {:?}",
                detail.join(", "),
                nonzero(&counts)
            ));
        }
    }
    Ok(detail.join(", "))
}

/// `MPOL_INTERLEAVE` over all memory nodes spreads pages evenly (the kernel goes
/// round-robin page by page; allow 10 points either way for pages it had to place elsewhere).
fn check_interleave(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let nodes = t.memory_nodes();
    if nodes.count() < 2 {
        return Err("needs two memory nodes".to_string());
    }
    let m = Mapping::new(PAGES)?;
    tessera_numa::mbind(m.ptr, m.len, &Policy::Interleave(nodes), MbindFlags::STRICT)
        .map_err(|e| e.to_string())?;
    m.touch();
    let counts = m.census()?;
    let fair = 100.0 / nodes.count() as f64;
    let mut shares = Vec::new();
    let mut ok = true;
    for n in nodes.iter() {
        let share = 100.0 * counts[n.index()] as f64 / PAGES as f64;
        ok &= (share - fair).abs() <= 10.0;
        shares.push(format!("node{n} {share:.1}%"));
    }
    let detail = format!("{} of {PAGES} pages", shares.join(" / "));
    if ok { Ok(detail) } else { Err(detail) }
}

fn nonzero(counts: &[usize]) -> Vec<(usize, usize)> {
    counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(i, &c)| (i, c))
        .collect()
}
