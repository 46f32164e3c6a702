//! Software prefetch hints for the records and stack lines a spawn or a switch is about to
//! touch (issue #17): with 10^5–10^6 coroutines alive, every G's record and stack top have
//! left the cache by the time their turn comes, and each demand miss stalls the spawn or
//! the switch. A prefetch issued one G ahead lets the miss run while the current G is
//! being handled. A prefetch is a hint: it never faults and changes no value, so it may
//! name any address, mapped or not.

use crate::coroutine::G;

/// Bytes of a cache line.
const LINE: usize = 64;

/// Asks for the cache line holding `addr`.
#[inline(always)]
pub(crate) fn line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `prefetcht0` only needs SSE, which every x86_64 has; it reads nothing
        // architecturally and cannot fault, whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                addr as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Asks for the first `lines` lines of the G record at `g` (an address only: nothing is
/// read): the ones a spawn or a run touches (coroutine.rs, `G`'s line plan).
#[inline(always)]
pub(crate) fn record_lines(g: *const G, lines: usize) {
    debug_assert!(lines * LINE <= size_of::<G>());
    let g = g as usize;
    // A constant trip count at every call, unrolled.
    for i in 0..lines {
        line(g + i * LINE);
    }
}
