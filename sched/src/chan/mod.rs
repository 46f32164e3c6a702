//! Channels: `bounded(cap)` (cap 0 is a rendezvous), `unbounded()`, MPMC, with Go's close
//! semantics, and `select!` (select.rs).
//!
//! One algorithm serves the three flavours, as Go's `hchan` does: a buffer with a capacity
//! (0, n or unbounded) and two queues of blocked waiters. A send first hands its value
//! straight to a blocked receiver, else buffers it, else blocks; a receive takes from the
//! buffer (refilling it from a blocked sender), else straight from a blocked sender, else
//! blocks. Waiters are claimed through their `Token` (wait.rs), so a waiter that is in a
//! `select!` or has a deadline completes exactly once.
//!
//! Happens-before (Go's memory model): the value moves under the channel lock, and the
//! receiver reads it after acquiring that lock or after the wake-up, which the sender
//! publishes after writing the value: a send happens-before the receive completes, and for
//! rendezvous channels the receive happens-before the send completes.
//!
//! Closing: `close` (or dropping the last `Sender`) wakes every waiter; receivers drain the
//! buffer and then get `Err`; senders get their value back in the error. Dropping the last
//! `Receiver` makes sends fail the same way, as in crossbeam.

mod errors;
pub mod select;
mod waitq;

use core::cell::UnsafeCell;
use core::fmt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use errors::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

use tessera_sys::lock::RawLock;

use crate::coroutine::WaitReason;
use crate::wait::{Claimed, TIMEOUT, Token};
use waitq::WaitQueue;
pub(crate) use waitq::Waiter;

pub(crate) struct State<T> {
    buf: VecDeque<T>,
    closed: bool,
    recvq: WaitQueue<T>,
    sendq: WaitQueue<T>,
    senders: usize,
    receivers: usize,
}

pub(crate) struct Chan<T> {
    lock: RawLock,
    state: UnsafeCell<State<T>>,
    cap: usize,
}

// SAFETY: `state` is only touched under `lock`; T: Send values cross threads. The queues'
// raw pointers into other threads' frames are dereferenced only under the lock while those
// waiters are queued (or just popped), which keeps them in place (waitq.rs).
unsafe impl<T: Send> Sync for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Chan<T> {}

/// Outcome of a non-blocking send under the lock.
pub(crate) enum SendTry<T> {
    /// Sent; the token of the receiver it went to, to notify after unlocking.
    Done(Option<Claimed>),
    Full(T),
    Closed(T),
}

/// Outcome of a non-blocking receive under the lock.
pub(crate) enum RecvTry<T> {
    /// Received; the token of a sender whose value moved, to notify after unlocking.
    Done(T, Option<Claimed>),
    Empty,
    Closed,
}

impl<T> Chan<T> {
    fn new(cap: usize) -> Self {
        Self {
            lock: RawLock::new(),
            state: UnsafeCell::new(State {
                buf: VecDeque::new(),
                closed: false,
                recvq: WaitQueue::new(),
                sendq: WaitQueue::new(),
                senders: 1,
                receivers: 1,
            }),
            cap,
        }
    }

    pub(crate) fn lock(&self) {
        self.lock.lock();
    }

    /// Releases the channel lock.
    ///
    /// # Safety
    /// This thread holds the lock (a `lock()` made earlier on it), and keeps no reference
    /// from `st()` past this call.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: per the contract, this thread holds the lock.
        unsafe { self.lock.unlock() };
    }

    /// # Safety
    /// The caller holds the lock, and drops the reference before unlocking.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn st(&self) -> &mut State<T> {
        // SAFETY: the lock gives exclusive access.
        unsafe { &mut *self.state.get() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State<T>) -> R) -> R {
        self.lock();
        // SAFETY: we hold the lock for the life of the reference.
        let r = f(unsafe { self.st() });
        // SAFETY: locked just above; the reference died with `f`.
        unsafe { self.unlock() };
        r
    }

    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn try_send_locked(&self, v: T) -> SendTry<T> {
        // SAFETY: per the contract.
        let st = unsafe { self.st() };
        if st.closed || st.receivers == 0 {
            return SendTry::Closed(v);
        }
        while let Some(w) = st.recvq.pop_front() {
            // SAFETY: popped under the lock we hold: valid and ours to touch (waitq.rs).
            let n = unsafe { (*w).node() };
            if let Some(token) = claim(n) {
                n.slot = Some(v);
                return SendTry::Done(Some(token));
            }
        }
        if st.buf.len() < self.cap {
            st.buf.push_back(v);
            return SendTry::Done(None);
        }
        SendTry::Full(v)
    }

    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn try_recv_locked(&self) -> RecvTry<T> {
        // SAFETY: per the contract.
        let st = unsafe { self.st() };
        // A blocked sender's value, if one is left to claim.
        let mut sender = || {
            while let Some(w) = st.sendq.pop_front() {
                // SAFETY: as in `try_send_locked`.
                let n = unsafe { (*w).node() };
                if let Some(token) = claim(n) {
                    let x = n.slot.take().expect("a blocked sender holds a value");
                    return Some((x, token));
                }
            }
            None
        };
        if let Some(v) = st.buf.pop_front() {
            // A slot opened: move a blocked sender's value into it.
            let Some((x, token)) = sender() else {
                return RecvTry::Done(v, None);
            };
            st.buf.push_back(x);
            return RecvTry::Done(v, Some(token));
        }
        if let Some((x, token)) = sender() {
            return RecvTry::Done(x, Some(token));
        }
        if st.closed || st.senders == 0 {
            RecvTry::Closed
        } else {
            RecvTry::Empty
        }
    }

    /// Queues `w` as a sender (`send`) or a receiver for `token`'s `arm`.
    ///
    /// # Safety
    /// The caller holds the lock. `w` is off every queue and stays in place, untouched by
    /// its owner, until it is off this channel's queue again: popped by the claimant that
    /// then notifies `token`, drained by `close` (which notifies too), or taken off with
    /// `dequeue` (waitq.rs). The caller keeps `token` (this `Arc`) alive until then, and
    /// until the wait is notified if a claimant won it: the node and the claimant hold only
    /// its address.
    pub(crate) unsafe fn enqueue(&self, w: &Waiter<T>, token: &Arc<Token>, arm: usize, send: bool) {
        // SAFETY: off every queue, so the owner's (our caller's) to set up.
        let n = unsafe { w.node() };
        n.token = Arc::as_ptr(token);
        n.arm = arm;
        n.closed = false;
        // SAFETY: we hold the lock.
        let st = unsafe { self.st() };
        let q = if send { &mut st.sendq } else { &mut st.recvq };
        // SAFETY: per the contract.
        unsafe { q.push_back(w) };
    }

    /// Takes `w` off its queue if it is still there (a claimant may have popped it), in
    /// O(1); takes the lock. Once this returns, `w` is its owner's again.
    ///
    /// # Safety
    /// `w` was enqueued on no channel but this one (or on none), with the same `send`.
    pub(crate) unsafe fn dequeue(&self, w: &Waiter<T>, send: bool) {
        self.with(|st| {
            let q = if send { &mut st.sendq } else { &mut st.recvq };
            // SAFETY: per the contract, `w` was pushed on `q` or on no queue.
            unsafe { q.remove(w) };
        });
    }

    /// Closes; returns false if it was closed already.
    fn close(&self) -> bool {
        self.lock();
        // SAFETY: we hold the lock.
        let st = unsafe { self.st() };
        if st.closed {
            // SAFETY: locked above.
            unsafe { self.unlock() };
            return false;
        }
        st.closed = true;
        let mut wake: Vec<Claimed> = Vec::new();
        let mut claim_closed = |w: &Waiter<T>| {
            // SAFETY: popped under the lock we hold: valid and ours to touch (waitq.rs).
            let n = unsafe { w.node() };
            if let Some(token) = claim(n) {
                n.closed = true;
                wake.push(token);
            }
        };
        st.recvq.drain(&mut claim_closed);
        st.sendq.drain(&mut claim_closed);
        // SAFETY: locked above; `st` is not used again.
        unsafe { self.unlock() };
        for t in wake {
            // SAFETY: `claim` won each token; each is notified once, here.
            unsafe { t.notify() };
        }
        true
    }

    fn send_deadline(&self, v: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        self.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.try_send_locked(v) };
        let v = match r {
            SendTry::Full(v) if deadline.is_none_or(|d| Instant::now() < d) => v,
            r => {
                // SAFETY: locked above.
                unsafe { self.unlock() };
                return match r {
                    SendTry::Done(n) => {
                        // SAFETY: the token (if any) the locked operation claimed; notified once.
                        unsafe { notify(n) };
                        Ok(())
                    }
                    SendTry::Closed(v) => Err(SendTimeoutError::Closed(v)),
                    SendTry::Full(v) => Err(SendTimeoutError::Timeout(v)),
                };
            }
        };
        // SAFETY: we hold the lock.
        let (left, end) = unsafe { self.block(Some(v), true, deadline) };
        match end {
            End::Done => Ok(()),
            End::Closed => Err(SendTimeoutError::Closed(
                left.expect("value still in a send woken by close"),
            )),
            End::Timeout => Err(SendTimeoutError::Timeout(
                left.expect("value still in a timed-out send"),
            )),
        }
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.try_recv_locked() };
        if !matches!(r, RecvTry::Empty) || deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: locked above.
            unsafe { self.unlock() };
            return match r {
                RecvTry::Done(v, n) => {
                    // SAFETY: the token (if any) the locked operation claimed; notified once.
                    unsafe { notify(n) };
                    Ok(v)
                }
                RecvTry::Closed => Err(RecvTimeoutError::Closed),
                RecvTry::Empty => Err(RecvTimeoutError::Timeout),
            };
        }
        // SAFETY: we hold the lock.
        match unsafe { self.block(None, false, deadline) } {
            (v, End::Done) => Ok(v.expect("a woken receive has a value")),
            (_, End::Closed) => Err(RecvTimeoutError::Closed),
            (_, End::Timeout) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Blocks as a sender of `slot` (`send`) or a receiver (`slot` is `None`): queues a
    /// waiter, unlocks and waits until a claimant completes it, `close` wakes it or
    /// `deadline` passes. Returns what is left in the slot (the value received, or the
    /// value not sent) and how the wait ended.
    ///
    /// # Safety
    /// The caller holds the lock (this releases it).
    unsafe fn block(
        &self,
        slot: Option<T>,
        send: bool,
        deadline: Option<Instant>,
    ) -> (Option<T>, End) {
        let w = Waiter::new(slot);
        let token = Token::for_current_wait();
        // SAFETY: we hold the lock; `w` stays in this frame, untouched, until it is off the
        // queue: popped by the claimant that notifies us, drained by `close` (which
        // notifies too), or dequeued below after the timer claimed the token.
        unsafe { self.enqueue(&w, &token, 0, send) };
        // SAFETY: locked by our caller; nothing from `st()` is held.
        unsafe { self.unlock() };
        let reason = if send {
            WaitReason::ChanSend
        } else {
            WaitReason::ChanRecv
        };
        // A runtime dropped while we wait unwinds this frame from `wait_until`, its stack
        // then freed: the waiter must leave the queue first.
        let unwind_guard = DequeueOnDrop {
            chan: self,
            waiter: &w,
            send,
        };
        // SAFETY: made for this coroutine or thread above.
        let sel = unsafe { token.wait_until(reason, deadline) };
        // Returned: popped by a claimant, or dequeued just below after a timeout.
        core::mem::forget(unwind_guard);
        if sel == TIMEOUT {
            // SAFETY: enqueued on this channel only, with the same `send`.
            unsafe { self.dequeue(&w, send) };
        }
        // SAFETY: off the queue now (dequeued, or popped by the claimant whose wake-up we
        // have seen), so ours alone.
        let n = unsafe { w.node() };
        let end = if sel == TIMEOUT {
            End::Timeout
        } else if n.closed {
            End::Closed
        } else {
            End::Done
        };
        (n.slot.take(), end)
    }
}

/// Takes a blocked send's or receive's waiter off its queue if its frame is dropped while
/// it may still be queued (an unwind out of the wait).
struct DequeueOnDrop<'a, T> {
    chan: &'a Chan<T>,
    waiter: &'a Waiter<T>,
    send: bool,
}

impl<T> Drop for DequeueOnDrop<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the waiter was enqueued on this channel only, with this `send` (`block`).
        unsafe { self.chan.dequeue(self.waiter, self.send) };
    }
}

impl<T> Drop for Chan<T> {
    fn drop(&mut self) {
        // Every waiter holds a reference to the channel while it waits.
        let st = self.state.get_mut();
        debug_assert!(st.recvq.is_empty() && st.sendq.is_empty());
    }
}

/// How a blocked send or receive ended.
enum End {
    Done,
    Closed,
    Timeout,
}

/// Claims a waiter just popped under its channel's lock for its arm; the token to notify
/// once the lock is released, if the claim was won (else the waiter's select went another
/// way or timed out, and it will dequeue its other arms itself).
fn claim<T>(n: &waitq::Node<T>) -> Option<Claimed> {
    debug_assert!(!n.token.is_null(), "a queued waiter has a token");
    // SAFETY: the node was queued until its popping under the lock we hold, so its owner
    // is still in its wait and holds the token's `Arc` (`Chan::enqueue`).
    let token = unsafe { &*n.token };
    // SAFETY: as just said; and if we win, the owner keeps waiting (holding the token)
    // until we notify it.
    token
        .try_claim(n.arm)
        .then(|| unsafe { Claimed::new(token) })
}

/// Wakes the waiter a channel operation completed, if any (after unlocking).
///
/// # Safety
/// As for `Claimed::notify`: `t` came from `try_send_locked` or `try_recv_locked` (which
/// return the tokens they won) and is notified once, here.
unsafe fn notify(t: Option<Claimed>) {
    if let Some(t) = t {
        // SAFETY: per the contract.
        unsafe { t.notify() };
    }
}

/// A channel with room for `cap` values; `cap == 0` makes every send wait for a receiver
/// (a rendezvous, Go's unbuffered channel).
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let c = Arc::new(Chan::new(cap));
    (Sender { chan: c.clone() }, Receiver { chan: c })
}

/// A channel whose sends never block.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    bounded(usize::MAX)
}

/// The sending half; clone it for more senders. Dropping the last one closes the channel.
pub struct Sender<T> {
    pub(crate) chan: Arc<Chan<T>>,
}

/// The receiving half; clone it for more receivers.
pub struct Receiver<T> {
    pub(crate) chan: Arc<Chan<T>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender { .. }")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.with(|st| st.senders += 1);
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.with(|st| st.receivers += 1);
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.chan.with(|st| {
            st.senders -= 1;
            st.senders == 0
        }) {
            self.chan.close();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.chan.with(|st| {
            st.receivers -= 1;
            st.receivers == 0
        }) {
            // Nobody can receive: wake blocked senders with their values back.
            self.chan.close();
        }
    }
}

impl<T> Sender<T> {
    /// Sends, waiting for room (or a receiver, when unbuffered). `Err` gives the value back
    /// if the channel is closed.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.chan.send_deadline(v, None).map_err(|e| match e {
            SendTimeoutError::Closed(v) | SendTimeoutError::Timeout(v) => SendError(v),
        })
    }

    /// Sends only if that needs no waiting.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.chan.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.chan.try_send_locked(v) };
        // SAFETY: locked above.
        unsafe { self.chan.unlock() };
        match r {
            SendTry::Done(n) => {
                // SAFETY: the token (if any) the locked operation claimed; notified once.
                unsafe { notify(n) };
                Ok(())
            }
            SendTry::Full(v) => Err(TrySendError::Full(v)),
            SendTry::Closed(v) => Err(TrySendError::Closed(v)),
        }
    }

    /// Sends, waiting at most `timeout`.
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.chan.send_deadline(v, Some(Instant::now() + timeout))
    }

    /// Sends, waiting until `deadline` at most.
    pub fn send_deadline(&self, v: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.chan.send_deadline(v, Some(deadline))
    }

    /// Closes the channel (Go's `close`): blocked and future receivers drain the buffer,
    /// then get `Err`; blocked and future senders get `Err`. False if already closed.
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.chan.with(|st| st.closed)
    }

    /// Values buffered now.
    pub fn len(&self) -> usize {
        self.chan.with(|st| st.buf.len())
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity (`None` for unbounded).
    pub fn capacity(&self) -> Option<usize> {
        (self.chan.cap != usize::MAX).then_some(self.chan.cap)
    }
}

impl<T> Receiver<T> {
    /// Receives, waiting for a value. `Err` once the channel is closed and drained.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv_deadline(None).map_err(|_| RecvError)
    }

    /// Receives only if a value is ready.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.chan.try_recv_locked() };
        // SAFETY: locked above.
        unsafe { self.chan.unlock() };
        match r {
            RecvTry::Done(v, n) => {
                // SAFETY: the token (if any) the locked operation claimed; notified once.
                unsafe { notify(n) };
                Ok(v)
            }
            RecvTry::Empty => Err(TryRecvError::Empty),
            RecvTry::Closed => Err(TryRecvError::Closed),
        }
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.chan.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Receives, waiting until `deadline` at most.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.chan.recv_deadline(Some(deadline))
    }

    /// Whether the channel is closed (values may still be buffered).
    pub fn is_closed(&self) -> bool {
        self.chan.with(|st| st.closed)
    }

    /// Values buffered now.
    pub fn len(&self) -> usize {
        self.chan.with(|st| st.buf.len())
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A blocking iterator that ends when the channel is closed and drained.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// The values ready now.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }
}
