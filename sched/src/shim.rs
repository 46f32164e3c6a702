//! The atomics, lock and fence that the lock-free parts (run queue, parker) and the idle
//! protocol (machine/idle.rs) are written against: loom's under `--cfg tessera_loom`, so loom
//! can explore their interleavings, and core's and std's otherwise.

use core::sync::atomic::Ordering;

#[cfg(tessera_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(tessera_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, fence};

#[cfg(not(tessera_loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, fence};
#[cfg(not(tessera_loom))]
pub(crate) use std::sync::Mutex;

/// Takes what a hand-over word holds and leaves it `empty`: `swap(empty, AcqRel)`. The word
/// has one hand-over at a time: it is written only while `empty`, by the one thread handing
/// something over (an M's `nextp`: `hand_p` hands a P only to an M it took off the idle
/// list, and the M takes the P before it can be listed again).
#[cfg(not(tessera_loom))]
#[inline(always)]
pub(crate) fn take(word: &AtomicUsize, empty: usize) -> usize {
    word.swap(empty, Ordering::AcqRel)
}

/// Under loom, a load and then, if something is there, a compare-exchange that must
/// succeed. Loom 0.7 can let a plain store land between the read and the write of a
/// read-modify-write (tokio-rs/loom#254): a swap that read `empty` would then overwrite the
/// hand-over that raced with it, a loss the real swap cannot have. With one hand-over at a
/// time the two forms are the same. (With `swap` here, loom reports a lost wake-up in every
/// scenario of machine/idle_loom.rs.)
#[cfg(tessera_loom)]
pub(crate) fn take(word: &AtomicUsize, empty: usize) -> usize {
    let v = word.load(Ordering::Acquire);
    if v != empty {
        let r = word.compare_exchange(v, empty, Ordering::AcqRel, Ordering::Acquire);
        assert_eq!(r, Ok(v), "two hand-overs at once");
    }
    v
}
