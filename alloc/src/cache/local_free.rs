//! Frees into spans the cache owns that the inlined path (`free_owned_fast`) leaves: a block
//! at a list's head, a block carrying the freed-block marker (confirmed on the span's lists
//! as a double free or not), a block of a parked span (moved back to partial); and what
//! happens to a span once every carved object in it is free.

use core::sync::atomic::Ordering;

use tessera_span::Span;

use super::{
    CURRENT, Cache, Freed, NOTIFY_PENDING, ON_FULL, ON_PARTIAL, WHERE_MASK, push_local,
    set_block_next,
};
use crate::freelist::{self, HARDENED};
use crate::remote;
use crate::report;
use crate::size_class::SizeClass;

impl Cache {
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
        if unsafe { freelist::looks_freed_in_with(self.key, s, ptr) } {
            // SAFETY: we own `s` and `ptr` is one of its objects (the contract).
            unsafe { self.confirm_double_free(s, ptr, "double free") };
        }
        if s.user_flags & WHERE_MASK == CURRENT {
            let bin = &mut self.bins[SizeClass::of(s).index()];
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

    /// `free_local` for a block whose marker the caller has tested (`tessera::realloc`'s
    /// move): the common cases without that test; the rest (a parked span, a notification
    /// pending, unhardened a list's head) through `free_local`.
    ///
    /// # Safety
    /// As `free_local`; `ptr` must not carry the freed-block marker, or be on no list of
    /// `span` (`freelist::looks_freed_in` false, or `confirm_double_free` found it on none).
    #[inline(always)]
    pub(crate) unsafe fn free_local_checked(&mut self, span: *mut Span, ptr: *mut u8) {
        // SAFETY: forwarded contract.
        match unsafe { self.free_owned_fast_in::<true>(&*span, ptr) } {
            Freed::Done => {}
            // SAFETY: we own the span (the caller's contract).
            Freed::Emptied => unsafe { self.release_if_empty(span) },
            // SAFETY: forwarded contract.
            Freed::Not => unsafe { self.free_local(span, ptr) },
        }
    }

    /// Returns a non-current span whose every carved object is free to the page heap.
    ///
    /// # Safety
    /// `span` must be a small span this cache owns (current, listed, or on none of its lists).
    #[inline(never)]
    pub(super) unsafe fn release_if_empty(&mut self, span: *mut Span) {
        // SAFETY: we own the span (the contract).
        let s = unsafe { &*span };
        if s.user_flags & (WHERE_MASK | NOTIFY_PENDING) != ON_PARTIAL {
            return;
        }
        // SAFETY: we own the span (the contract), which is not current.
        unsafe { check_suspect(s) };
        if !remote::all_free(s) {
            return;
        }
        let class = SizeClass::of(s).index();
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

    /// The freed-block marker matched on a free (or `realloc`, `malloc_usable_size`: `what`
    /// names the call) of `ptr` into `s`, which this cache owns: reports it if `ptr` is on one of the span's lists (the bin's if `s` is
    /// current, the span's local list, its remote list). A block on none of them is a
    /// coincidence (see `freelist.rs`) and the caller frees it as usual. One waiting in
    /// another thread's unpublished remote batch is on no list yet: the freer reads the
    /// marker this free writes when its batch goes out, and the owner finds the block twice
    /// (`SUSPECT`), unless it was handed out again meanwhile (`RemoteBatch` says why that
    /// order goes unseen).
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
        let bin = &self.bins[SizeClass::of(s).index()];
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
}

/// If a remote free into `s` carried the freed-block marker (`remote::SUSPECT`), takes the
/// remote list onto the local one and checks the local list for a block on it twice, before
/// the caller trusts the span's counts (a double free counts one block twice, and a span
/// counted empty too early would go back to the page heap with a live block in it).
///
/// # Safety
/// The calling thread's cache must own `s`, and `s` must not be its current span.
#[inline(always)]
pub(super) unsafe fn check_suspect(s: &Span) {
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
