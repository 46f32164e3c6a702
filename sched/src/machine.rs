//! The M: an OS thread that runs Gs while it holds a P (Go's `schedule`, `findRunnable`,
//! `execute`, `stopm`, `startm`, `wakep` in proc.go).
//!
//! The loop: find a runnable G (its P's queue, every 61st tick the global queue first, then
//! the global queue, then stealing), run it until it yields, parks or returns, repeat. When
//! there is nothing to do, the M gives its P back to the idle list, registers itself as idle
//! in the same critical section, re-checks every queue (the "delicate dance" of
//! findRunnable: work pushed just before we went idle would otherwise be lost), and sleeps
//! on its futex parker.
//!
//! Invariant, under the idle lock: idle Ps and idle Ms are equally many. All Ms are created
//! at start-up, one per P, so an M without a P is always on the idle list. `wakep` can then
//! always pair an idle P with an idle M, and never needs to create a thread.
//!
//! Spinning (Go's `nmspinning`): an M looking for work to steal is "spinning". `wakep`
//! starts an M only when nobody spins, and an M may start spinning only while
//! `2 * spinning < busy Ps`, which bounds the CPU burnt looking for work. A spinning M that
//! finds work wakes another if it was the last spinner, so a burst of work fans out.
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
use crate::processor::P;
use crate::runqueue::RING;
use crate::runtime::Shared;

const NO_P: usize = usize::MAX;

/// The part of an M that other threads see.
#[derive(Debug)]
pub(crate) struct MShared {
    pub(crate) parker: Parker,
    /// A P handed over by `wakep` (or `NO_P`).
    nextp: AtomicUsize,
    /// Gs locked to this M (`lock_to_thread`) that are runnable.
    mailbox: Mutex<VecDeque<usize>>,
    mailbox_len: AtomicUsize,
}

impl MShared {
    pub(crate) fn new() -> Self {
        Self {
            parker: Parker::new(),
            nextp: AtomicUsize::new(NO_P),
            mailbox: Mutex::new(VecDeque::new()),
            mailbox_len: AtomicUsize::new(0),
        }
    }

    fn push_mail(&self, g: GRef) {
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

/// Idle Ps and Ms (Go's `sched.pidle`, `sched.midle` under `sched.lock`).
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

/// The runtime the calling thread's M belongs to.
pub(crate) fn current_runtime() -> Option<Arc<Shared>> {
    let m = current_m();
    if m.is_null() {
        return None;
    }
    // SAFETY: as in `current_g`.
    Some(unsafe { (*m).shared.clone() })
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

/// The body of an M thread.
pub(crate) fn m_main(shared: Arc<Shared>, ms: Arc<MShared>, p: usize) {
    tessera_stacks::prepare_thread();
    let ctx = MCtx {
        shared,
        ms,
        p: Cell::new(p),
        curg: Cell::new(ptr::null_mut()),
        spinning: Cell::new(false),
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
        // SAFETY: this M holds the P, so nobody else touches its allocator cache; the guard
        // is dropped below, before the P is given back, and is never leaked.
        let installed = unsafe { tessera::install_cache(&mut *p.alloc.get()) };
        while let Some(g) = find_runnable(m, p) {
            if m.spinning.get() {
                reset_spinning(m);
            }
            execute(m, p, g);
        }
        installed.uninstall();
        release_p(m);
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Gives the M's P back and registers the M as idle, in one critical section.
fn release_p(m: &MCtx) {
    let sh = &*m.shared;
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    idle.ps.push(m.p.replace(NO_P));
    idle.ms.push(m.ms.clone());
    sh.npidle.fetch_add(1, Ordering::SeqCst);
}

/// Called with no P: re-checks for work, then sleeps until handed a P. `None` on shutdown.
fn stop_m(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    let was_spinning = m.spinning.replace(false);
    if was_spinning {
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    // Pairs with the fence in `wakep`: either the pusher sees our P idle, or we see its work.
    core::sync::atomic::fence(Ordering::SeqCst);
    if any_work(m) {
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms)) {
            idle.ms.swap_remove(i);
            let p = idle.ps.pop().expect("idle Ps and Ms are equally many");
            sh.npidle.fetch_sub(1, Ordering::SeqCst);
            drop(idle);
            if was_spinning {
                m.spinning.set(true);
                sh.nmspinning.fetch_add(1, Ordering::SeqCst);
            }
            return Some(p);
        }
        // A waker already took us off the list and is handing us a P.
    }
    loop {
        let p = m.ms.nextp.swap(NO_P, Ordering::AcqRel);
        if p != NO_P {
            // `wakep` counted us as spinning.
            m.spinning.set(true);
            return Some(p);
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        if m.ms.mailbox_len.load(Ordering::SeqCst) > 0 {
            let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms)) {
                idle.ms.swap_remove(i);
                let p = idle.ps.pop().expect("idle Ps and Ms are equally many");
                sh.npidle.fetch_sub(1, Ordering::SeqCst);
                return Some(p);
            }
            continue;
        }
        m.ms.parker.park();
    }
}

fn any_work(m: &MCtx) -> bool {
    let sh = &*m.shared;
    sh.global.len() > 0
        || m.ms.mailbox_len.load(Ordering::SeqCst) > 0
        || sh.ps.iter().any(|p| !p.runq.is_empty())
}

/// Starts an idle M on an idle P if there is work nobody is looking for (Go's `wakep`).
pub(crate) fn wakep(sh: &Shared) {
    core::sync::atomic::fence(Ordering::SeqCst);
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
    match (idle.ps.pop(), idle.ms.pop()) {
        (Some(p), Some(mm)) => {
            sh.npidle.fetch_sub(1, Ordering::SeqCst);
            drop(idle);
            mm.nextp.store(p, Ordering::Release);
            mm.parker.unpark();
        }
        (p, mm) => {
            debug_assert!(
                p.is_none() && mm.is_none(),
                "idle Ps and Ms are equally many"
            );
            drop(idle);
            sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
        }
    }
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

fn push_local(sh: &Shared, p: &P, g: GRef, next: bool) {
    p.runq
        .push(g, next, &mut |batch| sh.global.push_batch(batch));
}

/// Go's findRunnable, without timers (timer.rs has its own thread) and netpoll.
fn find_runnable(m: &MCtx, p: &P) -> Option<GRef> {
    let sh = &*m.shared;
    let tick = p.tick.load(Ordering::Relaxed).wrapping_add(1);
    p.tick.store(tick, Ordering::Relaxed);
    if p.wake_pending.load(Ordering::Relaxed) {
        // We are scheduling now: whatever sits in runnext is about to run here.
        p.wake_pending.store(false, Ordering::Relaxed);
    }
    if tick.is_multiple_of(2)
        && let Some(g) = m.ms.pop_mail()
    {
        return Some(g);
    }
    // Fairness: without this, two Gs that keep waking each other in `runnext` would starve
    // the global queue (proc.go: "Check the global runnable queue once in a while").
    if tick.is_multiple_of(61)
        && sh.global.len() > 0
        && let Some(g) = sh.global.pop_batch(sh.ps.len(), 1, &mut |_| unreachable!())
    {
        return Some(g);
    }
    if let Some(g) = p.runq.pop() {
        return Some(g);
    }
    if let Some(g) = m.ms.pop_mail() {
        return Some(g);
    }
    if let Some(g) = sh
        .global
        .pop_batch(sh.ps.len(), RING / 2, &mut |g| push_local(sh, p, g, false))
    {
        return Some(g);
    }
    if sh.shutdown.load(Ordering::SeqCst) {
        return None;
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
            if let Some(g) = p.runq.steal_from(&sh.ps[v].runq, pass == PASSES - 1) {
                p.steals
                    .store(p.steals.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                return Some(g);
            }
        }
        if let Some(g) = sh
            .global
            .pop_batch(nprocs, RING / 2, &mut |g| push_local(sh, p, g, false))
        {
            return Some(g);
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
fn execute(m: &MCtx, p: &P, g: GRef) {
    let sh = &*m.shared;
    // SAFETY: `g` came off a run queue (or a mailbox): it is live and, being RUNNABLE,
    // owned by this M until it switches out again.
    let gr: &G = unsafe { &*g };
    let since = gr.runnable_at.swap(0, Ordering::Relaxed);
    if since != 0 {
        p.record_latency(sh.now_ns().saturating_sub(since));
    }
    gr.state.store(RUNNING, Ordering::Release);
    m.curg.set(g);
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
                    push_local(sh, p, g, false);
                } else {
                    // SAFETY: a locked G's M is this M, alive.
                    unsafe { (*locked).push_mail(g) };
                }
                return;
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
                        return;
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
                return;
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
    switch_out(gr, Switch::Park);
    gr.wait_reason
        .store(WaitReason::None as u8, Ordering::Relaxed);
}

/// Switches from the running G back to its M.
fn switch_out(g: &G, how: Switch) {
    let here = 0u8;
    g.saved_sp
        .store(&raw const here as usize, Ordering::Relaxed);
    let y = g.yielder.get();
    // SAFETY: the yielder was set when the coroutine started and stays valid until it
    // returns; we are running on that coroutine's stack.
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
    // SAFETY: the running G is live while it runs.
    switch_out(unsafe { &*g }, Switch::Yield);
}

/// Makes a parked (or parking) G runnable (Go's `ready`). Called by a token's claimant.
pub(crate) fn ready(g: GRef) {
    // SAFETY: the caller won the token the G is waiting on, so the G cannot finish before
    // this returns (see wait.rs).
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
    make_runnable(sh, g, gr.locked_m.get());
}

/// Queues a RUNNABLE G: on the caller's P's `runnext` if the caller is an M of its
/// runtime, on its locked M, or on the global queue; then makes sure an M will look.
/// `g` must not be touched after this.
pub(crate) fn make_runnable(sh: &Shared, g: GRef, locked: *const MShared) {
    if !locked.is_null() {
        // SAFETY: a locked G's M lives as long as the runtime.
        let m = unsafe { &*locked };
        m.push_mail(g);
        m.parker.unpark();
        return;
    }
    match current_p(sh) {
        Some(p) => {
            push_local(sh, p, g, true);
            if p.runq.ring_is_empty() {
                // Only `runnext` holds work, and the G running here will most likely block
                // soon (it just woke a partner: a channel hand-off, a join) and let this M
                // run it at once. Waking an idle M now would cost a futex wake-up on this
                // path and pull the pair apart onto two Ps (tokio skips the notification
                // for its LIFO slot for the same reason). If this G keeps running instead,
                // sysmon sees the pending wake-up with no schedule tick and wakes an M,
                // which may then steal runnext.
                p.wake_pending.store(true, Ordering::Relaxed);
                return;
            }
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
