//! The page heap (Go's `mheap`): hands out spans of whole 8 KiB pages from a node's arenas,
//! coalesces freed spans with free neighbours, and returns free pages to the OS on a decay
//! curve.
//!
//! Free runs come in two kinds, on separate lists: **dirty** runs (freed spans, whose pages
//! may still be resident) and **clean** runs (fresh, or purged back to the OS). A request
//! takes the smallest fitting dirty run first, so a program that frees and allocates reuses
//! resident pages before it faults in fresh ones, and only a clean run adds to the committed
//! memory that the limits count (`commit.rs`). A run merges only with neighbours of its own
//! kind, so the committed count is exact; a purged run merges with its clean neighbours.
//!
//! A freed span looks at the page-map entries just before and after it to find free
//! neighbours: the page heap keeps the first and last page of every free run mapped for
//! exactly this.
//!
//! This file holds the heap's state and its core operations (carve a span out of a free run,
//! free it back, grow by an arena); the rest is one file each under `heap/`:
//! - `free_lists.rs`: the size-bucketed lists of free runs and the best-fit search;
//! - `resize.rs`: aligned spans, and large spans grown or shrunk in place;
//! - `decay.rs`: the decay curve, how much dirty memory may stay;
//! - `purge.rs`: the purge steps that return the rest to the OS, and who runs them;
//! - `check.rs`: the walk that checks the free lists against the page map (the
//!   `expensive-checks` tier, and tests).

use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use tessera_numa::NodeId;
use tessera_sys::clock;
use tessera_sys::error::OsError;
use tessera_sys::lock::{Locked, RawLock};
use tessera_sys::mem;

use crate::arena::{self, ARENA_PAGES, ARENA_SIZE, Arena, HEADER_PAGES, PAGE_SHIFT, PAGE_SIZE};
use crate::commit;
use crate::span::{FLAG_DIRTY, FLAG_ZEROED, Span, SpanKind};
use crate::thp;

use decay::Decay;
use free_lists::FreeLists;
use purge::{DIRTY_SEEN, background_purger};

/// How many times an allocation at the hard memory limit waits for a purge in flight on
/// another thread before it fails (`PageHeap::alloc_with`): first yields
/// (`PURGE_YIELDS`), then sleeps of `PURGE_SLEEP_US`, about a second in all. A purge is one
/// `madvise` per run and takes microseconds; the sleeps are for a purger that a loaded
/// machine keeps off the CPU, which yields alone did not wait out.
const MAX_PURGE_WAITS: u32 = PURGE_YIELDS + 2_000;
const PURGE_YIELDS: u32 = 64;
const PURGE_SLEEP_US: u32 = 500;

mod check;
mod decay;
mod free_lists;
mod purge;
mod resize;

pub use decay::{DEFAULT_DECAY_MS, decay_ms, epoch_ms};
pub use purge::{PurgeOutcome, configure_purge, dirty_seen, set_background_purger};

/// The longest span a page heap can hand out: an arena minus its header.
pub const MAX_SPAN_PAGES: usize = ARENA_PAGES - HEADER_PAGES;

/// Figures a page heap reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageHeapStats {
    /// Bytes of address space reserved for arenas.
    pub mapped: usize,
    /// Bytes in spans handed out.
    pub in_use: usize,
    /// Bytes in free runs (dirty, clean and being purged).
    pub free: usize,
    /// Bytes in dirty free runs: possibly resident, committed, reused first.
    pub dirty: usize,
    /// Bytes being returned to the OS right now (still committed).
    pub purging: usize,
    /// Bytes returned to the OS by purges so far.
    pub purged_total: u64,
    /// Arenas reserved.
    pub arenas: usize,
    /// Bytes of arena headers (span records and page maps), counted as committed.
    pub headers: usize,
}

impl PageHeapStats {
    /// Bytes in clean free runs: fresh, or purged back to the OS.
    pub fn clean(&self) -> usize {
        self.free - self.dirty - self.purging
    }
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
    node: NodeId,
    lists: [FreeLists; 2],
    arenas: *mut Arena,
    stats: PageHeapStats,
    decay: Decay,
    /// When the heap's own operations should run the next decay step (no background
    /// purger); `NO_STEP` with nothing dirty.
    next_step_ms: u64,
    /// The first arena's part left in 4 KiB pages (`thp::lean_bytes`), and whether it
    /// is to be collapsed into huge pages (`PageHeap::collapse_lean_if_due`).
    lean: Lean,
}

/// See `Inner::lean`.
#[derive(Clone, Copy, Debug)]
struct Lean {
    base: *mut u8,
    len: usize,
    state: LeanState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeanState {
    /// No lean part (huge pages not advised, or no arena yet), or it was collapsed already.
    Settled,
    /// The first arena is not advised yet: the rest of it gets `MADV_HUGEPAGE` once the
    /// heap has as many bytes in use as its lean part holds (`Inner::lean_room`: the arena's
    /// header takes about 1 MiB of it). Its address range alone may pass the
    /// lean part sooner (freed runs that wait for the decay, blocks that do not fit in them),
    /// and advice at reservation then made a small heap pay whole huge pages: python3's
    /// peak RSS (12 MB through malloc, the rest its own arenas) was 1.1 MiB higher
    /// (issue #13, item 6).
    Unadvised,
    /// A lean part in 4 KiB pages while the heap is small.
    Lean,
    /// The heap outgrew it: collapse it at the next occasion.
    Due,
}

/// In-use bytes past which a heap is no small program's: its lean part is collapsed into huge
/// pages (`PageHeap::collapse_lean_if_due`).
fn lean_collapse_in_use() -> usize {
    2 * thp::lean_bytes()
}

// SAFETY: the raw pointers name arena memory that lives for the whole process; every access
// happens under the page heap's lock.
unsafe impl Send for Inner {}

/// `Inner::next_step_ms` when no step is due. Zero, not `u64::MAX`, so that an empty heap
/// is all zero bytes: the allocator's array of per-node heaps then lives in `.bss`, paged
/// in where touched, instead of 800 KiB of `.data` whose reads map the file around them
/// (issue #13, item 6).
const NO_STEP: u64 = 0;

/// The time of the step an epoch after `now`, never `NO_STEP`.
fn next_step(now: u64) -> u64 {
    now.saturating_add(epoch_ms()).max(1)
}

/// One NUMA node's page heap.
#[derive(Debug)]
pub struct PageHeap {
    inner: Locked<Inner>,
}

impl PageHeap {
    /// Makes this heap `node`'s, for a heap made for another (`new`) that has no arena yet:
    /// a table of heaps made all alike, so that it is all zeros (node 0's), binds each to
    /// its node at its first use. A heap that has arenas keeps its node: its arenas and
    /// their spans name it, and the heap they free into is found by that name.
    pub fn bind_node(&self, node: NodeId) {
        let mut heap = self.inner.lock();
        debug_assert!(
            heap.arenas.is_null() || heap.node == node,
            "a heap with arenas moved to another node"
        );
        if heap.arenas.is_null() {
            heap.node = node;
        }
    }

    /// An empty heap for `node`; arenas are reserved on demand.
    pub const fn new(node: NodeId) -> Self {
        Self {
            inner: Locked::new(Inner {
                node,
                lists: [FreeLists::EMPTY, FreeLists::EMPTY],
                arenas: ptr::null_mut(),
                stats: PageHeapStats {
                    mapped: 0,
                    in_use: 0,
                    free: 0,
                    dirty: 0,
                    purging: 0,
                    purged_total: 0,
                    arenas: 0,
                    headers: 0,
                },
                decay: Decay::EMPTY,
                next_step_ms: NO_STEP,
                lean: Lean {
                    base: ptr::null_mut(),
                    len: 0,
                    state: LeanState::Settled,
                },
            }),
        }
    }

    /// Hands out a span of `npages` pages marked `kind`, or `None` when the OS refuses memory
    /// or the hard memory limit would be crossed.
    pub fn alloc(&self, npages: usize, kind: SpanKind) -> Option<Allocated> {
        // SAFETY: the carved run, unchanged, is the span of `npages` pages asked for.
        unsafe { self.alloc_with(npages, npages, kind, |_, run| run) }
    }

    /// Carves `total` pages (from a dirty run if one fits, else a clean one, growing the
    /// heap by an arena if none fits), lets `shape` cut the span it wants out of them, and
    /// hands that out. A clean run must fit under the hard limit; if it does not, the heap
    /// returns its dirty pages to the OS and tries once more, and waits for runs another
    /// thread is returning.
    ///
    /// # Safety
    /// `shape`, given the in-use span of `total` pages just carved (lock held), must return
    /// the record of an in-use span of `kind` and `npages` pages cut from it, filing
    /// whatever it cuts off as free runs: the result is handed out unchecked.
    unsafe fn alloc_with(
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
        let mut purged_for_limit = false;
        let mut purge_waits = 0;
        let mut grew_past_dirty = false;
        let mut heap = self.inner.lock();
        let run = loop {
            let Some(run) = heap.take_fit(total) else {
                heap.grow().ok()?;
                continue;
            };
            // SAFETY: a run just unlinked under the lock.
            let clean = unsafe { (*run).flags } & FLAG_DIRTY == 0;
            if !clean {
                break run;
            }
            if commit::try_commit(total * PAGE_SIZE) {
                // Fresh pages while dirty ones wait: see `PageHeap::purge_for_growth`.
                grew_past_dirty = heap.stats.dirty > purge::GROWTH_KEEP;
                break run;
            }
            // SAFETY: the free run `take_fit` just unlinked, back on its list.
            unsafe { heap.push(run) };
            if !purged_for_limit && heap.stats.dirty > 0 {
                purged_for_limit = true;
                drop(heap);
                self.purge_all();
                heap = self.inner.lock();
                continue;
            }
            // Runs another thread (the background purger) is returning to the OS are
            // neither dirty nor yet out of the committed count; they leave it once their
            // `madvise` is done, which takes microseconds. Failing meanwhile made an
            // allocation under the hard limit fail by chance right after the program had
            // freed room for it (`limit.c` with 1 MiB blocks at a 64 MiB limit: 5 runs in 6).
            if heap.stats.purging > 0 && purge_waits < MAX_PURGE_WAITS {
                purge_waits += 1;
                drop(heap);
                if purge_waits <= PURGE_YIELDS {
                    tessera_sys::thread::yield_now();
                } else {
                    tessera_sys::thread::sleep_us(PURGE_SLEEP_US);
                }
                heap = self.inner.lock();
                continue;
            }
            return None;
        };
        // SAFETY: `run` is a free run just unlinked under the lock, at least `total` long.
        let zeroed = unsafe { heap.carve(run, total, kind) };
        let span = shape(&mut heap, run);
        #[cfg(feature = "expensive-checks")]
        heap.check();
        if heap.lean.state == LeanState::Unadvised && heap.stats.in_use >= heap.lean_room() {
            heap.advise_past_lean();
        }
        let step_due = heap.step_due();
        let collapse =
            heap.lean.state == LeanState::Lean && heap.stats.in_use >= lean_collapse_in_use() && {
                heap.lean.state = LeanState::Due;
                true
            };
        drop(heap);
        if grew_past_dirty {
            self.purge_for_growth(total * PAGE_SIZE);
        }
        if step_due {
            self.purge_step();
        }
        if collapse {
            if background_purger() {
                commit::notify();
            } else {
                self.collapse_lean_if_due();
            }
        }
        // SAFETY: records live in arena headers, never at null.
        let span = unsafe { NonNull::new_unchecked(span) };
        Some(Allocated { span, zeroed })
    }

    /// Under `TESSERA_THP=auto`, once the heap has outgrown twice its lean part (it is no
    /// small program's), backs that part with huge pages too (`MADV_COLLAPSE`, a copy of the
    /// lean part, once per process, on the background purger's thread when it runs): a big
    /// program then pays no TLB misses for its first pages, whose faults it has paid
    /// already. regex (the runner's Rust program, 316 MiB) took 1.28 s of user
    /// time against 1.30 s (medians of 8), as with `TESSERA_THP=always`; a small program
    /// never gets here. Where the
    /// kernel may compact memory to find huge pages, only while free ones abound, as for
    /// advice (`thp.rs`).
    pub fn collapse_lean_if_due(&self) {
        let (base, len, node) = {
            let mut heap = self.inner.lock();
            if heap.lean.state != LeanState::Due {
                return;
            }
            heap.lean.state = LeanState::Settled;
            (heap.lean.base, heap.lean.len, heap.node)
        };
        if thp::may_collapse(node) {
            // SAFETY: the first arena's start, mapped for the life of the process. Failure
            // (no huge page to be had, a kernel without MADV_COLLAPSE) leaves it as it was.
            let _ = unsafe { mem::collapse_huge_pages(base, len) };
        }
    }

    /// Returns a span to the heap as a dirty run, coalescing it with dirty neighbours.
    ///
    /// # Safety
    /// `span` must be in use (small or large), come from this heap, and hold no live object.
    pub unsafe fn free(&self, span: NonNull<Span>) {
        let mut heap = self.inner.lock();
        // SAFETY: forwarded contract.
        unsafe { heap.release(span.as_ptr()) };
        #[cfg(feature = "expensive-checks")]
        heap.check();
        let step_due = heap.step_due();
        drop(heap);
        commit::note_dirty();
        if step_due {
            self.purge_step();
        }
    }

    /// Returns a span that sat unused for a long time (a cache's stash the purger took
    /// back): a dirty run as old as the decay time, not counted as a fresh free, so the next
    /// decay step returns it to the OS.
    ///
    /// # Safety
    /// As [`PageHeap::free`].
    pub unsafe fn free_idle(&self, span: NonNull<Span>) {
        let mut heap = self.inner.lock();
        // SAFETY: forwarded contract.
        unsafe { heap.release_at(span.as_ptr(), false) };
        drop(heap);
        commit::note_dirty();
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
            let pages = unsafe { mem::resident_pages(arena.cast(), ARENA_SIZE) }.unwrap_or(0);
            bytes += pages * mem::page_size();
            // SAFETY: as above; `next` is written once, under the lock we hold.
            arena = unsafe { (*arena).next };
        }
        bytes
    }

    /// Calls `f` on every span of every arena of this heap (free runs included), under the
    /// heap's lock: `f` must not call back into this heap.
    pub fn for_each_span(&self, mut f: impl FnMut(&Span)) {
        let heap = self.inner.lock();
        // SAFETY: records of our arenas, read under the lock we hold.
        heap.each_record(|run| f(unsafe { &*run }));
    }

    /// The heap's lock, for the fork handlers.
    pub fn raw_lock(&self) -> &RawLock {
        self.inner.raw()
    }
}

impl Inner {
    /// Bytes the lean part holds for spans: its length less the arena's header, which
    /// starts it. A heap with this much in use fills it, however well it packs.
    fn lean_room(&self) -> usize {
        self.lean.len.saturating_sub(HEADER_PAGES * PAGE_SIZE)
    }

    /// Gives the first arena past its lean part the huge-page advice its reservation
    /// deferred (`LeanState::Unadvised`). Faults from now on get huge pages there; runs
    /// already touched in 4 KiB pages stay so (until the kernel's khugepaged collapses them).
    /// The policy is asked again, as for a new arena: where an advised fault may compact
    /// memory, the advice is given only while free huge blocks abound now.
    fn advise_past_lean(&mut self) {
        let arena = self.lean.base.cast::<Arena>();
        if !thp::arena_advice(self.node, false).is_some_and(|(huge, _)| huge) {
            self.lean.state = LeanState::Settled;
            return;
        }
        // SAFETY: the first arena, mapped for the life of the process; the range past its
        // lean part lies inside it.
        let advised = unsafe {
            mem::advise_huge_pages(
                self.lean.base.add(self.lean.len),
                ARENA_SIZE - self.lean.len,
                true,
            )
        };
        if advised.is_ok() {
            // SAFETY: the arena's header, ours under the heap's lock (held: `&mut self`).
            unsafe { (*arena).huge_pages = true };
            self.lean.state = LeanState::Lean;
        } else {
            self.lean.state = LeanState::Settled;
        }
    }

    /// Reserves one more arena and files its usable pages as one clean run.
    fn grow(&mut self) -> Result<(), OsError> {
        let advice = thp::arena_advice(self.node, self.stats.arenas == 0);
        let system_always = thp::system_always();
        let mut huge_pages = system_always;
        let mut lean_part = 0;
        // A lean part defers the advice of the rest (`LeanState::Unadvised`).
        let deferred = advice.and_then(|(huge, lean)| (huge && lean > 0).then_some(lean));
        let arena = Arena::reserve(self.node, |base| {
            if let Some((huge, lean)) = advice
                && deferred.is_none()
            {
                // SAFETY: the range lies in the arena, a fresh mapping of ours.
                let advised =
                    unsafe { mem::advise_huge_pages(base.add(lean), ARENA_SIZE - lean, huge) };
                huge_pages = advised.map_or(system_always, |()| huge);
                if advised.is_ok() && huge {
                    lean_part = lean;
                }
            }
        })?
        .as_ptr();
        if lean_part > 0 {
            self.lean = Lean {
                base: arena.cast(),
                len: lean_part,
                state: LeanState::Lean,
            };
        }
        if let Some(lean) = deferred {
            self.lean = Lean {
                base: arena.cast(),
                len: lean,
                state: LeanState::Unadvised,
            };
        }
        let header = HEADER_PAGES * PAGE_SIZE;
        commit::commit(header);
        // SAFETY: the arena is fresh and ours; lock held. Its one free run starts at
        // `HEADER_PAGES`, inside the arena, and is on no list yet.
        unsafe {
            (*arena).huge_pages = huge_pages;
            (*arena).next = self.arenas;
            self.arenas = arena;
            self.file_run(
                arena,
                HEADER_PAGES,
                ARENA_PAGES - HEADER_PAGES,
                FLAG_ZEROED,
                0,
            );
        }
        self.stats.mapped += ARENA_SIZE;
        self.stats.arenas += 1;
        self.stats.headers += header;
        self.stats.free += (ARENA_PAGES - HEADER_PAGES) * PAGE_SIZE;
        Ok(())
    }

    /// Files pages `start..start + npages` of `arena` as a free run with `flags` and
    /// `freed_at`, without merging (its neighbours are known not to be free runs of its
    /// kind), in a record of its own, and returns that record.
    ///
    /// # Safety
    /// The pages must be free pages of `arena` in no run, past its header; lock held.
    unsafe fn file_run(
        &mut self,
        arena: *mut Arena,
        start: usize,
        npages: usize,
        flags: u8,
        freed_at: u64,
    ) -> *mut Span {
        // SAFETY: an arena of ours, lock held, `start` past the header (the contract).
        let record = unsafe { Arena::take_record(arena, start) };
        // SAFETY: a record just handed out, ours under the lock.
        let run = unsafe { &mut *record };
        run.npages = npages as u32;
        run.flags = flags;
        run.freed_at_ms = freed_at;
        run.set_kind(SpanKind::Free);
        // SAFETY: the run's last page lies in the arena (the contract); `take_record`
        // mapped its first.
        unsafe { (*arena).map_page(start + npages - 1, record) };
        // SAFETY: a free run just filed in our arena, on no list.
        unsafe { self.push(run) };
        run
    }

    /// Turns the first `npages` of free run `run` into an in-use span of `kind`, filing the
    /// rest as a free run of the same kind. Returns whether the span's pages are known zero.
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
            // SAFETY: the remainder lies in the same arena and starts no run yet.
            unsafe {
                self.file_run(
                    arena,
                    start + npages,
                    total - npages,
                    span.flags,
                    span.freed_at_ms,
                )
            };
        }
        if span.flags & FLAG_DIRTY != 0 {
            self.stats.dirty -= npages * PAGE_SIZE;
        }
        span.npages = npages as u32;
        span.flags = 0;
        span.clear_links();
        for page in start..start + npages {
            // SAFETY: the span's pages lie in the arena, and `run` is its live record.
            unsafe { (*arena).map_page(page, run) };
        }
        span.set_kind(kind);
        self.stats.free -= npages * PAGE_SIZE;
        self.stats.in_use += npages * PAGE_SIZE;
        zeroed
    }

    /// Returns an in-use span to the dirty lists, merging it with dirty neighbours.
    ///
    /// # Safety
    /// `run` must be an in-use span of this heap; lock held.
    unsafe fn release(&mut self, run: *mut Span) {
        // SAFETY: forwarded contract.
        unsafe { self.release_at(run, true) };
    }

    /// `release`, saying whether the span is a fresh free (the decay curve lets it stay a
    /// while) or memory that sat unused for a decay time already (filed as that old, and
    /// not counted by the curve).
    ///
    /// # Safety
    /// As `release`.
    unsafe fn release_at(&mut self, run: *mut Span, fresh: bool) {
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        debug_assert!(matches!(span.kind(), SpanKind::Small | SpanKind::Large));
        let bytes = span.bytes();
        self.stats.in_use -= bytes;
        self.stats.free += bytes;
        self.stats.dirty += bytes;
        let now = clock::coarse_now_ms();
        let freed_at = if fresh {
            self.decay.note(bytes, now);
            now
        } else {
            now.saturating_sub(decay_ms().min(u64::MAX / 2))
        };
        if !DIRTY_SEEN.load(Ordering::Relaxed) {
            DIRTY_SEEN.store(true, Ordering::Relaxed);
        }
        if self.next_step_ms == NO_STEP {
            self.next_step_ms = next_step(now);
        }
        // SAFETY: forwarded contract: the span's pages are now free and its record ours.
        unsafe { self.insert_free(run, FLAG_DIRTY, freed_at) };
    }

    /// Files the pages of record `run` (in use, or `Purging`) as a free run with `flags`,
    /// merged with its free neighbours of the same kind (dirty with dirty, clean with
    /// clean). A merged dirty run's age is the byte-weighted mean of its parts'.
    ///
    /// # Safety
    /// `run` must be a record of this heap whose pages hold nothing and are in no free run;
    /// lock held.
    unsafe fn insert_free(&mut self, run: *mut Span, flags: u8, freed_at: u64) {
        let arena = arena::arena_of_span(run);
        // SAFETY: per the contract.
        let span = unsafe { &mut *run };
        let mut start = span.start as usize;
        let mut npages = span.npages();
        let end = start + npages;
        let mut flags = flags;
        let dirty = flags & FLAG_DIRTY != 0;
        // Page-weighted sum of the parts' free times, for the merged run's age.
        let mut weighted = freed_at as u128 * npages as u128;
        // Its pages may go to another span from here on: a memo of it must stop matching.
        span.bump_generation();
        span.set_kind(SpanKind::None);
        let same_kind =
            |r: &Span| r.kind() == SpanKind::Free && (r.flags & FLAG_DIRTY != 0) == dirty;

        // Left neighbour: the page map entry of the page before names its run.
        if start > HEADER_PAGES {
            // SAFETY: page `start - 1` is inside the arena.
            if let Some(left) = unsafe { (*arena).mapped_span(start - 1) } {
                let left = left.as_ptr();
                // SAFETY: a record of this arena; lock held.
                let l = unsafe { &mut *left };
                if same_kind(l) && l.start as usize + l.npages() == start {
                    // SAFETY: a free run (kind `Free`), so on our lists.
                    unsafe { self.unlink(left) };
                    flags = merge_flags(flags, l.flags);
                    weighted += l.freed_at_ms as u128 * l.npages() as u128;
                    start = l.start as usize;
                    npages += l.npages();
                    l.set_kind(SpanKind::None);
                    // SAFETY: a record of ours that now describes nothing; the merged run
                    // gets a record of its own below, which maps both its ends.
                    unsafe { Arena::retire_record(left) };
                }
            }
        }
        // Right neighbour: the run that starts on the page right after us.
        if end < ARENA_PAGES {
            // SAFETY: `end` is inside the arena.
            let right = unsafe { (*arena).run_at(end) };
            // SAFETY: a record of this arena (or null, no run); lock held.
            if let Some(r) = unsafe { right.as_mut() }
                && same_kind(r)
            {
                // SAFETY: a free run (kind `Free`), so on our lists.
                unsafe { self.unlink(right) };
                flags = merge_flags(flags, r.flags);
                weighted += r.freed_at_ms as u128 * r.npages() as u128;
                npages += r.npages();
                r.set_kind(SpanKind::None);
                // SAFETY: as for the left neighbour.
                unsafe { Arena::retire_record(right) };
            }
        }
        let freed_at = if dirty {
            (weighted / npages as u128) as u64
        } else {
            0
        };
        // SAFETY: the record describes nothing now (kind `None`), and the merged run gets
        // a record of its own, which maps both its ends.
        unsafe { Arena::retire_record(run) };
        // SAFETY: the merged pages are free pages of the arena in no run.
        unsafe { self.file_run(arena, start, npages, flags, freed_at) };
    }

    /// Calls `f` on the record of every span of every arena (free runs included, and runs
    /// being purged), in address order.
    ///
    /// Safe: it needs the heap's lock held, and `&self` proves that, since an `Inner` is only
    /// reachable through its `Locked` (a guard, or the unsafe `get_unchecked`).
    fn each_record(&self, mut f: impl FnMut(*mut Span)) {
        let mut arena = self.arenas;
        while !arena.is_null() {
            let mut page = HEADER_PAGES;
            while page < ARENA_PAGES {
                // SAFETY: an arena on our list.
                let run = unsafe { arena_ref(arena) }.run_at(page);
                // SAFETY: arenas are mapped for the life of the process; kinds and lengths
                // of span starts only change under the lock `&self` proves held. Runs tile
                // the arena, so `run` is never null; the test keeps a broken tiling from
                // looping forever.
                let Some(span) = (unsafe { run.as_ref() }) else {
                    page += 1;
                    continue;
                };
                if span.kind() == SpanKind::None {
                    page += 1;
                    continue;
                }
                page += span.npages().max(1);
                f(run);
            }
            // SAFETY: as above.
            arena = unsafe { arena_ref(arena) }.next;
        }
    }
}

/// The arena behind a record's arena pointer.
///
/// # Safety
/// `arena` must point to an arena header made by `Arena::reserve`: one on a heap's arena
/// list, or the arena of one of its span records (`arena::arena_of_span`).
unsafe fn arena_ref(arena: *mut Arena) -> &'static Arena {
    // SAFETY: an arena header (the contract); arenas are mapped for the life of the process
    // and never move.
    unsafe { &*arena }
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

    /// The lean part is asked to be collapsed once the heap's in-use bytes reach
    /// `lean_collapse_in_use()`, not before, and only once.
    #[test]
    fn a_heap_that_outgrows_its_lean_part_collapses_it_once() {
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        {
            // As `grow` files it when it advises huge pages past a lean part (the system's
            // THP setting decides that; here it is set, as other tests set `huge_pages`).
            let mut inner = heap.inner.lock();
            let base = inner.arenas.cast();
            inner.lean = Lean {
                base,
                len: thp::lean_bytes(),
                state: LeanState::Lean,
            };
        }
        let half = lean_collapse_in_use() / PAGE_SIZE / 2;
        let a = heap.alloc(half, SpanKind::Large).unwrap();
        assert_eq!(heap.inner.lock().lean.state, LeanState::Lean, "still small");
        let b = heap.alloc(half, SpanKind::Large).unwrap();
        // Collapsed on the spot, or left to a background purger if one runs.
        assert_ne!(heap.inner.lock().lean.state, LeanState::Lean, "outgrown");
        heap.collapse_lean_if_due();
        assert_eq!(heap.inner.lock().lean.state, LeanState::Settled);
        // SAFETY: nothing live.
        unsafe { heap.free(b.span) };
        let again = heap.alloc(half, SpanKind::Large).unwrap();
        assert_eq!(heap.inner.lock().lean.state, LeanState::Settled, "once");
        // SAFETY: nothing live.
        unsafe {
            for s in [pad, a, again] {
                heap.free(s.span);
            }
        }
        heap.check();
    }

    /// The first arena's huge-page advice waits for its lean part's worth of bytes in use,
    /// whatever range the heap's runs span.
    #[test]
    fn the_first_arena_is_advised_once_the_heap_uses_its_lean_part() {
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        let lean = thp::lean_bytes();
        let base = {
            // As `grow` files it under `auto` (the system's THP setting decides whether it
            // does; here it is set, as the test above sets its lean part).
            let mut inner = heap.inner.lock();
            let base = inner.arenas.cast();
            inner.lean = Lean {
                base,
                len: lean,
                state: LeanState::Unadvised,
            };
            // SAFETY: the heap's arena, ours under its lock.
            unsafe { (*inner.arenas).huge_pages = false };
            base
        };
        let room = heap.inner.lock().lean_room() / PAGE_SIZE;
        // With `pad`, one page short of the lean part's room.
        let most = heap.alloc(room - 2, SpanKind::Large).unwrap();
        assert_eq!(
            heap.inner.lock().lean.state,
            LeanState::Unadvised,
            "still small"
        );
        let rest = heap.alloc(1, SpanKind::Large).unwrap();
        let inner = heap.inner.lock();
        // Advised (`Lean`), or `Settled` on a kernel without huge pages (the advice failed).
        assert_ne!(
            inner.lean.state,
            LeanState::Unadvised,
            "in use: {}",
            inner.stats.in_use
        );
        assert_eq!(inner.lean.base, base);
        if inner.lean.state == LeanState::Lean {
            // SAFETY: as above.
            assert!(unsafe { (*inner.arenas).huge_pages });
        }
        drop(inner);
        // SAFETY: nothing live.
        unsafe {
            for s in [pad, most, rest] {
                heap.free(s.span);
            }
        }
        heap.check();
    }

    #[test]
    fn alloc_free_coalesces() {
        let heap = PageHeap::new(NodeId::ZERO);
        let a = heap.alloc(3, SpanKind::Large).unwrap();
        let b = heap.alloc(5, SpanKind::Large).unwrap();
        let c = heap.alloc(1, SpanKind::Small).unwrap();
        assert!(a.zeroed && b.zeroed && c.zeroed);
        // SAFETY: a live record.
        let a_base = unsafe { a.span.as_ref().base() };
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
        assert_eq!(
            stats.dirty,
            9 * PAGE_SIZE,
            "the three spans merged into one dirty run"
        );
        // A dirty run is reused before the clean rest of the arena.
        let again = heap.alloc(9, SpanKind::Large).unwrap();
        // SAFETY: a live record.
        unsafe { assert_eq!(again.span.as_ref().base(), a_base) };
        assert!(!again.zeroed, "the run holds pages that were handed out");
        // SAFETY: nothing live.
        unsafe { heap.free(again.span) };
        // Purged, the dirty run merges with the clean rest: the whole arena fits again.
        heap.purge(true);
        heap.check();
        assert_eq!(heap.stats().dirty, 0);
        let all = heap
            .alloc(ARENA_PAGES - HEADER_PAGES, SpanKind::Large)
            .unwrap();
        assert!(all.zeroed, "purged with MADV_DONTNEED, fresh elsewhere");
        assert_eq!(heap.stats().arenas, 1);
        // SAFETY: nothing live.
        unsafe { heap.free(all.span) };
        heap.check();
    }

    /// Records are handed out packed, whatever pages their spans start at: 64 spans of 64
    /// pages (4 MiB apart in records' terms, one 4 KiB record page each when a span's record
    /// was the slot of its first page), every other one freed, use the first 65 slots, so
    /// their records fill 3 pages of the header (issue #13, item 6). A merge gives its
    /// slots back for the next runs.
    #[test]
    fn records_stay_packed_however_far_apart_their_spans_start() {
        let heap = PageHeap::new(NodeId::ZERO);
        let spans: [Allocated; 64] =
            core::array::from_fn(|_| heap.alloc(64, SpanKind::Large).unwrap());
        for s in spans.iter().step_by(2) {
            // SAFETY: nothing live in the span.
            unsafe { heap.free(s.span) };
        }
        heap.check();
        let highest_slot = |heap: &PageHeap| {
            let (mut runs, mut top) = (0, 0);
            heap.for_each_span(|s| {
                runs += 1;
                // SAFETY: a record of one of the heap's arenas, which are never unmapped.
                let arena = unsafe { &*arena::arena_of_span(s) };
                top = top.max(arena.slot_of(s));
            });
            (runs, top as usize)
        };
        // 32 spans, 32 dirty runs between them, and the clean rest of the arena.
        let (runs, top) = highest_slot(&heap);
        assert_eq!(runs, 65);
        assert!(
            top <= runs,
            "records spread up to slot {top} for {runs} runs"
        );
        for s in spans.iter().skip(1).step_by(2) {
            // SAFETY: nothing live in the span.
            unsafe { heap.free(s.span) };
        }
        heap.check();
        // One dirty run and the clean rest: 64 new spans and the dirty run's rest take the
        // freed slots back, and one more.
        let again: [Allocated; 64] =
            core::array::from_fn(|_| heap.alloc(1, SpanKind::Large).unwrap());
        let (runs, top) = highest_slot(&heap);
        assert_eq!(runs, 66);
        assert!(
            top <= runs,
            "records spread up to slot {top} for {runs} runs"
        );
        // SAFETY: nothing live.
        unsafe {
            for s in again {
                heap.free(s.span);
            }
        }
        heap.check();
    }

    #[test]
    fn foreign_addresses_have_no_span() {
        let local = 5u64;
        assert!(live_span_of(&local as *const u64 as usize).is_none());
        assert!(live_span_of(0).is_none());
        assert!(live_span_of(usize::MAX).is_none());
    }
}
