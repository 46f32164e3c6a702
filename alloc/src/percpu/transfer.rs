//! The transfer cache (an idea of tcmalloc's, written here from its design notes): per
//! per-CPU class, one array of pointers to free objects, shared by every id, between the
//! slabs and their back ends.
//!
//! Why: a stack that overflows gives half of itself back, and one that runs dry takes half a
//! stack; through the back ends that moved every block one at a time (a page-map lookup and
//! a list push for each block given back, a list pop, so a cache miss on the block, for each
//! one taken). A program whose working set of one class exceeds a stack (glibc-simple: 4,096
//! blocks of one size allocated, then freed) paid that on every block: 17.1 ns an operation
//! per-CPU against 7.4 with thread caches at one thread. Here a batch is a copy of pointers:
//! a flush puts the popped pointers in, a refill takes pointers out, and neither touches the
//! blocks, which keep the freed-block marker their push wrote (so a block here is checked as
//! a stacked one is: its marker when it is next popped, `slab::holds`' search extended here
//! for a double free).
//!
//! Bounds: the arrays hold at most `MAX_BYTES` of objects together (a budget shared by the
//! classes, `HELD`), a class at most `MAX_SLOTS` objects; whatever the number of CPUs or
//! threads. What does not fit goes through the back ends, as before. Shared rather than per
//! class because a class that overflows is the one that needs room: with 1 MiB per class,
//! glibc-simple's rounds of 4,096 blocks of 1 KiB put a quarter of each round through the
//! transfer cache and the rest through the back ends, and that round ran slower than with
//! no transfer cache at all (27 against 18 CPU ns an operation): the back ends' lists,
//! refilled out of order while the transfer cache held a quarter of their spans' blocks,
//! were walked a cold block at a time. Idle contents go back to a back end as the slabs' do
//! (`drain_idle`: untouched for half a decay time, or everything when urgent, at
//! `tessera::collect()`, at a crossed memory limit).
//!
//! Concurrency: each class's array has a lock (`RawLock`), and only its holder changes the
//! array's length or slots. The holders are the flushes, refills and emptyings of
//! `percpu/mod.rs`, which take it only while the thread has a current cache (inside
//! `with_backing`, or the memory limit's reclaim on a thread with one), so that an
//! allocation nested in that time, a signal handler's, takes that cache's path and never
//! this lock. Nothing
//! is allocated, and no other lock taken, while it is held: it is a leaf, after the back ends'
//! locks in the fork order (`percpu::each_lock`). The statistics and the double-free search
//! read the length and the slots without the lock (relaxed atomics, as they read the slabs):
//! a block moving meanwhile may be missed or seen twice; the statistics clamp what they take,
//! and the search is the same best effort as on the slabs (a block between a stack and this
//! array is on neither).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tessera_sys::lock::RawLock;

use super::slab::PERCPU_CLASSES;
use crate::size_class::{CLASSES, SizeClass};

/// Slots per class (the arrays are statics of this many slots: untouched slots cost no
/// memory).
const MAX_SLOTS: usize = 4096;

/// The most bytes of objects the arrays hold together.
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// Bytes of objects in the arrays: changed under a class's lock by its holder, with a
/// compare-and-swap (the classes' locks are distinct), never above `MAX_BYTES`.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Reserves room for up to `n` objects of `size` bytes in the shared budget whose count is
/// `counter` (`HELD`); how many.
fn reserve(counter: &AtomicUsize, n: usize, size: usize) -> usize {
    let mut held = counter.load(Ordering::Relaxed);
    loop {
        let k = n.min((MAX_BYTES - held.min(MAX_BYTES)) / size);
        if k == 0 {
            return 0;
        }
        match counter.compare_exchange_weak(
            held,
            held + k * size,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return k,
            Err(now) => held = now,
        }
    }
}

/// One class's array: its lock and length here, in a table of their own, its slots in
/// `SLOTS`.
///
/// Apart because the fork handlers take every class's lock (`each_lock`): with the lock at
/// the start of its 32 KiB array, each fork made one page per class resident, 156 KiB in
/// every program that forks (git gc's peak: 5.9 MiB, glibc's 5.3), though thread caches
/// never use the arrays (issue #13, item 6). The table is 2.5 KiB.
#[repr(align(64))]
struct Head {
    lock: RawLock,
    /// Slots in use: `SLOTS[class][..len]`.
    len: AtomicUsize,
}

static HEADS: [Head; PERCPU_CLASSES] = [const {
    Head {
        lock: RawLock::new(),
        len: AtomicUsize::new(0),
    }
}; PERCPU_CLASSES];

/// The classes' slots (statics: an untouched page of them costs no memory).
static SLOTS: [[AtomicUsize; MAX_SLOTS]; PERCPU_CLASSES] =
    [const { [const { AtomicUsize::new(0) }; MAX_SLOTS] }; PERCPU_CLASSES];

/// Counts every change of any array: the purger's sign of activity (`drain_idle`).
static MOVES: AtomicU64 = AtomicU64::new(0);
/// Counts a change (a load and a store, no locked instruction: two holders of different
/// classes' locks may both store the same count, which still differs from the purger's last
/// look, all it needs).
fn moved() {
    MOVES.store(
        MOVES.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// `MOVES` at the purger's last look, and since when it has not changed (coarse ms).
static SEEN: AtomicU64 = AtomicU64::new(u64::MAX);
static SINCE: AtomicU64 = AtomicU64::new(0);

/// The lock of class `.1`'s array (head `.0`), held for the guard's life.
struct Held(&'static Head, usize);

impl Held {
    fn lock(class: SizeClass) -> Self {
        let head = &HEADS[class.index()];
        head.lock.lock();
        Held(head, class.index())
    }

    fn try_lock(c: usize) -> Option<Self> {
        let head = &HEADS[c];
        head.lock.try_lock().then_some(Held(head, c))
    }

    /// The class's slots.
    fn slots(&self) -> &'static [AtomicUsize; MAX_SLOTS] {
        &SLOTS[self.1]
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: taken in `lock`/`try_lock`, by this guard.
        unsafe { self.0.lock.unlock() };
    }
}

/// Puts as many of `blocks` (free objects of `class`, each carrying the freed-block marker,
/// given up by the caller) as fit into `class`'s array, from the front; returns how many.
///
/// # Safety
/// As said; `class` is below `PERCPU_CLASSES`. The caller is inside `with_backing` (see the
/// module comment).
pub(super) unsafe fn put(class: SizeClass, blocks: &[*mut u8]) -> usize {
    let held = Held::lock(class);
    let (head, slots) = (held.0, held.slots());
    let len = head.len.load(Ordering::Relaxed);
    let n = reserve(&HELD, blocks.len().min(MAX_SLOTS - len), class.size());
    for (i, &block) in blocks[..n].iter().enumerate() {
        slots[len + i].store(block as usize, Ordering::Relaxed);
    }
    if n > 0 {
        head.len.store(len + n, Ordering::Relaxed);
        moved();
    }
    n
}

/// Takes up to `out.len()` blocks of `class` (the last put first: the most recently freed,
/// the likeliest in a CPU's caches) into `out`; returns how many. Each still carries the
/// freed-block marker, and is the caller's alone.
///
/// # Safety
/// `class` is below `PERCPU_CLASSES`; the caller is inside `with_backing` or a drain.
pub(super) unsafe fn take(class: SizeClass, out: &mut [*mut u8]) -> usize {
    let held = Held::lock(class);
    // SAFETY: forwarded contract; held.
    unsafe { take_held(&held, out) }
}

/// `take` with the lock held.
///
/// # Safety
/// As `take`.
unsafe fn take_held(held: &Held, out: &mut [*mut u8]) -> usize {
    let (head, slots) = (held.0, held.slots());
    let len = head.len.load(Ordering::Relaxed);
    let n = out.len().min(len);
    for (i, at) in out[..n].iter_mut().enumerate() {
        *at = slots[len - 1 - i].load(Ordering::Relaxed) as *mut u8;
    }
    if n > 0 {
        head.len.store(len - n, Ordering::Relaxed);
        HELD.fetch_sub(n * CLASSES[held.1].size as usize, Ordering::Relaxed);
        moved();
    }
    n
}

/// Whether `class`'s array holds `block` (read racily: the double-free search).
pub(crate) fn holds(block: *mut u8, class: SizeClass) -> bool {
    let len = HEADS[class.index()]
        .len
        .load(Ordering::Relaxed)
        .min(MAX_SLOTS);
    SLOTS[class.index()][..len]
        .iter()
        .any(|s| s.load(Ordering::Relaxed) == block as usize)
}

/// Calls `f(block, class)` for every object the arrays hold (read racily, as
/// `slab::for_each_cached`).
pub(crate) fn for_each_cached(mut f: impl FnMut(*mut u8, SizeClass)) {
    for (c, (head, slots)) in HEADS.iter().zip(&SLOTS).enumerate() {
        let len = head.len.load(Ordering::Relaxed).min(MAX_SLOTS);
        for s in &slots[..len] {
            f(s.load(Ordering::Relaxed) as *mut u8, SizeClass::new(c));
        }
    }
}

/// Bytes of objects in the arrays.
pub(crate) fn bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Empties every array, `out.len()` blocks at a time, handing each batch (markers still on)
/// to `give`; with `wait` false, skips an array whose lock is taken (the memory limit's
/// reclaim, which may run inside a flush or refill of this thread). Returns the bytes taken.
///
/// # Safety
/// `give` takes the blocks over.
pub(super) unsafe fn empty(
    wait: bool,
    out: &mut [*mut u8],
    mut give: impl FnMut(&[*mut u8]),
) -> usize {
    let mut bytes = 0;
    for c in 0..PERCPU_CLASSES {
        loop {
            let held = if wait {
                Held::lock(SizeClass::new(c))
            } else {
                match Held::try_lock(c) {
                    Some(held) => held,
                    None => break,
                }
            };
            // SAFETY: held; `c` is below `PERCPU_CLASSES`.
            let n = unsafe { take_held(&held, out) };
            // Given outside the lock (a leaf: `give` may take other locks).
            drop(held);
            if n == 0 {
                break;
            }
            bytes += n * SizeClass::new(c).size();
            give(&out[..n]);
        }
    }
    bytes
}

/// The purger's look: whether the arrays should be emptied now: they hold something and
/// have not changed for `idle_ms` (or `all`). `now_ms` is the purger's coarse clock.
pub(super) fn idle(now_ms: u64, idle_ms: u64, all: bool) -> bool {
    if bytes() == 0 {
        return false;
    }
    let moves = MOVES.load(Ordering::Relaxed);
    if SEEN.swap(moves, Ordering::Relaxed) != moves {
        SINCE.store(now_ms, Ordering::Relaxed);
        return all;
    }
    all || now_ms.saturating_sub(SINCE.load(Ordering::Relaxed)) >= idle_ms
}

/// The arrays' locks, for the fork handlers.
pub(super) fn each_lock(mut f: impl FnMut(&RawLock)) {
    for head in &HEADS {
        f(&head.lock);
    }
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_never_exceeded() {
        let held = AtomicUsize::new(0);
        let size = 1024;
        let all = MAX_BYTES / size;
        assert_eq!(reserve(&held, all + 5, size), all);
        assert_eq!(reserve(&held, 1, 16), 0, "over the budget");
        held.fetch_sub(size, Ordering::Relaxed);
        assert_eq!(
            reserve(&held, 3, 16),
            3,
            "what one class gave back, another may use"
        );
        assert_eq!(reserve(&held, 100, 16), 61);
        assert_eq!(held.load(Ordering::Relaxed), MAX_BYTES);
    }
}
