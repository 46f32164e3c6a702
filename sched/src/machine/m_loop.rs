//! The M loop (Go's `mstart`, `schedule`, `execute`, `goexit0`, and
//! `entersyscall`/`exitsyscall` for blocking sections): find a G, run it until it switches
//! out, and act on how it did.
//!
//! Blocking sections (`blocking(f)`): the G switches to its M, which marks its P
//! `P_SYSCALL`, drops the P's allocator cache, and runs `f` on its own stack. Sysmon may
//! retake the P meanwhile and hand it to another M (sysmon.rs). On return the M takes its P
//! back if it is still there, else any idle P; with none, the G goes to the global queue
//! and the M goes idle.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::Ordering;
use std::sync::Arc;

use corosensei::CoroutineResult;

use super::current::{CURRENT, seed};
use super::find_work::find_runnable;
use super::idle::{release_p, reset_spinning, stop_m, wakep};
use super::ready::push_local;
use super::{MCtx, MShared, NO_P};
use crate::coroutine::{G, GRef, NOTIFIED, PARKED, RUNNABLE, RUNNING, Switch, WaitReason};
use crate::processor::{P, P_RUNNING, P_SYSCALL};
use crate::runtime::Shared;

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
                // An idle spell is not a run (`time_run`).
                p.run_started.store(0, Ordering::Relaxed);
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
        // SAFETY: `g` is live, RUNNABLE, on no queue, and we do not touch it again.
        unsafe { sh.global.push(g) };
        wakep(sh);
    }
}

/// Runs `g` until it yields, parks or returns (Go's `execute` + the tail of `gopark`).
/// Returns `g` if it asked to run a blocking section (`run_blocking`).
///
/// # Safety
/// This M holds `p`, and took `g` off a run queue or its mailbox (whose Gs are live,
/// RUNNABLE and run only by whoever takes them off: `push_local`, `push_mail`, `queue`).
unsafe fn execute(m: &MCtx, p: &P, g: GRef) -> Option<GRef> {
    // SAFETY: per the contract `g` is live and, being RUNNABLE, owned by this M until it
    // switches out again.
    let gr: &G = unsafe { &*g };
    // Only a sampled G (`stamp_runnable`) has a stamp; most switches skip the store.
    let since = gr.runnable_at.load(Ordering::Relaxed);
    if since != 0 {
        record_latency(p, gr, since);
    }
    // The profiler labels: handed to the P's cache only when they change (`labels.rs`).
    let labels = gr.labels.get();
    if labels != p.labels.get() {
        p.labels.set(labels);
        tessera::profile::set_current_labels(labels);
    }
    // A new G's coroutine is made on its first run, here (spawn.rs `set_coroutine`). A
    // record spawned without a stack gets one now (gfree.rs `bind_stack`), most often the
    // one the G that ran here last left. Otherwise its stack was last touched by the G
    // before, long ago if many are alive: the lines the coroutine touches first and the
    // canary line its retirement reads are asked for at once, so that their misses overlap.
    // (A load on every switch; taken only when set, so a switch stores nothing here.)
    if let Some(start) = gr.start.get() {
        gr.start.set(None);
        let base = gr.stack_base.load(Ordering::Relaxed);
        if base == 0 {
            // SAFETY: this M holds `p`; `g` is ours (per the contract), has no stack (a
            // G's `stack_base` is 0 exactly then) and no coroutine yet (`start` was set).
            unsafe { crate::gfree::bind_stack(&m.shared, p, g) };
        } else {
            crate::gfree::warm_stack(base);
        }
        // SAFETY: per the contract `g` is ours; its spawn set `start`, taken just now; it
        // owns a stack (given just above if it had none).
        unsafe { start(g, true) };
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

/// The sampled half of `execute`'s latency bookkeeping (`Shared::stamp_runnable`), out of
/// line: `g` became runnable at `since`.
#[inline(never)]
fn record_latency(p: &P, g: &G, since: u64) {
    g.runnable_at.store(0, Ordering::Relaxed);
    p.record_latency(crate::sys::monotonic_ns().saturating_sub(since));
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
                // The G's stack is now switched out: only now may a waker resume it. A
                // wake-up that came while it was on its way here made it NOTIFIED
                // (`park_current`).
                match gr.state.compare_exchange(
                    RUNNING,
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

/// Switches from the running G back to its M.
///
/// # Safety
/// `g` is the G running on the calling thread (we are on its stack). For
/// `Switch::Blocking`, `g.blocking` holds a section that stays valid until `g` resumes
/// (the M calls it, `run_blocking`).
#[inline]
pub(super) unsafe fn switch_out(g: &G, how: Switch) {
    // Where a goroutine profile will start the walk of this stack (profile/goroutine.rs):
    // this frame's registers, read here, stay true of it while the G is switched out,
    // because corosensei's `switch_yield` saves its own state (the resume address, rbx,
    // rbp) below this frame's rsp and leaves the frames above it alone. Three register
    // reads and three stores; the stack pointer was stored before as well.
    let here = tessera::profile::FrameRegisters::here();
    g.saved_sp.store(here.sp, Ordering::Relaxed);
    g.saved_pc.store(here.pc, Ordering::Relaxed);
    g.saved_bp.store(here.bp, Ordering::Relaxed);
    let y = g.yielder.get();
    // SAFETY: the yielder was set when the coroutine started and stays valid until it
    // returns; per the contract we are running on that coroutine's stack.
    unsafe { (*y).suspend(how) };
}
