//! A mutex that parks coroutines. Uncontended it is one CAS to lock and one to unlock;
//! contended, waiters queue FIFO and `unlock` hands the lock straight to the first one
//! (Go's sync.Mutex "starvation mode" behaviour, always): no waiter starves, at the cost of
//! one switch per hand-off.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex as StdMutex;

use crate::coroutine::WaitReason;
use crate::wait::{Token, WaitList};

const UNLOCKED: u8 = 0;
const LOCKED: u8 = 1;
/// Locked, and waiters may be queued: unlock must look at the queue.
const CONTENDED: u8 = 2;

/// A mutual-exclusion lock that parks the coroutine (not the thread) while it waits.
pub struct Mutex<T: ?Sized> {
    state: AtomicU8,
    waiters: StdMutex<WaitList>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises access to `value`; T: Send lets it be used from any thread.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T: ?Sized> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mutex")
            .field("locked", &(self.state.load(Ordering::Relaxed) != UNLOCKED))
            .finish()
    }
}

/// Holds the lock; unlocks on drop.
pub struct MutexGuard<'a, T: ?Sized> {
    m: &'a Mutex<T>,
}

impl<T: ?Sized> core::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MutexGuard")
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex.
    pub const fn new(v: T) -> Self {
        Self {
            state: AtomicU8::new(UNLOCKED),
            waiters: StdMutex::new(WaitList::new()),
            value: UnsafeCell::new(v),
        }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, parking the coroutine while another holds the lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return MutexGuard { m: self };
        }
        self.lock_slow()
    }

    #[cold]
    fn lock_slow(&self) -> MutexGuard<'_, T> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Under the waiter lock, mark contended; if it was unlocked meanwhile, we own it.
        if self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
            if w.is_empty() {
                self.state.store(LOCKED, Ordering::Relaxed);
            }
            return MutexGuard { m: self };
        }
        let t = Token::for_current();
        w.push(t.clone());
        drop(w);
        // `unlock` passes ownership to us when it claims our token.
        // SAFETY: `for_current` made the token for this coroutine or thread.
        unsafe { t.wait(WaitReason::Mutex) };
        MutexGuard { m: self }
    }

    /// Locks if free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| MutexGuard { m: self })
    }

    /// The value, through a unique borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        match w.claim_one() {
            Some(t) => {
                // Ownership passes to `t`; keep CONTENDED if more may wait.
                let s = if w.is_empty() { LOCKED } else { CONTENDED };
                self.state.store(s, Ordering::Release);
                drop(w);
                // SAFETY: `claim_one` claimed it; notified once, here.
                unsafe { t.notify() };
            }
            None => {
                self.state.store(UNLOCKED, Ordering::Release);
            }
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.m.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, exclusively.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}
