//! Transparent huge pages: which arenas and huge blocks get `MADV_HUGEPAGE` (`TESSERA_THP`).
//!
//! A huge page turns 512 page faults into one and takes TLB pressure off a big heap; it
//! costs residency at 2 MiB granularity, and where the kernel has no free 2 MiB block it
//! may compact memory in the faulting thread (the stalls mimalloc's users report). So
//! `auto` keeps a heap's first [`lean_bytes`] in 4 KiB pages (a small program stays
//! small) and advises the rest (the first arena's once the heap has that much in use:
//! `heap.rs`, `LeanState::Unadvised`), but only where a fault cannot stall: the kernel's `defrag`
//! mode never compacts on a fault (`defer`, `never`), or the arena's node has plenty of
//! free 2 MiB blocks right now (`/proc/buddyinfo`), so a fault takes one without
//! compacting. An arena reserved while huge blocks are scarce gets no advice and stays in
//! 4 KiB pages, as if THP were off. README.md, "Memory policy", has the figures.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tessera_numa::NodeId;
use tessera_sys::fs;

use crate::arena::ARENA_SIZE;

/// Transparent huge pages for arenas and huge blocks: `TESSERA_THP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thp {
    /// No advice for a heap's first [`lean_bytes`]; `MADV_HUGEPAGE` beyond, and on
    /// huge blocks, where a fault in advised memory cannot compact memory synchronously
    /// (see the module documentation).
    Auto,
    /// `MADV_HUGEPAGE` on every arena and huge block.
    Always,
    /// `MADV_NOHUGEPAGE` on every arena and huge block (even when the system's mode is
    /// `always`).
    Never,
}

const AUTO: u8 = 0;
const ALWAYS: u8 = 1;
const NEVER: u8 = 2;
/// `auto` where an advised fault may compact: advise only while free huge blocks abound.
const AUTO_GATED: u8 = 3;
/// Bit 7: the system's THP mode is `always`, so memory without advice gets huge pages too.
const SYSTEM_ALWAYS: u8 = 0x80;

static MODE: AtomicU8 = AtomicU8::new(AUTO_GATED);

/// Under `Thp::Auto`, a heap's first [`lean_bytes`] get no advice: a program whose heap
/// stays within them pays no 2 MiB rounding, and one that outgrows them pays a fault per 4
/// KiB page of them. The page heap carves from the lowest addresses first, so a heap
/// reaches the advised part only when it outgrows this one. Which size is the product's
/// choice (`tessera`'s configuration, `TESSERA_THP_LEAN`): this one is for a Rust program,
/// whose users compare it with mimalloc (which advises huge pages from the start). The
/// runner's five Rust programs took 4,150–4,660 minor faults with 16 MiB (2.0–18x
/// mimalloc's), 460–870 with 2 MiB (0.4–2.0x), at the same peak RSS.
pub const DEFAULT_LEAN_BYTES: usize = 2 << 20;

/// The lean part of `libtessera.so`, the C library, whose users compare a program's peak
/// RSS with glibc's malloc (whose heap grows in 4 KiB pages): measured with 2 MiB, the real
/// programs' peak RSS rose against glibc's from 1.15x to 1.35x (git), 1.01x to 1.20x
/// (redis) and 1.10x to 1.17x (sqlite3), since a small heap scatters over a few huge pages
/// that each become resident whole.
pub const C_LIBRARY_LEAN_BYTES: usize = 16 << 20;

static LEAN: AtomicUsize = AtomicUsize::new(DEFAULT_LEAN_BYTES);

/// The lean part of a heap's first arena under `Thp::Auto` (see [`DEFAULT_LEAN_BYTES`]).
pub fn lean_bytes() -> usize {
    LEAN.load(Ordering::Relaxed)
}

/// Free memory in 2 MiB-or-larger buddy blocks on the arena's node that `auto` asks for
/// before advising a new arena where faults may compact: twice the arena, so its faults
/// find free huge blocks even with other processes taking some meanwhile.
const GATE_FREE_BYTES: usize = 2 * ARENA_SIZE;

/// Sets the policy for arenas and huge blocks mapped from now on. `system_always`: the
/// kernel's own mode is `always`. `advised_faults_stall`: the kernel's `defrag` mode may
/// compact memory in a fault on advised memory (`madvise`, `defer+madvise`, `always`).
/// `lean`: the lean part under `auto`, rounded up to whole huge pages, at most half an
/// arena.
pub fn configure_thp(thp: Thp, system_always: bool, advised_faults_stall: bool, lean: usize) {
    LEAN.store(whole_huge_pages(lean), Ordering::Relaxed);
    let mode = match thp {
        Thp::Auto if advised_faults_stall => AUTO_GATED,
        Thp::Auto => AUTO,
        Thp::Always => ALWAYS,
        Thp::Never => NEVER,
    };
    MODE.store(
        mode | if system_always { SYSTEM_ALWAYS } else { 0 },
        Ordering::Relaxed,
    );
}

/// A lean part of `bytes`: whole huge pages, at most half an arena (the advice starts on a
/// huge page's boundary, and a second arena has no lean part).
fn whole_huge_pages(bytes: usize) -> usize {
    const HUGE_PAGE: usize = 2 << 20;
    bytes.min(ARENA_SIZE / 2).next_multiple_of(HUGE_PAGE)
}

/// Whether memory left without advice gets huge pages anyway (system mode `always`).
pub(crate) fn system_always() -> bool {
    MODE.load(Ordering::Relaxed) & SYSTEM_ALWAYS != 0
}

/// The advice for a new arena of `node`'s heap: huge pages or not, and how many bytes at
/// its start go without advice; `None` for no advice at all. `first` says the heap has no
/// arena yet. Reads `/proc/buddyinfo` in the gated mode (once per 64 MiB arena).
pub(crate) fn arena_advice(node: NodeId, first: bool) -> Option<(bool, usize)> {
    let lean = if first { lean_bytes() } else { 0 };
    match MODE.load(Ordering::Relaxed) & !SYSTEM_ALWAYS {
        ALWAYS => Some((true, 0)),
        NEVER => Some((false, 0)),
        AUTO => Some((true, lean)),
        _ => huge_blocks_abound(node).then_some((true, lean)),
    }
}

/// Whether a huge block's dedicated mapping gets `MADV_HUGEPAGE` (`Some(true)`),
/// `MADV_NOHUGEPAGE` (`Some(false)`) or no advice. Blocks that big
/// (`TESSERA_HUGE_THRESHOLD`, 32 MiB by default) are past the lean part of any heap.
pub(crate) fn huge_block_advice(node: NodeId) -> Option<bool> {
    match MODE.load(Ordering::Relaxed) & !SYSTEM_ALWAYS {
        NEVER => Some(false),
        ALWAYS | AUTO => Some(true),
        _ => huge_blocks_abound(node).then_some(true),
    }
}

/// Whether a heap of `node` that outgrew its lean part may have that part collapsed into huge
/// pages now (`PageHeap::collapse_lean_if_due`): under `auto`, where a fault cannot compact
/// memory or free huge blocks abound (a collapse allocates as a fault in advised memory
/// does); never under `always` (no lean part) or `never`.
pub(crate) fn may_collapse(node: NodeId) -> bool {
    match MODE.load(Ordering::Relaxed) & !SYSTEM_ALWAYS {
        AUTO => true,
        AUTO_GATED => huge_blocks_abound(node),
        _ => false,
    }
}

/// Whether `node` has [`GATE_FREE_BYTES`] free in blocks of 2 MiB or more.
fn huge_blocks_abound(node: NodeId) -> bool {
    let mut buf = [0u8; 1024];
    let text = fs::read_small_file(c"/proc/buddyinfo", &mut buf);
    free_huge_bytes(text, node) >= GATE_FREE_BYTES
}

/// Bytes free in buddy blocks of order 9 (2 MiB with 4 KiB pages) or more on `node`, from
/// `/proc/buddyinfo` text ("Node 0, zone   Normal  15397 12170 ... 1322": free blocks per
/// order, from order 0). A line cut off by the read buffer counts the orders it has; a
/// node with no line counts 0.
pub(crate) fn free_huge_bytes(text: &[u8], node: NodeId) -> usize {
    const HUGE_ORDER: usize = 9;
    // The largest order any kernel configuration lists (arm64 with 64 KiB pages: 13).
    const MAX_ORDER: usize = 16;
    let mut total = 0usize;
    for line in text.split(|&b| b == b'\n') {
        let mut words = line
            .split(|&b| b == b' ' || b == b',')
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"Node".as_slice())
            || words.next().and_then(parse) != Some(node.index())
        {
            continue;
        }
        // "zone", its name, then one count per order.
        // A line longer than any kernel's orders is not buddyinfo's: its extra words must
        // not shift a block size past the word.
        for (order, count) in words.skip(2).enumerate().take(MAX_ORDER + 1) {
            if order >= HUGE_ORDER
                && let Some(count) = parse(count)
            {
                total = total.saturating_add(count.saturating_mul(4096 << order));
            }
        }
    }
    total
}

fn parse(word: &[u8]) -> Option<usize> {
    if word.is_empty() || word.len() > 18 {
        return None;
    }
    word.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDDYINFO: &[u8] = b"\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 
Node 0, zone    DMA32      0      5      2      2      1      2      0      4      4      2    752 
Node 0, zone   Normal  15397  12170   3875   2431   2690   2883   2118   1972   1436    465   1322 
Node 1, zone   Normal    100    100    100    100    100    100    100    100    100      0      1 
";

    #[test]
    fn a_lean_part_is_whole_huge_pages_up_to_half_an_arena() {
        assert_eq!(whole_huge_pages(0), 0);
        assert_eq!(whole_huge_pages(1), 2 << 20);
        assert_eq!(whole_huge_pages(DEFAULT_LEAN_BYTES), DEFAULT_LEAN_BYTES);
        assert_eq!(whole_huge_pages(C_LIBRARY_LEAN_BYTES), C_LIBRARY_LEAN_BYTES);
        assert_eq!(whole_huge_pages((5 << 20) + 1), 6 << 20);
        assert_eq!(whole_huge_pages(usize::MAX), ARENA_SIZE / 2);
    }

    #[test]
    fn counts_blocks_of_2_mib_and_more_on_the_node() {
        // Node 0: order 9 (2 MiB) 1 + 2 + 465, order 10 (4 MiB) 3 + 752 + 1322.
        let want0 = (1 + 2 + 465) * (2 << 20) + (3 + 752 + 1322) * (4 << 20);
        assert_eq!(free_huge_bytes(BUDDYINFO, NodeId::ZERO), want0);
        assert_eq!(free_huge_bytes(BUDDYINFO, NodeId::new(1)), 4 << 20);
        assert_eq!(free_huge_bytes(BUDDYINFO, NodeId::new(2)), 0);
    }

    #[test]
    fn a_cut_or_odd_text_counts_what_it_has() {
        assert_eq!(free_huge_bytes(b"", NodeId::ZERO), 0);
        assert_eq!(free_huge_bytes(b"garbage\nNode x, zone\n", NodeId::ZERO), 0);
        // Cut after order 9.
        let cut = b"Node 0, zone Normal 1 1 1 1 1 1 1 1 1 7";
        assert_eq!(free_huge_bytes(cut, NodeId::ZERO), 7 * (2 << 20));
        // A line with far more words than orders counts only the orders (no shift past the
        // word: this runs on the allocator's path).
        let long = [b"Node 0, zone Normal".as_slice(), &b" 1".repeat(100)].concat();
        let want: usize = (9..=16).map(|o| 4096usize << o).sum();
        assert_eq!(free_huge_bytes(&long, NodeId::ZERO), want);
    }
}
