//! thread-churn: thousands of short-lived threads, each allocating a little. An allocator
//! with per-thread caches must set them up and tear them down cheaply and must not leak what
//! a dead thread's cache held: peak RSS shows that.
//!
//! Rounds of `threads` concurrent threads: each allocates `PER_THREAD` blocks of 16–512 B,
//! frees three quarters itself and returns the rest to the main thread, which frees them
//! after the thread is gone.

use super::block::Block;
use super::harness::Deadline;
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;
use std::time::Instant;

const PER_THREAD: usize = 64;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    let start = Instant::now();
    let mut spawned = 0u64;
    for _round in deadline.rounds() {
        let leftovers: Vec<Vec<Block>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..params.threads)
                .map(|i| {
                    let seed = spawned + i as u64;
                    scope.spawn(move || short_life(a, seed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        spawned += params.threads as u64;
        for block in leftovers.into_iter().flatten() {
            block.free(a);
        }
    }
    Outcome {
        ops: spawned,
        elapsed: start.elapsed(),
    }
}

fn short_life<A: GlobalAlloc>(a: &A, seed: u64) -> Vec<Block> {
    let mut rng = Rng::new(seed);
    let mut blocks: Vec<Block> = (0..PER_THREAD)
        .map(|_| Block::alloc(a, rng.range(16, 512), rng.next_u64()))
        .collect();
    let kept = blocks.split_off(PER_THREAD * 3 / 4);
    for block in blocks {
        block.free(a);
    }
    kept
}
