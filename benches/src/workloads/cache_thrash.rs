//! cache-thrash: active false sharing (after the Hoard benchmark suite).
//!
//! Every worker, over and over, allocates a small object, writes it hard and frees it. An
//! allocator that hands objects from one cache line to several threads at the same time makes
//! their writes fight over that line; per-thread memory keeps them apart.

use super::hammer;
use super::harness::{Deadline, parallel};
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        let mut ops = 0;
        for _round in deadline.rounds() {
            for _ in 0..64 {
                hammer::one_object(a, thread as u64 ^ ops);
                ops += 1;
            }
        }
        ops
    })
}
