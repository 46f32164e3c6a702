//! Requests above the largest size class: whole spans from the page heap (alignments up to
//! a sixteenth of an arena, 4 MiB, carved aligned from it), and dedicated mappings from the
//! huge threshold, for larger alignments, or for a block no arena holds
//! (ARCHITECTURE.md#large-and-huge).

use core::ptr;

use tessera_span::heap::{MAX_SPAN_PAGES, bytes_to_pages};
use tessera_span::{ARENA_SIZE, PAGE_SIZE, Span, SpanKind, huge};

use crate::config::huge_threshold;
use crate::node;

/// Allocates `size` bytes at `align` as a large span or a huge mapping; null on failure.
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    let node = crate::current_node();
    // Alignments up to a sixteenth of an arena are carved from the page heap (the slack goes
    // straight back); beyond that, or from the huge threshold, a dedicated mapping.
    // A configured threshold above what an arena holds still sends such blocks to mappings.
    let fits_arena = bytes_to_pages(size.max(1)) + align / PAGE_SIZE <= MAX_SPAN_PAGES;
    if size >= huge_threshold() || align > ARENA_SIZE / 16 || !fits_arena {
        // Fresh mappings read as zero, so `zero` costs nothing here.
        return crate::limit::retry(|| huge::alloc(size.max(1), align, node))
            .map_or(ptr::null_mut(), |p| p.as_ptr());
    }
    let pages = bytes_to_pages(size.max(1));
    let heap = &node::node(node).heap;
    let got = crate::limit::retry(|| {
        if align > PAGE_SIZE {
            heap.alloc_aligned(pages, align, SpanKind::Large)
        } else {
            heap.alloc(pages, SpanKind::Large)
        }
    });
    let Some(got) = got else {
        return ptr::null_mut();
    };
    // SAFETY: the heap returned an in-use span record, ours alone until `base` is handed
    // out. Its small-object flags may be left from an earlier life as a small span; a large
    // span's flags say only whether its block is a heap-profile sample (`profile/`).
    unsafe { (*got.span.as_ptr()).user_flags = 0 };
    // SAFETY: as above.
    let base = unsafe { got.span.as_ref() }.base();
    if zero && !got.zeroed {
        crate::sanitizer::open_block(base, size);
        // SAFETY: the span's pages are ours and at least `size` bytes long.
        unsafe { ptr::write_bytes(base, 0, size) };
    }
    base
}

/// Frees a large span.
///
/// # Safety
/// `span` must be an in-use large span whose object is no longer used.
pub(crate) unsafe fn free(span: &Span) {
    let heap = &node::node(span.node()).heap;
    // SAFETY: forwarded contract.
    unsafe { heap.free(core::ptr::NonNull::from(span)) };
}

/// Resizes a large span in place: shrinks it, or grows it into the free pages after it.
/// Returns false when it must move.
///
/// # Safety
/// `span` must be an in-use large span.
pub(crate) unsafe fn resize_in_place(span: &Span, new_size: usize) -> bool {
    if new_size >= huge_threshold() || new_size <= crate::size_class::MAX_SMALL {
        return false;
    }
    let pages = bytes_to_pages(new_size);
    let heap = &node::node(span.node()).heap;
    let span_ptr = core::ptr::NonNull::from(span);
    if pages <= span.npages() {
        if pages < span.npages() {
            // SAFETY: forwarded contract; `0 < pages < npages`.
            unsafe { heap.shrink(span_ptr, pages) };
        }
        return true;
    }
    // SAFETY: forwarded contract.
    unsafe { heap.try_grow(span_ptr, pages) }
}
