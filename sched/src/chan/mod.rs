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

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use errors::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

use crate::coroutine::WaitReason;
use crate::wait::{TIMEOUT, Token};
use tessera_span::lock::RawLock;

/// A blocked send or receive, or one arm of a blocked `select!`.
pub(crate) struct Entry<T> {
    pub(crate) token: Arc<Token>,
    pub(crate) arm: usize,
    /// The value being sent, or the value received. Written only by the token's claimant
    /// (under the channel lock), read by the waiter after it was notified.
    pub(crate) slot: UnsafeCell<Option<T>>,
    /// Set by the claimant when it claimed because the channel closed.
    pub(crate) closed: AtomicBool,
}

// SAFETY: `slot` is accessed by one party at a time, ordered by the token protocol (claim
// under the channel lock, then a release/acquire wake-up); T: Send lets the value cross.
unsafe impl<T: Send> Sync for Entry<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Entry<T> {}

impl<T> Entry<T> {
    pub(crate) fn new(token: Arc<Token>, arm: usize, value: Option<T>) -> Arc<Self> {
        Arc::new(Self {
            token,
            arm,
            slot: UnsafeCell::new(value),
            closed: AtomicBool::new(false),
        })
    }

    /// Takes the slot's value.
    ///
    /// # Safety
    /// The caller is the waiter after its notification, or holds the channel lock and won
    /// the claim, or removed the entry from every queue after a timeout.
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: per the contract, nobody else touches the slot now.
        unsafe { (*self.slot.get()).take() }
    }

    /// # Safety
    /// As for `take`.
    unsafe fn put(&self, v: T) {
        // SAFETY: per the contract.
        unsafe { *self.slot.get() = Some(v) };
    }
}

pub(crate) struct State<T> {
    buf: VecDeque<T>,
    closed: bool,
    recvq: VecDeque<Arc<Entry<T>>>,
    sendq: VecDeque<Arc<Entry<T>>>,
    senders: usize,
    receivers: usize,
}

pub(crate) struct Chan<T> {
    lock: RawLock,
    state: UnsafeCell<State<T>>,
    cap: usize,
}

// SAFETY: `state` is only touched under `lock`; T: Send values cross threads.
unsafe impl<T: Send> Sync for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Chan<T> {}

/// Outcome of a non-blocking send under the lock.
pub(crate) enum SendTry<T> {
    /// Sent; the receiver's entry, popped off its queue, to notify after unlocking.
    Done(Option<Arc<Entry<T>>>),
    Full(T),
    Closed(T),
}

/// Outcome of a non-blocking receive under the lock.
pub(crate) enum RecvTry<T> {
    /// Received; a sender's entry, popped off its queue, to notify after unlocking.
    Done(T, Option<Arc<Entry<T>>>),
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
        while let Some(e) = st.recvq.pop_front() {
            if e.token.try_claim(e.arm) {
                // SAFETY: we won the claim and hold the lock.
                unsafe { e.put(v) };
                return SendTry::Done(Some(e));
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
            while let Some(e) = st.sendq.pop_front() {
                if e.token.try_claim(e.arm) {
                    // SAFETY: we won the claim and hold the lock.
                    let w = unsafe { e.take() }.expect("a blocked sender holds a value");
                    st.buf.push_back(w);
                    return RecvTry::Done(v, Some(e));
                }
            }
            return RecvTry::Done(v, None);
        }
        while let Some(e) = st.sendq.pop_front() {
            if e.token.try_claim(e.arm) {
                // SAFETY: we won the claim and hold the lock.
                let w = unsafe { e.take() }.expect("a blocked sender holds a value");
                return RecvTry::Done(w, Some(e));
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
    pub(crate) unsafe fn push_waiter(&self, e: Arc<Entry<T>>, send: bool) {
        // SAFETY: per the contract.
        let st = unsafe { self.st() };
        if send {
            st.sendq.push_back(e);
        } else {
            st.recvq.push_back(e);
        }
    }

    pub(crate) fn remove_waiter(&self, e: &Arc<Entry<T>>, send: bool) {
        self.with(|st| {
            let q = if send { &mut st.sendq } else { &mut st.recvq };
            q.retain(|x| !Arc::ptr_eq(x, e));
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
        for e in st.recvq.drain(..).chain(st.sendq.drain(..)) {
            if e.token.try_claim(e.arm) {
                e.closed.store(true, Ordering::Relaxed);
                wake.push(e.token.clone());
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
                if let Some(e) = n {
                    e.token.notify();
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
        let e = Entry::new(Token::for_current(), 0, Some(v));
        // SAFETY: we hold the lock.
        unsafe { self.push_waiter(e.clone(), true) };
        self.unlock();
        let sel = e.token.wait_until(WaitReason::ChanSend, deadline);
        if sel == TIMEOUT {
            self.remove_waiter(&e, true);
            // SAFETY: the timer won the claim and the entry is off the queue: it is ours.
            let v = unsafe { e.take() }.expect("value still in a timed-out send");
            return Err(SendTimeoutError::Timeout(v));
        }
        if e.closed.load(Ordering::Relaxed) {
            // SAFETY: we were notified; the closer did not touch the slot.
            let v = unsafe { e.take() }.expect("value still in a send woken by close");
            return Err(SendTimeoutError::Closed(v));
        }
        Ok(())
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.lock();
        // SAFETY: we hold the lock.
        match unsafe { self.try_recv_locked() } {
            RecvTry::Done(v, n) => {
                self.unlock();
                if let Some(e) = n {
                    e.token.notify();
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
        let e = Entry::new(Token::for_current(), 0, None);
        // SAFETY: we hold the lock.
        unsafe { self.push_waiter(e.clone(), false) };
        self.unlock();
        let sel = e.token.wait_until(WaitReason::ChanRecv, deadline);
        if sel == TIMEOUT {
            self.remove_waiter(&e, false);
            return Err(RecvTimeoutError::Timeout);
        }
        if e.closed.load(Ordering::Relaxed) {
            return Err(RecvTimeoutError::Closed);
        }
        // SAFETY: we were notified by the sender that filled the slot.
        Ok(unsafe { e.take() }.expect("a woken receive has a value"))
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
                if let Some(e) = n {
                    e.token.notify();
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
                if let Some(e) = n {
                    e.token.notify();
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
