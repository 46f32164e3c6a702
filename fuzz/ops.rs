//! Turns fuzzer bytes into a sequence of allocator operations and checks every invariant a
//! caller relies on: no overlap, alignment, zeroed memory, contents kept across realloc.
//! Used by the fuzz target and, on the committed seed corpus, by an ordinary test.
//!
//! Encoding, one operation per step: an opcode byte, then its arguments.
//! - `op % 4 == 0`: alloc, size from 2 bytes (scaled by a third byte's class), align from 1
//! - `op % 4 == 1`: alloc_zeroed, likewise
//! - `op % 4 == 2`: realloc block `arg % live`, new size like alloc
//! - `op % 4 == 3`: free block `arg % live`

struct Block {
    addr: usize,
    size: usize,
    align: usize,
    tag: u8,
}

struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn size(&mut self) -> Option<usize> {
        let lo = self.byte()? as usize;
        let hi = self.byte()? as usize;
        let scale = self.byte()?;
        let base = lo | (hi << 8);
        Some(match scale % 8 {
            0..=3 => base % 1100,
            4 | 5 => base % 40_000,
            6 => base * 16 % (1 << 20),
            _ => (32 << 20) + base * 64,
        })
    }
}

fn fill(b: &Block) {
    // SAFETY: the block is live and `size` long.
    unsafe {
        std::ptr::write_bytes(b.addr as *mut u8, b.tag, b.size.min(4096));
        if b.size > 4096 {
            std::ptr::write_bytes((b.addr + b.size - 4096) as *mut u8, b.tag, 4096);
        }
    }
}

fn holds(addr: usize, size: usize, tag: u8, original: usize) -> bool {
    let front = size.min(4096).min(original);
    // SAFETY: the block is live and at least `size` long.
    let ok_front = (0..front).all(|i| unsafe { *((addr + i) as *const u8) } == tag);
    let ok_back = size <= 4096
        || size != original
        // SAFETY: as above.
        || (size - 4096..size).all(|i| unsafe { *((addr + i) as *const u8) } == tag);
    ok_front && ok_back
}

fn no_overlap(live: &[Block], addr: usize, size: usize) {
    for b in live {
        let apart = addr + size.max(1) <= b.addr || b.addr + b.size.max(1) <= addr;
        assert!(
            apart,
            "block {addr:#x}+{size} overlaps {:#x}+{}",
            b.addr, b.size
        );
    }
}

/// Runs the operations `data` encodes, panicking on any broken invariant.
pub(crate) fn run(data: &[u8]) {
    let mut bytes = Bytes { data };
    let mut live: Vec<Block> = Vec::new();
    let mut tag = 0u8;
    while let Some(op) = bytes.byte() {
        match op % 4 {
            0 | 1 => {
                let (Some(size), Some(a)) = (bytes.size(), bytes.byte()) else {
                    break;
                };
                let align = 1usize << (a % 18);
                let zeroed = op % 4 == 1;
                let p = if zeroed {
                    tessera::alloc_zeroed(size, align)
                } else {
                    tessera::alloc(size, align)
                };
                assert!(!p.is_null(), "alloc({size}, {align}) failed");
                assert_eq!(p as usize % align, 0);
                if zeroed {
                    // SAFETY: a fresh block of `size` bytes.
                    assert!((0..size.min(8192)).all(|i| unsafe { *p.add(i) } == 0));
                }
                no_overlap(&live, p as usize, size);
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
                // SAFETY: a live block with this size and alignment.
                let p = unsafe { tessera::realloc(b.addr as *mut u8, b.size, b.align, size) };
                assert!(!p.is_null());
                assert_eq!(p as usize % b.align, 0);
                assert!(
                    holds(p as usize, b.size.min(size), b.tag, b.size),
                    "realloc lost contents"
                );
                no_overlap(&live, p as usize, size);
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
