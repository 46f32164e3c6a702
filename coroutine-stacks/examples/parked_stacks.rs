//! The "parked" workload of BENCHMARKS.md: N coroutines (default 1,000,000), each started on
//! its own guarded 16 KiB tessera stack and parked at a suspend point. Prints the stack
//! memory per coroutine (from `mincore`), the process RSS per coroutine and the VMAs used.
//!
//! `cargo run --release -p tessera-stacks --example parked_stacks -- 1000000`

use corosensei::{Coroutine, CoroutineResult};
use tessera_stacks::PooledStack;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rss_before = tessera_stacks::process_rss_kib().unwrap_or(0);
    let vmas_before = tessera_stacks::process_vma_count().unwrap_or(0);
    let mut parked: Vec<Coroutine<(), (), (), PooledStack>> = Vec::with_capacity(n);
    for _ in 0..n {
        let stack = match tessera_stacks::acquire(16 << 10) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("after {} coroutines: {e}", parked.len());
                std::process::exit(1);
            }
        };
        let mut co = Coroutine::with_stack(stack, |y, ()| y.suspend(()));
        assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
        parked.push(co);
    }
    let s = tessera_stacks::stats();
    let rss = tessera_stacks::process_rss_kib()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    let vmas = tessera_stacks::process_vma_count().unwrap_or(0);
    println!("{n} parked coroutines, guard: {:?}", s.guard);
    println!(
        "  stack memory resident: {} B per coroutine (mincore)",
        s.resident_bytes / n
    );
    println!(
        "  process RSS growth:    {} B per coroutine (VmRSS, page tables excluded)",
        rss * 1024 / n
    );
    println!(
        "  VMAs: {vmas_before} -> {vmas} (stacks: {}, slabs: {}), vm.max_map_count {}",
        s.vmas,
        s.slabs,
        tessera_stacks::max_map_count().unwrap_or(0)
    );
    println!("  address space reserved: {} MiB", s.reserved_bytes >> 20);
    for mut co in parked {
        assert!(matches!(co.resume(()), CoroutineResult::Return(())));
    }
}
