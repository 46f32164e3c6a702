//! The global run queue (Go's `sched.runq`): where Gs go when a P's ring overflows, when
//! they are made runnable by a thread that holds no P (the netpoller or sysmon, a plain thread
//! sending on a channel, `block_on`), and when they are spawned from outside the runtime.
//!
//! A mutex around a deque, as in Go: it is off the hot path (Ps look here every 61 ticks
//! and when their own ring is empty), and batches keep the lock traffic low. `len` is an
//! atomic so the 61-tick check and the idle recheck cost no lock when it is empty.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::coroutine::GRef;

#[derive(Debug, Default)]
pub(crate) struct GlobalQueue {
    len: AtomicUsize,
    queue: Mutex<VecDeque<GRef>>,
}

impl GlobalQueue {
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn push(&self, g: GRef) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(g);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    pub(crate) fn push_batch(&self, batch: &[GRef]) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(batch.iter().copied());
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// Takes up to `max` Gs: the first is returned, the rest go to `rest` (the caller's
    /// ring). Go's globrunqget takes `len / gomaxprocs + 1`, so one P does not hoard
    /// the whole queue while others are idle.
    pub(crate) fn pop_batch(
        &self,
        procs: usize,
        max: usize,
        rest: &mut dyn FnMut(GRef),
    ) -> Option<GRef> {
        if self.len() == 0 {
            return None;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = (q.len() / procs.max(1) + 1).min(q.len()).min(max.max(1));
        let first = q.pop_front();
        for _ in 1..n {
            match q.pop_front() {
                Some(g) => rest(g),
                None => break,
            }
        }
        self.len.store(q.len(), Ordering::SeqCst);
        first
    }

    /// Empties the queue (shutdown).
    pub(crate) fn drain(&self) -> Vec<GRef> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.len.store(0, Ordering::SeqCst);
        q.drain(..).collect()
    }
}
