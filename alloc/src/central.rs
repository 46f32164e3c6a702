//! Central lists (Go's `mcentral`): per NUMA node and size class, the partly used spans
//! that no cache owns.
//!
//! A cache that is flushed (its thread exited, or its processor was destroyed) hands its
//! partly used spans here instead of keeping them idle; a cache that runs dry takes one
//! from here before it asks the page heap for fresh pages. Spans on a central list are
//! never `FULL` (see `remote.rs`), so remote frees into them are plain pushes and nobody
//! needs to be notified; the next cache to take the span collects them.
//!
//! The classes above 1 KiB (`size_class::shared`) go through here all the time, as Go's
//! do: a cache gives up a span it has used up (`Cache::give_up_current`: the central's tag,
//! parked, on no list), and the free that un-parks it files it here (`notify_owner` in
//! `cache/remote_batch.rs`). Nobody owns a listed span to see it empty, so the remote free
//! that empties one gives it back to the page heap (`remote_pushed`), but for one spare per
//! list, and the purger's sweep takes the spares of idle classes (`sweep`).
//!
//! The list is touched once per span, not per object, so a lock is cheap enough, and it
//! is padded to its own cache line so neighbouring classes do not contend.

use core::sync::atomic::Ordering;

use crossbeam_utils::CachePadded;
use tessera_span::{Span, SpanList};
use tessera_sys::lock::{Locked, RawLock};

use crate::remote;
use crate::size_class::NUM_CLASSES;

/// `Span::user_flags` of a small span no cache owns: it is on its central list. Written
/// under the list's lock (the cache flags, `cache.rs`, take the low four bits, and a cache
/// that takes the span clears this one).
const LISTED: u8 = 0b1_0000;

/// `Span::user_flags` of a listed span: the last sweep (`Central::sweep`) found it empty.
const SEEN_EMPTY: u8 = 0b10_0000;

/// The spans of one (node, class) that no cache owns.
#[derive(Debug)]
pub(crate) struct Central {
    spans: Locked<Listed>,
}

/// The spans and their count, under the central's lock.
#[derive(Debug)]
struct Listed {
    list: SpanList,
    len: usize,
    /// One listed span that a remote free emptied, kept instead of given back to the page
    /// heap (`release_if_empty`), as a cache keeps its spare; null when none.
    spare: *mut Span,
}

// SAFETY: the spare is a span of the list (or null), reached only under the central's lock
// like the list itself, which is `Send`.
unsafe impl Send for Listed {}

impl Listed {
    /// Takes `span` off the list (and out of the spare's place) and makes `owner` its owner:
    /// a cache's tag, or null for a span going back to the page heap (every carved object
    /// free: no free can race with that, short of a double free, and nothing may take the
    /// record for a span of ours any more).
    ///
    /// # Safety
    /// `span` must be on this list (its `LISTED` flag, read under the central's lock, which
    /// the caller holds as it holds `self`).
    unsafe fn unlist(&mut self, span: *mut Span, owner: *mut ()) {
        // SAFETY: the caller's contract; the flags and owner of a listed span are written
        // under the lock.
        unsafe {
            self.list.remove(span);
            (*span).user_flags &= !(LISTED | SEEN_EMPTY);
            (*span).owner.store(owner, Ordering::Relaxed);
        }
        self.len -= 1;
        if self.spare == span {
            self.spare = core::ptr::null_mut();
        }
    }
}

impl Central {
    pub(crate) const fn new() -> Self {
        Self {
            spans: Locked::new(Listed {
                list: SpanList::EMPTY,
                len: 0,
                spare: core::ptr::null_mut(),
            }),
        }
    }

    /// The owner tag remote freers see on spans held here (never equal to any cache).
    pub(crate) fn owner_tag(&self) -> *mut () {
        self as *const Central as *mut ()
    }

    /// Files a span. Its owner must already be this central's tag.
    ///
    /// # Safety
    /// `span` must be an in-use small span of this class that no cache or list holds.
    pub(crate) unsafe fn put(&self, span: *mut Span) {
        let mut spans = self.spans.lock();
        // SAFETY: the caller hands over a span on no list; the lock held is the list's, and
        // the flags of a span no cache owns are written under it.
        unsafe {
            spans.list.push_front(span);
            (*span).user_flags = ((*span).user_flags & !SEEN_EMPTY) | LISTED;
        }
        spans.len += 1;
    }

    /// Takes a span, if any, and makes `owner` (a cache's tag) its owner.
    pub(crate) fn take(&self, owner: *mut ()) -> Option<*mut Span> {
        let mut spans = self.spans.lock();
        let span = spans.list.first();
        if span.is_null() {
            return None;
        }
        // SAFETY: the list's first span, under its lock; the owner is set under the lock, so
        // that `release_if_empty` sees the span listed and ours, or neither.
        unsafe { spans.unlist(span, owner) };
        Some(span)
    }

    /// Gives `span` back to its node's page heap if it is on this list and every object
    /// carved from it is free, unless it becomes the list's spare: for a remote free that
    /// found it so (`remote_pushed`). A span on a central list has no owner to see it empty
    /// (only a cache that takes it), and one its last cache gave up
    /// (`Cache::give_up_current`) is freed into by other threads alone, the cache that gave
    /// it up included; kept until a cache of the class takes it, it would not serve other
    /// classes (a single thread that alternates between two sets of classes, freeing all
    /// in between, peaked 16% higher), and a program done with a class would keep them all.
    ///
    /// # Safety
    /// `span` must be the record of a small span of this class that was in use when the
    /// caller freed into it (it may have changed hands since: this checks under the lock).
    pub(crate) unsafe fn release_if_empty(&self, span: *mut Span) {
        let mut spans = self.spans.lock();
        // SAFETY: a span record (the contract), read under the lock that guards the flags
        // and owner of the spans listed here.
        let s = unsafe { &*span };
        if s.owner.load(Ordering::Acquire) != self.owner_tag()
            || s.user_flags & LISTED == 0
            || remote::is_suspect(s)
            || spans.spare == span
        {
            // Not ours (taken, or given up and not yet un-parked); a double free may
            // inflate its count, which the next cache to take it checks; or kept already.
            return;
        }
        if !remote::all_free(s) {
            return;
        }
        if spans.spare.is_null() {
            spans.spare = span;
            return;
        }
        let node = crate::node::node(s.node());
        // SAFETY: listed here (the flag, under the lock). `s` is not used after this.
        unsafe { spans.unlist(span, core::ptr::null_mut()) };
        drop(spans);
        // SAFETY: unlisted, holding no live object, of this heap's node.
        unsafe { node.heap.free(core::ptr::NonNull::new_unchecked(span)) };
    }

    /// Gives back to the page heap the listed spans whose every carved object is free and
    /// that the last sweep found so too (every one of them, if `all`), and returns how many
    /// empty ones stay listed. From the purger every epoch and from a reclaim (`all`): what
    /// `release_if_empty` leaves, the spare above all. A span whose remote list is `SUSPECT`
    /// stays, whatever its count says (a double free may inflate it): the next cache to take
    /// it checks its lists for duplicates. Two sweeps, so that an idle class's spare goes
    /// back, and a busy one's is taken again.
    pub(crate) fn sweep(&self, all: bool) -> usize {
        let mut spans = self.spans.lock();
        let mut left = 0;
        let mut at = spans.list.first();
        while !at.is_null() {
            // SAFETY: a span on our list, under its lock.
            let next = unsafe { SpanList::next(at) };
            // SAFETY: as above: no cache owns it, and its flags are written under the lock.
            let s = unsafe { &mut *at };
            // A double free may inflate a suspect span's count: the next cache to take it
            // checks it.
            if !remote::all_free(s) || remote::is_suspect(s) {
                s.user_flags &= !SEEN_EMPTY;
            } else if all || s.user_flags & SEEN_EMPTY != 0 {
                let node = crate::node::node(s.node());
                // SAFETY: listed here, under the lock. `s` is not used after this.
                unsafe { spans.unlist(at, core::ptr::null_mut()) };
                // SAFETY: unlisted, holding no live object, of this heap's node. The page
                // heap's lock nests inside a central one (`fork.rs`'s order).
                unsafe { node.heap.free(core::ptr::NonNull::new_unchecked(at)) };
            } else {
                s.user_flags |= SEEN_EMPTY;
                left += 1;
            }
            at = next;
        }
        left
    }

    /// Spans currently listed.
    pub(crate) fn len(&self) -> usize {
        self.spans.lock().len
    }

    pub(crate) fn raw_lock(&self) -> &RawLock {
        self.spans.raw()
    }
}

/// After a remote free pushed onto `s`'s list, leaving it `listed` long: if a central list
/// holds it and no object in it is live, gives it back to the page heap
/// (`Central::release_if_empty`, which checks again under its lock). Two loads and a compare
/// while some object of the span is live.
///
/// # Safety
/// The caller must just have freed an object of the in-use small span `s` onto its remote
/// list, and `listed` be what that push returned (`remote::Pushed`).
#[inline]
pub(crate) unsafe fn remote_pushed(s: &Span, listed: u32) {
    if !remote::all_free_with(s, listed) {
        return;
    }
    let central =
        &crate::node::node(s.node()).centrals[crate::size_class::SizeClass::of(s).index()];
    if s.owner.load(Ordering::Relaxed) == central.owner_tag() {
        // SAFETY: the caller's contract.
        unsafe { central.release_if_empty(s as *const Span as *mut Span) };
    }
}

/// `Central::sweep` of every class of every node in use; how many empty spans stay listed.
pub(crate) fn sweep_all(all: bool) -> usize {
    let mut left = 0;
    for node in crate::node::used_nodes() {
        for central in node.centrals.iter() {
            left += central.sweep(all);
        }
    }
    left
}

/// One node's central lists, one per class, each on its own cache line.
pub(crate) type Centrals = [CachePadded<Central>; NUM_CLASSES];

pub(crate) const fn new_centrals() -> Centrals {
    [const { CachePadded::new(Central::new()) }; NUM_CLASSES]
}
