//! manythreads: issue #19's program as a workload: many threads (run it with 64 and 256, on
//! a machine of a few CPUs), each allocating a round of 1,000 blocks of 16–512 B and then
//! freeing them all, round after round.
//!
//! Most threads are preempted in the middle of a round, so what an allocator keeps per
//! thread grows with the threads (a cache per CPU keeps it by cores: Tessera's
//! `TESSERA_CACHE=percpu`, the `tessera-percpu` allocator here). One operation is one
//! malloc or one free.

use super::block::Block;
use super::harness::{Deadline, parallel};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;

const BLOCKS: usize = 1000;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        let mut rng = Rng::new(thread as u64);
        let mut live = Vec::with_capacity(BLOCKS);
        let mut ops = 0;
        for _ in deadline.rounds() {
            let tag = rng.next_u64();
            live.extend((0..BLOCKS as u64).map(|i| Block::alloc(a, rng.range(16, 512), tag ^ i)));
            for block in live.drain(..) {
                block.free(a);
            }
            ops += 2 * BLOCKS as u64;
        }
        ops
    })
}
