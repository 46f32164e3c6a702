//! The calling thread's M, and through it the running G, the P it holds and its runtime;
//! and the M's random numbers (steal order, `select!`).
//!
//! Migration: every thread-local read here goes through `current_m`, which is
//! `#[inline(never)]`, so code that runs inside a coroutine recomputes the thread-local
//! address after any switch (ARCHITECTURE.md#migration; llvm-project#98479). The accessors
//! built on it (`current_g`, `current_p`) read no thread-local themselves, so they may be
//! inlined: a user's build (no LTO, 16 codegen units) does not inline across units and
//! crates what is not `#[inline]`.

use core::cell::Cell;
use core::ptr;
use std::sync::Arc;

use super::{MCtx, NO_P};
use crate::coroutine::GRef;
use crate::processor::P;
use crate::runtime::Shared;

thread_local! {
    pub(super) static CURRENT: Cell<*const MCtx> = const { Cell::new(ptr::null()) };
}

/// The calling thread's M, or null. Never inlined: see "Migration" above.
#[inline(never)]
pub(crate) fn current_m() -> *const MCtx {
    CURRENT.with(Cell::get)
}

/// The G running on the calling thread, or null outside a coroutine.
#[inline]
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
#[inline]
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

pub(super) fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&raw const local as u64).rotate_left(32)) | 1
}

/// Notes that the allocator cache of the calling thread's P now carries `set` (a coroutine
/// changed its labels: `labels::with`), so that the next switch compares against it.
pub(crate) fn note_labels(set: tessera::profile::LabelSet) {
    let m = current_m();
    if m.is_null() {
        return;
    }
    // SAFETY: as in `current_p`: the MCtx lives for this M's loop, and the P it holds is
    // touched here by its owner only.
    unsafe {
        let m = &*m;
        if m.p.get() != NO_P {
            m.shared.ps[m.p.get()].labels.set(set);
        }
    }
}
