//! Frees into spans another cache (or a central list) owns: chained per span and published
//! with one CAS (`RemoteBatch`), and the owner told through its notification stack when a
//! free un-parks its span.

use core::ptr;
use core::sync::atomic::Ordering;

use tessera_span::Span;

use super::{Cache, set_block_next};
use crate::freelist;
use crate::remote;

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
pub(super) struct RemoteBatch {
    pub(super) span: *mut Span,
    head: *mut u8,
    tail: *mut u8,
    pub(super) count: u32,
    /// A block of the batch carried the freed-block marker: publish with `SUSPECT`.
    suspect: bool,
}

const BATCH_MAX: u32 = 64;

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
        if !batch.span.is_null() {
            // SAFETY: the batch's blocks (the previous span's or a full one's), published
            // before the batch is overwritten.
            unsafe { batch.publish() };
        }
        // SAFETY: as above.
        unsafe { set_block_next(ptr, ptr::null_mut()) };
        *batch = RemoteBatch {
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
        if !batch.span.is_null() {
            // SAFETY: taken out of the cache above: published once.
            unsafe { batch.publish() };
        }
    }
}

impl RemoteBatch {
    /// Pushes the batch's blocks onto its span's remote list (the batch itself is left as
    /// it was: the caller overwrites or drops it).
    ///
    /// # Safety
    /// `span` must not be null, and the batch must not have been published before.
    #[inline(always)]
    unsafe fn publish(&self) {
        // SAFETY: the batch holds free objects of `self.span`, which stays in use while
        // they are unpublished (its owner counts them as allocated), linked head to tail; a
        // push that returns true won the span's `FULL` -> `NORMAL` transition.
        unsafe {
            let span = &*self.span;
            if remote::push_chain(span, self.head, self.tail, self.count, self.suspect) {
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
