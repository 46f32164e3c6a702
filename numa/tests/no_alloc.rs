//! Proves the claim the allocator depends on: reading the topology and the cgroup limits,
//! asking for the current CPU/node and making the policy calls never allocate. A counting global allocator records
//! every allocation made on the thread under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tessera_numa::{CpuSet, Limits, MbindFlags, NodeId, NodeMask, Policy, Topology};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`, only adding a thread-local counter (a const-initialized
// `Cell` without a destructor, which never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_whole_api_runs_without_allocating() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sparse-ids");
    let mut all = CpuSet::EMPTY;
    all.insert_range(0, 63);
    // Box the big values first so only the calls under test are counted.
    let mut slots: Vec<Option<Topology>> = vec![None, None, None];
    let mut page = vec![0u8; 3 * 4096];
    let addr = ((page.as_mut_ptr() as usize + 4095) & !4095) as *mut u8;
    let mut status = [0i32; 1];
    let tree = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cgroup/v1-limited"
    );
    let proc_self = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cgroup/v1-limited/proc/self"
    );
    let mut limits = [Limits::NONE; 2];

    let n = allocations_in(|| {
        let t = Topology::get();
        assert!(t.node_count() >= 1);
        slots[0] = Some(Topology::read_from(b"/sys"));
        slots[1] = Some(Topology::read_with_affinity(fixture.as_bytes(), &all));
        slots[2] = Some(Topology::read_from(b"/nonexistent"));
        let _ = tessera_numa::current_cpu();
        let _ = tessera_numa::current_node();
        let _ = tessera_numa::getcpu();
        let _ = tessera_numa::cpu_source();
        tessera_numa::mbind(
            addr,
            4096,
            &Policy::Bind(NodeMask::single(NodeId::ZERO)),
            MbindFlags::NONE,
        )
        .unwrap();
        let _ = tessera_numa::policy_of(addr).unwrap();
        let _ = tessera_numa::node_of_address(addr).unwrap();
        tessera_numa::nodes_of_pages(&[addr as *const u8], &mut status).unwrap();
        let _ = tessera_numa::thread_policy().unwrap();
        let _ = tessera_numa::mems_allowed().unwrap();
        let _ = tessera_numa::mbind(addr.wrapping_add(1), 1, &Policy::Local, MbindFlags::NONE);
        let _ = tessera_numa::affinity();
        limits[0] = Limits::read();
        limits[1] = Limits::read_from(proc_self.as_bytes(), tree.as_bytes());
    });
    assert_eq!(n, 0, "allocations made by tessera-numa");
    assert_eq!(status[0], 0);
    let counts: Vec<usize> = slots.iter().flatten().map(Topology::node_count).collect();
    assert_eq!(counts[1..], [2, 1]);
    assert!(counts[0] >= 1);
    assert_eq!(limits[1].memory_max, Some(256 << 20));
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let n = allocations_in(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert!(n >= 1);
}
