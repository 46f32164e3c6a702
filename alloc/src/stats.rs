//! `tessera::stats()`: what the allocator holds, per node and per size class.
//!
//! Figures are gathered on demand by walking every span under each page heap's lock, so
//! the fast paths count nothing. Objects in a cache's current bin count as allocated (they
//! are out of the spans' hands), as in Go's `mcache`; call `tessera::collect()` first for
//! figures without cached objects.

use core::sync::atomic::Ordering;

use tessera_span::{PAGE_SIZE, SpanKind, huge};

use crate::node;
use crate::pool;
use crate::remote;
use crate::size_class::{CLASSES, NUM_CLASSES};

/// Figures for one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Object size.
    pub size: usize,
    /// Spans of this class in use.
    pub spans: usize,
    /// Objects carved from those spans.
    pub objects: usize,
    /// Of those, objects free on the spans' lists.
    pub free: usize,
    /// Spans of this class waiting on the central lists (owned by no cache).
    pub central_spans: usize,
}

impl ClassStats {
    /// Objects handed out (or held in a cache's bin).
    pub fn allocated(&self) -> usize {
        self.objects - self.free
    }
}

/// Figures for one NUMA node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Bytes of arena address space reserved on this node.
    pub mapped: usize,
    /// Bytes in spans in use.
    pub active: usize,
    /// Bytes in free runs not yet returned to the OS.
    pub dirty: usize,
    /// Resident bytes of this node's arenas (`mincore`).
    pub resident: usize,
    /// Bytes in live objects (small and large).
    pub allocated: usize,
}

/// What `stats()` returns.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Bytes in objects handed out: small objects (at class size), large spans, huge blocks.
    pub allocated: usize,
    /// Bytes in pages that hold objects: spans in use plus huge blocks.
    pub active: usize,
    /// Bytes resident in memory, measured with `mincore`: arenas, huge blocks, caches.
    pub resident: usize,
    /// Bytes of address space mapped: arenas, huge blocks, cache chunks.
    pub mapped: usize,
    /// Live huge blocks.
    pub huge_blocks: usize,
    /// Caches in existence, and how many of them are idle (their thread exited).
    pub caches: usize,
    /// Idle caches.
    pub idle_caches: usize,
    /// Bytes returned to the OS by purges since start.
    pub purged: u64,
    /// Per size class.
    pub classes: [ClassStats; NUM_CLASSES],
    /// Per node, for the nodes used so far (index = node id).
    pub nodes: [NodeStats; crate::MAX_NODES],
    /// How many entries of `nodes` are meaningful.
    pub node_count: usize,
}

/// Gathers the figures; see the module comment for what they mean.
pub fn stats() -> Stats {
    let mut out = Stats {
        allocated: 0,
        active: 0,
        resident: 0,
        mapped: 0,
        huge_blocks: 0,
        caches: 0,
        idle_caches: 0,
        purged: 0,
        classes: [ClassStats::default(); NUM_CLASSES],
        nodes: [NodeStats::default(); crate::MAX_NODES],
        node_count: 0,
    };
    for (i, c) in out.classes.iter_mut().enumerate() {
        c.size = CLASSES[i].size as usize;
    }
    for (index, node) in node::used_nodes().iter().enumerate() {
        let heap = node.heap.stats();
        let mut per = NodeStats {
            mapped: heap.mapped,
            active: heap.in_use,
            dirty: heap.dirty,
            resident: node.heap.resident(),
            allocated: 0,
        };
        node.heap.for_each_span(|span| match span.kind() {
            SpanKind::Small => {
                let class = &mut out.classes[span.class as usize];
                let carved = span.carved.load(Ordering::Relaxed) as usize;
                let free =
                    (span.local_count.load(Ordering::Relaxed) + remote::count(span)) as usize;
                let free = free.min(carved);
                class.spans += 1;
                class.objects += carved;
                class.free += free;
                per.allocated += (carved - free) * span.obj_size as usize;
            }
            SpanKind::Large => per.allocated += span.npages() * PAGE_SIZE,
            _ => {}
        });
        for (class, central) in out.classes.iter_mut().zip(node.centrals.iter()) {
            class.central_spans += central.len();
        }
        out.allocated += per.allocated;
        out.active += per.active;
        out.resident += per.resident;
        out.mapped += per.mapped;
        out.purged += heap.purged_total;
        out.nodes[index] = per;
        out.node_count = index + 1;
    }
    let (huge_blocks, huge_bytes) = huge::stats();
    out.huge_blocks = huge_blocks;
    out.allocated += huge_bytes;
    out.active += huge_bytes;
    out.mapped += huge_bytes;
    out.resident += huge::resident();
    let (caches, idle, cache_bytes) = pool::stats();
    out.caches = caches;
    out.idle_caches = idle;
    out.mapped += cache_bytes;
    out.resident += caches * core::mem::size_of::<crate::cache::Cache>();
    out
}
