//! Requests above the largest size class: whole spans from the page heap (alignments up to
//! a sixteenth of an arena, 4 MiB, carved aligned from it), and dedicated mappings from the
//! huge threshold, for larger alignments, or for a block no arena holds
//! (ARCHITECTURE.md#large-and-huge).

use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use tessera_span::heap::{MAX_SPAN_PAGES, bytes_to_pages, decay_ms};
use tessera_span::{ARENA_SIZE, PAGE_SIZE, Span, SpanKind, huge};
use tessera_sys::clock;

use crate::config::huge_threshold;
use crate::node;

/// A large span's `user_flags` bit: its pages go back to the OS when it is freed
/// ([`returns_at_free`]). Apart from the profiler's `PROFILED`, the only flag a large span
/// has.
pub(crate) const RETURN_ON_FREE: u8 = 0b0100_0000;

/// Large blocks from this size up may be returned at free (glibc's initial
/// `M_MMAP_THRESHOLD`: glibc maps such blocks on their own and unmaps them at `free`).
const RETURN_FROM: usize = 128 << 10;
/// Large blocks above this size are never returned at free: they stay on the decay curve
/// like smaller ones. What a wrong guess costs grows with the block (a fault per page to
/// take it back), and the reuse evidence needs `KEEP_AFTER` wrong guesses per band: with no
/// top, the regex workload of the Rust programs took 0.195 s of system time against 0.116 s
/// (measured on branch rss11). Up to here, the wrong guesses of a whole process cost at
/// most `KEEP_AFTER` blocks of each band, under 64 MiB of faults together; python3's blocks
/// that nothing reuses (350 KiB `json.dumps` chunks, dict tables of up to 1.9 MiB) are all
/// below it. The top is the last span below 8 MiB, so the last band is whole: a 4 MiB
/// buffer with a header (one sqlite3 grows by reallocation from 64 KiB to 4,194,312 B)
/// was left dirty when the top was 4 MiB itself, and its 3 MiB touched made sqlite3's
/// peak, as the program's next allocations came from it instead of fresh pages (glibc had
/// unmapped its copy).
const RETURN_UP_TO: usize = (8 << 20) - PAGE_SIZE;
/// Size bands for the reuse evidence: band `i` holds blocks of `RETURN_FROM << i` bytes up
/// to below twice that.
const BANDS: usize = band(RETURN_UP_TO) + 1;
/// Allocations that find a block of their band returned within the decay time, after which
/// the band's blocks stay on the decay curve.
const KEEP_AFTER: u8 = 4;

/// When a block of each band was last returned at free (coarse milliseconds; 0: never).
static RETURNED_AT: [AtomicU64; BANDS] = [const { AtomicU64::new(0) }; BANDS];
/// Per band, the largest block returned at free within a decay time of the last one.
static RETURNED_BYTES: [AtomicUsize; BANDS] = [const { AtomicUsize::new(0) }; BANDS];
/// Per band, how many allocations found a block of the band returned within the decay time.
static MISSES: [AtomicU8; BANDS] = [const { AtomicU8::new(0) }; BANDS];

/// The band of a block of `RETURN_FROM..=RETURN_UP_TO` bytes.
const fn band(bytes: usize) -> usize {
    let log = (usize::BITS - 1 - bytes.leading_zeros()) as usize;
    log.saturating_sub(RETURN_FROM.trailing_zeros() as usize)
}

/// Whether a large block of `bytes` (a span's bytes), allocated now, goes back to the OS at
/// its free instead of staying dirty on the decay curve (`RETURN_ON_FREE`).
///
/// A freed big block that nothing reuses is resident until the decay returns it, up to the
/// decay time later; glibc unmaps it at once. python3 (the runner's programs) frees its
/// 350 KiB `json.dumps` chunks and its dict tables of up to 1.9 MiB while its object arenas
/// (its own mappings, which no freed block of ours can serve) grow: left on the curve, they
/// were its peak's excess over glibc's. So blocks from 128 KiB up to 8 MiB (`RETURN_UP_TO`
/// says why no higher) go back at free, until the program shows it reuses their size: an
/// allocation that finds a block of its size band, at least as large as it, returned
/// within the decay time would have been served by it, and a fault per page was paid for
/// nothing. A smaller block returned could not have served it, so a buffer grown by moving
/// reallocations is no evidence of reuse (python3's `json.dumps` grows each chunk's buffer
/// from 65 KiB to 782 KiB); with that size test, python3's peak RssAnon went from 90,816 to
/// 90,476 KiB (glibc 88,856). From the `KEEP_AFTER`th such allocation in a band on, that
/// band's blocks stay on the decay curve for good (as glibc raises its mmap threshold for
/// good), so a program that rebuilds a buffer per request pays the faults of its first few
/// rounds only. A decay time of "never" (`TESSERA_PURGE_DELAY_MS=-1`) returns nothing here.
fn returns_at_free(bytes: usize) -> bool {
    let decay = decay_ms();
    if !(RETURN_FROM..=RETURN_UP_TO).contains(&bytes) || decay == u64::MAX {
        return false;
    }
    let band = band(bytes);
    if MISSES[band].load(Ordering::Relaxed) >= KEEP_AFTER {
        return false;
    }
    let returned = RETURNED_AT[band].load(Ordering::Relaxed);
    if returned != 0
        && clock::coarse_now_ms().saturating_sub(returned) <= decay
        && RETURNED_BYTES[band].load(Ordering::Relaxed) >= bytes
    {
        // Racing allocations may both count: the band is kept one miss early at worst.
        let misses = MISSES[band]
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        return misses < KEEP_AFTER;
    }
    true
}

/// Allocates `size` bytes at `align` as a large span or a huge mapping; null on failure.
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    let node = crate::current_node();
    // Alignments up to a sixteenth of an arena are carved from the page heap (the slack goes
    // straight back); beyond that, or from the huge threshold, a dedicated mapping.
    // A configured threshold above what an arena holds still sends such blocks to mappings.
    let fits_arena = bytes_to_pages(size.max(1)) + align / PAGE_SIZE <= MAX_SPAN_PAGES;
    if size >= huge_threshold() || align > ARENA_SIZE / 16 || !fits_arena {
        // Fresh mappings read as zero, so `zero` costs nothing here.
        let Some(block) = crate::limit::retry(|| huge::alloc(size.max(1), align, node)) else {
            return ptr::null_mut();
        };
        // Fresh memory while freed pages may wait in the page heap (`PageHeap::purge_for_growth`).
        node::node(node).heap.purge_for_growth(size);
        return block.as_ptr();
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
    // span's flags say only whether its block is a heap-profile sample (`profile/`) and
    // whether its free returns its pages (`RETURN_ON_FREE`).
    let bytes = unsafe { got.span.as_ref() }.bytes();
    let flags = if returns_at_free(bytes) {
        RETURN_ON_FREE
    } else {
        0
    };
    // SAFETY: as above.
    unsafe { (*got.span.as_ptr()).user_flags = flags };
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
    let record = core::ptr::NonNull::from(span);
    // A block resized in place since its allocation (`resize_in_place`) may have left the
    // sizes returned at free: it takes the decay curve then.
    let bytes = span.bytes();
    if span.user_flags & RETURN_ON_FREE != 0 && (RETURN_FROM..=RETURN_UP_TO).contains(&bytes) {
        let band = band(bytes);
        // SAFETY: forwarded contract.
        if unsafe { heap.free_returned(record) } {
            let now = clock::coarse_now_ms().max(1);
            let last = RETURNED_AT[band].swap(now, Ordering::Relaxed);
            // Racing frees may lose a size: a later allocation then misses a miss, at worst.
            if now.saturating_sub(last) > decay_ms() {
                RETURNED_BYTES[band].store(bytes, Ordering::Relaxed);
            } else {
                RETURNED_BYTES[band].fetch_max(bytes, Ordering::Relaxed);
            }
        }
    } else {
        // SAFETY: forwarded contract.
        unsafe { heap.free(record) };
    }
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
