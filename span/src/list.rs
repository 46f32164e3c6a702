//! The intrusive list of span records (Go's `mSpanList`): the page heap's free-run buckets,
//! a cache's partial and full lists, a central list.
//!
//! The links live in the span record itself (`Span::prev`, `Span::next`), so filing a span
//! costs no memory and unfiling one in the middle of a list costs no walk. A record is on at
//! most one list at a time, and whoever holds that list owns the record's links while it is
//! there: the page heap while the span is free, the small-object layer while it is in use
//! (see `span.rs`). Records live in arena headers, which are never unmapped, so a list may
//! name a record for as long as the process runs.
//!
//! # The contract
//!
//! The unsafe calls here ([`SpanList::push_front`], [`SpanList::remove`],
//! [`SpanList::next`]) trust their caller for three things, and every list's owner states
//! how it keeps them:
//! 1. **membership**: a span pushed is on no list, a span removed is on *this* list, and
//!    a span whose successor is asked for is on a list the caller holds;
//! 2. **exclusion**: the caller holds the list, and with it the links of every record on
//!    it: under the list owner's lock (page heap, central list) or on the one thread that
//!    owns it (a cache). Nobody else reads or writes those links meanwhile;
//! 3. **records**: every pointer is a span record in a mapped arena header.
//!
//! Given those, the safe calls ([`SpanList::first`], [`SpanList::iter`]) only read links
//! that the list's holder alone writes.

use core::marker::PhantomData;
use core::ptr;

use crate::span::Span;

/// A doubly linked list of span records, threaded through their `prev`/`next` fields. See
/// the module comment for what its users guarantee.
#[derive(Debug)]
pub struct SpanList {
    head: *mut Span,
}

// SAFETY: the list names span records in arena headers, mapped for the life of the process;
// whoever moves the list to another thread moves the right to its members' links with it
// (the contract: one holder at a time, under the owner's lock or on the owner's thread).
unsafe impl Send for SpanList {}

impl SpanList {
    /// The empty list.
    pub const EMPTY: SpanList = SpanList {
        head: ptr::null_mut(),
    };

    /// Whether no span is on the list.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The span at the front (the last pushed), or null.
    #[inline]
    pub fn first(&self) -> *mut Span {
        self.head
    }

    /// Files `span` at the front.
    ///
    /// # Safety
    /// `span` must be a span record on no list, and the caller must hold this list (the
    /// module comment's contract).
    #[inline]
    pub unsafe fn push_front(&mut self, span: *mut Span) {
        // SAFETY: a record on no list (the contract), so its links are ours to write.
        let s = unsafe { &mut *span };
        s.prev = ptr::null_mut();
        s.next = self.head;
        if !s.next.is_null() {
            // SAFETY: a member of this list, whose links the caller holds.
            unsafe { (*s.next).prev = span };
        }
        self.head = span;
    }

    /// Takes `span` off the list; its links are null afterwards.
    ///
    /// # Safety
    /// `span` must be on this list, and the caller must hold it (the module comment's
    /// contract).
    #[inline]
    pub unsafe fn remove(&mut self, span: *mut Span) {
        // SAFETY: a member of this list (the contract).
        let s = unsafe { &mut *span };
        if s.prev.is_null() {
            self.head = s.next;
        } else {
            // SAFETY: list neighbour, a member whose links the caller holds.
            unsafe { (*s.prev).next = s.next };
        }
        if !s.next.is_null() {
            // SAFETY: as above.
            unsafe { (*s.next).prev = s.prev };
        }
        s.prev = ptr::null_mut();
        s.next = ptr::null_mut();
    }

    /// Takes the span at the front off the list, if any.
    ///
    /// # Safety
    /// The caller must hold this list (the module comment's contract).
    #[inline]
    pub unsafe fn pop_front(&mut self) -> Option<*mut Span> {
        let span = self.head;
        if span.is_null() {
            return None;
        }
        // SAFETY: the front member; the caller holds the list.
        unsafe { self.remove(span) };
        Some(span)
    }

    /// The span after `span` on its list, or null at the end. For walks that take spans
    /// off the list as they go: read the next one before removing the current one.
    ///
    /// # Safety
    /// `span` must be on a list the caller holds (the module comment's contract).
    #[inline]
    pub unsafe fn next(span: *mut Span) -> *mut Span {
        // SAFETY: a listed record whose links the caller holds.
        unsafe { (*span).next }
    }

    /// The spans on the list, front to back.
    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            at: self.head,
            _list: PhantomData,
        }
    }
}

/// The spans of a [`SpanList`], front to back; see [`SpanList::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    at: *mut Span,
    _list: PhantomData<&'a SpanList>,
}

impl Iterator for Iter<'_> {
    type Item = *mut Span;

    #[inline]
    fn next(&mut self) -> Option<*mut Span> {
        let at = self.at;
        if at.is_null() {
            return None;
        }
        // SAFETY: a member of the borrowed list: a record whose links only the list's holder
        // writes (the contract), and the borrow keeps the list from changing meanwhile.
        self.at = unsafe { (*at).next };
        Some(at)
    }
}

impl Span {
    /// Clears the list links of a record on no list (a span just carved or cut from a run),
    /// so that a stale link never names another span.
    #[inline]
    pub(crate) fn clear_links(&mut self) {
        self.prev = ptr::null_mut();
        self.next = ptr::null_mut();
    }
}
