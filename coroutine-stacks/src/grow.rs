//! Growing past the reserved size, and knowing how much stack is left.
//!
//! A stack grows physically by page faults up to its reserved size; beyond that, Go would copy
//! it to a bigger one, which Rust cannot do (pointers into the stack). `maybe_grow` is the
//! segmented answer, as in the `stacker` crate: when fewer than `red_zone` bytes remain, the
//! closure runs on an extra segment from the pool, and the segment goes back to the pool when
//! the closure returns.
//!
//! `remaining_stack` must know the bounds of the stack it runs on. Three cases:
//! - on a tessera stack (a pooled stack or a growth segment): the slab registry maps the stack
//!   pointer to its slot, so the answer holds even if the coroutine migrated to another
//!   thread since the last call;
//! - on a thread's own stack: bounds from `pthread_getattr_np`, cached per thread;
//! - anywhere else (a stack from another library): unknown, and `maybe_grow` then grows.
//!
//! The last bounds found are kept in a thread-local as a hint, checked against the current
//! stack pointer before use, so a hint left by another coroutine is never trusted wrongly:
//! stack slots never change size, so a range that contains the stack pointer is its stack.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use crate::registry;
use crate::trampoline;

/// A stack's usable range `lo..hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bounds {
    lo: usize,
    hi: usize,
}

impl Bounds {
    const EMPTY: Bounds = Bounds { lo: 0, hi: 0 };

    fn contains(self, sp: usize) -> bool {
        self.lo < sp && sp <= self.hi
    }
}

thread_local! {
    /// The last bounds that matched the stack pointer on this thread.
    static HINT: Cell<Bounds> = const { Cell::new(Bounds::EMPTY) };
    /// This thread's own stack, read once.
    static THREAD: Cell<Option<Bounds>> = const { Cell::new(None) };
}

/// Bytes left below the current stack pointer before the guard, or `None` when the current
/// stack is neither a tessera stack nor the thread's own.
#[inline(never)]
pub fn remaining_stack() -> Option<usize> {
    let sp = trampoline::stack_pointer();
    bounds_of(sp).map(|b| sp - b.lo)
}

// Not inlined, like every function here that touches a thread-local: after a coroutine switch
// the thread may be another one, so the thread-local's address must be computed afresh.
#[inline(never)]
fn bounds_of(sp: usize) -> Option<Bounds> {
    let hint = HINT.with(Cell::get);
    if hint.contains(sp) {
        return Some(hint);
    }
    let found = match registry::lookup(sp) {
        Some(hit) if !hit.in_guard => Some(Bounds {
            lo: hit.usable_lo(),
            hi: hit.top(),
        }),
        _ => thread_bounds().filter(|b| b.contains(sp)),
    }?;
    HINT.with(|h| h.set(found));
    Some(found)
}

fn thread_bounds() -> Option<Bounds> {
    if let Some(b) = THREAD.with(Cell::get) {
        return Some(b);
    }
    let b = query_thread_bounds()?;
    THREAD.with(|t| t.set(Some(b)));
    Some(b)
}

/// The calling thread's stack from `pthread_getattr_np` (`tessera_sys::thread::stack`), guard
/// excluded.
fn query_thread_bounds() -> Option<Bounds> {
    let stack = tessera_sys::thread::stack()?;
    // glibc reports a thread's stack including its guard at the low end; skipping the guard
    // is also right for the main thread, whose reported guard size is 0.
    let lo = stack.base + stack.guard;
    Some(Bounds {
        lo,
        hi: stack.base + stack.size,
    })
}

/// Runs `f` here if at least `red_zone` bytes of stack remain, else on a fresh segment of at
/// least `size` bytes from the pool (returned to the pool when `f` returns or unwinds).
///
/// Works on tessera stacks and on ordinary threads; on a stack whose bounds are unknown it
/// always takes a segment. Panics in `f` propagate to the caller.
///
/// # Panics
/// When no segment can be had (the pool's `StackError`, e.g. at `vm.max_map_count`): there is
/// no stack left to run `f` on.
pub fn maybe_grow<R, F: FnOnce() -> R>(red_zone: usize, size: usize, f: F) -> R {
    match remaining_stack() {
        Some(left) if left >= red_zone => f(),
        _ => grow(size, f),
    }
}

/// Runs `f` on a fresh segment of at least `size` bytes, unconditionally.
///
/// # Panics
/// As [`maybe_grow`].
pub fn grow<R, F: FnOnce() -> R>(size: usize, f: F) -> R {
    let segment = match crate::acquire(size) {
        Ok(s) => s,
        Err(e) => panic!("tessera_stacks::maybe_grow: no stack segment: {e}"),
    };
    let mut f = Some(f);
    let mut out: Option<std::thread::Result<R>> = None;
    let mut call = || {
        let f = f.take().expect("called once");
        out = Some(panic::catch_unwind(AssertUnwindSafe(f)));
    };
    let mut call: &mut dyn FnMut() = &mut call;
    // SAFETY: `segment` is a guarded stack owned here until after the call returns; its base
    // is 16-byte aligned. `enter` catches nothing itself, but the closure it calls wraps `f` in
    // `catch_unwind`, so no unwind reaches the `extern "C"` boundary.
    unsafe {
        trampoline::call_on_stack(
            (&mut call as *mut &mut dyn FnMut()).cast(),
            enter,
            segment.base(),
        )
    };
    drop(segment);
    match out.expect("the segment ran the closure") {
        Ok(r) => r,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Entry point on the segment: calls the `&mut dyn FnMut()` that `arg` points to.
///
/// # Safety
/// `arg` must point to a live `&mut dyn FnMut()` that does not unwind.
unsafe extern "C" fn enter(arg: *mut u8) {
    // SAFETY: `grow` passes a pointer to its `&mut dyn FnMut()`, alive for the whole call.
    let call = unsafe { &mut *arg.cast::<&mut dyn FnMut()>() };
    call();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_stack_is_known() {
        let left = remaining_stack().expect("a std thread's stack has known bounds");
        assert!(left > 4096);
    }

    #[inline(never)]
    fn left_under_a_big_frame() -> usize {
        let buf = std::hint::black_box([0u8; 8192]);
        let r = remaining_stack().unwrap();
        std::hint::black_box(&buf);
        r
    }

    #[test]
    fn deeper_frame_has_less_left() {
        let outer = remaining_stack().unwrap();
        let inner = left_under_a_big_frame();
        assert!(inner + 8192 <= outer, "outer {outer}, inner {inner}");
    }

    #[test]
    fn grow_runs_on_a_segment_and_returns_the_value() {
        let before = remaining_stack().unwrap();
        let on_segment = grow(64 << 10, || remaining_stack().unwrap());
        assert!(on_segment <= 64 << 10, "segment has {on_segment} left");
        assert!(on_segment > 32 << 10);
        assert!(remaining_stack().unwrap().abs_diff(before) < 4096);
    }

    #[test]
    fn panics_cross_the_segment() {
        let r = panic::catch_unwind(|| grow(1 << 20, || panic!("boom on segment")));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom on segment"));
    }
}
