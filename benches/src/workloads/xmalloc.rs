//! xmalloc: producer/consumer, every free remote.
//!
//! Half the threads (rounded up) only allocate: they fill batches of `BATCH` blocks of
//! 16–512 B and send them down a bounded channel. The other half only free what they
//! receive. An allocator whose caches simply keep foreign objects grows without bound here;
//! one that sends objects home must do it cheaply. With one thread, that thread produces a
//! batch and then frees it itself (no remote frees: the single-thread baseline).
//!
//! The channel is std's `sync_channel`; its own allocations (one `Vec` per batch of 256
//! blocks) go to the process's global allocator, equally for every allocator under test.

use super::block::Block;
use super::harness::{Deadline, join_sum};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::GlobalAlloc;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

const BATCH: usize = 256;
const MIN: usize = 16;
const MAX: usize = 512;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    if params.threads == 1 {
        return alone(a, deadline);
    }
    let producers = params.threads.div_ceil(2);
    let consumers = params.threads - producers;
    let (tx, rx) = sync_channel::<Vec<Block>>(4 * consumers);
    let rx = Mutex::new(rx);
    let start = Instant::now();
    let ops = std::thread::scope(|scope| {
        for p in 0..producers {
            let tx = tx.clone();
            scope.spawn(move || {
                let mut rng = Rng::new(p as u64);
                for _round in deadline.rounds() {
                    let batch = produce(a, &mut rng);
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let handles: Vec<_> = (0..consumers)
            .map(|_| scope.spawn(|| consume(a, &rx)))
            .collect();
        join_sum(handles)
    });
    Outcome {
        ops,
        elapsed: start.elapsed(),
    }
}

fn produce<A: GlobalAlloc>(a: &A, rng: &mut Rng) -> Vec<Block> {
    (0..BATCH)
        .map(|_| Block::alloc(a, rng.range(MIN, MAX), rng.next_u64()))
        .collect()
}

/// Frees every block received until all producers are gone; returns the count.
fn consume<A: GlobalAlloc>(a: &A, rx: &Mutex<Receiver<Vec<Block>>>) -> u64 {
    let mut ops = 0;
    loop {
        // Hold the lock only to receive, not while freeing.
        let batch = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = batch else { return ops };
        ops += batch.len() as u64;
        for block in batch {
            block.free(a);
        }
    }
}

fn alone<A: GlobalAlloc>(a: &A, deadline: Deadline) -> Outcome {
    let mut rng = Rng::new(0);
    let start = Instant::now();
    let mut ops = 0;
    for _round in deadline.rounds() {
        for block in produce(a, &mut rng) {
            block.free(a);
        }
        ops += BATCH as u64;
    }
    Outcome {
        ops,
        elapsed: start.elapsed(),
    }
}
