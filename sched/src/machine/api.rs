//! The scheduler's public calls on the running coroutine: `yield_now`, `lock_to_thread` and
//! its kin, and `blocking`.

use core::ptr;
use core::sync::atomic::Ordering;
use std::sync::Arc;

use super::current::{current_g, current_m};
use super::m_loop::switch_out;
use crate::coroutine::{Switch, WaitReason};

/// Puts the running G at the back of the run queue (Go's `Gosched`, but onto the local
/// queue rather than the global one: cheaper, and the 61-tick check keeps fairness).
/// Outside a coroutine, yields the thread.
//
// Inlined into the caller, also across crates (a user's build has no LTO): the switch
// resumes a coroutine at the instruction after it, and out of line that is this function's
// body, whose `ret` the CPU's return-stack predictor cannot know (the M's calls filled it
// meanwhile), so every switch paid a mispredicted return. The benches/sched-user build
// (cargo's default release profile), yield on one P: 32.3 -> 13.6 ns per switch, as with
// thin LTO (13.3-14.9).
#[inline]
pub fn yield_now() {
    let g = current_g();
    if g.is_null() {
        std::thread::yield_now();
        return;
    }
    // SAFETY: `g` is the G running here, live while it runs.
    unsafe { switch_out(&*g, Switch::Yield) };
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
