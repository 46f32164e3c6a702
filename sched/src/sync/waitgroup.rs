//! Go's sync.WaitGroup: `add` before starting work, `done` when a piece finishes, `wait`
//! parks until the count is zero.

use std::sync::Mutex as StdMutex;

use crate::coroutine::WaitReason;
use crate::wait::{Token, WaitList};

#[derive(Debug)]
struct Inner {
    count: usize,
    waiters: WaitList,
}

/// Waits for a collection of coroutines to finish.
#[derive(Debug)]
pub struct WaitGroup {
    inner: StdMutex<Inner>,
}

impl Default for WaitGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitGroup {
    /// A group with count zero.
    pub const fn new() -> Self {
        Self {
            inner: StdMutex::new(Inner {
                count: 0,
                waiters: WaitList::new(),
            }),
        }
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).count += n;
    }

    /// Subtracts one; at zero, wakes every waiter.
    ///
    /// # Panics
    /// If the count is already zero (as Go's "negative WaitGroup counter").
    pub fn done(&self) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        assert!(i.count > 0, "WaitGroup::done with a zero count");
        i.count -= 1;
        if i.count == 0 {
            let ws = i.waiters.claim_all();
            drop(i);
            for w in ws {
                // SAFETY: `claim_all` claimed each; notified once, here.
                unsafe { w.notify() };
            }
        }
    }

    /// Parks until the count is zero.
    pub fn wait(&self) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.count == 0 {
            return;
        }
        let t = Token::for_current();
        i.waiters.push(t.clone());
        drop(i);
        // SAFETY: `for_current` made the token for this coroutine or thread.
        unsafe { t.wait(WaitReason::WaitGroup) };
    }
}
