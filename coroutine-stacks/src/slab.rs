//! Slabs: large reserved ranges carved into stack slots of one size class.
//!
//! ```text
//!  chunk start (64 MiB aligned)                                                 slab end
//!  | labels | guard | usable (class size) | guard | usable | ... | guard | usable |
//!           ^ slot 0 lo                    ^ slot 1 lo                           ^ last top
//! ```
//!
//! The label table holds one `u64` per slot: a number the stack's owner may set (a coroutine
//! id) for the overflow report to print. It is part of the slab mapping, so it is committed
//! page by page only where labels are written, and the signal handler can read it with one
//! load; slot 0's guard separates it from the stacks.
//!
//! A slab is reserved with `MAP_NORESERVE` (nothing resident), bound to its node, published
//! in the registry (for the overflow handler), then carved one slot at a time: carving a slot
//! installs its guard. Slots never change class and slabs are never unmapped, so a guard, once
//! installed, stays valid; idle memory goes back to the OS with `MADV_DONTNEED` instead
//! (`pool.rs`, `trim`). This is Go's `stackpool` span, minus the freeing of whole spans:
//! address space is cheap on 64-bit, and never unmapping keeps the registry lock-free.

use std::fmt;

use tessera_sys::mem;

use crate::class::{MAX_STACK_SIZE, SizeClass};
use crate::config::{self, GuardMode};
use crate::error::StackError;
use crate::guard;
use crate::node::{self, NodeId};
use crate::registry::{self, SlabId};
use crate::stats;

/// Bytes per slab at most: one registry chunk (64 MiB), so the registry maps an address to its
/// slab with one hash lookup. Large slabs also mean few registry entries and, with madvise
/// guards, one VMA per 64 MiB of stacks. Even the 8 MiB class gets seven slots.
const SLAB_BYTES: usize = registry::CHUNK;

// The widest guard still leaves the largest class several slots per slab (the label table
// takes a page or two, hence one slot of margin over the four `reserve` asserts).
const _: () = assert!(SLAB_BYTES / (MAX_STACK_SIZE + (config::MAX_GUARD_KB << 10)) >= 5);

/// Identifies a stack for error messages and the overflow report: slab and slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackId {
    slab: u32,
    index: u32,
}

impl StackId {
    pub(crate) fn new(slab: u32, index: u32) -> Self {
        Self { slab, index }
    }

    /// Index of the slab the stack lives in.
    pub fn slab(self) -> u32 {
        self.slab
    }

    /// Slot index inside its slab.
    pub fn index(self) -> u32 {
        self.index
    }
}

impl fmt::Display for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slab, self.index)
    }
}

/// A carved slot: its low end (start of the guard) and its id. The class is implied by the
/// free list it sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackSlot {
    pub(crate) lo: usize,
    pub(crate) id: StackId,
    /// Pages below the hot watermark may still be resident: the stack came back with its
    /// canary band intact, so it was not purged (see `shrink.rs`).
    pub(crate) maybe_cold_resident: bool,
    /// Address of the slot's word in its slab's label table.
    pub(crate) label: usize,
    /// A label was written and must be cleared when the stack comes back.
    pub(crate) labelled: bool,
}

/// Bytes per slot of a class: the guard plus the usable size. The guard is as wide for every
/// class (`guard.rs`), so it is most of a small stack's address space: 80 KiB per 16 KiB
/// stack with the default 64 KiB guard.
pub(crate) fn slot_size(class: SizeClass) -> usize {
    guard::guard_size() + class.size()
}

/// A slab being carved: slots below `next` have guards and belong to the pool.
#[derive(Debug)]
pub(crate) struct Slab {
    id: SlabId,
    /// Label table, at the start of the mapping.
    labels: usize,
    /// Low end of slot 0.
    start: usize,
    slot_size: usize,
    slots: usize,
    next: usize,
}

impl Slab {
    /// Reserves, binds and registers a new slab for `class` on `node`.
    pub(crate) fn reserve(class: SizeClass, node: NodeId) -> Result<Self, StackError> {
        let slot_size = slot_size(class);
        let header = (SLAB_BYTES / slot_size * 8).next_multiple_of(mem::page_size());
        let slots = (SLAB_BYTES - header) / slot_size;
        let len = header + slots * slot_size;
        debug_assert!(slots >= 4 && len <= SLAB_BYTES);
        let ptr = mem::reserve(len, registry::CHUNK).map_err(StackError::from_os)?;
        node::bind_slab(ptr.as_ptr(), len, node);
        let labels = ptr.as_ptr() as usize;
        let start = labels + header;
        let registered = registry::register(
            start,
            slots * slot_size,
            slot_size,
            guard::guard_size(),
            class,
            labels,
        );
        let Some(id) = registered else {
            // SAFETY: the range was reserved above and nothing has been handed out from it.
            unsafe { mem::release(ptr.as_ptr(), len) };
            return Err(StackError::RegistryFull);
        };
        stats::slab_reserved(len);
        Ok(Self {
            id,
            labels,
            start,
            slot_size,
            slots,
            next: 0,
        })
    }

    /// Whether every slot has been carved.
    pub(crate) fn is_full(&self) -> bool {
        self.next == self.slots
    }

    /// Carves the next slot, installing its guard. On failure (the kernel refused the guard,
    /// typically at `vm.max_map_count`) the slot stays uncarved and can be retried later.
    pub(crate) fn carve(&mut self, mode: GuardMode) -> Result<StackSlot, StackError> {
        debug_assert!(!self.is_full());
        let lo = self.start + self.next * self.slot_size;
        // SAFETY: `lo` is the page-aligned low end of a slot inside this slab (`next` is below
        // `slots`), and slots at or above `next` have never been handed out.
        unsafe { guard::install(lo, mode) }.map_err(StackError::from_os)?;
        let id = StackId::new(self.id.0, self.next as u32);
        self.next += 1;
        stats::slot_carved(guard::vmas_per_guard(mode));
        Ok(StackSlot {
            lo,
            id,
            maybe_cold_resident: false,
            label: self.labels + (self.next - 1) * 8,
            labelled: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carved_slots_tile_the_slab_and_are_registered() {
        let class = SizeClass::for_size(32 << 10).unwrap();
        let mode = guard::mode().unwrap();
        let mut slab = Slab::reserve(class, NodeId::ZERO).unwrap();
        let a = slab.carve(mode).unwrap();
        let b = slab.carve(mode).unwrap();
        assert_eq!(b.lo - a.lo, slot_size(class));
        assert_eq!(a.id.index() + 1, b.id.index());
        let hit = registry::lookup(b.lo).unwrap();
        assert!(hit.in_guard);
        assert_eq!(hit.slot_lo, b.lo);
        assert_eq!(hit.slab.class, class);
        let hit = registry::lookup(b.lo + guard::guard_size()).unwrap();
        assert!(!hit.in_guard);
        assert_eq!(hit.top() - hit.usable_lo(), class.size());
    }

    #[test]
    fn big_classes_still_get_several_slots() {
        let class = SizeClass::for_size(8 << 20).unwrap();
        assert!(SLAB_BYTES / slot_size(class) >= 4);
        let mut slab = Slab::reserve(class, NodeId::ZERO).unwrap();
        assert_eq!(slab.labels % registry::CHUNK, 0);
        assert_eq!(
            slab.start >> registry::CHUNK_SHIFT,
            slab.labels >> registry::CHUNK_SHIFT
        );
        let slot = slab.carve(guard::mode().unwrap()).unwrap();
        assert_eq!(registry::lookup(slot.lo).unwrap().slab.class, class);
    }
}
