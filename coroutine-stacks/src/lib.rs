//! Guarded, lazily committed, pooled, growable coroutine stacks
//! (ARCHITECTURE.md#coroutine-stacks).
//!
//! - Stacks are carved from 64 MiB slabs reserved through `tessera_sys::mem` (`slab.rs`),
//!   committed by the kernel on first touch: a fresh stack costs one page of RSS once a
//!   coroutine runs on it, none before.
//! - Each has a guard region at its low end (`guard.rs`), 64 KiB wide by default
//!   (`TESSERA_STACK_GUARD_KB`) so that a large C frame cannot step over it:
//!   `MADV_GUARD_INSTALL` where the kernel has it (no extra VMA, no memory), `mprotect`
//!   otherwise (`TESSERA_STACK_GUARD=auto|madvise|mprotect`).
//! - Sizes are powers of two from 16 KiB to 8 MiB (`class.rs`).
//! - Free stacks sit in per-processor caches (`cache.rs`) over per-node pools (`pool.rs`), as
//!   Go's `stackcache` over `stackpool`. A runtime owns one [`StackCache`] per processor and
//!   calls [`acquire_in`]; everybody else uses [`acquire`], served by a per-thread cache.
//! - A returned stack gives back its pages below the hot watermark (`shrink.rs`,
//!   `TESSERA_STACK_HOT_KB`); [`trim`] gives back everything idle.
//! - [`maybe_grow`] runs a closure on an extra segment when the stack runs low (`grow.rs`).
//! - A guard hit is reported in one clear line by a SIGSEGV handler (`overflow.rs`).
//! - Running out of VMAs gives a [`StackError`] that names `vm.max_map_count` (`error.rs`).
//!
//! # For runtimes
//!
//! - Keep one [`StackCache`] per processor (P) and take stacks with [`acquire_in`]; give them
//!   back with [`StackCache::release`] (`Coroutine::into_stack` returns the stack of a
//!   finished coroutine). A stack that is simply dropped goes to the dropping thread's
//!   default cache instead, which is also correct.
//! - Call [`prepare_thread`] once on every worker thread that may resume coroutines it did
//!   not acquire: it installs the overflow handler and an alternate signal stack, without
//!   which a guard hit cannot be reported (std threads already have one).
//! - [`PooledStack::set_label`] stores a number (the coroutine id) that the overflow report
//!   prints.
//! - [`PooledStack::bounds`] gives base, usable low end and guard for a hand-written context
//!   switch. Nothing in this crate needs to be told when a stack is entered: stack bounds are
//!   re-derived from the stack pointer, so coroutines may migrate freely between threads.
//!
//! ```
//! use corosensei::{Coroutine, CoroutineResult};
//! let stack = tessera_stacks::acquire(64 << 10)?;
//! let mut co = Coroutine::with_stack(stack, |y, x: u32| y.suspend(x + 1) + 1);
//! assert!(matches!(co.resume(1), CoroutineResult::Yield(2)));
//! assert!(matches!(co.resume(5), CoroutineResult::Return(6)));
//! # Ok::<(), tessera_stacks::StackError>(())
//! ```

mod cache;
mod class;
mod config;
mod error;
mod grow;
mod guard;
mod node;
mod overflow;
mod pool;
mod registry;
mod shrink;
mod slab;
mod stack;
mod stats;
mod trampoline;

pub use cache::StackCache;
pub use class::{MAX_STACK_SIZE, MIN_STACK_SIZE, SizeClass};
pub use config::GuardMode;
pub use error::{StackError, max_map_count, process_rss_kib, process_vma_count};
pub use grow::{grow, maybe_grow, remaining_stack};
pub use node::{MAX_NODES, NodeId, current_node};
pub use overflow::prepare_thread;
pub use slab::StackId;
pub use stack::{PooledStack, StackBounds};
pub use stats::{StackStats, stats};

/// Takes a stack of at least `size` usable bytes from the calling thread's cache.
///
/// The size rounds up to a power of two between 16 KiB and 8 MiB. The stack's memory is bound
/// to the caller's NUMA node. Dropping the stack gives it back.
pub fn acquire(size: usize) -> Result<PooledStack, StackError> {
    cache::with_default(|c| c.acquire(size)).unwrap_or_else(|| cache::acquire_uncached(size))
}

/// Takes a stack from a cache the caller owns (a scheduler's per-processor cache).
pub fn acquire_in(cache: &mut StackCache, size: usize) -> Result<PooledStack, StackError> {
    cache.acquire(size)
}

/// Gives every resident page of every idle pooled stack back to the OS: the node pools and
/// the calling thread's own cache. Per-processor caches owned by a runtime are trimmed with
/// [`StackCache::trim`]. Returns how many stacks were trimmed.
pub fn trim() -> usize {
    let own = cache::with_default(|c| c.trim()).unwrap_or(0);
    own + pool::trim_all()
}

/// The guard mechanism this process uses (resolving `TESSERA_STACK_GUARD` on first call).
pub fn guard_mode() -> Result<GuardMode, StackError> {
    guard::mode()
}
