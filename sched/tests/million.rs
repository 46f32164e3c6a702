//! 1,000,000 coroutines spawned and joined in total, 100,000 alive at once, on 16 KiB
//! stacks. With MADV_GUARD_INSTALL guards (Linux 6.13+) no stack costs a VMA; the VMA count
//! is printed for the record.

mod common;

use tessera_sched::chan;
use tessera_sched::{Runtime, Spawn};

#[test]
fn a_million_coroutines_100k_alive() {
    let _w = common::Watchdog::new("million", 600);
    let rt = Runtime::builder().procs(2).build().unwrap();
    const TOTAL: usize = 1_000_000;
    const ALIVE: usize = 100_000;
    let vmas_before = tessera_stacks::process_vma_count().unwrap_or(0);
    let (peak_live, vmas_at_peak) = rt.block_on(|| {
        let mut peak = 0;
        let mut vmas = 0;
        for _round in 0..TOTAL / ALIVE {
            // All of a round's coroutines park on one gate, so ALIVE are alive at once.
            let (gate_tx, gate_rx) = chan::bounded::<()>(0);
            let hs: Vec<_> = (0..ALIVE)
                .map(|i| {
                    let gate = gate_rx.clone();
                    Spawn::new().stack_size(16 << 10).spawn(move || {
                        let _ = gate.recv();
                        i
                    })
                })
                .collect();
            drop(gate_rx);
            let s = tessera_sched::stats();
            peak = peak.max(s.live);
            vmas = vmas.max(tessera_stacks::process_vma_count().unwrap_or(0));
            drop(gate_tx); // closing the gate wakes them all
            let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, ALIVE * (ALIVE - 1) / 2);
        }
        (peak, vmas)
    });
    eprintln!(
        "peak live {peak_live}, VMAs {vmas_before} -> {vmas_at_peak}, guard {:?}",
        tessera_stacks::stats().guard
    );
    assert!(peak_live >= ALIVE, "{peak_live}");
    let s = rt.stats();
    assert!(s.spawned >= TOTAL as u64);
}
