//! A bounded single-producer/single-consumer ring of words, for the remote-free benches: the
//! producer thread allocates, the consumer thread frees. Cheap on purpose (two cache-padded
//! indexes, no allocation after construction), so the allocator dominates what is measured.
//!
//! Lamport's classic ring: the producer alone writes `tail`, the consumer alone writes `head`;
//! each reads the other's index with Acquire and publishes its own with Release, which orders
//! the slot write before the consumer's read of it. The single-producer/single-consumer rule
//! is carried by the types: [`channel`] returns one [`Producer`] and one [`Consumer`], neither
//! `Clone`, and both take `&mut self`.

use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
struct Ring {
    slots: Box<[UnsafeCell<usize>]>,
    /// Capacity - 1; the capacity is always a power of two.
    mask: usize,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: the slots are plain words. A slot is written only by the one `Producer` while it
// lies outside head..tail, and read only by the one `Consumer` while it lies inside; the
// Release store of an index and the Acquire load of it on the other side order those accesses.
unsafe impl Sync for Ring {}

/// The sending half.
#[derive(Debug)]
pub struct Producer(Arc<Ring>);

/// The receiving half.
#[derive(Debug)]
pub struct Consumer(Arc<Ring>);

/// A ring of `capacity` slots (rounded up to a power of two), as its two halves.
pub fn channel(capacity: usize) -> (Producer, Consumer) {
    let capacity = capacity.max(2).next_power_of_two();
    debug_assert!(capacity.is_power_of_two());
    let ring = Arc::new(Ring {
        slots: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        mask: capacity - 1,
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
    });
    (Producer(ring.clone()), Consumer(ring))
}

impl Producer {
    /// Pushes `value`, or gives it back if the ring is full.
    #[inline]
    pub fn push(&mut self, value: usize) -> Result<(), usize> {
        let ring = &*self.0;
        let tail = ring.tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(ring.head.load(Ordering::Acquire)) > ring.mask {
            return Err(value);
        }
        // SAFETY: the ring is not full, so the slot at `tail` is outside head..tail: the
        // consumer will not read it before the Release store below publishes it, and this is
        // the only producer (`&mut self`, not `Clone`).
        unsafe { *ring.slots[tail & ring.mask].get() = value };
        ring.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }
}

impl Consumer {
    /// Pops the oldest value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<usize> {
        let ring = &*self.0;
        let head = ring.head.load(Ordering::Relaxed);
        if head == ring.tail.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: `head` is inside head..tail, published by the producer's Release store that
        // our Acquire load saw; the producer does not rewrite it until we advance `head`.
        let value = unsafe { *ring.slots[head & ring.mask].get() };
        ring.head.store(head.wrapping_add(1), Ordering::Release);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_full() {
        let (mut tx, mut rx) = channel(3);
        for v in 1..=4 {
            assert_eq!(tx.push(v), Ok(()));
        }
        assert_eq!(tx.push(5), Err(5));
        assert_eq!(rx.pop(), Some(1));
        assert_eq!(tx.push(5), Ok(()));
        assert_eq!(
            (2..=5).map(|_| rx.pop().unwrap()).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(rx.pop(), None);
    }

    #[test]
    fn two_threads_pass_every_value_in_order() {
        let (mut tx, mut rx) = channel(64);
        const N: usize = 100_000;
        std::thread::scope(|s| {
            s.spawn(move || {
                for v in 0..N {
                    while tx.push(v).is_err() {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut next = 0;
            while next < N {
                if let Some(v) = rx.pop() {
                    assert_eq!(v, next);
                    next += 1;
                }
            }
        });
    }
}
