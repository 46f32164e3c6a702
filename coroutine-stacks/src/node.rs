//! NUMA nodes as the stacks see them: the node the caller runs on, and the one place where a
//! slab's memory is bound to its node (ARCHITECTURE.md#numa). Ids, the current-node query and
//! the `mbind` wrapper come from `tessera-numa`.

use tessera_numa::{MbindFlags, Policy};

pub use tessera_numa::{MAX_NODES, NodeId};

/// The node the calling thread runs on (rseq's `node_id`, else `getcpu`).
pub fn current_node() -> NodeId {
    valid(tessera_numa::current_node())
}

/// `node` if the pools have a slot for it, node 0 otherwise: `NodeId::new` accepts any
/// number, and a bad id from a caller must not index past the node array.
pub(crate) fn valid(node: NodeId) -> NodeId {
    if node.index() < MAX_NODES {
        node
    } else {
        NodeId::ZERO
    }
}

/// Binds a freshly reserved, untouched slab to `node`, before any page of it is faulted in.
///
/// `MPOL_PREFERRED`, not `MPOL_BIND`: a stack page is faulted in by whatever code happens to
/// touch it, and under `BIND` a full node would turn that fault into an OOM kill; `PREFERRED`
/// places every page on the node while it has memory. Failure is not fatal: the memory is
/// still usable, only placed by first touch, as on a one-node machine anyway.
pub(crate) fn bind_slab(ptr: *mut u8, len: usize, node: NodeId) {
    let _ = tessera_numa::mbind(ptr, len, &Policy::Preferred(node), MbindFlags::NONE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sys::mem;

    #[test]
    fn ids_are_bounded() {
        assert!(current_node().index() < MAX_NODES);
        assert_eq!(valid(NodeId::new(MAX_NODES as u16)), NodeId::ZERO);
        assert_eq!(valid(NodeId::new(3)), NodeId::new(3));
    }

    #[test]
    fn bound_range_reports_the_node_policy() {
        let len = 16 * mem::page_size();
        let p = mem::reserve(len, mem::page_size()).unwrap().as_ptr();
        bind_slab(p, len, NodeId::ZERO);
        assert_eq!(
            tessera_numa::policy_of(p).unwrap(),
            Policy::Preferred(NodeId::ZERO)
        );
        // SAFETY: reserved above, never handed out.
        unsafe { mem::release(p, len) };
    }
}
