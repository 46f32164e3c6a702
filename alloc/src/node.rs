//! Per-NUMA-node state: each node has its own page heap and its own central lists
//! (ARCHITECTURE.md#numa). Caches refill from the node they are bound to; a freed span goes
//! back to the page heap of the node its arena belongs to.

use core::sync::atomic::{AtomicUsize, Ordering};

use tessera_numa::NodeId;
use tessera_span::PageHeap;

use crate::central::{Centrals, new_centrals};

/// Most nodes Tessera keeps separate heaps for; higher node ids share the last one.
pub const MAX_NODES: usize = 64;

/// One node's heap and central lists.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) heap: PageHeap,
    pub(crate) centrals: Centrals,
}

/// Every node's state, made alike: all zero bytes, so the table (12 KiB a node) is in
/// `.bss` and only the nodes in use are ever paged in. A heap made with a node's id would
/// put the whole table in `.data`, where reading node 0 mapped 64 KiB of the file around it
/// into every process (issue #13, item 6). Each heap is bound to its node at first use.
static NODES: [Node; MAX_NODES] = [const {
    Node {
        heap: PageHeap::new(NodeId::ZERO),
        centrals: new_centrals(),
    }
}; MAX_NODES];

/// One more than the highest node index ever used; the fork handlers and stats walk these.
/// Every node below it is bound to its id.
static NODES_USED: AtomicUsize = AtomicUsize::new(1);

/// The state of node `id` (clamped into range).
#[inline]
pub(crate) fn node(id: NodeId) -> &'static Node {
    let i = id.index().min(MAX_NODES - 1);
    // Acquire: a node counted here was bound before it was counted (`first_use`).
    if i >= NODES_USED.load(Ordering::Acquire) {
        first_use(i);
    }
    &NODES[i]
}

/// Binds node `i`'s heap to its id, then counts it as used. Threads racing here bind it
/// alike; none counts it before its binding is done.
#[cold]
fn first_use(i: usize) {
    NODES[i].heap.bind_node(NodeId::new(i as u16));
    NODES_USED.fetch_max(i + 1, Ordering::AcqRel);
}

/// Every node that has been used so far, in index order.
pub(crate) fn used_nodes() -> &'static [Node] {
    &NODES[..NODES_USED.load(Ordering::Acquire)]
}
