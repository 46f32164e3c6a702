//! The refill (Go's `mcache.refill`): a bin ran dry. More objects come from the current
//! span (carved lazily, or its remote list taken); when it has none, it is parked on the
//! full list (above 1 KiB, given up to the central list: `give_up_current`) and the next
//! span installed: one un-parked by a remote free (the notification
//! stack), one from the partial list, one from the node's central list, or a fresh one
//! (from the stash, else the page heap).

use core::ptr;
use core::sync::atomic::Ordering;

use tessera_span::{Span, SpanKind};

use super::{
    Bin, CURRENT, Cache, NOTIFY_PENDING, ON_FULL, ON_NONE, ON_PARTIAL, WHERE_MASK, ZERO_TAIL,
};
use crate::freelist;
use crate::node;
use crate::remote;
use crate::size_class::{self, SizeClass};

/// How many bytes of objects a refill carves from a fresh span at once. Carving lazily
/// keeps a fresh span's RSS to the pages actually used.
const CARVE_BYTES: usize = 4096;

impl Cache {
    /// Refills the bin of `class` and returns one object, or null when the OS refuses
    /// memory. Called when the bin's free list is empty.
    #[inline(never)]
    pub(crate) fn refill(&mut self, class: SizeClass) -> *mut u8 {
        // A refill is where this thread stops to look at its spans; objects it freed into
        // other threads' spans should not wait longer than that.
        self.publish_batch();
        loop {
            let bin = &mut self.bins[class.index()];
            if !bin.free.is_null() {
                // SAFETY: a non-empty list of our bin, which only this cache's thread touches.
                return unsafe { bin.pop() };
            }
            let span = self.bins[class.index()].span;
            if !span.is_null() {
                // SAFETY: the current span is an in-use small span this cache owns.
                let s = unsafe { &*span };
                // SAFETY: `s` is the current span of bin `class`.
                let list = unsafe { self.more_from_current(s, class) };
                if !list.is_null() {
                    self.bins[class.index()].free = list;
                    continue;
                }
                // Notifications first: one may be the news that other threads free this
                // cache's objects of the class, which decides where the span goes.
                self.drain_notifications();
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
    pub(crate) fn take_zeroed(&mut self, class: SizeClass) -> *mut u8 {
        let span = self.bins[class.index()].span;
        if span.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: the current span is an in-use small span this cache owns.
        let s = unsafe { &*span };
        let carved = s.carved.load(Ordering::Relaxed);
        if s.user_flags & ZERO_TAIL == 0 || carved >= s.capacity {
            return ptr::null_mut();
        }
        set_carved(s, carved + 1);
        self.bins[class.index()].len = s.obj_bytes.load(Ordering::Relaxed) as usize;
        (s.obj_base + carved as usize * s.obj_size as usize) as *mut u8
    }

    /// More free objects from the current span: carve, or take its remote list.
    ///
    /// # Safety
    /// `s` must be the current span of this cache's bin `class`.
    unsafe fn more_from_current(&mut self, s: &Span, class: SizeClass) -> *mut u8 {
        let carved = s.carved.load(Ordering::Relaxed);
        if carved < s.capacity {
            // SAFETY: the current span of bin `class` (the contract) is a small span of
            // `class` that this cache owns, and `carved` is its count, below its capacity.
            let list = unsafe { carve(s, class, carved) };
            self.bins[class.index()].len = s.obj_bytes.load(Ordering::Relaxed) as usize;
            return list;
        }
        let (head, _, suspect) = remote::take(s);
        if !head.is_null() {
            self.freed_by_others[class.index()] = true;
        }
        if suspect {
            // SAFETY: a list taken off the remote word of our current span; the bin's list
            // is empty (this is a refill) and the span's local list is empty while it is
            // current (`install_next_span` moved it into the bin).
            unsafe { freelist::check_duplicates(s, &[head]) };
        }
        head
    }

    /// The current span has nothing left: park it on the full list, or give it up if its
    /// class is shared (`size_class::shared`) and other threads free this cache's objects of
    /// it (`freed_by_others`). Only their frees strand free room in a cache's spans; with
    /// none, a span given up would come back to this cache alone, each of its frees into it
    /// a remote one meanwhile: a single thread freeing its own 1-20 KiB blocks ran 14% more
    /// instructions with every such span given up (`burst` at one thread, 6.7%).
    fn park_current(&mut self, class: SizeClass) {
        let span = self.bins[class.index()].span;
        // SAFETY: the current span is ours.
        let s = unsafe { &*span };
        if s.user_flags & NOTIFY_PENDING == 0
            && size_class::shared(class)
            && self.freed_by_others[class.index()]
        {
            return self.give_up_current(class);
        }
        // A span whose earlier notification is still on its way must not be parked again:
        // a second un-park would push it onto the notification stack twice. It waits on the
        // full list unparked, and the pending notification moves it back.
        if s.user_flags & NOTIFY_PENDING == 0 && !remote::try_park(s) {
            // A remote free slipped in between `take` and the park; keep the span current and
            // let the refill loop take it.
            return;
        }
        self.bins[class.index()] = Bin::EMPTY;
        // SAFETY: a span we own that is on none of our lists: it was current until the line
        // above.
        unsafe { self.link(span, ON_FULL) };
    }

    /// Gives up the current span of a shared class, which has nothing left (Go's `mcentral`
    /// flow): it becomes the central list's, parked (`remote::FULL`) and on no list, and
    /// the remote free that un-parks it files it on the central list (`notify_owner`), where
    /// whichever cache of the node next runs dry of the class takes it. Frees this cache
    /// makes into it from now on are remote ones. Owned, such a span would wait on this
    /// cache's full list, then its partial list, for this cache alone to reuse its free
    /// objects; a class with few objects a span holds each thread's spans mostly free (the
    /// threaded stress program: 8 spans of 8 objects of one 18-32 KiB class in a cache, 20
    /// to 28 objects in use).
    ///
    /// A span with a notification pending cannot be given up: the notification is on its
    /// way to this cache's stack. It is parked as before, and the next time it is used up
    /// with none pending it goes.
    fn give_up_current(&mut self, class: SizeClass) {
        let span = self.bins[class.index()].span;
        {
            // SAFETY: the current span is ours, and only its owner writes its flags. The
            // reference ends before the park, after which the span may be another's.
            let s = unsafe { &mut *span };
            if !park_for_central(s) {
                // A remote free slipped in between `take` and the park: keep the span current
                // and let the refill loop take it.
                s.user_flags = (s.user_flags & !WHERE_MASK) | CURRENT;
                s.owner.store(self.tag(), Ordering::Relaxed);
                return;
            }
        }
        // From here another thread may file the span on the central list and take it: this
        // cache no longer touches it.
        self.recent.forget(span);
        self.bins[class.index()] = Bin::EMPTY;
    }

    /// Makes a span with free objects current for `class`: from the notifications, the
    /// partial list, the node's central list, or the page heap. False when out of memory.
    fn install_next_span(&mut self, class: SizeClass) -> bool {
        if !self.bins[class.index()].span.is_null() {
            // `park_current` lost a race with a remote free: retry the same span.
            return true;
        }
        self.drain_notifications();
        // Fresh spans come from the node the thread runs on now: a cache is not tied to a
        // node, its objects are (each span goes home to its own node's heap).
        let node = node::node(crate::current_node());
        let span = if !self.partial[class.index()].is_empty() {
            let span = self.partial[class.index()].first();
            // SAFETY: the head of our partial list of `class`: a span we own, listed there.
            unsafe { self.unlink(span) };
            if self.spare[class.index()] == span {
                self.spare[class.index()] = ptr::null_mut();
            }
            span
        } else if let Some(span) = self.take_central(node, class) {
            span
        } else {
            let info = class.info();
            let step = self.ramp[class.index()] as usize;
            let pages = size_class::ramp_pages(class, step);
            let fresh = match self.unstash(pages) {
                Some(span) => tessera_span::Allocated {
                    span,
                    zeroed: false,
                },
                None => match crate::limit::retry(|| node.heap.alloc(pages, SpanKind::Small)) {
                    Some(fresh) => fresh,
                    // The reclaim `retry` made on a memory limit flushed idle caches, whose
                    // partly used spans went to the central lists: a per-CPU back end the
                    // thread used before it moved to another id holds the very blocks it
                    // freed. Take one of those before failing.
                    None => match self.take_central(node, class) {
                        // SAFETY: the central list's span, now ours and on no list.
                        Some(span) => return unsafe { self.make_current(class, span) },
                        None => return false,
                    },
                },
            };
            self.ramp[class.index()] = (step + 1).min(size_class::RAMP_STEPS - 1) as u8;
            let objects = (pages * tessera_span::PAGE_SIZE / info.size as usize) as u32;
            let span = fresh.span.as_ptr();
            // SAFETY: a fresh small span, ours alone until we publish it.
            unsafe {
                let s = &mut *span;
                // A stashed span may come back for another class: memos of its old
                // geometry must stop matching (`Span::generation`, `percpu/memo.rs`).
                s.bump_generation();
                s.class = class.byte();
                s.div_test = info.div_test;
                // Nothing carved yet: no address in the span is a block (`Span::obj_bytes`).
                s.obj_bytes.store(0, Ordering::Relaxed);
                let base = s.base() as usize;
                s.obj_base = base + size_class::colour(info.size as usize, pages, base);
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
        // SAFETY: each branch above leaves `span` an in-use small span of `class` that we
        // own, unlinked from our lists (or never on them).
        unsafe { self.make_current(class, span) }
    }

    /// A span of `class` from the central list of `node`, now ours.
    fn take_central(&mut self, node: &node::Node, class: SizeClass) -> Option<*mut Span> {
        node.centrals[class.index()].take(self.tag())
    }

    /// Makes `span` the one `class`'s bin allocates from. True, for `install_next_span`'s
    /// tail.
    ///
    /// # Safety
    /// `span` must be an in-use small span of `class` that this cache owns and has on none
    /// of its lists.
    unsafe fn make_current(&mut self, class: SizeClass, span: *mut Span) -> bool {
        // SAFETY: the caller's contract.
        let s = unsafe { &mut *span };
        s.user_flags = (s.user_flags & !WHERE_MASK) | CURRENT;
        self.bins[class.index()] = Bin {
            free: s.local_free.swap(ptr::null_mut(), Ordering::Relaxed),
            start: s.obj_base,
            len: s.obj_bytes.load(Ordering::Relaxed) as usize,
            div_test: s.div_test,
            span,
        };
        s.local_count.store(0, Ordering::Relaxed);
        true
    }

    /// Moves every span remote freers un-parked back to its partial list.
    pub(super) fn drain_notifications(&mut self) {
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
            self.freed_by_others[SizeClass::of(s).index()] = true;
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
}

/// Carves the next batch of objects from `s` (which has uncarved room) into a list.
///
/// # Safety
/// `s` must be an in-use small span of `class` that the calling thread's cache owns, and
/// `carved` its carved count, below its capacity: the objects from `carved` on then lie
/// inside the span and have never been handed out, so the calling thread alone writes them.
unsafe fn carve(s: &Span, class: SizeClass, carved: u32) -> *mut u8 {
    let size = class.size();
    let batch = (CARVE_BYTES / size).clamp(1, (s.capacity - carved) as usize);
    let first = s.obj_base + carved as usize * size;
    // The key loaded once for the batch: `set_block_next` loads it per block (an atomic
    // load, through the GOT in `libtessera.so`), which LLVM does not hoist out of the loop.
    let key = freelist::key();
    for i in 0..batch - 1 {
        let block = (first + i * size) as *mut u8;
        // SAFETY: an uncarved object of `s` (`batch` stops at the capacity): ours alone.
        unsafe { freelist::write_link_with(key, block, (first + (i + 1) * size) as *mut u8) };
    }
    // SAFETY: as above, the batch's last object.
    unsafe {
        freelist::write_link_with(
            key,
            (first + (batch - 1) * size) as *mut u8,
            ptr::null_mut(),
        )
    };
    set_carved(s, carved + batch as u32);
    first as *mut u8
}

/// Records that the first `carved` objects of `s` are carved: its count, and the bytes a
/// block may lie in (`Span::obj_bytes`; the bin's copy is the caller's to update).
#[inline]
fn set_carved(s: &Span, carved: u32) {
    s.carved.store(carved, Ordering::Relaxed);
    s.obj_bytes.store(carved * s.obj_size, Ordering::Relaxed);
}

/// Hands `s`, a span of the calling thread's cache on none of its lists, to its class's
/// central list, parked (`give_up_current`, `Cache::give_up_parked`): the central's tag and
/// the flags first, since the park's release publishes them to the freer that un-parks the
/// span (it reads the owner to know where the span goes) and through it to the cache that
/// takes it next. False when the park failed (a remote free came in first): the span is
/// then tagged as the central list's but filed by nobody, and the caller decides.
pub(super) fn park_for_central(s: &mut Span) -> bool {
    let central = &node::node(s.node()).centrals[SizeClass::of(s).index()];
    s.user_flags = (s.user_flags & !WHERE_MASK) | ON_NONE;
    s.owner.store(central.owner_tag(), Ordering::Release);
    remote::try_park(s)
}
