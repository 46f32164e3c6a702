//! A loom model of the idle-M wake-up protocol of machine.rs: Ms giving their P back and
//! going to sleep race threads that queue work and call `wakep`, and loom checks that no
//! wake-up is lost — every G pushed is run by some M, and no M sleeps while a G it should
//! run is queued.
//!
//! The real functions take the whole runtime (`Shared`: allocator caches, stacks, epoll,
//! timers), so the model mirrors them step by step over a reduced state instead. Each
//! function below names the function of machine.rs (or netpoll.rs) it mirrors; **keep them
//! in sync**: a change to the order of the steps, a lock's extent, a fence or an ordering
//! there must be made here too. What is left out, and why that is sound for this property:
//!
//! - The run queues are one counter of queued Gs with the global queue's `SeqCst` length
//!   (global_queue.rs). A local run queue is only pushed by the M holding its P, which is
//!   awake; the global queue is what a thread without a P (a waker, a timer, the poller
//!   with no P) pushes to, and is the case where a wake-up can be lost.
//! - Stealing is one more look at the queue after becoming spinning (`find_runnable`).
//! - P status words, allocator caches, mailboxes of locked Gs and blocking sections are
//!   not modelled (sysmon and `lock_to_thread` have their own paths).
//! - epoll is a `Parker`: `poll` with no timeout sleeps until `Netpoll::wake`, whose
//!   eventfd, like the parker's permit, is sticky.
//!
//! A G, once an M takes it, keeps that M and its P until the model ends ("a long-running
//! G"), so every G needs an M of its own: the model cannot pass by having one M run all the
//! work in turn, and so it checks that `wakep` (and `reset_spinning`'s `wakep`) fan the work
//! out. The M that runs the last G shuts the runtime down the way `Runtime::drop` does.
//!
//! The Ms sleep on the real `Parker`, whose futex under loom really blocks (sys.rs): an M
//! that sleeps while its G stays queued, with nobody left to wake it, ends the execution
//! with every thread blocked, and loom reports it as a deadlock. That is the lost wake-up.
//! (Dropping the fence in `wakep`, or the re-check in `stop_m`, makes loom report one.)

use core::cell::Cell;

use loom::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use loom::sync::atomic::{AtomicBool, AtomicUsize, fence};
use loom::sync::{Arc, Mutex};

use crate::park::Parker;

const NO_P: usize = usize::MAX;

/// `MShared`: the part of an M that other threads see.
struct MShared {
    parker: Parker,
    nextp: AtomicUsize,
    next_spinning: AtomicBool,
}

/// `Idle`: Ms by index into `Sched::ms` instead of `Arc<MShared>`.
#[derive(Default)]
struct Idle {
    ps: Vec<usize>,
    ms: Vec<usize>,
}

/// `Netpoll`'s polling right, `blocked_until`, and the break eventfd (`break_pending` plus
/// `epoll` standing in for the eventfd inside `epoll_wait`).
struct Poll {
    polling: AtomicBool,
    blocked_until: AtomicUsize,
    break_pending: AtomicBool,
    epoll: Parker,
    /// `has_waiters`: whether some G waits on a socket (fixed per scenario).
    waiters: bool,
}

/// `Shared`, reduced to what the idle protocol touches.
struct Sched {
    /// `global.len()`.
    queued: AtomicUsize,
    npidle: AtomicUsize,
    nmspinning: AtomicUsize,
    idle: Mutex<Idle>,
    /// `all_ms`, with slots for Ms `start_m` may start (`started` says how many are used).
    ms: Vec<MShared>,
    started: AtomicUsize,
    extra: Mutex<Vec<loom::thread::JoinHandle<()>>>,
    nprocs: usize,
    shutdown: AtomicBool,
    poll: Poll,
    /// Gs taken by an M so far, and how many the scenario pushes.
    ran: AtomicUsize,
    total: usize,
}

/// `MCtx`: the M's own state.
struct M {
    id: usize,
    p: Cell<usize>,
    spinning: Cell<bool>,
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
    fn build(&self) -> Arc<Sched> {
        let n = self.ms.len();
        let mut idle = Idle::default();
        let mut nmspinning = 0;
        for (id, s) in self.ms.iter().enumerate() {
            match *s {
                Start::Holding { spinning, .. } => nmspinning += usize::from(spinning),
                Start::Idle => {
                    idle.ps.push(id);
                    idle.ms.push(id);
                }
            }
        }
        Arc::new(Sched {
            queued: AtomicUsize::new(0),
            npidle: AtomicUsize::new(idle.ps.len()),
            nmspinning: AtomicUsize::new(nmspinning),
            idle: Mutex::new(idle),
            ms: (0..n + self.spare_ms)
                .map(|_| MShared {
                    parker: Parker::new(),
                    nextp: AtomicUsize::new(NO_P),
                    next_spinning: AtomicBool::new(false),
                })
                .collect(),
            started: AtomicUsize::new(n),
            extra: Mutex::new(Vec::new()),
            nprocs: n,
            shutdown: AtomicBool::new(false),
            poll: Poll {
                polling: AtomicBool::new(false),
                blocked_until: AtomicUsize::new(0),
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
fn m_main(sh: &Arc<Sched>, id: usize, p: usize, spinning: bool) {
    let m = M {
        id,
        p: Cell::new(p),
        spinning: Cell::new(spinning),
    };
    loop {
        if m.p.get() == NO_P {
            match stop_m(sh, &m) {
                Some(p) => m.p.set(p),
                None => return,
            }
        }
        if find_runnable(sh, &m) {
            if m.spinning.get() {
                reset_spinning(sh, &m);
            }
            run_g(sh, &m);
            return;
        }
        release_p(sh, &m);
        if sh.shutdown.load(SeqCst) {
            return;
        }
    }
}

/// The G keeps its M until the model ends; the M that takes the last one shuts down
/// (`Runtime::drop`: `shutdown`, `wake_all`, `poll.wake`).
fn run_g(sh: &Arc<Sched>, m: &M) {
    if sh.ran.fetch_add(1, SeqCst) + 1 == sh.total {
        sh.shutdown.store(true, SeqCst);
        for x in &sh.ms {
            x.parker.unpark();
        }
        poll_wake(sh);
    }
    while !sh.shutdown.load(SeqCst) {
        sh.ms[m.id].parker.park();
    }
}

/// `GlobalQueue::pop_batch`'s claim of one G.
fn pop_g(sh: &Arc<Sched>) -> bool {
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
fn find_runnable(sh: &Arc<Sched>, m: &M) -> bool {
    if pop_g(sh) {
        return true;
    }
    if sh.shutdown.load(SeqCst) || sh.nprocs == 1 {
        return false;
    }
    if !m.spinning.get() {
        let busy = sh.nprocs.saturating_sub(sh.npidle.load(SeqCst));
        if 2 * sh.nmspinning.load(SeqCst) >= busy {
            return false;
        }
        m.spinning.set(true);
        sh.nmspinning.fetch_add(1, SeqCst);
    }
    pop_g(sh)
}

/// `make_runnable` from a thread without a P: `global.push`, then `wakep`.
fn make_runnable(sh: &Arc<Sched>) {
    sh.queued.fetch_add(1, SeqCst);
    wakep(sh);
}

/// `release_p` + `put_idle_p_with(.., Some(m))`: the P and the M go on the idle lists in
/// one critical section.
fn release_p(sh: &Arc<Sched>, m: &M) {
    let p = m.p.replace(NO_P);
    let mut idle = sh.idle.lock().unwrap();
    idle.ms.push(m.id);
    idle.ps.push(p);
    sh.npidle.fetch_add(1, SeqCst);
}

/// `take_p_if_idle`.
fn take_p_if_idle(sh: &Arc<Sched>, m: &M) -> Option<usize> {
    let mut idle = sh.idle.lock().unwrap();
    let i = idle.ms.iter().position(|&x| x == m.id)?;
    let p = idle.ps.pop()?;
    idle.ms.swap_remove(i);
    sh.npidle.fetch_sub(1, SeqCst);
    Some(p)
}

/// `any_work`.
fn any_work(sh: &Arc<Sched>) -> bool {
    sh.queued.load(SeqCst) > 0
}

/// `stop_m` (the mailbox check left out).
fn stop_m(sh: &Arc<Sched>, m: &M) -> Option<usize> {
    let me = &sh.ms[m.id];
    let was_spinning = m.spinning.replace(false);
    if was_spinning {
        sh.nmspinning.fetch_sub(1, SeqCst);
    }
    fence(SeqCst);
    if any_work(sh)
        && let Some(p) = take_p_if_idle(sh, m)
    {
        if was_spinning {
            m.spinning.set(true);
            sh.nmspinning.fetch_add(1, SeqCst);
        }
        return Some(p);
    }
    loop {
        let p = take_nextp(me);
        if p != NO_P {
            m.spinning.set(me.next_spinning.load(Acquire));
            return Some(p);
        }
        if sh.shutdown.load(SeqCst) {
            return None;
        }
        // `needs_poller` (no timers in the model) and `Netpoll::try_acquire`.
        if sh.poll.waiters && poll_try_acquire(sh) {
            if let Some(p) = poll_blocking(sh, m) {
                return Some(p);
            }
            // The real M goes round again here after a poll that found nothing to take (an
            // idle P seen with queued work but taken by another M first, or a break with
            // nothing for it); tell loom it is a retry loop, or it explores the other
            // threads never running again and reports its branch limit.
            loom::thread::yield_now();
            continue;
        }
        me.parker.park();
    }
}

/// `nextp.swap(NO_P, AcqRel)` in `stop_m`, written as a load and a compare-exchange that
/// must succeed. Loom 0.7 can let a plain store land between the read and the write of a
/// swap (tokio-rs/loom#254): a swap that read `NO_P` would then overwrite the `hand_p`
/// that raced with it, a lost P that the real swap cannot lose. The two forms are the
/// same here because `nextp` has one hand-over at a time: `hand_p` writes it only for an
/// M it took off the idle list, and the M clears it before it can be listed again.
fn take_nextp(me: &MShared) -> usize {
    let p = me.nextp.load(Acquire);
    if p != NO_P {
        let r = me.nextp.compare_exchange(p, NO_P, AcqRel, Acquire);
        assert_eq!(r, Ok(p), "two hand-overs to one M");
    }
    p
}

/// `Netpoll::try_acquire`.
fn poll_try_acquire(sh: &Arc<Sched>) -> bool {
    !sh.poll.polling.load(Relaxed)
        && sh
            .poll
            .polling
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
}

/// `Netpoll::release`.
fn poll_release(sh: &Arc<Sched>) {
    sh.poll.polling.store(false, Release);
}

/// `Netpoll::wake`: the eventfd write is the epoll parker's permit.
fn poll_wake(sh: &Arc<Sched>) {
    if sh
        .poll
        .break_pending
        .compare_exchange(false, true, AcqRel, Relaxed)
        .is_ok()
    {
        sh.poll.epoll.unpark();
    }
}

/// `Netpoll::poll` with no timeout: sleeps until a break, then drains it. (No socket
/// becomes ready in the model, so it never returns woken Gs.)
fn poll_forever(sh: &Arc<Sched>) {
    sh.poll.epoll.park();
    sh.poll.break_pending.store(false, Release);
}

/// `poll_blocking` (no timers and no socket events in the model).
fn poll_blocking(sh: &Arc<Sched>, m: &M) -> Option<usize> {
    {
        let mut idle = sh.idle.lock().unwrap();
        match idle.ms.iter().position(|&x| x == m.id) {
            Some(i) => {
                idle.ms.swap_remove(i);
            }
            None => {
                drop(idle);
                poll_release(sh);
                // The waker's `hand_p` unparks us.
                sh.ms[m.id].parker.park();
                return None;
            }
        }
    }
    sh.poll.blocked_until.store(usize::MAX, SeqCst);
    let can_run_work = any_work(sh) && sh.npidle.load(SeqCst) > 0;
    if !can_run_work && !sh.shutdown.load(SeqCst) {
        // `timers.next_ns()` with no timer: block with no deadline.
        sh.poll.blocked_until.store(usize::MAX, SeqCst);
        poll_forever(sh);
    }
    sh.poll.blocked_until.store(0, SeqCst);
    poll_release(sh);
    let p = if !any_work(sh) {
        None
    } else {
        let mut idle = sh.idle.lock().unwrap();
        let p = idle.ps.pop();
        if p.is_some() {
            sh.npidle.fetch_sub(1, SeqCst);
        }
        p
    };
    if p.is_none() {
        sh.idle.lock().unwrap().ms.push(m.id);
    }
    p
}

/// `MShared::hand_p`.
fn hand_p(sh: &Arc<Sched>, m: usize, p: usize, spinning: bool) {
    let mm = &sh.ms[m];
    mm.next_spinning.store(spinning, Relaxed);
    mm.nextp.store(p, Release);
    mm.parker.unpark();
}

/// `start_m`: an idle M, else a new thread from the scenario's spare slots.
fn start_m(sh: &Arc<Sched>, p: usize, spinning: bool) {
    let mm = sh.idle.lock().unwrap().ms.pop();
    if let Some(mm) = mm {
        hand_p(sh, mm, p, spinning);
        return;
    }
    if !sh.shutdown.load(SeqCst) {
        let id = sh.started.fetch_add(1, SeqCst);
        assert!(id < sh.ms.len(), "the scenario needs another spare M");
        // `extra_ms`: the model's main thread joins it.
        let sh2 = sh.clone();
        let t = loom::thread::spawn(move || m_main(&sh2, id, p, spinning));
        sh.extra.lock().unwrap().push(t);
        return;
    }
    if spinning {
        sh.nmspinning.fetch_sub(1, SeqCst);
    }
    put_idle_p(sh, p);
}

/// `put_idle_p` (no M to list beside the P).
fn put_idle_p(sh: &Arc<Sched>, p: usize) {
    let mut idle = sh.idle.lock().unwrap();
    idle.ps.push(p);
    sh.npidle.fetch_add(1, SeqCst);
}

/// `wakep`.
fn wakep(sh: &Arc<Sched>) {
    fence(SeqCst);
    if sh.npidle.load(SeqCst) == 0 || sh.nmspinning.load(SeqCst) != 0 {
        return;
    }
    if sh
        .nmspinning
        .compare_exchange(0, 1, SeqCst, SeqCst)
        .is_err()
    {
        return;
    }
    let mut idle = sh.idle.lock().unwrap();
    let Some(p) = idle.ps.pop() else {
        sh.nmspinning.fetch_sub(1, SeqCst);
        drop(idle);
        return;
    };
    sh.npidle.fetch_sub(1, SeqCst);
    if let Some(mm) = idle.ms.pop() {
        drop(idle);
        hand_p(sh, mm, p, true);
        return;
    }
    if sh.poll.blocked_until.load(SeqCst) != 0 {
        idle.ps.push(p);
        sh.npidle.fetch_add(1, SeqCst);
        sh.nmspinning.fetch_sub(1, SeqCst);
        drop(idle);
        poll_wake(sh);
        return;
    }
    drop(idle);
    start_m(sh, p, true);
}

/// `reset_spinning`.
fn reset_spinning(sh: &Arc<Sched>, m: &M) {
    m.spinning.set(false);
    if sh.nmspinning.fetch_sub(1, SeqCst) == 1 {
        wakep(sh);
    }
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
