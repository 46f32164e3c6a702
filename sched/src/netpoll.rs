//! The netpoller (Go's netpoll_epoll.go and netpoll.go): one edge-triggered epoll per runtime,
//! and a poll descriptor per socket where a coroutine waiting for readiness parks.
//!
//! - A socket is registered once, for both directions, with `EPOLLET`: the kernel reports a
//!   change of readiness, not its level, so nothing is re-armed after an event.
//! - Each direction of a `PollDesc` holds a `ready` flag and its waiters (wait `Token`s,
//!   wait.rs; usually one, more when several coroutines share a socket). An event sets
//!   `ready` and claims the waiters. A coroutine that got
//!   `EAGAIN` checks `ready` under the descriptor's lock before it parks: set means an edge
//!   came since its last attempt, so it consumes the flag and retries the I/O instead of
//!   sleeping. Every edge therefore either finds the waiter or leaves the flag for it, and
//!   none is lost (Go's `pdReady`).
//! - Who calls `epoll_wait`: an M with nothing to run blocks in it (the "poller"; at most
//!   one at a time), with a timeout until the runtime's next timer (`machine/idle.rs`, `stop_m`); an
//!   M that finds its queues empty polls without blocking before it steals, if nobody is
//!   blocked in epoll; sysmon polls when nobody has for 10 ms. New work or an earlier timer
//!   breaks a blocked poller out through an eventfd (Go's `netpollBreak`).
//! - The right to block (`try_acquire`) and the right to look without blocking
//!   (`try_peek`) are separate, as in Go (where `sched.lastpoll` guards only the blocking
//!   poll): an M that runs out of work while another M takes a non-blocking look must
//!   still be able to block in epoll. With one right for both it parked on its futex
//!   instead, and then nobody watched the network until the busy M next ran dry: echo with
//!   two client threads had a CPU idle for a millisecond and more at a time while the
//!   requests for it waited in epoll (`perf sched`). Epoll allows concurrent waits; an
//!   edge goes to one of them, and a non-blocking look leaves the break eventfd to the
//!   blocking poller it is meant for (`poll`).
//! - Descriptors are never freed, only recycled (Go's `pollCache`): an event already taken
//!   out of epoll may name a socket that was closed meanwhile. The event carries the
//!   descriptor's address and a sequence number that recycling bumps, so a stale event is
//!   recognised and dropped; one that races past the check only causes a spurious wake-up,
//!   which waiters tolerate (they retry the I/O).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_sys::error::EEXIST;
use tessera_sys::net::{self, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, Event};
use tessera_sys::net::{POLLIN, POLLOUT, POLLRDHUP};

use crate::coroutine::WaitReason;
use crate::sys::os_error;
use crate::wait::{NONE, TIMEOUT, Token};

/// Which way a coroutine waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

#[derive(Default)]
struct Side {
    ready: bool,
    /// The peer hung up this direction or the socket failed (`EPOLLRDHUP`, `EPOLLHUP`,
    /// `EPOLLERR`). Sticky: the end-of-file or error is still there to read after the
    /// edge that reported it was consumed, so a wait must not park on it.
    closed: bool,
    waiters: Vec<Arc<Token>>,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct DescState {
    read: Side,
    write: Side,
    /// The epoll this socket is registered with (-1: none yet), and that poller's
    /// `Netpoll::id`: fd numbers are reused, so a socket that outlived its runtime must not
    /// mistake a new runtime's epoll for the one it was registered with.
    epfd: RawFd,
    poller: u64,
}

impl DescState {
    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

/// The poll state of one socket.
pub(crate) struct PollDesc {
    fd: AtomicU32,
    seq: AtomicU32,
    state: Mutex<DescState>,
}

impl core::fmt::Debug for PollDesc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PollDesc")
            .field("fd", &self.fd.load(Ordering::Relaxed))
            .finish()
    }
}

/// Recycled descriptors.
static FREE_DESCS: Mutex<Vec<&'static PollDesc>> = Mutex::new(Vec::new());

/// Sequence numbers live in the top 16 bits of the event's 64-bit data word; x86-64 and
/// AArch64 user addresses fit in the low 48.
const SEQ_SHIFT: u32 = 48;

impl PollDesc {
    /// A descriptor for `fd` (not yet registered with any epoll).
    pub(crate) fn get(fd: RawFd) -> &'static PollDesc {
        let d = FREE_DESCS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| {
                Box::leak(Box::new(PollDesc {
                    fd: AtomicU32::new(0),
                    seq: AtomicU32::new(0),
                    state: Mutex::new(DescState::default()),
                }))
            });
        d.fd.store(fd as u32, Ordering::Relaxed);
        *d.lock() = DescState {
            epfd: -1,
            ..Default::default()
        };
        d
    }

    /// Gives the descriptor back once its socket is closed. Stale events for it are
    /// dropped from now on (the sequence number moves on).
    /// Call just before closing the socket: it leaves its epoll (a `dup` of the fd would
    /// otherwise keep the registration alive).
    pub(crate) fn deregister(&self) {
        let epfd = self.lock().epfd;
        if epfd >= 0 {
            let fd = self.fd.load(Ordering::Relaxed) as RawFd;
            // Failure (epoll already closed) is harmless.
            let _ = net::epoll_del(epfd, fd);
        }
    }

    pub(crate) fn put(&'static self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        let stale = core::mem::take(&mut *self.lock());
        // A waiter cannot exist: the socket's owner is being dropped, so nobody waits on
        // it. Dropping the state outside the free list's lock keeps that lock short.
        drop(stale);
        FREE_DESCS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DescState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event_data(&self) -> u64 {
        let seq = u64::from(self.seq.load(Ordering::Acquire) & 0xffff);
        (self as *const Self as u64) | (seq << SEQ_SHIFT)
    }

    /// Sets the deadline of one direction (`None`: no deadline). A coroutine waiting now
    /// is woken with a timeout at once if the deadline has passed, or gets a timer for it.
    pub(crate) fn set_deadline(&self, dir: Dir, deadline: Option<Instant>) {
        let mut st = self.lock();
        let side = st.side(dir);
        side.deadline = deadline;
        let Some(d) = deadline else {
            return;
        };
        if d <= Instant::now() {
            let expired: Vec<_> = side
                .waiters
                .drain(..)
                .filter(|w| w.try_claim(TIMEOUT))
                .collect();
            drop(st);
            for w in expired {
                // SAFETY: claimed for TIMEOUT just above; each is notified once, here.
                unsafe { w.notify() };
            }
        } else {
            for w in &side.waiters {
                if w.selected() == NONE {
                    // SAFETY: the token is on this list, and its waiter takes it off under
                    // this lock, which we hold, before it goes on: its G stays alive.
                    unsafe { crate::timer::add_wake(d, w.clone()) };
                }
            }
        }
    }

    pub(crate) fn deadline(&self, dir: Dir) -> Option<Instant> {
        self.lock().side(dir).deadline
    }

    /// Waits until the socket may be ready for `dir` again after an `EAGAIN`, or until the
    /// direction's deadline or `op_deadline` (a per-operation timeout) passes (`TimedOut`).
    /// Returns `Ok` possibly spuriously: the caller retries its I/O and comes back on
    /// another `EAGAIN`.
    pub(crate) fn wait(&self, dir: Dir, op_deadline: Option<Instant>) -> io::Result<()> {
        let Some(rt) = crate::machine::current_runtime_of_g() else {
            return self.wait_thread(dir, op_deadline);
        };
        loop {
            let mut st = self.lock();
            if st.poller != rt.poll.id {
                // Registered lazily, on the first wait: most sockets of a request/response
                // server find data at their first read and never need the poller. If the
                // socket was ready before this, epoll_ctl reports it at once.
                rt.poll.register(self)?;
                st.epfd = rt.poll.epfd;
                st.poller = rt.poll.id;
            }
            let side = st.side(dir);
            if side.closed {
                return Ok(());
            }
            if side.ready {
                side.ready = false;
                return Ok(());
            }
            let deadline = earliest(side.deadline, op_deadline);
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Err(timed_out());
            }
            let token = Token::for_current();
            side.waiters.push(token.clone());
            drop(st);
            rt.poll.waiters.fetch_add(1, Ordering::SeqCst);
            let reason = match dir {
                Dir::Read => WaitReason::IoRead,
                Dir::Write => WaitReason::IoWrite,
            };
            // SAFETY: made for this coroutine just above.
            let how = unsafe { token.wait_until(reason, deadline) };
            rt.poll.waiters.fetch_sub(1, Ordering::SeqCst);
            let mut st = self.lock();
            let side = st.side(dir);
            side.waiters.retain(|w| !Arc::ptr_eq(w, &token));
            if how == TIMEOUT {
                // A timer armed for an older deadline may fire after the deadline moved
                // later: only a deadline that really passed ends the wait.
                if earliest(side.deadline, op_deadline).is_some_and(|d| d <= Instant::now()) {
                    return Err(timed_out());
                }
                continue;
            }
            debug_assert_ne!(how, NONE);
        }
    }

    /// `wait` for a plain thread: `poll(2)` on the one socket, with the deadline.
    fn wait_thread(&self, dir: Dir, op_deadline: Option<Instant>) -> io::Result<()> {
        let deadline = earliest(self.deadline(dir), op_deadline);
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let events = match dir {
            Dir::Read => POLLIN | POLLRDHUP,
            Dir::Write => POLLOUT,
        };
        let ready =
            match net::poll_one(self.fd.load(Ordering::Relaxed) as RawFd, events, timeout_ms) {
                Ok(ready) => ready,
                Err(e) => {
                    let e = os_error(e);
                    return if e.kind() == io::ErrorKind::Interrupted {
                        Ok(())
                    } else {
                        Err(e)
                    };
                }
            };
        if !ready && deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(timed_out());
        }
        Ok(())
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The error a passed deadline gives (Go's `os.ErrDeadlineExceeded`).
fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "i/o deadline exceeded")
}

/// A runtime's epoll instance and the bookkeeping of who polls it.
#[derive(Debug)]
pub(crate) struct Netpoll {
    /// Unique per `Netpoll` in the process (never reused, unlike fd numbers).
    id: u64,
    pub(crate) epfd: RawFd,
    /// An eventfd in the epoll set: writing it breaks a blocked `epoll_wait`.
    breakfd: RawFd,
    break_pending: AtomicBool,
    /// Coroutines parked on a descriptor (Go's `netpollWaiters`).
    pub(crate) waiters: AtomicUsize,
    /// The right to block in `epoll_wait` (one thread at a time): `try_acquire`.
    polling: AtomicBool,
    /// The right to poll without blocking (one thread at a time, and only while nobody
    /// blocks): `try_peek`. Independent of `polling`, so that an M going idle can block
    /// while a busy one looks.
    peeking: AtomicBool,
    /// While a poller is blocked: when its timeout ends (ns on the runtime's clock;
    /// `u64::MAX`: no timeout). 0 when nobody is blocked.
    pub(crate) blocked_until: AtomicU64,
    /// When the last poll ended (runtime clock), for sysmon's 10 ms rule.
    pub(crate) last_poll: AtomicU64,
}

impl Netpoll {
    pub(crate) fn new() -> io::Result<Netpoll> {
        // The fds are owned by the returned value (closed in Drop).
        let epfd = net::epoll_create().map_err(os_error)?;
        let breakfd = match net::eventfd() {
            Ok(fd) => fd,
            Err(e) => {
                net::close(epfd);
                return Err(os_error(e));
            }
        };
        if let Err(e) = net::epoll_add(epfd, breakfd, EPOLLIN as u32, 0) {
            net::close(breakfd);
            net::close(epfd);
            return Err(os_error(e));
        }
        static IDS: AtomicU64 = AtomicU64::new(1);
        Ok(Netpoll {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            epfd,
            breakfd,
            break_pending: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            polling: AtomicBool::new(false),
            peeking: AtomicBool::new(false),
            blocked_until: AtomicU64::new(0),
            last_poll: AtomicU64::new(0),
        })
    }

    fn register(&self, d: &PollDesc) -> io::Result<()> {
        let events = (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) as u32;
        let fd = d.fd.load(Ordering::Relaxed) as RawFd;
        // `fd` is the open socket the descriptor belongs to.
        match net::epoll_add(self.epfd, fd, events, d.event_data()) {
            Err(e) if e.0 != EEXIST => Err(os_error(e)),
            _ => Ok(()),
        }
    }

    /// Whether anything waits on this poller.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Takes the right to block in `epoll_wait` (one thread at a time).
    pub(crate) fn try_acquire(&self) -> bool {
        take(&self.polling)
    }

    pub(crate) fn release(&self, now_ns: u64) {
        self.last_poll.store(now_ns, Ordering::Relaxed);
        self.polling.store(false, Ordering::Release);
    }

    /// Takes the right to poll without blocking: false while another thread has it, or
    /// while a poller is blocked in `epoll_wait` (the events wake that one, which then
    /// takes an idle P for them; Go's findRunnable skips its non-blocking `netpoll` then
    /// too). A poller that blocks just after this check only shares the events with us.
    pub(crate) fn try_peek(&self) -> bool {
        self.blocked_until.load(Ordering::SeqCst) == 0 && take(&self.peeking)
    }

    pub(crate) fn end_peek(&self, now_ns: u64) {
        self.last_poll.store(now_ns, Ordering::Relaxed);
        self.peeking.store(false, Ordering::Release);
    }

    /// Breaks a blocked poller out of `epoll_wait` (Go's `netpollBreak`).
    pub(crate) fn wake(&self) {
        if self
            .break_pending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // `breakfd` is our eventfd; the counter cannot overflow (the poller drains it).
            let _ = net::eventfd_write(self.breakfd, 1);
        }
    }

    /// One `epoll_wait` (the caller holds the right to block, or to peek if `timeout` is
    /// zero): `timeout` `None` blocks until an event or `wake`, zero does not block. Claims
    /// the waiters of ready descriptors and appends them to `out` for the caller to notify
    /// (after it has a P to put them on).
    pub(crate) fn poll(&self, timeout: Option<Duration>, out: &mut Vec<Arc<Token>>) {
        let blocking = timeout != Some(Duration::ZERO);
        const BATCH: usize = 128;
        let mut slots = [const { MaybeUninit::<Event>::uninit() }; BATCH];
        let ready = net::epoll_wait(self.epfd, &mut slots, timeout);
        // Room for one waiter per event (the usual case) at once: growing from empty took
        // four reallocations for the echo server's batches of ~30 (callgrind: ~40
        // instructions a request in `realloc` and `finish_grow`, now none).
        out.reserve(ready.len());
        for ev in ready {
            let data = ev.data();
            if data == 0 {
                // The break eventfd. A non-blocking look leaves it (it is level-triggered,
                // so it stays readable): the break is for a poller blocked now or next,
                // which a look may run beside (`try_peek`), and draining it here would
                // leave that one asleep past a timer or with work for an idle P (Go's
                // `netpoll(0)` does not drain it either).
                if !blocking {
                    continue;
                }
                // Drain it (non-blocking; empty is fine) and allow the next break.
                let _ = net::eventfd_read(self.breakfd);
                self.break_pending.store(false, Ordering::Release);
                continue;
            }
            let d = (data & ((1 << SEQ_SHIFT) - 1)) as *const PollDesc;
            // SAFETY: descriptors are leaked, never freed: the address stays valid even if
            // the socket was closed after the event was queued.
            let d = unsafe { &*d };
            if u64::from(d.seq.load(Ordering::Acquire) & 0xffff) != data >> SEQ_SHIFT {
                continue;
            }
            let bits = ev.events() as i32;
            let err = bits & (EPOLLERR | EPOLLHUP) != 0;
            let readable = err || bits & (EPOLLIN | EPOLLRDHUP) != 0;
            let writable = err || bits & EPOLLOUT != 0;
            let mut st = d.lock();
            if err || bits & EPOLLRDHUP != 0 {
                st.read.closed = true;
            }
            if err {
                st.write.closed = true;
            }
            let start = out.len();
            if readable {
                st.read.ready = true;
                take_waiters(&mut st.read.waiters, out);
            }
            if writable {
                st.write.ready = true;
                take_waiters(&mut st.write.waiters, out);
            }
            drop(st);
            // Keep only the tokens this event won (a deadline may have claimed one).
            let mut i = start;
            while i < out.len() {
                if out[i].try_claim(0) {
                    i += 1;
                } else {
                    out.swap_remove(i);
                }
            }
        }
    }
}

/// Moves `from`'s waiters to the end of `out`, in order, element by element: there is
/// usually one or none, and `Vec::append` (or `extend` from a drain, which clippy would
/// have us turn into `append`) calls `memcpy` whatever the length: a call per event in the
/// echo server's profile.
#[inline]
fn take_waiters(from: &mut Vec<Arc<Token>>, out: &mut Vec<Arc<Token>>) {
    for w in from.drain(..) {
        out.push(w);
    }
}

/// Takes a try-once flag: false if it was set already.
#[inline]
fn take(flag: &AtomicBool) -> bool {
    !flag.load(Ordering::Relaxed)
        && flag
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
}

impl Drop for Netpoll {
    fn drop(&mut self) {
        // Both fds are ours and closed once.
        net::close(self.breakfd);
        net::close(self.epfd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A break (`wake`) is for the poller blocked in epoll, or the next one to block: a
    /// non-blocking look, which may run beside that poller, must leave it. Had the look
    /// drained the eventfd, a blocked poller would sleep on past the timer or the idle P's
    /// work the break was for.
    #[test]
    fn a_look_leaves_the_break_to_the_blocking_poller() {
        let np = Netpoll::new().unwrap();
        np.wake();
        let mut woken = Vec::new();
        np.poll(Some(Duration::ZERO), &mut woken);
        assert!(woken.is_empty());
        assert!(
            np.break_pending.load(Ordering::SeqCst),
            "a look allowed the next break before the poller saw this one"
        );
        assert!(
            net::poll_one(np.breakfd, POLLIN, 0).unwrap(),
            "a look drained the break eventfd"
        );
        // The blocking poller takes it: returns at once and drains it.
        np.poll(None, &mut woken);
        assert!(woken.is_empty());
        assert!(!np.break_pending.load(Ordering::SeqCst));
        assert!(!net::poll_one(np.breakfd, POLLIN, 0).unwrap());
    }

    /// The right to block and the right to look without blocking are separate: an M that
    /// goes idle while another looks can still block in epoll (with one right for both it
    /// slept on its futex, and nobody watched the network). A look needs nobody blocked.
    #[test]
    fn an_idle_m_may_block_while_another_looks() {
        let np = Netpoll::new().unwrap();
        assert!(np.try_peek());
        assert!(np.try_acquire(), "a look held the right to block");
        assert!(!np.try_acquire(), "two pollers blocking");
        assert!(!np.try_peek(), "two looks at once");
        np.end_peek(1);
        np.blocked_until.store(u64::MAX, Ordering::SeqCst);
        assert!(!np.try_peek(), "a look beside a blocked poller");
        np.blocked_until.store(0, Ordering::SeqCst);
        np.release(2);
        assert!(np.try_peek());
        np.end_peek(3);
        assert_eq!(np.last_poll.load(Ordering::Relaxed), 3);
    }
}
