//! Per-CPU caches on restartable sequences (tcmalloc's design; ARCHITECTURE.md#per-cpu-caches):
//! threads outside a scheduler allocate small objects from a cache per concurrency id
//! (`mm_cid`: dense ids, one per CPU the process runs on at once), so cached memory is
//! bounded by cores, not threads.
//!
//! Two layers:
//! - the **front end** (`slab.rs`): per id, per class up to 1 KiB, a stack of pointers to
//!   free objects. Pop and push are one restartable sequence each
//!   (`tessera_sys::rseq::slab_pop`/`slab_push`): no atomic, no lock; a preempted or migrated
//!   sequence restarts. A refill's batch goes onto a stack, and an overflow's comes off it,
//!   in one sequence too (`slab_push_batch`/`slab_pop_batch`).
//! - the **transfer cache** (`transfer.rs`): per class, one array of pointers shared by
//!   every id. A full stack gives half of itself to it (`flush`), an empty one takes half a
//!   stack from it (`refill`): pointers copied, the blocks untouched;
//! - the **back end**: per id, an ordinary [`Cache`] under a lock (`BACKING`). A stack that
//!   runs dry while the transfer cache has none of its class takes half a stack's worth from
//!   it (`refill`); a flush gives it what the transfer cache has no room for. Classes above 1 KiB, and every request the front end cannot serve, are served
//!   by it directly. The lock is uncontended unless a thread is preempted while holding it
//!   and another thread then gets its id. While a thread holds it, the back-end cache is also
//!   the thread's current cache (`with_backing`), so an allocation nested in the back end's
//!   work (the profiler's unwinder) takes the ordinary thread-cache path and never the lock
//!   again.
//!
//! Which threads use it: `TESSERA_CACHE=percpu` makes every thread without a scheduler
//! processor use it; `auto` (the default) makes a thread use it when, at its first
//! allocation, the threads with caches of their own already outnumber the CPUs
//! `AUTO_MARGIN` times; `thread` never. Why `auto` is the default: a program with a few
//! threads per CPU keeps the thread caches' faster single-thread path, and one with many
//! more threads than CPUs gets memory bounded by the CPUs and a cache per CPU that stays
//! warm (issue #19's program, 2 CPUs, 5 interleaved runs at load 9-18: at 64 threads 3.78
//! CPU ns an operation and 7.3 MiB resident once idle, against 4.96 ns and 46 MiB with
//! thread caches; at 256 threads 3.89 ns and 10.5 MiB against 9.19 ns and 173 MiB). A
//! thread that uses it has no cache of its own: its `OWN` word holds `thread::PERCPU`.
//! `tessera-sched`'s processors keep their own caches (a thread running a processor has a
//! current cache, which the fast paths try first). Without rseq (no glibc registration and
//! ours refused, or `TESSERA_RSEQ=glibc` forbidding ours) every thread keeps a thread
//! cache.
//!
//! Hardening: the stacks store pointers in the slab, not links in freed memory, so nothing
//! in a free block can redirect an allocation. A block on a stack carries the freed-block
//! marker all the same (its first word encodes a null link, `freelist.rs`), written before
//! the push and checked and cleared after the pop:
//! - a double free is caught at once: a block that carries the marker goes to the slow
//!   path, which looks for it on every slab's stack of its class (`slab::holds`) and reports
//!   it there, and otherwise hands it to the back end, whose list walks confirm it (or find a
//!   coincidence) as for any free; `realloc` and `malloc_usable_size` look on the stacks too;
//! - a write into a stacked block (an overflow from its neighbour, a use after free) that
//!   changed its first word is reported when the block is popped, as a bad link is.
//!
//! Heap profiling: each thread keeps the countdown a thread cache keeps (`prof_left`) in a
//! thread-local word (`tls::prof_sub`), drawn when it adopts the per-CPU caches. A sample is
//! taken on the back-end cache, with its random state and labels (none: labels belong to
//! scheduler processors), which also draws the thread's next countdown.
//!
//! Draining (`drain.rs`): the purger empties a slab whose stacks have not moved for half a
//! decay time, from its own thread, without stopping the id's holder (its headers are locked,
//! then `membarrier` restarts any sequence still on it); a crossed soft limit and
//! `tessera::collect()` empty every slab. The memory limit sees stacked objects as allocated
//! until then (as it sees a thread cache's bins). Fork: the child keeps the slabs as they were (a sequence cut short
//! by the fork never committed); the back-end locks are taken by the fork handlers.

mod drain;
mod memo;
mod slab;
mod transfer;

pub(crate) use memo::Memo;

use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use tessera_span::{Span, arena};
use tessera_sys::lock::{Locked, RawLock};
use tessera_sys::rseq;

use crate::cache::Cache;
use crate::freelist;
use crate::size_class::{SizeClass, class_for};
use crate::{pool, report, thread};

use slab::{PERCPU_CLASSES, TABLE_LEN};

/// `TESSERA_CACHE`.
const THREAD: u8 = 0;
const PERCPU: u8 = 1;
const AUTO: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(THREAD);

/// `auto`: a new thread goes per-CPU once threads with caches of their own number this many
/// times the CPUs.
const AUTO_MARGIN: usize = 4;

/// Ids in use can be no more than this (`rseq::possible_cpus`); the fork handlers lock as
/// many back ends.
static IDS: AtomicUsize = AtomicUsize::new(0);

/// Which cache mode `TESSERA_CACHE` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A cache per thread.
    Thread,
    /// Per-CPU caches for every thread outside a scheduler.
    PerCpu,
    /// Per-CPU caches for threads beyond `AUTO_MARGIN` per CPU (the default).
    Auto,
}

/// Applies `TESSERA_CACHE` (`mode`) and `TESSERA_RSEQ` (`allow_own`: whether we may register
/// rseq for threads glibc did not). Falls back to `Mode::Thread` where rseq is unavailable,
/// the CPUs outnumber the slab region's ids, or the OS refuses the region. Returns the mode
/// in force.
///
/// `auto` (the default) reserves nothing yet: most processes never have four threads per CPU,
/// and should not carry the slab region (a 256 MiB `NORESERVE` mapping, which strict
/// overcommit would charge in full) or make its system calls. The first thread that adopts
/// the per-CPU caches turns them on (`turn_on`); if that fails, threads keep caches of their
/// own, as where rseq is missing.
pub(crate) fn configure(mode: Mode, allow_own: bool) -> Mode {
    if mode == Mode::Thread {
        return Mode::Thread;
    }
    let cpus = rseq::possible_cpus();
    if cpus > TABLE_LEN || rseq::init(allow_own).is_none() {
        return Mode::Thread;
    }
    IDS.store(cpus, Ordering::Relaxed);
    if mode == Mode::PerCpu {
        if !turn_on() {
            return Mode::Thread;
        }
        MODE.store(PERCPU, Ordering::Release);
    } else {
        MODE.store(AUTO, Ordering::Release);
    }
    mode
}

/// `REGION`: not answered yet, on, or refused by the OS (a futex word: threads that would
/// adopt the per-CPU caches while another one tries wait on it for the answer).
const REGION_UNTRIED: u32 = 0;
const REGION_ON: u32 = 1;
const REGION_REFUSED: u32 = 2;
static REGION: AtomicU32 = AtomicU32::new(REGION_UNTRIED);

/// The kernel id of the thread that tries (0 until one does): taking it is what makes a
/// thread the one that tries, and an allocation nested in the try (a signal handler's on
/// that thread) finds its own id here instead of waiting for itself.
static TRYING_TID: AtomicI32 = AtomicI32::new(0);

/// Reserves the slab region and enables remote draining, once for the process; whether the
/// per-CPU caches can be used. Called at configuration under `percpu` and by the threads
/// that would adopt them under `auto`.
///
/// The try is two system calls (the region's `mmap` and its `madvise`); other threads that
/// would adopt meanwhile wait for the answer, without a lock. An `auto` process's threads
/// beyond the margin may start together (issue #19's program), and one that did not wait
/// would keep a cache of its own for good. The membarrier registration (`drain::enable`)
/// comes after the answer: it waits for an RCU grace period (10 ms on the 2-CPU VM), and
/// while it was part of the try, issue #19's program at 256 threads settled 27 to 180
/// threads with caches of their own where 8 were meant. Until it is done, drains find remote
/// draining unavailable and skip, as without membarrier.
///
/// A `fork` in the middle of a try leaves the child without the thread that tries: the
/// child handler lets the next thread try again (`after_fork_in_child`).
fn turn_on() -> bool {
    match REGION.load(Ordering::Acquire) {
        REGION_ON => return true,
        REGION_REFUSED => return false,
        _ => {}
    }
    let tid = tessera_sys::thread::gettid();
    match TRYING_TID.compare_exchange(0, tid, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            let on = slab::reserve_region();
            REGION.store(
                if on { REGION_ON } else { REGION_REFUSED },
                Ordering::Release,
            );
            tessera_sys::futex::wake(&REGION, i32::MAX);
            if on {
                drain::enable();
            }
            on
        }
        // Nested in this thread's own try: the outer call decides.
        Err(trying) if trying == tid => false,
        Err(_) => loop {
            match REGION.load(Ordering::Acquire) {
                REGION_UNTRIED => tessera_sys::futex::wait(&REGION, REGION_UNTRIED, None),
                state => return state == REGION_ON,
            }
        },
    }
}

/// The fork child handler's part: a try of the region under way in the parent is nobody's
/// in the child, which has only the forking thread (not inside `turn_on`), so the next
/// thread that would adopt tries again (`slab::reserve_region` keeps a region the parent's
/// try had already installed).
pub(crate) fn after_fork_in_child() {
    if REGION.load(Ordering::Relaxed) == REGION_UNTRIED {
        TRYING_TID.store(0, Ordering::Relaxed);
    }
}

/// The mode in force (after any fallback).
pub(crate) fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        PERCPU => Mode::PerCpu,
        AUTO => Mode::Auto,
        _ => Mode::Thread,
    }
}

/// Which cache the calling thread allocates from, and the mode `TESSERA_CACHE` set (after
/// any fallback: `"thread"` where rseq is unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMode {
    /// The process's mode: `"thread"`, `"percpu"` or `"auto"`.
    pub process: &'static str,
    /// Whether the calling thread uses the per-CPU caches (decided at its first
    /// allocation; a scheduler processor's cache, when one is installed, still comes first).
    pub thread_percpu: bool,
    /// The most bytes of objects one CPU's per-CPU cache holds.
    pub percpu_bound: usize,
    /// The most bytes of objects the transfer cache between the per-CPU caches and their
    /// back ends holds (one for the process, whatever the number of CPUs).
    pub transfer_bound: usize,
}

/// The cache mode in force; see [`CacheMode`].
pub fn cache_mode() -> CacheMode {
    let process = match mode() {
        Mode::Thread => "thread",
        Mode::PerCpu => "percpu",
        Mode::Auto => "auto",
    };
    CacheMode {
        process,
        thread_percpu: thread::uses_percpu(),
        percpu_bound: MAX_CACHED_BYTES,
        transfer_bound: transfer::MAX_BYTES,
    }
}

/// Whether a thread about to make its own cache should use the per-CPU caches instead;
/// registers rseq for it if need be (a thread whose registration fails keeps a cache).
pub(crate) fn adopt() -> bool {
    let wanted = match MODE.load(Ordering::Acquire) {
        PERCPU => true,
        AUTO => {
            let (caches, idle, _) = pool::stats();
            caches.saturating_sub(idle) >= AUTO_MARGIN * IDS.load(Ordering::Relaxed) && turn_on()
        }
        _ => false,
    };
    if !wanted || !rseq::register_current_thread() {
        return false;
    }
    // The tag of the fast path's pops (`pop_fast`): the key, set before any block can be on
    // a stack (every adopter stores the same value; until one does, the tag is 0 and those
    // pops refuse, leaving the blocks to the slow path's).
    freelist::init_key();
    rseq::set_slab_tag(freelist::key());
    // SAFETY: a fresh or idle memo (or null), this thread's alone; `thread.rs` gives it back
    // at thread exit.
    unsafe { crate::tls::set_memo(memo::acquire()) };
    let mut rng = 0;
    crate::tls::set_prof(crate::profile::sample::first_interval(
        &mut rng,
        tessera_sys::random::random_u64(),
    ));
    true
}

// ---- the fast paths ------------------------------------------------------------------

/// Subtracts `size` from the calling thread's heap-profile countdown (a thread-local word:
/// the thread has no cache to keep it in); false when it ran out (the slow path samples).
#[inline(always)]
fn count(size: usize) -> bool {
    // `size` is at most `MAX_FAST` here.
    crate::tls::prof_take(size)
}

/// Pops a block of `class` from the calling thread's slab, marker cleared; null when the
/// stack is empty (or refuses: no slab yet, a class above `PERCPU_CLASSES`).
///
/// # Safety
/// The calling thread uses the per-CPU caches (`thread::uses_percpu`).
#[inline(always)]
unsafe fn pop(class: SizeClass) -> *mut u8 {
    // SAFETY: the thread is registered (`adopt`); the slab region has the layout the
    // sequences expect (`slab.rs`), and only the sequences write them (or a drain that locked them).
    let block = unsafe { rseq::slab_pop(slab::stack(class)) };
    if !block.is_null() {
        // SAFETY: the block left the stack: it is ours alone now.
        unsafe { unmark(block) };
    }
    block
}

/// Checks and clears the freed-block marker of `block`, taken off a stack or the transfer
/// cache: its first word must still be the marker its push wrote (a null link), anything
/// else is a write into the freed block, reported.
///
/// # Safety
/// `block` carries the marker of a push, and is the caller's alone.
#[inline(always)]
unsafe fn unmark(block: *mut u8) {
    // SAFETY: the caller's contract.
    if freelist::HARDENED && !unsafe { freelist::read_link(block) }.is_null() {
        written_while_free(block);
    }
    // SAFETY: as above.
    unsafe { freelist::clear_link(block) };
}

/// `pop` for the fast paths: the marker is checked inside the sequence, and a block whose
/// marker was overwritten stays on its stack (null, as for an empty stack), for the slow
/// path's `pop` to take and report; so the fast path makes no call (and needs no frame).
///
/// # Safety
/// As `pop`.
#[inline(always)]
unsafe fn pop_fast(class: SizeClass) -> *mut u8 {
    if !freelist::HARDENED {
        // SAFETY: forwarded contract.
        return unsafe { pop(class) };
    }
    // A stacked block's first word is its marker, a null link: the block's address xor the
    // key (`freelist::encode_with`), the sequences' tag (`adopt` sets it).
    // SAFETY: as `pop`; stacked blocks are live objects of at least 8 bytes.
    let block = unsafe { rseq::slab_pop_tagged(slab::stack(class)) };
    if !block.is_null() {
        // SAFETY: the block left the stack: it is ours alone now.
        unsafe { freelist::clear_link(block) };
    }
    block
}

/// Reports a stacked block whose marker was overwritten.
#[cold]
#[inline(never)]
fn written_while_free(block: *mut u8) -> ! {
    match arena::span_of(block as usize) {
        // SAFETY: `span_of` returns records inside mapped arena headers.
        Some(span) => freelist::corrupt(unsafe { span.as_ref() }, block),
        None => report::fatal("per-CPU cache holds a block of no span", block as usize),
    }
}

/// Pushes `block` (of `class`, given up by the caller) onto the calling thread's slab,
/// marking it freed first; false (and the marker cleared) when the stack is full or
/// refuses (as `pop`).
///
/// # Safety
/// As `pop`; `block` is a live object of `class` that nobody else holds.
#[inline(always)]
unsafe fn push(class: SizeClass, block: *mut u8, key: usize) -> bool {
    // The marker goes in before the push: once pushed, the block is anyone's to pop.
    // SAFETY: the caller holds the block alone.
    unsafe { freelist::write_link_with(key, block, ptr::null_mut()) };
    // SAFETY: as `pop`.
    if unsafe { rseq::slab_push(slab::stack(class), block) } {
        own_return();
        return true;
    }
    // SAFETY: still ours: the push did not happen.
    unsafe { freelist::clear_link(block) };
    false
}

/// Marks the end of a hit path that pushed, so that it gets a `ret` of its own: the push's
/// sequence is an asm goto, and LLVM neither tail-duplicates a `ret` into the fall-through of
/// one nor, here, lays the function's shared `ret` block after it, so each free that pushed
/// left its straight line by a `jmp` to that block (count.py on pair.c: 46 instructions and
/// 3 taken branches a free; with this empty `asm!`, which no other block ends with, 45 and
/// 2). Nothing is emitted for it.
#[inline(always)]
fn own_return() {
    // SAFETY: an empty asm statement: no instruction, no memory, no register.
    unsafe { core::arch::asm!("", options(nomem, nostack, preserves_flags)) };
}

/// `tessera::alloc` for a per-CPU thread, with `class` the class of `size` rounded up to
/// `align` (a power of two, at most 16): the fast path, else the slow one. Inline in
/// `tessera::alloc` (a jump to it out of line cost one more instruction and a taken branch;
/// the thread cache's hit path beside it keeps the same instructions either way).
///
/// # Safety
/// The calling thread uses the per-CPU caches (`thread::uses_percpu`).
#[inline(always)]
pub(crate) unsafe fn alloc(size: usize, align: usize, class: SizeClass) -> *mut u8 {
    // SAFETY: forwarded contract.
    let block = unsafe { alloc_fast(class, size) };
    if !block.is_null() {
        crate::sanitizer::handed_out(block, size, false);
        return block;
    }
    crate::alloc_slow(size, align, false, true)
}

/// `tessera::free` for a per-CPU thread, `span` being the record the page map names for
/// `ptr`: a push when `ptr` is an object start of an in-use small span, else the full
/// check of `free_slow`. Inline: out of line, the C wrapper's tail call to it went through
/// the GOT (`jmp [rip + GOT]`: the wrapper is in another crate, and the call was not
/// relaxed to a direct one), and the thread cache's hit path in the same function reached
/// its `ret` by a jump; inlined, neither (one thread, C malloc(N)+free pairs, thread CPU per
/// pair: per-CPU 10.86 -> 10.40 ns, thread caches 8.16 -> 7.33).
///
/// # Safety
/// As `alloc`; the caller gives `ptr` up (`tessera::free`'s contract).
///
/// The span goes into the thread's memo first (`memo.rs`), so that the next free into it
/// skips the page map (`free_known`).
#[inline(always)]
pub(crate) unsafe fn free(ptr: *mut u8, span: *mut Span, memo: *mut Memo, at: usize) {
    // SAFETY: `record_of` returns records inside mapped arena headers.
    let s = unsafe { &*span };
    let key = freelist::key_direct();
    if s.kind() == tessera_span::SpanKind::Small
        && crate::is_object_start(s, ptr as usize)
        // A block that carries the freed-block marker goes to the slow path (a double
        // free?) before the memo sees its span, which might be on its way back to the page
        // heap: the memo copies only spans that hold the live block being freed.
        // SAFETY: an object of the in-use small span `s`.
        && !unsafe { freelist::may_be_freed_top(freelist::key_top_direct(), ptr) }
    {
        if !memo.is_null() {
            // The memo's misses are the rarer way here: a memo that misses more than a third
            // of its frees goes off within 32 misses, and every free of a thread whose memo
            // is off comes here (issue #19's program: scattered sizes). Without the hint,
            // such a free left its straight line three times, to the memo test's `else`, the
            // push, and a shared `ret` (count.py on scatter.c: 6 taken branches, now 4).
            core::hint::cold_path();
            // SAFETY: the thread's memo; `ptr`, a live object of the in-use small span, is
            // still ours (not pushed yet).
            unsafe { memo::missed(memo, ptr, s) };
        } else if crate::tls::memo_off_tick_at(at) {
            // Once per `memo::OFF_FREES` frees.
            core::hint::cold_path();
            // A tail call: a call here would make every free save registers around it.
            // SAFETY: forwarded contract.
            return unsafe { memo::turn_on_and_free(ptr) };
        }
        // SAFETY: the caller's contract; `ptr` is a live object of `s`'s class, ours.
        if unsafe { push(SizeClass::of(s), ptr, key) } {
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { crate::free_slow(ptr) }
}

/// The class of `ptr` by the calling thread's span memo (`memo.rs`), if the memo knows
/// `ptr` as an object start of a span that is still what it was; `memo` as
/// `tls::memo_at` read it (null: none).
///
/// # Safety
/// `memo` is the calling thread's memo or null.
#[inline(always)]
pub(crate) unsafe fn memo_class(memo: *mut Memo, ptr: *mut u8) -> Option<SizeClass> {
    if memo.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe { memo::class_of(memo, ptr) }
}

/// `free` for a pointer the memo placed (`memo_class`): an object start of an in-use small
/// span of `class`. A push, unless the block carries the freed-block marker or the stack is
/// full or refuses; then the full check of `free_slow`.
///
/// # Safety
/// As `alloc`; `ptr` is an object start of an in-use small span of `class` (`memo_class`
/// said so), which the caller gives up.
#[inline(always)]
pub(crate) unsafe fn free_known(ptr: *mut u8, class: SizeClass) {
    let key = freelist::key_direct();
    // SAFETY: an object of an in-use small span (the contract).
    if !unsafe { freelist::may_be_freed_top(freelist::key_top_direct(), ptr) }
        // SAFETY: the caller's contract.
        && unsafe { push(class, ptr, key) }
    {
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { crate::free_slow(ptr) }
}

/// Gives the calling thread's memo back (thread exit): the thread frees through the page
/// map from then on.
pub(crate) fn release_memo() {
    let mut memo = crate::tls::memo();
    if memo.is_null() {
        // Off (`memo::judge`), or none.
        memo = crate::tls::memo_saved();
        crate::tls::clear_memo_saved();
    }
    if !memo.is_null() {
        // SAFETY: null is always allowed; the memo is then no thread's.
        unsafe {
            crate::tls::set_memo(ptr::null_mut());
            memo::release(memo);
        }
    }
}

/// The allocation fast path of a per-CPU thread: the countdown, then a pop (a class above
/// `PERCPU_CLASSES` has a header that refuses). Null sends the caller to the slow path with
/// `counted` true.
///
/// # Safety
/// The calling thread uses the per-CPU caches (`thread::uses_percpu`).
#[inline(always)]
pub(crate) unsafe fn alloc_fast(class: SizeClass, size: usize) -> *mut u8 {
    // Counted first, so that the slow path knows every request here was (`counted`).
    if !count(size) {
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract.
    unsafe { pop_fast(class) }
}

/// [`alloc_fast`] for C's `malloc` on a thread without a current cache, whichever it is:
/// the countdown (`tls::prof_take_at`, with `at` from `tls::current_at`) fails on a thread
/// that does not use the per-CPU caches (its countdown is negative, `tls.rs`), so it alone
/// tests for one; null as `alloc_fast` (the slow path sorts the threads out).
///
/// # Safety
/// The calling thread has no current cache; `at` is what `tls::current_at` returned on it.
#[inline(always)]
pub(crate) unsafe fn alloc_fast_at(at: usize, class: SizeClass, size: usize) -> *mut u8 {
    if !crate::tls::prof_take_at(at, size) {
        return ptr::null_mut();
    }
    // SAFETY: a positive countdown makes the thread one on the per-CPU caches (`adopt`
    // draws it only after registering the thread).
    unsafe { pop_fast(class) }
}

// ---- the back end -------------------------------------------------------------------

struct Backing(*mut Cache);

// SAFETY: pool memory, never unmapped; the lock serialises its use.
unsafe impl Send for Backing {}

/// The back ends by id, each lock on a cache line of its own (two CPUs refilling at once
/// must not bounce one line between them).
static BACKING: [Padded<Locked<Backing>>; TABLE_LEN] =
    [const { Padded(Locked::new(Backing(ptr::null_mut()))) }; TABLE_LEN];

/// A value on a cache line of its own.
#[repr(align(64))]
struct Padded<T>(T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Runs `f` on the back-end cache of `id` under its lock, with that cache current on this
/// thread meanwhile (see the module comment). `None` when the OS refuses a cache.
fn with_backing<R>(id: u32, f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    let mut backing = BACKING[id as usize % TABLE_LEN].lock();
    if backing.0.is_null() {
        backing.0 = pool::acquire();
        if backing.0.is_null() {
            return None;
        }
    }
    let cache = backing.0;
    // SAFETY: the lock makes the cache ours alone until we put it back below; a per-CPU
    // thread's current cache is null, which is what goes back.
    let before = unsafe { thread::swap_current(cache) };
    // SAFETY: as above.
    let out = f(unsafe { &mut *cache });
    // SAFETY: the value the word held.
    unsafe { thread::swap_current(before) };
    Some(out)
}

/// Frees `ptr`, an object of the small span `span`, into `cache`: locally if it owns the
/// span, else onto the span's remote list (batched), as `tessera::free` does.
///
/// # Safety
/// `cache` is held by the caller alone; `ptr` is a live object of `span` given up.
unsafe fn free_into(cache: &mut Cache, span: *mut Span, ptr: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe {
        if cache.owns(&*span) {
            cache.free_local(span, ptr);
        } else {
            cache.free_remote_batched(span, ptr);
        }
    }
}

/// One more object of `class` from `cache`'s bin, refilling it if empty; null when out of
/// memory.
fn take_one(cache: &mut Cache, class: SizeClass) -> *mut u8 {
    let bin = &mut cache.bins[class.index()];
    if bin.free.is_null() {
        cache.refill(class)
    } else {
        // SAFETY: a non-empty list of a cache we hold alone.
        unsafe { bin.pop() }
    }
}

/// The most a refill brings or a drain takes (half a stack, up to this: the batch is an
/// array on the stack frame).
const MAX_BATCH: usize = 128;

/// Everything a per-CPU thread's allocation fast path leaves: sampling, classes above 1 KiB,
/// zeroed and over-aligned requests, large blocks, and a refill of an empty stack.
/// `counted`: [`alloc_fast`] subtracted `size` from the countdown already.
///
/// # Safety
/// As `alloc_fast`.
pub(crate) unsafe fn alloc_slow(size: usize, align: usize, zero: bool, counted: bool) -> *mut u8 {
    let id = rseq::index_now();
    slab::make(id);
    let size_now = isize::try_from(size)
        .unwrap_or(isize::MAX)
        .min(isize::MAX / 2);
    let left = crate::tls::prof_sub(if counted { 0 } else { size_now });
    if left < 0 {
        // The back end's random state draws the next countdown, which becomes the thread's.
        let block = with_backing(id, |cache| {
            let block = crate::profile::sample::take(cache, size, align, zero);
            crate::tls::set_prof(cache.prof_left);
            block
        });
        if let Some(block) = block.filter(|b| !b.is_null()) {
            return block;
        }
    }
    let Some(class) = class_for(size, align) else {
        return crate::large::alloc(size, align, zero);
    };
    if class.index() >= PERCPU_CLASSES {
        return with_backing(id, |cache| {
            crate::alloc_small(cache, class, size, align, zero)
        })
        .unwrap_or(ptr::null_mut());
    }
    // SAFETY: the caller's contract; the class is in range.
    let mut block = unsafe { pop(class) };
    if block.is_null() {
        // SAFETY: as above.
        block = unsafe { refill(id, class, size, align) };
    }
    if zero && !block.is_null() {
        crate::sanitizer::open_block(block, size);
        // SAFETY: the block is ours and holds at least `size` bytes.
        unsafe { ptr::write_bytes(block, 0, size) };
    }
    block
}

/// Takes a batch of `class` for an empty stack: one block for the caller, the rest pushed
/// onto the slab of whatever id the thread holds by then (what does not fit goes back).
/// From the transfer cache when it has any (pointers copied, the blocks untouched), else
/// from `id`'s back end (as an ordinary allocation of `size` at `align`, so guarded
/// sampling sees it).
///
/// # Safety
/// As `alloc_fast`; `class` is below `PERCPU_CLASSES`.
unsafe fn refill(id: u32, class: SizeClass, size: usize, align: usize) -> *mut u8 {
    let mut extra = [ptr::null_mut::<u8>(); MAX_BATCH + 1];
    let want = slab::batch(class).min(MAX_BATCH);
    let mut got = 0;
    // Whether `extra[..got]` came from the transfer cache, markers on.
    let mut marked = false;
    let Some(block) = with_backing(id, |cache| {
        // Guarded sampling counts the objects the back end hands out (the stacks' included),
        // and samples here, on a refill, as a thread cache samples where its bin ran dry;
        // so with it on, every refill goes through the back end.
        let guarded = crate::guarded::enabled();
        if !guarded {
            // SAFETY: inside `with_backing`; the class is in range (the contract).
            let n = unsafe { transfer::take(class, &mut extra[..=want]) };
            if n > 0 {
                // The most recently freed for the caller, the next ones on top of the stack.
                let block = extra[0];
                extra.copy_within(1..n, 0);
                got = n - 1;
                marked = true;
                return block;
            }
        }
        if guarded {
            let sampled = crate::guarded::sample(cache, size, align);
            if !sampled.is_null() {
                return sampled;
            }
        }
        let block = crate::alloc_small(cache, class, size, align, false);
        if !block.is_null() {
            while got < want {
                let more = take_one(cache, class);
                if more.is_null() {
                    break;
                }
                extra[got] = more;
                got += 1;
            }
        }
        if guarded {
            cache.guard_countdown = cache.guard_countdown.saturating_sub(got as i64 + 1);
        }
        block
    }) else {
        return ptr::null_mut();
    };
    if marked {
        // SAFETY: taken from the transfer cache: ours, marked by its push.
        unsafe { unmark(block) };
    }
    let batch = &mut extra[..got];
    // Pushed in one sequence (`rseq::slab_push_batch`), last first, so that the pops hand the
    // blocks out in the order they came (ascending addresses from a fresh span, as a thread
    // cache's list does; the most recently freed first from the transfer cache).
    batch.reverse();
    if !marked {
        let key = freelist::key();
        for &b in batch.iter() {
            // The marker goes in before the push, as `push` does.
            // SAFETY: each block is ours, fresh from the back end.
            unsafe { freelist::write_link_with(key, b, ptr::null_mut()) };
        }
    }
    // SAFETY: as `pop`; every block is ours and marked.
    let pushed = unsafe { rseq::slab_push_batch(slab::stack(class), batch) };
    // What did not fit (the thread moved to an id whose stack is fuller, or a drain locked
    // it) goes back, markers cleared.
    let left = &batch[pushed..];
    for &b in left {
        // SAFETY: still ours: not pushed; marked above or by the transfer cache's push.
        unsafe { unmark(b) };
    }
    if !left.is_empty() {
        // SAFETY: the blocks are ours and live, markers cleared.
        unsafe { give_back(left) };
    }
    block
}

/// The flush of a full stack: `blocks` (of `class`, each carrying the freed-block marker,
/// the caller's) go into the transfer cache as far as it has room, the rest into the back
/// end of the id the thread holds now, one by one.
///
/// # Safety
/// As said; `class` is below `PERCPU_CLASSES`.
unsafe fn flush(class: SizeClass, blocks: &[*mut u8]) {
    let done = with_backing(rseq::index_now(), |cache| {
        let put = if crate::guarded::enabled() {
            // Every refill goes through the back end then (`refill`).
            0
        } else {
            // SAFETY: inside `with_backing`; the caller's contract.
            unsafe { transfer::put(class, blocks) }
        };
        for &block in &blocks[put..] {
            // SAFETY: the caller's contract.
            unsafe {
                unmark(block);
                free_block_into(cache, block);
            }
        }
    });
    if done.is_none() {
        for &block in blocks {
            // SAFETY: the caller's contract.
            unsafe {
                unmark(block);
                free_home(block);
            }
        }
    }
}

/// Frees `blocks` (live small objects the caller holds) into the back end of the id the
/// thread holds now.
///
/// # Safety
/// As said.
unsafe fn give_back(blocks: &[*mut u8]) {
    // SAFETY: forwarded contract.
    unsafe { give_back_to(rseq::index_now(), blocks) }
}

/// `give_back` into the back end of `id`.
///
/// # Safety
/// As `give_back`.
unsafe fn give_back_to(id: u32, blocks: &[*mut u8]) {
    let done = with_backing(id, |cache| {
        for &block in blocks {
            // SAFETY: the caller's contract.
            unsafe { free_block_into(cache, block) };
        }
    });
    if done.is_none() {
        // No back-end cache (the OS refused one): each block goes home on its own.
        for &block in blocks {
            // SAFETY: the caller's contract.
            unsafe { free_home(block) };
        }
    }
}

/// Frees `block`, a live small object (marker cleared) the caller gives up, into `cache`.
///
/// # Safety
/// As said; `cache` is held by the caller alone.
unsafe fn free_block_into(cache: &mut Cache, block: *mut u8) {
    let Some(span) = arena::span_of(block as usize) else {
        report::fatal("per-CPU cache holds a block of no span", block as usize);
    };
    // SAFETY: the caller's contract.
    unsafe { free_into(cache, span.as_ptr(), block) };
}

/// Frees `block`, as `free_block_into`, without a cache: onto its span's remote list.
///
/// # Safety
/// As `free_block_into`.
unsafe fn free_home(block: *mut u8) {
    if let Some(span) = arena::span_of(block as usize) {
        // SAFETY: the caller's contract.
        unsafe { crate::cache::free_remote(span.as_ref(), block) };
    }
}

/// Reports `ptr`, a block of the small span `s` that carries the freed-block marker, if it
/// is on a per-CPU stack (`slab::holds`): a double free, or a `realloc` or
/// `malloc_usable_size` of a freed block (`what` says which).
pub(crate) fn confirm_double_free(s: &Span, ptr: *mut u8, what: &str) {
    let class = SizeClass::of(s);
    if mode() != Mode::Thread
        && class.index() < PERCPU_CLASSES
        && (slab::holds(ptr, class) || transfer::holds(ptr, class))
    {
        freelist::double_free(s, ptr, what);
    }
}

/// Everything a per-CPU thread's free fast path leaves, for `ptr`, an object start of the
/// in-use small span `span`: a block carrying the marker (checked for a double free), a
/// class above 1 KiB, a full stack (half of it drained to the back end) or no slab yet.
///
/// # Safety
/// As `alloc_fast`; `ptr` is an object of `span` that the caller gives up.
pub(crate) unsafe fn free_slow(span: *mut Span, ptr: *mut u8) {
    // SAFETY: the caller's contract: an in-use small span.
    let s = unsafe { &*span };
    let class = SizeClass::of(s);
    let id = rseq::index_now();
    if class.index() >= PERCPU_CLASSES {
        // SAFETY: the caller's contract.
        let done = with_backing(id, |cache| unsafe { free_into(cache, span, ptr) });
        if done.is_none() {
            // SAFETY: as above.
            unsafe { crate::cache::free_remote(s, ptr) };
        }
        return;
    }
    // SAFETY: `ptr` is an object of `s`.
    if unsafe { freelist::looks_freed_in(s, ptr) } {
        confirm_double_free(s, ptr, "double free");
        // Not on a stack: the back end's lists decide (`free_local` confirms it there, a
        // remote push marks the span suspect).
        // SAFETY: as above.
        unsafe { give_back(&[ptr]) };
        return;
    }
    slab::make(id);
    let key = freelist::key();
    // SAFETY: the caller's contract; the class is in range.
    if unsafe { push(class, ptr, key) } {
        return;
    }
    // The stack is full: take half of it (of whichever id the thread holds now) out along
    // with `ptr`, markers left on (the transfer cache keeps them).
    let mut out = [ptr::null_mut::<u8>(); MAX_BATCH + 1];
    // SAFETY: `ptr` is ours (the contract).
    unsafe { freelist::write_link_with(key, ptr, ptr::null_mut()) };
    out[0] = ptr;
    let want = slab::batch(class).min(MAX_BATCH);
    // One sequence for the whole batch (`rseq::slab_pop_batch`).
    // SAFETY: as `pop`: the slab's layout, a registered thread.
    let n = 1 + unsafe { rseq::slab_pop_batch(slab::stack(class), &mut out[1..=want]) };
    // SAFETY: every block is ours and marked: `ptr` given up, the others popped.
    unsafe { flush(class, &out[..n]) };
}

/// `tessera::collect()` with the per-CPU caches on: empties every slab into its back end
/// (`drain.rs`; without membarrier, only the caller's own id, by popping when the caller is
/// a per-CPU thread), then flushes every back-end cache.
pub(crate) fn collect() {
    if mode() == Mode::Thread {
        return;
    }
    drain::drain_idle(0, 0, true);
    if thread::uses_percpu() && thread::current().is_null() {
        let mut out = [ptr::null_mut::<u8>(); MAX_BATCH];
        for c in 0..PERCPU_CLASSES {
            let class = SizeClass::new(c);
            loop {
                let mut n = 0;
                while n < MAX_BATCH {
                    // SAFETY: a per-CPU thread (tested above); `c` is in range.
                    let block = unsafe { pop(class) };
                    if block.is_null() {
                        break;
                    }
                    out[n] = block;
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                // SAFETY: popped blocks are ours.
                unsafe { give_back(&out[..n]) };
            }
        }
    }
    empty_transfer(true);
    flush_backends();
}

/// Empties the transfer cache into the back end of id 0 (any id's would do: the caller may
/// hold none, or one that is not the blocks' spans'; `free_into` sends blocks of spans the
/// back end does not own home as remote frees), then flushes that back end; returns the
/// bytes taken. The transfer cache's locks are taken inside that back end's, as everywhere
/// (`transfer.rs`): an allocation nested in the work (a signal handler's) takes the back-end
/// cache's path, never a transfer lock this thread holds.
///
/// `wait` false (the memory limit's reclaim, which may run inside this thread's back-end
/// work, so may take no back-end lock): skips a class whose lock is taken, and frees each
/// block straight home; only on a thread with a current cache (which nested allocations
/// take instead of the per-CPU path), else nothing.
fn empty_transfer(wait: bool) -> usize {
    let mut out = [ptr::null_mut::<u8>(); MAX_BATCH];
    if !wait {
        if thread::current().is_null() {
            return 0;
        }
        // SAFETY: the blocks taken are ours, marked: each is unmarked before it is freed.
        return unsafe {
            transfer::empty(false, &mut out, |blocks| {
                for &block in blocks {
                    unmark(block);
                    free_home(block);
                }
            })
        };
    }
    let bytes = with_backing(0, |cache| {
        // SAFETY: as above; `cache` is held.
        unsafe {
            transfer::empty(true, &mut out, |blocks| {
                for &block in blocks {
                    unmark(block);
                    free_block_into(cache, block);
                }
            })
        }
    });
    match bytes {
        Some(bytes) => {
            if bytes > 0 {
                flush_backend(0);
            }
            bytes
        }
        None => 0,
    }
}

/// Whether per-CPU slabs may exist: their region is reserved (at start-up under `percpu`,
/// when the first thread adopts them under `auto`). They fill and go idle without any
/// page-heap activity (their blocks come from back-end spans already taken), which is what
/// wakes a sleeping purger, so while they may exist the purger looks at them every decay
/// time even with nothing else to do.
///
/// Not `IDS`, which `auto` sets at start-up: a program on thread caches under `auto` (most
/// programs) had its purger wake every decay time for nothing, and run the drains' code
/// (`drain_idle`).
#[inline]
pub(crate) fn in_use() -> bool {
    REGION.load(Ordering::Relaxed) == REGION_ON
}

/// The purger's look at the slabs: drains those idle for half of `decay_ms` (all when
/// `urgent`); returns the bytes still on the stacks.
///
/// Half, because what a drain frees goes through the page heap's decay (`decay_ms`) once
/// more before the OS gets it back, and a stacked block keeps its whole span in use: a
/// stack idle for a full decay time made the memory of an idle program wait two decay
/// times (issue #19's program, 256 threads, 96 KiB stacks: 14–20 MiB resident 2 s after
/// its threads went idle, against 16 MiB asked), half a decay time makes it wait one and a
/// half.
#[inline]
pub(crate) fn drain_idle(now_ms: u64, decay_ms: u64, urgent: bool) -> usize {
    // Without an id, the slabs and the transfer cache are empty. Tested here, inlined into
    // the purger, so that a program that never made a per-CPU cache (one on thread caches
    // under `auto`) never runs the drains' code: it lies with the per-CPU back end in the
    // library's cold text (alloc/preload/hot-text.ld), and one call made a 64 KiB window of
    // it resident in every program whose purger ran (python3: 284 KiB of the library's text
    // resident, 156 KiB without; issue #13, item 6).
    if !in_use() {
        return 0;
    }
    let mut held = drain::drain_idle(now_ms, decay_ms / 2, urgent);
    // The transfer cache on the same rule, as a whole.
    if transfer::idle(now_ms, decay_ms / 2, urgent) {
        empty_transfer(true);
    }
    held += transfer::bytes();
    held
}

/// Flushes every back-end cache (under its lock).
pub(crate) fn flush_backends() {
    for id in 0..IDS.load(Ordering::Relaxed) {
        flush_backend(id);
    }
}

/// Flushes every back-end cache whose lock is free (`try_lock`): for the memory limit's
/// reclaim, which may run inside a back end's work (a refill that hit the limit) and so must
/// skip the back end its caller holds. Frees that went into another id's spans (a thread
/// that changed ids) come back to the central lists this way, where any back end finds them.
pub(crate) fn flush_idle_backends() {
    if mode() != Mode::Thread {
        empty_transfer(false);
    }
    for backing in &BACKING[..IDS.load(Ordering::Relaxed)] {
        if let Some(backing) = backing.try_lock()
            && !backing.0.is_null()
        {
            // SAFETY: the lock makes the cache ours.
            unsafe { (*{ backing.0 }).flush() };
        }
    }
}

/// Flushes the back-end cache of `id` (under its lock), if it has one.
fn flush_backend(id: usize) {
    let backing = BACKING[id].lock();
    if !backing.0.is_null() {
        // SAFETY: the lock makes the cache ours.
        unsafe { (*{ backing.0 }).flush() };
    }
}

/// The back ends' locks, for the fork handlers (after the orphan cache's, before the pool's:
/// `with_backing` nests them so).
pub(crate) fn each_lock(mut f: impl FnMut(&RawLock)) {
    for backing in &BACKING[..IDS.load(Ordering::Relaxed)] {
        f(backing.raw());
    }
    // Taken inside a back end's (`flush`, `refill`).
    transfer::each_lock(&mut f);
    // A leaf: nothing is locked while it is held.
    f(memo::raw_lock());
}

/// The most bytes of objects one id's slab holds (the per-CPU front end's bound per CPU).
pub(crate) const MAX_CACHED_BYTES: usize = slab::MAX_CACHED_BYTES;

/// Statistics: calls `f(span, objects)` for the objects each back-end cache holds off its
/// spans' lists (`Cache::for_each_held`), under the back end's lock, which makes walking its
/// lists safe (unlike another thread's own cache).
pub(crate) fn backends_held(mut f: impl FnMut(&Span, usize)) {
    for backing in &BACKING[..IDS.load(Ordering::Relaxed)] {
        let backing = backing.lock();
        if !backing.0.is_null() {
            // SAFETY: the lock makes the cache ours while we read it.
            unsafe { (*{ backing.0 }).for_each_held(&mut f) };
        }
    }
}

/// Statistics: bytes mapped for slabs, and calls `f(block, class size)` for every object on
/// a stack (read racily, `slab::for_each_cached`).
pub(crate) fn cached(mut f: impl FnMut(*mut u8, usize)) -> usize {
    slab::for_each_cached(|block, class| f(block, class.size()));
    transfer::for_each_cached(|block, class| f(block, class.size()));
    slab::mapped() + memo::mapped()
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    /// A thread that adopts the per-CPU caches leaves the sequences' tag equal to the key,
    /// so that the fast path's tagged pops (`pop_fast`) take the blocks the pushes marked:
    /// with any other tag every one of them would refuse and leave its block to the slow
    /// path, which serves it all the same (so nothing else notices). Checked on a thread of
    /// its own, under `TESSERA_CACHE=percpu` (elsewhere the thread keeps a cache).
    #[test]
    fn adopting_sets_the_pop_tag_to_the_key() {
        std::thread::spawn(|| {
            let p = crate::alloc(64, 8);
            assert!(!p.is_null());
            if thread::uses_percpu() && freelist::HARDENED {
                assert_eq!(rseq::slab_tag(), freelist::key());
            }
            // SAFETY: the block just allocated, given up.
            unsafe { crate::free(p) };
        })
        .join()
        .expect("the thread");
    }
}
