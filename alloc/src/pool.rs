//! Where caches come from and go back to.
//!
//! Caches are carved from chunks mapped for them and never unmapped: remote freers may
//! still reach a cache through a parked span's owner tag (`cache::free_remote`), so a cache's
//! memory must outlive every span it ever owned. A thread that exits (or a processor that is
//! destroyed) flushes its cache and parks it here; the next thread takes it back, spans and
//! all. The number of caches is thus the peak number of threads (or processors) alive at
//! once, not the number of threads ever started.

use core::ptr;

use tessera_sys::lock::{Locked, RawLock};
use tessera_sys::mem;

use crate::cache::Cache;

const CHUNK_BYTES: usize = 256 << 10;

#[derive(Debug)]
struct Pool {
    idle: *mut Cache,
    idle_count: usize,
    chunks: Chunks,
    caches: usize,
    /// Every cache ever made, linked through `next_all`.
    all: *mut Cache,
}

// SAFETY: the pointers name memory mapped for the pool and never unmapped; the lock
// serialises access.
unsafe impl Send for Pool {}

static POOL: Locked<Pool> = Locked::new(Pool {
    idle: ptr::null_mut(),
    idle_count: 0,
    chunks: Chunks::new(CHUNK_BYTES),
    caches: 0,
    all: ptr::null_mut(),
});

/// An idle cache if any, else a new one. Null when the OS refuses memory.
pub(crate) fn acquire() -> *mut Cache {
    let mut pool = POOL.lock();
    if !pool.idle.is_null() {
        let cache = pool.idle;
        // SAFETY: idle caches are valid and owned by the pool while listed.
        unsafe {
            pool.idle = (*cache).next_idle;
            (*cache).next_idle = ptr::null_mut();
        }
        pool.idle_count -= 1;
        return cache;
    }
    let cache = pool.chunks.carve::<Cache>();
    if cache.is_null() {
        return cache;
    }
    pool.caches += 1;
    // SAFETY: fresh, suitably aligned chunk memory (page-aligned chunk, size rounded to the
    // alignment) that nobody else can see.
    unsafe {
        Cache::init(cache);
        (*cache).next_all = pool.all;
    }
    pool.all = cache;
    cache
}

/// Flushes `cache` and parks it for reuse.
///
/// # Safety
/// `cache` must come from `acquire`, and no thread may use it any more.
pub(crate) unsafe fn release(cache: *mut Cache) {
    // SAFETY: the caller gave up the cache, so we have it exclusively.
    unsafe {
        (*cache).flush();
        (*cache).give_up_parked();
    }
    let mut pool = POOL.lock();
    // SAFETY: as above.
    unsafe { (*cache).next_idle = pool.idle };
    pool.idle = cache;
    pool.idle_count += 1;
}

/// Flushes every idle cache, so spans freed into them since they went idle return to the
/// page heap or to the central lists.
pub(crate) fn collect_idle() {
    let pool = POOL.lock();
    let mut at = pool.idle;
    while !at.is_null() {
        // SAFETY: idle caches belong to the pool, whose lock we hold.
        unsafe {
            (*at).flush();
            (*at).give_up_parked();
            at = (*at).next_idle;
        }
    }
}

/// Calls `f` on every cache, in use or idle, under the pool's lock: `f` may touch only what
/// a cache shares with other threads (its stash, under the stash's own lock).
pub(crate) fn for_each_cache(mut f: impl FnMut(&Cache)) {
    let pool = POOL.lock();
    let mut at = pool.all;
    while !at.is_null() {
        // SAFETY: caches are never unmapped; `next_all` is written once, under this lock.
        unsafe {
            f(&*at);
            at = (*at).next_all;
        }
    }
}

/// (caches ever made, caches idle, bytes mapped for caches).
pub(crate) fn stats() -> (usize, usize, usize) {
    let pool = POOL.lock();
    (pool.caches, pool.idle_count, pool.chunks.mapped)
}

pub(crate) fn raw_lock() -> &'static RawLock {
    POOL.raw()
}

/// Metadata carved from chunks mapped for it and never unmapped (caches here, per-CPU
/// threads' span memos in `percpu/memo.rs`); its owner keeps it under a lock.
#[derive(Debug)]
pub(crate) struct Chunks {
    /// Uncarved room in the current chunk.
    next: usize,
    end: usize,
    chunk_bytes: usize,
    /// Bytes mapped so far.
    pub(crate) mapped: usize,
}

impl Chunks {
    /// No chunk yet; each maps `chunk_bytes` (a multiple of the page size).
    pub(crate) const fn new(chunk_bytes: usize) -> Chunks {
        Chunks {
            next: 0,
            end: 0,
            chunk_bytes,
            mapped: 0,
        }
    }

    /// Room for a `T` (aligned to at most a page), zeroed; null when the OS refuses memory.
    pub(crate) fn carve<T>(&mut self) -> *mut T {
        let size = size_of::<T>().next_multiple_of(align_of::<T>());
        if self.next + size > self.end {
            let Ok(chunk) = mem::reserve(self.chunk_bytes, mem::page_size()) else {
                return ptr::null_mut();
            };
            self.next = chunk.as_ptr() as usize;
            self.end = self.next + self.chunk_bytes;
            self.mapped += self.chunk_bytes;
            tessera_span::commit::commit(self.chunk_bytes);
        }
        let at = self.next as *mut T;
        self.next += size;
        at
    }
}
