//! Giving stack memory back: the hot watermark on release, and full trimming of idle stacks.
//!
//! A coroutine that once recursed deeply leaves its stack resident all the way down. Go
//! shrinks such stacks by copying them during GC; Rust cannot move a stack, so the pool does
//! the next best thing when a stack comes back: everything more than `TESSERA_STACK_HOT_KB`
//! below the top is dropped with `MADV_DONTNEED` (it reads as zero if touched again). The
//! pages at the top stay, so the common short-lived coroutine reuses a warm stack without a
//! page fault. `trim` drops the hot pages too, for stacks that have sat idle in a pool.
//!
//! `madvise` over pages that are not resident is cheap (a page-table walk that finds
//! nothing); it is still a syscall, so classes no bigger than the watermark skip it.

use tessera_span::os::{self, PurgeAdvice};

use crate::class::SizeClass;
use crate::config;
use crate::guard;
use crate::slab::StackSlot;

/// The part of a free stack that the hot watermark gives back: `(start, len)`, or `None` when
/// the whole stack is within the watermark.
pub(crate) fn cold_range(
    slot: StackSlot,
    class: SizeClass,
    hot_bytes: usize,
) -> Option<(usize, usize)> {
    let usable = class.size();
    if usable <= hot_bytes {
        return None;
    }
    Some((slot.lo + guard::guard_size(), usable - hot_bytes))
}

/// Drops the pages of a free stack below the hot watermark.
///
/// # Safety
/// `slot` must be a carved slot of `class` that nobody is running on (it is being returned).
pub(crate) unsafe fn release_cold(slot: StackSlot, class: SizeClass) {
    if let Some((start, len)) = cold_range(slot, class, config::get().hot_bytes) {
        // SAFETY: the range is the lower part of the slot's usable memory, inside a slab we
        // reserved; per the caller no frame lives there any more. Failure only means the pages
        // stay resident, so it is ignored.
        let _ = unsafe { os::purge(start as *mut u8, len, PurgeAdvice::DontNeed) };
    }
}

/// Drops every usable page of a free stack (the guard is left alone).
///
/// # Safety
/// As for [`release_cold`].
pub(crate) unsafe fn release_all(slot: StackSlot, class: SizeClass) {
    let start = slot.lo + guard::guard_size();
    // SAFETY: the slot's usable range is ours and unused, per the caller.
    let _ = unsafe { os::purge(start as *mut u8, class.size(), PurgeAdvice::DontNeed) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::StackId;

    #[test]
    fn cold_range_is_below_the_watermark() {
        let g = guard::guard_size();
        let slot = StackSlot {
            lo: 0x10_0000,
            id: StackId::new(0, 0),
        };
        let c16 = SizeClass::for_size(16 << 10).unwrap();
        let c64 = SizeClass::for_size(64 << 10).unwrap();
        assert_eq!(cold_range(slot, c16, 16 << 10), None);
        assert_eq!(cold_range(slot, c16, 8 << 10), Some((slot.lo + g, 8 << 10)));
        let (start, len) = cold_range(slot, c64, 8 << 10).unwrap();
        assert_eq!(
            start + len + (8 << 10),
            slot.lo + g + (64 << 10),
            "ends at top - hot"
        );
        assert_eq!(cold_range(slot, c64, 0), Some((slot.lo + g, 64 << 10)));
    }
}
