//! The page heap (Go's `mheap`): hands out spans of whole 8 KiB pages from a node's arenas,
//! coalesces freed spans with free neighbours, and purges free pages back to the OS after a
//! delay.
//!
//! Free runs sit in 128 buckets by length (bucket `n` holds runs of exactly `n` pages,
//! bucket 128 every longer run), with a bitmap of non-empty buckets, so a request finds the
//! smallest fitting run without walking empty lists. A freed span looks at the page-map
//! entries just before and after it to find free neighbours: the page heap keeps the first
//! and last page of every free run mapped for exactly this.
//!
//! Purging: a free run remembers when it was freed and whether it may hold resident pages.
//! Every heap operation checks (one comparison) whether the oldest dirty run is due; a due
//! pass advises away every run older than the delay, whole runs only, so a transparent
//! huge page is never split for a run that is still in use (we never ask for THP either).

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::arena::{self, ARENA_PAGES, ARENA_SIZE, Arena, HEADER_PAGES, PAGE_SHIFT, PAGE_SIZE};
use crate::lock::Locked;
use crate::os::{self, PurgeAdvice};
use crate::span::{FLAG_DIRTY, FLAG_ZEROED, Span, SpanKind};

/// The longest span a page heap can hand out: an arena minus its header.
pub const MAX_SPAN_PAGES: usize = ARENA_PAGES - HEADER_PAGES;

const BUCKETS: usize = 129;
const LARGE_BUCKET: usize = 128;

/// Purge delay in milliseconds; `u64::MAX` means never purge on a timer.
static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(100);
static PURGE_ADVICE: AtomicU8 = AtomicU8::new(0);

/// Sets how long free pages wait before they are returned to the OS, and how.
pub fn configure_purge(delay_ms: u64, advice: PurgeAdvice) {
    PURGE_DELAY_MS.store(delay_ms, Ordering::Relaxed);
    PURGE_ADVICE.store(matches!(advice, PurgeAdvice::Free) as u8, Ordering::Relaxed);
}

fn purge_advice() -> PurgeAdvice {
    if PURGE_ADVICE.load(Ordering::Relaxed) == 1 {
        PurgeAdvice::Free
    } else {
        PurgeAdvice::DontNeed
    }
}

/// Figures a page heap reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageHeapStats {
    /// Bytes of address space reserved for arenas.
    pub mapped: usize,
    /// Bytes in spans handed out.
    pub in_use: usize,
    /// Bytes in free runs.
    pub free: usize,
    /// Bytes in free runs that may still be resident (not yet purged).
    pub dirty: usize,
    /// Bytes returned to the OS by purges so far.
    pub purged_total: u64,
    /// Arenas reserved.
    pub arenas: usize,
}

/// A span the heap handed out.
#[derive(Clone, Copy, Debug)]
pub struct Allocated {
    /// The span record, kind already set.
    pub span: NonNull<Span>,
    /// Every page reads as zero (fresh or purged with `MADV_DONTNEED`).
    pub zeroed: bool,
}

struct Inner {
    node: u32,
    buckets: [*mut Span; BUCKETS],
    nonempty: [u64; 3],
    arenas: *mut Arena,
    stats: PageHeapStats,
    /// When the oldest dirty run becomes due for purging.
    next_purge_ms: u64,
}

// SAFETY: the raw pointers name arena memory that lives for the whole process; every access
// happens under the page heap's lock.
unsafe impl Send for Inner {}

/// One NUMA node's page heap.
#[derive(Debug)]
pub struct PageHeap {
    inner: Locked<Inner>,
}

impl PageHeap {
    /// An empty heap for `node`; arenas are reserved on demand.
    pub const fn new(node: u32) -> Self {
        Self {
            inner: Locked::new(Inner {
                node,
                buckets: [ptr::null_mut(); BUCKETS],
                nonempty: [0; 3],
                arenas: ptr::null_mut(),
                stats: PageHeapStats {
                    mapped: 0,
                    in_use: 0,
                    free: 0,
                    dirty: 0,
                    purged_total: 0,
                    arenas: 0,
                },
                next_purge_ms: u64::MAX,
            }),
        }
    }

    /// Hands out a span of `npages` pages marked `kind`, or `None` when the OS refuses memory.
    pub fn alloc(&self, npages: usize, kind: SpanKind) -> Option<Allocated> {
        self.alloc_with(npages, npages, kind, |_, run| run)
    }

    /// Hands out a span of `npages` pages whose first byte is aligned to `align` (a power of
    /// two above the page size): it carves `npages + align/PAGE - 1` pages and returns the
    /// misaligned head and the unused tail to the free lists at once.
    pub fn alloc_aligned(&self, npages: usize, align: usize, kind: SpanKind) -> Option<Allocated> {
        debug_assert!(align.is_power_of_two() && align > PAGE_SIZE);
        let total = npages.checked_add(align / PAGE_SIZE - 1)?;
        self.alloc_with(total, npages, kind, |heap, run| {
            // SAFETY: `run` is an in-use span of this heap, `total` pages long, holding nothing.
            unsafe { heap.trim_to_alignment(run, npages, align) }
        })
    }

    /// Carves `total` pages (from a free run, growing the heap by an arena if none fits),
    /// lets `shape` cut the span it wants out of them, and hands that out.
    fn alloc_with(
        &self,
        total: usize,
        npages: usize,
        kind: SpanKind,
        shape: impl FnOnce(&mut Inner, *mut Span) -> *mut Span,
    ) -> Option<Allocated> {
        debug_assert!(npages > 0 && matches!(kind, SpanKind::Small | SpanKind::Large));
        if total > MAX_SPAN_PAGES {
            return None;
        }
        let mut heap = self.inner.lock();
        let run = match heap.take_fit(total) {
            Some(run) => run,
            None => {
                heap.grow().ok()?;
                heap.take_fit(total)?
            }
        };
        // SAFETY: `run` is a free run just unlinked under the lock, at least `total` long.
        let zeroed = unsafe { heap.carve(run, total, kind) };
        let span = shape(&mut heap, run);
        heap.maybe_purge();
        #[cfg(feature = "expensive-checks")]
        heap.check();
        // SAFETY: records live in arena headers, never at null.
        let span = unsafe { NonNull::new_unchecked(span) };
        Some(Allocated { span, zeroed })
    }

    /// Returns a span to the heap, coalescing it with free neighbours.
    ///
    /// # Safety
    /// `span` must be in use (small or large), come from this heap, and hold no live object.
    pub unsafe fn free(&self, span: NonNull<Span>) {
        let mut heap = self.inner.lock();
        // SAFETY: forwarded contract.
        unsafe { heap.release(span.as_ptr()) };
        heap.maybe_purge();
        #[cfg(feature = "expensive-checks")]
        heap.check();
    }

    /// Grows a large span in place to `npages` by taking pages from the free run right after
    /// it. Returns false (and changes nothing) when that run is missing or too short.
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
    }

    /// Purges free runs: those older than the delay, or all of them with `force`.
    pub fn purge(&self, force: bool) {
        let mut heap = self.inner.lock();
        let now = if force { u64::MAX } else { os::now_ms() };
        heap.purge_older(now);
    }

    /// The heap's figures.
    pub fn stats(&self) -> PageHeapStats {
        self.inner.lock().stats
    }

    /// Resident bytes of all arenas (header included), measured with `mincore`.
    pub fn resident(&self) -> usize {
        let heap = self.inner.lock();
        let mut bytes = 0;
        let mut arena = heap.arenas;
        while !arena.is_null() {
            // SAFETY: arenas are mapped for the life of the process.
            let pages = unsafe { os::resident_pages(arena.cast(), ARENA_SIZE) }.unwrap_or(0);
            bytes += pages * os::page_size();
            // SAFETY: as above; `next` is written once, under the lock we hold.
            arena = unsafe { (*arena).next };
        }
        bytes
    }

    /// Calls `f` on every span of every arena of this heap (free runs included), under the
    /// heap's lock: `f` must not call back into this heap.
    pub fn for_each_span(&self, mut f: impl FnMut(&Span)) {
        let heap = self.inner.lock();
        let mut arena = heap.arenas;
        while !arena.is_null() {
            let mut page = HEADER_PAGES;
            while page < ARENA_PAGES {
                // SAFETY: arenas are mapped for the life of the process; kinds and lengths of
                // span starts only change under the lock we hold.
                let span = unsafe { &*(*arena).span_at(page) };
                if span.kind() == SpanKind::None {
                    page += 1;
                    continue;
                }
                f(span);
                page += span.npages().max(1);
            }
            // SAFETY: as above.
            arena = unsafe { (*arena).next };
        }
    }

    /// The heap's lock, for the fork handlers.
    pub fn raw_lock(&self) -> &crate::lock::RawLock {
        self.inner.raw()
    }

    /// Checks the free lists against the page map (feature `expensive-checks`, and tests).
    pub fn check(&self) {
        let heap = self.inner.lock();
        heap.check();
    }
}

impl Inner {
    fn bucket_of(npages: usize) -> usize {
        npages.min(LARGE_BUCKET)
    }

    fn push(&mut self, run: *mut Span) {
        // SAFETY: `run` is a free-run record in one of our arenas; we hold the lock.
        let span = unsafe { &mut *run };
        let b = Self::bucket_of(span.npages());
        span.prev = ptr::null_mut();
        span.next = self.buckets[b];
        if !span.next.is_null() {
            // SAFETY: list members are valid records; lock held.
            unsafe { (*span.next).prev = run };
        }
        self.buckets[b] = run;
        self.nonempty[b / 64] |= 1 << (b % 64);
    }

    fn unlink(&mut self, run: *mut Span) {
        // SAFETY: `run` is on one of our free lists; lock held.
        let span = unsafe { &mut *run };
        let b = Self::bucket_of(span.npages());
        if span.prev.is_null() {
            self.buckets[b] = span.next;
        } else {
            // SAFETY: list neighbour, valid record.
            unsafe { (*span.prev).next = span.next };
        }
        if !span.next.is_null() {
            // SAFETY: list neighbour, valid record.
            unsafe { (*span.next).prev = span.prev };
        }
        if self.buckets[b].is_null() {
            self.nonempty[b / 64] &= !(1 << (b % 64));
        }
        span.prev = ptr::null_mut();
        span.next = ptr::null_mut();
    }

    /// Finds and unlinks the smallest free run of at least `npages`.
    fn take_fit(&mut self, npages: usize) -> Option<*mut Span> {
        let first = Self::bucket_of(npages);
        let mut b = first;
        while b < BUCKETS {
            let word = self.nonempty[b / 64] >> (b % 64);
            if word == 0 {
                b = (b / 64 + 1) * 64;
                continue;
            }
            b += word.trailing_zeros() as usize;
            if b >= BUCKETS {
                break;
            }
            if b < LARGE_BUCKET {
                let run = self.buckets[b];
                self.unlink(run);
                return Some(run);
            }
            // The long-run bucket: best fit, lowest address on ties to keep memory compact.
            let mut best: *mut Span = ptr::null_mut();
            let mut at = self.buckets[b];
            while !at.is_null() {
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
                at = span.next;
            }
            if best.is_null() {
                return None;
            }
            self.unlink(best);
            return Some(best);
        }
        None
    }

    /// Reserves one more arena and files its usable pages as one free run.
    fn grow(&mut self) -> Result<(), os::OsError> {
        let arena = Arena::reserve(self.node)?.as_ptr();
        // SAFETY: the arena is fresh and ours; lock held.
        unsafe {
            (*arena).next = self.arenas;
            self.arenas = arena;
            let run = (*arena).span_at(HEADER_PAGES);
            let span = &mut *run;
            span.start = HEADER_PAGES as u32;
            span.npages = (ARENA_PAGES - HEADER_PAGES) as u32;
            span.flags = FLAG_ZEROED;
            span.freed_at_ms = 0;
            span.set_kind(SpanKind::Free);
            (*arena).map_page(HEADER_PAGES, HEADER_PAGES);
            (*arena).map_page(ARENA_PAGES - 1, HEADER_PAGES);
            self.push(run);
        }
        self.stats.mapped += ARENA_SIZE;
        self.stats.arenas += 1;
        self.stats.free += (ARENA_PAGES - HEADER_PAGES) * PAGE_SIZE;
        Ok(())
    }

    /// Turns the first `npages` of free run `run` into an in-use span of `kind`, filing the
    /// rest as a free run. Returns whether the span's pages are known zero.
    ///
    /// # Safety
    /// `run` must be an unlinked free run of at least `npages` pages; lock held.
    unsafe fn carve(&mut self, run: *mut Span, npages: usize, kind: SpanKind) -> bool {
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        let arena = arena::arena_of_span(run);
        let start = span.start as usize;
        let total = span.npages();
        let zeroed = span.flags & FLAG_ZEROED != 0;
        if total > npages {
            // SAFETY: the remainder starts inside the same arena, its record slot is unused.
            let rest = unsafe { &mut *(*arena).span_at(start + npages) };
            rest.start = (start + npages) as u32;
            rest.npages = (total - npages) as u32;
            rest.flags = span.flags;
            rest.freed_at_ms = span.freed_at_ms;
            rest.set_kind(SpanKind::Free);
            // SAFETY: both pages lie in the arena.
            unsafe {
                (*arena).map_page(start + npages, start + npages);
                (*arena).map_page(start + total - 1, start + npages);
            }
            self.push(rest);
        }
        if span.flags & FLAG_DIRTY != 0 {
            let taken_dirty = npages.min(total) * PAGE_SIZE;
            self.stats.dirty -= taken_dirty.min(self.stats.dirty);
        }
        span.npages = npages as u32;
        span.flags = 0;
        span.prev = ptr::null_mut();
        span.next = ptr::null_mut();
        for page in start..start + npages {
            // SAFETY: the span's pages lie in the arena.
            unsafe { (*arena).map_page(page, start) };
        }
        span.set_kind(kind);
        self.stats.free -= npages * PAGE_SIZE;
        self.stats.in_use += npages * PAGE_SIZE;
        zeroed
    }

    /// Returns an in-use span to the free lists, merging it with free neighbours.
    ///
    /// # Safety
    /// `run` must be an in-use span of this heap; lock held.
    unsafe fn release(&mut self, run: *mut Span) {
        let arena = arena::arena_of_span(run);
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        debug_assert!(matches!(span.kind(), SpanKind::Small | SpanKind::Large));
        let bytes = span.bytes();
        self.stats.in_use -= bytes;
        self.stats.free += bytes;
        self.stats.dirty += bytes;
        let mut start = span.start as usize;
        let mut npages = span.npages();
        let mut flags = FLAG_DIRTY;
        span.set_kind(SpanKind::None);

        // Left neighbour: the page map entry of the page before names its run.
        if start > HEADER_PAGES {
            // SAFETY: page `start - 1` is inside the arena.
            if let Some(left) = unsafe { (*arena).mapped_span(start - 1) } {
                let left = left.as_ptr();
                // SAFETY: a record of this arena; lock held.
                let l = unsafe { &mut *left };
                if l.kind() == SpanKind::Free && l.start as usize + l.npages() == start {
                    self.unlink(left);
                    flags = merge_flags(flags, l.flags);
                    start = l.start as usize;
                    npages += l.npages();
                    l.set_kind(SpanKind::None);
                }
            }
        }
        // Right neighbour: its record is the slot of the page right after us.
        let end = span.start as usize + span.npages();
        if end < ARENA_PAGES {
            // SAFETY: `end` is inside the arena.
            let right = unsafe { (*arena).span_at(end) };
            // SAFETY: a record slot of this arena; lock held.
            let r = unsafe { &mut *right };
            if r.kind() == SpanKind::Free {
                self.unlink(right);
                flags = merge_flags(flags, r.flags);
                npages += r.npages();
                r.set_kind(SpanKind::None);
            }
        }

        // SAFETY: `start` is a page of this arena.
        let merged = unsafe { &mut *(*arena).span_at(start) };
        merged.start = start as u32;
        merged.npages = npages as u32;
        merged.flags = flags;
        merged.freed_at_ms = os::now_ms();
        merged.set_kind(SpanKind::Free);
        // SAFETY: first and last pages of the run lie in the arena.
        unsafe {
            (*arena).map_page(start, start);
            (*arena).map_page(start + npages - 1, start);
        }
        self.push(merged);
        let due = merged
            .freed_at_ms
            .saturating_add(PURGE_DELAY_MS.load(Ordering::Relaxed));
        self.next_purge_ms = self.next_purge_ms.min(due);
    }

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
            // SAFETY: page `start + lead` lies inside the span, so in the arena, and starts
            // no span yet.
            let body = unsafe { &mut *(*arena).span_at(start + lead) };
            body.start = (start + lead) as u32;
            body.npages = (total - lead) as u32;
            body.flags = 0;
            body.prev = ptr::null_mut();
            body.next = ptr::null_mut();
            body.set_kind(span.kind());
            for page in start + lead..start + total {
                // SAFETY: pages of the body lie in the arena.
                unsafe { (*arena).map_page(page, start + lead) };
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
        let right = unsafe { (*arena).span_at(end) };
        // SAFETY: a record slot of this arena; lock held.
        let r = unsafe { &*right };
        let need = npages - have;
        if r.kind() != SpanKind::Free || r.npages() < need {
            return false;
        }
        self.unlink(right);
        // Carve `need` pages off the neighbour as if for a span, then absorb them.
        // SAFETY: `right` is an unlinked free run of at least `need` pages.
        unsafe { self.carve(right, need, SpanKind::Large) };
        // SAFETY: `right` is now an in-use record of this arena.
        unsafe { (*right).set_kind(SpanKind::None) };
        span.npages = npages as u32;
        let start = span.start as usize;
        for page in end..start + npages {
            // SAFETY: pages of the grown span lie in the arena.
            unsafe { (*arena).map_page(page, start) };
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
        // SAFETY: the tail's first page lies in the arena and starts no span.
        let tail = unsafe { &mut *(*arena).span_at(start + npages) };
        tail.start = (start + npages) as u32;
        tail.npages = (have - npages) as u32;
        tail.set_kind(SpanKind::Large);
        for page in start + npages..start + have {
            // SAFETY: pages of the tail lie in the arena.
            unsafe { (*arena).map_page(page, start + npages) };
        }
        // SAFETY: the tail is an in-use span of this heap holding no live object.
        unsafe { self.release(tail) };
    }

    fn maybe_purge(&mut self) {
        if self.next_purge_ms == u64::MAX {
            return;
        }
        let now = os::now_ms();
        if now >= self.next_purge_ms {
            self.purge_older(now);
        }
    }

    /// Purges every dirty run freed at least the purge delay before `now`.
    fn purge_older(&mut self, now: u64) {
        let delay = PURGE_DELAY_MS.load(Ordering::Relaxed);
        if delay == u64::MAX && now != u64::MAX {
            self.next_purge_ms = u64::MAX;
            return;
        }
        let advice = purge_advice();
        let mut next_due = u64::MAX;
        for b in 0..BUCKETS {
            let mut at = self.buckets[b];
            while !at.is_null() {
                // SAFETY: list members are valid records; lock held.
                let span = unsafe { &mut *at };
                if span.flags & FLAG_DIRTY != 0 {
                    let due = span.freed_at_ms.saturating_add(delay);
                    if due <= now {
                        // SAFETY: a free run holds no live data and lies in our arena.
                        let purged = unsafe { os::purge(span.base(), span.bytes(), advice) };
                        if purged.is_ok() {
                            span.flags = if advice == PurgeAdvice::DontNeed {
                                FLAG_ZEROED
                            } else {
                                0
                            };
                            self.stats.dirty -= span.bytes().min(self.stats.dirty);
                            self.stats.purged_total += span.bytes() as u64;
                        }
                    } else {
                        next_due = next_due.min(due);
                    }
                }
                at = span.next;
            }
        }
        self.next_purge_ms = next_due;
    }

    /// Walks every free list and checks it against the page map and the counters. Aborts
    /// with a message on a broken invariant: it runs under the heap lock, from inside the
    /// allocator, where a panic could not unwind safely.
    fn check(&self) {
        let mut free = 0;
        for b in 0..BUCKETS {
            let mut at = self.buckets[b];
            verify(
                at.is_null() == (self.nonempty[b / 64] & (1 << (b % 64)) == 0),
                "bucket bitmap",
            );
            while !at.is_null() {
                // SAFETY: list members are valid records; lock held.
                let span = unsafe { &*at };
                verify(span.kind() == SpanKind::Free, "a listed run is not free");
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
                    let right = unsafe { &*(*arena).span_at(end) };
                    verify(
                        right.kind() != SpanKind::Free,
                        "adjacent free runs not merged",
                    );
                }
                free += span.bytes();
                at = span.next;
            }
        }
        verify(
            free == self.stats.free,
            "free bytes disagree with the free lists",
        );
    }
}

/// Aborts with `what` when `ok` is false (the `expensive-checks` tier and tests).
fn verify(ok: bool, what: &str) {
    if !ok {
        let mut msg = [0u8; 160];
        let prefix = b"tessera: page heap check failed: ";
        let n = prefix.len().min(msg.len());
        msg[..n].copy_from_slice(&prefix[..n]);
        let m = what.len().min(msg.len() - n - 1);
        msg[n..n + m].copy_from_slice(&what.as_bytes()[..m]);
        msg[n + m] = b'\n';
        // SAFETY: writing an initialised buffer to stderr, then aborting.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), n + m + 1);
            libc::abort();
        }
    }
}

fn merge_flags(a: u8, b: u8) -> u8 {
    (a & b & FLAG_ZEROED) | ((a | b) & FLAG_DIRTY)
}

/// The span record covering `addr`, checked: `addr` must lie inside an in-use span.
#[inline]
pub fn live_span_of(addr: usize) -> Option<NonNull<Span>> {
    let span = arena::span_of(addr)?;
    // SAFETY: `span_of` returns records inside mapped arena headers.
    let s = unsafe { span.as_ref() };
    match s.kind() {
        SpanKind::Small | SpanKind::Large if s.contains(addr) => Some(span),
        _ => None,
    }
}

/// The page index of `addr` inside its arena (for tests and diagnostics).
pub fn page_of(addr: usize) -> usize {
    arena::page_index(addr)
}

/// Bytes of `n` pages.
pub const fn pages_to_bytes(n: usize) -> usize {
    n << PAGE_SHIFT
}

/// Pages needed for `bytes`.
pub const fn bytes_to_pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesces() {
        let heap = PageHeap::new(0);
        let a = heap.alloc(3, SpanKind::Large).unwrap();
        let b = heap.alloc(5, SpanKind::Large).unwrap();
        let c = heap.alloc(1, SpanKind::Small).unwrap();
        assert!(a.zeroed && b.zeroed && c.zeroed);
        // SAFETY: fresh spans, nothing live in them.
        unsafe {
            let (a_ref, b_ref) = (a.span.as_ref(), b.span.as_ref());
            assert_eq!(a_ref.base().add(a_ref.bytes()), b_ref.base());
            assert_eq!(
                live_span_of(b_ref.base() as usize + 4 * PAGE_SIZE),
                Some(b.span)
            );
            assert_eq!(
                live_span_of(b_ref.base() as usize + 5 * PAGE_SIZE),
                Some(c.span)
            );
            heap.check();
            heap.free(b.span);
            heap.check();
            heap.free(a.span);
            heap.check();
            heap.free(c.span);
            heap.check();
        }
        let stats = heap.stats();
        assert_eq!(stats.in_use, 0);
        assert_eq!(stats.free, (ARENA_PAGES - HEADER_PAGES) * PAGE_SIZE);
        // Everything merged back: the whole arena fits one request again.
        let all = heap
            .alloc(ARENA_PAGES - HEADER_PAGES, SpanKind::Large)
            .unwrap();
        assert!(!all.zeroed, "the run holds pages that were handed out");
        // SAFETY: nothing live.
        unsafe { heap.free(all.span) };
        heap.check();
    }

    #[test]
    fn grow_and_shrink_in_place() {
        let heap = PageHeap::new(0);
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
        let heap = PageHeap::new(0);
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

    #[test]
    fn purge_returns_pages_and_marks_zero() {
        let heap = PageHeap::new(0);
        let a = heap.alloc(16, SpanKind::Large).unwrap();
        // SAFETY: the span is ours; we dirty it, free it, and purge.
        unsafe {
            let base = a.span.as_ref().base();
            core::ptr::write_bytes(base, 0xAB, 16 * PAGE_SIZE);
            heap.free(a.span);
            assert!(heap.stats().dirty >= 16 * PAGE_SIZE);
            heap.purge(true);
            assert_eq!(heap.stats().dirty, 0);
            assert_eq!(os::resident_pages(base, 16 * PAGE_SIZE).unwrap(), 0);
            let again = heap.alloc(16, SpanKind::Large).unwrap();
            assert!(again.zeroed);
            assert_eq!(*again.span.as_ref().base(), 0);
            heap.free(again.span);
        }
    }

    #[test]
    fn foreign_addresses_have_no_span() {
        let local = 5u64;
        assert!(live_span_of(&local as *const u64 as usize).is_none());
        assert!(live_span_of(0).is_none());
        assert!(live_span_of(usize::MAX).is_none());
    }
}
