//! The per-processor cache (Go's `mcache`) and everything its owner does with small spans:
//! the refill that runs when a bin is empty, local frees, and the flush that hands spans
//! back when the cache's thread or processor goes away.
//!
//! Ownership model (mimalloc's free-list sharding, in Go's vocabulary): a small span is
//! owned by exactly one cache, or by a central list. The owning cache keeps, per class,
//! - the *current* span, whose free list sits directly in the bin, so the fast path is a
//!   pop and a push on a plain pointer;
//! - a *partial* list of spans with free objects (on the span's local list, its remote
//!   list, or not yet carved);
//! - a *full* list of parked spans (`remote::FULL`): the owner forgets them until a free
//!   arrives. A local free moves a span back to partial; a remote free notifies the owner
//!   through its notification stack (`notify`), which the owner drains on refill.
//!
//! A span whose every carved object is free again goes back to the page heap, unless it is
//! the current one or the class's one spare (so a malloc/free loop at a span boundary does
//! not thrash the page heap), or fits the cache's stash of empty spans (`STASH_MIN_PAGES`),
//! from which the next fresh span of the same size comes without the page heap's lock.
//!
//! A free the cache makes into a span it owns never needs more than the span record's first
//! line to find where the block goes (`free_owned_fast`, inlined into `tessera::free`): the
//! bin's list for the current span, the span's own list for a partial one.
//!
//! Frees into spans the cache does not own are recorded in a batch (`RemoteBatch`) and
//! published, a chain and a CAS per run of one span's blocks, when the batch fills or the
//! thread refills or flushes.
//!
//! NUMA: a refill takes spans from the central list and page heap of the node the thread
//! runs on at that moment; a span flushed to a central list goes to its own node's list.
//!
//! A cache is used by one thread at a time. Everything here except `notify` and the span's
//! remote word is touched by that thread alone, so none of it needs atomics.
//!
//! This file holds the cache, its bins, the span lists it files its spans on and the free
//! that `tessera::free` inlines; the rest is one file each under `cache/`:
//! - `refill.rs`: a bin ran dry: more objects from the current span, or the next span;
//! - `local_free.rs`: the frees into owned spans the inlined path leaves, and emptied spans;
//! - `remote_batch.rs`: frees into spans another cache owns, and the owner's notification;
//! - `stash.rs`: the cache's empty spans, kept for the next fresh span;
//! - `flush.rs`: what a cache gives back when its thread or processor goes away.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crossbeam_utils::CachePadded;
use tessera_span::{Span, SpanList};
use tessera_sys::lock::Locked;
use tessera_sys::random;

use crate::freelist::{self, HARDENED};
use crate::size_class::{NUM_CLASSES, SizeClass};

mod flush;
mod local_free;
mod refill;
mod remote_batch;
mod stash;

use remote_batch::RemoteBatch;
pub(crate) use remote_batch::free_remote;
use stash::Stash;

/// `Span::user_flags`: where a small span is filed.
/// On the partial list. Zero, so that the owner's free tests for its commonest case (a span
/// on the partial list with no notification pending) with a single `test` of the flags byte
/// (records that no cache owns are never tested: the owner check comes first).
const ON_PARTIAL: u8 = 0;
/// The span the bin allocates from.
const CURRENT: u8 = 1;
const ON_FULL: u8 = 2;
const ON_NONE: u8 = 3;
const WHERE_MASK: u8 = 0b11;
/// A remote freer un-parked this span and will push (or has pushed) it onto the owner's
/// notification stack; it must not go back to the page heap until that is drained.
const NOTIFY_PENDING: u8 = 0b100;
/// The span's memory came from the page heap reading as zero, so every object not yet
/// carved (`carved..capacity`) still does: nothing writes an object before it is carved.
const ZERO_TAIL: u8 = 0b1000;

/// One size class's slot in a cache.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Bin {
    /// Free objects of the current span, linked through their first word (encoded,
    /// `freelist.rs`).
    pub(crate) free: *mut u8,
    /// First object byte of the current span (0 when there is none).
    pub(crate) start: usize,
    /// Bytes of objects in the current span (0 when there is none), so that
    /// `link - start < len` tells a pop the link it decodes lies in the current span.
    pub(crate) len: usize,
    /// The current span's `div_test`, so that a pop checks the link it decodes for a block
    /// boundary from this line alone.
    pub(crate) div_test: u64,
    span: *mut Span,
}

impl Bin {
    const EMPTY: Bin = Bin {
        free: ptr::null_mut(),
        start: 0,
        len: 0,
        div_test: 0,
        span: ptr::null_mut(),
    };

    /// Objects on the bin's list, walked (the fast paths keep no count). Only the cache's
    /// own thread may call this.
    pub(crate) fn list_len(&self) -> u32 {
        if self.free.is_null() {
            return 0;
        }
        let mut count = 0;
        // SAFETY: a bin with a list has a current span, an in-use small span of ours; its
        // list holds free objects of that span that only the cache's own thread (the caller)
        // touches.
        unsafe {
            freelist::walk(&*self.span, self.free, |_| {
                count += 1;
                false
            })
        };
        count
    }

    /// Pops the head of the bin's list, or returns null when the list is empty or its head's
    /// link fails the check: decodes the link under `key` (the cache's), checks that it is
    /// null or a block of the current span (`freelist.rs`), and clears the popped block's
    /// first word so it carries no freed-block marker. For the allocation fast paths in
    /// `lib.rs`, whose miss path is a tail call: a bad link leaves the list as it is, and the
    /// slow path's `pop` finds it again and reports it, so the fast path needs no frame for a
    /// report call.
    ///
    /// # Safety
    /// Only the calling thread may use the cache, and `key` must be its `key`.
    #[inline(always)]
    pub(crate) unsafe fn try_pop(&mut self, key: usize) -> *mut u8 {
        let block = self.free;
        if block.is_null() {
            return block;
        }
        // SAFETY: `block` heads the bin's list: a free object of the current span, ours.
        let next = unsafe { freelist::read_link_with(key, block) };
        if HARDENED && !freelist::link_ok(next, self.start, self.len, self.div_test) {
            return ptr::null_mut();
        }
        // SAFETY: as above; the block leaves the list.
        unsafe { freelist::clear_link(block) };
        self.free = next;
        block
    }

    /// Pops the head of the bin's list as `try_pop` does, reporting a bad link (and
    /// aborting) instead of returning null.
    ///
    /// # Safety
    /// The list must not be empty, and only the calling thread may use the cache.
    #[inline]
    pub(crate) unsafe fn pop(&mut self) -> *mut u8 {
        let block = self.free;
        // SAFETY: `block` heads the bin's list: a free object of the current span, ours.
        let next = unsafe { freelist::read_link(block) };
        if HARDENED && !freelist::link_ok(next, self.start, self.len, self.div_test) {
            self.corrupt(block);
        }
        // SAFETY: as above; the block leaves the list.
        unsafe { freelist::clear_link(block) };
        self.free = next;
        block
    }

    #[cold]
    #[inline(never)]
    fn corrupt(&self, block: *mut u8) -> ! {
        // SAFETY: a bin with a list has a current span (an in-use small span of ours).
        freelist::corrupt(unsafe { &*self.span }, block)
    }

    /// Pushes `ptr`, an object of the current span that the caller gives up and that is
    /// not the list's head, onto the list, its link encoded under `key` (the cache's).
    ///
    /// # Safety
    /// As said; only the calling thread may use the cache.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, key: usize, ptr: *mut u8) {
        // SAFETY: the caller's contract: an object of ours on no list.
        unsafe { freelist::write_link_with(key, ptr, self.free) };
        self.free = ptr;
    }
}

/// A cache; see the module comment.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Cache {
    pub(crate) bins: [Bin; NUM_CLASSES],
    /// The free-list key (`freelist::key`), copied here when the cache is made so that the
    /// fast paths read it beside the bins.
    pub(crate) key: usize,
    /// `freelist::key_top(key)`, for the free's marker test (`may_be_freed_top`).
    pub(crate) key_top: u16,
    /// Bytes this cache's allocations may still take before the next heap-profile sample
    /// (`profile/sample.rs`): the fast paths subtract each request and leave for the slow
    /// path when it goes negative.
    pub(crate) prof_left: isize,
    /// Spans recent frees found through the page map (`tessera::free_inlined`), so that the
    /// next free into one of them needs neither the page map nor the owner test. Only ever
    /// spans this cache owns: a span is forgotten when it leaves the cache (`release_empty`,
    /// `flush`).
    pub(crate) recent: RecentSpans,
    partial: [SpanList; NUM_CLASSES],
    full: [SpanList; NUM_CLASSES],
    /// One empty span per class kept on the partial list instead of going back to the page
    /// heap, so a program that frees and reallocates a span's worth in a loop does not take
    /// the page heap's lock every time (mimalloc's page retire delay, in its simplest form).
    spare: [*mut Span; NUM_CLASSES],
    /// Fresh spans taken per class so far, capped at the last ramp step: the next fresh
    /// span's size (`size_class::ramp_pages`).
    ramp: [u8; NUM_CLASSES],
    /// Per class, whether other threads have freed objects of this cache's spans (a remote
    /// list taken, or a span un-parked by a remote free): from then on, the used-up spans of a
    /// shared class go to the central list (`Cache::park_current`). Never cleared: a hint.
    freed_by_others: [bool; NUM_CLASSES],
    /// Empty spans kept for the next fresh span of the same size (any class), so that a
    /// program that builds and tears down structures in rounds reuses its spans without the
    /// node's page heap, whose lock is shared by every thread (mimalloc gets the same from
    /// its thread-owned segments). See `STASH_MIN_PAGES`; handed back on flush.
    /// Under a lock because the background purger takes the stash of an idle thread: the
    /// owner takes it once per span stashed or unstashed, uncontended.
    stash: Locked<Stash>,
    /// Frees this cache's thread made into spans it does not own, not yet pushed onto those
    /// spans' remote lists (see `RemoteBatch`).
    batch: RemoteBatch,
    /// Spans un-parked by remote frees, pushed by other threads.
    notify: CachePadded<AtomicPtr<Span>>,
    /// Link in the idle pool.
    pub(crate) next_idle: *mut Cache,
    /// Link in the pool's list of every cache (for the purger's visits).
    pub(crate) next_all: *mut Cache,
    /// Objects this cache may still hand out before its next guarded sample (`guarded/`);
    /// untouched while sampling is off.
    pub(crate) guard_countdown: i64,
    /// The heap profiler's random state for drawing sample intervals.
    pub(crate) prof_rng: u64,
    /// The label set heap samples taken on this cache carry (`profile::labels`; 0: none):
    /// set by whoever runs code on the cache (a scheduler, for the coroutine it runs).
    pub(crate) prof_labels: u32,
    /// The profiler is taking a sample on this cache: allocations it makes meanwhile are
    /// not sampled.
    pub(crate) prof_busy: bool,
}

/// Slots of `RecentSpans`: a power of two.
const RECENT_SLOTS: usize = 16;

/// The spans a cache's recent frees went to, one slot per page address modulo
/// `RECENT_SLOTS` (a direct-mapped cache of the page map, for the cache's own spans).
/// Frees come in runs: a loop frees what it just allocated, a structure is dropped in about
/// the order it was built, its objects of each size lying side by side in one span. A
/// single slot caught 27% of serde_json's frees (the drop of a tree alternates between the
/// spans of its node, string and vector sizes); one slot per page keeps each of those
/// spans while the drop walks through it.
///
/// The slots pay only where their test is predictable: a hit saves the page map and the
/// owner test (~20 instructions), but a free pattern that hits and misses at random (blocks
/// of random sizes freed in order, the runner's xmalloc) mispredicts the test on half its
/// frees (~15 cycles each), and such a program ran 25% slower with the slots than without.
/// A drop that misses in runs (serde_json's trees) is predicted well at a hit rate well
/// below that. So the cache counts, between judgements every `JUDGE_MISSES` misses, its hits
/// and its runs of misses (each run costing up to two mispredictions), and stops looking in
/// the slots (one predictable test then) when fewer than 2.5 frees hit per run
/// (`KEEP_HITS_PER_2_RUNS`) in two judgements running (emptying them: the test then fails, predictably, without a
/// test of its own on the hit path); it tries them again after `OFF_FREES` frees, since a
/// program's phases change. Over serde_json's 41,207 judgements, hits per run were 2.5 or
/// more in 98% (median 8), two running below 2.5 happened 86 times; over xmalloc's, below
/// 2.5 in 81%, two running in 66%; rayon's phases of remote frees, where the slots never
/// hit, turn them off (440 of its 4,604 judgements found no hit).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct RecentSpans {
    slots: [SpanMemo; RECENT_SLOTS],
    /// The slots are out of use, and empty (zero, the start: in use).
    off: bool,
    /// Hits since the last judgement.
    hits: u32,
    /// `hits` at the last miss: a miss that finds it changed starts a run.
    hits_at_miss: u32,
    /// Runs of misses since the last judgement.
    runs: u32,
    /// The last judgement found too few hits per run (`judge`).
    struck: bool,
    /// Misses left before the next judgement; while `off`, frees left before the slots are
    /// tried again. A countdown, so that the free's count and test are one decrement of
    /// memory and a branch on its flags (an up-count and a compare with the limit took
    /// four instructions). `Cache::init` starts it (`reset`): at zero, the first miss
    /// would wrap it and no judgement would come for 2^32 misses.
    left: u32,
}

/// Misses between two judgements of the slots' hit rate (`RecentSpans`).
const JUDGE_MISSES: u32 = 32;
/// Hits per two runs of misses the slots must reach to stay in use (2.5 a run). At random,
/// a hit rate of 60% (a run starts after a hit with the miss rate's odds).
const KEEP_HITS_PER_2_RUNS: u32 = 5;
/// Frees made without the slots before they are tried again.
const OFF_FREES: u32 = 4096;

/// A span of the cache's, remembered with what places a pointer at one of its objects.
#[derive(Debug)]
#[repr(C)]
struct SpanMemo {
    /// `Span::obj_base`: the first object's first byte.
    start: usize,
    /// `Span::obj_bytes`: 0 when there is no span, so that no pointer matches.
    len: usize,
    /// `Span::div_test`.
    div_test: u64,
    /// The record.
    span: *mut Span,
}

/// `size_of::<SpanMemo>()` is `1 << MEMO_SHIFT`.
const MEMO_SHIFT: u32 = 5;
const _: () = assert!(size_of::<SpanMemo>() == 1 << MEMO_SHIFT);

impl RecentSpans {
    /// The slot for pointers into the page of `ptr`.
    #[inline(always)]
    fn slot(&self, ptr: *mut u8) -> *mut SpanMemo {
        // The slot's byte offset from the page number in one shift and one mask (an index
        // would take a shift more: this is on every free).
        let offset = (ptr as usize >> (tessera_span::PAGE_SHIFT - MEMO_SHIFT as usize))
            & ((RECENT_SLOTS - 1) << MEMO_SHIFT);
        // SAFETY: `offset` is a multiple of the slot size below the array's size.
        unsafe {
            self.slots
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<SpanMemo>()
                .cast_mut()
        }
    }

    /// The span `ptr` is an object of, if it is remembered: `ptr` lies among its objects
    /// at an object boundary (`tessera::is_object_start`'s test, from one line). Never while
    /// the slots are out of use, as they are empty then.
    #[inline(always)]
    pub(crate) fn span_of(&mut self, ptr: *mut u8) -> Option<*mut Span> {
        // SAFETY: a slot of ours (`slot`).
        let memo = unsafe { &*self.slot(ptr) };
        let offset = (ptr as usize).wrapping_sub(memo.start);
        if offset < memo.len && crate::size_class::divides(offset, memo.div_test) {
            self.hits += 1;
            return Some(memo.span);
        }
        None
    }

    /// A free found `span`, an in-use small span of the cache's, through the page map:
    /// remembers it for pointers into the page of `ptr` while the slots are in use, and
    /// counts the miss.
    #[inline(always)]
    pub(crate) fn missed(&mut self, ptr: *mut u8, s: &Span, span: *mut Span) {
        if self.off {
            self.left = self.left.wrapping_sub(1);
            if self.left == 0 {
                self.turn_on();
            }
            return;
        }
        if self.hits != self.hits_at_miss {
            self.hits_at_miss = self.hits;
            self.runs += 1;
        }
        // SAFETY: a slot of ours (`slot`), and `&mut self` is the only reference to it.
        let memo = unsafe { &mut *self.slot(ptr) };
        memo.start = s.obj_base;
        memo.len = s.obj_bytes.load(Ordering::Relaxed) as usize;
        memo.div_test = s.div_test;
        memo.span = span;
        self.left = self.left.wrapping_sub(1);
        if self.left == 0 {
            self.judge();
        }
    }

    /// `JUDGE_MISSES` misses since the last judgement: keeps the slots in use unless this
    /// judgement and the last found too few hits per run of misses (`RecentSpans`; no hit
    /// at all is too few). Inline, as `turn_on`: a call from the free would make every free
    /// save and restore registers around it (6 instructions).
    #[inline(always)]
    fn judge(&mut self) {
        let few = 2 * self.hits < KEEP_HITS_PER_2_RUNS * self.runs.max(1);
        self.off = few && self.struck;
        self.struck = few && !self.off;
        self.reset();
        if self.off {
            for memo in &mut self.slots {
                memo.len = 0;
            }
            self.left = OFF_FREES;
        }
    }

    /// Starts a judgement's counts.
    #[inline(always)]
    pub(crate) fn reset(&mut self) {
        self.hits = 0;
        self.hits_at_miss = 0;
        self.runs = 0;
        self.left = JUDGE_MISSES;
    }

    /// `OFF_FREES` frees without the slots: tries them again, from empty.
    #[inline(always)]
    fn turn_on(&mut self) {
        self.off = false;
        self.reset();
    }

    /// Forgets `span` wherever it is remembered.
    fn forget(&mut self, span: *mut Span) {
        for memo in &mut self.slots {
            if memo.span == span {
                memo.len = 0;
            }
        }
    }
}

/// Links `block` to `next` through its first word, encoded (`freelist.rs`).
///
/// # Safety
/// `block` must be an object (at least 8 bytes, 8-aligned, as every object is) that the
/// calling thread holds alone: one being freed, or one carved and not yet handed out.
#[inline(always)]
unsafe fn set_block_next(block: *mut u8, next: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { freelist::write_link(block, next) }
}

impl Cache {
    /// Initialises a cache in place.
    ///
    /// # Safety
    /// `at` must point to writable memory for a `Cache` (zeroed memory is fine).
    pub(crate) unsafe fn init(at: *mut Cache) {
        // Before any list exists: the first cache sets the free-list key.
        freelist::init_key();
        // SAFETY: the caller provides the memory; all-zero is a valid empty `Cache`, and
        // nobody else can see it yet.
        unsafe {
            ptr::write_bytes(at, 0, 1);
            (*at).key = freelist::key();
            (*at).key_top = freelist::key_top((*at).key);
            (*at).recent.reset();
            (*at).guard_countdown = crate::guarded::next_interval();
            (*at).prof_left =
                crate::profile::sample::first_interval(&mut (*at).prof_rng, random::random_u64());
        }
    }

    #[inline]
    fn tag(&self) -> *mut () {
        self as *const Cache as *mut ()
    }

    /// Whether this cache owns `span`.
    #[inline]
    pub(crate) fn owns(&self, span: &Span) -> bool {
        span.owner.load(Ordering::Relaxed) == self.tag()
    }

    // ---- the free `tessera::free` inlines -------------------------------------------

    /// `free_local`'s common cases, inlined into the unsized free: a block of the span the
    /// bin allocates from goes onto the bin's list, a block of a span on the partial list
    /// (no notification pending) onto the span's own. `Freed::Not` (nothing done) for
    /// everything else, which `free_local` handles, including a double free at a list's head.
    ///
    /// # Safety
    /// As `free_local`.
    #[inline(always)]
    pub(crate) unsafe fn free_owned_fast(&mut self, s: &Span, ptr: *mut u8) -> Freed {
        // SAFETY: forwarded contract.
        unsafe { self.free_owned_fast_in::<false>(s, ptr) }
    }

    /// `free_owned_fast`; `CHECKED`: the caller has tested the block for the freed-block
    /// marker already (`tessera::realloc`, hardened), so it is not tested again. Without
    /// `hardened` there is no marker, and the list-head tests stay.
    ///
    /// # Safety
    /// As `free_local`; with `CHECKED`, `ptr` must not carry the marker
    /// (`freelist::looks_freed_in` false) or not be on any list the cache may walk.
    #[inline(always)]
    pub(crate) unsafe fn free_owned_fast_in<const CHECKED: bool>(
        &mut self,
        s: &Span,
        ptr: *mut u8,
    ) -> Freed {
        let key = self.key;
        let flags = s.user_flags;
        if flags & (WHERE_MASK | NOTIFY_PENDING) == ON_PARTIAL {
            // Tested first: 93% of serde_json's 16M frees land here, in a span the cache has
            // allocated from before, not in the bin's current one.
            // Hardened, the marker test covers the local list's head too (a free block like
            // any other): one load and compare fewer.
            if (!HARDENED && ptr == s.local_free.load(Ordering::Relaxed))
                // SAFETY: `ptr` is an object of `s` (the contract).
                || (!CHECKED && unsafe { freelist::may_be_freed_top(self.key_top, ptr) })
            {
                return Freed::Not;
            }
            // SAFETY: the caller's contract (ours, a live object of `s`).
            let count = unsafe { push_local(key, s, ptr) };
            // Emptied by local frees alone. A span some of whose objects came back remotely
            // is not seen empty here (its remote list is counted where the owner takes it:
            // `release_if_empty` on a notification or a flush, the refill that makes it
            // current again), as one whose last free is remote never was: it waits on the
            // partial list, first in line for its class's next refill. Not reading the
            // remote word keeps the commonest free a few instructions shorter.
            // A plain read of `carved`, which the compare takes from memory (LLVM loads an
            // atomic into a register of its own first: an instruction more on the
            // commonest free).
            // SAFETY: only the span's owner writes `carved` (carving, `refill.rs`), and
            // this cache owns `s` (the contract): no write races with this read; other
            // threads only read it.
            if count == unsafe { s.carved.as_ptr().read() } {
                return Freed::Emptied;
            }
            return Freed::Done;
        }
        if flags & WHERE_MASK != CURRENT {
            return Freed::Not;
        }
        // SAFETY: the span is ours and in use, so `class` is the index it was formatted with,
        // below `NUM_CLASSES`.
        let bin = unsafe { self.bins.get_unchecked_mut(s.class as usize) };
        // Hardened, the marker test covers the list's head too (it is a free block).
        if (!HARDENED && ptr == bin.free)
            // SAFETY: `ptr` is an object of `s` (the contract).
            || (!CHECKED && unsafe { freelist::may_be_freed_top(self.key_top, ptr) })
        {
            return Freed::Not;
        }
        // SAFETY: `ptr` is a live object of ours that the caller gives up (the contract), not
        // the list's head.
        unsafe { bin.push(key, ptr) };
        Freed::Done
    }

    // ---- statistics ------------------------------------------------------------------

    /// Calls `f(span, objects)` for the free objects this cache holds off every span's own
    /// lists: each bin's list (objects of its current span) and the unpublished remote batch
    /// (objects of someone else's span). A walk of the spans cannot see them and counts them
    /// as handed out. Only the cache's own thread may call this: the lists are its alone,
    /// with no atomics, which is why `tessera::stats()` asks only the calling thread's cache.
    pub(crate) fn for_each_held(&self, mut f: impl FnMut(&Span, usize)) {
        for bin in &self.bins {
            if !bin.span.is_null() {
                // SAFETY: a bin's current span is an in-use small span this cache owns.
                f(unsafe { &*bin.span }, bin.list_len() as usize);
            }
        }
        self.for_each_batched(f);
    }

    // ---- span lists ----------------------------------------------------------------

    fn list_head(&mut self, class: SizeClass, place: u8) -> &mut SpanList {
        match place {
            ON_PARTIAL => &mut self.partial[class.index()],
            _ => &mut self.full[class.index()],
        }
    }

    /// Files `span` on its class's list `place` and records `place` in its flags.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns that is on none of its lists, and
    /// `place` must be `ON_PARTIAL` or `ON_FULL` (the frees trust the flags to say where
    /// the span is).
    unsafe fn link(&mut self, span: *mut Span, place: u8) {
        // SAFETY: we own the span (the contract).
        let class = SizeClass::of(unsafe { &*span });
        // SAFETY: a span on none of our lists (the contract); our lists and their spans'
        // links are this thread's alone.
        unsafe { self.list_head(class, place).push_front(span) };
        // SAFETY: we own the span (the contract).
        let s = unsafe { &mut *span };
        s.user_flags = (s.user_flags & !WHERE_MASK) | place;
    }

    /// Takes `span` off the list its flags name; it is then on none (`ON_NONE`).
    ///
    /// # Safety
    /// `span` must be a small span this cache owns, on its partial or full list.
    unsafe fn unlink(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let (place, class) = unsafe { ((*span).user_flags & WHERE_MASK, SizeClass::of(&*span)) };
        debug_assert!(place == ON_PARTIAL || place == ON_FULL);
        // SAFETY: the span is on the list its flags name (the contract); our lists and their
        // spans' links are this thread's alone.
        unsafe { self.list_head(class, place).remove(span) };
        // SAFETY: we own the span (the contract).
        let s = unsafe { &mut *span };
        s.user_flags = (s.user_flags & !WHERE_MASK) | ON_NONE;
    }
}

/// Pushes `ptr` onto the local list of `s` and returns the list's new length.
///
/// # Safety
/// The calling thread's cache must own `s`, and `ptr` must be an object of `s` that is not
/// on any free list.
#[inline(always)]
unsafe fn push_local(key: usize, s: &Span, ptr: *mut u8) -> u32 {
    // SAFETY: `ptr` is an object of ours on no free list (the contract), so ours alone.
    unsafe { freelist::write_link_with(key, ptr, s.local_free.load(Ordering::Relaxed)) };
    s.local_free.store(ptr, Ordering::Relaxed);
    let count = s.local_count.load(Ordering::Relaxed) + 1;
    s.local_count.store(count, Ordering::Relaxed);
    count
}

/// What `Cache::free_owned_fast` did with a block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Freed {
    /// Freed.
    Done,
    /// Freed, and every carved object of its span is free now: call `release_emptied`.
    Emptied,
    /// Not a case it handles; nothing was done.
    Not,
}

/// The span `span` of `cache` was emptied by a free: return it to the page heap unless the
/// cache keeps it (`release_if_empty`). `extern "C"` (cannot unwind) and never inlined, so
/// that the unsized free can end in a tail call to it.
///
/// # Safety
/// `cache` must be the calling thread's current cache and own `span`.
#[inline(never)]
pub(crate) unsafe extern "C" fn release_emptied(cache: *mut Cache, span: *mut Span) {
    // SAFETY: the caller's contract.
    unsafe { (*cache).release_if_empty(span) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = tessera_span::PAGE_SIZE;

    /// A span record of 64 objects of 64 bytes (one page or less) at `base` (only what `RecentSpans` reads).
    fn span_at(base: usize) -> Span {
        // SAFETY: a span record is plain data; all-zero is an unused one.
        let mut s: Span = unsafe { core::mem::zeroed() };
        s.obj_base = base;
        s.obj_bytes = core::sync::atomic::AtomicU32::new(64 * 64);
        s.div_test = u64::MAX / 64 + 1;
        s
    }

    /// The slots stay in use while frees hit them, go out of use when frees keep missing
    /// (the pattern that made them mispredict), and come back after `OFF_FREES` frees.
    #[test]
    fn recent_spans_go_off_when_frees_miss_and_come_back() {
        // SAFETY: all-zero is a valid state (slots in use, nothing remembered), which
        // `reset` makes the start state, as `Cache::init` does.
        let mut recent: RecentSpans = unsafe { core::mem::zeroed() };
        recent.reset();
        let base = 0x7000_0000_0000usize;
        let mut s = span_at(base);
        let span: *mut Span = &mut s;
        let ptr = |i: usize| (base + 64 * i) as *mut u8;

        // A run of frees into one span: one miss, then hits, through many judgements.
        assert_eq!(recent.span_of(ptr(0)), None);
        recent.missed(ptr(0), &s, span);
        for round in 0..4 * JUDGE_MISSES as usize {
            for i in 1..64 {
                assert_eq!(
                    recent.span_of(ptr(i)),
                    Some(span),
                    "round {round} object {i}"
                );
            }
            // A miss on another slot's page (a new span each round) keeps them judged.
            let other = 0x7100_0000_0000usize + (round << 24) + PAGE * (1 + round % 15);
            let o = span_at(other);
            assert_eq!(recent.span_of(other as *mut u8), None);
            recent.missed(other as *mut u8, &o, span);
        }
        assert!(!recent.off, "a hit rate of 98% keeps the slots");

        // Runs of 4 misses after 8 hits (a hit rate of 67%, predictable): kept.
        let mut fresh = 0x7300_0000_0000usize;
        let mut miss = |recent: &mut RecentSpans| {
            // A new span on a page no slot holds `s` for.
            fresh += 1 << 24;
            let page = fresh + PAGE;
            let o = span_at(page + (1 << 30));
            assert_eq!(recent.span_of(page as *mut u8), None);
            recent.missed(page as *mut u8, &o, span);
        };
        for _ in 0..4 * JUDGE_MISSES {
            for i in 0..8 {
                assert_eq!(recent.span_of(ptr(1 + i)), Some(span));
            }
            for _ in 0..4 {
                miss(&mut recent);
            }
        }
        assert!(
            !recent.off,
            "runs of misses between long runs of hits keep the slots"
        );

        // A hit, a miss, a hit... (50%, the random pattern's runs): off within two
        // judgements.
        let mut frees = 0;
        while !recent.off {
            assert_eq!(recent.span_of(ptr(1)), Some(span));
            miss(&mut recent);
            frees += 2;
            assert!(frees <= 2 * 2 * JUDGE_MISSES as usize);
        }
        recent.turn_on();

        // Frees that never hit: off at the next judgement, and then not even looked at.
        let mut frees = 0;
        while !recent.off {
            let page = 0x7200_0000_0000usize + PAGE * frees;
            // Remembered far from `page`, so that no later free hits it.
            let o = span_at(page + (1 << 30));
            assert_eq!(recent.span_of(page as *mut u8), None);
            recent.missed(page as *mut u8, &o, span);
            frees += 1;
            assert!(frees <= 2 * JUDGE_MISSES as usize);
        }
        assert_eq!(
            recent.span_of(ptr(1)),
            None,
            "off: a remembered span is not used"
        );

        // Nothing remembered while off; back in use after `OFF_FREES` frees.
        for _ in 0..OFF_FREES {
            assert!(recent.off);
            recent.missed(ptr(1), &s, span);
            assert_eq!(recent.span_of(ptr(2)), None);
        }
        assert!(!recent.off);
        recent.missed(ptr(1), &s, span);
        assert_eq!(recent.span_of(ptr(2)), Some(span));

        recent.forget(span);
        assert_eq!(recent.span_of(ptr(3)), None);
    }
}
