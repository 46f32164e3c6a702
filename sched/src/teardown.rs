//! Dropping a runtime: the coroutines still parked or queued once its Ms have stopped.
//!
//! Go has nothing to do here (a Go program ends with its runtime); a Rust runtime can be
//! dropped with a process that goes on, so it unwinds those coroutines, which drops what
//! they own, and returns their stacks. The danger is a G that somebody else may still
//! touch. Everything that wakes a parked G first claims its wait token (wait.rs; joins
//! too, join.rs) and holds the token until its `notify` has returned, so:
//!
//! 1. Every parked G's token is claimed for `CANCELLED`. Won: nobody else will ever wake
//!    the G or touch what its wait points at (a channel waiter's slot, say): a claimant
//!    that comes later loses, and leaves the stale queue entry alone.
//! 2. A runnable G (queued, never started or yielded, or woken before the drop) may have
//!    been woken by a thread that is still inside `notify`: that thread still holds the
//!    token, which shows in its reference count (`Token::shared_elsewhere`).
//! 3. A G that passes is unwound (corosensei's forced unwind from where it suspended; its
//!    closure sees `CANCELLED` and lets the joiner hear `JoinError::Cancelled`) and freed,
//!    its stack back in a stack cache. The timers are dropped first, so their references
//!    to tokens do not count in 2.
//!
//! A G that fails (its token was claimed by another party that is waking it right now) is
//! left as it is, its joiner told `Cancelled`, and the runtime's shared state is kept
//! alive for whoever is still waking it: the only case that still leaks, and only when a
//! runtime is dropped while a thread outside it wakes its coroutines.

use core::ptr;

use crate::coroutine::{CANCELLED, G, GRef, PARKED, RUNNABLE};
use crate::runtime::Shared;
use crate::wait::Token;

/// Unwinds and frees every live G of `sh`; returns how many had to be left (see above).
///
/// # Safety
/// The runtime's Ms have stopped: no G runs, and nobody holds any P.
pub(crate) unsafe fn release_live(sh: &Shared) -> usize {
    crate::timer::clear(sh);
    let mut live: Vec<GRef> = Vec::new();
    sh.allgs
        .for_each(&mut |g| live.push(ptr::from_ref(g).cast_mut()));
    // Claim every parked G before unwinding any: a destructor that runs in the unwinding
    // may send on a channel or drop a `JoinHandle`, and must find no G of ours to wake.
    let (free, keep): (Vec<GRef>, Vec<GRef>) = live.into_iter().partition(|&g| {
        // SAFETY: a live G of a runtime whose Ms have stopped is not running, and its
        // record stays until we free it below.
        unsafe { claim(&*g) }
    });
    for g in free {
        // SAFETY: claimed above: nobody else refers to it any more.
        unsafe {
            (*g).state
                .store(CANCELLED, core::sync::atomic::Ordering::Release)
        };
        // SAFETY: as above; forcing its coroutine to unwind runs on this thread, the only
        // one touching it; no M holds P 0.
        unsafe { crate::gfree::free(sh, &sh.ps[0], g) };
    }
    for &g in &keep {
        // SAFETY: a live G's `cancel` points into the join state its coroutine's closure
        // shares; the coroutine has not completed it (it sets `cancel` to None when it
        // returns) and never will now that the Ms are joined and the G is left, so the
        // state is alive and its share is ours.
        if let Some(c) = unsafe { (*g).cancel.get() } {
            // SAFETY: as said.
            unsafe { c.cancel() };
        }
    }
    keep.len()
}

/// Whether nobody else can touch `g` any more (claiming its wait if it is parked).
///
/// # Safety
/// `g` is a live G of a runtime whose Ms have stopped.
unsafe fn claim(g: &G) -> bool {
    // SAFETY: only the G itself touches its token cache, and it is not running.
    let token = unsafe { (*g.token.get()).as_ref() };
    match g.state() {
        // Parked through a token: the one its last `Token::for_current` cached.
        PARKED => token.is_some_and(|t| t.try_claim(crate::wait::CANCELLED)),
        RUNNABLE => token.is_none_or(|t| !Token::shared_elsewhere(t)),
        // Running, or between park and switch: not after the Ms stopped.
        _ => false,
    }
}
