//! Per-node pools of free stacks (Go's `stackpool`), under the per-processor caches.
//!
//! One `NodePool` per NUMA node, one locked free list per size class in it. A cache that runs
//! dry takes a batch from its node's list; when that is empty too, the list carves a fresh
//! slot from its current slab (reserving a new slab bound to the node when that one is full).
//! So a stack for node N always comes from memory bound to node N. The locks are taken once
//! per batch, never on the cache hit path.

use std::sync::{Mutex, MutexGuard};

use crate::class::{NUM_CLASSES, SizeClass};
use crate::error::StackError;
use crate::guard;
use crate::node::{MAX_NODES, NodeId};
use crate::shrink;
use crate::slab::{Slab, StackSlot};

/// Free stacks of one class on one node, and the slab new ones are carved from.
#[derive(Debug)]
struct ClassPool {
    free: Vec<StackSlot>,
    slab: Option<Slab>,
}

impl ClassPool {
    const fn new() -> Self {
        Self {
            free: Vec::new(),
            slab: None,
        }
    }

    fn carve(&mut self, class: SizeClass, node: NodeId) -> Result<StackSlot, StackError> {
        let mode = guard::mode()?;
        let slab = match &mut self.slab {
            Some(slab) if !slab.is_full() => slab,
            slot => slot.insert(Slab::reserve(class, node)?),
        };
        slab.carve(mode)
    }
}

#[derive(Debug)]
struct NodePool {
    classes: [Mutex<ClassPool>; NUM_CLASSES],
}

static NODES: [NodePool; MAX_NODES] = [const {
    NodePool {
        classes: [const { Mutex::new(ClassPool::new()) }; NUM_CLASSES],
    }
}; MAX_NODES];

fn lock(node: NodeId, class: SizeClass) -> MutexGuard<'static, ClassPool> {
    // A panic while holding the lock leaves the lists consistent (every operation is a push
    // or a pop), so a poisoned lock is simply taken over.
    NODES[node.index()].classes[class.index()]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Moves up to `want` free stacks of `class` on `node` into `out` (at least one, carving if
/// the pool is empty).
pub(crate) fn take(
    node: NodeId,
    class: SizeClass,
    want: usize,
    out: &mut Vec<StackSlot>,
) -> Result<(), StackError> {
    debug_assert!(want > 0);
    let mut pool = lock(node, class);
    let n = want.min(pool.free.len());
    if n > 0 {
        let at = pool.free.len() - n;
        out.extend(pool.free.drain(at..));
        return Ok(());
    }
    let slot = pool.carve(class, node)?;
    out.push(slot);
    Ok(())
}

/// Returns free stacks (already shrunk by the caller) to `node`'s pool.
pub(crate) fn give(node: NodeId, class: SizeClass, slots: Vec<StackSlot>) {
    lock(node, class).free.extend(slots);
}

/// Drops every resident page of every free stack in the node pools; returns how many stacks
/// were trimmed. Stacks in per-processor caches are trimmed by their owners
/// (`StackCache::trim`).
pub(crate) fn trim_all() -> usize {
    let mut trimmed = 0;
    for node in &NODES {
        for (i, list) in node.classes.iter().enumerate() {
            let class = SizeClass::from_index(i);
            let mut pool = list.lock().unwrap_or_else(|p| p.into_inner());
            for slot in pool.free.iter_mut() {
                // SAFETY: a slot on a free list is carved and used by nobody.
                unsafe { shrink::release_all(slot, class) };
            }
            trimmed += pool.free.len();
        }
    }
    trimmed
}
