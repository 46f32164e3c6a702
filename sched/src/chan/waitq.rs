//! A channel's queues of blocked waiters: intrusive doubly linked lists (Go's `waitq` of
//! `sudog`s in chan.go), so a waiter knows its place and leaves its queue in O(1).
//!
//! A `select!` with n arms puts one `Waiter` on each of n queues; when one arm wins, or
//! the deadline passes, the other n - 1 must come off again. With a queue that has to be
//! searched, that costs the length of every queue (thousands of waiters when thousands of
//! coroutines select over the same channels, issue #14); here it costs two pointer writes.
//!
//! The nodes live in the waiters' own frames (a blocked send or receive) or select arms,
//! never on the heap, and the queue holds only raw pointers to them. Who may touch a node:
//!
//! - While it is queued, and after a claimant popped it until that claimant lets go of the
//!   channel lock: only holders of that channel's lock.
//! - Otherwise: only its owner (the waiting coroutine or thread).
//!
//! The owner keeps the node in place until it is off the queue for good: it was popped by
//! the claimant that won its token (the owner then learns of it from the wake-up, which the
//! claimant sends after unlocking), or the owner took it off itself under the lock
//! (`Chan::dequeue`), which also waits out a claimant that popped it and lost the token.

use crate::wait::Token;
use core::cell::UnsafeCell;
use core::ptr;

/// One blocked send or receive on one channel (Go's `sudog`).
pub(crate) struct Waiter<T> {
    node: UnsafeCell<Node<T>>,
}

/// A waiter's state; see the module comment for who may touch it when.
pub(crate) struct Node<T> {
    prev: *const Waiter<T>,
    next: *const Waiter<T>,
    queued: bool,
    /// The wait's token, shared by every arm of a select; set while queued. A plain
    /// pointer, not a counted reference: the owner holds the token's `Arc` for as long as
    /// the node is queued and until its wait is notified (`Chan::enqueue`), so a handoff
    /// costs no reference-count traffic on the way in and out of the queue.
    pub(crate) token: *const Token,
    /// Which arm of the select this is (0 outside a select): what a claimant claims.
    pub(crate) arm: usize,
    /// The value being sent, or where the received value goes.
    pub(crate) slot: Option<T>,
    /// Set by a claimant that claimed because the channel closed.
    pub(crate) closed: bool,
}

impl<T> core::fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Waiter { .. }")
    }
}

impl<T> Waiter<T> {
    /// A waiter off every queue, holding `slot` (a value to send, or `None` to receive).
    pub(crate) const fn new(slot: Option<T>) -> Self {
        Self {
            node: UnsafeCell::new(Node {
                prev: ptr::null(),
                next: ptr::null(),
                queued: false,
                token: ptr::null(),
                arm: 0,
                slot,
                closed: false,
            }),
        }
    }

    /// # Safety
    /// The caller may touch the node now (module comment: it holds the lock of the channel
    /// the waiter is queued on or was just popped from, or it is the owner and the waiter
    /// is off every queue), and holds no other reference into this node.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn node(&self) -> &mut Node<T> {
        // SAFETY: exclusive access per the contract; the state is in an `UnsafeCell`, so
        // writing through a shared `&Waiter` is allowed.
        unsafe { &mut *self.node.get() }
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        // Its frame may end only once it is off every queue (module comment): a queue left
        // pointing into a dead frame hands the next holder of that lock freed memory.
        debug_assert!(
            !self.node.get_mut().queued,
            "a waiter dropped while still queued"
        );
    }
}

/// A FIFO of waiters, guarded by its channel's lock (it lives in the channel's locked
/// state, so holding `&mut WaitQueue` means holding that lock).
pub(crate) struct WaitQueue<T> {
    head: *const Waiter<T>,
    tail: *const Waiter<T>,
}

impl<T> WaitQueue<T> {
    pub(crate) const fn new() -> Self {
        Self {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    /// Appends `w`.
    ///
    /// # Safety
    /// `w` is on no queue and stays in place and alive until it is off this one (module
    /// comment); nobody else touches its node meanwhile except under this queue's lock.
    pub(crate) unsafe fn push_back(&mut self, w: &Waiter<T>) {
        let wp: *const Waiter<T> = w;
        // SAFETY: `w` is off every queue, and we hold the lock that now guards it.
        let n = unsafe { w.node() };
        debug_assert!(!n.queued, "a waiter is on one queue at a time");
        n.prev = self.tail;
        n.next = ptr::null();
        n.queued = true;
        if self.tail.is_null() {
            self.head = wp;
        } else {
            // SAFETY: the tail is queued here, so alive and guarded by our lock.
            unsafe { (*self.tail).node().next = wp };
        }
        self.tail = wp;
    }

    /// Takes the first waiter off. It stays valid (and guarded by this queue's lock) until
    /// the caller lets go of that lock; after that only a caller who claimed its token and
    /// has not notified it yet may touch it (module comment).
    pub(crate) fn pop_front(&mut self) -> Option<*const Waiter<T>> {
        let w = self.head;
        if w.is_null() {
            return None;
        }
        // SAFETY: the head is queued here, so alive and guarded by our lock.
        unsafe { self.unlink(&*w) };
        Some(w)
    }

    /// Takes `w` off if it is still queued (a claimant may have popped it); O(1).
    ///
    /// # Safety
    /// `w` was pushed on no queue but this one (or on none).
    pub(crate) unsafe fn remove(&mut self, w: &Waiter<T>) {
        // SAFETY: `w` is on this queue or on none: either way nobody but holders of our
        // lock touches its links (its owner, our caller, does not while queued).
        if unsafe { w.node().queued } {
            // SAFETY: queued here, per the above.
            unsafe { self.unlink(w) };
        }
    }

    /// Takes every waiter off, first to last, handing each to `f` (under the lock).
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&Waiter<T>)) {
        while let Some(w) = self.pop_front() {
            // SAFETY: just popped under the lock we still hold: valid (`pop_front`).
            f(unsafe { &*w });
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// # Safety
    /// `w` is queued on this queue.
    unsafe fn unlink(&mut self, w: &Waiter<T>) {
        // SAFETY: queued here: guarded by our lock, as are its neighbours.
        let n = unsafe { w.node() };
        let (prev, next) = (n.prev, n.next);
        n.prev = ptr::null();
        n.next = ptr::null();
        n.queued = false;
        if prev.is_null() {
            debug_assert!(ptr::eq(self.head, w));
            self.head = next;
        } else {
            // SAFETY: a queued neighbour, guarded by our lock; a node other than `w`.
            unsafe { (*prev).node().next = next };
        }
        if next.is_null() {
            debug_assert!(ptr::eq(self.tail, w));
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { (*next).node().prev = prev };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(q: &mut WaitQueue<u32>) -> Vec<u32> {
        let mut seen = Vec::new();
        // SAFETY: the test's waiters outlive the queue's use of them; one thread.
        q.drain(|w| seen.push(unsafe { w.node() }.slot.unwrap()));
        seen
    }

    /// Removal from the front, the middle and the back keeps the others in FIFO order, and
    /// removing a waiter that is off the queue is a no-op.
    #[test]
    fn remove_anywhere_keeps_fifo() {
        let ws: Vec<Waiter<u32>> = (0..5).map(|i| Waiter::new(Some(i))).collect();
        let mut q = WaitQueue::new();
        for w in &ws {
            // SAFETY: `ws` outlives `q`'s use of it and does not move.
            unsafe { q.push_back(w) };
        }
        // SAFETY: each was pushed on `q` only.
        unsafe {
            q.remove(&ws[2]);
            q.remove(&ws[0]);
            q.remove(&ws[4]);
            q.remove(&ws[2]);
        }
        assert_eq!(order(&mut q), [1, 3]);
        assert!(q.is_empty());
        // Popped waiters can queue again, behind the ones already there.
        for i in [3, 1, 0] {
            // SAFETY: as above; all are off the queue again.
            unsafe { q.push_back(&ws[i]) };
        }
        // SAFETY: pushed on `q` only.
        unsafe { q.remove(&ws[1]) };
        assert_eq!(q.pop_front().map(|w| ptr::eq(w, &ws[3])), Some(true));
        assert_eq!(order(&mut q), [0]);
    }
}
