//! Go's sync.Once: the first caller runs the function (it may park inside); concurrent
//! callers park until it has finished. If the function panics, the next caller runs it.

use core::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex as StdMutex;

use crate::coroutine::WaitReason;
use crate::wait::{Token, WaitList};

const NEW: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// Runs a function once, parking latecomers until it is done.
#[derive(Debug)]
pub struct Once {
    state: AtomicU8,
    waiters: StdMutex<WaitList>,
}

impl Default for Once {
    fn default() -> Self {
        Self::new()
    }
}

impl Once {
    /// A fresh `Once`.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(NEW),
            waiters: StdMutex::new(WaitList::new()),
        }
    }

    /// Whether the function has completed.
    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Runs `f` if no call has completed yet.
    pub fn call_once(&self, f: impl FnOnce()) {
        let mut f = Some(f);
        loop {
            if self.state.load(Ordering::Acquire) == DONE {
                return;
            }
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            match self.state.load(Ordering::Acquire) {
                DONE => return,
                NEW => {
                    self.state.store(RUNNING, Ordering::Relaxed);
                    drop(w);
                    struct Reset<'a>(&'a Once, bool);
                    impl Drop for Reset<'_> {
                        fn drop(&mut self) {
                            let mut w = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
                            self.0
                                .state
                                .store(if self.1 { DONE } else { NEW }, Ordering::Release);
                            let ws = w.claim_all();
                            drop(w);
                            for t in ws {
                                // SAFETY: `claim_all` claimed each; notified once, here.
                                unsafe { t.notify() };
                            }
                        }
                    }
                    let mut guard = Reset(self, false);
                    (f.take().expect("called once"))();
                    guard.1 = true;
                    return;
                }
                _ => {
                    let t = Token::for_current();
                    w.push(t.clone());
                    drop(w);
                    // SAFETY: `for_current` made the token for this coroutine or thread.
                    unsafe { t.wait(WaitReason::Once) };
                }
            }
        }
    }
}
