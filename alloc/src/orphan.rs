//! The orphan cache: where a thread allocates after its exit handler has run
//! (`thread::exited`).
//!
//! One cache for the whole process, taken from the pool on first use and kept, used under a
//! lock. Late allocations are rare (glibc's per-thread buffers, other libraries' TLS
//! destructors that run after ours), so the lock costs nothing that matters; what matters is
//! that no cache is born that no thread will ever give back.

use core::ptr;

use tessera_sys::lock::{Locked, RawLock};

use crate::cache::Cache;
use crate::pool;

struct Orphan(*mut Cache);

// SAFETY: the cache is pool memory that is never unmapped; the lock serialises its use.
unsafe impl Send for Orphan {}

static ORPHAN: Locked<Orphan> = Locked::new(Orphan(ptr::null_mut()));

/// Runs `f` on the orphan cache under its lock. Null when the OS refuses a cache.
pub(crate) fn with(f: impl FnOnce(&mut Cache) -> *mut u8) -> *mut u8 {
    let mut orphan = ORPHAN.lock();
    if orphan.0.is_null() {
        orphan.0 = pool::acquire();
        if orphan.0.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: the orphan cache is valid, and the lock we hold makes it ours alone.
    f(unsafe { &mut *orphan.0 })
}

/// The lock, for the fork handlers (taken before the pool's: `with` nests them so).
pub(crate) fn raw_lock() -> &'static RawLock {
    ORPHAN.raw()
}
