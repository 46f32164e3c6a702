//! A cache's stash of empty spans (see `STASH_MIN_PAGES`): where a span goes once every
//! carved object in it is free (the stash, or the page heap), where the next fresh span of
//! the same size comes from first, and how the stash goes back to the page heap (a flush,
//! or the background purger's visit).

use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use tessera_span::Span;
use tessera_sys::clock;

use super::Cache;
use crate::node;

/// The stash's budget starts at 1 MiB of empty spans (16 spans of 64 KiB) and doubles, up
/// to 8 MiB, each time the cache has to take a fresh span from the page heap after the
/// stash overflowed: that is a program whose rounds of building and tearing down are
/// larger than the stash, paying the shared page-heap lock twice per span (on two threads
/// of the glibc-bench "simple" shape with 4 MiB rounds, half its speed). A flush resets it.
/// The stash costs no peak RSS (at a peak its spans are in use); it is what a cache holds
/// empty between rounds. A cache whose stash has not moved for a whole decay time hands it
/// to the page heap on the background purger's request (`Cache::reclaim_stash`), as does
/// every cache when committed memory crosses the soft limit; `flush` and `tessera::collect`
/// hand it back too.
const STASH_MIN_PAGES: usize = (1 << 20) / tessera_span::PAGE_SIZE;
/// See `STASH_MIN_PAGES`.
const STASH_MAX_PAGES: usize = (8 << 20) / tessera_span::PAGE_SIZE;
/// Slots in the stash: enough for `STASH_MAX_PAGES` of the smallest spans (8 pages).
const STASH_LEN: usize = STASH_MAX_PAGES / 8;

/// A cache's empty spans; see `STASH_MIN_PAGES`.
#[derive(Debug)]
pub(super) struct Stash {
    spans: [*mut Span; STASH_LEN],
    len: usize,
    pages: usize,
    /// The current budget in pages, between `STASH_MIN_PAGES` and `STASH_MAX_PAGES`.
    budget: usize,
    /// An empty span went to the page heap because the stash was full, since the budget
    /// last grew.
    overflowed: bool,
    /// When a span last went in or out (`clock::coarse_now_ms`).
    touched_ms: u64,
}

// SAFETY: the spans are page-heap memory that lives for the process; the lock serialises
// every access.
unsafe impl Send for Stash {}

impl Cache {
    /// Takes an empty span off the partial list: into the stash if it has room and the
    /// span belongs to the node the thread runs on, else back to the page heap.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns, on its partial list, with no
    /// notification pending (nothing will reach it through the notification stack), and
    /// every carved object free (no live object goes back to the page heap).
    pub(super) unsafe fn release_empty(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let s = unsafe { &*span };
        // Every carved object is free, so no free can race with us (short of a double free).
        // SAFETY: ours and on our partial list (the contract).
        unsafe { self.unlink(span) };
        // Nothing may take the record for one of our spans any more (the unsized free trusts
        // the owner field alone).
        s.owner.store(ptr::null_mut(), Ordering::Relaxed);
        self.recent.forget(span);
        if s.node() == crate::current_node() {
            let mut stash = self.stash.lock();
            if stash.len < STASH_LEN
                && stash.pages + s.npages() <= stash.budget.max(STASH_MIN_PAGES)
            {
                let at = stash.len;
                stash.spans[at] = span;
                stash.len += 1;
                stash.pages += s.npages();
                stash.touched_ms = clock::coarse_now_ms();
                return;
            }
            stash.overflowed = true;
        }
        // SAFETY: the span is unlinked, holds no live object and belongs to this heap's node.
        unsafe { node::node(s.node()).heap.free(NonNull::new_unchecked(span)) };
    }

    /// A stashed empty span of `npages` pages, most recently stashed first (its memory is
    /// the likeliest to be in cache). On a miss after the stash overflowed, its budget
    /// doubles: the caller is about to ask the page heap.
    pub(super) fn unstash(&mut self, npages: usize) -> Option<NonNull<Span>> {
        let mut stash = self.stash.lock();
        let len = stash.len;
        // SAFETY: stashed spans are in-use spans (for the page heap) that we hold.
        let found = stash.spans[..len]
            .iter()
            .rposition(|&s| unsafe { (*s).npages() } == npages);
        let Some(i) = found else {
            if stash.overflowed {
                stash.overflowed = false;
                stash.budget = (stash.budget.max(STASH_MIN_PAGES) * 2).min(STASH_MAX_PAGES);
            }
            return None;
        };
        let span = stash.spans[i];
        stash.len -= 1;
        stash.spans[i] = stash.spans[len - 1];
        stash.pages -= npages;
        stash.touched_ms = clock::coarse_now_ms();
        NonNull::new(span)
    }

    /// Hands every stashed span back to its page heap.
    pub(super) fn drain_stash(&self) {
        let mut stash = self.stash.lock();
        drain(&mut stash, false);
    }

    /// The background purger's visit: hands the stash back to the page heap if it has not
    /// moved since `stale_before` (milliseconds of `clock::coarse_now_ms`), or in any case with
    /// `force`. Does nothing when the owner holds the stash at this moment. Returns the
    /// bytes handed back.
    ///
    /// Called from another thread than the owner's: it touches the stash alone, under its
    /// lock.
    pub(crate) fn reclaim_stash(&self, stale_before: u64, force: bool) -> usize {
        let Some(mut stash) = self.stash.try_lock() else {
            return 0;
        };
        if stash.len == 0 || (!force && stash.touched_ms >= stale_before) {
            return 0;
        }
        let bytes = stash.pages * tessera_span::PAGE_SIZE;
        drain(&mut stash, true);
        bytes
    }

    /// Bytes in the stash (for the purger's decision to keep waking up).
    pub(crate) fn stash_bytes(&self) -> usize {
        self.stash
            .try_lock()
            .map_or(0, |s| s.pages * tessera_span::PAGE_SIZE)
    }
}

/// Hands every span of `stash` back to its page heap: as idle memory (aged, not counted as
/// a fresh free by the decay curve) when the purger reclaims it, as a fresh free otherwise.
fn drain(stash: &mut Stash, idle: bool) {
    for &span in &stash.spans[..stash.len] {
        // SAFETY: a stashed span: in use for the page heap, empty, and ours (the stash's
        // lock is held); its node's heap is the one it came from.
        unsafe {
            let heap = &node::node((*span).node()).heap;
            let span = NonNull::new_unchecked(span);
            if idle {
                heap.free_idle(span)
            } else {
                heap.free(span)
            }
        }
    }
    stash.len = 0;
    stash.pages = 0;
    stash.budget = STASH_MIN_PAGES;
    stash.overflowed = false;
}
