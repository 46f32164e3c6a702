//! The flush: what a cache gives back when its thread exits or its processor is destroyed
//! (free objects, empty spans, partly used spans), so that an idle cache holds nothing
//! others could use.

use core::ptr;
use core::sync::atomic::Ordering;

use tessera_span::SpanList;

use super::local_free::check_suspect;
use super::refill::park_for_central;
use super::{Bin, Cache, NOTIFY_PENDING, ON_PARTIAL};
use crate::node;
use crate::remote;
use crate::size_class::SizeClass;

impl Cache {
    /// Gives back everything this cache holds that others could use: the current spans'
    /// free objects, empty spans to the page heap, partly used spans to the central lists.
    /// Parked (full) spans stay: nothing in them is free, and they find their way back
    /// through the notification stack when the cache is next used or flushed.
    pub(crate) fn flush(&mut self) {
        self.publish_batch();
        self.drain_notifications();
        for class in SizeClass::all() {
            let bin = &mut self.bins[class.index()];
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
            self.spare[class.index()] = ptr::null_mut();
            let mut at = self.partial[class.index()].first();
            while !at.is_null() {
                // SAFETY: spans on our lists are ours, and the lists this thread's alone.
                let next = unsafe { SpanList::next(at) };
                // SAFETY: as above.
                let s = unsafe { &mut *at };
                if s.user_flags & NOTIFY_PENDING == 0 {
                    // SAFETY: ours, not current.
                    unsafe { check_suspect(s) };
                    if remote::all_free(s) {
                        // SAFETY: ours, on our partial list, no notification pending (tested
                        // above), every carved object free (just counted).
                        unsafe { self.release_empty(at) };
                    } else {
                        // SAFETY: ours, on our partial list.
                        unsafe { self.unlink(at) };
                        let central = &node::node(s.node()).centrals[class.index()];
                        s.owner.store(central.owner_tag(), Ordering::Release);
                        self.recent.forget(at);
                        // SAFETY: the span is unlinked, partly used, and now tagged as central's.
                        unsafe { central.put(at) };
                    }
                }
                at = next;
            }
        }
        self.drain_stash();
    }

    /// Gives the parked (full) spans to their classes' central lists, as
    /// `give_up_current` gives up a used-up span: each stays parked, now the central
    /// list's, and the remote free that un-parks it files it there, where the free that
    /// empties it gives it back to the page heap (`central::remote_pushed`). For a cache
    /// nobody will use for a while: its thread exited or its processor is gone (`pool`).
    ///
    /// Kept by the idle cache, such a span came back only when a thread reused the cache:
    /// the frees other threads made into it after the exit went to the idle cache's
    /// notification stack, which nobody drained. A thread that allocated 64 MiB and exited,
    /// its blocks then freed by another thread, left 72 MiB resident for good, where glibc
    /// went back to 2.4 MiB (issue #13, item 1).
    ///
    /// A span whose un-park a remote freer has won (its notification on the way to this
    /// cache's stack) stays: `flush` finds it there when the cache is next flushed or used.
    pub(crate) fn give_up_parked(&mut self) {
        for class in SizeClass::all() {
            let mut at = self.full[class.index()].first();
            while !at.is_null() {
                // SAFETY: spans on our lists are ours, and the lists this thread's alone.
                let next = unsafe { SpanList::next(at) };
                // SAFETY: as above.
                let s = unsafe { &mut *at };
                // Unparked by us, the span takes no notification: it is ours until the
                // owner changes below, as the current span is in `give_up_current`.
                if s.user_flags & NOTIFY_PENDING == 0 && remote::try_unpark(s) {
                    // SAFETY: ours, on our full list.
                    unsafe { self.unlink(at) };
                    self.recent.forget(at);
                    if !park_for_central(s) {
                        // Remote frees came in since the un-park (they saw no park, so none
                        // files the span): it has free objects, so it goes on the list now,
                        // and back to the page heap if those frees emptied it.
                        // SAFETY: the central list's span, on no list; nobody else files
                        // it (no park for a freer to win).
                        unsafe {
                            let central = &node::node(s.node()).centrals[class.index()];
                            central.put(at);
                            central.release_if_empty(at);
                        }
                    }
                }
                at = next;
            }
        }
    }
}
