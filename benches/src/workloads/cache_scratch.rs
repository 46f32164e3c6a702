//! cache-scratch: passive false sharing (after the Hoard benchmark suite; Berger et al.,
//! "Hoard: a scalable memory allocator for multithreaded applications", ASPLOS 2000).
//!
//! The main thread allocates one small object per worker, back to back, so they likely share
//! a cache line, and hands one to each worker. Each worker frees its object and then, over
//! and over, allocates an object of the same size, writes it hard and frees it. An allocator
//! that gives the freed object (or its neighbours) back to the worker keeps the workers
//! writing to one shared cache line; one that serves each thread from its own memory does not.

use super::hammer;
use super::harness::{Deadline, parallel};
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    // Made by this thread before the clock starts; sent to the workers as addresses.
    let handed: Vec<usize> = (0..params.threads)
        .map(|_| hammer::alloc_object(a) as usize)
        .collect();
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        // SAFETY: `handed[thread]` is an object allocated above by `alloc_object(a)`, given to
        // this worker only, and freed exactly once, here.
        unsafe { hammer::free_object(a, handed[thread] as *mut u8) };
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
