//! Central lists (Go's `mcentral`): per NUMA node and size class, the partly used spans
//! that no cache owns.
//!
//! A cache that is flushed (its thread exited, or its processor was destroyed) hands its
//! partly used spans here instead of keeping them idle; a cache that runs dry takes one
//! from here before it asks the page heap for fresh pages. Spans on a central list are
//! never `FULL` (see `remote.rs`), so remote frees into them are plain pushes and nobody
//! needs to be notified; the next cache to take the span collects them.
//!
//! The list is touched once per span, not per object, so a lock is cheap enough, and it
//! is padded to its own cache line so neighbouring classes do not contend.

use core::ptr;

use crossbeam_utils::CachePadded;
use tessera_span::Span;
use tessera_sys::lock::{Locked, RawLock};

use crate::size_class::NUM_CLASSES;

/// The spans of one (node, class) that no cache owns.
#[derive(Debug)]
pub(crate) struct Central {
    spans: Locked<SpanList>,
}

#[derive(Debug)]
struct SpanList {
    head: *mut Span,
    len: usize,
}

// SAFETY: the list's spans live in arena headers for the life of the process; the lock
// serialises every access.
unsafe impl Send for SpanList {}

impl Central {
    pub(crate) const fn new() -> Self {
        Self {
            spans: Locked::new(SpanList {
                head: ptr::null_mut(),
                len: 0,
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
        let mut list = self.spans.lock();
        // SAFETY: the caller hands over the span; `prev`/`next` are ours while listed.
        unsafe {
            (*span).prev = ptr::null_mut();
            (*span).next = list.head;
            if !list.head.is_null() {
                (*list.head).prev = span;
            }
        }
        list.head = span;
        list.len += 1;
    }

    /// Takes a span, if any; the caller becomes its owner.
    pub(crate) fn take(&self) -> Option<*mut Span> {
        let mut list = self.spans.lock();
        let span = list.head;
        if span.is_null() {
            return None;
        }
        // SAFETY: listed spans are valid; we hold the lock.
        unsafe {
            list.head = (*span).next;
            if !list.head.is_null() {
                (*list.head).prev = ptr::null_mut();
            }
            (*span).next = ptr::null_mut();
        }
        list.len -= 1;
        Some(span)
    }

    /// Spans currently listed.
    pub(crate) fn len(&self) -> usize {
        self.spans.lock().len
    }

    pub(crate) fn raw_lock(&self) -> &RawLock {
        self.spans.raw()
    }
}

/// One node's central lists, one per class, each on its own cache line.
pub(crate) type Centrals = [CachePadded<Central>; NUM_CLASSES];

pub(crate) const fn new_centrals() -> Centrals {
    [const { CachePadded::new(Central::new()) }; NUM_CLASSES]
}
