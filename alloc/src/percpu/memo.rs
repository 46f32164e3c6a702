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
//! page-map path fills a slot before it pushes the block, and only for a block without the
//! freed-block marker: a double free of a block whose span is on its way back to the page
//! heap goes to the slow path first), so nothing can free or reformat the span meanwhile.
//! The generation is read first (acquire). A copy could be torn only by a change of the
//! span while it is copied, which takes a block freed twice with its marker overwritten in
//! between (a heap corrupted already, whose record the page-map path reads as racily).
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
///
/// The memo pays only where its test is predictable: a hit saves the page map's ~11
/// instructions, but frees that hit and miss at random mispredict the test (and each miss
/// also fills a slot). Issue #19's program with one thread (1,000 live blocks of random
/// sizes 16–512 B a round, freed in order) took 5.4 ns of CPU an operation with the memo
/// always on against 3.6 without it. So the memo counts its hits between judgements every
/// `JUDGE_MISSES` misses and goes off when fewer than `KEEP_HITS_PER_MISS` hits came per
/// miss: the thread's `MEMO` word goes null (the free path's test of it then fails,
/// predictably, for a load and a test), the memo waits in `MEMO_SAVED`, and `MEMO_LEFT`
/// counts down the `OFF_FREES` frees until it is tried again (a `sub` and a `jz` on the
/// page-map path, `tls::memo_off_tick_at`). (The thread cache's recent-span slots judge by hits per run of
/// misses; a per-CPU thread's frees are the C programs' of issue #19, whose frees either hit
/// nearly always, as a malloc/free loop, or scatter over many spans.)
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Memo {
    slots: [Slot; SLOTS],
    /// Hits since the last judgement (wrapping: a wrap at worst misjudges once).
    hits: u32,
    /// Frees through the page map since the last judgement.
    misses: u32,
    /// Link among the idle memos.
    next_idle: *mut Memo,
}

/// Misses between two judgements (`Memo`).
const JUDGE_MISSES: u32 = 32;
/// Hits per miss the memo must reach to stay in use: a hit rate of 2/3. A malloc/free loop
/// over 8 classes whose spans' pages share a slot two by two still hits 75% of its frees.
const KEEP_HITS_PER_MISS: u32 = 2;
/// Frees made while the memo is off, before it is tried again.
const OFF_FREES: u64 = 4096;

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
        // SAFETY: the thread's memo, which only this thread touches.
        unsafe { (*memo).hits = (*memo).hits.wrapping_add(1) };
        return Some(slot.class);
    }
    None
}

/// A free found `ptr` through the page map, an object of `s`: counts the miss and, while
/// the memo is in use, copies the geometry of `s` into the slot for `ptr`.
///
/// # Safety
/// `memo` is the calling thread's memo; `s` is an in-use small span and `ptr` a live object
/// of it that the caller holds (so nothing can free or reformat `s` meanwhile).
#[inline(always)]
pub(crate) unsafe fn missed(memo: *mut Memo, ptr: *mut u8, s: &Span) {
    // SAFETY: the thread's memo, which only this thread touches.
    let m = unsafe { &mut *memo };
    m.misses += 1;
    // First, and acquire (see the module comment).
    let seen = s.generation.load(Ordering::Acquire);
    // SAFETY: a slot of the thread's memo, as above.
    let slot = unsafe { &mut *slot(memo, ptr) };
    slot.seen = seen;
    slot.start = s.obj_base;
    slot.div_test = s.div_test;
    slot.class = SizeClass::of(s);
    slot.generation = &s.generation;
    slot.len = s.obj_bytes.load(Ordering::Relaxed) as usize;
    if m.misses == JUDGE_MISSES {
        judge(m);
    }
}

/// `JUDGE_MISSES` misses since the last judgement: the memo goes off unless it hit
/// `KEEP_HITS_PER_MISS` times per miss. Inline, though it runs once per 32 misses: a call
/// from the free would make every free, the thread cache's too, save and restore registers
/// around it.
#[inline(always)]
fn judge(m: &mut Memo) {
    if m.hits < KEEP_HITS_PER_MISS * JUDGE_MISSES {
        // SAFETY: `MEMO` holds this thread's memo (`m`, reached through it).
        unsafe { crate::tls::memo_off(OFF_FREES) };
    }
    m.hits = 0;
    m.misses = 0;
}

/// The memo was off for `OFF_FREES` frees: back in use, its counts from zero (its slots
/// kept their copies, each still checked against its span's generation); then frees `ptr`
/// through `free_slow`. `extern "C"` (cannot unwind), so that the free path can tail-call it.
///
/// # Safety
/// As `tessera::free`, on a per-CPU thread.
#[cold]
#[inline(never)]
pub(crate) unsafe extern "C" fn turn_on_and_free(ptr: *mut u8) {
    let memo = crate::tls::memo_saved();
    if !memo.is_null() {
        crate::tls::clear_memo_saved();
        // SAFETY: the thread's memo, set aside by `judge`.
        unsafe {
            (*memo).hits = 0;
            (*memo).misses = 0;
            crate::tls::set_memo(memo);
        }
    }
    // SAFETY: forwarded contract.
    unsafe { crate::free_slow(ptr) }
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
