//! fastpath: malloc/free pairs of 16, 64, 256 and 1024 B in a tight loop.
//!
//! This is the allocator's best case: the block just freed is the next one handed out, from
//! the thread's own cache. With more than one thread, each runs the same loop on its own,
//! which shows whether the fast path stays thread-local (no shared cache line touched).

use super::block::Block;
use super::harness::{Deadline, parallel};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;

const SIZES: [usize; 4] = [16, 64, 256, 1024];
/// Pairs per size before moving to the next size (and polling the deadline).
const PAIRS_PER_SIZE: u64 = 1024;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        let mut rng = Rng::new(thread as u64);
        let mut tag = rng.next_u64();
        let mut ops = 0;
        loop {
            for size in SIZES {
                for _ in 0..PAIRS_PER_SIZE {
                    tag = tag.wrapping_add(1);
                    Block::alloc(a, size, tag).free(a);
                }
                ops += PAIRS_PER_SIZE;
            }
            if deadline.passed() {
                return ops;
            }
        }
    })
}
