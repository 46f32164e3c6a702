//! The one lock type of the memory system: a word-sized futex lock that never allocates.
//!
//! `std::sync::Mutex` is off limits on the allocator's path (ARCHITECTURE.md#re-entrancy), and
//! a plain spinlock burns the other core when a holder is preempted on a 2-vCPU VM. This is
//! the classic three-state futex mutex (0 free, 1 held, 2 held with waiters): the uncontended
//! path is one CAS to lock and one swap to unlock; contenders spin briefly, then sleep.
//!
//! Fork: `force_unlock` exists for the child side of `pthread_atfork`, where the parent's
//! prepare handler took every lock and the child, now single-threaded, must free them.

use core::cell::UnsafeCell;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A futex mutex without data; see the module comment.
pub struct RawLock {
    state: AtomicU32,
}

impl fmt::Debug for RawLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawLock")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    /// An unlocked lock, usable in a `static`.
    pub const fn new() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    /// Takes the lock.
    #[inline]
    pub fn lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    fn lock_contended(&self) {
        // Short spin: critical sections here are a few hundred nanoseconds.
        for _ in 0..64 {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED && self.try_lock() {
                return;
            }
        }
        // Announce a waiter, then sleep until the holder hands over.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            crate::futex::wait(&self.state, CONTENDED, None);
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    #[inline]
    pub unsafe fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            crate::futex::wake(&self.state, 1);
        }
    }

    /// Marks the lock free without waking anybody.
    ///
    /// # Safety
    /// Only for the child of `fork`, which has one thread and inherited the lock taken by the
    /// parent's prepare handler.
    pub unsafe fn force_unlock(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }
}

/// A `RawLock` guarding a value; usable in statics (`const fn new`).
pub struct Locked<T> {
    lock: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`, so sharing the wrapper only ever
// hands `&mut T` to one thread at a time; `T: Send` is what moving that access needs.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locked")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl<T> Locked<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: RawLock::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        self.lock.lock();
        Guard { owner: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        // Not `then_some(Guard { .. })`: its argument is built whether or not the lock was
        // taken, and a guard dropped unlocks — another thread's lock, when it was held.
        if self.lock.try_lock() {
            Some(Guard { owner: self })
        } else {
            None
        }
    }

    /// The lock itself, for the fork handlers that take and release locks in bulk.
    pub fn raw(&self) -> &RawLock {
        &self.lock
    }

    /// The value without locking.
    ///
    /// # Safety
    /// The caller must hold `raw()` (taken by hand) or otherwise exclude every other access.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unchecked(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's contract.
        unsafe { &mut *self.value.get() }
    }
}

/// Proof of holding a `Locked`; unlocks on drop.
pub struct Guard<'a, T> {
    owner: &'a Locked<T>,
}

impl<T> fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Guard")
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.owner.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut self` is unique.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a guard is created only by `lock`, which took the lock.
        unsafe { self.owner.lock.unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    /// A failed `try_lock` leaves the holder's lock held: it once built a guard for the
    /// `None` case and dropped it, which unlocked the holder's lock (a cache's stash was then
    /// drained by the purger while its owner was using it).
    #[test]
    fn a_failed_try_lock_leaves_the_lock_held() {
        let shared = Locked::new(0u64);
        let held = shared.lock();
        assert!(shared.try_lock().is_none());
        assert!(
            shared.try_lock().is_none(),
            "the first try_lock released the lock"
        );
        assert!(!shared.raw().try_lock());
        drop(held);
        assert!(shared.try_lock().is_some());
    }

    #[test]
    fn counts_under_contention() {
        let shared = Arc::new(Locked::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        *shared.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*shared.lock(), 200_000);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = RawLock::new();
        lock.lock();
        assert!(!lock.try_lock());
        // SAFETY: held just above.
        unsafe { lock.unlock() };
        assert!(lock.try_lock());
        // SAFETY: held by the successful try_lock.
        unsafe { lock.unlock() };
    }
}
