//! Counters for `tessera_stacks::stats()`: stacks live and pooled, address space reserved,
//! memory resident (measured with `mincore`, not estimated) and the VMAs the stacks cost.
//!
//! Counters are relaxed atomics bumped on the slow paths (slab reserve, slot carve) and on
//! acquire/release; `stats()` is a snapshot, not a consistent cut.

use std::sync::atomic::{AtomicUsize, Ordering};

use tessera_span::os;

use crate::config::GuardMode;
use crate::guard;
use crate::registry;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static POOLED: AtomicUsize = AtomicUsize::new(0);
static RESERVED: AtomicUsize = AtomicUsize::new(0);
static SLABS: AtomicUsize = AtomicUsize::new(0);
static CARVED: AtomicUsize = AtomicUsize::new(0);
static GUARD_VMAS: AtomicUsize = AtomicUsize::new(0);

/// A snapshot of the stack memory of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks handed out and not yet returned.
    pub live: usize,
    /// Free stacks sitting in caches and node pools.
    pub pooled: usize,
    /// Slots ever carved (live + pooled).
    pub carved: usize,
    /// Slabs reserved.
    pub slabs: usize,
    /// Address space reserved for slabs, in bytes.
    pub reserved_bytes: usize,
    /// Bytes of slab memory resident right now, counted page by page with `mincore`.
    pub resident_bytes: usize,
    /// VMAs the stacks add to the process: one per slab (adjacent slabs may merge, so this
    /// is an upper bound) plus two per `mprotect` guard.
    pub vmas: usize,
    /// Guard mechanism in use, if one could be chosen.
    pub guard: Option<GuardMode>,
}

pub(crate) fn slab_reserved(len: usize) {
    RESERVED.fetch_add(len, Ordering::Relaxed);
    SLABS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn slot_carved(vmas: usize) {
    CARVED.fetch_add(1, Ordering::Relaxed);
    GUARD_VMAS.fetch_add(vmas, Ordering::Relaxed);
}

/// A stack moved from the pool to a user.
#[inline]
pub(crate) fn handed_out(n: usize) {
    LIVE.fetch_add(n, Ordering::Relaxed);
}

/// A stack moved from a user back to the pool.
#[inline]
pub(crate) fn returned(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

/// `n` stacks entered (positive) or left a cache or pool.
#[inline]
pub(crate) fn pooled_add(n: usize) {
    POOLED.fetch_add(n, Ordering::Relaxed);
}

#[inline]
pub(crate) fn pooled_sub(n: usize) {
    POOLED.fetch_sub(n, Ordering::Relaxed);
}

/// Takes a snapshot; walks every slab with `mincore`, so it costs a syscall per 2 MiB.
pub fn stats() -> StackStats {
    let page = os::page_size();
    let resident_pages: usize = registry::slabs()
        .map(|s| {
            // SAFETY: registered slabs are never unmapped and are page-aligned, so the range
            // is mapped for the duration of the call; `mincore` only reads page tables.
            unsafe { os::resident_pages(s.start as *mut u8, s.len) }.unwrap_or(0)
        })
        .sum();
    let slabs = SLABS.load(Ordering::Relaxed);
    StackStats {
        live: LIVE.load(Ordering::Relaxed),
        pooled: POOLED.load(Ordering::Relaxed),
        carved: CARVED.load(Ordering::Relaxed),
        slabs,
        reserved_bytes: RESERVED.load(Ordering::Relaxed),
        resident_bytes: resident_pages * page,
        vmas: slabs + GUARD_VMAS.load(Ordering::Relaxed),
        guard: guard::mode().ok(),
    }
}
