//! The atomics the lock-free parts (run queue, parker) are written against: loom's under
//! `--cfg tessera_loom`, so loom can explore their interleavings, and core's otherwise.

#[cfg(tessera_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, fence};

#[cfg(not(tessera_loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, fence};
