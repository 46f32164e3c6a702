//! 100,000 live guarded stacks under the default `vm.max_map_count`, each holding about one
//! page of RSS once a coroutine has run on it (the "parked" workload of BENCHMARKS.md).
//!
//! Its own test binary, so the global stats it reads belong to this test alone.

use corosensei::{Coroutine, CoroutineResult};
use tessera_stacks::{GuardMode, PooledStack};

const STACKS: usize = 100_000;

#[test]
fn hundred_thousand_parked_coroutines_fit_in_the_map_count() {
    let mode = tessera_stacks::guard_mode().unwrap();
    if mode != GuardMode::Madvise {
        // Without MADV_GUARD_INSTALL each guard costs two VMAs and 100,000 stacks cannot fit
        // under 65530; `map_limit.rs` covers that case. This kernel (6.18) has guards, so on
        // the development machines this branch is not taken.
        eprintln!("skipped: kernel without MADV_GUARD_INSTALL");
        return;
    }
    let vmas_before = tessera_stacks::process_vma_count().unwrap();
    let page = tessera_sys::mem::page_size();

    // Each coroutine starts, writes a little on its stack, and parks at `suspend`.
    let mut parked: Vec<Coroutine<(), usize, usize, PooledStack>> = Vec::with_capacity(STACKS);
    for i in 0..STACKS {
        let stack = tessera_stacks::acquire(16 << 10).unwrap();
        let mut co = Coroutine::with_stack(stack, move |y, ()| {
            let local = std::hint::black_box([i; 16]);
            y.suspend(local[3]);
            local[5]
        });
        assert!(matches!(co.resume(()), CoroutineResult::Yield(v) if v == i));
        parked.push(co);
    }

    let stats = tessera_stacks::stats();
    let vmas_after = tessera_stacks::process_vma_count().unwrap();
    let limit = tessera_stacks::max_map_count().unwrap();
    eprintln!(
        "{STACKS} parked: resident {} B/stack, {} slabs, stack VMAs {}, process VMAs {} -> {} (limit {limit})",
        stats.resident_bytes / STACKS,
        stats.slabs,
        stats.vmas,
        vmas_before,
        vmas_after
    );
    assert!(stats.live >= STACKS);
    // Every stack was touched, so at least one page each is resident; the bound allows the
    // coroutine's first frames to spill into a second page.
    assert!(stats.resident_bytes >= STACKS * page, "{stats:?}");
    assert!(stats.resident_bytes <= STACKS * 2 * page, "{stats:?}");
    // No VMA per stack, one per slab at most. A 64 MiB slab holds 64 MiB of slots (guard and
    // 16 KiB stack each): 100,000 stacks with the default 64 KiB guards take 123 slabs (31
    // with one-page guards), far under the limit.
    let slot = stats.guard_bytes + (16 << 10);
    let max_slabs = STACKS.div_ceil(((64 << 20) - (64 << 10)) / slot);
    assert!(stats.slabs <= max_slabs, "{max_slabs}: {stats:?}");
    assert_eq!(stats.vmas, stats.slabs, "no VMA for a guard: {stats:?}");
    assert!(
        vmas_after < vmas_before + stats.slabs + 64,
        "{vmas_before} -> {vmas_after}"
    );
    assert!(vmas_after < limit);

    // All of them finish correctly and go back to the pool.
    for (i, mut co) in parked.drain(..).enumerate() {
        assert!(matches!(co.resume(()), CoroutineResult::Return(v) if v == i));
    }
    let stats = tessera_stacks::stats();
    assert_eq!(stats.live, 0, "{stats:?}");
    assert!(stats.pooled >= STACKS, "{stats:?}");
}
