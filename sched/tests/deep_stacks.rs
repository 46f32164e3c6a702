//! A dead coroutine's record is kept with its stack for the next spawn only if the
//! coroutine stayed in the stack's top page (gfree.rs): stacks that went deeper go back to
//! the stack pool, so the free list never pins their memory.
//!
//! One test in its own binary: it counts the process's live stacks.

mod common;

use tessera_sched::{Runtime, chan, spawn, yield_now};

/// Uses about `depth` KiB of stack, every byte of it written.
#[inline(never)]
fn recurse(depth: usize) -> u64 {
    let mut frame = [0u8; 1024];
    for (i, b) in frame.iter_mut().enumerate() {
        *b = (i + depth) as u8;
    }
    let frame = std::hint::black_box(frame);
    let below = if depth > 1 { recurse(depth - 1) } else { 0 };
    below + u64::from(frame[depth % 1024])
}

#[test]
fn stacks_that_went_deep_are_not_kept_with_dead_coroutines() {
    let _w = common::Watchdog::new("deep stacks", 120);
    const N: usize = 50;
    let rt = Runtime::builder().procs(1).build().unwrap();
    let (live_before, shallow, deep) = rt.block_on(|| {
        let live_before = tessera_stacks::stats().live;
        // Shallow coroutines, all alive at once: their stacks stay with their dead records.
        let (tx, rx) = chan::bounded::<()>(0);
        let hs: Vec<_> = (0..N)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || {
                    let _ = rx.recv();
                })
            })
            .collect();
        // Behind all of them on the one P: each runs (and takes a stack: one that has not
        // run yet holds none, gfree.rs "Bare records") and parks before the gate opens.
        yield_now();
        drop(tx);
        for h in hs {
            h.join().unwrap();
        }
        let shallow = tessera_stacks::stats().live;
        // As many deep ones, all alive at once so that none reuses another's record: the
        // free list cannot serve them all from the shallow records, and their own stacks
        // must not stay live once they are done.
        let (tx, rx) = chan::bounded::<()>(0);
        let hs: Vec<_> = (0..2 * N)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || {
                    let v = recurse(8);
                    let _ = rx.recv();
                    v
                })
            })
            .collect();
        yield_now();
        drop(tx);
        for h in hs {
            assert!(h.join().unwrap() > 0);
        }
        (live_before, shallow, tessera_stacks::stats().live)
    });
    assert!(
        shallow >= live_before + N,
        "shallow coroutines' stacks are kept for reuse: {live_before} -> {shallow}"
    );
    // 2N deep coroutines ran; at most the N shallow records (reused by N of them) may have
    // kept a stack each, and those went deep too, so none of those may be kept either.
    assert!(
        deep < shallow,
        "deep stacks were kept with dead coroutines: {shallow} -> {deep} live stacks"
    );
}
