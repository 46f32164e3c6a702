//! Frees into spans another cache (or a central list) owns: chained per span and published
//! with one CAS (`RemoteBatch`), and the owner told through its notification stack when a
//! free un-parks its span.

use core::ptr;
use core::sync::atomic::{Ordering, fence};

use tessera_span::Span;

use super::Cache;
use crate::freelist;
use crate::node;
use crate::remote;
use crate::size_class::SizeClass;

/// Remote frees not yet published: the blocks, with their spans, in the order they were
/// freed.
///
/// A free into a span another thread owns ends in an atomic push onto that span's remote
/// list. Done at once, each such free waits on its misses one after another: the block
/// (for the freed-block marker), then the locked push, which lets no later load start
/// before it. When a thread drops a structure another built, in an order unrelated to the
/// build (a hash map's keys, rayon's merged maps), each free lands in a different span and
/// block, and such a free cost 55 ns against mimalloc's 34 ns (`free` of 16–64 B blocks
/// another thread built, shuffled: `benches/fastpath/remote.sh`). Reading the marker at the
/// free and deferring only the push still cost 37 ns.
///
/// So the free only records the block and its span here, touching neither (13 ns). The
/// batch is published when it is full, and whenever this thread's cache refills, flushes
/// or is collected (so no block waits longer than that, and a span never changes hands
/// while the batch holds its blocks: spans come to a cache only through its refill).
/// Publishing first asks for every line it will touch, so their misses overlap, then walks
/// the batch: a run of blocks of one span (a consumer freeing what a producer allocated, in
/// order) goes onto the span's list as one chain, with one push.
///
/// Double frees: publishing reads each block's marker, as the free would have. A block
/// freed twice into the batch carries it the second time (the first wrote its link), and
/// is found in the batch; one that was on a list already reaches the owner with `SUSPECT`,
/// as a remote free always has. What no check sees: the owner freeing the block after this
/// thread did, and handing it out again, before the batch goes out (the block then carries
/// no marker, and goes onto the remote list live). ARCHITECTURE.md, "Double frees".
#[derive(Debug)]
#[repr(C)]
pub(super) struct RemoteBatch {
    len: u32,
    spans: [*mut Span; BATCH_MAX],
    blocks: [*mut u8; BATCH_MAX],
}

/// Blocks a batch holds before it is published. The random remote free above cost 22 ns
/// with 16, 16 ns with 32, 13 ns with 64. A batch holds its blocks' spans in use until it
/// goes out, and only its own thread can publish it: a thread that goes idle right after
/// freeing into other threads' spans keeps up to this many of them from going back to the
/// page heap until it next refills or exits (one span before batches held blocks of many),
/// so it stays small.
const BATCH_MAX: usize = 64;

impl Cache {
    /// Frees `ptr`, an object of `span`, which this cache does not own: records it in the
    /// remote batch (see `RemoteBatch`), publishing the batch when it is full.
    ///
    /// # Safety
    /// `ptr` must be a live object of the in-use small span `span`, not owned by this cache.
    #[inline]
    pub(crate) unsafe fn free_remote_batched(&mut self, span: *mut Span, ptr: *mut u8) {
        let batch = &mut self.batch;
        let at = batch.len as usize;
        // `len` stays below `BATCH_MAX`: a batch is published as it fills.
        batch.spans[at] = span;
        batch.blocks[at] = ptr;
        batch.len += 1;
        if batch.len as usize == BATCH_MAX {
            self.publish_batch_now();
        }
    }

    /// Publishes the remote batch, if any, onto its spans' remote lists.
    #[inline]
    pub(crate) fn publish_batch(&mut self) {
        if self.batch.len != 0 {
            self.publish_batch_now();
        }
    }

    /// `publish_batch` for a batch that holds blocks.
    #[inline(never)]
    fn publish_batch_now(&mut self) {
        let len = core::mem::take(&mut self.batch.len) as usize;
        // The cache's copy of the key, loaded once for the whole batch: `freelist::key()`
        // is a load through the GOT in `libtessera.so`, and LLVM does not merge the two
        // atomic loads per block that the marker test and the link's encoding made.
        let key = self.key;
        let spans = &self.batch.spans[..len];
        let blocks = &self.batch.blocks[..len];
        for (&span, &block) in spans.iter().zip(blocks) {
            // SAFETY: a place only (the record's remote word): nothing is read.
            prefetch_line(unsafe { ptr::addr_of!((*span).remote) } as usize);
            prefetch_line(block as usize);
        }
        let mut at = 0;
        while at < len {
            let span = spans[at];
            // SAFETY: the batch's spans stay in use while it holds their blocks (their
            // owners count them as allocated).
            let s = unsafe { &*span };
            // The run of `s`'s blocks from here, chained from its last block (the head) to its
            // first (the tail). The tail's link is left to the push, which writes it once, to
            // the list's head: a free into a span of its own, the common case when a thread
            // drops a structure another built (rayon's merged maps), writes one link.
            let tail = blocks[at];
            // SAFETY: a block of `s` this thread gave up, ours until published.
            let mut suspect = unsafe { marked(key, s, &blocks[..at], tail) };
            let (mut head, mut count) = (tail, 1);
            at += 1;
            if at < len && spans[at] == span {
                // SAFETY: blocks of `s` from `at` on, which this thread gave up.
                let run = unsafe { chain_run(key, s, spans, blocks, at, tail) };
                (head, count, at) = (run.head, run.count, run.end);
                suspect |= run.suspect;
            }
            // SAFETY: free objects of `s`, linked head to tail but for the tail's link,
            // reachable by nobody else; `key` is the process's key (the cache's copy).
            let pushed = unsafe { remote::push_chain(s, key, head, tail, count, suspect) };
            // SAFETY: a push that says so won the span's `FULL` -> `NORMAL` transition; the
            // push just made, and what it left.
            unsafe {
                if pushed.notify {
                    notify_owner(s);
                }
                crate::central::remote_pushed(s, pushed.listed);
            }
        }
    }

    /// Calls `f(span, 1)` for each block of the unpublished remote batch.
    pub(super) fn for_each_batched(&self, mut f: impl FnMut(&Span, usize)) {
        for &span in &self.batch.spans[..self.batch.len as usize] {
            // SAFETY: the batch's spans stay in use while it holds their blocks.
            f(unsafe { &*span }, 1);
        }
    }
}

/// What `chain_run` linked.
struct Run {
    /// The last block linked, the chain's head.
    head: *mut u8,
    /// Blocks in the chain, the tail included.
    count: u32,
    /// Where the next span's blocks start in the batch.
    end: usize,
    /// Some block carried the freed-block marker.
    suspect: bool,
}

/// Links the blocks of the batch from `at` on that belong to `s` (`spans[at]` must), each to
/// the one before, the first to `tail` (the run's first block, whose own link the push
/// writes). Out of line: for the common run of one block, the publish loop then sets up no
/// inner loop.
///
/// # Safety
/// `tail` and every block of the run must be objects of `s` that this thread gave up and
/// still holds (a batch's blocks until it is published), `tail` at `at - 1`.
#[inline(never)]
unsafe fn chain_run(
    key: usize,
    s: &Span,
    spans: &[*mut Span],
    blocks: &[*mut u8],
    mut at: usize,
    tail: *mut u8,
) -> Run {
    let span = spans[at];
    let (mut head, mut count, mut suspect) = (tail, 1, false);
    while at < spans.len() && spans[at] == span {
        let block = blocks[at];
        // The tail carries no link yet, so no marker: a second free of it is found here.
        if block == tail {
            freelist::double_free(s, block, "double free");
        }
        // SAFETY: a block of `s` this thread gave up, ours until published.
        suspect |= unsafe { marked(key, s, &blocks[..at], block) };
        // SAFETY: as above.
        unsafe { freelist::write_link_with(key, block, head) };
        head = block;
        count += 1;
        at += 1;
    }
    Run {
        head,
        count,
        end: at,
        suspect,
    }
}

/// Whether `block`, a block of `s` in a batch going out after `earlier`, carries the
/// freed-block marker (the remote list's `SUSPECT`), reporting it if `earlier` holds it too.
///
/// # Safety
/// `block` must be an object of `s` that this thread gave up and still holds.
#[inline(always)]
unsafe fn marked(key: usize, s: &Span, earlier: &[*mut u8], block: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    if unsafe { freelist::looks_freed_in_with(key, s, block) } {
        check_batched(s, earlier, block);
        return true;
    }
    false
}

/// A block of `s` carried the freed-block marker as its batch went out: if the batch held
/// it before (`earlier`, whose links are written but for the tail of the run being
/// published, which the caller compares itself), this thread freed it twice.
#[cold]
#[inline(never)]
fn check_batched(s: &Span, earlier: &[*mut u8], block: *mut u8) {
    if earlier.contains(&block) {
        freelist::double_free(s, block, "double free");
    }
}

/// Asks for the cache line holding `addr` (a hint: it reads nothing and cannot fault,
/// whatever the address).
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs only SSE, which every x86_64 has.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Frees `ptr` into `span` from a thread that has no cache to batch in.
///
/// # Safety
/// `ptr` must be a live object of the in-use small span `span`.
pub(crate) unsafe fn free_remote(span: &Span, ptr: *mut u8) {
    // SAFETY: `ptr` is an object of `span` (the contract).
    let suspect = unsafe { freelist::looks_freed_in(span, ptr) };
    // SAFETY: forwarded contract.
    let pushed = unsafe { remote::push(span, ptr, suspect) };
    if pushed.notify {
        // SAFETY: this thread won the `FULL` -> `NORMAL` transition.
        unsafe { notify_owner(span) };
    }
    // SAFETY: this thread just pushed onto the span's remote list, which it left `listed`.
    unsafe { crate::central::remote_pushed(span, pushed.listed) };
}

/// Tells the owner of a span that a remote free un-parked it (this thread won the
/// `FULL` → `NORMAL` transition, so it is the one to push the span).
///
/// # Safety
/// The calling thread must have just won `span`'s `FULL` → `NORMAL` transition (a remote
/// push that returned true): only a cache parks a span, so `owner` then names that cache,
/// and it cannot change until the owner drains this notification.
unsafe fn notify_owner(span: &Span) {
    // The push read the `FULL` the park wrote (with release, after the owner): this makes
    // the owner the park published visible.
    fence(Ordering::Acquire);
    let owner = span.owner.load(Ordering::Relaxed);
    let central = &node::node(span.node()).centrals[SizeClass::of(span).index()];
    if owner == central.owner_tag() {
        // Given up by its last cache (`Cache::give_up_current`): with a free object now, it
        // goes where any cache of the node takes it.
        // SAFETY: a given-up span is on no list and no cache holds it, and this thread won
        // its un-park, so no other files it.
        unsafe { central.put(span as *const Span as *mut Span) };
        return;
    }
    // Owners are caches that are never freed (only recycled), and a parked span's owner
    // cannot change while it is parked.
    let owner = owner as *const Cache;
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
