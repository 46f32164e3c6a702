//! Aligned arenas and the page map: from any address to its span in O(1).
//!
//! Every arena is `ARENA_SIZE` bytes reserved at an `ARENA_SIZE`-aligned address, so the
//! arena of a pointer is `ptr & !ARENA_MASK` (Go's `heapArena`, mimalloc's segments). The
//! arena's first pages hold its header: the page map (page → its span's record slot) and
//! the span records, as many slots as the arena has pages (every span and free run is at
//! least a page long), so records need no separate metadata allocator. Slots are handed out
//! densely, lowest never-used slot after retired ones (`take_record`, `retire_record`),
//! not one per page at the span's first page: header pages are committed on first touch,
//! so an arena costs as many record pages as it has spans and free runs at most at once
//! (128 B each), not one 4 KiB record page per 256 KiB of address range it has used.
//! sqlite3 (the runner's programs) had 53 record pages resident (212 KiB) for 92 records
//! (issue #13, item 6).
//!
//! A process-wide byte map (`ARENA_MAP`, one entry per possible arena in the 47-bit user
//! address space, 2 MiB of zero-filled BSS that is only paged in where touched) says which
//! arenas are ours. It lets `free` reject a foreign pointer with one load, before it reads
//! any header.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use tessera_numa::NodeId;
use tessera_sys::error::OsError;
use tessera_sys::mem;

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
    /// Record slots ever handed out: slots `1..=slots_used` have been touched, the rest not.
    /// Written under the page heap's lock.
    slots_used: u32,
    /// The last retired slot (0: none); each retired record keeps the one retired before it
    /// in `freed_at_ms`, a field no reader outside the page heap's lock looks at. Written
    /// under the page heap's lock.
    retired: u32,
    /// Page index → the record slot of its span; 0 (a slot that is never handed out and
    /// stays zero) for pages in no span.
    page_map: [AtomicU32; ARENA_PAGES],
    /// Span records, handed out by `take_record`; slot 0 is never handed out.
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

// Page 0 holds the header, so no span starts there.
const _: () = assert!(HEADER_PAGES >= 1);
// Every span and free run is a page at least, so the slots past slot 0 outnumber the runs
// an arena can hold even while one split or merge files a run before it retires another.
const _: () = assert!(ARENA_PAGES - 1 > ARENA_PAGES - HEADER_PAGES + 1);

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
    ) -> Result<NonNull<Arena>, OsError> {
        let base = mem::reserve(ARENA_SIZE, ARENA_SIZE)?;
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

    /// The record in slot `slot`.
    #[inline]
    fn slot(&self, slot: usize) -> *mut Span {
        // Callers pass slots below `ARENA_PAGES` (a bounds check here would sit on `free`'s
        // path); the pointer is only dereferenced by them, under their own safety arguments.
        debug_assert!(slot < ARENA_PAGES);
        self.spans.as_ptr().wrapping_add(slot).cast_mut()
    }

    /// The slot of `record`, a record of this arena.
    #[inline]
    pub(crate) fn slot_of(&self, record: *const Span) -> u32 {
        let slot = (record as usize - self.spans.as_ptr() as usize) / core::mem::size_of::<Span>();
        debug_assert!((1..ARENA_PAGES).contains(&slot));
        slot as u32
    }

    /// Points `page` at `record`.
    ///
    /// # Safety
    /// `record` must be a record of this arena handed out by [`Arena::take_record`] and not
    /// retired: [`record_of`] and [`span_of`] turn every entry into a record pointer without
    /// a check, trusting it to name a slot inside the header.
    #[inline]
    pub(crate) unsafe fn map_page(&self, page: usize, record: *const Span) {
        self.page_map[page].store(self.slot_of(record), Ordering::Release);
    }

    /// The span record the page map names for `page`, if any.
    #[inline]
    pub(crate) fn mapped_span(&self, page: usize) -> Option<NonNull<Span>> {
        let slot = self.page_map[page].load(Ordering::Acquire);
        if slot == 0 {
            return None;
        }
        NonNull::new(self.slot(slot as usize))
    }

    /// The record of the span or free run that starts at `page`, or null when none does.
    /// Spans and free runs tile an arena past its header, so the page right after a run
    /// starts the next one, and that page's entry names the next run's record.
    #[inline]
    pub(crate) fn run_at(&self, page: usize) -> *mut Span {
        match self.mapped_span(page) {
            // SAFETY: a record of this arena, whose `start` only changes under the page
            // heap's lock, which the callers hold.
            Some(run) if unsafe { run.as_ref() }.start as usize == page => run.as_ptr(),
            _ => core::ptr::null_mut(),
        }
    }

    /// Hands out a record slot for a run starting at `start`, sets its `start`, and points
    /// page `start` at it. The slot last retired is taken first, else the lowest one never
    /// used, so the records in use stay packed at the front of the header.
    ///
    /// # Safety
    /// `arena` must be an arena of ours; the caller holds its page heap's lock and
    /// `start` is a page of the arena past its header.
    pub(crate) unsafe fn take_record(arena: *mut Arena, start: usize) -> *mut Span {
        debug_assert!((HEADER_PAGES..ARENA_PAGES).contains(&start));
        // SAFETY: an arena header of ours (the contract); `slots_used` and `retired` are
        // only written under the lock the caller holds, and the retired record's
        // `freed_at_ms` likewise.
        unsafe {
            let slot = match (*arena).retired {
                0 => {
                    (*arena).slots_used += 1;
                    (*arena).slots_used as usize
                }
                slot => {
                    (*arena).retired = (*(*arena).slot(slot as usize)).freed_at_ms as u32;
                    slot as usize
                }
            };
            // Unreachable while the const assertion on `ARENA_PAGES` holds (there are more
            // slots than runs); checked anyway, since a slot past the header would be
            // written through. A report and abort, not a panic: this is the allocator's
            // own path, which must not unwind or format.
            if slot >= ARENA_PAGES {
                tessera_sys::io::Line::<64>::new()
                    .text("tessera: arena record slots exhausted")
                    .abort();
            }
            let record = (*arena).slot(slot);
            (*record).start = start as u32;
            (*arena).map_page(start, record);
            record
        }
    }

    /// Gives back the slot of `record`, which describes no run any more (its kind is
    /// `None`). Page map entries that still name it go stale, as entries inside free runs
    /// always could: readers check the record against the address they came with.
    ///
    /// # Safety
    /// `record` must be a record of an arena of ours handed out by [`Arena::take_record`],
    /// not retired since, and named by no run's first or last page; the caller holds its page
    /// heap's lock.
    pub(crate) unsafe fn retire_record(record: *mut Span) {
        let arena = arena_of_span(record);
        // SAFETY: an arena header of ours and a record of it (the contract), under the
        // lock the caller holds.
        unsafe {
            debug_assert!((*record).kind() == crate::span::SpanKind::None);
            (*record).freed_at_ms = u64::from((*arena).retired);
            (*arena).retired = (*arena).slot_of(record);
        }
    }
}

/// The span record slot the page map names for `addr`'s page, or `None` when `addr` is in
/// no arena of ours: the first step of the unsized `free`, two loads and no test of the
/// entry. A page in no span names slot 0, which is never handed out, so it is all zero for
/// the life of the arena: a record whose owner is null and
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
    // slot `map_page` stored (below `ARENA_PAGES`), so the slot is inside the header and
    // not null.
    unsafe {
        let slot = (*arena).page_map[page].load(Ordering::Relaxed);
        Some(NonNull::new_unchecked((*arena).slot(slot as usize)))
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
