//! A small futex mutex with manual `lock`/`unlock`, for channel state: `select!` must hold
//! the locks of all its channels at once (in address order, as Go's selectgo `sellock`),
//! which guard-based locks over a dynamic set of channel types cannot express.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use core::sync::atomic::AtomicU32;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

#[derive(Debug)]
pub(crate) struct RawLock {
    state: AtomicU32,
}

impl RawLock {
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    pub(crate) fn lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_ok()
        {
            return;
        }
        // Critical sections are a few dozen instructions: spin a little before sleeping.
        for _ in 0..64 {
            core::hint::spin_loop();
            if self.state.load(Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        while self.state.swap(CONTENDED, Acquire) != UNLOCKED {
            crate::sys::futex_wait_std(&self.state, CONTENDED);
        }
    }

    pub(crate) fn unlock(&self) {
        if self.state.swap(UNLOCKED, Release) == CONTENDED {
            crate::sys::futex_wake_std(&self.state);
        }
    }
}
