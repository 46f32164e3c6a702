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
//! Frees into spans the cache does not own are chained per span (`RemoteBatch`) and
//! published with one CAS when the thread moves on to another span, refills or flushes.
//!
//! NUMA: a refill takes spans from the central list and page heap of the node the thread
//! runs on at that moment; a span flushed to a central list goes to its own node's list.
//!
//! A cache is used by one thread at a time. Everything here except `notify` and the span's
//! remote word is touched by that thread alone, so none of it needs atomics.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use crossbeam_utils::CachePadded;
use tessera_span::lock::Locked;
use tessera_span::{Span, SpanKind, os};

use crate::freelist::{self, HARDENED};
use crate::node;
use crate::remote;
use crate::report;
use crate::size_class::{self, CLASSES, NUM_CLASSES};

/// `Span::user_flags`: where a small span is filed.
/// The span the bin allocates from. Zero, so that the unsized free's test for it is a
/// single `test` of the flags byte (records that no cache owns are never tested: the owner
/// check comes first).
const CURRENT: u8 = 0;
const ON_NONE: u8 = 3;
const ON_PARTIAL: u8 = 1;
const ON_FULL: u8 = 2;
const WHERE_MASK: u8 = 0b11;
/// A remote freer un-parked this span and will push (or has pushed) it onto the owner's
/// notification stack; it must not go back to the page heap until that is drained.
const NOTIFY_PENDING: u8 = 0b100;
/// The span's memory came from the page heap reading as zero, so every object not yet
/// carved (`carved..capacity`) still does: nothing writes an object before it is carved.
const ZERO_TAIL: u8 = 0b1000;

/// The stash's budget starts at 1 MiB of empty spans (16 spans of 64 KiB) and doubles, up
/// to 8 MiB, each time the cache has to take a fresh span from the page heap after the
/// stash overflowed: that is a program whose rounds of building and tearing down are
/// larger than the stash, paying the shared page-heap lock twice per span (on two threads
/// of the glibc-bench "simple" shape with 4 MiB rounds, half its speed). A flush resets it.
/// The stash costs no peak RSS (at a peak its spans are in use); it is what a cache holds
/// empty between rounds. A cache whose stash has not moved for a whole decay time hands it
/// to the page heap on the background purger's request (`Cache::reclaim_stash`), as does
/// every cache when committed memory crosses the soft limit; `flush` and `tessera::collect`
/// hand it back too.
const STASH_MIN_PAGES: usize = (1 << 20) / tessera_span::PAGE_SIZE;
/// See `STASH_MIN_PAGES`.
const STASH_MAX_PAGES: usize = (8 << 20) / tessera_span::PAGE_SIZE;
/// Slots in the stash: enough for `STASH_MAX_PAGES` of the smallest spans (8 pages).
const STASH_LEN: usize = STASH_MAX_PAGES / 8;

/// How many bytes of objects a refill carves from a fresh span at once. Carving lazily
/// keeps a fresh span's RSS to the pages actually used.
const CARVE_BYTES: usize = 4096;

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
    /// `ptr - start < len` tells the sized free's fast path a pointer is ours.
    pub(crate) len: usize,
    /// The current span's `div_test`, so that a pop checks the link it decodes, and the
    /// sized free the pointer it takes, for a block boundary from this line alone.
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
    /// Bytes this cache's allocations may still take before the next heap-profile sample
    /// (`profile/sample.rs`): the fast paths subtract each request and leave for the slow
    /// path when it goes negative.
    pub(crate) prof_left: isize,
    partial: [*mut Span; NUM_CLASSES],
    full: [*mut Span; NUM_CLASSES],
    /// One empty span per class kept on the partial list instead of going back to the page
    /// heap, so a program that frees and reallocates a span's worth in a loop does not take
    /// the page heap's lock every time (mimalloc's page retire delay, in its simplest form).
    spare: [*mut Span; NUM_CLASSES],
    /// Fresh spans taken per class so far, capped at the last ramp step: the next fresh
    /// span's size (`size_class::ramp_pages`).
    ramp: [u8; NUM_CLASSES],
    /// Empty spans kept for the next fresh span of the same size (any class), so that a
    /// program that builds and tears down structures in rounds reuses its spans without the
    /// node's page heap, whose lock is shared by every thread (mimalloc gets the same from
    /// its thread-owned segments). See `STASH_MIN_PAGES`; handed back on flush.
    /// Under a lock because the background purger takes the stash of an idle thread: the
    /// owner takes it once per span stashed or unstashed, uncontended.
    stash: Locked<Stash>,
    /// Frees this cache's thread made into one span it does not own, chained here and
    /// pushed onto that span's remote list with one CAS (see `free_remote`).
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

/// A cache's empty spans; see `STASH_MIN_PAGES`.
#[derive(Debug)]
struct Stash {
    spans: [*mut Span; STASH_LEN],
    len: usize,
    pages: usize,
    /// The current budget in pages, between `STASH_MIN_PAGES` and `STASH_MAX_PAGES`.
    budget: usize,
    /// An empty span went to the page heap because the stash was full, since the budget
    /// last grew.
    overflowed: bool,
    /// When a span last went in or out (`os::now_ms`).
    touched_ms: u64,
}

// SAFETY: the spans are page-heap memory that lives for the process; the lock serialises
// every access.
unsafe impl Send for Stash {}

/// Consecutive remote frees into the same span, linked and not yet published.
///
/// A consumer that frees what a producer allocated usually frees a run of objects of the
/// same span (they were allocated in a row). Chaining them locally and publishing the chain
/// with one CAS turns one contended atomic per free into one per `BATCH_MAX` frees; the owner
/// sees the objects a little later, which is the price (bounded: the batch is published when
/// the next remote free goes to another span, when it is full, and whenever this thread's
/// cache refills, flushes or is collected).
#[derive(Debug)]
#[repr(C)]
struct RemoteBatch {
    span: *mut Span,
    head: *mut u8,
    tail: *mut u8,
    count: u32,
    /// A block of the batch carried the freed-block marker: publish with `SUSPECT`.
    suspect: bool,
}

const BATCH_MAX: u32 = 64;

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
            (*at).guard_countdown = crate::guarded::next_interval();
            (*at).prof_left =
                crate::profile::sample::first_interval(&mut (*at).prof_rng, os::random_u64());
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

    // ---- allocation ----------------------------------------------------------------

    /// Refills the bin of `class` and returns one object, or null when the OS refuses
    /// memory. Called when the bin's free list is empty.
    #[inline(never)]
    pub(crate) fn refill(&mut self, class: usize) -> *mut u8 {
        // A refill is where this thread stops to look at its spans; objects it freed into
        // other threads' spans should not wait longer than that.
        self.publish_batch();
        loop {
            let bin = &mut self.bins[class];
            if !bin.free.is_null() {
                // SAFETY: a non-empty list of our bin, which only this cache's thread touches.
                return unsafe { bin.pop() };
            }
            let span = self.bins[class].span;
            if !span.is_null() {
                // SAFETY: the current span is an in-use small span this cache owns.
                let s = unsafe { &*span };
                // SAFETY: `s` is the current span of bin `class`.
                let list = unsafe { self.more_from_current(s, class) };
                if !list.is_null() {
                    self.bins[class].free = list;
                    continue;
                }
                self.park_current(class);
            }
            if !self.install_next_span(class) {
                return ptr::null_mut();
            }
        }
    }

    /// An object of `class` known to read as zero, for `calloc`: the next uncarved object of
    /// the current span when that span's memory came zeroed from the page heap, so memory
    /// fresh from the OS is not written (and its pages not touched) just to zero it again.
    /// Null when there is none; the caller then zeroes an ordinary object.
    pub(crate) fn take_zeroed(&mut self, class: usize) -> *mut u8 {
        let span = self.bins[class].span;
        if span.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: the current span is an in-use small span this cache owns.
        let s = unsafe { &*span };
        let carved = s.carved.load(Ordering::Relaxed);
        if s.user_flags & ZERO_TAIL == 0 || carved >= s.capacity {
            return ptr::null_mut();
        }
        s.carved.store(carved + 1, Ordering::Relaxed);
        (s.base() as usize + carved as usize * s.obj_size as usize) as *mut u8
    }

    /// More free objects from the current span: carve, or take its remote list.
    ///
    /// # Safety
    /// `s` must be the current span of this cache's bin `class`.
    unsafe fn more_from_current(&mut self, s: &Span, class: usize) -> *mut u8 {
        let carved = s.carved.load(Ordering::Relaxed);
        if carved < s.capacity {
            // SAFETY: the current span of bin `class` (the contract) is a small span of
            // `class` that this cache owns, and `carved` is its count, below its capacity.
            return unsafe { carve(s, class, carved) };
        }
        let (head, _, suspect) = remote::take(s);
        if suspect {
            // SAFETY: a list taken off the remote word of our current span; the bin's list
            // is empty (this is a refill) and the span's local list is empty while it is
            // current (`install_next_span` moved it into the bin).
            unsafe { freelist::check_duplicates(s, &[head]) };
        }
        head
    }

    /// The current span has nothing left: park it on the full list.
    fn park_current(&mut self, class: usize) {
        let span = self.bins[class].span;
        // SAFETY: the current span is ours.
        let s = unsafe { &*span };
        // A span whose earlier notification is still on its way must not be parked again:
        // a second un-park would push it onto the notification stack twice. It waits on the
        // full list unparked, and the pending notification moves it back.
        if s.user_flags & NOTIFY_PENDING == 0 && !remote::try_park(s) {
            // A remote free slipped in between `take` and the park; keep the span current and
            // let the refill loop take it.
            return;
        }
        self.bins[class] = Bin::EMPTY;
        // SAFETY: a span we own that is on none of our lists: it was current until the line
        // above.
        unsafe { self.link(span, ON_FULL) };
    }

    /// Makes a span with free objects current for `class`: from the notifications, the
    /// partial list, the node's central list, or the page heap. False when out of memory.
    fn install_next_span(&mut self, class: usize) -> bool {
        if !self.bins[class].span.is_null() {
            // `park_current` lost a race with a remote free: retry the same span.
            return true;
        }
        self.drain_notifications();
        // Fresh spans come from the node the thread runs on now: a cache is not tied to a
        // node, its objects are (each span goes home to its own node's heap).
        let node = node::node(crate::current_node());
        let span = if !self.partial[class].is_null() {
            let span = self.partial[class];
            // SAFETY: the head of our partial list of `class`: a span we own, listed there.
            unsafe { self.unlink(span) };
            if self.spare[class] == span {
                self.spare[class] = ptr::null_mut();
            }
            span
        } else if let Some(span) = node.centrals[class].take() {
            // SAFETY: the central list handed the span over; we become its owner.
            unsafe { (*span).owner.store(self.tag(), Ordering::Relaxed) };
            span
        } else {
            let info = &CLASSES[class];
            let step = self.ramp[class] as usize;
            let pages = size_class::ramp_pages(class, step);
            let fresh = match self.unstash(pages) {
                Some(span) => tessera_span::Allocated {
                    span,
                    zeroed: false,
                },
                None => match crate::limit::retry(|| node.heap.alloc(pages, SpanKind::Small)) {
                    Some(fresh) => fresh,
                    None => return false,
                },
            };
            self.ramp[class] = (step + 1).min(size_class::RAMP_STEPS - 1) as u8;
            let objects = (pages * tessera_span::PAGE_SIZE / info.size as usize) as u32;
            let span = fresh.span.as_ptr();
            // SAFETY: a fresh small span, ours alone until we publish it.
            unsafe {
                let s = &mut *span;
                s.class = class as u8;
                s.div_test = info.div_test;
                s.obj_bytes = objects * info.size;
                s.obj_base = s.base() as usize;
                s.obj_size = info.size;
                s.capacity = objects;
                s.carved.store(0, Ordering::Relaxed);
                s.local_free.store(ptr::null_mut(), Ordering::Relaxed);
                s.local_count.store(0, Ordering::Relaxed);
                s.user_flags = if fresh.zeroed {
                    ZERO_TAIL | ON_NONE
                } else {
                    ON_NONE
                };
                s.notify_next.store(ptr::null_mut(), Ordering::Relaxed);
                remote::reset(s);
                s.owner.store(self.tag(), Ordering::Release);
            }
            span
        };
        // SAFETY: `span` is an in-use small span we own and have unlinked.
        let s = unsafe { &mut *span };
        s.user_flags = (s.user_flags & !WHERE_MASK) | CURRENT;
        self.bins[class] = Bin {
            free: s.local_free.swap(ptr::null_mut(), Ordering::Relaxed),
            start: s.base() as usize,
            len: s.obj_bytes as usize,
            div_test: s.div_test,
            span,
        };
        s.local_count.store(0, Ordering::Relaxed);
        true
    }

    /// Moves every span remote freers un-parked back to its partial list.
    fn drain_notifications(&mut self) {
        if self.notify.load(Ordering::Relaxed).is_null() {
            return;
        }
        let mut at = self.notify.swap(ptr::null_mut(), Ordering::Acquire);
        while !at.is_null() {
            // SAFETY: spans on our stack are ours; each was pushed once by the freer that
            // un-parked it, and only we pop.
            let s = unsafe { &mut *at };
            let next = s.notify_next.load(Ordering::Relaxed);
            // Pending or not, the notification has now arrived.
            s.user_flags &= !NOTIFY_PENDING;
            if s.user_flags & WHERE_MASK == ON_FULL {
                // SAFETY: a span of ours on our full list (its flags say so); after the
                // unlink it is on none of our lists.
                unsafe {
                    self.unlink(at);
                    self.link(at, ON_PARTIAL);
                }
            }
            // SAFETY: a span of ours (see above).
            unsafe { self.release_if_empty(at) };
            at = next;
        }
    }

    // ---- free ------------------------------------------------------------------------

    /// Frees `ptr`, a small object of `span`, which this cache owns.
    ///
    /// # Safety
    /// `ptr` must be a live object of `span`, and this cache must own `span`.
    pub(crate) unsafe fn free_local(&mut self, span: *mut Span, ptr: *mut u8) {
        // SAFETY: the caller says we own the span.
        let s = unsafe { &mut *span };
        // SAFETY: forwarded contract.
        match unsafe { self.free_owned_fast(s, ptr) } {
            Freed::Done => return,
            // SAFETY: we own the span (the caller's contract).
            Freed::Emptied => return unsafe { self.release_if_empty(span) },
            Freed::Not => {}
        }
        // What the fast cases leave: a block at the head of the list it would go onto (the
        // bin's for the current span, the span's own otherwise), a block carrying the
        // freed-block marker, or a span that is parked or has a notification pending.
        // SAFETY: `ptr` is an object of `s` (the contract).
        if unsafe { freelist::looks_freed_in(s, ptr) } {
            // SAFETY: we own `s` and `ptr` is one of its objects (the contract).
            unsafe { self.confirm_double_free(s, ptr, "double free") };
        }
        if s.user_flags & WHERE_MASK == CURRENT {
            let bin = &mut self.bins[s.class as usize];
            if ptr == bin.free {
                report::fatal("double free", ptr as usize);
            }
            // Only a coincidental marker (see `confirm_double_free`) brings a block of the
            // current span here: free it as the fast path would.
            // SAFETY: a live object of our current span, not the list's head.
            unsafe { bin.push(self.key, ptr) };
            return;
        }
        if ptr == s.local_free.load(Ordering::Relaxed) {
            report::fatal("double free", ptr as usize);
        }
        // SAFETY: the caller's contract; not at the list's head, checked above.
        unsafe { push_local(self.key, s, ptr) };
        if s.user_flags & WHERE_MASK == ON_FULL {
            if !remote::try_unpark(s) {
                // A remote freer won: it notifies us; the drain must not re-move the span.
                s.user_flags |= NOTIFY_PENDING;
            }
            // SAFETY: we own the span (the caller's contract) and it is on our full list (its
            // flags say so); after the unlink it is on none of our lists.
            unsafe {
                self.unlink(span);
                self.link(span, ON_PARTIAL);
            }
        }
        // SAFETY: we own the span (the caller's contract).
        unsafe { self.release_if_empty(span) };
    }

    /// `free_local`'s common cases, inlined into the unsized free: a block of the span the
    /// bin allocates from goes onto the bin's list, a block of a span on the partial list
    /// (no notification pending) onto the span's own. `Freed::Not` (nothing done) for
    /// everything else, which `free_local` handles, including a double free at a list's head.
    ///
    /// # Safety
    /// As `free_local`.
    #[inline(always)]
    pub(crate) unsafe fn free_owned_fast(&mut self, s: &Span, ptr: *mut u8) -> Freed {
        let key = self.key;
        let flags = s.user_flags;
        if flags & WHERE_MASK == CURRENT {
            // SAFETY: the span is ours and in use, so `class` is the index it was formatted
            // with, below `NUM_CLASSES`.
            let bin = unsafe { self.bins.get_unchecked_mut(s.class as usize) };
            // Hardened, the marker test covers the list's head too (it is a free block).
            // SAFETY: `ptr` is an object of `s` (the contract).
            if (!HARDENED && ptr == bin.free) || unsafe { freelist::may_be_freed(key, ptr) } {
                return Freed::Not;
            }
            // SAFETY: `ptr` is a live object of ours that the caller gives up (the contract),
            // not the list's head.
            unsafe { bin.push(key, ptr) };
            return Freed::Done;
        }
        if flags & (WHERE_MASK | NOTIFY_PENDING) != ON_PARTIAL {
            return Freed::Not;
        }
        if ptr == s.local_free.load(Ordering::Relaxed)
            // SAFETY: `ptr` is an object of `s` (the contract).
            || unsafe { freelist::may_be_freed(key, ptr) }
        {
            return Freed::Not;
        }
        // SAFETY: the caller's contract (ours, a live object of `s`).
        let count = unsafe { push_local(key, s, ptr) };
        if count + remote::count(s) == s.carved.load(Ordering::Relaxed) {
            return Freed::Emptied;
        }
        Freed::Done
    }

    /// Returns a non-current span whose every carved object is free to the page heap.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns (current, listed, or on none of its lists).
    #[inline(never)]
    unsafe fn release_if_empty(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let s = unsafe { &*span };
        if s.user_flags & (WHERE_MASK | NOTIFY_PENDING) != ON_PARTIAL {
            return;
        }
        // SAFETY: we own the span (the contract), which is not current.
        unsafe { check_suspect(s) };
        let free = s.local_count.load(Ordering::Relaxed) + remote::count(s);
        if free != s.carved.load(Ordering::Relaxed) {
            return;
        }
        let class = s.class as usize;
        if self.spare[class].is_null() {
            self.spare[class] = span;
            return;
        }
        if self.spare[class] != span {
            // SAFETY: ours, on our partial list with no notification pending (the flags test
            // above), and every carved object is free (the count test).
            unsafe { self.release_empty(span) };
        }
    }

    /// Takes an empty span off the partial list: into the stash if it has room and the
    /// span belongs to the node the thread runs on, else back to the page heap.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns, on its partial list, with no
    /// notification pending (nothing will reach it through the notification stack), and
    /// every carved object free (no live object goes back to the page heap).
    unsafe fn release_empty(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let s = unsafe { &*span };
        // Every carved object is free, so no free can race with us (short of a double free).
        // SAFETY: ours and on our partial list (the contract).
        unsafe { self.unlink(span) };
        // Nothing may take the record for one of our spans any more (the unsized free trusts
        // the owner field alone).
        s.owner.store(ptr::null_mut(), Ordering::Relaxed);
        if s.node() == crate::current_node() {
            let mut stash = self.stash.lock();
            if stash.len < STASH_LEN
                && stash.pages + s.npages() <= stash.budget.max(STASH_MIN_PAGES)
            {
                let at = stash.len;
                stash.spans[at] = span;
                stash.len += 1;
                stash.pages += s.npages();
                stash.touched_ms = os::now_ms();
                return;
            }
            stash.overflowed = true;
        }
        // SAFETY: the span is unlinked, holds no live object and belongs to this heap's node.
        unsafe { node::node(s.node()).heap.free(NonNull::new_unchecked(span)) };
    }

    /// A stashed empty span of `npages` pages, most recently stashed first (its memory is
    /// the likeliest to be in cache). On a miss after the stash overflowed, its budget
    /// doubles: the caller is about to ask the page heap.
    fn unstash(&mut self, npages: usize) -> Option<NonNull<Span>> {
        let mut stash = self.stash.lock();
        let len = stash.len;
        // SAFETY: stashed spans are in-use spans (for the page heap) that we hold.
        let found = stash.spans[..len]
            .iter()
            .rposition(|&s| unsafe { (*s).npages() } == npages);
        let Some(i) = found else {
            if stash.overflowed {
                stash.overflowed = false;
                stash.budget = (stash.budget.max(STASH_MIN_PAGES) * 2).min(STASH_MAX_PAGES);
            }
            return None;
        };
        let span = stash.spans[i];
        stash.len -= 1;
        stash.spans[i] = stash.spans[len - 1];
        stash.pages -= npages;
        stash.touched_ms = os::now_ms();
        NonNull::new(span)
    }

    /// Hands every stashed span back to its page heap.
    fn drain_stash(&self) {
        let mut stash = self.stash.lock();
        drain(&mut stash, false);
    }

    /// The background purger's visit: hands the stash back to the page heap if it has not
    /// moved since `stale_before` (milliseconds of `os::now_ms`), or in any case with
    /// `force`. Does nothing when the owner holds the stash at this moment. Returns the
    /// bytes handed back.
    ///
    /// Called from another thread than the owner's: it touches the stash alone, under its
    /// lock.
    pub(crate) fn reclaim_stash(&self, stale_before: u64, force: bool) -> usize {
        let Some(mut stash) = self.stash.try_lock() else {
            return 0;
        };
        if stash.len == 0 || (!force && stash.touched_ms >= stale_before) {
            return 0;
        }
        let bytes = stash.pages * tessera_span::PAGE_SIZE;
        drain(&mut stash, true);
        bytes
    }

    /// Bytes in the stash (for the purger's decision to keep waking up).
    pub(crate) fn stash_bytes(&self) -> usize {
        self.stash
            .try_lock()
            .map_or(0, |s| s.pages * tessera_span::PAGE_SIZE)
    }

    // ---- flush -----------------------------------------------------------------------

    /// Gives back everything this cache holds that others could use: the current spans'
    /// free objects, empty spans to the page heap, partly used spans to the central lists.
    /// Parked (full) spans stay: nothing in them is free, and they find their way back
    /// through the notification stack when the cache is next used or flushed.
    pub(crate) fn flush(&mut self) {
        self.publish_batch();
        self.drain_notifications();
        for class in 0..NUM_CLASSES {
            let bin = &mut self.bins[class];
            let span = bin.span;
            if !span.is_null() {
                let count = bin.list_len();
                // SAFETY: the current span is ours.
                let s = unsafe { &mut *span };
                s.local_free.store(bin.free, Ordering::Relaxed);
                s.local_count.store(count, Ordering::Relaxed);
                *bin = Bin::EMPTY;
                // SAFETY: a span we own that is on none of our lists: it was current until
                // the line above.
                unsafe { self.link(span, ON_PARTIAL) };
            }
            // The spare goes too (it is on the partial list): a flushed cache may sit idle
            // for a long time.
            self.spare[class] = ptr::null_mut();
            let mut at = self.partial[class];
            while !at.is_null() {
                // SAFETY: spans on our lists are ours.
                let s = unsafe { &mut *at };
                let next = s.next;
                if s.user_flags & NOTIFY_PENDING == 0 {
                    // SAFETY: ours, not current.
                    unsafe { check_suspect(s) };
                    let free = s.local_count.load(Ordering::Relaxed) + remote::count(s);
                    if free == s.carved.load(Ordering::Relaxed) {
                        // SAFETY: ours, on our partial list, no notification pending (tested
                        // above), every carved object free (just counted).
                        unsafe { self.release_empty(at) };
                    } else {
                        // SAFETY: ours, on our partial list.
                        unsafe { self.unlink(at) };
                        let central = &node::node(s.node()).centrals[class];
                        s.owner.store(central.owner_tag(), Ordering::Release);
                        // SAFETY: the span is unlinked, partly used, and now tagged as central's.
                        unsafe { central.put(at) };
                    }
                }
                at = next;
            }
        }
        self.drain_stash();
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
        if !self.batch.span.is_null() {
            // SAFETY: the batch's span stays in use while the batch holds its objects (they
            // count as allocated for the span's owner until published).
            f(unsafe { &*self.batch.span }, self.batch.count as usize);
        }
    }

    // ---- span lists ----------------------------------------------------------------

    fn list_head(&mut self, class: usize, place: u8) -> &mut *mut Span {
        match place {
            ON_PARTIAL => &mut self.partial[class],
            _ => &mut self.full[class],
        }
    }

    /// Files `span` on its class's list `place` and records `place` in its flags.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns that is on none of its lists, and
    /// `place` must be `ON_PARTIAL` or `ON_FULL` (the frees trust the flags to say where
    /// the span is).
    unsafe fn link(&mut self, span: *mut Span, place: u8) {
        // SAFETY: we own the span (the contract); `prev`/`next` are ours while it is in use.
        let s = unsafe { &mut *span };
        let head = self.list_head(s.class as usize, place);
        s.prev = ptr::null_mut();
        s.next = *head;
        if !s.next.is_null() {
            // SAFETY: list members are our spans.
            unsafe { (*s.next).prev = span };
        }
        *head = span;
        s.user_flags = (s.user_flags & !WHERE_MASK) | place;
    }

    /// Takes `span` off the list its flags name; it is then on none (`ON_NONE`).
    ///
    /// # Safety
    /// `span` must be a small span this cache owns, on its partial or full list.
    unsafe fn unlink(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let s = unsafe { &mut *span };
        let place = s.user_flags & WHERE_MASK;
        debug_assert!(place == ON_PARTIAL || place == ON_FULL);
        let class = s.class as usize;
        if s.prev.is_null() {
            *self.list_head(class, place) = s.next;
        } else {
            // SAFETY: list members are our spans.
            unsafe { (*s.prev).next = s.next };
        }
        if !s.next.is_null() {
            // SAFETY: as above.
            unsafe { (*s.next).prev = s.prev };
        }
        s.prev = ptr::null_mut();
        s.next = ptr::null_mut();
        s.user_flags = (s.user_flags & !WHERE_MASK) | ON_NONE;
    }
}

/// Hands every span of `stash` back to its page heap: as idle memory (aged, not counted as
/// a fresh free by the decay curve) when the purger reclaims it, as a fresh free otherwise.
fn drain(stash: &mut Stash, idle: bool) {
    for &span in &stash.spans[..stash.len] {
        // SAFETY: a stashed span: in use for the page heap, empty, and ours (the stash's
        // lock is held); its node's heap is the one it came from.
        unsafe {
            let heap = &node::node((*span).node()).heap;
            let span = NonNull::new_unchecked(span);
            if idle {
                heap.free_idle(span)
            } else {
                heap.free(span)
            }
        }
    }
    stash.len = 0;
    stash.pages = 0;
    stash.budget = STASH_MIN_PAGES;
    stash.overflowed = false;
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

/// If a remote free into `s` carried the freed-block marker (`remote::SUSPECT`), takes the
/// remote list onto the local one and checks the local list for a block on it twice, before
/// the caller trusts the span's counts (a double free counts one block twice, and a span
/// counted empty too early would go back to the page heap with a live block in it).
///
/// # Safety
/// The calling thread's cache must own `s`, and `s` must not be its current span.
#[inline(always)]
unsafe fn check_suspect(s: &Span) {
    if HARDENED && remote::is_suspect(s) {
        // SAFETY: forwarded contract.
        unsafe { check_suspect_slow(s) };
    }
}

/// See `check_suspect`.
///
/// # Safety
/// As `check_suspect`.
#[cold]
#[inline(never)]
unsafe fn check_suspect_slow(s: &Span) {
    let (head, count, _) = remote::take(s);
    let local = s.local_free.load(Ordering::Relaxed);
    // SAFETY: our span's local list and a list just taken off its remote word.
    unsafe { freelist::check_duplicates(s, &[head, local]) };
    // No block is on both: append the local list to the remote chain's tail and make the
    // whole the local list.
    if head.is_null() {
        return;
    }
    let mut tail = head;
    // SAFETY: the chain was just checked, every link decodes to a block of `s`.
    unsafe {
        freelist::walk(s, head, |at| {
            tail = at;
            false
        });
        set_block_next(tail, local);
    }
    s.local_free.store(head, Ordering::Relaxed);
    s.local_count.store(
        s.local_count.load(Ordering::Relaxed) + count,
        Ordering::Relaxed,
    );
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
    // The span may have gone to the page heap; this is a free's slow path, no lock held.
    crate::purger::maybe_start();
}

/// Carves the next batch of objects from `s` (which has uncarved room) into a list.
///
/// # Safety
/// `s` must be an in-use small span of `class` that the calling thread's cache owns, and
/// `carved` its carved count, below its capacity: the objects from `carved` on then lie
/// inside the span and have never been handed out, so the calling thread alone writes them.
unsafe fn carve(s: &Span, class: usize, carved: u32) -> *mut u8 {
    let size = CLASSES[class].size as usize;
    let batch = (CARVE_BYTES / size).clamp(1, (s.capacity - carved) as usize);
    let first = s.base() as usize + carved as usize * size;
    for i in 0..batch - 1 {
        let block = (first + i * size) as *mut u8;
        // SAFETY: an uncarved object of `s` (`batch` stops at the capacity): ours alone.
        unsafe { set_block_next(block, (first + (i + 1) * size) as *mut u8) };
    }
    // SAFETY: as above, the batch's last object.
    unsafe { set_block_next((first + (batch - 1) * size) as *mut u8, ptr::null_mut()) };
    s.carved.store(carved + batch as u32, Ordering::Relaxed);
    first as *mut u8
}

impl Cache {
    /// Frees `ptr`, an object of `span`, which this cache does not own: chains it into the
    /// remote batch (see `RemoteBatch`), publishing the previous batch if it was for another
    /// span or full.
    ///
    /// # Safety
    /// `ptr` must be a live object of the in-use small span `span`, not owned by this cache.
    #[inline]
    pub(crate) unsafe fn free_remote_batched(&mut self, span: *mut Span, ptr: *mut u8) {
        // SAFETY: `ptr` is an object of `span` (the contract).
        let suspect = unsafe { freelist::looks_freed_in(&*span, ptr) };
        if suspect {
            // SAFETY: as above.
            unsafe { self.check_batch(span, ptr) };
        }
        let batch = &mut self.batch;
        if batch.span == span && batch.count < BATCH_MAX {
            // SAFETY: a live object the caller gives up (the contract): ours alone.
            unsafe { set_block_next(ptr, batch.head) };
            batch.head = ptr;
            batch.count += 1;
            batch.suspect |= suspect;
            return;
        }
        self.publish_batch();
        // SAFETY: as above.
        unsafe { set_block_next(ptr, ptr::null_mut()) };
        self.batch = RemoteBatch {
            span,
            head: ptr,
            tail: ptr,
            count: 1,
            suspect,
        };
    }

    /// A remote free of `ptr` carried the freed-block marker: if this thread freed it into
    /// its unpublished batch already, that is a double free it can see for itself.
    ///
    /// # Safety
    /// `ptr` must be an object of the in-use small span `span`.
    #[cold]
    #[inline(never)]
    unsafe fn check_batch(&self, span: *mut Span, ptr: *mut u8) {
        if self.batch.span != span {
            return;
        }
        let mut found = false;
        // SAFETY: the batch is this thread's own chain of free objects of `span`.
        unsafe {
            freelist::walk(&*span, self.batch.head, |at| {
                found = at == ptr;
                found
            })
        };
        if found {
            // SAFETY: as above.
            freelist::double_free(unsafe { &*span }, ptr, "double free");
        }
    }

    /// The freed-block marker matched on a free (or `realloc`, `malloc_usable_size`: `what`
    /// names the call) of `ptr` into `s`, which this cache owns: reports it if `ptr` is on one of the span's lists (the bin's if `s` is
    /// current, the span's local list, its remote list). A block on none of them is a
    /// coincidence (see `freelist.rs`) and the caller frees it as usual; one waiting in
    /// another thread's unpublished remote batch is found by the duplicate check when that
    /// batch arrives only if its freer saw the marker, which it does not (the block was
    /// live then): that order, remote free first and owner free second inside one batch's
    /// lifetime, is the one double free this does not catch on the spot.
    ///
    /// # Safety
    /// This cache must own the in-use small span `s`, and `ptr` must be one of its objects.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn confirm_double_free(&self, s: &Span, ptr: *mut u8, what: &str) {
        let mut found = false;
        let mut look = |at: *mut u8| {
            found |= at == ptr;
            found
        };
        let bin = &self.bins[s.class as usize];
        // SAFETY: our own lists (the bin's, the span's local list) and the remote list of a
        // span we own, walked in place (only we take it).
        unsafe {
            if core::ptr::eq(bin.span, s) {
                freelist::walk(s, bin.free, &mut look);
            }
            freelist::walk(s, s.local_free.load(Ordering::Relaxed), &mut look);
            freelist::walk(s, remote::head(s), &mut look);
        }
        if found {
            freelist::double_free(s, ptr, what);
        }
    }

    /// Publishes the remote batch, if any, onto its span's remote list.
    pub(crate) fn publish_batch(&mut self) {
        let batch = core::mem::replace(
            &mut self.batch,
            RemoteBatch {
                span: ptr::null_mut(),
                head: ptr::null_mut(),
                tail: ptr::null_mut(),
                count: 0,
                suspect: false,
            },
        );
        if batch.span.is_null() {
            return;
        }
        // SAFETY: the batch holds free objects of `batch.span`, which stays in use while
        // they are unpublished (its owner counts them as allocated), linked head to tail; a
        // push that returns true won the span's `FULL` -> `NORMAL` transition.
        unsafe {
            let span = &*batch.span;
            if remote::push_chain(span, batch.head, batch.tail, batch.count, batch.suspect) {
                notify_owner(span);
            }
        }
    }
}

/// Frees `ptr` into `span` from a thread that has no cache to batch in.
///
/// # Safety
/// `ptr` must be a live object of the in-use small span `span`.
pub(crate) unsafe fn free_remote(span: &Span, ptr: *mut u8) {
    // SAFETY: `ptr` is an object of `span` (the contract).
    let suspect = unsafe { freelist::looks_freed_in(span, ptr) };
    // SAFETY: forwarded contract.
    if unsafe { remote::push(span, ptr, suspect) } {
        // SAFETY: the push returned true: this thread won the `FULL` -> `NORMAL` transition.
        unsafe { notify_owner(span) };
    }
}

/// Tells the owner of a span that a remote free un-parked it (this thread won the
/// `FULL` → `NORMAL` transition, so it is the one to push the span).
///
/// # Safety
/// The calling thread must have just won `span`'s `FULL` → `NORMAL` transition (a remote
/// push that returned true): only a cache parks a span, so `owner` then names that cache,
/// and it cannot change until the owner drains this notification.
unsafe fn notify_owner(span: &Span) {
    // Owners are caches that are never freed (only recycled), and a parked span's owner
    // cannot change while it is parked.
    let owner = span.owner.load(Ordering::Acquire) as *const Cache;
    // SAFETY: `owner` is a cache (the contract), never unmapped; `notify` is the one field
    // other threads may touch.
    let stack = unsafe { &(*owner).notify };
    let me = span as *const Span as *mut Span;
    let mut head = stack.load(Ordering::Relaxed);
    loop {
        span.notify_next.store(head, Ordering::Relaxed);
        match stack.compare_exchange_weak(head, me, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) => head = seen,
        }
    }
}
