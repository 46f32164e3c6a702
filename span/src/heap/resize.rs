//! Spans cut or resized in place: a span carved with room for an alignment and trimmed to
//! it (the head and tail go back as free runs), and a large span grown into the free run
//! right after it or shrunk, its tail going back (a large `realloc` without a copy).

use core::ptr::NonNull;

use super::{Allocated, Inner, PageHeap};
use crate::arena::{self, ARENA_PAGES, Arena, PAGE_SIZE};
use crate::commit;
use crate::span::{FLAG_DIRTY, Span, SpanKind};

impl PageHeap {
    /// Hands out a span of `npages` pages whose first byte is aligned to `align` (a power of
    /// two above the page size): it carves `npages + align/PAGE - 1` pages and returns the
    /// misaligned head and the unused tail to the free lists at once.
    pub fn alloc_aligned(&self, npages: usize, align: usize, kind: SpanKind) -> Option<Allocated> {
        debug_assert!(align.is_power_of_two() && align > PAGE_SIZE);
        let total = npages.checked_add(align / PAGE_SIZE - 1)?;
        let shape = |heap: &mut Inner, run: *mut Span| {
            // SAFETY: `run` is an in-use span of this heap, `total` pages long, holding nothing.
            unsafe { heap.trim_to_alignment(run, npages, align) }
        };
        // SAFETY: `trim_to_alignment` returns an in-use span of `npages` pages cut from the
        // run, with the run's kind, and files the head and tail it cuts off as free runs.
        unsafe { self.alloc_with(total, npages, kind, shape) }
    }

    /// Grows a large span in place to `npages` by taking pages from the free run right after
    /// it. Returns false (and changes nothing) when that run is missing or too short, or is
    /// clean and the hard limit leaves no room for it.
    ///
    /// # Safety
    /// `span` must be an in-use large span of this heap.
    pub unsafe fn try_grow(&self, span: NonNull<Span>, npages: usize) -> bool {
        let mut heap = self.inner.lock();
        // SAFETY: forwarded contract.
        unsafe { heap.grow_in_place(span.as_ptr(), npages) }
    }

    /// Shrinks a large span in place to `npages`, returning its tail to the heap.
    ///
    /// # Safety
    /// `span` must be an in-use large span of this heap, and `0 < npages <= span.npages()`.
    pub unsafe fn shrink(&self, span: NonNull<Span>, npages: usize) {
        let mut heap = self.inner.lock();
        // SAFETY: forwarded contract.
        unsafe { heap.shrink_in_place(span.as_ptr(), npages) };
        drop(heap);
        commit::note_dirty();
    }
}

impl Inner {
    /// Splits the in-use, empty span `run` into a free head, an aligned span of `npages`
    /// pages, and a free tail; returns the aligned span.
    ///
    /// # Safety
    /// `run` must be an in-use span of this heap that holds nothing, of at least
    /// `npages + align / PAGE_SIZE - 1` pages; lock held.
    unsafe fn trim_to_alignment(
        &mut self,
        run: *mut Span,
        npages: usize,
        align: usize,
    ) -> *mut Span {
        let arena = arena::arena_of_span(run);
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        let base = span.base() as usize;
        let lead = (base.next_multiple_of(align) - base) / PAGE_SIZE;
        let start = span.start as usize;
        let total = span.npages();
        let mut aligned = run;
        if lead > 0 {
            // SAFETY: page `start + lead` lies inside the span, so in the arena past its
            // header; lock held.
            let record = unsafe { Arena::take_record(arena, start + lead) };
            // SAFETY: a record just handed out, ours under the lock.
            let body = unsafe { &mut *record };
            body.npages = (total - lead) as u32;
            body.flags = 0;
            body.clear_links();
            body.set_kind(span.kind());
            for page in start + lead..start + total {
                // SAFETY: pages of the body lie in the arena; `record` is its live record.
                unsafe { (*arena).map_page(page, record) };
            }
            span.npages = lead as u32;
            // SAFETY: the head is an in-use span of this heap holding nothing.
            unsafe { self.release(run) };
            aligned = body;
        }
        // SAFETY: `aligned` is in use and at least `npages` long.
        unsafe { self.shrink_in_place(aligned, npages) };
        aligned
    }

    /// # Safety
    /// `run` must be an in-use large span of this heap; lock held.
    unsafe fn grow_in_place(&mut self, run: *mut Span, npages: usize) -> bool {
        let arena = arena::arena_of_span(run);
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        let have = span.npages();
        if npages <= have {
            return true;
        }
        let end = span.start as usize + have;
        if end >= ARENA_PAGES {
            return false;
        }
        // SAFETY: `end` is inside the arena.
        let right = unsafe { (*arena).run_at(end) };
        // SAFETY: a record of this arena (or null, no run); lock held.
        let Some(r) = (unsafe { right.as_ref() }) else {
            return false;
        };
        let need = npages - have;
        if r.kind() != SpanKind::Free || r.npages() < need {
            return false;
        }
        if r.flags & FLAG_DIRTY == 0 && !commit::try_commit(need * PAGE_SIZE) {
            return false;
        }
        // SAFETY: a free run (kind `Free`), so on our lists.
        unsafe { self.unlink(right) };
        // Carve `need` pages off the neighbour as if for a span, then absorb them.
        // SAFETY: `right` is an unlinked free run of at least `need` pages.
        unsafe { self.carve(right, need, SpanKind::Large) };
        // SAFETY: `right` is now an in-use record of this arena; absorbed, it describes
        // nothing, and the pages that named it are mapped to `run` below.
        unsafe {
            (*right).set_kind(SpanKind::None);
            Arena::retire_record(right);
        }
        span.npages = npages as u32;
        let start = span.start as usize;
        for page in end..start + npages {
            // SAFETY: pages of the grown span lie in the arena, and `run` is its record.
            unsafe { (*arena).map_page(page, run) };
        }
        true
    }

    /// # Safety
    /// `run` must be an in-use large span of this heap with more than `npages` pages.
    unsafe fn shrink_in_place(&mut self, run: *mut Span, npages: usize) {
        let arena = arena::arena_of_span(run);
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        let have = span.npages();
        if npages >= have {
            return;
        }
        let start = span.start as usize;
        span.npages = npages as u32;
        // The tail becomes an in-use span for a moment, then goes through the normal free.
        // SAFETY: the tail's first page lies inside the span, so in the arena past its
        // header; lock held.
        let record = unsafe { Arena::take_record(arena, start + npages) };
        // SAFETY: a record just handed out, ours under the lock.
        let tail = unsafe { &mut *record };
        tail.npages = (have - npages) as u32;
        tail.set_kind(SpanKind::Large);
        for page in start + npages..start + have {
            // SAFETY: pages of the tail lie in the arena; `record` is its live record.
            unsafe { (*arena).map_page(page, record) };
        }
        // SAFETY: the tail is an in-use span of this heap holding no live object.
        unsafe { self.release(tail) };
    }
}

#[cfg(test)]
mod tests {
    use tessera_numa::NodeId;

    use super::*;
    use crate::heap::live_span_of;

    #[test]
    fn grow_and_shrink_in_place() {
        let heap = PageHeap::new(NodeId::ZERO);
        let a = heap.alloc(2, SpanKind::Large).unwrap();
        // SAFETY: `a` is an in-use large span of `heap`.
        unsafe {
            assert!(heap.try_grow(a.span, 10));
            assert_eq!(a.span.as_ref().npages(), 10);
            heap.check();
            let base = a.span.as_ref().base() as usize;
            assert_eq!(live_span_of(base + 9 * PAGE_SIZE), Some(a.span));
            heap.shrink(a.span, 4);
            heap.check();
            assert_eq!(live_span_of(base + 5 * PAGE_SIZE), None);
            let b = heap.alloc(6, SpanKind::Large).unwrap();
            assert_eq!(b.span.as_ref().base() as usize, base + 4 * PAGE_SIZE);
            assert!(!heap.try_grow(a.span, 5), "b sits right after a");
            heap.free(b.span);
            heap.free(a.span);
            heap.check();
        }
    }

    #[test]
    fn aligned_spans_return_their_slack() {
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        for align in [2 * PAGE_SIZE, 64 << 10, 1 << 20] {
            let a = heap.alloc_aligned(3, align, SpanKind::Large).unwrap();
            // SAFETY: `a` is an in-use span of `heap`.
            unsafe {
                let s = a.span.as_ref();
                assert_eq!(s.base() as usize % align, 0);
                assert_eq!(s.npages(), 3);
                assert_eq!(
                    live_span_of(s.base() as usize + 2 * PAGE_SIZE),
                    Some(a.span)
                );
                heap.check();
                assert_eq!(
                    heap.stats().in_use,
                    4 * PAGE_SIZE,
                    "head and tail went back"
                );
                heap.free(a.span);
            }
            heap.check();
        }
        // SAFETY: nothing live.
        unsafe { heap.free(pad.span) };
        heap.check();
    }
}
