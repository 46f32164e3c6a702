//! Giving stack memory back: the hot watermark on release, and full trimming of idle stacks.
//!
//! A coroutine that once recursed deeply leaves its stack resident all the way down. Go
//! shrinks such stacks by copying them during GC; Rust cannot move a stack, so the pool does
//! the next best thing when a stack comes back: everything more than `TESSERA_STACK_HOT_KB`
//! below the top is dropped with `MADV_DONTNEED` (it reads as zero if touched again). The
//! pages at the top stay, so the next coroutine reuses a warm stack without a page fault.
//! `trim` drops the hot pages too, for stacks that sit idle.
//!
//! The catch is cost: `MADV_DONTNEED` costs about 0.6 µs here even when nothing below the
//! watermark is resident (page-table walk, TLB gather, LRU drain), ten times the rest of a
//! pool round trip. Most coroutines never leave their top page, so the pool first asks
//! whether this one did, without a syscall:
//!
//! 1. When a stack goes into a cache, a *canary band* is written at the bottom of its top
//!    page: `BAND_WORDS` words, one per cache line, each a value derived from the slot's
//!    address. The top page stays resident (it is within the watermark), so this is free.
//! 2. When it comes back, the band is read. Intact: the coroutine stayed within its top page,
//!    so no page below it was touched; no syscall. Any word changed (or a fresh or trimmed
//!    stack, whose band reads as zero): the cold range is purged.
//! 3. A frame that spanned the band without writing one of its words (a big uninitialised
//!    buffer) could hide a deeper excursion. Such stacks are marked `maybe_cold_resident` and
//!    purged when they leave the processor cache for the node pool, or on `trim`: the memory a
//!    miss can hold is bounded by the cache size, and the node pools hold only shrunk stacks.
//!
//! With a watermark below one page there is no band (it would lie in the purged range): every
//! release purges.

use tessera_sys::mem::{self, PurgeAdvice};

use crate::class::SizeClass;
use crate::config;
use crate::guard;
use crate::slab::StackSlot;

/// Words in the canary band, one every `BAND_STRIDE` bytes.
const BAND_WORDS: usize = 8;
const BAND_STRIDE: usize = 64;
/// Mixed into every canary, so that zero-filled or copied memory does not match.
const CANARY_SEED: usize = 0x7e55_e7a5_7ac4_ca9a;

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

fn top(slot: &StackSlot, class: SizeClass) -> usize {
    slot.lo + guard::guard_size() + class.size()
}

/// Address of canary `i`: the band starts at the lowest address of the top page.
fn band_word(slot: &StackSlot, class: SizeClass, i: usize) -> *mut usize {
    (top(slot, class) - mem::page_size() + i * BAND_STRIDE) as *mut usize
}

fn canary(slot: &StackSlot, i: usize) -> usize {
    (slot.lo ^ CANARY_SEED).rotate_left(7 * i as u32 + 1)
}

/// Whether the band is as `write_band` left it.
///
/// # Safety
/// The slot must be carved and free (nobody runs on it).
unsafe fn band_intact(slot: &StackSlot, class: SizeClass) -> bool {
    (0..BAND_WORDS).all(|i| {
        // SAFETY: the word lies in the top page of the slot's usable range, mapped readable
        // and writable, and nobody else uses the free stack. Volatile: the last writer was
        // the coroutine's code, through pointers the compiler cannot see.
        unsafe { band_word(slot, class, i).read_volatile() == canary(slot, i) }
    })
}

/// # Safety
/// As for [`band_intact`].
unsafe fn write_band(slot: &StackSlot, class: SizeClass) {
    for i in 0..BAND_WORDS {
        // SAFETY: as in `band_intact`.
        unsafe { band_word(slot, class, i).write_volatile(canary(slot, i)) };
    }
}

/// # Safety
/// The slot must be carved and free.
unsafe fn purge_cold(slot: &mut StackSlot, class: SizeClass, hot_bytes: usize) {
    if let Some((start, len)) = cold_range(*slot, class, hot_bytes) {
        // SAFETY: the range is the lower part of the slot's usable memory, inside a slab we
        // reserved; per the caller no frame lives there. Failure only means the pages stay
        // resident, so it is ignored.
        let _ = unsafe { mem::purge(start as *mut u8, len, PurgeAdvice::DontNeed) };
    }
    slot.maybe_cold_resident = false;
}

/// Shrinks a stack that has just come back from its user (see the file comment).
///
/// # Safety
/// `slot` must be a carved slot of `class` that nobody runs on any more.
pub(crate) unsafe fn on_release(slot: &mut StackSlot, class: SizeClass) {
    let hot_bytes = config::get().hot_bytes;
    if hot_bytes < mem::page_size() {
        // SAFETY: forwarded from the caller.
        unsafe { purge_cold(slot, class, hot_bytes) };
        return;
    }
    if class.size() <= hot_bytes {
        return; // nothing lies below the watermark
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        if band_intact(slot, class) {
            slot.maybe_cold_resident = true;
        } else {
            purge_cold(slot, class, hot_bytes);
            write_band(slot, class);
        }
    }
}

/// Purges a stack whose release skipped the syscall, before it moves to a node pool.
///
/// # Safety
/// As for [`on_release`].
pub(crate) unsafe fn before_pool(slot: &mut StackSlot, class: SizeClass) {
    if slot.maybe_cold_resident {
        // SAFETY: forwarded from the caller.
        unsafe { purge_cold(slot, class, config::get().hot_bytes) };
    }
}

/// Drops every usable page of a free stack (the guard is left alone). The band goes with the
/// top page, so the next release purges.
///
/// # Safety
/// As for [`on_release`].
pub(crate) unsafe fn release_all(slot: &mut StackSlot, class: SizeClass) {
    let start = slot.lo + guard::guard_size();
    // SAFETY: the slot's usable range is ours and unused, per the caller.
    let _ = unsafe { mem::purge(start as *mut u8, class.size(), PurgeAdvice::DontNeed) };
    slot.maybe_cold_resident = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;
    use crate::slab::{Slab, StackId};

    #[test]
    fn cold_range_is_below_the_watermark() {
        let g = guard::guard_size();
        let slot = StackSlot {
            lo: 0x10_0000,
            id: StackId::new(0, 0),
            maybe_cold_resident: false,
            label: 0,
            labelled: false,
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

    fn resident(slot: &StackSlot, class: SizeClass) -> usize {
        let start = slot.lo + guard::guard_size();
        // SAFETY: the slot lies in a registered slab; mincore only reads page tables.
        unsafe { mem::resident_pages(start as *mut u8, class.size()) }.unwrap()
    }

    #[test]
    fn band_decides_whether_to_purge() {
        let page = mem::page_size();
        let class = SizeClass::for_size(64 << 10).unwrap();
        let mut slab = Slab::reserve(class, NodeId::ZERO).unwrap();
        let mut slot = slab.carve(guard::mode().unwrap()).unwrap();
        let hot = config::get().hot_bytes;
        assert!(hot >= page, "test assumes the default watermark");
        let t = top(&slot, class);
        let touch = |addr: usize| {
            // SAFETY: the slot is ours alone (carved above, never handed out) and every
            // address passed lies in its usable range.
            unsafe { (addr as *mut u8).write_volatile(1) }
        };

        // Fresh stack: no band yet, so the first release purges and writes the band.
        touch(t - 1);
        touch(t - 3 * page);
        // SAFETY: the slot is free.
        unsafe { on_release(&mut slot, class) };
        assert!(!slot.maybe_cold_resident);
        assert_eq!(
            resident(&slot, class),
            1,
            "only the top page (holding the band) is left"
        );

        // A shallow user leaves the band alone: no purge needed, and none is done.
        touch(t - 100);
        // SAFETY: the slot is free.
        unsafe { on_release(&mut slot, class) };
        assert!(
            slot.maybe_cold_resident,
            "skipped the syscall, so marked for later"
        );
        assert_eq!(resident(&slot, class), 1);

        // A deep user that wrote over the band is purged at once.
        touch(t - page + 3 * BAND_STRIDE);
        touch(t - page - 8);
        touch(t - 5 * page);
        // SAFETY: the slot is free.
        unsafe { on_release(&mut slot, class) };
        assert!(!slot.maybe_cold_resident);
        assert_eq!(resident(&slot, class), hot / page);

        // The miss case: a page below was touched without the band changing. The release
        // cannot see it; leaving the cache for the pool purges it.
        touch(t - 7 * page);
        // SAFETY: the slot is free.
        unsafe { on_release(&mut slot, class) };
        assert_eq!(resident(&slot, class), hot / page + 1);
        // SAFETY: the slot is free.
        unsafe { before_pool(&mut slot, class) };
        assert_eq!(resident(&slot, class), hot / page);

        // Trim drops everything; the band is gone with it, so the next release purges.
        // SAFETY: the slot is free.
        unsafe { release_all(&mut slot, class) };
        assert_eq!(resident(&slot, class), 0);
        touch(t - 1);
        touch(t - 6 * page);
        // SAFETY: the slot is free.
        unsafe { on_release(&mut slot, class) };
        assert_eq!(resident(&slot, class), 1);
    }
}
