//! The M: an OS thread that runs Gs while it holds a P (Go's `schedule`, `findRunnable`,
//! `execute`, `stopm`, `startm`, `wakep`, `handoffp`, `entersyscall`/`exitsyscall` in
//! proc.go).
//!
//! The loop: find a runnable G (its P's queue, every 61st tick the global queue first, then
//! the global queue, then the netpoller without blocking, then stealing), run it until it
//! yields, parks, returns or asks to run a blocking section, repeat. The P's due timers
//! are fired first, and a thief fires other Ps' (timer.rs). When there is nothing to do, the M gives its P back
//! to the idle list, puts itself on the idle list, re-checks every queue (the "delicate
//! dance" of findRunnable: work pushed just before we went idle would otherwise be lost),
//! and then either becomes the netpoller (one M at a time, blocked in `epoll_wait` until an
//! event, a timer or a break) or sleeps on its futex parker until handed a P.
//!
//! Ms: one per P at start-up; more are started when a P must run while every M is busy or
//! stuck in a blocking section (`start_m`). Idle Ms stay for reuse. `wakep` pairs an idle
//! P with an idle M; with no idle M it breaks a blocked poller (which then takes the P) or
//! starts a new M.
//!
//! Spinning (Go's `nmspinning`): an M looking for work to steal is "spinning". `wakep`
//! starts an M only when nobody spins, and an M may start spinning only while
//! `2 * spinning < busy Ps`, which bounds the CPU burnt looking for work. A spinning M that
//! finds work wakes another if it was the last spinner, so a burst of work fans out.
//! Work queued by a running G wakes an idle M only if it is worth moving (`queue`; the
//! crate documentation, "Wake-ups").
//!
//! Time slices (Go's `inheritTime` and `forcePreemptNS`): a G taken from `runnext` was
//! just made runnable by the G that ran before it (a woken receiver, a new coroutine) and
//! inherits that G's time slice; any other G starts a new slice (`P::slice`). Two
//! coroutines that hand the P to each other over a rendezvous channel therefore share one
//! slice, however many hand-offs they make. When a slice has lasted 10 ms while Gs wait in
//! the ring, sysmon sets `P::preempt`, and the P's next schedule moves the `runnext` G to
//! the back of the ring (`RunQueue::demote_runnext`): everything queued before it runs
//! first, and the pair gets a new slice when its turn comes. Nothing on the switch path
//! reads a clock; the cost is a relaxed load per schedule and a store per new slice.
//! (Go also preempts a G that merely runs long; Rust has no safe asynchronous preemption,
//! so such a G only shows up in sysmon's long-run count.)
//!
//! Blocking sections (`blocking(f)`): the G switches to its M, which marks its P
//! `P_SYSCALL`, drops the P's allocator cache, and runs `f` on its own stack. Sysmon may
//! retake the P meanwhile and hand it to another M (sysmon.rs). On return the M takes its P
//! back if it is still there, else any idle P; with none, the G goes to the global queue
//! and the M goes idle.
//!
//! Migration: every thread-local read here goes through an `#[inline(never)]` accessor, so
//! code that runs inside a coroutine recomputes the thread-local address after any switch
//! (DESIGN.md, "Migration"; llvm-project#98479).

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use corosensei::CoroutineResult;

use crate::coroutine::{G, GRef, NOTIFIED, PARKED, PARKING, RUNNABLE, RUNNING, Switch, WaitReason};
use crate::park::Parker;
use crate::processor::{P, P_IDLE, P_RUNNING, P_SYSCALL, PENDING_RUNNEXT, PENDING_SHORT};
use crate::runqueue::RING;
use crate::runtime::Shared;

const NO_P: usize = usize::MAX;

/// The part of an M that other threads see.
#[derive(Debug)]
pub(crate) struct MShared {
    pub(crate) parker: Parker,
    /// A P handed over by `wakep`, `start_m` or `put_idle_p` (or `NO_P`).
    nextp: AtomicUsize,
    /// Whether the hand-over counted this M as spinning.
    next_spinning: core::sync::atomic::AtomicBool,
    /// Gs locked to this M (`lock_to_thread`) that are runnable.
    mailbox: Mutex<VecDeque<usize>>,
    mailbox_len: AtomicUsize,
}

impl MShared {
    pub(crate) fn new() -> Self {
        Self {
            parker: Parker::new(),
            nextp: AtomicUsize::new(NO_P),
            next_spinning: core::sync::atomic::AtomicBool::new(false),
            mailbox: Mutex::new(VecDeque::new()),
            mailbox_len: AtomicUsize::new(0),
        }
    }

    /// Hands this idle M a P and wakes it.
    ///
    /// # Safety
    /// The caller holds P `p` (it took it off the idle list, or it is the caller's own) and
    /// gives it up: from here on this M alone may use it.
    unsafe fn hand_p(&self, p: usize, spinning: bool) {
        self.next_spinning.store(spinning, Ordering::Relaxed);
        self.nextp.store(p, Ordering::Release);
        self.parker.unpark();
    }

    /// Queues `g` for this M (`lock_to_thread`).
    ///
    /// # Safety
    /// `g` is a live RUNNABLE G locked to this M and on no run queue; the caller gives it up
    /// (this M runs it, `execute`, once it finds it here).
    unsafe fn push_mail(&self, g: GRef) {
        let mut q = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(g as usize);
        self.mailbox_len.store(q.len(), Ordering::SeqCst);
    }

    fn pop_mail(&self) -> Option<GRef> {
        if self.mailbox_len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut q = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        let g = q.pop_front();
        self.mailbox_len.store(q.len(), Ordering::SeqCst);
        g.map(|g| g as GRef)
    }
}

/// Idle Ps and Ms (Go's `sched.pidle`, `sched.midle` under `sched.lock`). An M on `ms`
/// sleeps on its parker (or is about to); the poller takes itself off the list while it
/// blocks in epoll.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    pub(crate) ps: Vec<usize>,
    pub(crate) ms: Vec<Arc<MShared>>,
}

/// The M's own state, on its thread's stack for the thread's life.
pub(crate) struct MCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ms: Arc<MShared>,
    p: Cell<usize>,
    curg: Cell<GRef>,
    spinning: Cell<bool>,
    rng: Cell<u64>,
}

thread_local! {
    static CURRENT: Cell<*const MCtx> = const { Cell::new(ptr::null()) };
}

/// The calling thread's M, or null. Never inlined: see "Migration" above.
#[inline(never)]
pub(crate) fn current_m() -> *const MCtx {
    CURRENT.with(Cell::get)
}

/// The G running on the calling thread, or null outside a coroutine.
#[inline(never)]
pub(crate) fn current_g() -> GRef {
    let m = current_m();
    if m.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a non-null CURRENT points at the MCtx on this thread's stack, alive while the
    // M loop runs (it is reset before the frame ends).
    unsafe { (*m).curg.get() }
}

/// The P the calling thread holds, with its runtime, if it is an M of `rt` holding one.
#[inline(never)]
pub(crate) fn current_p(rt: *const Shared) -> Option<&'static P> {
    let m = current_m();
    if m.is_null() {
        return None;
    }
    // SAFETY: as in `current_g`. The P outlives the M loop (the runtime joins its Ms before
    // dropping the Ps), and the reference is used only while this thread holds it.
    unsafe {
        let m = &*m;
        if !ptr::eq(Arc::as_ptr(&m.shared), rt) || m.p.get() == NO_P {
            return None;
        }
        let p: *const P = &*m.shared.ps[m.p.get()];
        Some(&*p)
    }
}

/// Calls `f` with the runtime of the calling thread's M (`None` off an M), borrowed rather
/// than cloned.
#[inline]
pub(crate) fn with_current_runtime<R>(f: impl FnOnce(Option<&Arc<Shared>>) -> R) -> R {
    let m = current_m();
    if m.is_null() {
        return f(None);
    }
    // SAFETY: as in `current_g`: the MCtx lives on this M's stack for as long as its loop
    // runs, which outlasts any call made from this thread (a coroutine that moves to
    // another thread does so only by switching out, after `f` returned; `f` borrows
    // nothing of the M but the `Arc`, which the M keeps until its loop ends).
    f(Some(unsafe { &(*m).shared }))
}

/// The runtime the calling thread's M belongs to.
pub(crate) fn current_runtime() -> Option<Arc<Shared>> {
    let m = current_m();
    if m.is_null() {
        return None;
    }
    // SAFETY: as in `current_g`.
    Some(unsafe { (*m).shared.clone() })
}

/// The runtime of the coroutine running on the calling thread (`None` outside a coroutine,
/// including inside a `blocking` section, which runs on the M's own stack).
#[inline(never)]
pub(crate) fn current_runtime_of_g() -> Option<&'static Shared> {
    let g = current_g();
    // SAFETY: the running G is alive, and a runtime outlives its Gs (runtime.rs).
    (!g.is_null()).then(|| unsafe { &*(*g).rt })
}

fn xorshift(s: &Cell<u64>) -> u64 {
    let mut x = s.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.set(x);
    x
}

/// A random number from the calling M's generator (or a per-call seed elsewhere).
pub(crate) fn fastrand() -> u64 {
    let m = current_m();
    if m.is_null() {
        thread_local! { static R: Cell<u64> = const { Cell::new(0) }; }
        return R.with(|r| {
            if r.get() == 0 {
                r.set(seed());
            }
            xorshift(r)
        });
    }
    // SAFETY: as in `current_g`.
    unsafe { xorshift(&(*m).rng) }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&raw const local as u64).rotate_left(32)) | 1
}

/// The body of an M thread; `spinning` if it was started as a spinning M (already
/// counted in `nmspinning`).
///
/// # Safety
/// The new M holds P `p`: nobody else holds it, and nobody hands it out until this M gives
/// it back.
pub(crate) unsafe fn m_main(shared: Arc<Shared>, ms: Arc<MShared>, p: usize, spinning: bool) {
    tessera_stacks::prepare_thread();
    let ctx = MCtx {
        shared,
        ms,
        p: Cell::new(p),
        curg: Cell::new(ptr::null_mut()),
        spinning: Cell::new(spinning),
        rng: Cell::new(seed()),
    };
    CURRENT.with(|c| c.set(&ctx));
    schedule(&ctx);
    CURRENT.with(|c| c.set(ptr::null()));
}

fn schedule(m: &MCtx) {
    let sh = &*m.shared;
    loop {
        if m.p.get() == NO_P {
            match stop_m(m) {
                Some(p) => m.p.set(p),
                None => return,
            }
        }
        let p: &P = &sh.ps[m.p.get()];
        p.status.store(P_RUNNING, Ordering::SeqCst);
        // SAFETY: this M holds the P, so nobody else touches its allocator cache; the guard
        // is dropped below, before the P is given back or its M blocks, and is never leaked.
        let installed = unsafe { tessera::install_cache(&mut *p.alloc.get()) };
        let mut blocked = None;
        // SAFETY: `p` is `m.p`, the P this M holds.
        while let Some(g) = unsafe { find_runnable(m, p) } {
            if m.spinning.get() {
                reset_spinning(m);
            }
            // SAFETY: this M holds `p`, and `find_runnable` took `g` off one of the run
            // queues, all of which hold only runnable Gs that nobody else runs until they
            // are taken off (`push_local`, `push_mail`, `queue`).
            if let Some(g) = unsafe { execute(m, p, g) } {
                blocked = Some(g);
                break;
            }
        }
        installed.uninstall();
        match blocked {
            // SAFETY: `execute` just returned `g`, which asked this M, holding `p`, to run
            // its blocking section.
            Some(g) => unsafe { run_blocking(m, p, g) },
            None => {
                release_p(m);
                if sh.shutdown.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
    }
}

/// Runs the blocking section of `g` on this M's stack with the P released to sysmon's
/// judgement (Go's `entersyscall` … `exitsyscall`), then puts `g` back on a run queue.
///
/// # Safety
/// This M holds `p`, on which it was running `g` until `g` switched out with
/// `Switch::Blocking` (it is suspended in `blocking`, its section set).
unsafe fn run_blocking(m: &MCtx, p: &P, g: GRef) {
    let sh = &*m.shared;
    // SAFETY: per the contract `g` is the G this M was running; it is suspended in
    // `blocking` and stays ours.
    let gr = unsafe { &*g };
    let f = gr
        .blocking
        .take()
        .expect("Switch::Blocking without a section");
    p.syscall_since.store(sh.now_ns(), Ordering::Relaxed);
    p.status.store(P_SYSCALL, Ordering::SeqCst);
    m.p.set(NO_P);
    if sh.sysmon_delay_us.load(Ordering::Relaxed) > crate::sysmon::MIN_DELAY_US {
        // Sysmon is in a longer sleep: it must look at this P within ~20 µs.
        sh.sysmon.unpark();
    }
    // SAFETY: `f` points into the suspended G's stack frame in `blocking`, which stays
    // alive and untouched until the G is resumed below; this thread is the one the G ran
    // on. The section catches its own panics (`blocking`).
    unsafe { (*f)() };
    if p.status
        .compare_exchange(P_SYSCALL, P_RUNNING, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        m.p.set(p.id);
    } else {
        // Sysmon handed our P to another M: take any idle one (Go's exitsyscallfast).
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = idle.ps.pop() {
            sh.npidle.fetch_sub(1, Ordering::SeqCst);
            m.p.set(q);
        } else {
            // This M goes idle (`stop_m` expects to be listed).
            idle.ms.push(m.ms.clone());
        }
    }
    gr.wait_reason
        .store(WaitReason::None as u8, Ordering::Relaxed);
    gr.state.store(RUNNABLE, Ordering::Release);
    let locked = gr.locked_m.get();
    if !locked.is_null() {
        // SAFETY: a locked G's M is this M, alive; `g` is RUNNABLE now, on no queue, and
        // we do not touch it again.
        unsafe { (*locked).push_mail(g) };
    } else if m.p.get() != NO_P {
        // SAFETY: this M holds `m.p` (kept or taken above); `g` as just said.
        unsafe { push_local(sh, &sh.ps[m.p.get()], g, true) };
    } else {
        // No P anywhere: the G waits its turn like any other (Go's exitsyscall0), and this
        // M goes idle.
        sh.global.push(g);
        wakep(sh);
    }
}

/// Gives the M's P back: to an idle M that has a locked G waiting in its mailbox, else to
/// the idle list, with this M beside it in the same critical section (so a `wakep` that
/// sees the idle P also finds an idle M, and does not start a thread for nothing).
fn release_p(m: &MCtx) {
    let p = m.p.replace(NO_P);
    // An idle spell is not a run (`time_run`).
    m.shared.ps[p].run_started.store(0, Ordering::Relaxed);
    // SAFETY: `p` was this M's P (`m.p`), given up just above.
    unsafe { put_idle_p_with(&m.shared, p, Some(&m.ms)) };
}

/// Gives P `p` to an idle M with a locked G waiting, or to the idle list.
///
/// # Safety
/// The caller holds P `p` and gives it up.
pub(crate) unsafe fn put_idle_p(sh: &Shared, p: usize) {
    // SAFETY: the same contract.
    unsafe { put_idle_p_with(sh, p, None) };
}

/// `put_idle_p`, listing `idle_m` as idle in the same critical section.
///
/// # Safety
/// As for `put_idle_p`.
unsafe fn put_idle_p_with(sh: &Shared, p: usize, idle_m: Option<&Arc<MShared>>) {
    sh.ps[p].status.store(P_IDLE, Ordering::SeqCst);
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = idle_m {
        idle.ms.push(m.clone());
    }
    if let Some(i) = idle
        .ms
        .iter()
        .position(|x| x.mailbox_len.load(Ordering::SeqCst) > 0)
    {
        let mm = idle.ms.swap_remove(i);
        drop(idle);
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { mm.hand_p(p, false) };
        return;
    }
    idle.ps.push(p);
    sh.npidle.fetch_add(1, Ordering::SeqCst);
}

/// Takes an idle P for the calling M if it is on the idle list (a waker that already took
/// it off is handing it a P: `None`, and the M will find it in `nextp`).
fn take_p_if_idle(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    let i = idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms))?;
    let p = idle.ps.pop()?;
    idle.ms.swap_remove(i);
    sh.npidle.fetch_sub(1, Ordering::SeqCst);
    Some(p)
}

/// Whether an idle M should block in the netpoller rather than on its futex: something
/// waits on a socket or a timer.
fn needs_poller(sh: &Shared) -> bool {
    sh.poll.has_waiters() || crate::timer::armed(sh)
}

/// Called with no P: re-checks for work, then polls the network or sleeps until handed a
/// P. `None` on shutdown.
fn stop_m(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    let was_spinning = m.spinning.replace(false);
    if was_spinning {
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    // The M is on the idle list already (`release_p`, or `run_blocking` without a P).
    // Pairs with the fence in `wakep`: either the pusher sees our P idle and us on the
    // list, or we see its work (or its timer) here.
    core::sync::atomic::fence(Ordering::SeqCst);
    if any_work(m)
        && let Some(p) = take_p_if_idle(m)
    {
        if was_spinning {
            m.spinning.set(true);
            sh.nmspinning.fetch_add(1, Ordering::SeqCst);
        }
        return Some(p);
    }
    loop {
        let p = m.ms.nextp.swap(NO_P, Ordering::AcqRel);
        if p != NO_P {
            // `wakep` counted us as spinning (a mailbox hand-off did not).
            m.spinning.set(m.ms.next_spinning.load(Ordering::Acquire));
            return Some(p);
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        if m.ms.mailbox_len.load(Ordering::SeqCst) > 0
            && let Some(p) = take_p_if_idle(m)
        {
            return Some(p);
        }
        if needs_poller(sh) && sh.poll.try_acquire() {
            if let Some(p) = poll_blocking(m) {
                return Some(p);
            }
            continue;
        }
        m.ms.parker.park();
    }
}

/// The idle M as the netpoller: blocks in epoll until an event, the next timer or a break,
/// then takes an idle P for what became runnable. The caller holds the right to poll.
/// `Some(p)` with the woken Gs queued on `p`, or `None` to go round the idle loop again.
fn poll_blocking(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    {
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms)) {
            Some(i) => {
                idle.ms.swap_remove(i);
            }
            None => {
                // A waker took us off the list and is handing us a P: its `hand_p` unparks
                // us (a permit if it comes first), so sleep rather than spin until then.
                drop(idle);
                sh.poll.release(sh.now_ns());
                m.ms.parker.park();
                return None;
            }
        }
    }
    // Publish how long we block before the last look at the timers and queues, so that a
    // timer added or work pushed from here on breaks us out (`timer_added`, `wakep`).
    sh.poll.blocked_until.store(u64::MAX, Ordering::SeqCst);
    let mut woken = Vec::new();
    // Queued work is a reason not to block only if there is an idle P to run it on; if
    // every P is busy, their Ms run it, and spinning here would only burn a CPU (there can
    // be more Ms than Ps once blocking sections have started extra Ms).
    let can_run_work = any_work(m) && sh.npidle.load(Ordering::SeqCst) > 0;
    if !can_run_work && !sh.shutdown.load(Ordering::SeqCst) {
        let next = crate::timer::next_ns(sh);
        sh.poll.blocked_until.store(next, Ordering::SeqCst);
        // A timer added between `next_ns` and the store above saw no blocked poller and
        // woke an M instead, or sees our deadline and breaks us: either way nothing waits.
        let timeout = crate::timer::until_next(sh);
        if timeout != Some(core::time::Duration::ZERO) {
            sh.poll.poll(timeout, &mut woken);
        }
    }
    sh.poll.blocked_until.store(0, Ordering::SeqCst);
    sh.poll.release(sh.now_ns());
    let due = crate::timer::next_ns(sh) <= sh.now_ns();
    let p = if woken.is_empty() && !due && !any_work(m) {
        None
    } else {
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        let p = idle.ps.pop();
        if p.is_some() {
            sh.npidle.fetch_sub(1, Ordering::SeqCst);
        }
        p
    };
    if p.is_none() {
        sh.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ms
            .push(m.ms.clone());
    }
    // With a P, the woken Gs go on it (`make_runnable` sees `m.p`); without one, to the
    // global queue for the busy Ps.
    m.p.set(p.unwrap_or(NO_P));
    for t in woken {
        // SAFETY: `poll` claimed every token it returned; each is notified once, here.
        unsafe { t.notify() };
    }
    crate::timer::run_all_due(sh, 0);
    m.p.set(NO_P);
    p
}

fn any_work(m: &MCtx) -> bool {
    let sh = &*m.shared;
    sh.global.len() > 0
        || m.ms.mailbox_len.load(Ordering::SeqCst) > 0
        || sh.ps.iter().any(|p| !p.runq.is_empty())
}

/// A timer that is now the runtime's earliest was added: make sure some M will fire it in
/// time (Go's `wakeNetPoller`).
pub(crate) fn timer_added(sh: &Shared, when_ns: u64) {
    let until = sh.poll.blocked_until.load(Ordering::SeqCst);
    if until != 0 {
        if when_ns < until {
            sh.poll.wake();
        }
    } else {
        wakep(sh);
    }
}

/// Starts an M for `p` (Go's `startm`): an idle one if there is one, else a new thread.
/// `spinning`: the M was counted in `nmspinning` by the caller.
///
/// # Safety
/// The caller holds P `p` and gives it up.
pub(crate) unsafe fn start_m(sh: &Shared, p: usize, spinning: bool) {
    let mm = sh.idle.lock().unwrap_or_else(|e| e.into_inner()).ms.pop();
    if let Some(mm) = mm {
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { mm.hand_p(p, spinning) };
        return;
    }
    // Under the list's lock, so that `Runtime::drop`, which sets `shutdown` and then empties
    // the list, joins every M started before and none is started after.
    let mut extra = sh.extra_ms.lock().unwrap_or_else(|e| e.into_inner());
    if !sh.shutdown.load(Ordering::SeqCst)
        && let Some(rt) = sh.self_arc()
    {
        let ms = Arc::new(MShared::new());
        let n = {
            let mut all = sh.all_ms.lock().unwrap_or_else(|e| e.into_inner());
            all.push(ms.clone());
            all.len() - 1
        };
        let spawned = std::thread::Builder::new()
            .name(format!("tessera-m{n}"))
            .spawn(move || {
                // SAFETY: per the contract we hold `p`, and the new M gets it (if the
                // thread does not start, the idle list gets it below instead).
                unsafe { m_main(rt, ms, p, spinning) }
            });
        if let Ok(t) = spawned {
            extra.push(t);
            return;
        }
    }
    drop(extra);
    // No thread: the P goes back idle; a busy M or sysmon will find the work later.
    if spinning {
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: per the contract we hold `p`, and no M was given it.
    unsafe { put_idle_p(sh, p) };
}

/// Starts an idle M on an idle P if there is work nobody is looking for (Go's `wakep`).
pub(crate) fn wakep(sh: &Shared) {
    core::sync::atomic::fence(Ordering::SeqCst);
    wakep_unfenced(sh);
}

/// `wakep` without the fence that orders the caller's push before the idle check.
fn wakep_unfenced(sh: &Shared) {
    if sh.npidle.load(Ordering::SeqCst) == 0 || sh.nmspinning.load(Ordering::SeqCst) != 0 {
        return;
    }
    if sh
        .nmspinning
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = idle.ps.pop() else {
        // Give the spinning count back under the lock (as Go does): a pusher that saw our
        // count and left its G to "the spinner" is then ordered before the next M that
        // lists itself idle, whose re-check finds the G. Decrementing after the unlock lost
        // that G in the loom model (idle_model.rs).
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        return;
    };
    sh.npidle.fetch_sub(1, Ordering::SeqCst);
    if let Some(mm) = idle.ms.pop() {
        drop(idle);
        // SAFETY: we took `p` off the idle list above, so it is ours to hand over.
        unsafe { mm.hand_p(p, true) };
        return;
    }
    if sh.poll.blocked_until.load(Ordering::SeqCst) != 0 {
        // The only idle M is blocked in epoll: break it out; it takes the P itself.
        idle.ps.push(p);
        sh.npidle.fetch_add(1, Ordering::SeqCst);
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        sh.poll.wake();
        return;
    }
    drop(idle);
    // SAFETY: we took `p` off the idle list above, so it is ours to hand over.
    unsafe { start_m(sh, p, true) };
}

/// Wakes every M (shutdown).
pub(crate) fn wake_all(sh: &Shared) {
    for m in sh.all_ms.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        m.parker.unpark();
    }
}

fn reset_spinning(m: &MCtx) {
    m.spinning.set(false);
    let sh = &*m.shared;
    if sh.nmspinning.fetch_sub(1, Ordering::SeqCst) == 1 {
        wakep(sh);
    }
}

/// Queues `g` on `p` (in `runnext` if `next`); a full ring spills half to the global
/// queue.
///
/// # Safety
/// The calling thread's M holds `p` (only its owner pushes on a run queue), and `g` is a
/// live RUNNABLE G of `sh` on no run queue, which the caller gives up: whichever M takes it
/// off a queue runs it (`execute`).
unsafe fn push_local(sh: &Shared, p: &P, g: GRef, next: bool) {
    p.runq
        .push(g, next, &mut |batch| sh.global.push_batch(batch));
}

/// Takes up to `max` Gs from the global queue: returns the first, the rest go on `p`'s
/// ring, which must be empty (the caller found nothing on it).
///
/// # Safety
/// The calling thread's M holds `p` (only its owner pushes on a run queue).
unsafe fn take_global(sh: &Shared, p: &P, max: usize) -> Option<GRef> {
    let mut batch = [ptr::null_mut(); RING / 2];
    let n = sh.global.pop_batch(sh.ps.len(), &mut batch[..max]);
    if n == 0 {
        return None;
    }
    p.runq.push_many(&batch[1..n]);
    Some(batch[0])
}

/// Schedule ticks per timed run (`time_run`): two clock reads every 64 schedules.
const RUN_SAMPLE: u32 = 64;

/// Times one run in RUN_SAMPLE for the runtime's run-length estimate (`Shared::note_run`):
/// from the schedule at a multiple of RUN_SAMPLE to the next one, which is the run of the
/// G picked in between plus one pass of the scheduler. Out of line, so the switch path
/// carries only the tick test; a P that went idle in between drops the sample
/// (`release_p`).
#[cold]
#[inline(never)]
fn time_run(sh: &Shared, p: &P, tick: u32) {
    if tick.is_multiple_of(RUN_SAMPLE) {
        p.run_started.store(sh.now_ns(), Ordering::Relaxed);
    } else {
        let start = p.run_started.swap(0, Ordering::Relaxed);
        if start != 0 {
            sh.note_run(sh.now_ns().saturating_sub(start));
        }
    }
}

/// Go's findRunnable, and the bookkeeping of time slices: a G that does not inherit the
/// running slice from `runnext` starts a new one.
///
/// # Safety
/// `p` is the P `m` holds (`m.p`).
unsafe fn find_runnable(m: &MCtx, p: &P) -> Option<GRef> {
    let sh = &*m.shared;
    if sh.shutdown.load(Ordering::Relaxed) {
        // The runtime is being dropped: stop between coroutines even if some are still
        // runnable (one that yields in a loop would otherwise keep this M for ever).
        return None;
    }
    if p.preempt.load(Ordering::Relaxed) {
        p.preempt.store(false, Ordering::Relaxed);
        p.runq
            .demote_runnext(&mut |batch| sh.global.push_batch(batch));
    }
    // SAFETY: per the contract.
    let (g, inherit) = unsafe { find_runnable_inner(m, p) }?;
    if !inherit {
        p.slice.store(
            p.slice.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
    Some(g)
}

/// Finds a G to run, and whether it inherits the running time slice.
///
/// # Safety
/// `p` is the P `m` holds (`m.p`).
unsafe fn find_runnable_inner(m: &MCtx, p: &P) -> Option<(GRef, bool)> {
    let sh = &*m.shared;
    let tick = p.tick.load(Ordering::Relaxed).wrapping_add(1);
    p.tick.store(tick, Ordering::Relaxed);
    crate::timer::run_due(sh, p);
    if tick % RUN_SAMPLE < 2 {
        time_run(sh, p, tick);
    }
    let pending = p.wake_pending.load(Ordering::Relaxed);
    if pending == PENDING_RUNNEXT || (pending == PENDING_SHORT && p.runq.len() <= 1) {
        // We are scheduling now: the runnext G (or whatever is left) is about to run here.
        p.wake_pending.store(0, Ordering::Relaxed);
    }
    if tick.is_multiple_of(2)
        && let Some(g) = m.ms.pop_mail()
    {
        return Some((g, false));
    }
    // Fairness: without this, two Gs that keep waking each other in `runnext` would starve
    // the global queue (proc.go: "Check the global runnable queue once in a while").
    if tick.is_multiple_of(61)
        && sh.global.len() > 0
        // SAFETY: per the contract this M holds `p`.
        && let Some(g) = unsafe { take_global(sh, p, 1) }
    {
        return Some((g, false));
    }
    if let Some(found) = p.runq.pop_inheriting() {
        return Some(found);
    }
    if let Some(g) = m.ms.pop_mail() {
        return Some((g, false));
    }
    // SAFETY: as above; `p`'s queue is empty (we looked just above).
    if let Some(g) = unsafe { take_global(sh, p, RING / 2) } {
        return Some((g, false));
    }
    if sh.shutdown.load(Ordering::SeqCst) {
        return None;
    }
    // The network, without blocking, if anything waits on it and nobody is polling.
    if sh.poll.has_waiters() && sh.poll.try_acquire() {
        let mut woken = Vec::new();
        sh.poll.poll(Some(core::time::Duration::ZERO), &mut woken);
        sh.poll.release(sh.now_ns());
        if !woken.is_empty() {
            for t in woken {
                // Onto this P (we hold it): the last one lands in runnext.
                // SAFETY: `poll` claimed every token it returned; each is notified once,
                // here.
                unsafe { t.notify() };
            }
            if let Some(g) = p.runq.pop() {
                return Some((g, false));
            }
        }
    }
    let nprocs = sh.ps.len();
    if nprocs == 1 {
        return None;
    }
    // Bound the spinners: at most half the busy Ps' worth (proc.go findRunnable).
    if !m.spinning.get() {
        let busy = nprocs.saturating_sub(sh.npidle.load(Ordering::SeqCst));
        if 2 * sh.nmspinning.load(Ordering::SeqCst) >= busy {
            return None;
        }
        m.spinning.set(true);
        sh.nmspinning.fetch_add(1, Ordering::SeqCst);
    }
    const PASSES: usize = 4;
    for pass in 0..PASSES {
        // A random start and a stride coprime with nprocs visit every P once in a random
        // order (Go's randomOrder).
        let start = (fastrand() % nprocs as u64) as usize;
        let stride = coprime_stride(nprocs, fastrand());
        for k in 0..nprocs {
            let v = (start + k * stride) % nprocs;
            if v == p.id {
                continue;
            }
            // The victim's M may be held up by a coroutine that does not yield, or idle:
            // its timers are ours to fire too (Go's stealWork). What they wake lands here.
            if pass == PASSES - 1
                && crate::timer::run_due(sh, &sh.ps[v])
                && let Some(g) = p.runq.pop()
            {
                return Some((g, false));
            }
            if let Some(g) = p.runq.steal_from(&sh.ps[v].runq, pass == PASSES - 1) {
                p.steals
                    .store(p.steals.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                return Some((g, false));
            }
        }
        // SAFETY: as above; stealing found nothing, so `p`'s ring is still empty.
        if let Some(g) = unsafe { take_global(sh, p, RING / 2) } {
            return Some((g, false));
        }
    }
    None
}

fn coprime_stride(n: usize, r: u64) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut s = (r % n as u64) as usize + 1;
    while gcd(s, n) != 1 {
        s = s % n + 1;
    }
    s
}

/// Runs `g` until it yields, parks or returns (Go's `execute` + the tail of `gopark`).
/// Returns `g` if it asked to run a blocking section (`run_blocking`).
///
/// # Safety
/// This M holds `p`, and took `g` off a run queue or its mailbox (whose Gs are live,
/// RUNNABLE and run only by whoever takes them off: `push_local`, `push_mail`, `queue`).
unsafe fn execute(m: &MCtx, p: &P, g: GRef) -> Option<GRef> {
    let sh = &*m.shared;
    // SAFETY: per the contract `g` is live and, being RUNNABLE, owned by this M until it
    // switches out again.
    let gr: &G = unsafe { &*g };
    // Only a sampled G (`stamp_runnable`) has a stamp; most switches skip the store.
    let since = gr.runnable_at.load(Ordering::Relaxed);
    if since != 0 {
        gr.runnable_at.store(0, Ordering::Relaxed);
        p.record_latency(sh.now_ns().saturating_sub(since));
    }
    gr.state.store(RUNNING, Ordering::Release);
    m.curg.set(g);
    p.curg_id
        .store(gr.id.load(Ordering::Relaxed), Ordering::Relaxed);
    // SAFETY: this M holds `p` and now runs `g`, which `gr` points to.
    let out = unsafe { execute_inner(m, p, g, gr) };
    p.curg_id.store(0, Ordering::Relaxed);
    out
}

/// The switch loop of `execute`.
///
/// # Safety
/// This M holds `p` and runs `g` (RUNNING, `m.curg`), and `gr` is `*g`.
unsafe fn execute_inner(m: &MCtx, p: &P, g: GRef, gr: &G) -> Option<GRef> {
    let sh = &*m.shared;
    loop {
        // SAFETY: only the M running a G touches its coroutine, and this M runs it now.
        let co = unsafe { (*gr.co.get()).as_mut() }.expect("a runnable G has a coroutine");
        match co.resume(()) {
            CoroutineResult::Yield(Switch::Yield) => {
                m.curg.set(ptr::null_mut());
                sh.stamp_runnable(gr);
                gr.state.store(RUNNABLE, Ordering::Release);
                let locked = gr.locked_m.get();
                if locked.is_null() {
                    // SAFETY: this M holds `p`; `g` is RUNNABLE again, switched out and on
                    // no queue, and we do not touch it after this.
                    unsafe { push_local(sh, p, g, false) };
                } else {
                    // SAFETY: a locked G's M is this M, alive; `g` as just said.
                    unsafe { (*locked).push_mail(g) };
                }
                return None;
            }
            CoroutineResult::Yield(Switch::Blocking) => {
                m.curg.set(ptr::null_mut());
                return Some(g);
            }
            CoroutineResult::Yield(Switch::Park) => {
                // The G's stack is now switched out: only now may a waker resume it.
                match gr.state.compare_exchange(
                    PARKING,
                    PARKED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        m.curg.set(ptr::null_mut());
                        return None;
                    }
                    Err(s) => {
                        debug_assert_eq!(s, NOTIFIED);
                        gr.state.store(RUNNING, Ordering::Release);
                        gr.wait_reason
                            .store(WaitReason::None as u8, Ordering::Relaxed);
                    }
                }
            }
            CoroutineResult::Return(()) => {
                m.curg.set(ptr::null_mut());
                // SAFETY: the coroutine returned, so nobody refers to `g` any more (its
                // joiner was told through the JoinHandle's own state).
                unsafe { finish(sh, p, g) };
                return None;
            }
        }
    }
}

/// Retires a G whose coroutine returned (Go's `goexit0`): gfree.rs keeps it with its stack
/// on the P for the next spawn, or frees it.
///
/// # Safety
/// `g` must be a finished G that nothing else refers to; the caller holds `p`.
unsafe fn finish(sh: &Shared, p: &P, g: GRef) {
    // SAFETY: per the contract.
    unsafe { crate::gfree::put(sh, p, g) };
}

/// Parks the running G until `ready` (Go's `gopark`). Returns at once if a `ready` already
/// arrived for this park.
pub(crate) fn park_current(reason: WaitReason) {
    let g = current_g();
    assert!(!g.is_null(), "park_current outside a coroutine");
    // SAFETY: the running G is live while it runs.
    let gr = unsafe { &*g };
    gr.wait_reason.store(reason as u8, Ordering::Relaxed);
    if gr
        .state
        .compare_exchange(RUNNING, PARKING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // NOTIFIED: the wake-up came before we got here.
        gr.state.store(RUNNING, Ordering::Release);
        gr.wait_reason
            .store(WaitReason::None as u8, Ordering::Relaxed);
        return;
    }
    // SAFETY: `gr` is the G running here.
    unsafe { switch_out(gr, Switch::Park) };
    gr.wait_reason
        .store(WaitReason::None as u8, Ordering::Relaxed);
}

/// Switches from the running G back to its M.
///
/// # Safety
/// `g` is the G running on the calling thread (we are on its stack). For
/// `Switch::Blocking`, `g.blocking` holds a section that stays valid until `g` resumes
/// (the M calls it, `run_blocking`).
unsafe fn switch_out(g: &G, how: Switch) {
    let here = 0u8;
    g.saved_sp
        .store(&raw const here as usize, Ordering::Relaxed);
    let y = g.yielder.get();
    // SAFETY: the yielder was set when the coroutine started and stays valid until it
    // returns; per the contract we are running on that coroutine's stack.
    unsafe { (*y).suspend(how) };
}

/// Puts the running G at the back of the run queue (Go's `Gosched`, but onto the local
/// queue rather than the global one: cheaper, and the 61-tick check keeps fairness).
/// Outside a coroutine, yields the thread.
pub fn yield_now() {
    let g = current_g();
    if g.is_null() {
        std::thread::yield_now();
        return;
    }
    // SAFETY: `g` is the G running here, live while it runs.
    unsafe { switch_out(&*g, Switch::Yield) };
}

/// Makes a parked (or parking) G runnable (Go's `ready`). Called by a token's claimant.
///
/// # Safety
/// The caller won the token `g` waits on (wait.rs) and has not readied it yet, so the G is
/// alive, in its wait, and cannot leave it (or finish) before this returns.
pub(crate) unsafe fn ready(g: GRef) {
    // SAFETY: per the contract.
    let gr = unsafe { &*g };
    loop {
        let s = gr.state.load(Ordering::Acquire);
        match s {
            RUNNING | PARKING => {
                if gr
                    .state
                    .compare_exchange(s, NOTIFIED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
            }
            PARKED => {
                if gr
                    .state
                    .compare_exchange(PARKED, RUNNABLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
            _ => unreachable!("ready on a G in state {s}"),
        }
    }
    // SAFETY: G's runtime outlives its Gs (a runtime that shuts down with live Gs leaks
    // its shared state on purpose, see runtime.rs).
    let sh = unsafe { &*gr.rt };
    if sh.shutdown.load(Ordering::SeqCst) {
        // No M will run it again: it stays where it is, leaked with its runtime.
        return;
    }
    sh.stamp_runnable(gr);
    // SAFETY: our CAS made the PARKED G RUNNABLE, so it is switched out and on no queue,
    // and ours to give up; `locked_m` is its own.
    unsafe { make_runnable(sh, g, gr.locked_m.get()) };
}

/// Queues a RUNNABLE G: on the caller's P's `runnext` if the caller is an M of its
/// runtime, on its locked M, or on the global queue; then makes sure an M will look.
///
/// # Safety
/// `g` is a live RUNNABLE G of `sh`, switched out and on no run queue, which the caller
/// gives up (it must not touch `g` after this); `locked` is its `locked_m`: null, or the
/// M of `sh` it is locked to.
pub(crate) unsafe fn make_runnable(sh: &Shared, g: GRef, locked: *const MShared) {
    if !locked.is_null() {
        // SAFETY: a locked G's M lives as long as the runtime.
        let m = unsafe { &*locked };
        // SAFETY: per the contract, `g` is RUNNABLE, locked to `m` and ours to give up.
        unsafe { m.push_mail(g) };
        m.parker.unpark();
        return;
    }
    // SAFETY: per the contract; `current_p` is the P this thread holds, if any.
    unsafe { queue(sh, current_p(sh), g) };
}

/// Queues a RUNNABLE G that is not locked to an M: on `p`, which must be `current_p(sh)`
/// (a spawn has it at hand), or globally if `None`.
///
/// # Safety
/// As for `make_runnable`, for a G locked to no M; `p` is `current_p(sh)`.
pub(crate) unsafe fn queue(sh: &Shared, p: Option<&P>, g: GRef) {
    match p {
        Some(p) => {
            // SAFETY: per the contract this thread holds `p`, and `g` is ours to queue.
            unsafe { push_local(sh, p, g, true) };
            let pending = if p.runq.ring_is_empty() {
                PENDING_RUNNEXT
            } else if sh.runs_short() {
                PENDING_SHORT
            } else {
                0
            };
            if pending != 0 {
                // No idle M is woken when
                // - only `runnext` holds work: the G running here will most likely block
                //   soon (it just woke a partner: a channel hand-off, a join) and let this
                //   M run it at once. Waking an idle M would cost a futex wake-up on this
                //   path and pull the pair apart onto two Ps (tokio skips the notification
                //   for its LIFO slot for the same reason);
                // - the runtime's coroutines run too briefly to be worth moving
                //   (`MOVE_WORTH_NS`): this P runs them sooner than another could take
                //   them over, and each one moved costs this P more than running it. Go
                //   wakes an M for every new G (golang/go#54622 discusses the cost; the
                //   crate documentation, "Wake-ups", has ours).
                // Either way the work is not lost, it is on a running P. If the G running
                // here keeps running, or the queue stops draining, sysmon delivers the
                // wake-up (sysmon.rs).
                if p.wake_pending.load(Ordering::Relaxed) < pending {
                    p.wake_pending.store(pending, Ordering::Relaxed);
                }
                return;
            }
            // A G on the queue of the P we hold cannot be stranded (this M runs it if no
            // one steals it), so this wake-up is for parallelism only and needs no fence
            // against an M going idle (`stop_m` pairs with the fence in `wakep`).
            wakep_unfenced(sh);
            return;
        }
        None => sh.global.push(g),
    }
    wakep(sh);
}

/// Locks the calling coroutine to the M (thread) running it: from now on it always resumes
/// on this thread. Other coroutines may still run on the thread in between (unlike Go's
/// LockOSThread, which dedicates the thread). No-op outside a coroutine.
pub fn lock_to_thread() {
    let m = current_m();
    let g = current_g();
    if g.is_null() {
        return;
    }
    // SAFETY: both are live on this thread while the G runs.
    unsafe { (*g).locked_m.set(Arc::as_ptr(&(*m).ms)) };
}

/// Undoes `lock_to_thread`.
pub fn unlock_from_thread() {
    let g = current_g();
    if !g.is_null() {
        // SAFETY: the running G is live.
        unsafe { (*g).locked_m.set(ptr::null()) };
    }
}

/// Whether the calling coroutine is locked to its thread.
pub fn is_locked_to_thread() -> bool {
    let g = current_g();
    // SAFETY: the running G is live.
    !g.is_null() && unsafe { !(*g).locked_m.get().is_null() }
}

/// Runs `f`, a blocking system call or a CPU-heavy section, without holding up the other
/// coroutines of this coroutine's P (Go's `entersyscall`/`exitsyscall`).
///
/// Inside a coroutine, `f` runs on the current thread (the M) but off the P: if it takes
/// longer than ~20 µs while other coroutines wait, sysmon hands the P to another thread,
/// and this coroutine continues on whichever P is free when `f` returns. `f` runs on the
/// thread's own stack, so deep recursion is fine there. Inside `f` the caller is a plain
/// thread: channel operations and locks block the thread, and `spawn` still works.
/// Outside a coroutine, `blocking(f)` is just `f()`. A panic in `f` propagates.
///
/// ```
/// let rt = tessera_sched::Runtime::builder().procs(1).build().unwrap();
/// let len = rt.block_on(|| tessera_sched::blocking(|| std::fs::read("Cargo.toml").map(|v| v.len())));
/// assert!(len.unwrap() > 0);
/// ```
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let g = current_g();
    if g.is_null() {
        return f();
    }
    let mut f = Some(f);
    let mut out: Option<std::thread::Result<R>> = None;
    let mut section = || {
        let f = f.take().expect("a blocking section runs once");
        out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    };
    let section: &mut dyn FnMut() = &mut section;
    // SAFETY: only the lifetime is erased. The pointer is used by this thread's M while
    // this coroutine is suspended in `switch_out` below, so `section` (on this stack) is
    // alive and not otherwise borrowed; it is not used after we resume.
    let section: *mut (dyn FnMut() + 'static) = unsafe { core::mem::transmute(section) };
    // SAFETY: the running G is live while it runs.
    let gr = unsafe { &*g };
    gr.blocking.set(Some(section));
    gr.wait_reason
        .store(WaitReason::Blocking as u8, Ordering::Relaxed);
    // SAFETY: `gr` is the G running here, and its section, on this stack, stays alive
    // until we resume (see above).
    unsafe { switch_out(gr, Switch::Blocking) };
    match out.expect("the M ran the blocking section") {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
