//! The parked workload, in a child process of its own so that its RSS growth is its own.

use std::time::Duration;

/// The hidden flag of the parked child process.
pub const PARKED_FLAG: &str = "--sched-parked";

/// The parked workload in this (child) process: `n` coroutines, each on its own guarded
/// 16 KiB stack, parked receiving on one channel; prints the RSS growth per coroutine
/// (stack page, G record, join state and channel waiter together) and the VMAs used.
pub fn parked_child(n: usize) -> i32 {
    use tessera_sched::{Runtime, Spawn, chan};
    let rt = match Runtime::builder().procs(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return 1;
        }
    };
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
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss = tessera_stacks::process_rss_kib()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    let vmas = tessera_stacks::process_vma_count().unwrap_or(0);
    let s = tessera_stacks::stats();
    println!(
        "parked {n} rss_per_g_bytes {} vmas {vmas_before}->{vmas} (stack resident {} B each, guard {:?}, vm.max_map_count {})",
        rss * 1024 / n.max(1),
        s.resident_bytes / n.max(1),
        s.guard,
        tessera_stacks::max_map_count().unwrap_or(0)
    );
    drop(tx);
    drop(rx);
    for h in handles {
        let _ = h.join();
    }
    0
}
