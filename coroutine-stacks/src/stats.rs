//! Counters for `tessera_stacks::stats()`: stacks live and pooled, address space reserved,
//! memory resident (measured with `mincore`, not estimated) and the VMAs the stacks cost.
//!
//! Counters are relaxed atomics bumped on the slow paths (slab reserve, slot carve), plus one
//! count of live stacks bumped on every acquire and release. That one is striped: each cache
//! bumps its own cache-line-sized stripe, so processors handing out stacks at the same time do
//! not bounce one line between them. Every carved slot is either live or pooled, so the pooled
//! count needs no counter of its own. `stats()` is a snapshot, not a consistent cut.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use tessera_sys::mem;

use crate::config::GuardMode;
use crate::guard;
use crate::registry;

/// One stripe of the live count, alone on its cache line. Signed: a stack can be acquired
/// through one stripe and released through another.
#[repr(align(64))]
struct Stripe(AtomicIsize);

const STRIPES: usize = 16;
static LIVE: [Stripe; STRIPES] = [const { Stripe(AtomicIsize::new(0)) }; STRIPES];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
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
    /// Address space reserved for slabs, in bytes, guards included.
    pub reserved_bytes: usize,
    /// Bytes of slab memory resident right now, counted page by page with `mincore`.
    pub resident_bytes: usize,
    /// VMAs the stacks add to the process: one per slab (adjacent slabs may merge, so this
    /// is an upper bound) plus two per `mprotect` guard.
    pub vmas: usize,
    /// Guard mechanism in use, if one could be chosen.
    pub guard: Option<GuardMode>,
    /// Width of the guard below every stack, in bytes (`TESSERA_STACK_GUARD_KB`). It costs
    /// address space (counted in `reserved_bytes`), never resident memory.
    pub guard_bytes: usize,
}

pub(crate) fn slab_reserved(len: usize) {
    RESERVED.fetch_add(len, Ordering::Relaxed);
    SLABS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn slot_carved(vmas: usize) {
    CARVED.fetch_add(1, Ordering::Relaxed);
    GUARD_VMAS.fetch_add(vmas, Ordering::Relaxed);
}

/// A stripe of the live count for a new cache, round robin.
pub(crate) fn new_stripe() -> usize {
    NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES
}

/// A stack moved from the pool to a user.
#[inline]
pub(crate) fn handed_out(stripe: usize) {
    LIVE[stripe % STRIPES].0.fetch_add(1, Ordering::Relaxed);
}

/// A stack moved from a user back to the pool.
#[inline]
pub(crate) fn returned(stripe: usize) {
    LIVE[stripe % STRIPES].0.fetch_sub(1, Ordering::Relaxed);
}

/// Takes a snapshot; walks every slab with `mincore`, so it costs a syscall per 2 MiB.
pub fn stats() -> StackStats {
    let page = mem::page_size();
    let resident_pages: usize = registry::slabs()
        .map(|s| {
            // SAFETY: registered slabs are never unmapped and are page-aligned, so the range
            // is mapped for the duration of the call; `mincore` only reads page tables.
            unsafe { mem::resident_pages(s.start as *mut u8, s.len) }.unwrap_or(0)
        })
        .sum();
    let slabs = SLABS.load(Ordering::Relaxed);
    let live = LIVE
        .iter()
        .map(|s| s.0.load(Ordering::Relaxed))
        .sum::<isize>()
        .max(0) as usize;
    let carved = CARVED.load(Ordering::Relaxed);
    StackStats {
        live,
        pooled: carved.saturating_sub(live),
        carved,
        slabs,
        reserved_bytes: RESERVED.load(Ordering::Relaxed),
        resident_bytes: resident_pages * page,
        vmas: slabs + GUARD_VMAS.load(Ordering::Relaxed),
        guard: guard::mode().ok(),
        guard_bytes: guard::guard_size(),
    }
}
