//! The per-processor hook (ARCHITECTURE.md#per-processor-caches): a runtime that
//! multiplexes coroutines over threads gives each of its processors (Go's P) a cache, and
//! makes that cache current on whichever thread (M) runs the processor. The number of
//! caches then follows the number of processors, not of threads, and a coroutine's
//! allocations hit the cache of the processor it runs on.
//!
//! ```
//! let mut cache = tessera::ProcessorCache::new().expect("out of memory");
//! // On the thread that now runs this processor:
//! // SAFETY: the guard is not leaked; it ends before `cache` is dropped.
//! let installed = unsafe { tessera::install_cache(&mut cache) };
//! let v = vec![1, 2, 3]; // served by `cache` when Tessera is the global allocator
//! drop(v);
//! installed.uninstall();
//! drop(cache); // flushed and parked for reuse
//! ```

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::cache::Cache;
use crate::{pool, thread};

/// A cache owned by a runtime's processor. Dropping it flushes it and parks it for reuse.
pub struct ProcessorCache {
    cache: NonNull<Cache>,
}

// SAFETY: a processor moves between threads; the cache is plain memory whose use is
// serialised by the runtime (installed on at most one thread at a time, per `install_cache`).
unsafe impl Send for ProcessorCache {}

impl fmt::Debug for ProcessorCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorCache")
            .field("cache", &self.cache)
            .finish()
    }
}

impl ProcessorCache {
    /// A new cache (refills follow the NUMA node of whichever thread runs it). `None` when
    /// the OS refuses memory.
    pub fn new() -> Option<Self> {
        NonNull::new(pool::acquire()).map(|cache| Self { cache })
    }

    /// Hands spans with free objects back to the central lists and empty spans to the page
    /// heap, as a thread exit would (Go's `mcache` flush when a P is destroyed or idles).
    pub fn flush(&mut self) {
        // SAFETY: `&mut self` proves the cache is not installed (an `Installed` borrows it).
        unsafe { (*self.cache.as_ptr()).flush() };
    }
}

impl Drop for ProcessorCache {
    fn drop(&mut self) {
        // SAFETY: an installed cache is mutably borrowed by its `Installed` guard, so a cache
        // being dropped is current nowhere and nothing will use it again.
        unsafe { pool::release(self.cache.as_ptr()) };
    }
}

/// Proof that a `ProcessorCache` is current on this thread; `uninstall` (or drop) restores
/// the thread's previous cache. Not `Send`: it must end on the thread where it began.
#[must_use = "dropping the guard uninstalls the cache at once"]
pub struct Installed<'a> {
    previous: *mut Cache,
    _cache: PhantomData<&'a mut ProcessorCache>,
    _not_send: PhantomData<*mut ()>,
}

impl fmt::Debug for Installed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Installed")
    }
}

/// Makes `cache` the calling thread's current cache until the guard ends. The mutable
/// borrow keeps the cache on one thread at a time, exactly like Go's `p.mcache`.
///
/// # Safety
/// - The guard must not be leaked (`mem::forget`): the thread would keep allocating from
///   a cache that may move to another thread or be dropped.
/// - Guards on one thread must end in the reverse order of their creation.
pub unsafe fn install_cache(cache: &mut ProcessorCache) -> Installed<'_> {
    // SAFETY: a valid cache, which the guard's mutable borrow keeps off every other thread
    // and alive for as long as the guard lives (it is not leaked: the contract).
    let previous = unsafe { thread::swap_current(cache.cache.as_ptr()) };
    Installed {
        previous,
        _cache: PhantomData,
        _not_send: PhantomData,
    }
}

impl Installed<'_> {
    /// Restores the thread's previous cache.
    pub fn uninstall(self) {}
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        // SAFETY: `previous` was current on this thread when the guard began, and guards
        // end in reverse order (`install_cache`'s contract), so whatever kept it valid and
        // on this thread then (the thread's own cache, or an outer guard) still does.
        unsafe { thread::swap_current(self.previous) };
    }
}
