//! The "parked" workload of BENCHMARKS.md for the scheduler: N coroutines (default
//! 1,000,000), each on its own guarded 16 KiB tessera stack, parked receiving on one
//! channel. Prints the process RSS growth per coroutine (stack page, G record, join state
//! and channel waiter together) and the VMAs used. Run in its own process, since RSS is
//! per process:
//!
//! `cargo run --release -p tessera-sched --example parked -- 1000000`

use tessera_sched::{Runtime, Spawn, chan};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = Runtime::builder().procs(2).build().unwrap();
    // Warm the runtime up so its own start-up memory is not counted.
    rt.block_on(|| ());
    let rss_before = tessera_stacks::process_rss_kib().unwrap_or(0);
    let vmas_before = tessera_stacks::process_vma_count().unwrap_or(0);
    let (tx, rx) = chan::bounded::<()>(0);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let rx = rx.clone();
            Spawn::new().stack_size(16 << 10).spawn_on(&rt, move || {
                let _ = rx.recv();
            })
        })
        .collect();
    while rt.stats().parked < n {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let rss = tessera_stacks::process_rss_kib()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    let vmas = tessera_stacks::process_vma_count().unwrap_or(0);
    let s = tessera_stacks::stats();
    println!(
        "{n} parked coroutines (tessera-sched), guard: {:?}",
        s.guard
    );
    println!(
        "  process RSS growth: {} B per coroutine (VmRSS; includes the JoinHandle vector)",
        rss * 1024 / n
    );
    println!(
        "  stack memory resident: {} B per coroutine (mincore)",
        s.resident_bytes / n.max(1)
    );
    println!(
        "  VMAs: {vmas_before} -> {vmas}, vm.max_map_count {}",
        tessera_stacks::max_map_count().unwrap_or(0)
    );
    println!(
        "parked {n} rss_per_g_bytes {} vmas {vmas_before}->{vmas}",
        rss * 1024 / n
    );
    drop(tx);
    drop(rx);
    for h in handles {
        h.join().unwrap();
    }
}
