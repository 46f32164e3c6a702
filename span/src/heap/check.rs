//! The page heap's consistency check (the `expensive-checks` tier, and tests): every free
//! list walked against the page map and the counters.

use core::ptr::NonNull;

use tessera_sys::io::Line;

use super::free_lists::{BUCKETS, DIRTY};
use super::{Inner, PageHeap};
use crate::arena::{self, ARENA_PAGES};
use crate::span::SpanKind;

impl PageHeap {
    /// Checks the free lists against the page map (feature `expensive-checks`, and tests).
    pub fn check(&self) {
        let heap = self.inner.lock();
        heap.check();
    }
}

impl Inner {
    /// Walks every free list and checks it against the page map and the counters. Aborts
    /// with a message on a broken invariant: it runs under the heap lock, from inside the
    /// allocator, where a panic could not unwind safely.
    pub(super) fn check(&self) {
        let mut free = 0;
        let mut dirty = 0;
        for (set, lists) in self.lists.iter().enumerate() {
            for b in 0..BUCKETS {
                verify(
                    lists.buckets[b].is_empty() == (lists.nonempty[b / 64] & (1 << (b % 64)) == 0),
                    "bucket bitmap",
                );
                for at in lists.buckets[b].iter() {
                    // SAFETY: list members are valid records; lock held.
                    let span = unsafe { &*at };
                    verify(span.kind() == SpanKind::Free, "a listed run is not free");
                    verify(
                        Self::set_of(span) == set,
                        "a run sits in the wrong list set",
                    );
                    verify(
                        Self::bucket_of(span.npages()) == b,
                        "a run sits in the wrong bucket",
                    );
                    let arena = arena::arena_of_span(at);
                    let start = span.start as usize;
                    // SAFETY: both pages lie in the arena.
                    let (first, last) = unsafe {
                        (
                            (*arena).mapped_span(start).map(NonNull::as_ptr),
                            (*arena)
                                .mapped_span(start + span.npages() - 1)
                                .map(NonNull::as_ptr),
                        )
                    };
                    verify(
                        first == Some(at) && last == Some(at),
                        "page map misses a run's ends",
                    );
                    let end = start + span.npages();
                    if end < ARENA_PAGES {
                        // SAFETY: `end` lies in the arena.
                        let right = unsafe { (*arena).run_at(end).as_ref() };
                        verify(right.is_some(), "no run starts right after a free run");
                        verify(
                            right.is_none_or(|r| {
                                r.kind() != SpanKind::Free || Self::set_of(r) != set
                            }),
                            "adjacent free runs of one kind not merged",
                        );
                    }
                    free += span.bytes();
                    if set == DIRTY {
                        dirty += span.bytes();
                    }
                }
            }
        }
        verify(
            free + self.stats.purging == self.stats.free,
            "free bytes disagree with the free lists",
        );
        verify(
            dirty == self.stats.dirty,
            "dirty bytes disagree with the lists",
        );
    }
}

/// Aborts with `what` when `ok` is false (the `expensive-checks` tier and tests).
fn verify(ok: bool, what: &str) {
    if !ok {
        Line::<160>::new()
            .text("tessera: page heap check failed: ")
            .text(what)
            .abort();
    }
}
