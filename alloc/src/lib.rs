//! Tessera: a size-classed, thread-caching memory allocator in the lineage of Go's runtime
//! allocator and tcmalloc (ARCHITECTURE.md#allocator).
//!
//! ```
//! #[global_allocator]
//! static A: tessera::Tessera = tessera::Tessera;
//! # fn main() { let v = vec![1u8; 100]; assert_eq!(v.len(), 100); }
//! ```
//!
//! How a request flows:
//! - `size_class.rs`: size → class, one table load.
//! - `cache.rs`: the processor's cache pops an object (the fast path, in this file), and on
//!   a miss refills from its spans, the node's `central.rs` lists, or the page heap.
//! - `large.rs`: sizes above 32 KiB get whole spans; from 32 MiB, their own mapping.
//! - Frees find their span record through the page map (`tessera_span::arena::record_of`),
//!   and a record whose owner is the thread's cache is the whole check (with the
//!   object-start test that catches interior pointers): a pointer of the current span goes
//!   straight back to the bin, one of the cache's other spans to its local list, anyone
//!   else's into a per-thread batch for that span, published onto the span's lock-free
//!   remote list with one CAS (`remote.rs`, `cache.rs`). A sized free (Rust's `dealloc`)
//!   first tries the bin its size names, without the page map.
//!
//! Nothing on these paths allocates, takes a `std` lock, formats or panics. Bad input that
//! can be detected (a foreign pointer, a pointer into a block, a double free caught on the
//! spot) is reported on stderr and aborts the process (`report.rs`).

mod cache;
mod central;
mod config;
mod fork;
mod freelist;
mod guarded;
mod large;
mod limit;
mod node;
mod orphan;
mod percpu;
mod pool;
mod processor;
pub mod profile;
mod purger;
mod remote;
mod report;
mod sanitizer;
pub mod size_class;
mod stats;
mod thread;
mod tls;
mod unwind;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::Ordering;

use cache::Cache;
use size_class::{MAX_FAST, SizeClass, class_for, class_of_fast, class_of_malloc};
use tessera_span::{Span, SpanKind, arena, huge};

pub use limit::{MemoryLimits, memory_limits, set_memory_limit, set_soft_memory_limit};
pub use node::MAX_NODES;
pub use percpu::{CacheMode, cache_mode};
pub use processor::{Installed, ProcessorCache, install_cache};
pub use stats::{Breakdown, ClassStats, NodeStats, Stats, stats};

/// The allocator. Install it with `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tessera;

// SAFETY: every method below returns either null or a block of at least `layout.size()`
// bytes aligned to `layout.align()` that no other live allocation overlaps, and takes back
// only blocks it handed out (see the entry functions).
unsafe impl GlobalAlloc for Tessera {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_layout(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `GlobalAlloc`'s contract: `ptr` came from this allocator with `layout`.
        unsafe { dealloc(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc`'s contract, forwarded.
        unsafe { realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

pub(crate) use config::current_node;

/// Whether this build encodes and checks its free lists and detects double frees (the
/// `hardened` feature, on by default; `--cfg tessera_unhardened` compiles it out for a
/// side-by-side measurement of its cost): ARCHITECTURE.md#hardening.
pub fn hardened() -> bool {
    freelist::HARDENED
}

/// Allocates `size` bytes aligned to `align`. Null when out of memory, and when `align` is
/// not a power of two (0 included).
#[inline]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if align <= WORD {
        return alloc_word(size);
    }
    // SAFETY: just checked.
    unsafe { alloc_pow2(size, align) }
}

/// [`alloc`] for a `Layout`, whose alignment needs no check.
///
/// Inlined into the caller (Rust's `__rust_alloc` shim, where the alignment is not known
/// at compile time either), it picks the entry point: almost every Rust allocation asks
/// for an alignment of at most 8, which every class meets, so `alloc_word` skips the
/// rounding to the alignment that `alloc_pow2` makes (a compare and a branch here save
/// seven instructions there: serde_json's allocations cost ~5 instructions less each).
#[inline]
pub fn alloc_layout(layout: Layout) -> *mut u8 {
    if layout.align() <= WORD {
        return alloc_word(layout.size());
    }
    // SAFETY: a `Layout`'s alignment is a power of two.
    unsafe { alloc_pow2(layout.size(), layout.align()) }
}

/// The alignment every block has (every class's size is a multiple of it, and spans start
/// on a page).
const WORD: usize = 8;

/// `alloc_pow2` for an alignment of at most [`WORD`], which every block has: the class is
/// the size's, with no rounding to the alignment. `#[inline(never)]`: an entry point, as
/// `alloc_pow2` (`thread.rs`).
#[inline(never)]
fn alloc_word(size: usize) -> *mut u8 {
    if size <= MAX_FAST {
        // SAFETY: `size <= MAX_FAST`.
        let class = unsafe { class_of_fast(size) };
        // SAFETY: `class` holds `size` bytes at an alignment of `WORD`, as every class.
        return unsafe { alloc_fast(size, WORD, class) };
    }
    alloc_slow(size, WORD, false, false)
}

/// The allocation entry point once `align` is known to be a power of two, for alignments
/// above [`WORD`] (`alloc_layout` and [`alloc`] send the rest to `alloc_word`). The fast
/// path: a class lookup, a thread-local load and a pop.
/// `#[inline(never)]` is the coroutine-migration defence described in `thread.rs`.
///
/// # Safety
/// `align` must be a power of two: the fast path rounds `size` up with `align - 1` as a
/// mask, which an alignment of 0 turns into a class too small for `size`.
#[inline(never)]
unsafe fn alloc_pow2(size: usize, align: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { alloc_pow2_inlined(size, align) }
}

/// `alloc_pow2`'s body, for `realloc`'s move, itself an entry point of its own (`thread.rs`:
/// the cache is read afresh on each call of one).
///
/// # Safety
/// As `alloc_pow2`.
#[inline(always)]
unsafe fn alloc_pow2_inlined(size: usize, align: usize) -> *mut u8 {
    if size <= MAX_FAST && align <= 16 {
        // SAFETY: `size` rounded up to an alignment of at most 16 is at most `MAX_FAST + 15`.
        let class = unsafe { class_of_fast((size + align - 1) & !(align - 1)) };
        // SAFETY: `class` holds `size` bytes at `align` (the rounding above), a power of two
        // (the contract).
        return unsafe { alloc_fast(size, align, class) };
    }
    alloc_slow(size, align, false, false)
}

/// The fast path of `alloc_pow2` and `alloc_word` once the class is known: the thread's
/// cache, the profile countdown and a pop (or the per-CPU caches' pop); the slow path for
/// everything else.
///
/// # Safety
/// `size <= MAX_FAST`, `align` a power of two of at most 16, and `class` the class
/// `class_of_fast` gives `size` rounded up to `align`.
#[inline(always)]
unsafe fn alloc_fast(size: usize, align: usize, class: SizeClass) -> *mut u8 {
    let cache = thread::current();
    if !cache.is_null() {
        // SAFETY: a non-null current cache is valid and used by this thread alone.
        if unsafe { profile::count(cache, size) } {
            // SAFETY: as above.
            let key = unsafe { (*cache).key };
            // SAFETY: as above (and the same for the cache's bin).
            let block = unsafe { (*cache).bins[class.index()].try_pop(key) };
            if !block.is_null() {
                sanitizer::handed_out(block, size, false);
                return block;
            }
        }
        return alloc_slow(size, align, false, true);
    }
    if thread::uses_percpu() {
        // Inline (`percpu::alloc` says why); no test of `align`, a power of two (this
        // function's contract).
        // SAFETY: the thread uses the per-CPU caches.
        return unsafe { percpu::alloc(size, align, class) };
    }
    alloc_slow(size, align, false, false)
}

/// Every allocation the fast paths leave. `counted`: a fast path has subtracted `size` from
/// the calling thread's heap-profile countdown already (`profile/sample.rs`).
#[cold]
#[inline(never)]
pub(crate) fn alloc_slow(size: usize, align: usize, zero: bool, counted: bool) -> *mut u8 {
    let block = alloc_slow_body(size, align, zero, counted);
    sanitizer::handed_out(block, size, zero);
    block
}

#[inline(always)]
fn alloc_slow_body(size: usize, align: usize, zero: bool, counted: bool) -> *mut u8 {
    // The configuration first: it may allow the purger, set a memory limit.
    thread::ensure_ready();
    purger::maybe_start();
    if !align.is_power_of_two() || size > isize::MAX as usize {
        return ptr::null_mut();
    }
    let cache = thread::current();
    if !cache.is_null() {
        // SAFETY: a non-null current cache is valid and used by this thread alone.
        let c = unsafe { &mut *cache };
        if profile::sample::due(c, size, counted) {
            let block = profile::sample::take(c, size, align, zero);
            if !block.is_null() {
                return block;
            }
        }
    }
    if cache.is_null() && thread::uses_percpu() {
        // SAFETY: the thread uses the per-CPU caches.
        return unsafe { percpu::alloc_slow(size, align, zero, counted) };
    }
    let Some(class) = class_for(size, align) else {
        return large::alloc(size, align, zero);
    };
    let cache = thread::current_or_init();
    if cache.is_null() {
        if thread::uses_percpu() {
            // SAFETY: the thread uses the per-CPU caches.
            return unsafe { percpu::alloc_slow(size, align, zero, counted) };
        }
        if thread::exited() {
            return orphan::with(|cache| alloc_small(cache, class, size, align, zero));
        }
        return ptr::null_mut();
    }
    // SAFETY: the current cache is valid and used by this thread alone.
    alloc_small(unsafe { &mut *cache }, class, size, align, zero)
}

/// An object of `class` (which holds `size` bytes at `align`) from `cache`, zeroed if `zero`.
///
/// Where a bin has run dry is where guarded sampling looks (`guarded/`): off, it costs a
/// load per refill and nothing per object.
#[inline]
pub(crate) fn alloc_small(
    cache: &mut cache::Cache,
    class: SizeClass,
    size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    alloc_small_in::<true>(cache, class, size, align, zero)
}

/// [`alloc_small`] without guarded sampling: always an object of one of `cache`'s spans
/// (the heap profiler's small samples live in one, `profile/sample.rs`).
pub(crate) fn alloc_small_unguarded(
    cache: &mut cache::Cache,
    class: SizeClass,
    size: usize,
    zero: bool,
) -> *mut u8 {
    alloc_small_in::<false>(cache, class, size, 0, zero)
}

/// `alloc_small`'s body; `GUARDED`: guarded sampling may serve the request.
#[inline(always)]
fn alloc_small_in<const GUARDED: bool>(
    cache: &mut cache::Cache,
    class: SizeClass,
    size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    if zero {
        let block = cache.take_zeroed(class);
        if !block.is_null() {
            return block;
        }
    }
    let bin = &mut cache.bins[class.index()];
    let block = if bin.free.is_null() {
        if GUARDED && guarded::enabled() {
            // Guarded blocks read as zero (a slot's pages are emptied when it is closed).
            let sampled = guarded::sample(cache, size, align);
            if !sampled.is_null() {
                return sampled;
            }
            let block = cache.refill(class);
            guarded::count_refill(cache, class);
            block
        } else {
            cache.refill(class)
        }
    } else {
        // SAFETY: a non-empty list of the cache's bin, which only this thread touches (the
        // thread's cache, or the orphan cache under its lock).
        unsafe { bin.pop() }
    };
    if zero && !block.is_null() {
        sanitizer::open_block(block, size);
        // SAFETY: the block is ours and holds at least `size` bytes.
        unsafe { ptr::write_bytes(block, 0, size) };
    }
    block
}

// ---- entry points for C wrappers ------------------------------------------------------------
//
// `libtessera.so` exports `malloc` and `free` as functions of its own; a call from Rust code
// in that library into `tessera::alloc` would go through the GOT (the `tessera` rlib cannot
// know it ends up in the same shared object), and C's `malloc` needs its own class rule.
// These are the same fast paths, `#[inline(always)]`, for a wrapper to inline into its
// exported function. Such a wrapper is an exported symbol that nothing inlines further, so
// it reads the thread's cache afresh on every call: the coroutine-migration defence of the
// `#[inline(never)]` entry points holds for it too (`thread.rs`).

/// The fast path of C's `malloc(size)`: blocks of at most 8 bytes 8-byte aligned, larger
/// ones 16-byte aligned (glibc's guarantee). Null means "not here": call [`malloc_slow`].
///
/// `alloc`'s fast path without the alignment arithmetic: a table load by size, the thread's
/// cache, a pop. Kept apart from the slow call so that a wrapper's miss path can be a tail
/// call of its own (one that also sets `errno`), leaving the hit path without a stack frame.
#[inline(always)]
pub fn malloc_fast(size: usize) -> *mut u8 {
    if size <= MAX_FAST {
        // SAFETY: `size <= MAX_FAST`.
        let class = unsafe { class_of_malloc(size) };
        let (cache, at) = tls::current_at();
        if !cache.is_null() {
            // SAFETY: a non-null current cache is valid and used by this thread alone.
            if unsafe { profile::count(cache, size) } {
                // SAFETY: as above; the malloc table holds class indexes only.
                let key = unsafe { (*cache).key };
                // SAFETY: as above; the malloc table holds class indexes only, and our bin's
                // list is touched by this thread alone.
                let block = unsafe { (*cache).bins.get_unchecked_mut(class.index()).try_pop(key) };
                if !block.is_null() {
                    sanitizer::handed_out(block, size, false);
                    return block;
                }
            }
        } else {
            // The per-CPU caches' pop, inline: no call on their hit path either. Their
            // countdown is the test for them (`percpu::alloc_fast_at`).
            // SAFETY: no current cache; `at` is from `current_at`.
            let block = unsafe { percpu::alloc_fast_at(at, class, size) };
            if !block.is_null() {
                sanitizer::handed_out(block, size, false);
                return block;
            }
        }
    }
    ptr::null_mut()
}

/// C's `malloc(size)` when [`malloc_fast`] missed: the same alignment rule, and null when
/// out of memory or above `isize::MAX` bytes. Call it only right after `malloc_fast(size)`
/// returned null on the same thread: the heap profiler's countdown (`profile/sample.rs`)
/// then knows whether `malloc_fast` counted the request (it does whenever the size is in
/// its range and the thread has a cache or uses the per-CPU caches).
///
/// `extern "C"`, that is, it cannot unwind: a wrapper that is itself `extern "C"` can then
/// tail-call it (a call that may unwind needs the wrapper's abort-on-unwind frame).
#[cold]
#[inline(never)]
pub extern "C" fn malloc_slow(size: usize) -> *mut u8 {
    let align = if size <= 8 { 8 } else { 16 };
    let counted = size <= MAX_FAST && (!thread::current().is_null() || thread::uses_percpu());
    alloc_slow(size, align, false, counted)
}

/// `free`'s body: see [`free`]; for wrappers, as the comment above says.
///
/// The fast path decides from the span record's first line, as mimalloc decides from its
/// segment and page. The span is one a recent free of the cache's went to, if the pointer lies
/// among its objects at an object boundary (`Cache::recent`; ARCHITECTURE.md, "The free
/// path"). Else the page map entry names the record, the record's owner being the thread's
/// cache proves it an in-use small span of ours (`Cache::release_empty` clears the owner
/// before a span goes back to the page heap), and the object-start check places the pointer
/// in it, at a multiple of the object size (`is_object_start`: the same validation the slow
/// path makes, so foreign and interior pointers cost nothing extra to catch).
/// The block then goes onto the bin's list if the span is the one the bin allocates from,
/// or onto the span's own list if it is on the partial list (`Cache::free_owned_fast`).
/// Anything else goes to `free_slow`: a remote object, a parked span, a large or huge block,
/// null, a bad pointer, a pointer equal to a list's head (a double free, which the slow
/// path reports), and a block carrying the freed-block marker (`freelist.rs`: a double free
/// at any depth, which the slow path confirms and reports).
///
/// # Safety
/// As [`free`].
#[inline(always)]
pub unsafe fn free_inlined(ptr: *mut u8) {
    sanitizer::taking_back(ptr, None);
    // SAFETY: forwarded contract.
    unsafe { free_inlined_body(ptr) }
}

/// `free_inlined` once the block is marked freed for the sanitizers (`sanitizer/`).
///
/// # Safety
/// As [`free`].
#[inline(always)]
unsafe fn free_inlined_body(ptr: *mut u8) {
    let addr = ptr as usize;
    // `at` finds `OWN` for the per-CPU test below without a GOT load of its own.
    let (cache, at) = tls::current_at();
    let mut memo = ptr::null_mut();
    if !cache.is_null() {
        // SAFETY: a non-null current cache is valid and used by this thread alone.
        if let Some(span) = unsafe { (*cache).recent.span_of(ptr) } {
            // SAFETY: the remembered span is an in-use small span the cache owns, and `ptr`
            // one of its objects (`span_of`), which the caller gives up.
            return unsafe { free_owned(cache, span, ptr) };
        }
    } else {
        // A per-CPU thread's memo of its recent frees' spans (null on every other thread,
        // and while it is off: the test of it is the per-CPU test here).
        memo = tls::memo_at(at);
        // SAFETY: the thread's own memo word.
        if let Some(class) = unsafe { percpu::memo_class(memo, ptr) } {
            // SAFETY: the memo placed `ptr` at an object start of an in-use small span of
            // `class` (a memo is set only on per-CPU threads); the caller gives the block up.
            return unsafe { percpu::free_known(ptr, class) };
        }
    }
    if let Some(span) = arena::record_of(addr) {
        if !cache.is_null() {
            // SAFETY: `record_of` returns records inside mapped arena headers.
            let s = unsafe { span.as_ref() };
            if s.owner.load(Ordering::Relaxed) != cache.cast() {
                // A tail call, as `alloc`'s.
                // SAFETY: the current cache is valid and ours; `span` is `ptr`'s record; the
                // caller gives the block up.
                return unsafe { free_unowned(ptr, cache, span.as_ptr()) };
            }
            if is_object_start(s, addr) {
                // SAFETY: the current cache is valid and used by this thread alone; it owns
                // the in-use small span `s`, and `ptr` is one of its objects, which the
                // caller gives up.
                unsafe {
                    (*cache).recent.missed(ptr, s, span.as_ptr());
                    return free_owned(cache, span.as_ptr(), ptr);
                }
            }
        } else if tls::own_is_percpu_at(at) {
            // Inline (`percpu::free` says why).
            // SAFETY: the thread uses the per-CPU caches; `span` is `ptr`'s record; the caller
            // gives the block up.
            return unsafe { percpu::free(ptr, span.as_ptr(), memo, at) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { free_slow(ptr) }
}

/// `free_inlined`'s owner's free: `Cache::free_owned_fast`, and `free_slow` for what it
/// leaves.
///
/// # Safety
/// `cache` must be the calling thread's current cache and own `span`, an in-use small span,
/// and `ptr` must be one of its objects, which the caller gives up.
#[inline(always)]
unsafe fn free_owned(cache: *mut Cache, span: *mut Span, ptr: *mut u8) {
    // SAFETY: the caller's contract.
    match unsafe { (*cache).free_owned_fast(&*span, ptr) } {
        cache::Freed::Done => {}
        // SAFETY: as above: our current cache, which owns the span.
        cache::Freed::Emptied => unsafe { cache::release_emptied(cache, span) },
        // SAFETY: forwarded contract.
        cache::Freed::Not => unsafe { free_slow(ptr) },
    }
}

/// Allocates `size` zeroed bytes aligned to `align`. Fresh pages from the OS are not
/// zeroed again.
#[inline(never)]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    alloc_slow(size, align, true, false)
}

/// Frees a block allocated with `size` and `align`. The size is not needed: the span record
/// that the page map names says everything the free needs, so this is the unsized free's
/// path (`free_inlined`); the size goes to the sanitizers only.
///
/// # Safety
/// `ptr` must have come from this allocator with this size and alignment (or one the block
/// was reallocated to), and must not be used afterwards.
#[inline(never)]
pub unsafe fn dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded contract.
    unsafe { dealloc_inlined(ptr, size, align) }
}

/// `dealloc`'s body, for wrappers (C++'s sized `delete`), as `free_inlined` is `free`'s.
///
/// Why the size is not used to find the block's bin (as Tessera once did, testing the bin's
/// current span first): a real program frees most blocks into spans other than the one its
/// bin allocates from (93% of serde_json's 16M frees), and for those that test was ~22
/// instructions spent before the owner-first path anyway. One path for every owned span
/// costs a program like that less than a shortcut for the one span (ARCHITECTURE.md,
/// "The free path").
///
/// # Safety
/// As [`dealloc`].
#[inline(always)]
pub unsafe fn dealloc_inlined(ptr: *mut u8, size: usize, _align: usize) {
    sanitizer::taking_back(ptr, Some(size));
    // SAFETY: forwarded contract.
    unsafe { free_inlined_body(ptr) }
}

/// Frees a block without knowing its size (C's `free`). Null is ignored; a pointer Tessera
/// never handed out, or one already freed (when detectable), is reported and aborts.
///
/// # Safety
/// `ptr` must be null or a block from this allocator that is not used afterwards.
#[inline(never)]
pub unsafe fn free(ptr: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe { free_inlined(ptr) }
}

/// `free_inlined`'s path for a block whose record the page map named, in a span the calling
/// thread's cache does not own: a remote free (another thread's cache or a central list owns
/// the span), batched (`Cache::free_remote_batched`), without `free_slow`'s second lookup:
/// the record is checked as `small_block_size` checks one (a small span, `ptr` at an object
/// boundary). Anything else (a large or huge block, a stale entry, a bad pointer) goes to
/// `free_slow`. Rayon's work stealing makes a fifth of its frees remote; each cost ~160
/// instructions through `free_slow` (mimalloc's ~35).
///
/// `ptr` comes first, where the free receives it: the free's tail call then moves no
/// argument into place, so the free keeps `ptr` in the register it came in and the cache
/// elsewhere (with the cache first, every free began with a move of `ptr` out of the way).
///
/// # Safety
/// `cache` must be the calling thread's current cache, `span` the record `arena::record_of`
/// returned for `ptr`, and `ptr` as for [`free`].
#[inline(never)]
unsafe extern "C" fn free_unowned(ptr: *mut u8, cache: *mut Cache, span: *mut Span) {
    // SAFETY: `record_of` returns records inside mapped arena headers.
    let s = unsafe { &*span };
    // An owner of none: an emptied span (`free_slow` reports the block).
    if s.kind() == SpanKind::Small
        && !s.owner.load(Ordering::Relaxed).is_null()
        && is_object_start(s, ptr as usize)
    {
        // SAFETY: a live object of the in-use small span `span` (the caller gives it up),
        // which `cache`, ours, does not own (the caller's test; if its owner changed since,
        // it changed to another cache or a central list, never to ours, which only this
        // thread sets).
        return unsafe { (*cache).free_remote_batched(span, ptr) };
    }
    // SAFETY: forwarded contract.
    unsafe { free_slow(ptr) }
}

/// Everything `free_inlined`'s fast path leaves: the full lookup and validation of the
/// pointer, then the local, remote, large or huge free. `extern "C"` (cannot unwind) so that
/// `free_inlined` can tail-call it from an `extern "C"` wrapper, as `malloc_slow`.
///
/// # Safety
/// As [`free`].
#[inline(never)]
pub(crate) unsafe extern "C" fn free_slow(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    let addr = ptr as usize;
    if let Some(span) = arena::span_of(addr) {
        // SAFETY: `span_of` returns records inside mapped arena headers.
        let s = unsafe { span.as_ref() };
        match s.kind() {
            SpanKind::Small if s.contains(addr) => {
                if !is_object_start(s, addr) {
                    // SAFETY: the caller gives the block up.
                    if unsafe { profile::sample::free_small(span.as_ptr(), addr) } {
                        return;
                    }
                    if profile::sample::is_freed_sample(s, addr) {
                        report::fatal("double free", addr);
                    }
                    not_a_block(
                        s,
                        addr,
                        "free of a pointer that is not allocated (double free?)",
                        "free of a pointer into the middle of a block",
                    );
                }
                if s.owner.load(Ordering::Relaxed).is_null() {
                    // No cache and no central list owns the span: it holds no live object
                    // (an emptied span in a stash, `Cache::release_empty`; a span is owned
                    // from before its first object is handed out until after its last
                    // comes back), so this block was freed already. Pushed, it would wait on
                    // the remote list of a span that is about to be formatted afresh.
                    report::fatal(
                        "free of a pointer that is not allocated (double free?)",
                        addr,
                    );
                }
                // SAFETY: an object start of the in-use small span, given up by the caller.
                unsafe { free_object(span.as_ptr(), ptr) }
            }
            SpanKind::Large if s.base() == ptr => {
                if s.user_flags & profile::sample::PROFILED != 0 {
                    // SAFETY: the caller gives up the block, the span's only object.
                    unsafe { profile::sample::free_large(span.as_ptr()) };
                } else {
                    // SAFETY: as above.
                    unsafe { large::free(s) };
                }
            }
            _ => report::fatal(
                "free of a pointer that is not allocated (double free?)",
                addr,
            ),
        }
        return;
    }
    if arena::in_arena(addr) {
        report::fatal(
            "free of a pointer that is not allocated (double free?)",
            addr,
        );
    }
    if guarded::contains(addr) {
        // SAFETY: the caller gives the block up; a bad pointer is reported.
        return unsafe { guarded::free(ptr) };
    }
    profile::sample::forget_huge(addr);
    // SAFETY: if `ptr` is a huge block, the caller gives it up.
    if !unsafe { huge::free(ptr) } {
        // Huge blocks leave no trace once unmapped, so a second free of one lands here too.
        report::fatal(
            "free of a pointer tessera does not own (never handed out, or already freed)",
            addr,
        );
    }
}

/// Frees `ptr`, a live object of the in-use small span `span` (owned by a cache or a central
/// list), the way `free_slow` frees one once it has checked the pointer: into the calling
/// thread's cache if it owns the span, else as a remote free (batched, or per-CPU).
///
/// # Safety
/// `ptr` must be an object start of `span`, live, which the caller gives up.
#[inline(always)]
pub(crate) unsafe fn free_object(span: *mut Span, ptr: *mut u8) {
    let mut cache = thread::current();
    if cache.is_null() {
        // A thread's first allocator call may be this free: it decides here whether the
        // thread uses the per-CPU caches.
        cache = thread::current_or_init();
    }
    if cache.is_null() && thread::uses_percpu() {
        // SAFETY: the thread uses the per-CPU caches; `ptr` is an object start of the
        // in-use small span, given up by the caller.
        return unsafe { percpu::free_slow(span, ptr) };
    }
    // SAFETY: a non-null current cache is valid and ours; the object is live per the
    // caller, and the branch matches who owns the span.
    unsafe {
        if cache.is_null() {
            cache::free_remote(&*span, ptr);
        } else if (*cache).owns(&*span) {
            (*cache).free_local(span, ptr);
        } else {
            (*cache).free_remote_batched(span, ptr);
        }
    }
}

/// Whether `addr` is the first byte of one of the objects of the small span `s` (false for
/// an address outside the span's objects).
#[inline]
pub(crate) fn is_object_start(s: &Span, addr: usize) -> bool {
    let offset = addr.wrapping_sub(s.obj_base);
    size_class::divides(offset, s.div_test) && offset < s.obj_bytes.load(Ordering::Relaxed) as usize
}

/// Reports `addr`, a pointer into the small span `s` that `is_object_start` refused: at an
/// object boundary past the carved objects, it is a block freed before its memory went to
/// this span (a double free, or a pointer used after its free: `uncarved`); anywhere else,
/// a pointer into a block (`interior`).
#[cold]
#[inline(never)]
fn not_a_block(s: &Span, addr: usize, uncarved: &str, interior: &str) -> ! {
    let offset = addr.wrapping_sub(s.obj_base);
    let boundary = size_class::divides(offset, s.div_test)
        && offset < s.capacity as usize * s.obj_size as usize;
    report::fatal(if boundary { uncarved } else { interior }, addr)
}

/// The bytes usable at `ptr` (C's `malloc_usable_size`); 0 for null.
///
/// Programs that keep their own memory accounts call this on every allocation and free
/// (redis does), so a small block's size comes from its span record's first line, as
/// `free` finds it; everything else takes the full lookup.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[inline]
pub unsafe fn usable_size(ptr: *mut u8) -> usize {
    if let Some(size) = small_block_size(ptr as usize) {
        return size;
    }
    usable_size_slow(ptr)
}

/// Reports `ptr`, a block of the small span `s`, if it is free (the freed-block marker,
/// confirmed on the span's lists when the calling thread's cache owns the span): the check
/// `realloc` and `malloc_usable_size` make, as `free` does. A span of another thread's
/// cannot be walked from here; such a block's marker is left to the free that follows a
/// moving `realloc`, or ignored by `malloc_usable_size`.
///
/// Returns whether the block carries the marker (and was not reported).
///
/// The marker test is inline and the confirmation out of line: `realloc` makes this check on
/// every small block (a call to a cold function each time was 56M of rayon's 5.1G
/// instructions).
///
/// # Safety
/// `ptr` must be an object of the in-use small span `s`.
#[inline(always)]
unsafe fn check_not_freed(s: &Span, ptr: *mut u8, what: &str) -> bool {
    // SAFETY: `ptr` is an object of `s` (the contract).
    unsafe { freelist::looks_freed_in(s, ptr) && confirm_freed(s, ptr, what) }
}

/// `check_not_freed` once the block carries the marker: reports it if it is on a list the
/// calling thread may walk, and returns true (the block is then another thread's to judge,
/// or the marker a coincidence).
///
/// # Safety
/// As `check_not_freed`.
#[cold]
#[inline(never)]
unsafe fn confirm_freed(s: &Span, ptr: *mut u8, what: &str) -> bool {
    let cache = thread::current();
    // SAFETY: a non-null current cache is valid and ours; it owns `s` when `owns` says so.
    unsafe {
        if !cache.is_null() && (*cache).owns(s) {
            (*cache).confirm_double_free(s, ptr, what);
        }
    }
    percpu::confirm_double_free(s, ptr, what);
    true
}

/// `extern "C"` (cannot unwind) so that `usable_size` can tail-call it from an
/// `extern "C"` wrapper, as `malloc_slow`.
#[inline(never)]
extern "C" fn usable_size_slow(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        return 0;
    }
    if let Some(span) = arena::record_of(ptr as usize) {
        // SAFETY: `record_of` returns records inside mapped arena headers.
        let s = unsafe { span.as_ref() };
        if s.kind() == SpanKind::Small && is_object_start(s, ptr as usize) {
            // SAFETY: `ptr` is an object of the small span `s` (tested above). A report
            // aborts; otherwise the block is live (or another thread's to judge).
            unsafe { check_not_freed(s, ptr, "malloc_usable_size of a freed pointer") };
            return s.obj_size as usize;
        }
    }
    match block_size(ptr) {
        Some(size) => size,
        None => report::fatal(
            "malloc_usable_size of a pointer tessera did not hand out (foreign, or into a block)",
            ptr as usize,
        ),
    }
}

/// The usable size of the block `ptr` points to the start of, or `None` when `ptr` is not
/// the start of a block Tessera handed out (a foreign pointer, or one into the middle of a
/// block: the same pointers `free` reports). Never aborts: callers that get `None` decide how
/// to report it. A freed small block may still answer `Some`: objects carry no per-object
/// state.
#[inline]
pub fn block_size(ptr: *const u8) -> Option<usize> {
    small_block_size(ptr as usize).or_else(|| block_size_slow(ptr))
}

/// A small block's size from the record its page map entry names, when that record is a
/// small span holding an object that starts at `addr`; `None` when it takes a closer look
/// (a large or huge block, a stale entry, a bad pointer, null).
#[inline(always)]
fn small_block_size(addr: usize) -> Option<usize> {
    // SAFETY: `record_of` returns records inside mapped arena headers.
    let s = unsafe { arena::record_of(addr)?.as_ref() };
    // SAFETY: the marker test reads the first word of an object of `s` (tested first).
    (s.kind() == SpanKind::Small
        && is_object_start(s, addr)
        && !unsafe { freelist::looks_freed_in(s, addr as *mut u8) })
    .then_some(s.obj_size as usize)
}

#[inline(never)]
fn block_size_slow(ptr: *const u8) -> Option<usize> {
    let addr = ptr as usize;
    match tessera_span::live_span_of(addr) {
        Some(span) => {
            // SAFETY: a live span record.
            let s = unsafe { span.as_ref() };
            match s.kind() {
                SpanKind::Small if is_object_start(s, addr) => Some(s.obj_size as usize),
                SpanKind::Small => profile::sample::small_usable_size(s, addr),
                SpanKind::Large if s.base() as usize == addr => Some(s.bytes()),
                _ => None,
            }
        }
        None if arena::in_arena(addr) => None,
        None if guarded::contains(addr) => guarded::usable_size(addr),
        None => huge::size_of(ptr as *mut u8),
    }
}

/// Writes `tessera: <what> (pointer 0x…)` to stderr and aborts: the report the allocator
/// itself gives for bad input, for wrappers (such as `libtessera.so`) that detect bad input
/// before calling in. Does not allocate.
pub fn report_bad_pointer(what: &str, ptr: *const u8) -> ! {
    report::fatal(what, ptr as usize)
}

/// Resizes the block at `ptr` (allocated with `old_size` and `align`) to `new_size` bytes,
/// in place when the size class or the neighbouring pages allow, else by moving it. Null
/// (leaving the old block intact) when out of memory.
///
/// # Safety
/// `ptr` must be a live block from this allocator with that size and alignment.
#[inline(never)]
pub unsafe fn realloc(ptr: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    let addr = ptr as usize;
    if let Some(span) = arena::span_of(addr) {
        // SAFETY: `span_of` returns records inside mapped arena headers.
        let s = unsafe { span.as_ref() };
        match s.kind() {
            SpanKind::Small => {
                // The checks `free` makes: a block start (or a live small sample), not free
                // already.
                let (size, marked, plain) = if is_object_start(s, addr) {
                    // SAFETY: `ptr` is an object of the small span `s` (tested above). A
                    // block that still carries the marker after the check (another thread's
                    // span) is not resized in place: the free of the move below settles it.
                    let marked = freelist::HARDENED
                        && unsafe { check_not_freed(s, ptr, "realloc of a freed pointer") };
                    (s.obj_size as usize, marked, true)
                } else {
                    match profile::sample::small_usable_size(s, addr) {
                        Some(size) => (size, false, false),
                        None if profile::sample::is_freed_sample(s, addr) => {
                            report::fatal("realloc of a freed pointer", addr)
                        }
                        None => not_a_block(
                            s,
                            addr,
                            "realloc of a freed pointer",
                            "realloc of a pointer into the middle of a block",
                        ),
                    }
                };
                // Stay put if it fits and would not waste more than half the object. A
                // sample stays a sample, as a large one resized in place (below).
                if !marked
                    && !sanitizer::REALLOC_MOVES
                    && new_size <= size
                    && (new_size > size / 2 || size <= 64)
                {
                    sanitizer::resized_in_place(ptr, new_size);
                    return ptr;
                }
                // A plain block the checks above passed moves without the free's second
                // lookup and checks. A marked block or a sample takes the full free below.
                if plain && !marked {
                    // SAFETY: `ptr` is an object start of the small span `span`, and not
                    // freed as far as this thread can tell (the checks above); the caller
                    // gives it up on success.
                    return unsafe {
                        realloc_move_small(span.as_ptr(), ptr, old_size, align, new_size)
                    };
                }
            }
            SpanKind::Large if s.base() != ptr => {
                report::fatal("realloc of a pointer into the middle of a block", addr);
            }
            // In place keeps the base, so any alignment still holds.
            // A sampled block resized in place keeps its sample (and its `PROFILED` flag), as
            // it was taken: the allocation the site made.
            SpanKind::Large
                if !sanitizer::REALLOC_MOVES
                    // SAFETY: the caller says the block is live; the span is its only object.
                    && unsafe { large::resize_in_place(s, new_size) } =>
            {
                sanitizer::resized_in_place(ptr, new_size);
                return ptr;
            }
            _ => {}
        }
    } else if !sanitizer::REALLOC_MOVES
        && align <= tessera_sys::mem::page_size()
        && new_size >= config::huge_threshold()
    {
        let sampled = profile::sample::is_live_huge(addr);
        // SAFETY: if `ptr` is a huge block, the caller gives it up on success.
        if let Some(moved) = unsafe { huge::realloc(ptr, new_size) } {
            if sampled {
                // `mremap` may have moved it: its sample follows.
                profile::sample::moved_huge(addr, moved.as_ptr() as usize);
            }
            return moved.as_ptr();
        }
    }
    let fresh = alloc(new_size, align);
    if !fresh.is_null() {
        let len = old_size.min(new_size);
        // SAFETY: both blocks are live and distinct; we copy what both can hold.
        sanitizer::moving(ptr, len, || unsafe {
            ptr::copy_nonoverlapping(ptr, fresh, len)
        });
        // SAFETY: the caller gives the old block up.
        unsafe { dealloc(ptr, old_size, align) };
    }
    fresh
}

/// `realloc`'s move of a block of a small span once `realloc` has found its span and checked
/// it as `free` checks a block (an object start, not freed): allocates the new block,
/// copies, and frees the old one straight into the calling thread's cache, as `free_object`
/// does, without the free's own lookup and checks (on rayon's 2M moves, the free's path
/// repeated them: ~40 of ~165 instructions a move). What those checks would still catch
/// here: a span that no cache or central list owns holds no live block (`free_slow` says
/// why), so `ptr` was freed already.
///
/// # Safety
/// `ptr` must be an object start of the in-use small span `span`, live (the marker checked
/// by the caller, when hardened), allocated with `old_size` and `align`; the caller gives
/// it up unless the result is null.
#[inline(always)]
unsafe fn realloc_move_small(
    span: *mut Span,
    ptr: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: `span` is a record inside a mapped arena header (the contract).
    if unsafe { (*span).owner.load(Ordering::Relaxed) }.is_null() {
        report::fatal("realloc of a freed pointer", ptr as usize);
    }
    // SAFETY: `align` is the alignment the block was allocated with (the contract), a
    // power of two, or the allocation would have failed.
    let fresh = unsafe { alloc_pow2_inlined(new_size, align) };
    if fresh.is_null() {
        return fresh;
    }
    let len = old_size.min(new_size);
    // SAFETY: both blocks are live and distinct; we copy what both can hold.
    sanitizer::moving(ptr, len, || unsafe {
        ptr::copy_nonoverlapping(ptr, fresh, len)
    });
    sanitizer::taking_back(ptr, Some(old_size));
    // After the allocation, which may have refilled the cache (a refill can take `span`
    // from a central list) and published its remote batch.
    let cache = thread::current();
    // SAFETY: a non-null current cache is valid and ours; `ptr` is a checked, live object
    // of the in-use small span `span` (the contract), and the branch matches who owns it.
    // Without a cache (a per-CPU thread, an exiting one) the free's own path decides.
    unsafe {
        if cache.is_null() {
            free_inlined_body(ptr);
        } else if (*cache).owns(&*span) {
            (*cache).free_local_checked(span, ptr);
        } else {
            (*cache).free_remote_batched(span, ptr);
        }
    }
    fresh
}

/// Flushes the calling thread's cache and every idle cache, takes back every cache's stash
/// of empty spans, then returns every free page to the OS at once (ignoring the decay
/// curve). For programs that know they just let go of a lot of memory.
pub fn collect() {
    thread::flush_own();
    percpu::collect();
    limit::reclaim();
}

/// [`collect`], returning how many bytes went back to the OS meanwhile (C's `malloc_trim`
/// answers whether that was any). Purges the background purger makes during the call count
/// too: they are bytes returned since the call began.
pub fn trim() -> usize {
    let before = stats::purged_total();
    collect();
    usize::try_from(stats::purged_total().saturating_sub(before)).unwrap_or(usize::MAX)
}
