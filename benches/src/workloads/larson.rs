//! larson: a server "bleeding" memory from one generation of threads to the next
//! (after Larson and Krishnan, "Memory allocation for long-running server applications",
//! ISMM 1998).
//!
//! Each thread owns a live set of `LIVE` blocks of 16–1000 B. It repeatedly frees a random
//! one and allocates a replacement of a random size. After `OPS_PER_GENERATION` replacements
//! the thread exits and a new thread inherits its live set, so most frees are of blocks that
//! another (often dead) thread allocated: the allocator must get them home without leaking
//! the dead thread's cache.

use super::block::Block;
use super::harness::Deadline;
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;
use std::time::Instant;

const LIVE: usize = 1000;
const MIN: usize = 16;
const MAX: usize = 1000;
const OPS_PER_GENERATION: u64 = 10_000;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let mut seeder = Rng::new(0x1a25);
    // The initial live sets, made before the clock starts.
    let mut sets: Vec<Vec<Block>> = (0..params.threads)
        .map(|_| {
            (0..LIVE)
                .map(|_| Block::alloc(a, seeder.range(MIN, MAX), seeder.next_u64()))
                .collect()
        })
        .collect();

    let deadline = Deadline::after(params.duration);
    let start = Instant::now();
    let mut ops = 0;
    for generation in deadline.rounds() {
        ops += std::thread::scope(|scope| {
            let handles: Vec<_> = sets
                .iter_mut()
                .enumerate()
                .map(|(i, set)| {
                    let seed = generation << 16 | i as u64;
                    scope.spawn(move || bleed(a, set, seed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .sum::<u64>()
        });
        // The next generation's thread i inherits this generation's thread i+1's blocks.
        sets.rotate_left(1);
    }
    let elapsed = start.elapsed();
    for block in sets.into_iter().flatten() {
        block.free(a);
    }
    Outcome { ops, elapsed }
}

fn bleed<A: GlobalAlloc>(a: &A, set: &mut Vec<Block>, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    for _ in 0..OPS_PER_GENERATION {
        let slot = rng.below(set.len());
        // Free first, then allocate, so the allocator may reuse the block just freed.
        set.swap_remove(slot).free(a);
        set.push(Block::alloc(a, rng.range(MIN, MAX), rng.next_u64()));
    }
    OPS_PER_GENERATION
}
