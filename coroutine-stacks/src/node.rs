//! NUMA nodes as the stacks see them: the id type, the node the caller runs on, and the one
//! place where a slab's memory is bound to its node (DESIGN.md, "NUMA").
//!
//! `tessera-numa` is being written alongside this crate. Until it exports its node type,
//! current-node query and `mbind` wrapper, this file stands in with the same shapes, so that
//! switching over touches only this file.

use std::fmt;

/// Most NUMA nodes the pools are sized for (an array of node pools is indexed by `NodeId`).
pub const MAX_NODES: usize = 64;

/// A NUMA node id, as the kernel numbers it; always below [`MAX_NODES`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(u16);

impl NodeId {
    /// Node 0: every machine has it.
    pub const ZERO: NodeId = NodeId(0);

    /// Wraps a kernel node number; `None` at or above [`MAX_NODES`].
    pub const fn new(id: u16) -> Option<NodeId> {
        if (id as usize) < MAX_NODES {
            Some(NodeId(id))
        } else {
            None
        }
    }

    /// The node as an array index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// The node the calling thread runs on.
///
/// This machine has one node; the multi-node answer (rseq `node_id`, else `getcpu`) comes
/// from `tessera_numa` once it lands.
pub fn current_node() -> NodeId {
    NodeId::ZERO
}

/// Binds a freshly reserved, untouched slab to `node`, before any page of it is faulted in.
/// Failure is not fatal: the memory is still usable, only its placement is the kernel's
/// default (first touch), which is also what a one-node machine gets.
pub(crate) fn bind_slab(ptr: *mut u8, len: usize, node: NodeId) {
    // NUMA: call `tessera_numa`'s `mbind(ptr, len, node)` wrapper here once it has landed.
    let _ = (ptr, len, node);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded() {
        assert_eq!(NodeId::new(0), Some(NodeId::ZERO));
        assert_eq!(
            NodeId::new(MAX_NODES as u16 - 1).unwrap().index(),
            MAX_NODES - 1
        );
        assert_eq!(NodeId::new(MAX_NODES as u16), None);
        assert!(current_node().index() < MAX_NODES);
    }
}
