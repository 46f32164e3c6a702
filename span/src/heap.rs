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
//! Each list set is 128 buckets by length (bucket `n` holds runs of exactly `n` pages,
//! bucket 128 every longer run), with a bitmap of non-empty buckets. A freed span looks at
//! the page-map entries just before and after it to find free neighbours: the page heap keeps
//! the first and last page of every free run mapped for exactly this.
//!
//! Purging (jemalloc's decay, in its simplest form): the heap remembers how many bytes were
//! freed in each of the last ten tenths of the decay time, and lets dirty memory stay up to
//! the sum of those, each weighted by a smoothstep falling from 1 (just freed) to 0 (freed a
//! whole decay time ago). Dirty bytes beyond that go back to the OS, oldest runs first (a
//! merged run's age is the byte-weighted mean of its parts'). A program that frees and
//! reallocates keeps what it is about to reuse; one that stops has everything back within
//! the decay time. In an arena backed by transparent huge pages, a decay purge returns only
//! the whole 2 MiB pages inside a run, so a purge never splits a huge page that is still
//! partly in use; purges that must return everything (`purge_all`: a limit, `collect`)
//! take whole runs. The advice (`madvise`) runs outside the heap's lock, on runs marked
//! `SpanKind::Purging` that nobody merges with meanwhile.
//!
//! Who runs the purges: the background purger of the `tessera` crate, every tenth of the
//! decay time while there is dirty memory; without one, the heap's own operations, when a
//! tenth has passed.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::arena::{self, ARENA_PAGES, ARENA_SIZE, Arena, HEADER_PAGES, PAGE_SHIFT, PAGE_SIZE};
use crate::commit;
use crate::list::SpanList;
use crate::lock::Locked;
use crate::os::{self, PurgeAdvice};
use crate::span::{FLAG_DIRTY, FLAG_ZEROED, Span, SpanKind};
use crate::thp;

/// The longest span a page heap can hand out: an arena minus its header.
pub const MAX_SPAN_PAGES: usize = ARENA_PAGES - HEADER_PAGES;

const BUCKETS: usize = 129;
const LARGE_BUCKET: usize = 128;

/// Index of the dirty and the clean list set.
const DIRTY: usize = 0;
const CLEAN: usize = 1;

/// Epochs of the decay window: the purge step runs once per epoch.
const EPOCHS: usize = 10;

/// Pages of a transparent huge page (2 MiB).
const HUGE_PAGE_PAGES: usize = crate::HUGE_PAGE_BYTES / PAGE_SIZE;

/// Runs purged per lock hold: the advice for a batch runs outside the lock.
const PURGE_BATCH: usize = 32;

/// The default decay time: a dropped structure that the program rebuilds within a second
/// is rebuilt in resident memory (mimalloc keeps freed memory about as long); a program
/// that goes idle has its free memory back within a second.
pub const DEFAULT_DECAY_MS: u64 = 1000;

/// Decay time in milliseconds; `u64::MAX` means never purge except when asked.
static DECAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_DECAY_MS);
static PURGE_ADVICE: AtomicU8 = AtomicU8::new(0);
/// A background purger runs the decay steps; the heap's own operations need not.
static BACKGROUND: AtomicBool = AtomicBool::new(false);
/// Some page heap has had dirty pages (the background purger starts then).
static DIRTY_SEEN: AtomicBool = AtomicBool::new(false);

/// Whether any page heap has ever held dirty pages.
#[inline]
pub fn dirty_seen() -> bool {
    DIRTY_SEEN.load(Ordering::Relaxed)
}

/// Sets the decay time (`u64::MAX`: never, 0: at once) and how pages are returned.
pub fn configure_purge(decay_ms: u64, advice: PurgeAdvice) {
    DECAY_MS.store(decay_ms, Ordering::Relaxed);
    PURGE_ADVICE.store(matches!(advice, PurgeAdvice::Free) as u8, Ordering::Relaxed);
}

/// The decay time in milliseconds (`u64::MAX`: never).
pub fn decay_ms() -> u64 {
    DECAY_MS.load(Ordering::Relaxed)
}

/// How long one purge epoch lasts: a tenth of the decay time, at least 1 ms.
pub fn epoch_ms() -> u64 {
    (decay_ms() / EPOCHS as u64).max(1)
}

/// Says whether a background purger runs the decay steps ([`PageHeap::purge_step`]).
pub fn set_background_purger(running: bool) {
    BACKGROUND.store(running, Ordering::Relaxed);
}

fn purge_advice() -> PurgeAdvice {
    if PURGE_ADVICE.load(Ordering::Relaxed) == 1 {
        PurgeAdvice::Free
    } else {
        PurgeAdvice::DontNeed
    }
}

/// Smoothstep weights: how much of what was freed `age` epochs ago may stay dirty, in 1/1024.
const fn decay_weights() -> [u64; EPOCHS] {
    let mut w = [0; EPOCHS];
    let mut age = 0;
    while age < EPOCHS {
        // x = age / EPOCHS, in 1/1024; weight = 1 - (3x^2 - 2x^3): 1 in the epoch of the
        // free, falling to 0 when the epoch leaves the window.
        let x = ((age as u64) << 10) / EPOCHS as u64;
        let step = (3 * x * x * 1024 - 2 * x * x * x) >> 20;
        w[age] = 1024u64.saturating_sub(step);
        age += 1;
    }
    w
}
const WEIGHTS: [u64; EPOCHS] = decay_weights();

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

/// What a purge step left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Bytes returned to the OS by this step.
    pub purged: usize,
    /// Dirty bytes left.
    pub dirty: usize,
}

/// A span the heap handed out.
#[derive(Clone, Copy, Debug)]
pub struct Allocated {
    /// The span record, kind already set.
    pub span: NonNull<Span>,
    /// Every page reads as zero (fresh or purged with `MADV_DONTNEED`).
    pub zeroed: bool,
}

/// One set of size-bucketed free lists.
struct FreeLists {
    buckets: [SpanList; BUCKETS],
    nonempty: [u64; 3],
}

/// Bytes made dirty per epoch, over the last `EPOCHS` epochs.
struct Decay {
    /// The epoch number (`now / epoch_ms`) `freed` was last advanced to.
    epoch: u64,
    freed: [usize; EPOCHS],
}

impl Decay {
    /// Moves the window to `now`, dropping epochs that left it.
    fn advance(&mut self, now: u64) {
        let epoch = now / epoch_ms();
        if epoch <= self.epoch {
            return;
        }
        let gone = (epoch - self.epoch).min(EPOCHS as u64);
        for k in 1..=gone {
            self.freed[((self.epoch + k) % EPOCHS as u64) as usize] = 0;
        }
        self.epoch = epoch;
    }

    fn note(&mut self, bytes: usize, now: u64) {
        self.advance(now);
        self.freed[(self.epoch % EPOCHS as u64) as usize] += bytes;
    }

    /// Dirty bytes the curve lets stay at `now`.
    fn allowed(&mut self, now: u64) -> usize {
        self.advance(now);
        let mut sum: u128 = 0;
        for (age, weight) in WEIGHTS.iter().enumerate() {
            let slot = (self.epoch + EPOCHS as u64 - age as u64) % EPOCHS as u64;
            sum += self.freed[slot as usize] as u128 * *weight as u128;
        }
        (sum >> 10) as usize
    }
}

struct Inner {
    node: u32,
    lists: [FreeLists; 2],
    arenas: *mut Arena,
    stats: PageHeapStats,
    decay: Decay,
    /// When the heap's own operations should run the next decay step (no background
    /// purger); `u64::MAX` with nothing dirty.
    next_step_ms: u64,
}

// SAFETY: the raw pointers name arena memory that lives for the whole process; every access
// happens under the page heap's lock.
unsafe impl Send for Inner {}

/// One NUMA node's page heap.
#[derive(Debug)]
pub struct PageHeap {
    inner: Locked<Inner>,
}

/// A run taken off the lists to be purged outside the lock.
#[derive(Clone, Copy)]
struct InFlight {
    run: *mut Span,
}

/// Which dirty runs a purge step takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Beyond what the decay curve allows, oldest first, whole huge pages only where THP.
    Decay,
    /// Every dirty byte.
    All,
}

impl PageHeap {
    /// An empty heap for `node`; arenas are reserved on demand.
    pub const fn new(node: u32) -> Self {
        const EMPTY: FreeLists = FreeLists {
            buckets: [SpanList::EMPTY; BUCKETS],
            nonempty: [0; 3],
        };
        Self {
            inner: Locked::new(Inner {
                node,
                lists: [EMPTY, EMPTY],
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
                decay: Decay {
                    epoch: 0,
                    freed: [0; EPOCHS],
                },
                next_step_ms: u64::MAX,
            }),
        }
    }

    /// Hands out a span of `npages` pages marked `kind`, or `None` when the OS refuses memory
    /// or the hard memory limit would be crossed.
    pub fn alloc(&self, npages: usize, kind: SpanKind) -> Option<Allocated> {
        // SAFETY: the carved run, unchanged, is the span of `npages` pages asked for.
        unsafe { self.alloc_with(npages, npages, kind, |_, run| run) }
    }

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

    /// Carves `total` pages (from a dirty run if one fits, else a clean one, growing the
    /// heap by an arena if none fits), lets `shape` cut the span it wants out of them, and
    /// hands that out. A clean run must fit under the hard limit; if it does not, the heap
    /// returns its dirty pages to the OS and tries once more.
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
        let mut heap = self.inner.lock();
        let run = loop {
            let Some(run) = heap.take_fit(total) else {
                heap.grow().ok()?;
                continue;
            };
            // SAFETY: a run just unlinked under the lock.
            let clean = unsafe { (*run).flags } & FLAG_DIRTY == 0;
            if !clean || commit::try_commit(total * PAGE_SIZE) {
                break run;
            }
            // SAFETY: the free run `take_fit` just unlinked, back on its list.
            unsafe { heap.push(run) };
            if purged_for_limit || heap.stats.dirty == 0 {
                return None;
            }
            purged_for_limit = true;
            drop(heap);
            self.purge_all();
            heap = self.inner.lock();
        };
        // SAFETY: `run` is a free run just unlinked under the lock, at least `total` long.
        let zeroed = unsafe { heap.carve(run, total, kind) };
        let span = shape(&mut heap, run);
        #[cfg(feature = "expensive-checks")]
        heap.check();
        let step_due = heap.step_due();
        drop(heap);
        if step_due {
            self.purge_step();
        }
        // SAFETY: records live in arena headers, never at null.
        let span = unsafe { NonNull::new_unchecked(span) };
        Some(Allocated { span, zeroed })
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

    /// Returns free pages to the OS: with `force` every dirty page, else what the decay
    /// curve does not let stay ([`PageHeap::purge_step`]).
    pub fn purge(&self, force: bool) {
        if force {
            self.purge_all();
        } else {
            self.purge_step();
        }
    }

    /// One decay step: returns to the OS the dirty bytes beyond what the decay curve lets
    /// stay now, oldest first. The background purger calls this once per epoch.
    pub fn purge_step(&self) -> PurgeOutcome {
        self.run_purge(Goal::Decay, os::now_ms())
    }

    /// Returns every dirty page to the OS (a limit was reached, or the program asked).
    pub fn purge_all(&self) -> PurgeOutcome {
        self.run_purge(Goal::All, os::now_ms())
    }

    /// A purge step for `goal` as of `now` (milliseconds of `os::now_ms`).
    fn run_purge(&self, goal: Goal, now: u64) -> PurgeOutcome {
        let advice = purge_advice();
        let mut outcome = PurgeOutcome::default();
        loop {
            let mut batch = [InFlight {
                run: ptr::null_mut(),
            }; PURGE_BATCH];
            let taken = {
                let mut heap = self.inner.lock();
                heap.next_step_ms = u64::MAX;
                let taken = heap.take_for_purge(goal, now, &mut batch);
                outcome.dirty = heap.stats.dirty;
                if heap.stats.dirty > 0 {
                    heap.next_step_ms = now.saturating_add(epoch_ms());
                }
                taken
            };
            if taken == 0 {
                return outcome;
            }
            let mut ok = [false; PURGE_BATCH];
            for (done, flight) in ok.iter_mut().zip(&batch[..taken]) {
                // SAFETY: the run is ours alone (kind `Purging`, on no list) and holds no
                // live data; it lies in one of our arenas.
                let s = unsafe { &*flight.run };
                // SAFETY: as above.
                *done = unsafe { os::purge(s.base(), s.bytes(), advice) }.is_ok();
            }
            let mut heap = self.inner.lock();
            for (flight, done) in batch[..taken].iter().zip(ok) {
                // SAFETY: a run this step took; lock held.
                let bytes = unsafe { (*flight.run).bytes() };
                heap.stats.purging -= bytes;
                let (flags, when) = if !done {
                    heap.stats.dirty += bytes;
                    (FLAG_DIRTY, now)
                } else {
                    heap.stats.purged_total += bytes as u64;
                    commit::uncommit(bytes);
                    outcome.purged += bytes;
                    let zeroed = advice == PurgeAdvice::DontNeed;
                    (if zeroed { FLAG_ZEROED } else { 0 }, 0)
                };
                // SAFETY: the run's pages are free and its record is ours; lock held.
                unsafe { heap.insert_free(flight.run, flags, when) };
            }
            outcome.dirty = heap.stats.dirty;
            #[cfg(feature = "expensive-checks")]
            heap.check();
            if taken < PURGE_BATCH {
                return outcome;
            }
        }
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
        // SAFETY: records of our arenas, read under the lock we hold.
        heap.each_record(|run| f(unsafe { &*run }));
    }

    /// In a forked child, after the fork handlers released the locks: runs the parent's
    /// purger was returning to the OS at the moment of the fork (marked `Purging`, on no
    /// list, outside the lock) have no purger to finish them here; they go back on the dirty
    /// lists, so no free page is lost to the child.
    ///
    /// # Safety
    /// No purge of this heap may be in progress in this process: only in a forked child,
    /// before any thread other than the forking one exists. (A purge in flight would file
    /// its runs a second time when it completes.)
    pub unsafe fn recover_after_fork(&self) {
        let mut heap = self.inner.lock();
        if heap.stats.purging == 0 {
            return;
        }
        // A purge step has at most one batch in flight.
        let mut stranded = [ptr::null_mut::<Span>(); PURGE_BATCH];
        let mut count = 0;
        heap.each_record(|run| {
            // SAFETY: a record of our arenas, under the lock.
            if unsafe { (*run).kind() } == SpanKind::Purging && count < PURGE_BATCH {
                stranded[count] = run;
                count += 1;
            }
        });
        let now = os::now_ms();
        for &run in &stranded[..count] {
            // SAFETY: as above.
            let bytes = unsafe { (*run).bytes() };
            heap.stats.purging -= bytes;
            heap.stats.dirty += bytes;
            // SAFETY: an in-flight run of this heap whose purge will never complete (the
            // contract): free pages in no list.
            unsafe { heap.insert_free(run, FLAG_DIRTY, now) };
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

    fn set_of(span: &Span) -> usize {
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
    unsafe fn push(&mut self, run: *mut Span) {
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
    unsafe fn unlink(&mut self, run: *mut Span) {
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
    fn take_fit(&mut self, npages: usize) -> Option<*mut Span> {
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

    /// Reserves one more arena and files its usable pages as one clean run.
    fn grow(&mut self) -> Result<(), os::OsError> {
        let advice = thp::arena_advice(self.node, self.stats.arenas == 0);
        let system_always = thp::system_always();
        let mut huge_pages = system_always;
        let arena = Arena::reserve(self.node, |base| {
            if let Some((huge, lean)) = advice {
                // SAFETY: the range lies in the arena, a fresh mapping of ours.
                let advised =
                    unsafe { os::advise_huge_pages(base.add(lean), ARENA_SIZE - lean, huge) };
                huge_pages = advised.map_or(system_always, |()| huge);
            }
        })?
        .as_ptr();
        let header = HEADER_PAGES * PAGE_SIZE;
        commit::commit(header);
        // SAFETY: the arena is fresh and ours; lock held. Its one free run starts at
        // `HEADER_PAGES`, inside the arena, and is on no list yet.
        unsafe {
            (*arena).huge_pages = huge_pages;
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
        self.stats.headers += header;
        self.stats.free += (ARENA_PAGES - HEADER_PAGES) * PAGE_SIZE;
        Ok(())
    }

    /// Files pages `start..start + npages` of `arena` as a free run with `flags` and
    /// `freed_at`, without merging (its neighbours are known not to be free runs of its
    /// kind), and returns its record.
    ///
    /// # Safety
    /// The pages must be free pages of `arena` in no run; lock held.
    unsafe fn file_run(
        &mut self,
        arena: *mut Arena,
        start: usize,
        npages: usize,
        flags: u8,
        freed_at: u64,
    ) -> *mut Span {
        // SAFETY: per the contract, the record slot at `start` is unused.
        let run = unsafe { &mut *(*arena).span_at(start) };
        run.start = start as u32;
        run.npages = npages as u32;
        run.flags = flags;
        run.freed_at_ms = freed_at;
        run.set_kind(SpanKind::Free);
        // SAFETY: both pages lie in the arena, and `start`, the first of its free pages (the
        // contract), is past the header.
        unsafe {
            (*arena).map_page(start, start);
            (*arena).map_page(start + npages - 1, start);
        }
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
            // SAFETY: the span's pages lie in the arena, and `start` is a run's first page.
            unsafe { (*arena).map_page(page, start) };
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
        let now = os::now_ms();
        let freed_at = if fresh {
            self.decay.note(bytes, now);
            now
        } else {
            now.saturating_sub(decay_ms().min(u64::MAX / 2))
        };
        if !DIRTY_SEEN.load(Ordering::Relaxed) {
            DIRTY_SEEN.store(true, Ordering::Relaxed);
        }
        if self.next_step_ms == u64::MAX {
            self.next_step_ms = now.saturating_add(epoch_ms());
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
                }
            }
        }
        // Right neighbour: its record is the slot of the page right after us.
        if end < ARENA_PAGES {
            // SAFETY: `end` is inside the arena.
            let right = unsafe { (*arena).span_at(end) };
            // SAFETY: a record slot of this arena; lock held.
            let r = unsafe { &mut *right };
            if same_kind(r) {
                // SAFETY: a free run (kind `Free`), so on our lists.
                unsafe { self.unlink(right) };
                flags = merge_flags(flags, r.flags);
                weighted += r.freed_at_ms as u128 * r.npages() as u128;
                npages += r.npages();
                r.set_kind(SpanKind::None);
            }
        }
        let freed_at = if dirty {
            (weighted / npages as u128) as u64
        } else {
            0
        };
        // SAFETY: the merged pages are free pages of the arena in no run.
        unsafe { self.file_run(arena, start, npages, flags, freed_at) };
    }

    /// Whether the heap's own operations should run a decay step now: dirty pages wait,
    /// an epoch has passed since the last step, and no background purger runs the steps
    /// (or the decay time is zero: purge at once).
    fn step_due(&self) -> bool {
        if self.next_step_ms == u64::MAX {
            return false;
        }
        let decay = decay_ms();
        if decay == 0 {
            return true;
        }
        decay != u64::MAX
            && !BACKGROUND.load(Ordering::Relaxed)
            && os::now_ms() >= self.next_step_ms
    }

    /// Takes up to `PURGE_BATCH` dirty runs (or parts of runs) for `goal` off the lists,
    /// marks them `Purging` and returns how many went into `batch`.
    fn take_for_purge(&mut self, goal: Goal, now: u64, batch: &mut [InFlight]) -> usize {
        let decay = decay_ms();
        let mut want = match goal {
            Goal::All => self.stats.dirty,
            Goal::Decay if decay == u64::MAX => 0,
            Goal::Decay => {
                let allowed = if decay == 0 {
                    0
                } else {
                    self.decay.allowed(now)
                };
                self.stats.dirty.saturating_sub(allowed)
            }
        };
        if want == 0 {
            return 0;
        }
        // Oldest first: find the youngest age (in epochs, capped) whose runs and older
        // ones hold `want` bytes, then take runs at least that old.
        let epoch = epoch_ms();
        let age_of =
            |s: &Span| (now.saturating_sub(s.freed_at_ms) / epoch).min(EPOCHS as u64) as usize;
        let mut by_age = [0usize; EPOCHS + 1];
        self.each_dirty(|s| by_age[age_of(s)] += s.bytes());
        let mut cutoff = EPOCHS;
        let mut older = by_age[EPOCHS];
        while older < want && cutoff > 0 {
            cutoff -= 1;
            older += by_age[cutoff];
        }
        // Where huge pages back the arena, a decay purge returns whole ones only, until
        // the run has sat unused for the whole decay time; a purge returns what the curve
        // asks for from the run's end, keeping the rest dirty.
        let range = |s: &Span| {
            let (start, end) = (s.start as usize, s.start as usize + s.npages());
            let arena = arena::arena_of_span(s);
            // SAFETY: arenas outlive their records.
            let huge = goal == Goal::Decay && age_of(s) < EPOCHS && unsafe { (*arena).huge_pages };
            let (lo, hi) = if huge {
                (
                    start.next_multiple_of(HUGE_PAGE_PAGES),
                    end / HUGE_PAGE_PAGES * HUGE_PAGE_PAGES,
                )
            } else {
                (start, end)
            };
            (lo < hi).then_some((lo, hi, huge))
        };
        let mut picked = [ptr::null_mut::<Span>(); PURGE_BATCH];
        let mut count = 0;
        self.each_dirty(|s| {
            if count < batch.len() && age_of(s) >= cutoff && range(s).is_some() {
                picked[count] = s as *const Span as *mut Span;
                count += 1;
            }
        });
        let mut taken = 0;
        for &run in &picked[..count] {
            if want == 0 {
                break;
            }
            // SAFETY: a dirty run of our lists; lock held.
            let s = unsafe { &*run };
            let arena = arena::arena_of_span(run);
            let (start, npages) = (s.start as usize, s.npages());
            let Some((lo, hi, huge)) = range(s) else {
                continue;
            };
            let mut need = want.div_ceil(PAGE_SIZE);
            if huge {
                need = need.next_multiple_of(HUGE_PAGE_PAGES);
            }
            let (from, to) = (hi - need.min(hi - lo), hi);
            let freed_at = s.freed_at_ms;
            // SAFETY: a dirty run picked off our lists above and still on them: each run is
            // picked once, and the runs filed in between are parts of earlier picks.
            unsafe { self.unlink(run) };
            // SAFETY: the head and tail are free pages of the arena, now in no run; their
            // other neighbours are not dirty free runs (the run was merged to the full).
            // `from` lies in the run, past the header.
            unsafe {
                if from > start {
                    self.file_run(arena, start, from - start, FLAG_DIRTY, freed_at);
                }
                if to < start + npages {
                    self.file_run(arena, to, start + npages - to, FLAG_DIRTY, freed_at);
                }
                let body = &mut *(*arena).span_at(from);
                body.start = from as u32;
                body.npages = (to - from) as u32;
                body.flags = 0;
                body.clear_links();
                body.set_kind(SpanKind::Purging);
                (*arena).map_page(from, from);
                (*arena).map_page(to - 1, from);
            }
            let bytes = (to - from) * PAGE_SIZE;
            self.stats.dirty -= bytes;
            self.stats.purging += bytes;
            want = want.saturating_sub(bytes);
            // SAFETY: the arena of one of our records.
            let run = unsafe { arena_ref(arena) }.span_at(from);
            batch[taken] = InFlight { run };
            taken += 1;
        }
        taken
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
                let run = unsafe { arena_ref(arena) }.span_at(page);
                // SAFETY: arenas are mapped for the life of the process; kinds and lengths
                // of span starts only change under the lock `&self` proves held.
                let span = unsafe { &*run };
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

    /// Calls `f` on every dirty run.
    fn each_dirty(&self, mut f: impl FnMut(&Span)) {
        for bucket in &self.lists[DIRTY].buckets {
            for at in bucket.iter() {
                // SAFETY: list members are valid records; lock held.
                f(unsafe { &*at });
            }
        }
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
            body.clear_links();
            body.set_kind(span.kind());
            for page in start + lead..start + total {
                // SAFETY: pages of the body lie in the arena; its first, `start + lead`, is
                // inside the span, so past the header.
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
        if r.flags & FLAG_DIRTY == 0 && !commit::try_commit(need * PAGE_SIZE) {
            return false;
        }
        // SAFETY: a free run (kind `Free`), so on our lists.
        unsafe { self.unlink(right) };
        // Carve `need` pages off the neighbour as if for a span, then absorb them.
        // SAFETY: `right` is an unlinked free run of at least `need` pages.
        unsafe { self.carve(right, need, SpanKind::Large) };
        // SAFETY: `right` is now an in-use record of this arena.
        unsafe { (*right).set_kind(SpanKind::None) };
        span.npages = npages as u32;
        let start = span.start as usize;
        for page in end..start + npages {
            // SAFETY: pages of the grown span lie in the arena, and `start` is its first.
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
            // SAFETY: pages of the tail lie in the arena, and its first, `start + npages`, is
            // inside the span, so past the header.
            unsafe { (*arena).map_page(page, start + npages) };
        }
        // SAFETY: the tail is an in-use span of this heap holding no live object.
        unsafe { self.release(tail) };
    }

    /// Walks every free list and checks it against the page map and the counters. Aborts
    /// with a message on a broken invariant: it runs under the heap lock, from inside the
    /// allocator, where a panic could not unwind safely.
    fn check(&self) {
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
                        let right = unsafe { &*(*arena).span_at(end) };
                        verify(
                            right.kind() != SpanKind::Free || Self::set_of(right) != set,
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
        assert_eq!(
            stats.dirty,
            9 * PAGE_SIZE,
            "the three spans merged into one dirty run"
        );
        // A dirty run is reused before the clean rest of the arena.
        let again = heap.alloc(9, SpanKind::Large).unwrap();
        // SAFETY: both records are live.
        unsafe { assert_eq!(again.span.as_ref().base(), a.span.as_ref().base()) };
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
    fn decay_weights_fall_from_one_to_zero() {
        assert_eq!(WEIGHTS[0], 1024, "what was freed this epoch stays");
        assert!(WEIGHTS.windows(2).all(|w| w[0] > w[1]), "{WEIGHTS:?}");
        assert!(WEIGHTS[EPOCHS - 1] > 0 && WEIGHTS[EPOCHS - 1] < 64);
        assert_eq!(WEIGHTS[EPOCHS / 2], 512, "smoothstep is symmetric");
        let mut decay = Decay {
            epoch: 0,
            freed: [0; EPOCHS],
        };
        let e = epoch_ms();
        let t = 1000 * e;
        decay.note(1 << 20, t);
        assert_eq!(decay.allowed(t), 1 << 20);
        assert_eq!(decay.allowed(t + 5 * e), 1 << 19);
        assert_eq!(decay.allowed(t + EPOCHS as u64 * e), 0, "out of the window");
        assert_eq!(decay.allowed(t), 0, "time does not run backwards");
    }

    /// A decay step purges the part of a dirty run the curve does not allow, from its end,
    /// and a step one decay time later the rest; the times are the run's own, so nothing
    /// here depends on how fast the test runs.
    #[test]
    fn decay_purges_part_of_a_run_then_all() {
        let heap = PageHeap::new(0);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        // 4 KiB pages for this arena whatever `TESSERA_THP` says (the curve, not the huge
        // page rounding, is under test here).
        // SAFETY: the heap's one arena, under its lock.
        unsafe { (*heap.inner.lock().arenas).huge_pages = false };
        let a = heap.alloc(64, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: fresh spans; we dirty one and free it.
        let freed_at = unsafe {
            let base = a.span.as_ref().base();
            core::ptr::write_bytes(base, 0xAB, 64 * PAGE_SIZE);
            heap.free(a.span);
            a.span.as_ref().freed_at_ms
        };
        let e = epoch_ms();
        assert_eq!(
            heap.run_purge(Goal::Decay, freed_at).purged,
            0,
            "just freed: stays"
        );
        let half = heap.run_purge(Goal::Decay, freed_at + 5 * e);
        heap.check();
        assert_eq!(half.purged, 32 * PAGE_SIZE, "smoothstep at half the window");
        assert_eq!(half.dirty, 32 * PAGE_SIZE);
        // SAFETY: the run's pages are ours; the head is still dirty, the tail purged.
        unsafe {
            let base = a.span.as_ref().base();
            assert_eq!(
                os::resident_pages(base, 32 * PAGE_SIZE).unwrap() * os::page_size(),
                32 * PAGE_SIZE
            );
            assert_eq!(
                os::resident_pages(base.add(32 * PAGE_SIZE), 32 * PAGE_SIZE).unwrap(),
                0
            );
        }
        let rest = heap.run_purge(Goal::Decay, freed_at + EPOCHS as u64 * e);
        assert_eq!((rest.purged, rest.dirty), (32 * PAGE_SIZE, 0));
        heap.check();
        // SAFETY: nothing live.
        unsafe {
            heap.free(pad.span);
            heap.free(end.span);
        }
        heap.purge(true);
        heap.check();
        assert_eq!(heap.stats().free, MAX_SPAN_PAGES * PAGE_SIZE);
    }

    /// In an arena backed by huge pages, a decay purge returns whole 2 MiB pages only, until
    /// the run is older than the decay time.
    #[test]
    fn decay_purges_whole_huge_pages_only() {
        let heap = PageHeap::new(0);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: the heap's one arena, under its lock.
        unsafe { (*heap.inner.lock().arenas).huge_pages = true };
        // A run of three huge pages' worth, not aligned: one whole huge page inside at least.
        let a = heap.alloc(3 * HUGE_PAGE_PAGES, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: fresh spans; nothing live in `a`.
        let freed_at = unsafe {
            heap.free(a.span);
            a.span.as_ref().freed_at_ms
        };
        let e = epoch_ms();
        let step = heap.run_purge(Goal::Decay, freed_at + 5 * e);
        heap.check();
        assert!(step.purged > 0 && step.purged.is_multiple_of(HUGE_PAGE_PAGES * PAGE_SIZE));
        let rest = heap.run_purge(Goal::Decay, freed_at + EPOCHS as u64 * e);
        assert_eq!(rest.dirty, 0, "a run older than the decay time goes whole");
        heap.check();
        // SAFETY: nothing live.
        unsafe {
            heap.free(pad.span);
            heap.free(end.span);
        }
    }

    /// A fork in the middle of a purge leaves runs marked `Purging` in the child; recovery
    /// puts them back on the dirty lists, counters and all.
    #[test]
    fn runs_in_flight_at_a_fork_go_back_to_the_dirty_lists() {
        let heap = PageHeap::new(0);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        let a = heap.alloc(16, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: nothing live in `a`.
        unsafe { heap.free(a.span) };
        let dirty = heap.stats().dirty;
        let mut batch = [InFlight {
            run: ptr::null_mut(),
        }; PURGE_BATCH];
        let taken = heap
            .inner
            .lock()
            .take_for_purge(Goal::All, os::now_ms(), &mut batch);
        assert_eq!(taken, 1);
        assert_eq!(heap.stats().purging, dirty);
        heap.check();
        // SAFETY: nothing purges this test's own heap meanwhile.
        unsafe { heap.recover_after_fork() };
        let stats = heap.stats();
        assert_eq!((stats.purging, stats.dirty), (0, dirty));
        heap.check();
        // The run is a dirty run again: the next request of its size reuses it.
        let again = heap.alloc(16, SpanKind::Large).unwrap();
        // SAFETY: both records are live.
        unsafe { assert_eq!(again.span.as_ref().base(), a.span.as_ref().base()) };
        // SAFETY: nothing live.
        unsafe {
            heap.free(again.span);
            heap.free(pad.span);
            heap.free(end.span);
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
