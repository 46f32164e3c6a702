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

use crossbeam_utils::CachePadded;
use tessera_span::lock::{Locked, RawLock};
use tessera_span::{Span, SpanList};

use crate::size_class::NUM_CLASSES;

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
}

impl Central {
    pub(crate) const fn new() -> Self {
        Self {
            spans: Locked::new(Listed {
                list: SpanList::EMPTY,
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
        let mut spans = self.spans.lock();
        // SAFETY: the caller hands over a span on no list; the lock held is the list's.
        unsafe { spans.list.push_front(span) };
        spans.len += 1;
    }

    /// Takes a span, if any; the caller becomes its owner.
    pub(crate) fn take(&self) -> Option<*mut Span> {
        let mut spans = self.spans.lock();
        // SAFETY: we hold the list's lock.
        let span = unsafe { spans.list.pop_front() }?;
        spans.len -= 1;
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
