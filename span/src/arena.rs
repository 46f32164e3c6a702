//! Aligned arenas and the page map: from any address to its span in O(1).
//!
//! Every arena is `ARENA_SIZE` bytes reserved at an `ARENA_SIZE`-aligned address, so the
//! arena of a pointer is `ptr & !ARENA_MASK` (Go's `heapArena`, mimalloc's segments). The
//! arena's first pages hold its header: the page map (page → first page of its span) and
//! the span records, one slot per page, so a span's record is the slot of its first page
//! and needs no separate metadata allocator. Header pages are committed on first touch
//! like everything else, so an arena that serves a few spans costs a few header pages.
//!
//! A process-wide byte map (`ARENA_MAP`, one entry per possible arena in the 47-bit user
//! address space, 2 MiB of zero-filled BSS that is only paged in where touched) says which
//! arenas are ours. It lets `free` reject a foreign pointer with one load, before it reads
//! any header.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use tessera_numa::NodeId;

use crate::os;
use crate::span::Span;

/// log2 of the page heap's page (8 KiB, Go's `_PageShift`).
pub const PAGE_SHIFT: usize = 13;
/// The page heap's page size.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of an arena's size.
pub const ARENA_SHIFT: usize = 26;
/// An arena's size and alignment (64 MiB).
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// `ptr & !ARENA_MASK` is the arena of `ptr`.
pub const ARENA_MASK: usize = ARENA_SIZE - 1;
/// Pages per arena, header included.
pub const ARENA_PAGES: usize = ARENA_SIZE / PAGE_SIZE;

/// The user half of the x86_64 (4-level) and aarch64 (48-bit) address space. Tessera never
/// asks for a hint above it, so the kernel never places an arena higher.
const ADDRESS_BITS: usize = 47;
const ARENA_MAP_LEN: usize = 1 << (ADDRESS_BITS - ARENA_SHIFT);

static ARENA_MAP: [AtomicU8; ARENA_MAP_LEN] = [const { AtomicU8::new(0) }; ARENA_MAP_LEN];

/// An arena's header, at the arena's first byte.
#[repr(C)]
pub struct Arena {
    /// NUMA node whose page heap owns this arena.
    pub(crate) node: NodeId,
    /// Next arena of the same page heap.
    pub(crate) next: *mut Arena,
    /// The arena was advised `MADV_HUGEPAGE` (or the system gives every mapping huge
    /// pages): decay purges return whole 2 MiB pages only.
    pub(crate) huge_pages: bool,
    /// Page index → first page of its span; 0 (a header page, where no span starts) for
    /// pages in no span.
    page_map: [AtomicU32; ARENA_PAGES],
    /// Span records, one slot per page; slot `i` describes the span starting at page `i`.
    spans: [Span; ARENA_PAGES],
}

impl core::fmt::Debug for Arena {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Arena")
            .field("base", &(self as *const Arena))
            .field("node", &self.node)
            .finish()
    }
}

/// Pages at the start of every arena taken by its header.
pub const HEADER_PAGES: usize = core::mem::size_of::<Arena>().div_ceil(PAGE_SIZE);

// Page 0 holds the header, so no span starts there and a start of 0 can mean "no span".
const _: () = assert!(HEADER_PAGES >= 1);

impl Arena {
    /// Reserves a new arena for `node`, applies `advise` to the fresh mapping before any
    /// byte of it is touched, and returns it; the caller builds the header's first free run.
    ///
    /// `advise` runs first because a huge page is only had by a fault in a 2 MiB range
    /// with no 4 KiB page mapped yet: writing the header before `MADV_HUGEPAGE` would leave
    /// the arena's first 2 MiB (header included) in 4 KiB pages, 512 faults per arena.
    pub(crate) fn reserve(
        node: NodeId,
        advise: impl FnOnce(*mut u8),
    ) -> Result<NonNull<Arena>, os::OsError> {
        let base = os::reserve(ARENA_SIZE, ARENA_SIZE)?;
        crate::placement::bind(base.as_ptr(), ARENA_SIZE, node);
        advise(base.as_ptr());
        let arena = base.cast::<Arena>();
        // SAFETY: the mapping is fresh, zero-filled and at least a header long; zero is a
        // valid bit pattern for every header field except `node`/`next`, written here.
        unsafe {
            (*arena.as_ptr()).node = node;
            (*arena.as_ptr()).next = core::ptr::null_mut();
        }
        ARENA_MAP[base.as_ptr() as usize >> ARENA_SHIFT].store(1, Ordering::Release);
        Ok(arena)
    }

    /// The arena's first byte.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self as *const Arena as *mut u8
    }

    /// The record slot for the span starting at page `page`.
    #[inline]
    pub(crate) fn span_at(&self, page: usize) -> *mut Span {
        // Callers pass pages of this arena (a bounds check here would sit on `free`'s path);
        // the pointer is only dereferenced by them, under their own safety arguments.
        debug_assert!(page < ARENA_PAGES);
        self.spans.as_ptr().wrapping_add(page).cast_mut()
    }

    /// Points `page` at the span starting at `start`.
    ///
    /// # Safety
    /// `start` must lie in `HEADER_PAGES..ARENA_PAGES` (the first page of a span of this
    /// arena is): [`record_of`] and [`span_of`] turn every entry into a record pointer
    /// without a check, trusting it to name a slot inside the header.
    #[inline]
    pub(crate) unsafe fn map_page(&self, page: usize, start: usize) {
        debug_assert!((HEADER_PAGES..ARENA_PAGES).contains(&start));
        self.page_map[page].store(start as u32, Ordering::Release);
    }

    /// The span record the page map names for `page`, if any.
    #[inline]
    pub(crate) fn mapped_span(&self, page: usize) -> Option<NonNull<Span>> {
        let start = self.page_map[page].load(Ordering::Acquire);
        if start == 0 {
            return None;
        }
        NonNull::new(self.span_at(start as usize))
    }
}

/// The span record slot the page map names for `addr`'s page, or `None` when `addr` is in
/// no arena of ours: the first step of the unsized `free`, two loads and no test of the
/// entry. A page in no span names slot 0, which belongs to a header page where no span ever
/// starts, so it is all zero for the life of the arena: a record whose owner is null and
/// whose kind is `None`, which a caller tests like any other. Like [`span_of`]'s, the record
/// may describe a span that no longer covers `addr`.
///
/// The entry is read relaxed: for callers that confirm the record with state of their own
/// (the owner field naming the caller's cache, or a live block the caller holds), never for
/// a first look at a span another thread set up.
#[inline(always)]
pub fn record_of(addr: usize) -> Option<NonNull<Span>> {
    // The index is masked rather than bounds-checked (one instruction instead of three),
    // and the header is found from the masked index: an address above the user half aliases
    // some arena slot and reads a record of a real arena of ours (a caller checks the record
    // against the address, as it must for any stale entry), never memory outside a header.
    let index = (addr >> ARENA_SHIFT) & (ARENA_MAP_LEN - 1);
    if ARENA_MAP[index].load(Ordering::Relaxed) == 0 {
        return None;
    }
    let arena = (index << ARENA_SHIFT) as *const Arena;
    let page = (addr & ARENA_MASK) >> PAGE_SHIFT;
    // SAFETY: the arena map says an arena of ours starts at `arena`, and arenas are never
    // unmapped, so its header is readable; `page < ARENA_PAGES`, and the entry holds 0 or a
    // start `map_page` stored (below `ARENA_PAGES`), so the slot is inside the header and
    // not null.
    unsafe {
        let start = (*arena).page_map[page].load(Ordering::Relaxed);
        Some(NonNull::new_unchecked((*arena).span_at(start as usize)))
    }
}

/// The span record that the page map names for `addr`, or `None` when `addr` is in no
/// arena of ours or on a page no span has ever covered.
///
/// The record may describe a span that no longer covers `addr` (page map entries inside
/// free runs go stale); callers that got `addr` from outside check
/// `span.kind()` and `span.contains(addr)`.
#[inline]
pub fn span_of(addr: usize) -> Option<NonNull<Span>> {
    let index = addr >> ARENA_SHIFT;
    if index >= ARENA_MAP_LEN || ARENA_MAP[index].load(Ordering::Relaxed) == 0 {
        return None;
    }
    let arena = (addr & !ARENA_MASK) as *const Arena;
    let page = (addr & ARENA_MASK) >> PAGE_SHIFT;
    // SAFETY: the arena map says an arena of ours starts at `arena`, and arenas are never
    // unmapped, so its header is readable.
    unsafe { (*arena).mapped_span(page) }
}

/// Whether `addr` lies in one of our arenas.
#[inline]
pub fn in_arena(addr: usize) -> bool {
    let index = addr >> ARENA_SHIFT;
    index < ARENA_MAP_LEN && ARENA_MAP[index].load(Ordering::Relaxed) != 0
}

/// The page index of `addr` inside its arena.
#[inline]
pub(crate) fn page_index(addr: usize) -> usize {
    (addr & ARENA_MASK) >> PAGE_SHIFT
}

/// The arena header holding a span record.
#[inline]
pub(crate) fn arena_of_span(span: *const Span) -> *mut Arena {
    (span as usize & !ARENA_MASK) as *mut Arena
}
