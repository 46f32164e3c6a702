//! Purging: returning a page heap's dirty pages to the OS. Dirty bytes beyond what the decay
//! curve (`decay.rs`) lets stay go back to the OS, oldest runs first (a merged run's age is
//! the byte-weighted mean of its parts'). In an arena backed by transparent huge pages, a
//! decay purge returns only the whole 2 MiB pages inside a run, so a purge never splits a
//! huge page that is still partly in use; purges that must return everything (`purge_all`:
//! a limit, `collect`) take whole runs. The advice (`madvise`) runs outside the heap's lock,
//! on runs marked `SpanKind::Purging` that nobody merges with meanwhile.
//!
//! Who runs the purges: the background purger of the `tessera` crate, every tenth of the
//! decay time while there is dirty memory; without one, the heap's own operations, when a
//! tenth has passed. And the heap itself when it commits fresh pages while more than
//! `GROWTH_KEEP` dirty bytes wait: as many of the oldest go back (`Goal::Growth`), so the
//! footprint does not grow by freed pages nothing reuses.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tessera_sys::clock;
use tessera_sys::mem::{self, PurgeAdvice};

use super::decay::{DECAY_MS, EPOCHS, decay_ms, epoch_ms};
use super::{Inner, NO_STEP, PageHeap, next_step};
use crate::arena::{self, PAGE_SIZE};
use crate::commit;
use crate::span::{FLAG_DIRTY, FLAG_ZEROED, Span, SpanKind};

/// Pages of a transparent huge page (2 MiB).
const HUGE_PAGE_PAGES: usize = crate::HUGE_PAGE_BYTES / PAGE_SIZE;

/// Dirty bytes a growth purge leaves (`Goal::Growth`): glibc's default trim threshold, the
/// free top of its heap it keeps before it gives memory back.
pub(super) const GROWTH_KEEP: usize = 128 << 10;
/// Epochs a dirty run must have waited before a growth purge takes it: runs freed within the
/// last tenth of the decay time are a churning program's next allocations. Taken at once,
/// they cost mimalloc-bench's `mstress` a third more page faults (12,700 against 9,500 in a
/// second); from an epoch on, none more.
const GROWTH_MIN_AGE: usize = 1;

/// Runs purged per lock hold: the advice for a batch runs outside the lock.
const PURGE_BATCH: usize = 32;

static PURGE_ADVICE: AtomicU8 = AtomicU8::new(0);
/// A background purger runs the decay steps; the heap's own operations need not.
static BACKGROUND: AtomicBool = AtomicBool::new(false);
/// Some page heap has had dirty pages (the background purger starts then).
pub(super) static DIRTY_SEEN: AtomicBool = AtomicBool::new(false);

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

/// Says whether a background purger runs the decay steps ([`PageHeap::purge_step`]).
pub fn set_background_purger(running: bool) {
    BACKGROUND.store(running, Ordering::Relaxed);
}

/// Whether a background purger runs (`set_background_purger`).
pub(super) fn background_purger() -> bool {
    BACKGROUND.load(Ordering::Relaxed)
}

fn purge_advice() -> PurgeAdvice {
    if PURGE_ADVICE.load(Ordering::Relaxed) == 1 {
        PurgeAdvice::Free
    } else {
        PurgeAdvice::DontNeed
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
    /// Up to this many bytes beyond `GROWTH_KEEP`, oldest first, none younger than
    /// `GROWTH_MIN_AGE`: the heap just committed that many fresh bytes while dirty ones
    /// waited (`PageHeap::purge_for_growth`).
    Growth(usize),
}

impl PageHeap {
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
        self.run_purge(Goal::Decay, clock::coarse_now_ms())
    }

    /// After the program committed `grown` fresh bytes while dirty pages waited here: by
    /// this heap (none of its dirty runs fit the span), or outside it (a huge block's own
    /// mapping, `large::alloc` of the `tessera` crate). Returns as many of the oldest dirty
    /// bytes beyond `GROWTH_KEEP` to the OS, so that a program's footprint does not grow by
    /// what it freed and does not reuse (Go's scavenger also scavenges on heap growth).
    /// Without it, the decay curve let python3 (the runner's programs) reach its peak with
    /// 816 KiB of dirty pages, freed blocks that its later, larger blocks did not fit in (its
    /// peak RSS fell by 0.5-0.6 MiB with it), and rayon's merged hash maps (33 and 66 MiB
    /// tables, huge blocks) were mapped while the 8 and 16 MiB tables of earlier merges
    /// waited on the decay curve: 40-75 MiB dirty at its peak (issue #13).
    pub fn purge_for_growth(&self, grown: usize) -> PurgeOutcome {
        self.run_purge(Goal::Growth(grown), clock::coarse_now_ms())
    }

    /// Returns every dirty page to the OS (a limit was reached, or the program asked).
    pub fn purge_all(&self) -> PurgeOutcome {
        self.run_purge(Goal::All, clock::coarse_now_ms())
    }

    /// A purge step for `goal` as of `now` (milliseconds of `clock::coarse_now_ms`).
    fn run_purge(&self, goal: Goal, now: u64) -> PurgeOutcome {
        let advice = purge_advice();
        let mut outcome = PurgeOutcome::default();
        loop {
            let mut batch = [InFlight {
                run: ptr::null_mut(),
            }; PURGE_BATCH];
            let taken = {
                let mut heap = self.inner.lock();
                let taken = heap.take_for_purge(goal, now, &mut batch);
                outcome.dirty = heap.stats.dirty;
                // A decay step (or a purge of everything) schedules the next one; a growth
                // purge is no decay step and leaves the schedule alone: a heap that grows
                // more often than once an epoch would otherwise never run its decay.
                if !matches!(goal, Goal::Growth(_)) {
                    heap.next_step_ms = if heap.stats.dirty > 0 {
                        next_step(now)
                    } else {
                        NO_STEP
                    };
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
                *done = unsafe { mem::purge(s.base(), s.bytes(), advice) }.is_ok();
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

    /// Returns an in-use span's pages to the OS at once and files them as a clean run: for a
    /// block the caller expects no reuse of (the `tessera` crate's large blocks above its
    /// purge-on-free threshold, what glibc would have given its own mapping and unmapped
    /// at `free`). The advice runs before the lock is taken: the span is still ours alone.
    /// In an arena backed by transparent huge pages, or if the advice fails, the span is
    /// freed as usual (dirty, on the decay curve), so no huge page is split here. Returns
    /// whether the pages went back to the OS.
    ///
    /// # Safety
    /// As [`PageHeap::free`]. The span record must not be used after the call (another
    /// thread may allocate its pages as soon as the heap's lock is released).
    pub unsafe fn free_returned(&self, span: NonNull<Span>) -> bool {
        let run = span.as_ptr();
        // SAFETY: the caller's span record, in use and ours (the contract).
        let (base, bytes) = unsafe { ((*run).base(), (*run).bytes()) };
        let huge = {
            // The flag changes under the lock (`advise_past_lean`).
            let _heap = self.inner.lock();
            // SAFETY: the arena of one of our records, mapped for the life of the process.
            unsafe { (*arena::arena_of_span(run)).huge_pages }
        };
        let advice = purge_advice();
        // SAFETY: the span's pages hold no live object (the contract) and lie in one of our
        // arenas; nobody else touches them until it is filed below.
        if huge || unsafe { mem::purge(base, bytes, advice) }.is_err() {
            // SAFETY: forwarded contract.
            unsafe { self.free(span) };
            return false;
        }
        let mut heap = self.inner.lock();
        heap.stats.in_use -= bytes;
        heap.stats.free += bytes;
        heap.stats.purged_total += bytes as u64;
        commit::uncommit(bytes);
        let flags = if advice == PurgeAdvice::DontNeed {
            FLAG_ZEROED
        } else {
            0
        };
        // SAFETY: the span's pages are free (the contract) and in no run; lock held.
        unsafe { heap.insert_free(run, flags, 0) };
        #[cfg(feature = "expensive-checks")]
        heap.check();
        true
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
        let now = clock::coarse_now_ms();
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
}

impl Inner {
    /// Whether the heap's own operations should run a decay step now: dirty pages wait,
    /// an epoch has passed since the last step, and no background purger runs the steps
    /// (or the decay time is zero: purge at once).
    pub(super) fn step_due(&self) -> bool {
        if self.next_step_ms == NO_STEP {
            return false;
        }
        let decay = decay_ms();
        if decay == 0 {
            return true;
        }
        decay != u64::MAX
            && !BACKGROUND.load(Ordering::Relaxed)
            && clock::coarse_now_ms() >= self.next_step_ms
    }

    /// Takes up to `PURGE_BATCH` dirty runs (or parts of runs) for `goal` off the lists,
    /// marks them `Purging` and returns how many went into `batch`.
    fn take_for_purge(&mut self, goal: Goal, now: u64, batch: &mut [InFlight]) -> usize {
        let decay = decay_ms();
        let mut want = match goal {
            Goal::All => self.stats.dirty,
            // A decay time of "never": only a purge of everything returns memory.
            Goal::Decay | Goal::Growth(_) if decay == u64::MAX => 0,
            Goal::Growth(grown) => self.stats.dirty.saturating_sub(GROWTH_KEEP).min(grown),
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
        let youngest = if matches!(goal, Goal::Growth(_)) {
            GROWTH_MIN_AGE
        } else {
            0
        };
        while older < want && cutoff > youngest {
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
            let huge = goal != Goal::All && age_of(s) < EPOCHS && unsafe { (*arena).huge_pages };
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
                // The run's record, unlinked, describes the part being purged.
                let body = &mut *run;
                body.start = from as u32;
                body.npages = (to - from) as u32;
                body.flags = 0;
                body.clear_links();
                body.set_kind(SpanKind::Purging);
                (*arena).map_page(from, run);
                (*arena).map_page(to - 1, run);
            }
            let bytes = (to - from) * PAGE_SIZE;
            self.stats.dirty -= bytes;
            self.stats.purging += bytes;
            want = want.saturating_sub(bytes);
            batch[taken] = InFlight { run };
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use tessera_numa::NodeId;

    use super::*;
    use crate::heap::MAX_SPAN_PAGES;

    #[test]
    fn purge_returns_pages_and_marks_zero() {
        let heap = PageHeap::new(NodeId::ZERO);
        let a = heap.alloc(16, SpanKind::Large).unwrap();
        // SAFETY: the span is ours; we dirty it, free it, and purge.
        unsafe {
            let base = a.span.as_ref().base();
            core::ptr::write_bytes(base, 0xAB, 16 * PAGE_SIZE);
            heap.free(a.span);
            assert!(heap.stats().dirty >= 16 * PAGE_SIZE);
            heap.purge(true);
            assert_eq!(heap.stats().dirty, 0);
            assert_eq!(mem::resident_pages(base, 16 * PAGE_SIZE).unwrap(), 0);
            let again = heap.alloc(16, SpanKind::Large).unwrap();
            assert!(again.zeroed);
            assert_eq!(*again.span.as_ref().base(), 0);
            heap.free(again.span);
        }
    }

    /// A heap that commits fresh pages while more than `GROWTH_KEEP` dirty bytes wait (freed
    /// pages the new span did not fit in) returns that many of them to the OS, oldest first,
    /// down to `GROWTH_KEEP`, if they were freed an epoch ago or more; a span that fits in a
    /// dirty run purges nothing. The runs' ages are set by hand, so nothing depends on how
    /// fast the test runs; the decay time does not enter, unless it is "never".
    #[test]
    fn growth_past_dirty_pages_purges_them() {
        if decay_ms() == u64::MAX {
            return;
        }
        let heap = PageHeap::new(NodeId::ZERO);
        // 4 KiB pages for this arena whatever `TESSERA_THP` says, now and once the heap
        // uses its lean part.
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        {
            let mut inner = heap.inner.lock();
            inner.lean.state = crate::heap::LeanState::Settled;
            // SAFETY: the heap's one arena, under its lock.
            unsafe { (*inner.arenas).huge_pages = false };
        }
        // Three dirty runs of 40 pages, kept apart by live spans.
        let mut live = [pad; 4];
        let mut runs = [ptr::null_mut::<u8>(); 3];
        let mut spans = [pad; 3];
        for (span, fence) in spans.iter_mut().zip(&mut live[1..]) {
            *span = heap.alloc(40, SpanKind::Large).unwrap();
            *fence = heap.alloc(1, SpanKind::Large).unwrap();
        }
        for (run, span) in runs.iter_mut().zip(spans) {
            // SAFETY: a fresh span; we dirty it and free it.
            unsafe {
                *run = span.span.as_ref().base();
                core::ptr::write_bytes(*run, 0xCD, 40 * PAGE_SIZE);
                heap.free(span.span);
            }
        }
        let resident = || -> usize {
            runs.iter()
                // SAFETY: pages of the heap's arena.
                .map(|&r| unsafe { mem::resident_pages(r, 40 * PAGE_SIZE) }.unwrap())
                .sum::<usize>()
                * mem::page_size()
        };
        assert_eq!(heap.stats().dirty, 120 * PAGE_SIZE);
        assert_eq!(resident(), 120 * PAGE_SIZE);
        // Growth past runs freed just now: they stay, and the next decay step stays due
        // when it was (put far ahead here, so that no step runs in between).
        let scheduled = clock::coarse_now_ms() + 1_000_000;
        heap.inner.lock().next_step_ms = scheduled;
        let young = heap.alloc(41, SpanKind::Large).unwrap();
        assert_eq!(heap.stats().dirty, 120 * PAGE_SIZE);
        assert_eq!(heap.inner.lock().next_step_ms, scheduled);
        // Two epochs later (as far as the runs know).
        {
            let _lock = heap.inner.lock();
            for &base in &runs {
                let run = arena::span_of(base as usize).unwrap().as_ptr();
                // SAFETY: the free run's record, under the heap's lock.
                unsafe { (*run).freed_at_ms = (*run).freed_at_ms.saturating_sub(2 * epoch_ms()) };
            }
        }
        // Fits in a dirty run: nothing committed, nothing purged.
        let fits = heap.alloc(8, SpanKind::Large).unwrap();
        assert_eq!(heap.stats().dirty, 112 * PAGE_SIZE);
        // Fits in none: 41 fresh pages committed, 41 dirty ones returned.
        let grown = heap.alloc(41, SpanKind::Large).unwrap();
        assert_eq!(heap.stats().dirty, 71 * PAGE_SIZE);
        // Another 64: the dirty pages fall to `GROWTH_KEEP`, no lower.
        let more = heap.alloc(64, SpanKind::Large).unwrap();
        assert_eq!(heap.stats().dirty, GROWTH_KEEP);
        assert_eq!(
            resident(),
            GROWTH_KEEP + 8 * PAGE_SIZE,
            "the kept and the reused"
        );
        // SAFETY: nothing live.
        unsafe {
            for s in live.into_iter().chain([young, fits, grown, more]) {
                heap.free(s.span);
            }
        }
        heap.check();
    }

    /// A decay step purges the part of a dirty run the curve does not allow, from its end,
    /// and a step one decay time later the rest; the times are the run's own, so nothing
    /// here depends on how fast the test runs.
    #[test]
    fn decay_purges_part_of_a_run_then_all() {
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        // 4 KiB pages for this arena whatever `TESSERA_THP` says (the curve, not the huge
        // page rounding, is under test here).
        // SAFETY: the heap's one arena, under its lock.
        unsafe { (*heap.inner.lock().arenas).huge_pages = false };
        let a = heap.alloc(64, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: fresh spans; we dirty one and free it. The free run's record may be
        // another than the span's: it is found by its first page.
        let (base, freed_at) = unsafe {
            let base = a.span.as_ref().base();
            core::ptr::write_bytes(base, 0xAB, 64 * PAGE_SIZE);
            heap.free(a.span);
            let run = arena::span_of(base as usize).unwrap();
            (base, run.as_ref().freed_at_ms)
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
            assert_eq!(
                mem::resident_pages(base, 32 * PAGE_SIZE).unwrap() * mem::page_size(),
                32 * PAGE_SIZE
            );
            assert_eq!(
                mem::resident_pages(base.add(32 * PAGE_SIZE), 32 * PAGE_SIZE).unwrap(),
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
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: the heap's one arena, under its lock.
        unsafe { (*heap.inner.lock().arenas).huge_pages = true };
        // A run of three huge pages' worth, not aligned: one whole huge page inside at least.
        let a = heap.alloc(3 * HUGE_PAGE_PAGES, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: fresh spans; nothing live in `a`. The free run's record may be another
        // than the span's: it is found by its first page.
        let freed_at = unsafe {
            let base = a.span.as_ref().base();
            heap.free(a.span);
            arena::span_of(base as usize).unwrap().as_ref().freed_at_ms
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
        let heap = PageHeap::new(NodeId::ZERO);
        let pad = heap.alloc(1, SpanKind::Large).unwrap();
        let a = heap.alloc(16, SpanKind::Large).unwrap();
        let end = heap.alloc(1, SpanKind::Large).unwrap();
        // SAFETY: nothing live in `a`; its base is read while it is live.
        let base = unsafe {
            let base = a.span.as_ref().base();
            heap.free(a.span);
            base
        };
        let dirty = heap.stats().dirty;
        let mut batch = [InFlight {
            run: ptr::null_mut(),
        }; PURGE_BATCH];
        let taken = heap
            .inner
            .lock()
            .take_for_purge(Goal::All, clock::coarse_now_ms(), &mut batch);
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
        // SAFETY: a live record.
        unsafe { assert_eq!(again.span.as_ref().base(), base) };
        // SAFETY: nothing live.
        unsafe {
            heap.free(again.span);
            heap.free(pad.span);
            heap.free(end.span);
        }
        heap.check();
    }
}
