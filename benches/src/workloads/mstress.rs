//! mstress: object migration between threads, thread churn, mixed sizes with rare large
//! objects. Peak RSS matters as much as throughput here.
//!
//! `SLOTS` shared slots hold blocks. In each round, a fresh set of threads is spawned (thread
//! churn); each swaps new blocks into random slots and frees what it took out, usually a
//! block another thread (often a dead one) allocated (migration). Sizes are mostly 16 B–4 KiB,
//! skewed small; one allocation in `LARGE_ONE_IN` is 64 KiB–1 MiB, whose pages are all
//! touched. One swap in eight empties its slot instead, so the live set breathes.

use super::block::Block;
use super::harness::Deadline;
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Instant;

const SLOTS: usize = 4096;
const OPS_PER_THREAD_ROUND: u64 = 4096;
const LARGE_ONE_IN: usize = 256;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let slots: Vec<AtomicPtr<u8>> = (0..SLOTS)
        .map(|_| AtomicPtr::new(ptr::null_mut()))
        .collect();
    let deadline = Deadline::after(params.duration);
    let start = Instant::now();
    let mut ops = 0;
    for round in deadline.rounds() {
        ops += super::harness::parallel(params.threads, |thread| {
            churn(a, &slots, round << 16 | thread as u64)
        })
        .ops;
    }
    let elapsed = start.elapsed();
    for slot in &slots {
        take(a, slot.swap(ptr::null_mut(), Ordering::Acquire));
    }
    Outcome { ops, elapsed }
}

fn churn<A: GlobalAlloc>(a: &A, slots: &[AtomicPtr<u8>], seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    for _ in 0..OPS_PER_THREAD_ROUND {
        let slot = &slots[rng.below(slots.len())];
        let fresh = if rng.below(8) == 0 {
            ptr::null_mut()
        } else {
            Block::alloc(a, size(&mut rng), rng.next_u64()).into_raw()
        };
        // AcqRel: the block we take out was stamped by another thread; its writes must be
        // visible before we verify it, and ours before anyone takes our block.
        take(a, slot.swap(fresh, Ordering::AcqRel));
    }
    OPS_PER_THREAD_ROUND
}

/// Verifies and frees a block taken out of a slot (null: the slot was empty).
fn take<A: GlobalAlloc>(a: &A, raw: *mut u8) {
    if !raw.is_null() {
        // SAFETY: slots only ever hold pointers from `Block::into_raw`, and the atomic swap
        // that took `raw` out made this thread its only holder.
        unsafe { Block::from_raw(raw) }.free(a);
    }
}

/// Mostly small (16 B to 4 KiB, each power-of-two band equally likely, so small sizes
/// dominate), rarely large (64 KiB to 1 MiB).
fn size(rng: &mut Rng) -> usize {
    if rng.below(LARGE_ONE_IN) == 0 {
        rng.range(64 << 10, 1 << 20)
    } else {
        let band = 4 + rng.below(8); // 16 B .. 4 KiB
        rng.range(1 << band, (2 << band) - 1).min(4096)
    }
}
