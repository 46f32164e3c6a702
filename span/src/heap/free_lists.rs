//! The page heap's free lists: a dirty and a clean set (see `heap.rs`), each 128 buckets by
//! length (bucket `n` holds runs of exactly `n` pages, bucket 128 every longer run), with a
//! bitmap of non-empty buckets, so the smallest fitting run is a few bit scans away. Each
//! bucket is a [`SpanList`] through the free runs' records, held under the heap's lock.

use core::ptr;

use super::Inner;
use crate::list::SpanList;
use crate::span::{FLAG_DIRTY, Span};

pub(super) const BUCKETS: usize = 129;
const LARGE_BUCKET: usize = 128;

/// Index of the dirty and the clean list set.
pub(super) const DIRTY: usize = 0;
const CLEAN: usize = 1;

/// One set of size-bucketed free lists.
pub(super) struct FreeLists {
    pub(super) buckets: [SpanList; BUCKETS],
    pub(super) nonempty: [u64; 3],
}

impl FreeLists {
    /// A set with every bucket empty.
    pub(super) const EMPTY: FreeLists = FreeLists {
        buckets: [SpanList::EMPTY; BUCKETS],
        nonempty: [0; 3],
    };
}

impl Inner {
    pub(super) fn bucket_of(npages: usize) -> usize {
        npages.min(LARGE_BUCKET)
    }

    pub(super) fn set_of(span: &Span) -> usize {
        if span.flags & FLAG_DIRTY != 0 {
            DIRTY
        } else {
            CLEAN
        }
    }

    /// Files the free run `run` on the list its length and flags name.
    ///
    /// # Safety
    /// `run` must be the record of a free run (kind `Free`) in one of this heap's arenas,
    /// on none of its lists.
    pub(super) unsafe fn push(&mut self, run: *mut Span) {
        // SAFETY: `run` is a free-run record in one of our arenas (the contract); `&mut self`
        // is the lock.
        let span = unsafe { &*run };
        let b = Self::bucket_of(span.npages());
        let lists = &mut self.lists[Self::set_of(span)];
        // SAFETY: a record on no list (the contract); `&mut self` is the lock, which holds
        // every free list's links.
        unsafe { lists.buckets[b].push_front(run) };
        lists.nonempty[b / 64] |= 1 << (b % 64);
    }

    /// Takes the free run `run` off its list.
    ///
    /// # Safety
    /// `run` must be on one of this heap's free lists (every free run is, between the
    /// heap's operations, except one taken off by `take_fit` or `take_for_purge`).
    pub(super) unsafe fn unlink(&mut self, run: *mut Span) {
        // SAFETY: `run` is on one of our free lists (the contract); `&mut self` is the lock.
        let span = unsafe { &*run };
        let b = Self::bucket_of(span.npages());
        let lists = &mut self.lists[Self::set_of(span)];
        // SAFETY: a run's length and flags name the list it is on, and it is on one (the
        // contract); `&mut self` is the lock.
        unsafe { lists.buckets[b].remove(run) };
        if lists.buckets[b].is_empty() {
            lists.nonempty[b / 64] &= !(1 << (b % 64));
        }
    }

    /// Finds and unlinks the smallest run of at least `npages`: dirty runs first, so
    /// resident pages are reused before fresh ones are faulted in.
    pub(super) fn take_fit(&mut self, npages: usize) -> Option<*mut Span> {
        let run = self
            .find_fit(DIRTY, npages)
            .or_else(|| self.find_fit(CLEAN, npages))?;
        // SAFETY: `find_fit` returns a member of our lists.
        unsafe { self.unlink(run) };
        Some(run)
    }

    /// The smallest run of at least `npages` in list set `set`.
    fn find_fit(&self, set: usize, npages: usize) -> Option<*mut Span> {
        let lists = &self.lists[set];
        let mut b = Self::bucket_of(npages);
        while b < BUCKETS {
            let word = lists.nonempty[b / 64] >> (b % 64);
            if word == 0 {
                b = (b / 64 + 1) * 64;
                continue;
            }
            b += word.trailing_zeros() as usize;
            if b >= BUCKETS {
                break;
            }
            if b < LARGE_BUCKET {
                return Some(lists.buckets[b].first());
            }
            // The long-run bucket: best fit, lowest address on ties to keep memory compact.
            let mut best: *mut Span = ptr::null_mut();
            for at in lists.buckets[b].iter() {
                // SAFETY: list members are valid records; lock held.
                let span = unsafe { &*at };
                if span.npages() >= npages
                    && (best.is_null()
                        // SAFETY: `best` is a list member.
                        || span.npages() < unsafe { (*best).npages() }
                        // SAFETY: as above.
                        || (span.npages() == unsafe { (*best).npages() } && at < best))
                {
                    best = at;
                }
            }
            return (!best.is_null()).then_some(best);
        }
        None
    }

    /// Calls `f` on every dirty run.
    pub(super) fn each_dirty(&self, mut f: impl FnMut(&Span)) {
        for bucket in &self.lists[DIRTY].buckets {
            for at in bucket.iter() {
                // SAFETY: list members are valid records; lock held.
                f(unsafe { &*at });
            }
        }
    }
}
