//! Finished coroutines the runtime keeps for the next spawns (their records and stacks) go
//! back once unused: sysmon halves the runtime-wide list each second it goes unchanged,
//! down to a few thousand. No timing assumption: the test waits (up to a generous bound)
//! for the count to fall, and fails only if it never does.

mod common;

use std::time::{Duration, Instant};

use tessera_sched::{Runtime, chan};

#[test]
fn kept_coroutines_go_back_when_unused() {
    let _w = common::Watchdog::new("idle_trim", 300);
    let rt = Runtime::builder().procs(2).build().unwrap();
    const ALIVE: usize = 30_000;
    let kept_after_round = rt.block_on(|| {
        // All of them park on one gate, so ALIVE are alive at once and die together.
        let (gate_tx, gate_rx) = chan::bounded::<()>(0);
        let hs: Vec<_> = (0..ALIVE)
            .map(|i| {
                let gate = gate_rx.clone();
                tessera_sched::spawn(move || {
                    let _ = gate.recv();
                    i
                })
            })
            .collect();
        drop(gate_rx);
        drop(gate_tx);
        let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, ALIVE * (ALIVE - 1) / 2);
        tessera_sched::stats().kept
    });
    // A P keeps at most 1,024, the runtime-wide list the rest (up to a million).
    assert!(
        kept_after_round > ALIVE / 2,
        "the round left only {kept_after_round} coroutines kept for reuse"
    );
    // Unused, the runtime-wide lists fall to 4,096; the Ps' lists stay (2 Ps with up to
    // 1,024 dead coroutines with stacks and 1,024 without each).
    let bound = 4096 + 2 * 2 * 1024;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kept = rt.stats().kept;
    while kept > bound {
        assert!(
            Instant::now() < deadline,
            "still {kept} kept coroutines after 120 s unused (from {kept_after_round})"
        );
        std::thread::sleep(Duration::from_millis(100));
        kept = rt.stats().kept;
    }
    eprintln!("kept coroutines: {kept_after_round} after the round, {kept} once unused");
}
