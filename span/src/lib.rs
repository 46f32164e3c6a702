//! Aligned arenas, the page heap of spans and the page map behind Tessera
//! (ARCHITECTURE.md#malloc, steps 4–5, and ARCHITECTURE.md#free, step 1). The OS calls
//! under it (mapping, advice, the futex lock, the clock) are `tessera-sys`'s.
//!
//! - [`arena`]: 64 MiB aligned arenas whose headers hold the page map and span records.
//! - [`heap`]: the page heap of 8 KiB pages, coalescing, purging on a decay curve.
//! - [`list`]: the intrusive list of span records every layer files spans on.
//! - [`commit`]: the memory Tessera holds from the OS, its limits, the purger's wake-ups.
//! - [`huge`]: dedicated mappings for huge blocks, resized with `mremap`.
//! - [`placement`]: NUMA binding of fresh arenas and huge mappings.
//! - [`thp`]: which arenas and huge blocks get transparent huge pages.

pub mod arena;
pub mod commit;
pub mod heap;
pub mod huge;
pub mod list;
pub mod placement;
pub mod span;
pub mod thp;

pub use arena::{ARENA_SIZE, PAGE_SHIFT, PAGE_SIZE, span_of};
pub use heap::{Allocated, PageHeap, PageHeapStats, live_span_of};
pub use list::SpanList;
pub use span::{Span, SpanKind};

/// A transparent huge page on x86-64 (and the 2 MiB granule purges keep whole where
/// arenas have them).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;
