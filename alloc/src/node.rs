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

const fn new_nodes() -> [Node; MAX_NODES] {
    let mut nodes = [const {
        Node {
            heap: PageHeap::new(NodeId::ZERO),
            centrals: new_centrals(),
        }
    }; MAX_NODES];
    let mut i = 0;
    while i < MAX_NODES {
        nodes[i].heap = PageHeap::new(NodeId::new(i as u16));
        i += 1;
    }
    nodes
}

static NODES: [Node; MAX_NODES] = new_nodes();

/// One more than the highest node index ever used; the fork handlers and stats walk these.
static NODES_USED: AtomicUsize = AtomicUsize::new(1);

/// The state of node `id` (clamped into range).
#[inline]
pub(crate) fn node(id: NodeId) -> &'static Node {
    let i = id.index().min(MAX_NODES - 1);
    if i >= NODES_USED.load(Ordering::Relaxed) {
        NODES_USED.fetch_max(i + 1, Ordering::AcqRel);
    }
    &NODES[i]
}

/// Every node that has been used so far, in index order.
pub(crate) fn used_nodes() -> &'static [Node] {
    &NODES[..NODES_USED.load(Ordering::Acquire)]
}
