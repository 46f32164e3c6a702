//! Fuzz target: cross-thread frees. The input is cut in two and each half is replayed by a
//! thread of its own against one shared table of slots, so a block one thread allocated is
//! often resized or freed by the other (remote frees, drained by the owner later), while a
//! shadow map of every live block checks that no two ever overlap and that contents survive
//! until their free. The main thread frees what is left, a third owner.
//!
//! Encoding, per thread, one operation per step:
//! - `op % 4 == 0`: alloc into slot `arg % SLOTS` (freeing what was there), size and align
//!   as in `ops.rs`
//! - `op % 4 == 1`: free slot `arg`, sized (`dealloc`) or unsized (`free`) by the op's bit 2
//! - `op % 4 == 2`: realloc slot `arg` to a new size
//! - `op % 4 == 3`: a burst: `arg % 64` blocks of one size allocated and freed by this
//!   thread, which turns its cache over (refills, flushes, draining remote frees)
#![no_main]

use std::collections::BTreeMap;
use std::sync::Mutex;

#[path = "../ops.rs"]
#[allow(dead_code)]
mod ops;

use ops::{Block, Bytes, fill, holds};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const SLOTS: usize = 32;

struct Shared {
    slots: [Mutex<Option<Block>>; SLOTS],
    /// Every live block, address to size: the overlap check across both threads.
    shadow: Mutex<BTreeMap<usize, usize>>,
}

impl Shared {
    fn insert(&self, addr: usize, size: usize) {
        let mut shadow = self.shadow.lock().unwrap();
        let end = addr + size.max(1);
        if let Some((&a, &s)) = shadow.range(..=addr).next_back() {
            assert!(
                a + s.max(1) <= addr,
                "block {addr:#x}+{size} overlaps {a:#x}+{s}"
            );
        }
        if let Some((&a, &s)) = shadow.range(addr..).next() {
            assert!(end <= a, "block {addr:#x}+{size} overlaps {a:#x}+{s}");
        }
        shadow.insert(addr, size);
    }

    fn remove(&self, addr: usize) {
        self.shadow.lock().unwrap().remove(&addr);
    }

    /// Checks and frees `b`; removed from the shadow first, so that a racing allocation of
    /// the same address is not taken for an overlap.
    fn release(&self, b: Block, sized: bool) {
        assert!(
            holds(b.addr, b.size, b.tag, b.size),
            "contents changed while live"
        );
        self.remove(b.addr);
        // SAFETY: a live block with this size and alignment, given up here.
        unsafe {
            if sized {
                tessera::dealloc(b.addr as *mut u8, b.size, b.align);
            } else {
                tessera::free(b.addr as *mut u8);
            }
        }
    }
}

fn replay(shared: &Shared, data: &[u8], thread_tag: u8) {
    let mut bytes = Bytes { data };
    let mut tag = thread_tag;
    while let Some(op) = bytes.byte() {
        let Some(arg) = bytes.byte() else { break };
        let slot = &shared.slots[arg as usize % SLOTS];
        match op % 4 {
            0 => {
                let (Some(size), Some(a)) = (bytes.size(), bytes.byte()) else {
                    break;
                };
                let align = 1usize << (a % 13);
                let p = tessera::alloc(size, align);
                assert!(!p.is_null(), "alloc({size}, {align}) failed");
                assert_eq!(p as usize % align, 0);
                shared.insert(p as usize, size);
                tag = tag.wrapping_add(2);
                let b = Block {
                    addr: p as usize,
                    size,
                    align,
                    tag,
                };
                fill(&b);
                let old = slot.lock().unwrap().replace(b);
                if let Some(old) = old {
                    shared.release(old, op & 4 != 0);
                }
            }
            1 => {
                let taken = slot.lock().unwrap().take();
                if let Some(b) = taken {
                    shared.release(b, op & 4 != 0);
                }
            }
            2 => {
                let Some(size) = bytes.size() else { break };
                let mut guard = slot.lock().unwrap();
                let Some(b) = guard.take() else { continue };
                assert!(holds(b.addr, b.size, b.tag, b.size));
                shared.remove(b.addr);
                // SAFETY: a live block with this size and alignment, ours under the lock.
                let p = unsafe { tessera::realloc(b.addr as *mut u8, b.size, b.align, size) };
                assert!(!p.is_null());
                assert_eq!(p as usize % b.align, 0);
                assert!(
                    holds(p as usize, size, b.tag, b.size),
                    "realloc lost contents"
                );
                shared.insert(p as usize, size);
                let nb = Block {
                    addr: p as usize,
                    size,
                    align: b.align,
                    tag: b.tag,
                };
                fill(&nb);
                *guard = Some(nb);
            }
            _ => {
                let Some(size) = bytes.size() else { break };
                let size = size.min(4096);
                let mut burst = [0usize; 64];
                let n = arg as usize % burst.len();
                for p in &mut burst[..n] {
                    *p = tessera::alloc(size, 8) as usize;
                    assert!(*p != 0);
                    shared.insert(*p, size);
                }
                for &p in &burst[..n] {
                    shared.remove(p);
                    // SAFETY: allocated just above with this layout.
                    unsafe { tessera::dealloc(p as *mut u8, size, 8) };
                }
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let shared = Shared {
        slots: std::array::from_fn(|_| Mutex::new(None)),
        shadow: Mutex::new(BTreeMap::new()),
    };
    let (first, second) = data.split_at(data.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| replay(&shared, first, 0));
        s.spawn(|| replay(&shared, second, 1));
    });
    for slot in &shared.slots {
        if let Some(b) = slot.lock().unwrap().take() {
            shared.release(b, false);
        }
    }
});
