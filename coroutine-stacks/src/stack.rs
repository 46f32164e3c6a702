//! `PooledStack`: one stack handed out by the pool, and what a runtime needs to switch to it.
//!
//! ```text
//!   limit (lowest)      guard.end                                   base (highest)
//!   |<--- guard --->|<----------- usable (class size) ------------>|
//! ```
//!
//! `base` is the initial stack pointer: page-aligned, so 16-byte aligned as every ABI here
//! wants. Dropping the value gives the stack back to the calling thread's default cache.

use std::mem::ManuallyDrop;
use std::ops::Range;

use tessera_sys::mem;

use crate::cache;
use crate::class::SizeClass;
use crate::guard;
use crate::node::NodeId;
use crate::slab::{StackId, StackSlot};

/// The addresses of a stack, for runtimes that switch contexts themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackBounds {
    /// Highest address, exclusive: the initial stack pointer (16-byte aligned).
    pub base: usize,
    /// Lowest address of the usable part (just above the guard).
    pub usable_lo: usize,
    /// The guard region (`TESSERA_STACK_GUARD_KB`, 64 KiB by default); `guard.start` is the
    /// lowest address of the whole stack.
    pub guard: Range<usize>,
}

/// A guarded, lazily committed stack from the pool; returns to the pool when dropped.
#[derive(Debug)]
pub struct PooledStack {
    slot: StackSlot,
    class: SizeClass,
    node: NodeId,
}

impl PooledStack {
    pub(crate) fn new(slot: StackSlot, class: SizeClass, node: NodeId) -> Self {
        Self { slot, class, node }
    }

    pub(crate) fn parts(&self) -> (StackSlot, SizeClass, NodeId) {
        (self.slot, self.class, self.node)
    }

    /// Highest address, exclusive: the initial stack pointer. 16-byte aligned.
    #[inline]
    pub fn base(&self) -> usize {
        self.slot.lo + guard::guard_size() + self.class.size()
    }

    /// Lowest address of the stack, guard included.
    #[inline]
    pub fn limit(&self) -> usize {
        self.slot.lo
    }

    /// The guard range at the low end: every byte of it faults, and a fault there is reported
    /// as this stack's overflow.
    pub fn guard(&self) -> Range<usize> {
        self.slot.lo..self.slot.lo + guard::guard_size()
    }

    /// Base, usable low end and guard in one value.
    pub fn bounds(&self) -> StackBounds {
        StackBounds {
            base: self.base(),
            usable_lo: self.guard().end,
            guard: self.guard(),
        }
    }

    /// Sets the number the overflow report prints for this stack, e.g. the id of the
    /// coroutine about to run on it (0: none). Cleared when the stack returns to the pool.
    pub fn set_label(&mut self, label: u64) {
        // SAFETY: `slot.label` is this slot's word in its slab's label table, mapped readable
        // and writable for the life of the process and written only by the stack's owner.
        unsafe { (self.slot.label as *mut u64).write_volatile(label) };
        self.slot.labelled = true;
    }

    /// The label set with [`set_label`](Self::set_label), 0 if none.
    pub fn label(&self) -> u64 {
        // SAFETY: as in `set_label`; a table page never written reads as zero.
        unsafe { (self.slot.label as *const u64).read_volatile() }
    }

    /// Usable bytes (the size class, at least what was asked for).
    pub fn usable_size(&self) -> usize {
        self.class.size()
    }

    /// The size class.
    pub fn class(&self) -> SizeClass {
        self.class
    }

    /// Identifies the stack in reports (slab.slot).
    pub fn id(&self) -> StackId {
        self.slot.id
    }

    /// The NUMA node the stack's memory is bound to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Bytes of this stack resident right now (`mincore`).
    pub fn resident_bytes(&self) -> usize {
        let start = self.guard().end;
        // SAFETY: the usable range lies in a registered slab, which is never unmapped; mincore
        // only reads the page tables.
        let pages = unsafe { mem::resident_pages(start as *mut u8, self.class.size()) };
        pages.unwrap_or(0) * mem::page_size()
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        let me = ManuallyDrop::new(Self {
            slot: self.slot,
            class: self.class,
            node: self.node,
        });
        let (slot, class, node) = me.parts();
        let returned = cache::with_default(|c| c.release(ManuallyDrop::into_inner(me)));
        if returned.is_none() {
            cache::release_to_pool(slot, class, node);
        }
    }
}

#[cfg(feature = "corosensei")]
// SAFETY: `base` and `limit` are page-aligned (so aligned to `STACK_ALIGNMENT`); the range
// between them is a slot this value owns exclusively until it is dropped, with a guard region
// at the low end installed when the slot was carved and never removed, and at least 16 KiB
// of usable memory (more than `MIN_STACK_SIZE`). Moving the value does not move the memory.
unsafe impl corosensei::stack::Stack for PooledStack {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(PooledStack::base(self))
            .expect("stack base is not null")
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(PooledStack::limit(self))
            .expect("stack limit is not null")
    }
}
