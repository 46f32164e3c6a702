//! A P's local run queue: a lock-free ring of 256 plus a `runnext` slot (Go's `runq`,
//! `runqhead`, `runqtail`, `runnext` in proc.go).
//!
//! - Only the owner (the M holding the P) pushes, so `tail` has a single writer: a push is a
//!   store into the slot and a release store of `tail`.
//! - Anybody may take from the head with a CAS: the owner in `pop`, idle Ps in `steal_into`.
//!   A slot is read *before* the CAS that claims it; the owner never overwrites a slot until
//!   `head` has moved past it (it compares against `head` before writing), so a stale read
//!   is caught by a failed CAS.
//! - `runnext` holds the G made runnable most recently by the running G (a woken receiver, a
//!   new coroutine): it runs next and inherits the time slice, which is what makes a
//!   ping-pong between two coroutines stay on one P. When that slice is over
//!   (machine/find_work.rs, "Time slices"), `demote_runnext` sends it to the back of the
//!   ring. Thieves take it only on their last pass (`steal_runnext`), so a P that is about
//!   to run it is not robbed (Go: runqsteal's `stealRunNextG`).
//! - When the ring is full the owner moves half of it plus the new G to the global queue in
//!   one batch (Go's runqputslow), which both bounds the ring and spreads load.
//! - The queue of a runtime's only P has no thieves (nobody steals on one P:
//!   machine/find_work.rs), so its owner takes from the head and swaps `runnext` with plain
//!   loads and stores instead of read-modify-writes (`alone`): two locked instructions
//!   fewer per hand-off of a channel ping-pong. The P changes hands between Ms only through
//!   the idle list or a blocking section's return, which order the new owner after the old.
//!
//! Items are raw pointers; the queue never dereferences them.

use core::ptr;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::shim::{AtomicPtr, AtomicU32};

/// Slots in the ring (Go: `len(p.runq)`).
pub(crate) const RING: usize = 256;
const _: () = assert!(RING.is_power_of_two());

/// A P's local run queue of `*mut T`.
pub(crate) struct RunQueue<T> {
    head: AtomicU32,
    tail: AtomicU32,
    runnext: AtomicPtr<T>,
    ring: Box<[AtomicPtr<T>]>,
    /// Nobody but the owner takes from this queue (module comment).
    alone: bool,
}

impl<T> core::fmt::Debug for RunQueue<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunQueue")
            .field("len", &self.len())
            .finish()
    }
}

impl<T> RunQueue<T> {
    /// A queue that other Ms may steal from.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_thieves(true)
    }

    /// A queue that other Ms may steal from (`steal_from`) if `thieves`; without, only its
    /// owner ever takes from it (the only P of a runtime).
    pub(crate) fn with_thieves(thieves: bool) -> Self {
        Self {
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
            runnext: AtomicPtr::new(ptr::null_mut()),
            ring: (0..RING).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
            alone: !thieves,
        }
    }

    #[inline]
    fn slot(&self, i: u32) -> &AtomicPtr<T> {
        &self.ring[i as usize & (RING - 1)]
    }

    /// Items in the ring plus `runnext`; a racy snapshot for anybody but the owner.
    pub(crate) fn len(&self) -> usize {
        let h = self.head.load(Acquire);
        let t = self.tail.load(Acquire);
        let n = t.wrapping_sub(h) as usize;
        n.min(RING) + usize::from(!self.runnext.load(Relaxed).is_null())
    }

    /// (head, tail) of the ring: how many items have ever left and entered it, wrapping.
    /// A racy snapshot for sysmon's backlog watch.
    pub(crate) fn positions(&self) -> (u32, u32) {
        (self.head.load(Acquire), self.tail.load(Acquire))
    }

    /// Owner only: whether the ring (not counting `runnext`) is empty.
    #[inline]
    pub(crate) fn ring_is_empty(&self) -> bool {
        self.head.load(Acquire) == self.tail.load(Relaxed)
    }

    /// Whether the queue looks empty (racy unless called by the owner).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Owner only. Puts `item` in `runnext` (kicking the old one to the tail) when `next`,
    /// else at the tail. A full ring hands half of itself and the item to `overflow`.
    #[inline]
    pub(crate) fn push(&self, item: *mut T, next: bool, overflow: &mut dyn FnMut(&[*mut T])) {
        let mut item = item;
        if next {
            let old = if self.alone {
                let old = self.runnext.load(Relaxed);
                self.runnext.store(item, Release);
                old
            } else {
                self.runnext.swap(item, Release)
            };
            if old.is_null() {
                return;
            }
            item = old;
        }
        loop {
            let h = self.head.load(Acquire);
            let t = self.tail.load(Relaxed);
            if (t.wrapping_sub(h) as usize) < RING {
                self.slot(t).store(item, Relaxed);
                self.tail.store(t.wrapping_add(1), Release);
                return;
            }
            if self.push_slow(item, h, t, overflow) {
                return;
            }
            // A thief moved `head` meanwhile: there is room now.
        }
    }

    /// Owner only, and only while the ring has room for all of `items` (it is empty, say):
    /// appends them with one release of `tail`.
    pub(crate) fn push_many(&self, items: &[*mut T]) {
        let t = self.tail.load(Relaxed);
        assert!(t.wrapping_sub(self.head.load(Acquire)) as usize + items.len() <= RING);
        for (i, &item) in items.iter().enumerate() {
            self.slot(t.wrapping_add(i as u32)).store(item, Relaxed);
        }
        self.tail.store(t.wrapping_add(items.len() as u32), Release);
    }

    /// Owner only: moves the older half of a full ring and `item` to `overflow`.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, item: *mut T, h: u32, t: u32, overflow: &mut dyn FnMut(&[*mut T])) -> bool {
        const HALF: usize = RING / 2;
        debug_assert_eq!(t.wrapping_sub(h) as usize, RING);
        let mut batch = [ptr::null_mut(); HALF + 1];
        for (i, b) in batch.iter_mut().take(HALF).enumerate() {
            *b = self.slot(h.wrapping_add(i as u32)).load(Relaxed);
        }
        if self
            .head
            .compare_exchange(h, h.wrapping_add(HALF as u32), Release, Relaxed)
            .is_err()
        {
            return false;
        }
        batch[HALF] = item;
        overflow(&batch);
        true
    }

    /// Owner only: `runnext` first, then the head of the ring.
    #[inline]
    pub(crate) fn pop(&self) -> Option<*mut T> {
        self.pop_inheriting().map(|(item, _)| item)
    }

    /// Owner only: as `pop`, and whether the item came from `runnext`, where it inherits
    /// the time slice of the G that put it there (Go's `runqget` and `inheritTime`).
    #[inline]
    pub(crate) fn pop_inheriting(&self) -> Option<(*mut T, bool)> {
        if let Some(next) = self.take_runnext() {
            return Some((next, true));
        }
        self.pop_ring().map(|item| (item, false))
    }

    /// Owner only: empties `runnext`.
    #[inline]
    fn take_runnext(&self) -> Option<*mut T> {
        let next = self.runnext.load(Relaxed);
        if next.is_null() {
            return None;
        }
        if self.alone {
            self.runnext.store(ptr::null_mut(), Relaxed);
            return Some(next);
        }
        self.runnext
            .compare_exchange(next, ptr::null_mut(), Acquire, Relaxed)
            .is_ok()
            .then_some(next)
    }

    /// Owner only: moves `runnext` to the tail of the ring, so that what waits in the ring
    /// runs first (the time slice of the Gs handing `runnext` to each other is over).
    pub(crate) fn demote_runnext(&self, overflow: &mut dyn FnMut(&[*mut T])) {
        if let Some(next) = self.take_runnext() {
            self.push(next, false, overflow);
        }
    }

    /// Owner only: the head of the ring.
    #[inline]
    fn pop_ring(&self) -> Option<*mut T> {
        loop {
            let h = self.head.load(Acquire);
            let t = self.tail.load(Relaxed);
            if t == h {
                return None;
            }
            let item = self.slot(h).load(Relaxed);
            if self.alone {
                self.head.store(h.wrapping_add(1), Release);
                return Some(item);
            }
            if self
                .head
                .compare_exchange(h, h.wrapping_add(1), Release, Relaxed)
                .is_ok()
            {
                return Some(item);
            }
        }
    }

    /// Any thread: claims half of the ring (rounded up) into `out`, or `runnext` alone when
    /// the ring is empty and `steal_runnext`. Returns how many it took (Go's runqgrab).
    fn grab(&self, out: &mut [*mut T; RING / 2], steal_runnext: bool) -> usize {
        loop {
            let h = self.head.load(Acquire);
            let t = self.tail.load(Acquire);
            let n = t.wrapping_sub(h) as usize;
            let n = n - n / 2;
            if n == 0 {
                if steal_runnext {
                    let mut next = self.runnext.load(Acquire);
                    if !next.is_null() {
                        // The victim has probably just readied `next` and is about to switch
                        // to it (a channel hand-off takes well under a microsecond). Give it
                        // ~3 µs before stealing, or the two coroutines of a ping-pong would
                        // keep being pulled apart onto two Ps (proc.go runqgrab: usleep(3)).
                        runnext_grace(&self.runnext, next);
                        next = self.runnext.load(Acquire);
                    }
                    if !next.is_null()
                        && self
                            .runnext
                            .compare_exchange(next, ptr::null_mut(), Acquire, Relaxed)
                            .is_ok()
                    {
                        out[0] = next;
                        return 1;
                    }
                }
                return 0;
            }
            if n > RING / 2 {
                // `h` and `t` were read at different times: try again.
                continue;
            }
            for (i, o) in out.iter_mut().take(n).enumerate() {
                *o = self.slot(h.wrapping_add(i as u32)).load(Relaxed);
            }
            if self
                .head
                .compare_exchange(h, h.wrapping_add(n as u32), Release, Relaxed)
                .is_ok()
            {
                return n;
            }
        }
    }

    /// Called by the owner of `self` (the thief's P, whose ring is empty): steals half of
    /// `victim`'s queue, keeps all but one in its own ring and returns that one to run.
    pub(crate) fn steal_from(&self, victim: &RunQueue<T>, steal_runnext: bool) -> Option<*mut T> {
        debug_assert!(!victim.alone, "a queue without thieves is stolen from");
        let mut batch = [ptr::null_mut(); RING / 2];
        let n = victim.grab(&mut batch, steal_runnext);
        if n == 0 {
            return None;
        }
        let first = batch[0];
        let t = self.tail.load(Relaxed);
        let h = self.head.load(Acquire);
        // Our ring was empty when we decided to steal and only we push, so n - 1 < RING / 2
        // slots always fit.
        debug_assert!(t.wrapping_sub(h) as usize + n - 1 <= RING);
        for (i, item) in batch.iter().enumerate().take(n).skip(1) {
            self.slot(t.wrapping_add(i as u32 - 1))
                .store(*item, Relaxed);
        }
        self.tail.store(t.wrapping_add(n as u32 - 1), Release);
        Some(first)
    }
}

/// Spins for up to ~3 µs while `slot` still holds `item`.
#[cfg(not(tessera_loom))]
fn runnext_grace<T>(slot: &AtomicPtr<T>, item: *mut T) {
    let start = std::time::Instant::now();
    while slot.load(Relaxed) == item {
        for _ in 0..32 {
            core::hint::spin_loop();
        }
        if start.elapsed() >= std::time::Duration::from_micros(3) {
            break;
        }
    }
}

#[cfg(tessera_loom)]
fn runnext_grace<T>(_slot: &AtomicPtr<T>, _item: *mut T) {}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    fn p(i: usize) -> *mut u8 {
        (i * 8 + 8) as *mut u8
    }

    /// With and without thieves (the only P's queue takes without read-modify-writes).
    #[test]
    fn fifo_and_runnext() {
        for thieves in [true, false] {
            let q = RunQueue::<u8>::with_thieves(thieves);
            let mut none = |_: &[*mut u8]| panic!("no overflow");
            q.push(p(1), false, &mut none);
            q.push(p(2), false, &mut none);
            q.push(p(3), true, &mut none);
            q.push(p(4), true, &mut none); // kicks 3 to the tail
            let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
            assert_eq!(got, vec![p(4), p(1), p(2), p(3)], "thieves: {thieves}");
            assert!(q.is_empty());
            // The ring wraps: more pushes and pops than it has slots.
            for i in 0..3 * RING {
                let next = i % 2 == 0;
                q.push(p(i), false, &mut none);
                q.push(p(i + 1), next, &mut none);
                let (first, second) = if next {
                    ((p(i + 1), true), (p(i), false))
                } else {
                    ((p(i), false), (p(i + 1), false))
                };
                assert_eq!(q.pop_inheriting(), Some(first));
                assert_eq!(q.pop_inheriting(), Some(second));
            }
            assert!(q.is_empty());
        }
    }

    #[test]
    fn demoted_runnext_goes_behind_the_ring() {
        let q = RunQueue::<u8>::new();
        let mut none = |_: &[*mut u8]| panic!("no overflow");
        q.push(p(1), false, &mut none);
        q.push(p(2), true, &mut none);
        q.demote_runnext(&mut none);
        assert_eq!(q.pop_inheriting(), Some((p(1), false)));
        assert_eq!(q.pop_inheriting(), Some((p(2), false)));
        q.push(p(3), true, &mut none);
        assert_eq!(q.pop_inheriting(), Some((p(3), true)));
        // Nothing in runnext: nothing moves.
        q.demote_runnext(&mut none);
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn overflow_moves_half_plus_one() {
        let q = RunQueue::<u8>::new();
        let mut spilled = Vec::new();
        for i in 0..=RING {
            q.push(p(i), false, &mut |b: &[*mut u8]| {
                spilled.extend_from_slice(b)
            });
        }
        assert_eq!(spilled.len(), RING / 2 + 1);
        assert_eq!(spilled[0], p(0));
        assert_eq!(q.len(), RING / 2);
    }

    #[test]
    fn steal_takes_half_and_runnext_last() {
        let victim = RunQueue::<u8>::new();
        let thief = RunQueue::<u8>::new();
        let mut none = |_: &[*mut u8]| panic!("no overflow");
        for i in 0..10 {
            victim.push(p(i), false, &mut none);
        }
        victim.push(p(99), true, &mut none);
        assert_eq!(thief.steal_from(&victim, false), Some(p(0)));
        assert_eq!(thief.len(), 4);
        assert_eq!(victim.len(), 6);
        // Drain the ring by stealing; only a last-pass steal takes runnext.
        let other = RunQueue::<u8>::new();
        while other.steal_from(&victim, false).is_some() {
            while other.pop().is_some() {}
        }
        assert_eq!(victim.len(), 1);
        assert_eq!(other.steal_from(&victim, true), Some(p(99)));
    }
}

#[cfg(all(test, tessera_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn p(i: usize) -> *mut u8 {
        (i * 8 + 8) as *mut u8
    }

    /// The owner pushes and pops while a thief steals: every item comes out exactly once.
    #[test]
    fn loom_runqueue_steal_vs_pop() {
        loom::model(|| {
            let q = Arc::new(RunQueue::<u8>::new());
            let mut none = |_: &[*mut u8]| unreachable!();
            for i in 0..3 {
                q.push(p(i), false, &mut none);
            }
            q.push(p(3), true, &mut none);
            let q2 = q.clone();
            let thief = loom::thread::spawn(move || {
                let mine = RunQueue::<u8>::new();
                let mut got = Vec::new();
                if let Some(first) = mine.steal_from(&q2, true) {
                    got.push(first as usize);
                    while let Some(x) = mine.pop() {
                        got.push(x as usize);
                    }
                }
                got
            });
            let mut got = Vec::new();
            while let Some(x) = q.pop() {
                got.push(x as usize);
            }
            let stolen = thief.join().unwrap();
            got.extend(stolen);
            got.sort_unstable();
            assert_eq!(got, (0..4).map(|i| p(i) as usize).collect::<Vec<_>>());
        });
    }
}
