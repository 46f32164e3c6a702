//! Loom checks of the idle protocol (idle.rs): Ms giving their P back and going to sleep
//! race threads that queue work and call `wakep`, and loom checks that no wake-up is lost —
//! every G pushed is run by some M, and no M sleeps while a G it should run is queued.
//!
//! Loom runs the protocol's own functions — `release_p`, `stop_m` with `poll_blocking`,
//! `wakep`, `start_m`, `put_idle_p`, `try_spin`, `reset_spinning` — on the real `MShared`s
//! and their `Parker`s, through `Sched` implemented by `Model`, a stand-in for the runtime
//! (whose `Shared` holds allocator caches, stacks, epoll and timers). What the stand-in
//! leaves out, and why that is sound for this property:
//!
//! - The run queues are one counter of queued Gs, standing for the global queue's `SeqCst`
//!   length (global_queue.rs). A local run queue is only pushed by the M holding its P,
//!   which is awake; the global queue is what a thread without a P (a waker, a timer, the
//!   poller with no P) pushes to, and is the case where a wake-up can be lost.
//! - The M loop (m_loop.rs `schedule`, find_work.rs `find_runnable`) is reduced to `m_main`
//!   below: the queue, then, with more than one P, the real spinning bound (`try_spin`)
//!   and one more look at the queue for the steal passes.
//! - P status words, allocator caches and blocking sections are not modelled; the
//!   mailboxes of locked Gs stay empty (their length is a plain atomic loom does not see).
//! - epoll is a `Parker`: a poll with no timer sleeps until `poll_wake`, whose eventfd,
//!   like the parker's permit, is sticky. No socket becomes ready and no timer is armed.
//!
//! A G, once an M takes it, keeps that M and its P until the model ends ("a long-running
//! G"), so every G needs an M of its own: the model cannot pass by having one M run all the
//! work in turn, and so it checks that `wakep` (and `reset_spinning`'s `wakep`) fan the work
//! out. The M that runs the last G shuts the runtime down the way `Runtime::drop` does.
//!
//! The Ms sleep on the real `Parker`, whose futex under loom really blocks (sys.rs): an M
//! that sleeps while its G stays queued, with nobody left to wake it, ends the execution
//! with every thread blocked, and loom reports it as a deadlock. That is the lost wake-up.
//! (Dropping the fence in `wakep`, the re-check in `stop_m`, or giving `wakep`'s spinning
//! count back after the idle lock rather than under it, makes loom report one.)

use core::cell::Cell;
use core::ptr;
use std::sync::{Arc, Weak};

use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use super::idle::{Idle, Sched, release_p, reset_spinning, stop_m, try_spin, wakep};
use super::{MCtx, MShared, NO_P};
use crate::park::Parker;
use crate::shim::{AtomicBool, AtomicUsize, Mutex};

/// The netpoller: the right to poll, `blocked_until`, and the break eventfd
/// (`break_pending`, with `epoll` standing for the eventfd inside `epoll_wait`), as in
/// netpoll.rs.
struct Poll {
    polling: AtomicBool,
    blocked_until: AtomicU64,
    break_pending: AtomicBool,
    epoll: Parker,
    /// Whether some G waits on a socket (fixed per scenario).
    waiters: bool,
}

/// The runtime, reduced to what the idle protocol touches.
struct Model {
    me: Weak<Model>,
    idle: Mutex<Idle>,
    npidle: AtomicUsize,
    nmspinning: AtomicUsize,
    shutdown: AtomicBool,
    /// `global.len()`.
    queued: AtomicUsize,
    /// `all_ms`, with slots for the Ms `new_m` may start (`started` says how many are used).
    ms: Vec<Arc<MShared>>,
    started: AtomicUsize,
    /// `extra_ms`: the model's main thread joins them.
    extra: Mutex<Vec<loom::thread::JoinHandle<()>>>,
    nprocs: usize,
    poll: Poll,
    /// Gs taken by an M so far, and how many the scenario pushes.
    ran: AtomicUsize,
    total: usize,
}

impl Sched for Model {
    type Woken = ();

    fn idle(&self) -> &Mutex<Idle> {
        &self.idle
    }

    fn npidle(&self) -> &AtomicUsize {
        &self.npidle
    }

    fn nmspinning(&self) -> &AtomicUsize {
        &self.nmspinning
    }

    fn shutdown(&self) -> &AtomicBool {
        &self.shutdown
    }

    fn set_p_idle(&self, _p: usize) {}

    fn any_work(&self, _m: &MShared) -> bool {
        self.queued.load(SeqCst) > 0
    }

    unsafe fn new_m(&self, p: usize, spinning: bool) -> bool {
        if self.shutdown.load(SeqCst) {
            return false;
        }
        let id = self.started.fetch_add(1, SeqCst);
        assert!(id < self.ms.len(), "the scenario needs another spare M");
        let sh = self.me.upgrade().expect("the model outlives its Ms");
        let t = loom::thread::spawn(move || m_main(&sh, id, p, spinning));
        self.extra.lock().unwrap().push(t);
        true
    }

    fn needs_poller(&self) -> bool {
        self.poll.waiters
    }

    /// `Netpoll::try_acquire`.
    fn poll_acquire(&self) -> bool {
        !self.poll.polling.load(Relaxed)
            && self
                .poll
                .polling
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
    }

    /// `Netpoll::release`.
    fn poll_release(&self) {
        self.poll.polling.store(false, Release);
    }

    /// `Netpoll::wake`: the eventfd write is the epoll parker's permit.
    fn poll_wake(&self) {
        if self
            .poll
            .break_pending
            .compare_exchange(false, true, AcqRel, Relaxed)
            .is_ok()
        {
            self.poll.epoll.unpark();
        }
    }

    fn blocked_until(&self) -> u64 {
        self.poll.blocked_until.load(SeqCst)
    }

    fn set_blocked_until(&self, ns: u64) {
        self.poll.blocked_until.store(ns, SeqCst);
    }

    fn next_timer_ns(&self) -> u64 {
        u64::MAX
    }

    /// `Netpoll::poll` with no timeout (no timer is armed): sleeps until a break, then
    /// drains it.
    fn poll_until_timer(&self, _woken: &mut Vec<()>) {
        self.poll.epoll.park();
        self.poll.break_pending.store(false, Release);
    }

    fn timers_due(&self) -> bool {
        false
    }

    unsafe fn deliver(&self, _woken: Vec<()>) {}
}

/// How an M enters the model.
#[derive(Clone, Copy)]
enum Start {
    /// Holding P `p` (`spinning`: counted in `nmspinning`, as `wakep` starts one).
    Holding { p: usize, spinning: bool },
    /// Asleep: already on the idle list with its P (set up by `Scenario::build`).
    Idle,
}

struct Scenario {
    /// The Ms running at the start; the model has `nprocs == ms.len()` Ps.
    ms: &'static [Start],
    /// Ms `start_m` may start beyond those.
    spare_ms: usize,
    /// Gs the pushing thread queues, one `make_runnable` each.
    gs: usize,
    /// Something waits on the netpoller: an idle M becomes the poller.
    poll_waiters: bool,
}

impl Scenario {
    fn build(&self) -> Arc<Model> {
        let n = self.ms.len();
        let ms: Vec<Arc<MShared>> = (0..n + self.spare_ms)
            .map(|_| Arc::new(MShared::new()))
            .collect();
        let mut idle = Idle::default();
        let mut nmspinning = 0;
        for (id, s) in self.ms.iter().enumerate() {
            match *s {
                Start::Holding { spinning, .. } => nmspinning += usize::from(spinning),
                Start::Idle => {
                    idle.ps.push(id);
                    idle.ms.push(ms[id].clone());
                }
            }
        }
        Arc::new_cyclic(|me| Model {
            me: me.clone(),
            queued: AtomicUsize::new(0),
            npidle: AtomicUsize::new(idle.ps.len()),
            nmspinning: AtomicUsize::new(nmspinning),
            idle: Mutex::new(idle),
            ms,
            started: AtomicUsize::new(n),
            extra: Mutex::new(Vec::new()),
            nprocs: n,
            shutdown: AtomicBool::new(false),
            poll: Poll {
                polling: AtomicBool::new(false),
                blocked_until: AtomicU64::new(0),
                break_pending: AtomicBool::new(false),
                epoll: Parker::new(),
                waiters: self.poll_waiters,
            },
            ran: AtomicUsize::new(0),
            total: self.gs,
        })
    }

    /// Runs the scenario under loom: the Ms on threads of their own, the pusher on the
    /// model's main thread.
    fn check(&'static self, preemption_bound: usize) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(preemption_bound);
        b.check(move || {
            let sh = self.build();
            let threads: Vec<_> = self
                .ms
                .iter()
                .enumerate()
                .map(|(id, &s)| {
                    let sh = sh.clone();
                    loom::thread::spawn(move || {
                        let (p, spinning) = match s {
                            Start::Holding { p, spinning } => (p, spinning),
                            Start::Idle => (NO_P, false),
                        };
                        m_main(&sh, id, p, spinning);
                    })
                })
                .collect();
            for _ in 0..self.gs {
                make_runnable(&sh);
            }
            for t in threads {
                t.join().unwrap();
            }
            let extra = core::mem::take(&mut *sh.extra.lock().unwrap());
            for t in extra {
                t.join().unwrap();
            }
            assert_eq!(sh.ran.load(SeqCst), self.gs, "a pushed G was never run");
            assert_eq!(sh.queued.load(SeqCst), 0);
        });
    }
}

/// `m_main` + `schedule`, with `find_runnable` and `execute` reduced to the queue counter.
fn m_main(sh: &Arc<Model>, id: usize, p: usize, spinning: bool) {
    let m = MCtx {
        shared: sh.clone(),
        ms: sh.ms[id].clone(),
        p: Cell::new(p),
        curg: Cell::new(ptr::null_mut()),
        spinning: Cell::new(spinning),
        rng: Cell::new(1),
    };
    loop {
        if m.p.get() == NO_P {
            match stop_m(&m) {
                Some(p) => m.p.set(p),
                None => return,
            }
        }
        if find_runnable(&m) {
            if m.spinning.get() {
                reset_spinning(&m);
            }
            run_g(&m);
            return;
        }
        release_p(&m);
        if sh.shutdown.load(SeqCst) {
            return;
        }
    }
}

/// The G keeps its M until the model ends; the M that takes the last one shuts down
/// (`Runtime::drop`: `shutdown`, `wake_all`, `poll.wake`).
fn run_g(m: &MCtx<Model>) {
    let sh = &*m.shared;
    if sh.ran.fetch_add(1, SeqCst) + 1 == sh.total {
        sh.shutdown.store(true, SeqCst);
        for x in &sh.ms {
            x.parker.unpark();
        }
        sh.poll_wake();
    }
    while !sh.shutdown.load(SeqCst) {
        m.ms.parker.park();
    }
}

/// `GlobalQueue::pop_batch`'s claim of one G.
fn pop_g(sh: &Model) -> bool {
    let mut n = sh.queued.load(SeqCst);
    while n > 0 {
        match sh.queued.compare_exchange(n, n - 1, SeqCst, SeqCst) {
            Ok(_) => return true,
            Err(x) => n = x,
        }
    }
    false
}

/// `find_runnable`: the global queue; then, with more than one P, become spinning if the
/// bound allows and look once more (the steal passes, reduced to the one queue there is).
fn find_runnable(m: &MCtx<Model>) -> bool {
    let sh = &*m.shared;
    if pop_g(sh) {
        return true;
    }
    if sh.shutdown.load(SeqCst) || sh.nprocs == 1 {
        return false;
    }
    try_spin(m, sh.nprocs) && pop_g(sh)
}

/// `make_runnable` from a thread without a P: `global.push`, then `wakep`.
fn make_runnable(sh: &Arc<Model>) {
    sh.queued.fetch_add(1, SeqCst);
    wakep(&**sh);
}

/// Two Ms find nothing and go idle while a G is pushed: one of them must run it.
#[test]
fn loom_idle_two_ms_going_idle() {
    static S: Scenario = Scenario {
        ms: &[
            Start::Holding {
                p: 0,
                spinning: false,
            },
            Start::Holding {
                p: 1,
                spinning: false,
            },
        ],
        spare_ms: 0,
        gs: 1,
        poll_waiters: false,
    };
    S.check(3);
}

/// A spinning M and an idle M; two Gs pushed. The pusher's `wakep`s see the spinner and
/// leave the work to it, so when it takes a G (or gives up) the second G must still reach
/// the idle M: through `reset_spinning`'s `wakep`, or the spinner's re-check in `stop_m`.
static SPINNING: Scenario = Scenario {
    ms: &[
        Start::Holding {
            p: 0,
            spinning: true,
        },
        Start::Idle,
    ],
    spare_ms: 0,
    gs: 2,
    poll_waiters: false,
};

#[test]
fn loom_idle_spinning_fans_out() {
    SPINNING.check(2);
}

/// The same with one more preemption. This found a lost wake-up in `wakep` when it took
/// back its `nmspinning` after dropping the `idle` lock (no idle P found): a pusher that
/// looked in that window saw a spinner that did not exist. M1, listed idle, sees G1
/// queued; M0 (spinning) takes G1, and its `reset_spinning` → `wakep` sees M1's P idle and
/// sets `nmspinning` to 1; M1 takes its P back; `wakep` finds no P and unlocks; M1 finds
/// G1 gone, does not spin (the bound counts the phantom spinner), lists itself, re-checks,
/// parks; G2 is pushed and its `wakep` sees `nmspinning == 1`; M0 runs G1 for good and G2
/// waits for it. Like Go's `wakep`, the count is now given back under the lock.
#[test]
fn loom_idle_spinning_fans_out_deep() {
    SPINNING.check(3);
}

/// One P whose M, going idle, becomes the netpoller (a G waits on a socket) while a G is
/// pushed: `wakep` must hand it the P, break its `epoll_wait`, or start a new M.
#[test]
fn loom_idle_poller() {
    static S: Scenario = Scenario {
        ms: &[Start::Holding {
            p: 0,
            spinning: false,
        }],
        spare_ms: 1,
        gs: 1,
        poll_waiters: true,
    };
    S.check(3);
}
