//! Turns fuzzer bytes into a sequence of allocator operations and checks every invariant a
//! caller relies on: no overlap, alignment, zeroed memory, contents kept across realloc.
//! Used by the `alloc_ops` and `threads` fuzz targets and, on the committed seed corpus, by
//! an ordinary test (`alloc/tests/fuzz_corpus.rs`).
//!
//! Encoding, one operation per step: an opcode byte, then its arguments.
//! - `op % 4 == 0`: alloc, size from 3 bytes (`Bytes::size`), align from 1
//! - `op % 4 == 1`: alloc_zeroed, likewise
//! - `op % 4 == 2`: realloc block `arg % live`, new size like alloc
//! - `op % 4 == 3`: free block `arg % live`
//!
//! Cheap by design, so that a fuzzer makes thousands of runs a second (issue #15, item 7):
//! sizes are mostly small-class sizes, a large size (up to 1 MiB) is one draw in 64 and a
//! huge one (its own mapping, made and unmapped per input) one in 256; contents are written
//! and checked only at sampled places (`SAMPLE` bytes at each end and one word in the
//! middle), which still catches a block that overlaps another or lost its data in a move;
//! overlap is looked up in an ordered map instead of a scan of every live block. Before,
//! a zeroed large block (every page faulted in, then cleared) and the scans took most of
//! the time.

use std::collections::BTreeMap;

/// Bytes written and checked at each end of a block.
const SAMPLE: usize = 32;

pub(crate) struct Block {
    pub(crate) addr: usize,
    pub(crate) size: usize,
    pub(crate) align: usize,
    pub(crate) tag: u8,
}

pub(crate) struct Bytes<'a> {
    pub(crate) data: &'a [u8],
}

impl Bytes<'_> {
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    pub(crate) fn size(&mut self) -> Option<usize> {
        let lo = self.byte()? as usize;
        let hi = self.byte()? as usize;
        let scale = self.byte()?;
        let base = lo | (hi << 8);
        Some(match scale {
            0..=159 => base % 1100,
            160..=251 => base % (32 << 10) + 1,
            252..=254 => base * 16 % (1 << 20),
            _ => (32 << 20) + base * 64,
        })
    }
}

/// The offsets of `size` bytes that carry a block's tag: both ends and one middle word.
fn sampled(size: usize) -> impl Iterator<Item = usize> {
    let front = 0..size.min(SAMPLE);
    let back = size.saturating_sub(SAMPLE).max(SAMPLE)..size;
    let mid = size / 2;
    let middle = (size > 2 * SAMPLE + 8).then_some(mid & !7..(mid & !7) + 8);
    front.chain(back).chain(middle.into_iter().flatten())
}

pub(crate) fn fill(b: &Block) {
    for i in sampled(b.size) {
        // SAFETY: the block is live and `size` long; `i < size`.
        unsafe { *((b.addr + i) as *mut u8) = b.tag };
    }
}

/// Whether the sampled bytes of the first `size` bytes at `addr` still hold `tag`, for a
/// block that was `original` bytes long when it was filled (a shrinking realloc keeps the
/// front; a growing one only the old block's samples).
pub(crate) fn holds(addr: usize, size: usize, tag: u8, original: usize) -> bool {
    let kept = size.min(original);
    sampled(original)
        .filter(|&i| i < kept)
        // SAFETY: the block is live and at least `kept` long.
        .all(|i| unsafe { *((addr + i) as *const u8) } == tag)
}

/// Whether the sampled bytes of a fresh zeroed block are zero.
pub(crate) fn zeroed(addr: usize, size: usize) -> bool {
    // SAFETY: the block is live and `size` long.
    sampled(size).all(|i| unsafe { *((addr + i) as *const u8) } == 0)
}

/// Checks that `addr + size` overlaps no block of `spans` (start to size), then adds it.
pub(crate) fn no_overlap(spans: &mut BTreeMap<usize, usize>, addr: usize, size: usize) {
    if let Some((&a, &s)) = spans.range(..=addr).next_back() {
        assert!(
            a + s.max(1) <= addr,
            "block {addr:#x}+{size} overlaps {a:#x}+{s}"
        );
    }
    if let Some((&a, &s)) = spans.range(addr..).next() {
        assert!(
            addr + size.max(1) <= a,
            "block {addr:#x}+{size} overlaps {a:#x}+{s}"
        );
    }
    spans.insert(addr, size);
}

/// Runs the operations `data` encodes, panicking on any broken invariant.
pub(crate) fn run(data: &[u8]) {
    let mut bytes = Bytes { data };
    let mut live: Vec<Block> = Vec::new();
    let mut spans = BTreeMap::new();
    let mut tag = 0u8;
    while let Some(op) = bytes.byte() {
        match op % 4 {
            0 | 1 => {
                let (Some(size), Some(a)) = (bytes.size(), bytes.byte()) else {
                    break;
                };
                // Alignments above a page are rare, as sizes above the small classes are.
                let align = 1usize << (a % 18).min(if a >= 224 { 17 } else { 12 });
                let zeroed = op % 4 == 1;
                let p = if zeroed {
                    tessera::alloc_zeroed(size, align)
                } else {
                    tessera::alloc(size, align)
                };
                assert!(!p.is_null(), "alloc({size}, {align}) failed");
                assert_eq!(p as usize % align, 0);
                if zeroed {
                    assert!(self::zeroed(p as usize, size), "alloc_zeroed not zeroed");
                }
                no_overlap(&mut spans, p as usize, size);
                tag = tag.wrapping_add(1);
                let b = Block {
                    addr: p as usize,
                    size,
                    align,
                    tag,
                };
                fill(&b);
                live.push(b);
            }
            2 => {
                let (Some(pick), Some(size)) = (bytes.byte(), bytes.size()) else {
                    break;
                };
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(pick as usize % live.len());
                assert!(holds(b.addr, b.size, b.tag, b.size));
                spans.remove(&b.addr);
                // SAFETY: a live block with this size and alignment.
                let p = unsafe { tessera::realloc(b.addr as *mut u8, b.size, b.align, size) };
                assert!(!p.is_null());
                assert_eq!(p as usize % b.align, 0);
                assert!(
                    holds(p as usize, size, b.tag, b.size),
                    "realloc lost contents"
                );
                no_overlap(&mut spans, p as usize, size);
                let nb = Block {
                    addr: p as usize,
                    size,
                    align: b.align,
                    tag: b.tag,
                };
                fill(&nb);
                live.push(nb);
            }
            _ => {
                let Some(pick) = bytes.byte() else { break };
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(pick as usize % live.len());
                assert!(
                    holds(b.addr, b.size, b.tag, b.size),
                    "contents changed while live"
                );
                spans.remove(&b.addr);
                // SAFETY: a live block with this size and alignment.
                unsafe { tessera::dealloc(b.addr as *mut u8, b.size, b.align) };
            }
        }
    }
    for b in live {
        assert!(holds(b.addr, b.size, b.tag, b.size));
        // SAFETY: a live block.
        unsafe { tessera::free(b.addr as *mut u8) };
    }
}
