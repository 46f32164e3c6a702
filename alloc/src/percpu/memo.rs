//! The span memo of a per-CPU thread: what its free path needs to know of the spans its
//! recent frees went to, so that the next free into one of them skips the page map.
//!
//! A thread cache's free skips the page map through `Cache::recent`, which can name spans
//! only because the cache owns them and forgets each one as it lets it go. A per-CPU thread
//! owns no span (the back ends do, and flush them without the thread knowing), so its memo
//! keeps a copy of each span's geometry (where its objects start, how many bytes of them are
//! carved, the class's divisibility constant, the class) with the span record's
//! `generation` as it read when the copy was made, and trusts the copy only while the
//! generation reads the same. The page heap bumps it whenever a run goes back among the free
//! ones, and the small-object layer whenever it formats a span for a class
//! (`cache/refill.rs`), so a span that was freed and its pages reused (by another span, a
//! large block, the same span for another class) never matches a copy made before.
//!
//! Why that is enough for a legitimate free: the block being freed was handed out after
//! whatever made its span what it is now, and reached this thread by some synchronisation,
//! so a bump made before that is visible here (a relaxed load sees the latest value in
//! happens-before order). A bogus pointer (a double free of a block whose span was since
//! reused, a foreign or interior pointer) that a copy matched would have matched a stale
//! copy only if the generation did not move, that is, if the span is still what the copy
//! says: then the pointer is an object start of it, and the checks after the lookup (the
//! freed-block marker, the slow path's list walks) are the ones the page-map path makes.
//!
//! The geometry is copied while the freeing thread holds a live object of the span (the
//! page-map path fills a slot before it pushes the block), so nothing can free or reformat
//! the span meanwhile; the generation is read first (acquire), so a copy torn by a
//! concurrent change (possible only for a bogus pointer) was taken with the generation from
//! before that change, which the change then moved.
//!
//! Home: a block of its own, carved from chunks mapped for memos and never unmapped, one per
//! per-CPU thread, found through a thread-local word (`tls::memo_at`; 1 KiB of
//! initial-exec TLS would come out of glibc's static TLS surplus for a `dlopen`ed
//! `libtessera.so`). Given back at thread exit (`thread.rs`) and reused by the next thread
//! as it is: every slot is checked against its span's generation, whoever filled it.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use tessera_span::Span;
use tessera_sys::lock::{Locked, RawLock};

use crate::pool::Chunks;
use crate::size_class::{self, SizeClass};

/// Slots of a memo: a power of two.
const SLOTS: usize = 16;

/// One span's geometry as the memo keeps it (`Memo`).
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    /// `Span::obj_base`.
    start: usize,
    /// `Span::obj_bytes` when the copy was made: 0 in an empty slot, so no pointer matches.
    len: usize,
    /// `Span::div_test`.
    div_test: u64,
    /// The record's `generation` (never dereferenced while `len` is 0).
    generation: *const AtomicU64,
    /// What `generation` read when the copy was made.
    seen: u64,
    /// The span's class (zero bits in an empty slot, never read there).
    class: SizeClass,
}

/// `size_of::<Slot>()` is `1 << SLOT_SHIFT`.
const SLOT_SHIFT: u32 = 6;
const _: () = assert!(size_of::<Slot>() == 1 << SLOT_SHIFT);

/// A per-CPU thread's memo: one slot per page address modulo `SLOTS` (a direct-mapped cache
/// of the page map, as `Cache::recent`).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Memo {
    slots: [Slot; SLOTS],
    /// Link among the idle memos.
    next_idle: *mut Memo,
}

/// The slot for pointers into the page of `ptr`.
///
/// # Safety
/// `memo` is a valid memo.
#[inline(always)]
unsafe fn slot(memo: *mut Memo, ptr: *mut u8) -> *mut Slot {
    // The slot's byte offset from the page number in one shift and one mask.
    let offset = (ptr as usize >> (tessera_span::PAGE_SHIFT - SLOT_SHIFT as usize))
        & ((SLOTS - 1) << SLOT_SHIFT);
    // SAFETY: `offset` is a multiple of the slot size below the array's size.
    unsafe { memo.cast::<u8>().add(offset).cast::<Slot>() }
}

/// The class of `ptr` if the memo knows its span and `ptr` is an object start in it (the
/// page-map path's `is_object_start` test, on the copy), and the span is still what the
/// copy says (its generation unchanged).
///
/// # Safety
/// `memo` is the calling thread's memo.
#[inline(always)]
pub(crate) unsafe fn class_of(memo: *mut Memo, ptr: *mut u8) -> Option<SizeClass> {
    // SAFETY: a slot of the thread's memo, which only this thread touches.
    let slot = unsafe { &*slot(memo, ptr) };
    let offset = (ptr as usize).wrapping_sub(slot.start);
    if offset < slot.len
        && size_class::divides(offset, slot.div_test)
        // Relaxed: see the module comment. SAFETY: a slot with a length names the
        // generation word of a span record, inside an arena header (never unmapped).
        && unsafe { (*slot.generation).load(Ordering::Relaxed) } == slot.seen
    {
        return Some(slot.class);
    }
    None
}

/// Copies the geometry of `s` into the calling thread's memo, in the slot for `ptr`.
///
/// # Safety
/// `memo` is the calling thread's memo; `s` is an in-use small span and `ptr` a live object
/// of it that the caller holds (so nothing can free or reformat `s` meanwhile).
#[inline(always)]
pub(crate) unsafe fn fill(memo: *mut Memo, ptr: *mut u8, s: &Span) {
    // First, and acquire (see the module comment).
    let seen = s.generation.load(Ordering::Acquire);
    // SAFETY: a slot of the thread's memo, which only this thread touches.
    let slot = unsafe { &mut *slot(memo, ptr) };
    slot.seen = seen;
    slot.start = s.obj_base;
    slot.div_test = s.div_test;
    slot.class = SizeClass::of(s);
    slot.generation = &s.generation;
    slot.len = s.obj_bytes.load(Ordering::Relaxed) as usize;
}

/// Chunks memos are carved from.
const CHUNK_BYTES: usize = 64 << 10;

struct Pool {
    idle: *mut Memo,
    chunks: Chunks,
}

// SAFETY: the pointers name chunk memory mapped for memos and never unmapped; the lock
// serialises access.
unsafe impl Send for Pool {}

static POOL: Locked<Pool> = Locked::new(Pool {
    idle: ptr::null_mut(),
    chunks: Chunks::new(CHUNK_BYTES),
});

/// A memo for the calling thread: an idle one, else a fresh (zeroed: empty) one. Null when
/// the OS refuses memory (the thread then frees through the page map only).
pub(crate) fn acquire() -> *mut Memo {
    let mut pool = POOL.lock();
    if !pool.idle.is_null() {
        let memo = pool.idle;
        // SAFETY: idle memos are valid and the pool's while listed.
        pool.idle = unsafe { (*memo).next_idle };
        return memo;
    }
    // Fresh chunk memory reads as zero: every slot empty.
    pool.chunks.carve::<Memo>()
}

/// Parks `memo` for the next thread.
///
/// # Safety
/// `memo` comes from `acquire`, and no thread uses it any more.
pub(crate) unsafe fn release(memo: *mut Memo) {
    let mut pool = POOL.lock();
    // SAFETY: the caller gave the memo up.
    unsafe { (*memo).next_idle = pool.idle };
    pool.idle = memo;
}

/// The pool's lock, for the fork handlers.
pub(crate) fn raw_lock() -> &'static RawLock {
    POOL.raw()
}

/// Bytes mapped for memos.
pub(crate) fn mapped() -> usize {
    POOL.lock().chunks.mapped
}
