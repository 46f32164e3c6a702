//! `tessera::stats()`: what the allocator holds from the OS and where it is, per node and
//! per size class.
//!
//! Figures are gathered on demand by walking every span under each page heap's lock, so
//! the fast paths count nothing.
//!
//! ## Where the memory is
//!
//! Every byte Tessera has mapped (`Stats::mapped`) is in exactly one part of a
//! [`Breakdown`], so that
//!
//! ```text
//! mapped = live + cached + central + heap_dirty + heap_purged + metadata
//! ```
//!
//! holds exactly (tested), for the whole process and per node (`NodeStats::mapped`, where
//! `metadata` is the node's arena headers), because every part comes from one walk:
//! - each arena is `ARENA_SIZE` bytes: its header (metadata) and spans that cover the rest
//!   exactly, free runs included;
//! - a free run is `heap_dirty` (freed, not purged since: may be resident) or `heap_purged`
//!   (returned to the OS by a purge, or never touched since its arena was reserved);
//! - a large span is `live` whole, but for the few the heap profiler keeps for its next
//!   samples (`profile/sample.rs`), which are `cached`;
//! - a small span is split: its handed-out objects (carved and on none of the span's free
//!   lists) at class size are `live`; the rest of its bytes (free objects on its local and
//!   remote lists, objects not carved yet, the tail no object fits in) belongs to whoever
//!   holds the span: `central` when it sits on a central list, `cached` when a cache owns
//!   it (as its current span, on its partial or full list) or stashes it empty;
//! - huge blocks are `live` whole (their page-rounded mappings);
//! - cache chunks and the huge-block registry are `metadata`.
//!
//! The objects on the per-CPU caches' stacks (`percpu/`) and in their transfer cache count in
//! `cached` too (read racily from every slab, `Stats::percpu_cached`); the slabs themselves
//! are `metadata`.
//!
//! Caches of exited threads (idle in `pool.rs`) count in `cached` with the running ones;
//! `Stats::idle_caches` says how many there are.
//!
//! One blind spot, shared with Go's `mcache` (whose cached spans count as allocated until
//! they are uncached): the objects on a cache's bin lists and in its unpublished remote
//! batch are on no span list, and only the cache's thread may walk them. The calling
//! thread's cache is walked and its objects count as `cached`; other threads' count as
//! `live` until that thread refills, flushes, exits, or calls `tessera::collect()`.
//!
//! "Committed" is everything but `heap_purged` ([`Breakdown::committed`]): what may be
//! resident. It is an upper bound (the memory limits count the same parts as they change,
//! `tessera::memory_limits().committed`); `Stats::resident`
//! (`mincore`) is what is resident now: untouched pages of arena headers and of lazily
//! carved spans are committed here but not resident. Not counted anywhere: the static
//! arena map and per-node tables in the library's own BSS.

use core::sync::atomic::Ordering;

use tessera_span::arena::{self, ARENA_MASK, HEADER_PAGES};
use tessera_span::{ARENA_SIZE, PAGE_SIZE, Span, SpanKind, huge};

use crate::node::{self, Node};
use crate::pool;
use crate::remote;
use crate::size_class::{CLASSES, NUM_CLASSES, SizeClass};
use crate::thread;

/// Where the bytes Tessera holds from the OS are: the parts add up to the mapped total
/// (see the module comment for exactly what goes where).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Objects handed out: small objects at class size, large spans, huge blocks.
    pub live: usize,
    /// Held by caches (running threads' and idle ones): free objects and free room of the
    /// spans they own, their stashed empty spans, and the calling thread's bin lists.
    pub cached: usize,
    /// Free objects and free room of the spans on central lists.
    pub central: usize,
    /// Page heap free runs not purged since they were freed (and runs being purged right
    /// now): possibly resident. Exact: the page heap keeps dirty and clean runs apart and
    /// never merges the two kinds.
    pub heap_dirty: usize,
    /// Page heap free runs returned to the OS (or never touched): reserved, not committed.
    pub heap_purged: usize,
    /// Bookkeeping: arena headers (page map, span records), cache chunks, the huge-block
    /// registry.
    pub metadata: usize,
}

impl Breakdown {
    /// The sum of the parts: every byte mapped.
    pub fn total(&self) -> usize {
        self.live + self.cached + self.central + self.heap_dirty + self.heap_purged + self.metadata
    }

    /// Everything but `heap_purged`: the bytes that may be resident and that a memory limit
    /// counts.
    pub fn committed(&self) -> usize {
        self.total() - self.heap_purged
    }

    fn add(&mut self, other: &Breakdown) {
        self.live += other.live;
        self.cached += other.cached;
        self.central += other.central;
        self.heap_dirty += other.heap_dirty;
        self.heap_purged += other.heap_purged;
        self.metadata += other.metadata;
    }
}

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
    /// Bytes of arena address space reserved on this node: `breakdown.total()`.
    pub mapped: usize,
    /// Bytes in spans in use.
    pub active: usize,
    /// Bytes in free runs not yet returned to the OS (`breakdown.heap_dirty`).
    pub dirty: usize,
    /// Resident bytes of this node's arenas (`mincore`).
    pub resident: usize,
    /// Bytes in live objects, small and large (`breakdown.live`).
    pub allocated: usize,
    /// Where this node's arena bytes are; `metadata` is the arena headers.
    pub breakdown: Breakdown,
}

/// What `stats()` returns.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Bytes in objects handed out: small objects (at class size), large spans, huge blocks
    /// (`breakdown.live`).
    pub allocated: usize,
    /// Bytes in pages that hold objects: spans in use plus huge blocks.
    pub active: usize,
    /// Bytes resident in memory, measured with `mincore`: arenas, huge blocks, caches.
    pub resident: usize,
    /// Bytes of address space mapped: arenas, huge blocks, cache chunks, the huge-block
    /// registry (`breakdown.total()`).
    pub mapped: usize,
    /// Where the mapped bytes are.
    pub breakdown: Breakdown,
    /// Live huge blocks.
    pub huge_blocks: usize,
    /// Caches in existence, and how many of them are idle (their thread exited).
    pub caches: usize,
    /// Idle caches.
    pub idle_caches: usize,
    /// Of `breakdown.cached`, the bytes of objects on the per-CPU caches' stacks and in
    /// their transfer cache (`TESSERA_CACHE=percpu`), read without stopping them:
    /// approximate while threads run.
    pub percpu_cached: usize,
    /// Bytes returned to the OS by purges since start.
    pub purged: u64,
    /// Per size class.
    pub classes: [ClassStats; NUM_CLASSES],
    /// Per node, for the nodes used so far (index = node id).
    pub nodes: [NodeStats; crate::MAX_NODES],
    /// How many entries of `nodes` are meaningful.
    pub node_count: usize,
}

/// Bytes returned to the OS by purges since start (`Stats::purged`), without the rest of
/// the walk.
pub(crate) fn purged_total() -> u64 {
    node::used_nodes()
        .iter()
        .map(|node| node.heap.stats().purged_total)
        .sum()
}

/// Gathers the figures; see the module comment for what they mean.
pub fn stats() -> Stats {
    let mut out = Stats {
        allocated: 0,
        active: 0,
        resident: 0,
        mapped: 0,
        breakdown: Breakdown::default(),
        huge_blocks: 0,
        caches: 0,
        idle_caches: 0,
        percpu_cached: 0,
        purged: 0,
        classes: [ClassStats::default(); NUM_CLASSES],
        nodes: [NodeStats::default(); crate::MAX_NODES],
        node_count: 0,
    };
    for (i, c) in out.classes.iter_mut().enumerate() {
        c.size = CLASSES[i].size as usize;
    }
    for (index, node) in node::used_nodes().iter().enumerate() {
        out.nodes[index] = walk_node(node, &mut out.classes);
        out.purged += node.heap.stats().purged_total;
        for (class, central) in out.classes.iter_mut().zip(node.centrals.iter()) {
            class.central_spans += central.len();
        }
        out.node_count = index + 1;
    }
    own_cache_holdings(&mut out.nodes[..out.node_count]);
    let (percpu_cached, slab_bytes) = percpu_holdings(&mut out.nodes[..out.node_count]);
    out.percpu_cached = percpu_cached;
    for per in &mut out.nodes[..out.node_count] {
        per.allocated = per.breakdown.live;
        out.breakdown.add(&per.breakdown);
        out.active += per.active;
        out.resident += per.resident;
    }
    let (huge_blocks, huge_bytes) = huge::stats();
    out.huge_blocks = huge_blocks;
    out.breakdown.live += huge_bytes;
    out.active += huge_bytes;
    out.resident += huge::resident();
    out.breakdown.metadata += huge::registry_bytes();
    let (caches, idle, cache_bytes) = pool::stats();
    out.caches = caches;
    out.idle_caches = idle;
    out.breakdown.metadata += cache_bytes + slab_bytes;
    out.resident += slab_bytes;
    out.resident += caches * core::mem::size_of::<crate::cache::Cache>();
    out.allocated = out.breakdown.live;
    out.mapped = out.breakdown.total();
    out
}

/// One node's figures from one walk of its page heap (so they add up), counting its small
/// spans into `classes`.
fn walk_node(node: &Node, classes: &mut [ClassStats; NUM_CLASSES]) -> NodeStats {
    let mut per = NodeStats::default();
    let parts = &mut per.breakdown;
    let mut arenas = 0;
    let mut arena = 0;
    node.heap.for_each_span(|span| {
        // The walk visits arenas one after the other, and every arena has spans.
        let at = span.base() as usize & !ARENA_MASK;
        if at != arena {
            arena = at;
            arenas += 1;
        }
        match span.kind() {
            // A run being purged is still committed until the advice returns.
            SpanKind::Free if span.is_dirty() => parts.heap_dirty += span.bytes(),
            SpanKind::Purging => parts.heap_dirty += span.bytes(),
            SpanKind::Free => parts.heap_purged += span.bytes(),
            SpanKind::Large => {
                per.active += span.bytes();
                parts.live += span.bytes();
            }
            SpanKind::Small => {
                per.active += span.bytes();
                split_small(span, node, classes, parts);
            }
            SpanKind::None => {}
        }
    });
    parts.metadata = arenas * HEADER_PAGES * PAGE_SIZE;
    per.mapped = arenas * ARENA_SIZE;
    per.dirty = parts.heap_dirty;
    per.resident = node.heap.resident();
    per
}

/// Splits a small span between `live` and its holder (see the module comment).
///
/// The span's owner may be changing it meanwhile (its counts are atomics read relaxed), so
/// the figures are clamped to the span's bytes: the parts still add up to them.
fn split_small(
    span: &Span,
    node: &Node,
    classes: &mut [ClassStats; NUM_CLASSES],
    parts: &mut Breakdown,
) {
    let bytes = span.bytes();
    let carved = span.carved.load(Ordering::Relaxed) as usize;
    let free = (span.local_count.load(Ordering::Relaxed) + remote::count(span)) as usize;
    let free = free.min(carved);
    let live = ((carved - free) * span.obj_size as usize).min(bytes);
    parts.live += live;
    let class = SizeClass::of(span).index();
    let owner = span.owner.load(Ordering::Relaxed);
    // A flushed span goes to its own node's central list, so this node's list is the one
    // whose tag it can carry.
    if node
        .centrals
        .get(class)
        .is_some_and(|central| central.owner_tag() == owner)
    {
        parts.central += bytes - live;
    } else {
        parts.cached += bytes - live;
    }
    if let Some(c) = classes.get_mut(class) {
        c.spans += 1;
        c.objects += carved;
        c.free += free;
    }
}

/// Moves the objects the calling thread's cache holds off the span lists (which the walk
/// counted as live) to `cached`, on their spans' nodes.
fn own_cache_holdings(nodes: &mut [NodeStats]) {
    let cache = thread::current();
    if cache.is_null() {
        return;
    }
    // SAFETY: a non-null current cache is valid and used by this thread alone, which is
    // here and not in the middle of an allocation.
    let cache = unsafe { &*cache };
    cache.for_each_held(|span, objects| {
        let Some(per) = nodes.get_mut(span.node().index()) else {
            return;
        };
        let parts = &mut per.breakdown;
        let bytes = (objects * span.obj_size as usize).min(parts.live);
        parts.live -= bytes;
        parts.cached += bytes;
    });
}

/// Moves the objects the per-CPU back-end caches hold off their spans' lists, and those on
/// the per-CPU stacks (all of which the walk counted as live), to `cached`, on their spans'
/// nodes; returns (bytes moved, bytes mapped for slabs). The stacks are read
/// while other CPUs may be changing them, so a block may be missed or counted just after it
/// left: each node's share is clamped to its `live`.
fn percpu_holdings(nodes: &mut [NodeStats]) -> (usize, usize) {
    crate::percpu::backends_held(|span, objects| {
        if let Some(per) = nodes.get_mut(span.node().index()) {
            let parts = &mut per.breakdown;
            let bytes = (objects * span.obj_size as usize).min(parts.live);
            parts.live -= bytes;
            parts.cached += bytes;
        }
    });
    let mut moved = 0;
    let slab_bytes = crate::percpu::cached(|block, size| {
        let Some(span) = arena::record_of(block as usize) else {
            return;
        };
        // SAFETY: `record_of` returns records inside mapped arena headers.
        let node = unsafe { span.as_ref() }.node().index();
        let Some(per) = nodes.get_mut(node) else {
            return;
        };
        let parts = &mut per.breakdown;
        let bytes = size.min(parts.live);
        parts.live -= bytes;
        parts.cached += bytes;
        moved += bytes;
    });
    (moved, slab_bytes)
}
