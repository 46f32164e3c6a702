//! The remote-free word of a small span: how a thread that does not own a span gives an
//! object back without a lock (DESIGN.md, `free` step 2).
//!
//! One 64-bit atomic per span packs three things, so a single CAS both pushes the object
//! and observes the span's state:
//!
//! ```text
//!  63          47 46                     3 2   0
//! +--------------+------------------------+-----+
//! | count (17 b) | list head (8-aligned)  |state|
//! +--------------+------------------------+-----+
//! ```
//!
//! - `count` is the length of the list, so the owner learns how many objects came back
//!   without walking it;
//! - `state` is `NORMAL` or `FULL`. The owner sets `FULL` when it has nothing left to hand
//!   out from the span and moves it off its working lists; the first remote free after that
//!   flips the state back to `NORMAL` and, because it won that transition, is the one thread
//!   that pushes the span onto its owner's notification stack (mimalloc's "delayed free").
//!   The owner drains that stack on its next refill. A span is thus on the stack at most
//!   once per `FULL` period, and a full span nobody frees into costs nothing.
//!
//! User-space addresses on x86_64 and aarch64 (48-bit) fit below bit 47, and Tessera never
//! maps above that.

use core::ptr;
use core::sync::atomic::Ordering;

use tessera_span::Span;

const STATE_MASK: u64 = 0b111;
const COUNT_SHIFT: u32 = 47;
const HEAD_MASK: u64 = ((1 << COUNT_SHIFT) - 1) & !STATE_MASK;

/// Remote frees go straight onto the list.
pub(crate) const NORMAL: u64 = 0;
/// The owner parked the span; the next remote free must notify it.
pub(crate) const FULL: u64 = 1;

#[inline]
fn pack(head: *mut u8, count: u64, state: u64) -> u64 {
    debug_assert!(head as u64 & !HEAD_MASK == 0);
    (count << COUNT_SHIFT) | head as u64 | state
}

/// Number of objects on the remote list.
#[inline]
pub(crate) fn count(span: &Span) -> u32 {
    (span.remote.load(Ordering::Acquire) >> COUNT_SHIFT) as u32
}

/// Pushes `block` onto the span's remote list. Returns true when the span was `FULL`: the
/// caller then owes the owner a notification.
///
/// # Safety
/// `block` must be a free object of `span`, unreachable by anyone else.
#[inline]
pub(crate) unsafe fn push(span: &Span, block: *mut u8) -> bool {
    let mut old = span.remote.load(Ordering::Relaxed);
    loop {
        let head = (old & HEAD_MASK) as *mut u8;
        // SAFETY: the block is ours to write until the CAS publishes it.
        unsafe { block.cast::<*mut u8>().write(head) };
        let new = pack(block, (old >> COUNT_SHIFT) + 1, NORMAL);
        match span
            .remote
            .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return old & STATE_MASK == FULL,
            Err(seen) => old = seen,
        }
    }
}

/// Takes the whole remote list (head, length), leaving the state untouched.
#[inline]
pub(crate) fn take(span: &Span) -> (*mut u8, u32) {
    if span.remote.load(Ordering::Relaxed) & !STATE_MASK == 0 {
        return (ptr::null_mut(), 0);
    }
    let old = span.remote.fetch_and(STATE_MASK, Ordering::Acquire);
    ((old & HEAD_MASK) as *mut u8, (old >> COUNT_SHIFT) as u32)
}

/// Parks an empty-listed span: `NORMAL` with no remote objects becomes `FULL`. Fails when a
/// remote free slipped in; the caller takes the list and retries.
#[inline]
pub(crate) fn try_park(span: &Span) -> bool {
    span.remote
        .compare_exchange(
            pack(ptr::null_mut(), 0, NORMAL),
            pack(ptr::null_mut(), 0, FULL),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Owner side of "a local free un-parks the span": `FULL` → `NORMAL`. Fails when a remote
/// freer already did it (and so owes, or paid, the notification).
#[inline]
pub(crate) fn try_unpark(span: &Span) -> bool {
    let mut old = span.remote.load(Ordering::Relaxed);
    loop {
        if old & STATE_MASK != FULL {
            return false;
        }
        match span.remote.compare_exchange_weak(
            old,
            old & !STATE_MASK,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => old = seen,
        }
    }
}

/// Resets the word of a span the owner has just taken from the page heap.
#[inline]
pub(crate) fn reset(span: &Span) {
    span.remote
        .store(pack(ptr::null_mut(), 0, NORMAL), Ordering::Relaxed);
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    fn blocks() -> Vec<[u64; 2]> {
        vec![[0u64; 2]; 4]
    }

    #[test]
    fn push_take_counts() {
        let heap = tessera_span::PageHeap::new(0);
        let s = heap.alloc(1, tessera_span::SpanKind::Small).unwrap();
        // SAFETY: a fresh span record of ours.
        let span = unsafe { s.span.as_ref() };
        reset(span);
        let mut b = blocks();
        // SAFETY: the blocks are ours and unreachable by others.
        unsafe {
            assert!(!push(span, b[0].as_mut_ptr().cast()));
            assert!(!push(span, b[1].as_mut_ptr().cast()));
        }
        assert_eq!(count(span), 2);
        let (head, n) = take(span);
        assert_eq!(n, 2);
        assert_eq!(head, b[1].as_mut_ptr().cast());
        assert_eq!(count(span), 0);
        assert!(try_park(span));
        // SAFETY: as above.
        let notified = unsafe { push(span, b[2].as_mut_ptr().cast()) };
        assert!(notified, "first free after park notifies");
        // SAFETY: as above.
        assert!(!unsafe { push(span, b[3].as_mut_ptr().cast()) });
        assert!(!try_unpark(span));
        assert!(!try_park(span), "list not empty");
        let (_, n) = take(span);
        assert_eq!(n, 2);
        assert!(try_park(span));
        assert!(try_unpark(span));
        // SAFETY: the span holds nothing live.
        unsafe { heap.free(s.span) };
    }
}
