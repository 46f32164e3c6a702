//! Sampled guarded allocations (issue #15, item 3): GWP-ASan's idea (Google's sampling
//! allocator in LLVM's compiler-rt, and mimalloc's `MIMALLOC_GUARDED_SAMPLE_RATE`).
//!
//! With `TESSERA_GUARDED_SAMPLE_RATE=N`, about one small allocation in `N` is placed in a
//! slot of a fixed pool instead of a span: the block ends flush against an inaccessible
//! page, so the first byte written or read past its end faults; when freed, its pages are
//! made inaccessible too and the slot sits in a FIFO quarantine, so a use after free faults
//! for as long as the pool can spare the slot. The fault handler (`fault.rs`) recognises
//! addresses in the pool and reports the access, the block and the stacks of its
//! allocation and free (`trace.rs`); any other fault goes on to the previous handler.
//!
//! Cost when off (the default): nothing on the fast paths. The sample is taken where a
//! thread's bin has run dry (`alloc_small`, before the refill): each cache counts down, by
//! the number of objects each refill hands out, to its next sample, so about one allocation
//! in `N` by volume is sampled, the way mimalloc counts down on its generic (slow) path. A
//! block that is freed and reused through a bin without a refill is not counted: a program
//! that cycles one block gets few samples at a large `N`. With `N = 1` every allocation whose
//! bin is empty is sampled, and since a sampled block never enters a bin, every allocation is
//! until the pool has no slot left; then the allocator carries on as usual. Freeing finds a
//! guarded block on the path for pointers outside every arena (`free_slow`, before the huge
//! blocks), which ordinary frees never take.
//!
//! The pool is reserved once, at start-up: `SLOTS` slots of `MAX_SMALL` bytes, each followed
//! by a guard page, with a guard page before the first. Guards are `MADV_GUARD_INSTALL`
//! regions where the kernel has them (no VMA per guard), `PROT_NONE` otherwise (at most two
//! VMAs per live slot, about 513 for the pool). A slot's pages are opened when it is handed
//! out and closed (and emptied) when it is freed, so quarantined slots cost no memory.
//!
//! Alignment: a block is right-aligned to its alignment (16 for C's `malloc` above 8 bytes),
//! so a request that is not a multiple of it leaves up to `align - 1` bytes of slack before
//! the guard; an overflow into the slack is not caught (GWP-ASan's trade-off too). Bytes of
//! the block's first page before the block are accessible as well, so an underflow is caught
//! only beyond that page.
//!
//! Re-entrancy: stacks are taken with the unwinder (`trace.rs`), which does not allocate on
//! the ordinary path. Should it ever call `malloc` (libgcc sorts the FDEs of frames registered
//! at run time, by JITs, with `malloc` under its own lock), that call must not sample and
//! unwind again: `CAPTURING` counts the captures under way, and no sample is taken while it
//! is non-zero. No lock of ours is held during a capture.

mod fault;
mod trace;

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tessera_span::lock::{Locked, RawLock};
use tessera_span::os::{self, Protection, PurgeAdvice};

use crate::cache::Cache;
use crate::size_class::{MAX_SMALL, SizeClass};
use trace::Trace;

/// Slots in the pool: enough to see a bug within a few hundred samples, and few enough that
/// the `mprotect` fallback adds only a few hundred VMAs.
pub(crate) const SLOTS: usize = 1024;

/// The sample rate, 0 when off.
static RATE: AtomicUsize = AtomicUsize::new(0);
/// The pool's address range (`BASE`, `LEN`): both 0 while there is none, so `contains`
/// answers false for every address.
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Stack captures under way (see the top of the file).
static CAPTURING: AtomicUsize = AtomicUsize::new(0);
/// Whether the guards are `MADV_GUARD_INSTALL` regions (1) or `PROT_NONE` (0).
static GUARD_REGIONS: AtomicU8 = AtomicU8::new(0);

/// A slot's life: handed out by `claim` (`CLAIMED`), opened (`LIVE`), freed (`FREEING`,
/// then `FREED` once closed), and claimed again from the quarantine.
const UNUSED: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;
const FREEING: u8 = 3;
const FREED: u8 = 4;

/// What the reports say about a slot's block.
#[derive(Clone, Copy, Debug)]
struct Block {
    start: usize,
    /// The size asked for.
    size: usize,
    /// From `start` to the guard: `size` rounded up to the alignment.
    usable: usize,
    alloc_tid: u32,
    free_tid: u32,
    alloc: Trace,
    free: Trace,
}

impl Block {
    const EMPTY: Block = Block {
        start: 0,
        size: 0,
        usable: 0,
        alloc_tid: 0,
        free_tid: 0,
        alloc: Trace::EMPTY,
        free: Trace::EMPTY,
    };
}

#[derive(Debug)]
struct Slot {
    state: AtomicU8,
    block: UnsafeCell<Block>,
}

// SAFETY: `block` is written only by the thread that holds the slot in `CLAIMED` (alloc) or
// `FREEING` (free), states that one thread reaches by a lock-protected `claim` or a CAS; it
// is read by reports, which abort the process and accept a torn view of a racing slot.
unsafe impl Sync for Slot {}

static SLOT: [Slot; SLOTS] = [const {
    Slot {
        state: AtomicU8::new(UNUSED),
        block: UnsafeCell::new(Block::EMPTY),
    }
}; SLOTS];

/// Which slot is handed out next: never-used ones first, then the quarantine's oldest.
#[derive(Debug)]
struct Pool {
    unused: usize,
    /// A ring of freed slots, oldest at `head`.
    freed: [u16; SLOTS],
    head: usize,
    len: usize,
}

static POOL: Locked<Pool> = Locked::new(Pool {
    unused: 0,
    freed: [0; SLOTS],
    head: 0,
    len: 0,
});

impl Pool {
    fn claim(&mut self) -> Option<usize> {
        let i = if self.unused < SLOTS {
            self.unused += 1;
            self.unused - 1
        } else if self.len > 0 {
            let i = self.freed[self.head] as usize;
            self.head = (self.head + 1) % SLOTS;
            self.len -= 1;
            i
        } else {
            return None;
        };
        SLOT[i].state.store(CLAIMED, Ordering::Relaxed);
        Some(i)
    }

    fn quarantine(&mut self, i: usize) {
        debug_assert!(self.len < SLOTS);
        self.freed[(self.head + self.len) % SLOTS] = i as u16;
        self.len += 1;
    }
}

/// The pool's lock, for the fork handlers.
pub(crate) fn raw_lock() -> &'static RawLock {
    POOL.raw()
}

/// Bytes a slot holds: the largest small class, in whole pages.
fn slot_bytes() -> usize {
    MAX_SMALL.next_multiple_of(os::page_size())
}

/// Distance between slots: the slot and its guard page.
fn stride() -> usize {
    slot_bytes() + os::page_size()
}

/// First byte of slot `i`.
fn slot_base(i: usize) -> usize {
    BASE.load(Ordering::Relaxed) + os::page_size() + i * stride()
}

/// Turns sampling on at rate `rate` (called once, from `config::load`, before any cache
/// exists): reserves the pool, closes it and installs the fault handler. Stays off if the
/// pool cannot be reserved.
pub(crate) fn enable(rate: usize) {
    let page = os::page_size();
    let len = page + SLOTS * stride();
    let Ok(base) = os::reserve(len, page) else {
        return;
    };
    let base = base.as_ptr();
    let guard_regions = os::has_guard_regions();
    // SAFETY: the whole fresh mapping is ours and unused.
    let closed = unsafe {
        if guard_regions {
            os::guard_install(base, len)
        } else {
            os::protect(base, len, Protection::None)
        }
    };
    if closed.is_err() {
        // SAFETY: the mapping was never handed out.
        unsafe { os::release(base, len) };
        return;
    }
    GUARD_REGIONS.store(guard_regions as u8, Ordering::Relaxed);
    BASE.store(base as usize, Ordering::Relaxed);
    LEN.store(len, Ordering::Relaxed);
    fault::install();
    RATE.store(rate, Ordering::Release);
}

/// Whether sampling is on: one load, on the refill path only.
#[inline]
pub(crate) fn enabled() -> bool {
    RATE.load(Ordering::Relaxed) != 0
}

/// Whether `addr` lies in the pool (slots and guards).
#[inline]
pub(crate) fn contains(addr: usize) -> bool {
    addr.wrapping_sub(BASE.load(Ordering::Relaxed)) < LEN.load(Ordering::Relaxed)
}

/// Allocations a cache hands out before its next sample: uniform in `0..2N-1`, so one in
/// `N` is sampled on average (GWP-ASan draws its interval at random too, so samples do not
/// fall in step with a program's loops); 0 for `N = 1` (every one) and when sampling is off.
pub(crate) fn next_interval() -> i64 {
    let rate = RATE.load(Ordering::Relaxed) as u64;
    if rate <= 1 {
        return 0;
    }
    (os::random_u64() % (2 * rate - 1)).min(i64::MAX as u64) as i64
}

/// Called with sampling on when `cache`'s bin for a request of `size` bytes at `align` is
/// empty, before the refill: a guarded block if the cache's countdown has run out and a slot
/// is free, else null (and the caller refills).
#[cold]
#[inline(never)]
pub(crate) fn sample(cache: &mut Cache, size: usize, align: usize) -> *mut u8 {
    if cache.guard_countdown > 0 || CAPTURING.load(Ordering::Relaxed) != 0 {
        return ptr::null_mut();
    }
    cache.guard_countdown = next_interval();
    alloc(size, align)
}

/// Counts a refill of `class` that just handed out the returned object and the bin's list.
#[cold]
#[inline(never)]
pub(crate) fn count_refill(cache: &mut Cache, class: SizeClass) {
    let handed_out = cache.bins[class.index()].list_len() as i64 + 1;
    cache.guard_countdown = cache.guard_countdown.saturating_sub(handed_out);
}

fn alloc(size: usize, align: usize) -> *mut u8 {
    let page = os::page_size();
    let usable = size.max(1).next_multiple_of(align);
    if align > page || usable > slot_bytes() {
        return ptr::null_mut();
    }
    let Some(i) = ({
        let mut pool = POOL.lock();
        fault::install();
        pool.claim()
    }) else {
        return ptr::null_mut();
    };
    let end = slot_base(i) + slot_bytes();
    let start = end - usable;
    let open = start & !(page - 1);
    // SAFETY: whole pages of slot `i`, which `claim` gave this thread alone.
    if unsafe { open_pages(open, end - open) }.is_err() {
        SLOT[i].state.store(FREED, Ordering::Relaxed);
        POOL.lock().quarantine(i);
        return ptr::null_mut();
    }
    let mut block = Block {
        start,
        size,
        usable,
        alloc_tid: os::thread_id(),
        ..Block::EMPTY
    };
    block.alloc.capture(&CAPTURING);
    // SAFETY: the slot is `CLAIMED` by this thread (see `Slot`).
    unsafe { *SLOT[i].block.get() = block };
    SLOT[i].state.store(LIVE, Ordering::Release);
    start as *mut u8
}

/// The slot `addr` (inside the pool) belongs to: the slot whose pages or trailing guard hold
/// it (the guard before the first slot counts as the first slot's).
fn slot_index(addr: usize) -> usize {
    let rel = addr.saturating_sub(BASE.load(Ordering::Relaxed) + os::page_size());
    (rel / stride()).min(SLOTS - 1)
}

/// Frees a guarded block (`ptr` lies in the pool). A pointer that is not a live block's
/// start is reported, naming the block and its stacks.
///
/// # Safety
/// If `ptr` is a live guarded block, the caller gives it up.
pub(crate) unsafe fn free(ptr: *mut u8) {
    let addr = ptr as usize;
    let i = slot_index(addr);
    let slot = &SLOT[i];
    if let Err(state) =
        slot.state
            .compare_exchange(LIVE, FREEING, Ordering::Acquire, Ordering::Relaxed)
    {
        let what = if state == FREED || state == FREEING {
            "double free of a guarded block"
        } else {
            "free of a pointer into the guarded pool that tessera did not hand out"
        };
        fault::report_and_abort(what, addr, i, None);
    }
    // SAFETY: `FREEING` is ours (see `Slot`).
    let block = unsafe { &mut *slot.block.get() };
    if block.start != addr {
        fault::report_and_abort("free of a pointer into a guarded block", addr, i, None);
    }
    block.free_tid = os::thread_id();
    block.free.capture(&CAPTURING);
    let base = slot_base(i);
    // SAFETY: the slot's pages, now free; nothing may use them (the caller's contract).
    let _ = unsafe { close_pages(base, slot_bytes()) };
    slot.state.store(FREED, Ordering::Release);
    POOL.lock().quarantine(i);
}

/// The usable size of the live guarded block that starts at `addr`, or `None` (a freed
/// block, a pointer into one, an unused slot).
pub(crate) fn usable_size(addr: usize) -> Option<usize> {
    let slot = &SLOT[slot_index(addr)];
    if slot.state.load(Ordering::Acquire) != LIVE {
        return None;
    }
    // SAFETY: a `LIVE` slot's block is written before the state's release store and not
    // again until the slot is freed.
    let block = unsafe { &*slot.block.get() };
    (block.start == addr).then_some(block.usable)
}

/// Makes a slot's pages usable (they read as zero: closing empties them).
///
/// # Safety
/// Whole pages of a slot this thread holds.
unsafe fn open_pages(at: usize, len: usize) -> Result<(), os::OsError> {
    // SAFETY: forwarded contract; the pages are inside our pool mapping.
    unsafe {
        if GUARD_REGIONS.load(Ordering::Relaxed) != 0 {
            os::guard_remove(at as *mut u8, len)
        } else {
            os::protect(at as *mut u8, len, Protection::ReadWrite)
        }
    }
}

/// Empties a slot's pages and makes any access fault.
///
/// # Safety
/// Whole pages of a slot this thread holds, with nothing live in them.
unsafe fn close_pages(at: usize, len: usize) -> Result<(), os::OsError> {
    let at = at as *mut u8;
    // SAFETY: forwarded contract; the pages are inside our pool mapping.
    unsafe {
        os::purge(at, len, PurgeAdvice::DontNeed)?;
        if GUARD_REGIONS.load(Ordering::Relaxed) != 0 {
            os::guard_install(at, len)
        } else {
            os::protect(at, len, Protection::None)
        }
    }
}
