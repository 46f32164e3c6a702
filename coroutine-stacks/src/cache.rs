//! Per-processor caches of free stacks (Go's `stackcache`), and the per-thread default one.
//!
//! A `StackCache` is plain data owned by whoever represents a processor: the scheduler keeps
//! one per P and passes it to `acquire_in`; threads that are not scheduler workers use a
//! thread-local default. Hits and misses on a cache take no lock; a miss takes half a cache's
//! worth of stacks from the node pool in one lock round trip, and an overfull cache gives half
//! back the same way, so stacks that bounce between two caches do not touch the pool lock
//! every time (Go: `stackcacherefill`/`stackcacherelease`).

use std::cell::RefCell;
use std::fmt;
use std::mem::ManuallyDrop;

use crate::class::{NUM_CLASSES, SizeClass};
use crate::error::StackError;
use crate::node::{self, NodeId};
use crate::overflow;
use crate::pool;
use crate::shrink;
use crate::slab::StackSlot;
use crate::stack::PooledStack;
use crate::stats;

/// Bytes of free stacks a cache holds per class before giving half back; the count is clamped
/// to 2..=32 stacks, so big classes still get reuse and small ones a useful batch.
const CACHE_BYTES_PER_CLASS: usize = 512 << 10;

fn limit(class: SizeClass) -> usize {
    (CACHE_BYTES_PER_CLASS / class.size()).clamp(2, 32)
}

/// A processor's cache of free stacks, all of one NUMA node.
pub struct StackCache {
    node: NodeId,
    /// Which stripe of the live-stack count this cache bumps (`stats.rs`).
    stripe: usize,
    lists: [Vec<StackSlot>; NUM_CLASSES],
}

impl fmt::Debug for StackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<usize> = self.lists.iter().map(Vec::len).collect();
        f.debug_struct("StackCache")
            .field("node", &self.node)
            .field("free_per_class", &counts)
            .finish()
    }
}

impl Default for StackCache {
    fn default() -> Self {
        Self::new()
    }
}

impl StackCache {
    /// A cache for the node the calling thread runs on.
    pub fn new() -> Self {
        Self::for_node(node::current_node())
    }

    /// A cache whose stacks come from memory bound to `node` (node 0 if `node` is at or
    /// above `MAX_NODES`).
    pub fn for_node(node: NodeId) -> Self {
        Self {
            node: node::valid(node),
            stripe: stats::new_stripe(),
            lists: std::array::from_fn(|i| Vec::with_capacity(limit(SizeClass::from_index(i)) + 1)),
        }
    }

    /// The node this cache serves.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Takes a stack of at least `size` usable bytes (rounded up to a power of two, 16 KiB
    /// to 8 MiB). Also makes sure the calling thread can report an overflow (see `overflow`).
    pub fn acquire(&mut self, size: usize) -> Result<PooledStack, StackError> {
        let class = SizeClass::for_size(size).ok_or(StackError::TooLarge { requested: size })?;
        overflow::prepare_thread();
        let list = &mut self.lists[class.index()];
        if list.is_empty() {
            pool::take(self.node, class, limit(class).div_ceil(2), list)?;
        }
        let slot = list.pop().expect("refill yields at least one stack");
        stats::handed_out(self.stripe);
        Ok(PooledStack::new(slot, class, self.node))
    }

    /// Gives a stack back to this cache, dropping its pages below the hot watermark. A stack
    /// of another node goes straight to its own node's pool.
    pub fn release(&mut self, stack: PooledStack) {
        let stack = ManuallyDrop::new(stack);
        let (mut slot, class, node) = stack.parts();
        stats::returned(self.stripe);
        clear_label(&mut slot);
        // SAFETY: the stack was handed out by this crate and is being returned by its owner,
        // who by giving up the `PooledStack` value has stopped running on it.
        unsafe { shrink::on_release(&mut slot, class) };
        if node != self.node {
            give_to_pool(node, class, vec![slot]);
            return;
        }
        let list = &mut self.lists[class.index()];
        list.push(slot);
        if list.len() > limit(class) {
            let keep = limit(class) / 2;
            give_to_pool(self.node, class, list.split_off(keep));
        }
    }

    /// Gives every cached stack back to the node pool (on processor teardown).
    pub fn flush(&mut self) {
        for (i, list) in self.lists.iter_mut().enumerate() {
            if !list.is_empty() {
                give_to_pool(self.node, SizeClass::from_index(i), std::mem::take(list));
            }
        }
    }

    /// Drops every resident page of the stacks in this cache; returns how many it trimmed.
    pub fn trim(&mut self) -> usize {
        let mut n = 0;
        for (i, list) in self.lists.iter_mut().enumerate() {
            for slot in list.iter_mut() {
                // SAFETY: a cached slot is free: nobody runs on it.
                unsafe { shrink::release_all(slot, SizeClass::from_index(i)) };
            }
            n += list.len();
        }
        n
    }

    /// Free stacks held by this cache.
    pub fn len(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }

    /// Whether the cache holds no stack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StackCache {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    /// The cache of threads that are not scheduler processors; flushed when the thread exits.
    static DEFAULT: RefCell<Option<StackCache>> = const { RefCell::new(None) };
}

/// Runs `f` on the calling thread's default cache, or returns `None` while the thread is
/// being torn down (its thread-locals are gone) or the cache is already in use.
///
/// Not inlined: a coroutine can migrate between threads, and the thread-local address must be
/// computed afresh on every call, never kept by the caller across a switch.
#[inline(never)]
pub(crate) fn with_default<R>(f: impl FnOnce(&mut StackCache) -> R) -> Option<R> {
    DEFAULT
        .try_with(|cell| {
            let mut cache = cell.try_borrow_mut().ok()?;
            Some(f(cache.get_or_insert_with(StackCache::new)))
        })
        .ok()
        .flatten()
}

/// Moves free stacks from a cache to the node pool, making sure first that none keeps pages
/// below the hot watermark (`shrink::before_pool`): the node pool only holds shrunk stacks.
fn give_to_pool(node: NodeId, class: SizeClass, mut slots: Vec<StackSlot>) {
    for slot in &mut slots {
        // SAFETY: these slots sit in a cache, free: nobody runs on them.
        unsafe { shrink::before_pool(slot, class) };
    }
    pool::give(node, class, slots);
}

/// Forgets the label of a returning stack, so its next owner does not inherit it.
fn clear_label(slot: &mut StackSlot) {
    if slot.labelled {
        // SAFETY: `slot.label` is the slot's word in its slab's label table, mapped for the
        // life of the process; the stack's owner just gave it up.
        unsafe { (slot.label as *mut u64).write_volatile(0) };
        slot.labelled = false;
    }
}

/// Gives a stack back without any cache (thread teardown): shrink, then the node pool.
pub(crate) fn release_to_pool(mut slot: StackSlot, class: SizeClass, node: NodeId) {
    stats::returned(0);
    clear_label(&mut slot);
    // SAFETY: the stack's owner gave it up, so nobody runs on it.
    unsafe { shrink::on_release(&mut slot, class) };
    give_to_pool(node, class, vec![slot]);
}

/// Acquires from a throwaway cache when the default one is unavailable.
pub(crate) fn acquire_uncached(size: usize) -> Result<PooledStack, StackError> {
    let mut cache = StackCache::new();
    let stack = cache.acquire(size);
    drop(cache);
    stack
}
