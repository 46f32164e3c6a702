//! Timers: `sleep`, deadlines of channel operations and `select!`, `after` and tickers.
//!
//! One process-wide heap served by one timer thread, not Go's per-P heaps. The reason: Go
//! keeps timers on Ps so that an M blocked in netpoll can wait for the next timer of its
//! own P, and timer-heavy servers scale over many Ps. This runtime has no netpoller yet,
//! and its idle Ms sleep on futexes; a dedicated thread that sleeps until the earliest
//! deadline is the simplest design with no lost or late wake-up (adding an earlier timer
//! wakes it), and it keeps timer work off the Ms. A timer fires by claiming its waiter's
//! token (wait.rs), so a timer whose waiter was woken by something else does nothing;
//! such stale entries are purged when they pile up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::chan::{self, Receiver, Sender, TrySendError};
use crate::coroutine::WaitReason;
use crate::park::Parker;
use crate::wait::{TIMEOUT, Token};

enum Action {
    Wake(Arc<Token>),
    /// Send the time; re-arm after `period` if `Some` (a ticker).
    Send(Sender<Instant>, Option<Duration>),
}

struct Timer {
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

struct Timers {
    heap: Mutex<Heap>,
    parker: Parker,
}

fn timers() -> &'static Timers {
    static T: OnceLock<&'static Timers> = OnceLock::new();
    T.get_or_init(|| {
        let t: &'static Timers = Box::leak(Box::new(Timers {
            heap: Mutex::new(Heap {
                heap: BinaryHeap::new(),
                seq: 0,
                purge_at: 1024,
            }),
            parker: Parker::new(),
        }));
        std::thread::Builder::new()
            .name("tessera-timers".into())
            .spawn(move || timer_thread(t))
            .expect("cannot start the timer thread");
        t
    })
}

fn add(when: Instant, action: Action) {
    let t = timers();
    let mut h = t.heap.lock().unwrap_or_else(|e| e.into_inner());
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
    drop(h);
    if earliest {
        t.parker.unpark();
    }
}

/// Arms a deadline that claims `token` for `TIMEOUT`.
pub(crate) fn add_wake(when: Instant, token: Arc<Token>) {
    add(when, Action::Wake(token));
}

fn timer_thread(t: &'static Timers) {
    loop {
        let mut fire = Vec::new();
        let next = {
            let mut h = t.heap.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while h.heap.peek().is_some_and(|Reverse(top)| top.when <= now) {
                let Reverse(timer) = h.heap.pop().expect("peeked");
                fire.push(timer);
            }
            h.heap.peek().map(|Reverse(top)| top.when)
        };
        for timer in fire {
            match timer.action {
                Action::Wake(tok) => {
                    if tok.try_claim(TIMEOUT) {
                        tok.notify();
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
                            add(when, Action::Send(tx, Some(p)));
                        }
                    }
                },
            }
        }
        let timeout = next.map(|n| n.saturating_duration_since(Instant::now()));
        if timeout != Some(Duration::ZERO) {
            t.parker.park_timeout(timeout);
        }
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
    token.wait_until(WaitReason::Sleep, Some(deadline));
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
