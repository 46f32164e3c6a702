//! The futex parker an idle M (and a plain thread waiting on a channel) sleeps on.
//!
//! One word with three states. `unpark` before `park` leaves a permit, so a wake-up that
//! races ahead of the sleeper is never lost: the sleeper consumes the permit and returns at
//! once. This is the protocol Go's `notesleep`/`notewakeup` and std's futex parker use.

use std::time::{Duration, Instant};

use crate::shim::{AtomicU32, fence};
use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

const EMPTY: u32 = 0;
const NOTIFIED: u32 = 1;
const PARKED: u32 = 2;

/// A one-permit futex parker.
#[derive(Debug)]
pub(crate) struct Parker {
    state: AtomicU32,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU32::new(EMPTY),
        }
    }

    /// Sleeps until `unpark` (or a pending permit), or until `timeout` passes. Consumes the
    /// permit. May return early; callers re-check their condition.
    pub(crate) fn park_timeout(&self, timeout: Option<Duration>) {
        // A pending permit: take it and go.
        if self
            .state
            .compare_exchange(NOTIFIED, EMPTY, Acquire, Acquire)
            .is_ok()
        {
            return;
        }
        if self
            .state
            .compare_exchange(EMPTY, PARKED, Acquire, Acquire)
            .is_err()
        {
            // Only the owner parks, so the state was NOTIFIED just now: consume it.
            self.state.store(EMPTY, SeqCst);
            return;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Timed out: withdraw, but keep a permit that raced in.
                        self.state.swap(EMPTY, Acquire);
                        return;
                    }
                    Some(d - now)
                }
                None => None,
            };
            crate::sys::futex_wait(&self.state, PARKED, left);
            if self
                .state
                .compare_exchange(NOTIFIED, EMPTY, Acquire, Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    pub(crate) fn park(&self) {
        self.park_timeout(None);
    }

    /// Leaves a permit and wakes the sleeper if there is one.
    pub(crate) fn unpark(&self) {
        fence(SeqCst);
        if self.state.swap(NOTIFIED, Release) == PARKED {
            crate::sys::futex_wake(&self.state, 1);
        }
    }
}

#[cfg(all(test, tessera_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};

    /// A wake-up sent before, during or after `park` is never lost: the sleeper always sees
    /// the flag set by the waker.
    #[test]
    fn loom_parker_no_lost_wakeup() {
        loom::model(|| {
            let p = Arc::new(Parker::new());
            let flag = Arc::new(AtomicBool::new(false));
            let (p2, f2) = (p.clone(), flag.clone());
            let t = loom::thread::spawn(move || {
                f2.store(true, Ordering::Release);
                p2.unpark();
            });
            while !flag.load(Ordering::Acquire) {
                p.park();
            }
            t.join().unwrap();
        });
    }
}
