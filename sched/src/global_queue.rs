//! The global run queue (Go's `sched.runq`): where Gs go when a P's ring overflows, when
//! they are made runnable by a thread that holds no P (the netpoller or sysmon, a plain thread
//! sending on a channel, `block_on`), and when they are spawned from outside the runtime.
//!
//! A mutex around a deque, as in Go: it is off the hot path (Ps look here every 61 ticks
//! and when their own ring is empty), and batches keep the lock traffic low. `len` is an
//! atomic so the 61-tick check and the idle recheck cost no lock when it is empty.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::coroutine::GRef;

#[derive(Debug, Default)]
pub(crate) struct GlobalQueue {
    len: AtomicUsize,
    /// Gs ever queued and ever taken (wrapping), for sysmon's backlog watch.
    added: AtomicU32,
    taken: AtomicU32,
    queue: Mutex<VecDeque<GRef>>,
}

impl GlobalQueue {
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// (taken, added): how many Gs have ever left and entered the queue, wrapping.
    pub(crate) fn counts(&self) -> (u32, u32) {
        (
            self.taken.load(Ordering::Relaxed),
            self.added.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn push(&self, g: GRef) {
        self.push_batch(&[g]);
    }

    pub(crate) fn push_batch(&self, batch: &[GRef]) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(batch.iter().copied());
        self.added.fetch_add(batch.len() as u32, Ordering::Relaxed);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    fn note_taken(&self, q: &VecDeque<GRef>, n: usize) {
        self.taken.fetch_add(n as u32, Ordering::Relaxed);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// Takes Gs into `out` (as many as fit, at most `len / procs + 1`: Go's globrunqget,
    /// so one P does not hoard the whole queue while others are idle). Returns how many.
    pub(crate) fn pop_batch(&self, procs: usize, out: &mut [GRef]) -> usize {
        if self.len() == 0 {
            return 0;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = (q.len() / procs.max(1) + 1).min(q.len()).min(out.len());
        for (o, g) in out.iter_mut().zip(q.drain(..n)) {
            *o = g;
        }
        self.note_taken(&q, n);
        n
    }

    /// Empties the queue (shutdown).
    pub(crate) fn drain(&self) -> Vec<GRef> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<GRef> = q.drain(..).collect();
        self.note_taken(&q, all.len());
        all
    }
}
