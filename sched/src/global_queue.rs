//! The global run queue (Go's `sched.runq`): where Gs go when a P's ring overflows, when
//! they are made runnable by a thread that holds no P (the netpoller or sysmon, a plain thread
//! sending on a channel, `block_on`), and when they are spawned from outside the runtime.
//!
//! A mutex around a deque, as in Go: it is off the hot path (Ps look here every 61 ticks
//! and when their own ring is empty), and batches keep the lock traffic low. `len` is an
//! atomic so the 61-tick check and the idle recheck cost no lock when it is empty.
//!
//! Gs readied from a wait that have not run since (a G's wait reason says so: `woken`)
//! wait in a deque of their own, which Ps take from before the rest. They come here when a
//! thread without a P readies them (sysmon firing an overdue timer, the netpoller, a plain
//! thread's channel send), and when a P's ring overflows, which a P firing a heap of timers
//! at once makes it do. The rest may be a backlog of tens of thousands of Gs that have not
//! started (a spawner's overflow); behind it, a woken G waited for all of them: 100,000
//! coroutines sleeping 1–100 ms on 2 Ps had a fifth to a third of their wake-ups fired by
//! sysmon onto this queue, and a few thousand more spilled here by ring overflows; p99 of
//! how late the sleeps ended was 220–250 ms against Go's ~90 ms (issue #17). (Go puts both
//! at the back, FIFO; its sysmon fires no timers, it starts an M for them.) Woken Gs keep
//! their order among themselves (a timer heap fires earliest first), and cannot starve the
//! rest: a batch of two or more takes at least one of the rest, and single takes (the
//! 61-tick check) alternate between the two when both hold Gs (`pop_batch`).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::coroutine::{GRef, WaitReason};
use crate::runqueue::RING;

/// Gs classified per lock in `push_batch`: what a ring's overflow hands over.
const CHUNK: usize = RING / 2 + 1;

/// Whether a RUNNABLE G was readied from a wait and has not run since: its wait reason
/// stays set until it resumes (machine/ready.rs `park_current`), while a new G, a G that
/// yielded and one back from a blocking section have none.
///
/// # Safety
/// `g` is live, RUNNABLE and owned by the caller.
unsafe fn woken(g: GRef) -> bool {
    // SAFETY: per the contract.
    unsafe { (*g).wait_reason.load(Ordering::Relaxed) != WaitReason::None as u8 }
}

/// Moves the first `out.len()` Gs of `q` into `out` with slice copies: iterating over a
/// drain cost ~13 more instructions per G taken (callgrind, spawn-all of 100,000 on one P,
/// whose Gs mostly pass through here: `pop_batch` 12.4M -> 2.9M instructions).
fn take_front(q: &mut VecDeque<GRef>, out: &mut [GRef]) {
    let n = out.len();
    let (a, b) = q.as_slices();
    let from_a = n.min(a.len());
    out[..from_a].copy_from_slice(&a[..from_a]);
    out[from_a..].copy_from_slice(&b[..n - from_a]);
    q.drain(..n);
}

#[derive(Debug, Default)]
pub(crate) struct GlobalQueue {
    len: AtomicUsize,
    /// Gs ever queued and ever taken (wrapping), for sysmon's backlog watch.
    added: AtomicU32,
    taken: AtomicU32,
    queue: Mutex<Queues>,
}

/// The two deques, under one lock.
#[derive(Debug, Default)]
struct Queues {
    /// Gs woken from a wait (`push_woken`): taken first.
    woken: VecDeque<GRef>,
    /// Everything else, in arrival order.
    rest: VecDeque<GRef>,
    /// Whether the next single take from both non-empty deques is the rest's (`pop_batch`).
    rest_turn: bool,
}

impl Queues {
    fn len(&self) -> usize {
        self.woken.len() + self.rest.len()
    }
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

    /// Queues `g` at the back (of the woken Gs if it was readied from a wait).
    ///
    /// # Safety
    /// As for `push_batch`.
    pub(crate) unsafe fn push(&self, g: GRef) {
        // SAFETY: per the contract.
        unsafe { self.push_batch(&[g]) };
    }

    /// Queues `batch` at the back: each G readied from a wait that has not run since
    /// (`woken`) behind the other woken ones, the others behind the rest.
    ///
    /// # Safety
    /// The Gs are live and RUNNABLE, on no run queue, and the caller gives them up.
    pub(crate) unsafe fn push_batch(&self, batch: &[GRef]) {
        // SAFETY: per the contract, every G handed to the closure is live and ours.
        self.push_sorted(batch, |g| unsafe { woken(g) });
    }

    /// `push_batch` with the test for a woken G given: the queue itself never looks at a G.
    fn push_sorted(&self, batch: &[GRef], is_woken: impl Fn(GRef) -> bool) {
        // A ring's overflow (half a ring and one) at a time, classified before the lock:
        // that reads the Gs' records.
        for chunk in batch.chunks(CHUNK) {
            let mut woken = [false; CHUNK];
            let mut any = false;
            for (w, &g) in woken.iter_mut().zip(chunk) {
                *w = is_woken(g);
                any |= *w;
            }
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if any {
                for (&g, &w) in chunk.iter().zip(&woken) {
                    if w { &mut q.woken } else { &mut q.rest }.push_back(g);
                }
            } else {
                q.rest.extend(chunk.iter().copied());
            }
            self.note_added(&q, chunk.len());
        }
    }

    fn note_added(&self, q: &Queues, n: usize) {
        self.added.fetch_add(n as u32, Ordering::Relaxed);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    fn note_taken(&self, q: &Queues, n: usize) {
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
        // Woken Gs first, but the rest keep moving: a batch of two or more takes at least
        // one of them, and single takes (the 61-tick check) alternate.
        let mut woken = n.min(q.woken.len());
        if woken == n && !q.rest.is_empty() {
            if n > 1 {
                woken -= 1;
            } else {
                let rest_now = q.rest_turn;
                q.rest_turn = !rest_now;
                if rest_now {
                    woken = 0;
                }
            }
        }
        let (from_woken, from_rest) = out[..n].split_at_mut(woken);
        take_front(&mut q.woken, from_woken);
        take_front(&mut q.rest, from_rest);
        self.note_taken(&q, n);
        n
    }

    /// Empties the queue (shutdown).
    pub(crate) fn drain(&self) -> Vec<GRef> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Queues { woken, rest, .. } = &mut *q;
        let all: Vec<GRef> = woken.drain(..).chain(rest.drain(..)).collect();
        self.note_taken(&q, all.len());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::G;

    /// Stand-ins for Gs (never dereferenced): odd ones are woken.
    fn g(i: usize) -> GRef {
        core::ptr::without_provenance_mut::<G>(i * 64)
    }

    fn odd_is_woken(x: GRef) -> bool {
        (x.addr() / 64) % 2 == 1
    }

    fn take(q: &GlobalQueue, procs: usize, max: usize) -> Vec<usize> {
        let mut out = vec![core::ptr::null_mut(); max];
        let n = q.pop_batch(procs, &mut out);
        out[..n].iter().map(|x| x.addr() / 64).collect()
    }

    #[test]
    fn woken_gs_go_first_in_order() {
        let q = GlobalQueue::default();
        let batch: Vec<GRef> = (0..8).map(g).collect();
        q.push_sorted(&batch, odd_is_woken);
        assert_eq!(q.len(), 8);
        assert_eq!(take(&q, 1, 16), [1, 3, 5, 7, 0, 2, 4, 6]);
        assert_eq!(q.len(), 0);
        assert_eq!(q.counts(), (8, 8));
    }

    #[test]
    fn the_rest_is_not_starved() {
        let q = GlobalQueue::default();
        // Many woken Gs, two others behind them.
        let batch: Vec<GRef> = [1, 3, 5, 7, 9, 11, 0, 2].into_iter().map(g).collect();
        q.push_sorted(&batch, odd_is_woken);
        // A batch takes at least one of the rest.
        assert_eq!(take(&q, 4, 2), [1, 0]);
        // Single takes alternate, woken first.
        assert_eq!(take(&q, 1, 1), [3]);
        assert_eq!(take(&q, 1, 1), [2]);
        // Only woken ones are left: they are taken one after the other.
        assert_eq!(take(&q, 1, 1), [5]);
        assert_eq!(take(&q, 1, 1), [7]);
        assert_eq!(take(&q, 2, 8), [9, 11]);
    }

    #[test]
    fn a_long_batch_is_sorted_whole() {
        let q = GlobalQueue::default();
        let batch: Vec<GRef> = (0..3 * CHUNK).map(g).collect();
        q.push_sorted(&batch, odd_is_woken);
        let mut all = Vec::new();
        loop {
            let got = take(&q, 1, RING / 2);
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        let mut want: Vec<usize> = (0..3 * CHUNK).collect();
        all.sort_unstable();
        want.sort_unstable();
        assert_eq!(all, want, "every G comes out once");
    }
}
