//! A coroutine whose closure waits in its record needs no stack until it first runs
//! (gfree.rs, "Bare records"): spawning many that have not run yet takes records, not
//! stacks, and each first run is given the stack the coroutine before it left. Alone in
//! its test binary, because it counts the process's stacks (`tessera_stacks::stats`).

mod common;

use tessera_sched::{Runtime, spawn};

#[test]
fn coroutines_that_have_not_run_hold_no_stacks() {
    let _w = common::Watchdog::new("bare", 300);
    // One P: the root coroutine spawns all of them before any runs (it never yields while
    // spawning), then each join lets the P run the queue in order.
    let rt = Runtime::builder().procs(1).build().unwrap();
    const N: usize = 20_000;
    for round in 0..3 {
        let (spawned, joined, sum) = rt.block_on(|| {
            let before = tessera_stacks::stats().carved;
            let hs: Vec<_> = (0..N).map(|i| spawn(move || i)).collect();
            let spawned = tessera_stacks::stats().carved - before;
            let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            let joined = tessera_stacks::stats().carved - before;
            (spawned, joined, sum)
        });
        assert_eq!(sum, N * (N - 1) / 2);
        // With a stack per spawn, every round before the first carved N of them (a stack
        // cache holds a handful), and the first one N more: the records kept by a round
        // keep their stacks. Here a few stacks serve every first run.
        assert!(
            spawned < 100 && joined < 100,
            "round {round}: {spawned} stacks carved while spawning {N} coroutines, {joined} by the joins"
        );
        // Every record is kept for the next round (a first run that took a fresh stack
        // armed its canaries, or its retirement would free it).
        let kept = rt.stats().kept;
        assert!(kept >= N, "round {round}: only {kept} of {N} records kept");
    }
}
