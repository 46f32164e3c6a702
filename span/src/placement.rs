//! NUMA placement of fresh memory: every arena and huge mapping is bound to its node (or
//! interleaved across all memory nodes) right after it is reserved and before anything
//! touches it, since the kernel places a page when it is first written (ARCHITECTURE.md#numa).
//!
//! Binding uses `MPOL_PREFERRED` rather than `MPOL_BIND`: when a node runs out of memory the
//! kernel falls back to a neighbour instead of failing the page fault, which for a
//! general-purpose allocator is the lesser evil (a `SIGBUS` would be reported to the program
//! as a crash, not as an allocation failure).

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tessera_numa::{MbindFlags, NodeId, Policy, Topology};

/// How fresh memory is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Placement {
    /// Leave placement to the kernel's default (first touch). The single-node default.
    Kernel = 0,
    /// Prefer the node the memory is reserved for.
    Local = 1,
    /// Spread pages round-robin over every node with memory.
    Interleave = 2,
}

static PLACEMENT: AtomicU8 = AtomicU8::new(Placement::Kernel as u8);
static BIND_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Sets the placement for memory reserved from now on.
pub fn configure(placement: Placement) {
    PLACEMENT.store(placement as u8, Ordering::Relaxed);
}

/// The placement in force.
pub fn current() -> Placement {
    match PLACEMENT.load(Ordering::Relaxed) {
        1 => Placement::Local,
        2 => Placement::Interleave,
        _ => Placement::Kernel,
    }
}

/// How many `mbind` calls the kernel refused (the memory is then placed by first touch).
pub fn bind_failures() -> usize {
    BIND_FAILURES.load(Ordering::Relaxed)
}

/// Applies the placement to a fresh, untouched range reserved for `node`.
pub(crate) fn bind(base: *mut u8, len: usize, node: NodeId) {
    let policy = match current() {
        Placement::Kernel => return,
        Placement::Local => Policy::Preferred(node),
        Placement::Interleave => Policy::Interleave(Topology::get().memory_nodes()),
    };
    if tessera_numa::mbind(base, len, &policy, MbindFlags::NONE).is_err() {
        BIND_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}
