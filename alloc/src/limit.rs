//! Memory limits (issue #13): a soft limit over which the background purger returns every
//! dirty page and takes back the caches' empty spans, and a hard limit that committed memory
//! never crosses: an allocation that would cross it returns null (C's `malloc` sets
//! `ENOMEM`; Rust's `GlobalAlloc` reports it to `handle_alloc_error`). Freeing below the limit
//! makes allocation work again. The counting is `tessera_span::commit`'s.
//!
//! Set from the environment at start-up (`TESSERA_MEMORY_LIMIT`, `TESSERA_MEMORY_SOFT_LIMIT`,
//! else a soft limit of 90% of the cgroup's memory limit, `config.rs`) or at run time with
//! [`set_memory_limit`] and [`set_soft_memory_limit`].

use core::sync::atomic::{AtomicBool, Ordering};

use tessera_span::commit::{self, UNLIMITED};

use crate::{node, pool};

/// The soft limit was set explicitly (not derived from the hard one).
static SOFT_SET: AtomicBool = AtomicBool::new(false);

/// The share of a hard limit (or of the cgroup's limit) the soft limit defaults to, in
/// percent: enough headroom that the purger's eager pass runs before allocations fail.
pub(crate) const SOFT_SHARE_PERCENT: usize = 90;

fn share(limit: usize) -> usize {
    if limit == UNLIMITED {
        UNLIMITED
    } else {
        limit / 100 * SOFT_SHARE_PERCENT
    }
}

/// The limits and the count they apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Over this, free memory goes back to the OS at once (`None`: no soft limit).
    pub soft: Option<usize>,
    /// Allocations that would cross this fail (`None`: no hard limit).
    pub hard: Option<usize>,
    /// Bytes committed now: what the limits are compared with (spans in use, dirty free
    /// pages, huge blocks, metadata; not memory already returned to the OS).
    pub committed: usize,
}

/// Sets the hard memory limit in bytes (`None` removes it). Unless a soft limit was set
/// explicitly, the soft limit follows at 90% of it.
///
/// Allocations that would take committed memory over the limit return null; the limit
/// takes effect for every later allocation, and memory already committed above it stays
/// (free it to get under).
pub fn set_memory_limit(hard: Option<usize>) {
    let hard = hard.unwrap_or(UNLIMITED);
    let (soft, _) = commit::limits();
    let soft = if SOFT_SET.load(Ordering::Relaxed) {
        soft
    } else {
        share(hard)
    };
    commit::set_limits(soft, hard);
}

/// Sets the soft memory limit in bytes (`None` removes it, and the soft limit follows the
/// hard one again): over it, the background purger returns every dirty page and the
/// caches' empty spans to the OS at once instead of on the decay curve.
pub fn set_soft_memory_limit(soft: Option<usize>) {
    let (_, hard) = commit::limits();
    SOFT_SET.store(soft.is_some(), Ordering::Relaxed);
    commit::set_limits(soft.unwrap_or(share(hard)), hard);
}

/// The limits in force and the committed count.
pub fn memory_limits() -> MemoryLimits {
    let (soft, hard) = commit::limits();
    let known = |v: usize| (v != UNLIMITED).then_some(v);
    MemoryLimits {
        soft: known(soft),
        hard: known(hard),
        committed: commit::committed(),
    }
}

/// Runs `take` (a request to a page heap or for a huge mapping); if it fails, gives back
/// whatever memory can be given back without waiting (every cache's stash, idle caches'
/// spans, every dirty page) and runs it once more. A failure is a hard limit or the OS
/// refusing memory; either way, this is what stands between the program and a null.
///
/// Must be called with no allocator lock held.
pub(crate) fn retry<T>(take: impl Fn() -> Option<T>) -> Option<T> {
    take().or_else(|| {
        reclaim();
        take()
    })
}

/// Returns every free page tessera can find to the OS, now.
pub(crate) fn reclaim() {
    pool::for_each_cache(|cache| {
        cache.reclaim_stash(u64::MAX, true);
    });
    pool::collect_idle();
    crate::percpu::flush_idle_backends();
    crate::central::sweep_all(true);
    for node in node::used_nodes() {
        node.heap.purge_all();
    }
}
