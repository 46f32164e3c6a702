//! Timers: `sleep`, deadlines of channel operations, `select!` and sockets, `after` and
//! tickers.
//!
//! Each P has its own timer heap (`P::timers`), as in Go since 1.14 (proc.go
//! `checkTimers`, `timeSleepUntil`): a coroutine's timer goes to the heap of the P it runs
//! on, so Ps that add and fire timers at the same time do not share a lock, and a heap's
//! earliest deadline is readable without its lock. A thread that holds no P of the
//! runtime (a plain thread setting a socket deadline for a coroutine) picks a heap at
//! random. Who fires them, so that none is lost whatever its P is doing:
//!
//! - the P itself, each time it schedules (one atomic load when its heap is empty);
//! - an M looking for work to steal, on its last pass over the other Ps (their Ms may be
//!   busy running a coroutine that does not yield, or idle);
//! - the idle M blocked in the netpoller, which sleeps until the earliest deadline of any
//!   heap (`next_ns`) and fires every heap that is due when it wakes;
//! - sysmon, for any heap whose timers are a millisecond overdue (every P busy).
//!
//! Waits outside any runtime (a plain thread's channel timeout, `after` on a plain thread)
//! go to a process-wide heap served by a `tessera-timers` thread.
//!
//! A timer fires by claiming its waiter's token (wait.rs), so a timer whose waiter was woken
//! by something else does nothing; such stale entries are purged when they pile up.

use core::sync::atomic::{AtomicU64, Ordering};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::chan::{self, Receiver, Sender, TrySendError};
use crate::coroutine::WaitReason;
use crate::park::Parker;
use crate::processor::P;
use crate::runtime::Shared;
use crate::wait::{TIMEOUT, Token};

pub(crate) enum Action {
    Wake(Arc<Token>),
    /// Send the time; re-arm after `period` if `Some` (a ticker).
    Send(Sender<Instant>, Option<Duration>),
}

pub(crate) struct Timer {
    when: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.when, self.seq) == (o.when, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (self.when, self.seq).cmp(&(o.when, o.seq))
    }
}

struct Heap {
    heap: BinaryHeap<Reverse<Timer>>,
    seq: u64,
    purge_at: usize,
}

/// A heap of timers with its earliest deadline readable without the lock.
pub(crate) struct TimerHeap {
    heap: Mutex<Heap>,
    /// The earliest deadline in nanoseconds since `epoch`, `u64::MAX` when empty.
    next: AtomicU64,
    epoch: Instant,
}

impl core::fmt::Debug for TimerHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TimerHeap")
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl TimerHeap {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            heap: Mutex::new(Heap {
                heap: BinaryHeap::new(),
                seq: 0,
                purge_at: 1024,
            }),
            next: AtomicU64::new(u64::MAX),
            epoch,
        }
    }

    /// Nanoseconds since the heap's epoch (at least 1, so 0 can mean "none" elsewhere).
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }

    /// Whether any timer is pending.
    #[inline]
    pub(crate) fn armed(&self) -> bool {
        self.next.load(Ordering::SeqCst) != u64::MAX
    }

    /// The earliest deadline (nanoseconds since the epoch), `u64::MAX` if none.
    pub(crate) fn next_ns(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// How long until the earliest timer, `None` when there is none.
    pub(crate) fn until_next(&self) -> Option<Duration> {
        let next = self.next_ns();
        (next != u64::MAX)
            .then(|| Duration::from_nanos(next.saturating_sub(self.ns(Instant::now()))))
    }

    /// Adds a timer; returns its deadline in nanoseconds if it is now the earliest.
    fn push(&self, when: Instant, action: Action) -> Option<u64> {
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        h.seq += 1;
        let seq = h.seq;
        let earliest = h.heap.peek().is_none_or(|Reverse(top)| when < top.when);
        h.heap.push(Reverse(Timer { when, seq, action }));
        if h.heap.len() >= h.purge_at {
            // Drop timers whose waiter has already been woken by something else.
            let old = std::mem::take(&mut h.heap);
            h.heap = old
                .into_iter()
                .filter(|Reverse(t)| match &t.action {
                    Action::Wake(tok) => tok.selected() == crate::wait::NONE,
                    Action::Send(tx, _) => !tx.is_closed(),
                })
                .collect();
            h.purge_at = (h.heap.len() * 2).max(1024);
        }
        let next = h.heap.peek().map_or(u64::MAX, |Reverse(t)| self.ns(t.when));
        self.next.store(next, Ordering::SeqCst);
        earliest.then(|| self.ns(when))
    }

    /// Drops every timer (a runtime's drop: their tokens and channels go with them).
    pub(crate) fn clear(&self) {
        let old = core::mem::take(&mut self.heap.lock().unwrap_or_else(|e| e.into_inner()).heap);
        self.next.store(u64::MAX, Ordering::SeqCst);
        drop(old);
    }

    /// Moves every timer due at `now` into `out`.
    fn take_due(&self, now: Instant, out: &mut Vec<Timer>) {
        if self.ns(now) < self.next_ns() {
            return;
        }
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        while h.heap.peek().is_some_and(|Reverse(top)| top.when <= now) {
            let Reverse(timer) = h.heap.pop().expect("peeked");
            out.push(timer);
        }
        let next = h.heap.peek().map_or(u64::MAX, |Reverse(t)| self.ns(t.when));
        self.next.store(next, Ordering::SeqCst);
    }
}

/// Fires `timers`; tickers are re-armed through `rearm`.
fn fire(timers: Vec<Timer>, rearm: &dyn Fn(Instant, Action)) {
    for timer in timers {
        match timer.action {
            Action::Wake(tok) => {
                if tok.try_claim(TIMEOUT) {
                    // SAFETY: claimed just above; the timer is gone after this.
                    unsafe { tok.notify() };
                }
            }
            Action::Send(tx, period) => match tx.try_send(Instant::now()) {
                Err(TrySendError::Closed(_)) => {}
                _ => {
                    if let Some(p) = period {
                        // Go's ticker: drop ticks for a slow receiver, keep the phase.
                        let mut when = timer.when + p;
                        let now = Instant::now();
                        if when <= now {
                            let behind = (now - when).as_nanos() / p.as_nanos().max(1);
                            when += p * (behind as u32 + 1);
                        }
                        rearm(when, Action::Send(tx, Some(p)));
                    }
                }
            },
        }
    }
}

/// Fires the due timers of `p`'s heap (called by any thread: the P's own M, a thief,
/// the poller, sysmon). Woken coroutines go to the caller's P if it holds one, else to the
/// global queue. Returns whether any fired.
#[inline]
pub(crate) fn run_due(sh: &Shared, p: &P) -> bool {
    p.timers.armed() && run_due_armed(sh, p)
}

/// `run_due` for a P with a timer armed.
#[inline(never)]
fn run_due_armed(sh: &Shared, p: &P) -> bool {
    let mut due = Vec::new();
    p.timers.take_due(Instant::now(), &mut due);
    let fired = !due.is_empty();
    if fired {
        fire(due, &|when, action| add_to_runtime(sh, when, action));
    }
    fired
}

/// Fires the timers of every P whose earliest one is at least `late_ns` overdue. Returns
/// whether any fired.
pub(crate) fn run_all_due(sh: &Shared, late_ns: u64) -> bool {
    let now = sh.now_ns();
    let mut fired = false;
    for p in sh.ps.iter() {
        if p.timers.next_ns().saturating_add(late_ns) <= now {
            fired |= run_due(sh, p);
        }
    }
    fired
}

/// The earliest deadline of all the runtime's timers (nanoseconds on its clock), `u64::MAX`
/// if none (Go's `timeSleepUntil`).
pub(crate) fn next_ns(sh: &Shared) -> u64 {
    sh.ps
        .iter()
        .map(|p| p.timers.next_ns())
        .min()
        .unwrap_or(u64::MAX)
}

/// Whether the runtime has any timer pending.
pub(crate) fn armed(sh: &Shared) -> bool {
    next_ns(sh) != u64::MAX
}

/// How long until the runtime's earliest timer, `None` when there is none.
pub(crate) fn until_next(sh: &Shared) -> Option<Duration> {
    let next = next_ns(sh);
    (next != u64::MAX).then(|| Duration::from_nanos(next.saturating_sub(sh.now_ns())))
}

/// Drops every timer of the runtime (its drop: their tokens and channels go with them).
pub(crate) fn clear(sh: &Shared) {
    for p in sh.ps.iter() {
        p.timers.clear();
    }
}

/// Adds a timer to the heap of the caller's P, or of a P picked at random for a thread
/// that holds none of this runtime's.
fn add_to_runtime(sh: &Shared, when: Instant, action: Action) {
    let p = crate::machine::current_p(sh).unwrap_or_else(|| {
        let n = sh.ps.len() as u64;
        &sh.ps[(crate::machine::fastrand() % n) as usize]
    });
    if let Some(ns) = p.timers.push(when, action) {
        crate::machine::timer_added(sh, ns);
    }
}

/// The heap of waits outside any runtime, and the thread that serves it.
struct ThreadTimers {
    timers: TimerHeap,
    parker: Parker,
}

fn thread_timers() -> &'static ThreadTimers {
    static T: OnceLock<&'static ThreadTimers> = OnceLock::new();
    T.get_or_init(|| {
        let t: &'static ThreadTimers = Box::leak(Box::new(ThreadTimers {
            timers: TimerHeap::new(Instant::now()),
            parker: Parker::new(),
        }));
        std::thread::Builder::new()
            .name("tessera-timers".into())
            .spawn(move || timer_thread(t))
            .expect("cannot start the timer thread");
        t
    })
}

fn add_to_thread_heap(when: Instant, action: Action) {
    let t = thread_timers();
    if t.timers.push(when, action).is_some() {
        t.parker.unpark();
    }
}

fn timer_thread(t: &'static ThreadTimers) {
    loop {
        let mut due = Vec::new();
        t.timers.take_due(Instant::now(), &mut due);
        fire(due, &add_to_thread_heap);
        let timeout = t.timers.until_next();
        if timeout != Some(Duration::ZERO) {
            t.parker.park_timeout(timeout);
        }
    }
}

/// Adds a timer to the heap of the runtime the calling coroutine runs on, or to the
/// process-wide one.
fn add(when: Instant, action: Action) {
    match crate::machine::current_runtime_of_g() {
        Some(sh) => add_to_runtime(sh, when, action),
        None => add_to_thread_heap(when, action),
    }
}

/// Arms a deadline that claims `token` for `TIMEOUT`, on the heap of the token's waiter.
///
/// # Safety
/// As for `Token::runtime`: a waiting G stays alive until this returns.
pub(crate) unsafe fn add_wake(when: Instant, token: Arc<Token>) {
    // SAFETY: per the contract.
    match unsafe { token.runtime() } {
        Some(sh) => add_to_runtime(sh, when, Action::Wake(token)),
        None => add_to_thread_heap(when, Action::Wake(token)),
    }
}

/// Parks the calling coroutine for `d` (the thread, outside a runtime).
pub fn sleep(d: Duration) {
    sleep_until(Instant::now() + d);
}

/// Parks the calling coroutine until `deadline`.
pub fn sleep_until(deadline: Instant) {
    if crate::machine::current_g().is_null() {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return;
    }
    if Instant::now() >= deadline {
        crate::machine::yield_now();
        return;
    }
    let token = Token::for_current();
    // SAFETY: made for this coroutine just above.
    unsafe { token.wait_until(WaitReason::Sleep, Some(deadline)) };
}

/// A channel that receives the time once, after `d` (Go's `time.After`).
pub fn after(d: Duration) -> Receiver<Instant> {
    let (tx, rx) = chan::bounded(1);
    add(Instant::now() + d, Action::Send(tx, None));
    rx
}

/// Delivers the time every `period` on a channel of capacity 1, dropping ticks for a slow
/// receiver (Go's `time.Ticker`). Dropping or `stop`ping it ends the ticks.
#[derive(Debug)]
pub struct Ticker {
    rx: Receiver<Instant>,
}

impl Ticker {
    /// Starts ticking; the first tick comes after one `period`.
    ///
    /// # Panics
    /// If `period` is zero.
    pub fn new(period: Duration) -> Ticker {
        assert!(!period.is_zero(), "a ticker needs a non-zero period");
        let (tx, rx) = chan::bounded(1);
        add(Instant::now() + period, Action::Send(tx, Some(period)));
        Ticker { rx }
    }

    /// Waits for the next tick.
    pub fn tick(&self) -> Instant {
        self.rx
            .recv()
            .expect("a running ticker's channel stays open")
    }

    /// The tick channel, for `select!`.
    pub fn receiver(&self) -> &Receiver<Instant> {
        &self.rx
    }

    /// Stops the ticks (also done by drop).
    pub fn stop(self) {}
}
