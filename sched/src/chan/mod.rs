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

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use errors::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

use crate::coroutine::WaitReason;
use crate::wait::{TIMEOUT, Token};
use tessera_span::lock::RawLock;

/// A blocked send or receive, or one arm of a blocked `select!`, as its channel queues it
/// (Go's `sudog`, by value: no allocation and no reference count per wait). Its value slot
/// and closed flag live in the waiter's own frame (or its select arm), which stays put
/// until the waiter is off every queue: a claimant pops it, a timed-out or losing select
/// arm removes it, `close` drains it — always under the channel lock, before the waiter
/// can run on.
pub(crate) struct Waiter<T> {
    pub(crate) token: Arc<Token>,
    pub(crate) arm: usize,
    /// The value being sent, or where the value received goes. Written or taken only by the
    /// token's claimant (under the channel lock); the waiter reads it once notified.
    slot: *mut Option<T>,
    /// Set by the claimant (under the lock) when it claimed because the channel closed.
    closed: *const Cell<bool>,
}

impl<T> Waiter<T> {
    /// # Safety
    /// `slot` and `closed` stay valid and unmoved, and are touched by nobody else, until
    /// this waiter is off its channel's queue (popped by a claimant, drained by `close`, or
    /// taken off with `remove_waiter`).
    pub(crate) unsafe fn new(
        token: Arc<Token>,
        arm: usize,
        slot: *mut Option<T>,
        closed: *const Cell<bool>,
    ) -> Self {
        Self {
            token,
            arm,
            slot,
            closed,
        }
    }
}

pub(crate) struct State<T> {
    buf: VecDeque<T>,
    closed: bool,
    recvq: VecDeque<Waiter<T>>,
    sendq: VecDeque<Waiter<T>>,
    senders: usize,
    receivers: usize,
}

pub(crate) struct Chan<T> {
    lock: RawLock,
    state: UnsafeCell<State<T>>,
    cap: usize,
}

// SAFETY: `state` is only touched under `lock`; T: Send values cross threads. The queued
// `Waiter`s' raw pointers into other threads' frames are dereferenced only under the lock
// while those waiters are queued, which keeps the frames in place (`Waiter::new`).
unsafe impl<T: Send> Sync for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Chan<T> {}

/// Outcome of a non-blocking send under the lock.
pub(crate) enum SendTry<T> {
    /// Sent; the token of the receiver it went to, to notify after unlocking.
    Done(Option<Arc<Token>>),
    Full(T),
    Closed(T),
}

/// Outcome of a non-blocking receive under the lock.
pub(crate) enum RecvTry<T> {
    /// Received; the token of a sender whose value moved, to notify after unlocking.
    Done(T, Option<Arc<Token>>),
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
                recvq: VecDeque::new(),
                sendq: VecDeque::new(),
                senders: 1,
                receivers: 1,
            }),
            cap,
        }
    }

    pub(crate) fn lock(&self) {
        self.lock.lock();
    }

    /// Releases the channel lock. Every call pairs with a `lock()` made earlier on the same
    /// thread: the channel operations below, and `select!`'s lock-all / unlock-all.
    pub(crate) fn unlock(&self) {
        // SAFETY: per the pairing above, this thread holds the lock.
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
        self.unlock();
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
            if w.token.try_claim(w.arm) {
                // SAFETY: we won the claim and hold the lock; the waiter's slot is valid
                // while it is queued (`Waiter::new`).
                unsafe { *w.slot = Some(v) };
                return SendTry::Done(Some(w.token));
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
        if let Some(v) = st.buf.pop_front() {
            // A slot opened: move a blocked sender's value into it.
            while let Some(w) = st.sendq.pop_front() {
                if w.token.try_claim(w.arm) {
                    // SAFETY: as in `try_send_locked`.
                    let x = unsafe { (*w.slot).take() }.expect("a blocked sender holds a value");
                    st.buf.push_back(x);
                    return RecvTry::Done(v, Some(w.token));
                }
            }
            return RecvTry::Done(v, None);
        }
        while let Some(w) = st.sendq.pop_front() {
            if w.token.try_claim(w.arm) {
                // SAFETY: as in `try_send_locked`.
                let x = unsafe { (*w.slot).take() }.expect("a blocked sender holds a value");
                return RecvTry::Done(x, Some(w.token));
            }
        }
        if st.closed || st.senders == 0 {
            RecvTry::Closed
        } else {
            RecvTry::Empty
        }
    }

    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn push_waiter(&self, w: Waiter<T>, send: bool) {
        // SAFETY: per the contract.
        let st = unsafe { self.st() };
        if send {
            st.sendq.push_back(w);
        } else {
            st.recvq.push_back(w);
        }
    }

    /// Takes the waiter whose slot is `slot` off its queue, if it is still there.
    pub(crate) fn remove_waiter(&self, slot: *mut Option<T>, send: bool) {
        self.with(|st| {
            let q = if send { &mut st.sendq } else { &mut st.recvq };
            q.retain(|w| !core::ptr::eq(w.slot, slot));
        });
    }

    /// Closes; returns false if it was closed already.
    fn close(&self) -> bool {
        self.lock();
        // SAFETY: we hold the lock.
        let st = unsafe { self.st() };
        if st.closed {
            self.unlock();
            return false;
        }
        st.closed = true;
        let mut wake = Vec::new();
        for w in st.recvq.drain(..).chain(st.sendq.drain(..)) {
            if w.token.try_claim(w.arm) {
                // SAFETY: we hold the lock and won the claim; the flag is valid while the
                // waiter is queued.
                unsafe { (*w.closed).set(true) };
                wake.push(w.token);
            }
        }
        self.unlock();
        for t in wake {
            t.notify();
        }
        true
    }

    fn send_deadline(&self, v: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        self.lock();
        // SAFETY: we hold the lock.
        let v = match unsafe { self.try_send_locked(v) } {
            SendTry::Done(n) => {
                self.unlock();
                if let Some(t) = n {
                    t.notify();
                }
                return Ok(());
            }
            SendTry::Closed(v) => {
                self.unlock();
                return Err(SendTimeoutError::Closed(v));
            }
            SendTry::Full(v) => v,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.unlock();
            return Err(SendTimeoutError::Timeout(v));
        }
        let mut slot = Some(v);
        let slot_ptr: *mut Option<T> = &mut slot;
        let closed = Cell::new(false);
        let token = Token::for_current();
        // SAFETY: we hold the lock; `slot` and `closed` outlive the wait, and every way out
        // below leaves us off the queue (claimed, drained by close, or removed).
        unsafe {
            self.push_waiter(Waiter::new(token.clone(), 0, slot_ptr, &closed), true);
        }
        self.unlock();
        let sel = token.wait_until(WaitReason::ChanSend, deadline);
        if sel == TIMEOUT {
            self.remove_waiter(slot_ptr, true);
        }
        // SAFETY: off the queue now (the timer claimed and we removed it, or a claimant
        // popped it and notified us after touching the slot): the slot is ours again.
        let left = unsafe { (*slot_ptr).take() };
        if sel == TIMEOUT {
            return Err(SendTimeoutError::Timeout(
                left.expect("value still in a timed-out send"),
            ));
        }
        if closed.get() {
            return Err(SendTimeoutError::Closed(
                left.expect("value still in a send woken by close"),
            ));
        }
        Ok(())
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.lock();
        // SAFETY: we hold the lock.
        match unsafe { self.try_recv_locked() } {
            RecvTry::Done(v, n) => {
                self.unlock();
                if let Some(t) = n {
                    t.notify();
                }
                return Ok(v);
            }
            RecvTry::Closed => {
                self.unlock();
                return Err(RecvTimeoutError::Closed);
            }
            RecvTry::Empty => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.unlock();
            return Err(RecvTimeoutError::Timeout);
        }
        let mut slot: Option<T> = None;
        let slot_ptr: *mut Option<T> = &mut slot;
        let closed = Cell::new(false);
        let token = Token::for_current();
        // SAFETY: as in `send_deadline`.
        unsafe {
            self.push_waiter(Waiter::new(token.clone(), 0, slot_ptr, &closed), false);
        }
        self.unlock();
        let sel = token.wait_until(WaitReason::ChanRecv, deadline);
        if sel == TIMEOUT {
            self.remove_waiter(slot_ptr, false);
            return Err(RecvTimeoutError::Timeout);
        }
        if closed.get() {
            return Err(RecvTimeoutError::Closed);
        }
        // SAFETY: as in `send_deadline`: the sender that filled the slot notified us.
        Ok(unsafe { (*slot_ptr).take() }.expect("a woken receive has a value"))
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
        self.chan.unlock();
        match r {
            SendTry::Done(n) => {
                if let Some(t) = n {
                    t.notify();
                }
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
        self.chan.unlock();
        match r {
            RecvTry::Done(v, n) => {
                if let Some(t) = n {
                    t.notify();
                }
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
