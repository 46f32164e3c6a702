//! Newtypes for the two kinds of index this crate hands out, so a CPU number can never be
//! passed where a node id is expected (CONVENTIONS.md, "Names").

use core::fmt;

/// A NUMA node id as the kernel numbers it (`/sys/devices/system/node/nodeN`).
///
/// Ids may be sparse (a machine can have nodes 0 and 2 only). Every id this crate hands out
/// is below [`MAX_NODES`](crate::MAX_NODES).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(u16);

impl NodeId {
    /// Node 0, the node every machine has (and the whole machine when `/sys` is missing).
    pub const ZERO: NodeId = NodeId(0);

    /// Wraps a kernel node number.
    pub const fn new(id: u16) -> NodeId {
        NodeId(id)
    }

    /// The kernel's node number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The node number as an array index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A logical CPU number as the kernel numbers it (`/sys/devices/system/cpu/cpuN`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CpuId(u32);

impl CpuId {
    /// Wraps a kernel CPU number.
    pub const fn new(id: u32) -> CpuId {
        CpuId(id)
    }

    /// The kernel's CPU number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The CPU number as an array index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
