//! rptest: a realistic size mix with cross-thread frees (after the idea of rpmalloc's
//! benchmark: sizes 16–16000 B whose probability falls off linearly with size).
//!
//! Each thread keeps a ring of `LIVE` blocks. Each step allocates a new block into the ring
//! and evicts the oldest: on even steps the thread frees it itself, on odd steps it hands it
//! to the next thread's mailbox, which that thread drains (verifying and freeing) every
//! `FLUSH` steps. So every second free is remote.

use super::block::Block;
use super::harness::{Deadline, parallel};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;
use std::sync::Mutex;

const LIVE: usize = 512;
const FLUSH: u64 = 64;
const MIN: usize = 16;
const MAX: usize = 16_000;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let mailboxes: Vec<Mutex<Vec<Block>>> = (0..params.threads)
        .map(|_| Mutex::new(Vec::new()))
        .collect();
    let deadline = Deadline::after(params.duration);
    let mut outcome = parallel(params.threads, |thread| {
        let mut rng = Rng::new(0x5eed ^ thread as u64);
        let next = &mailboxes[(thread + 1) % mailboxes.len()];
        let mine = &mailboxes[thread];
        let mut ring: Vec<Option<Block>> = (0..LIVE).map(|_| None).collect();
        let mut outgoing = Vec::with_capacity(FLUSH as usize);
        let mut inbox = Vec::new();
        let mut step = 0u64;
        loop {
            let fresh = Block::alloc(a, size(&mut rng), rng.next_u64());
            if let Some(old) = ring[(step as usize) % LIVE].replace(fresh) {
                if step.is_multiple_of(2) {
                    old.free(a);
                } else {
                    outgoing.push(old);
                }
            }
            step += 1;
            if step.is_multiple_of(FLUSH) {
                lock(next).append(&mut outgoing);
                std::mem::swap(&mut *lock(mine), &mut inbox);
                for block in inbox.drain(..) {
                    block.free(a);
                }
                if deadline.passed() {
                    break;
                }
            }
        }
        for block in ring.into_iter().flatten().chain(outgoing) {
            block.free(a);
        }
        step
    });
    // Blocks sent to threads that had already finished: still freed inside the timed part.
    let start = std::time::Instant::now();
    for mailbox in &mailboxes {
        for block in lock(mailbox).drain(..) {
            block.free(a);
        }
    }
    outcome.elapsed += start.elapsed();
    outcome
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A size in MIN..=MAX whose density falls off linearly to zero at MAX: with `u` uniform in
/// [0, 1), `1 - sqrt(u)` has density 2(1 - x).
fn size(rng: &mut Rng) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    MIN + ((MAX - MIN) as f64 * (1.0 - u.sqrt())) as usize
}
