//! glibc-simple: allocate many small objects, free them all, repeat (the shape of glibc's
//! `bench-malloc-simple`).
//!
//! Each round, each thread allocates `COUNT` blocks of one size, then frees them in the order
//! it allocated them. The size cycles 16, 64, 256, 1024 B over the rounds. This measures the
//! allocator's bulk paths: refilling the cache from central lists, and returning whole spans.

use super::block::Block;
use super::harness::{Deadline, parallel};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;

const COUNT: usize = 4096;
const SIZES: [usize; 4] = [16, 64, 256, 1024];

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        let mut rng = Rng::new(thread as u64);
        let mut live = Vec::with_capacity(COUNT);
        let mut ops = 0;
        for round in deadline.rounds() {
            let size = SIZES[round as usize % SIZES.len()];
            let tag = rng.next_u64();
            live.extend((0..COUNT as u64).map(|i| Block::alloc(a, size, tag ^ i)));
            for block in live.drain(..) {
                block.free(a);
            }
            ops += COUNT as u64;
        }
        ops
    })
}
