//! A counting semaphore (Go's `semacquire`/`semrelease`, x/sync/semaphore): FIFO, so a
//! waiter is never overtaken by later arrivals; `release` hands permits to waiters directly.

use std::sync::Mutex as StdMutex;

use crate::coroutine::WaitReason;
use crate::wait::{Token, WaitList};

#[derive(Debug)]
struct Inner {
    permits: usize,
    waiters: WaitList,
}

/// A counting semaphore that parks coroutines.
#[derive(Debug)]
pub struct Semaphore {
    inner: StdMutex<Inner>,
}

/// A permit; released on drop.
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

impl Semaphore {
    /// A semaphore with `permits` permits.
    pub const fn new(permits: usize) -> Self {
        Self {
            inner: StdMutex::new(Inner {
                permits,
                waiters: WaitList::new(),
            }),
        }
    }

    /// Takes a permit, parking until one is free.
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.permits > 0 && i.waiters.is_empty() {
            i.permits -= 1;
            return SemaphorePermit { sem: self };
        }
        let t = Token::for_current();
        i.waiters.push(t.clone());
        drop(i);
        // `release` handed us its permit when it claimed our token.
        // SAFETY: `for_current` made the token for this coroutine or thread.
        unsafe { t.wait(WaitReason::Semaphore) };
        SemaphorePermit { sem: self }
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.permits > 0 && i.waiters.is_empty() {
            i.permits -= 1;
            Some(SemaphorePermit { sem: self })
        } else {
            None
        }
    }

    /// Adds a permit (waking the first waiter, to whom it goes).
    pub fn release(&self) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match i.waiters.claim_one() {
            Some(t) => {
                drop(i);
                // SAFETY: `claim_one` claimed it; notified once, here.
                unsafe { t.notify() };
            }
            None => i.permits += 1,
        }
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).permits
    }
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken (it will not be released on drop).
    pub fn forget(self) {
        core::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.sem.release();
    }
}
