//! Which cache the calling thread allocates from.
//!
//! Two thread-local words (`tls.rs`: initial-exec TLS, so reading one is an `fs`-relative
//! load, and nothing is registered or allocated for them):
//! - `CURRENT`: the cache allocations use. A plain thread gets its own cache on its first
//!   allocation; a runtime may install a processor's cache instead (`processor.rs`).
//! - `OWN`: the thread's own cache, if it made one, flushed at thread exit; after the exit
//!   handler ran, [`EXITED`].
//!
//! After the exit handler: glibc still frees (and may allocate) after every key destructor
//! has run, in `__libc_thread_freeres` (the text `strerror` built for an unknown errno, a
//! failed `dlopen`'s message). A cache made then would never be given back, since no
//! destructor runs again: such a thread allocates from the shared orphan cache under a lock
//! (`orphan.rs`) and frees onto the spans' remote lists, as a thread without a cache does.
//!
//! Thread exit is caught with a `pthread_key_create` destructor, not `thread_local!`'s
//! `Drop`: std registers TLS destructors with memory that, inside `libtessera.so`, would
//! come from Tessera itself (ARCHITECTURE.md#per-processor-caches).
//!
//! Migration: a coroutine can yield inside a caller and resume on another thread, and LLVM
//! may keep a thread-local's address across that call (llvm-project#98479). The words are
//! read with `asm!` that is not `pure`, and the public entry points in `lib.rs` are
//! `#[inline(never)]`, so every allocation reads them afresh on the thread that runs it.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use tessera_sys::thread as sys_thread;

use crate::cache::Cache;
use crate::pool;
use crate::tls;

/// The calling thread's cache, or null before its first allocation.
#[inline(always)]
pub(crate) fn current() -> *mut Cache {
    tls::current()
}

/// Replaces the current cache, returning the previous one.
///
/// # Safety
/// `cache` must be null or a valid cache that no other thread uses while it is current on
/// this one: the allocation and free fast paths dereference it unchecked.
#[inline]
pub(crate) unsafe fn swap_current(cache: *mut Cache) -> *mut Cache {
    let previous = tls::current();
    // SAFETY: forwarded contract.
    unsafe { tls::set_current(cache) };
    previous
}

/// `OWN` once the thread's exit handler has run: the thread gets no cache of its own again.
const EXITED: *mut Cache = ptr::without_provenance_mut(1);

/// `OWN` of a thread that uses the per-CPU caches (`percpu/`) instead of a cache of its own.
const PERCPU: *mut Cache = ptr::without_provenance_mut(tls::PERCPU_MARK);

/// Whether the calling thread uses the per-CPU caches (decided at its first allocation,
/// `current_or_init`). Its `CURRENT` word is null, except while it holds a per-CPU back end
/// or runs a scheduler's processor (whose cache then comes first).
#[inline(always)]
pub(crate) fn uses_percpu() -> bool {
    tls::own_is_percpu()
}

/// Whether the calling thread's exit handler has run (see the module comment).
#[inline]
pub(crate) fn exited() -> bool {
    tls::own() == EXITED
}

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
static INIT: AtomicU8 = AtomicU8::new(UNINIT);
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// One-time process set-up: configuration, the thread-exit key, the fork handlers.
///
/// Re-entrant by design: `pthread_atfork` and `pthread_key_create` may call `malloc`
/// (which is Tessera inside `libtessera.so`). Such a nested call sees `RUNNING`, skips the
/// set-up and allocates with the defaults, which are valid from the start.
#[cold]
fn ensure_init() {
    if INIT
        .compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    crate::config::load();
    if let Ok(key) = sys_thread::key_create(on_thread_exit) {
        KEY.store(key, Ordering::Release);
    }
    crate::fork::register();
    INIT.store(READY, Ordering::Release);
}

/// Runs the process set-up if it has not run yet. Every allocation's slow path asks, not
/// only the making of a cache: a program whose allocations are all large blocks makes no
/// cache, and ran with no configuration at all (`TESSERA_MEMORY_LIMIT=16m` let it map 100
/// MiB of 1 MiB blocks, and its purger never started; issue #13).
#[inline(always)]
pub(crate) fn ensure_ready() {
    if INIT.load(Ordering::Acquire) != READY {
        ensure_init();
    }
}

/// The calling thread's cache, making one on first use. Null when the OS refuses the
/// memory for a cache, after the thread's exit handler ran ([`exited`]), or when the thread
/// uses the per-CPU caches ([`uses_percpu`], decided here on its first allocation).
#[cold]
#[inline(never)]
pub(crate) fn current_or_init() -> *mut Cache {
    let cache = current();
    if !cache.is_null() || exited() || uses_percpu() {
        return cache;
    }
    ensure_ready();
    if crate::percpu::adopt() {
        // SAFETY: `PERCPU` is a marker the words may hold; the thread has no cache to flush.
        unsafe { tls::set_own(PERCPU) };
        let memo = tls::memo();
        let key = KEY.load(Ordering::Acquire);
        if !memo.is_null() && key != u32::MAX {
            // SAFETY: `key` was created by `key_create`; the value, the thread's span memo
            // tagged (`MEMO_TAG`), is what `on_thread_exit` gives back. A failure only means
            // the memo is not reused after this thread exits.
            let _ = unsafe {
                sys_thread::set_specific(key, memo.cast::<u8>().wrapping_add(MEMO_TAG).cast())
            };
        }
        return ptr::null_mut();
    }
    let cache = pool::acquire();
    if cache.is_null() {
        return cache;
    }
    // Publish before `pthread_setspecific`, which may itself allocate (second-level key
    // blocks): the nested call then finds this cache instead of making another.
    // SAFETY: a valid cache the pool just handed to this thread alone.
    unsafe {
        tls::set_own(cache);
        tls::set_current(cache);
    }
    let key = KEY.load(Ordering::Acquire);
    if key != u32::MAX {
        // SAFETY: `key` was created by `key_create`; the value is our cache, which
        // `on_thread_exit` takes. A failure (no memory for glibc's second-level key block)
        // only means the cache is not released when this thread exits.
        let _ = unsafe { sys_thread::set_specific(key, cache.cast()) };
    }
    cache
}

/// Added to a per-CPU thread's span memo (64-byte aligned) to make its key value: the key
/// names either the thread's own cache or that.
const MEMO_TAG: usize = 1;

/// The pthread key destructor: flush the exiting thread's own cache and park it, or give a
/// per-CPU thread's span memo back (the thread stays on the per-CPU caches, without it).
extern "C" fn on_thread_exit(arg: *mut c_void) {
    if arg.addr() & MEMO_TAG != 0 {
        crate::percpu::release_memo();
        return;
    }
    let cache = arg.cast::<Cache>();
    // SAFETY: `EXITED` and null are values the words may always hold.
    unsafe {
        tls::set_own(EXITED);
        if tls::current() == cache {
            tls::set_current(ptr::null_mut());
        }
    }
    // SAFETY: the key's value is the thread's own cache, which nothing uses any more: both
    // thread-locals let go of it above, and from now on this thread allocates from the
    // orphan cache (`exited`).
    unsafe { pool::release(cache) };
}

/// Flushes the calling thread's own cache (spans with free objects go back to the central
/// lists or the page heap). The cache stays the thread's.
pub(crate) fn flush_own() {
    let cache = tls::own();
    if !cache.is_null() && !exited() && !uses_percpu() && current() == cache {
        // SAFETY: the calling thread owns its cache and is not inside another allocator call.
        unsafe { (*cache).flush() };
    }
}
