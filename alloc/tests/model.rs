//! A proptest state machine of alloc / alloc_zeroed / realloc / free checked against a
//! shadow map: blocks never overlap, alignment is honoured, zeroed blocks read zero, and
//! contents survive realloc.

use std::collections::BTreeMap;

use proptest::prelude::*;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_log2: u32,
        zeroed: bool,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
    Free {
        pick: usize,
    },
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1usize..=256,
        4 => 257usize..=32 << 10,
        2 => (32usize << 10) + 1..=1 << 20,
        1 => (32usize << 20)..=(34 << 20),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size_strategy(), 0u32..=17, any::<bool>())
            .prop_map(|(size, align_log2, zeroed)| Op::Alloc { size, align_log2, zeroed }),
        3 => (any::<usize>(), size_strategy()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
    ]
}

struct Block {
    size: usize,
    align: usize,
    seed: u8,
}

fn fill(ptr: *mut u8, size: usize, seed: u8) {
    // Write the whole block for small ones; first and last 4 KiB plus a stride for big ones.
    for i in touched(size) {
        // SAFETY: `i < size` and the block is live.
        unsafe { ptr.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn check(ptr: *mut u8, size: usize, seed: u8) -> bool {
    check_prefix(ptr, size, size, seed)
}

/// Checks the bytes `fill(_, size, seed)` wrote that lie below `kept`.
fn check_prefix(ptr: *mut u8, size: usize, kept: usize, seed: u8) -> bool {
    // SAFETY: `i < kept` and the block is live and at least `kept` long.
    touched(size)
        .filter(|&i| i < kept)
        .all(|i| unsafe { ptr.add(i).read() } == seed.wrapping_add(i as u8))
}

fn touched(size: usize) -> impl Iterator<Item = usize> {
    let head = size.min(4096);
    let tail_start = size.saturating_sub(4096).max(head);
    (0..head)
        .chain((head..tail_start).step_by(4093))
        .chain(tail_start..size)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut live: BTreeMap<usize, Block> = BTreeMap::new();
    let mut seed = 0u8;
    for op in ops {
        match op {
            Op::Alloc {
                size,
                align_log2,
                zeroed,
            } => {
                let align = 1usize << align_log2;
                let ptr = if zeroed {
                    tessera::alloc_zeroed(size, align)
                } else {
                    tessera::alloc(size, align)
                };
                prop_assert!(!ptr.is_null());
                prop_assert_eq!(ptr as usize % align, 0, "alignment {}", align);
                let addr = ptr as usize;
                if let Some((&prev, b)) = live.range(..addr).next_back() {
                    prop_assert!(prev + b.size <= addr, "overlaps the block before");
                }
                if let Some((&next, _)) = live.range(addr..).next() {
                    prop_assert!(addr + size <= next, "overlaps the block after");
                }
                if zeroed {
                    // SAFETY: the block is live and `size` long.
                    let all_zero = touched(size).all(|i| unsafe { ptr.add(i).read() } == 0);
                    prop_assert!(all_zero, "alloc_zeroed returned non-zero bytes");
                }
                // SAFETY: a live block.
                let usable = unsafe { tessera::usable_size(ptr) };
                prop_assert!(usable >= size);
                seed = seed.wrapping_add(1);
                fill(ptr, size, seed);
                live.insert(addr, Block { size, align, seed });
            }
            Op::Realloc { pick, size } => {
                if live.is_empty() {
                    continue;
                }
                let addr = *live.keys().nth(pick % live.len()).unwrap();
                let b = live.remove(&addr).unwrap();
                prop_assert!(check(addr as *mut u8, b.size, b.seed));
                // SAFETY: a live block with this size and alignment.
                let ptr = unsafe { tessera::realloc(addr as *mut u8, b.size, b.align, size) };
                prop_assert!(!ptr.is_null());
                prop_assert_eq!(ptr as usize % b.align, 0);
                let kept = b.size.min(size);
                prop_assert!(
                    check_prefix(ptr, b.size, kept, b.seed),
                    "contents lost in realloc"
                );
                let new = ptr as usize;
                if let Some((&prev, p)) = live.range(..new).next_back() {
                    prop_assert!(prev + p.size <= new);
                }
                if let Some((&next, _)) = live.range(new..).next() {
                    prop_assert!(new + size <= next);
                }
                fill(ptr, size, b.seed);
                live.insert(
                    new,
                    Block {
                        size,
                        align: b.align,
                        seed: b.seed,
                    },
                );
            }
            Op::Free { pick } => {
                if live.is_empty() {
                    continue;
                }
                let addr = *live.keys().nth(pick % live.len()).unwrap();
                let b = live.remove(&addr).unwrap();
                prop_assert!(
                    check(addr as *mut u8, b.size, b.seed),
                    "contents changed while live"
                );
                // SAFETY: a live block with this size and alignment.
                unsafe { tessera::dealloc(addr as *mut u8, b.size, b.align) };
            }
        }
    }
    for (addr, b) in live {
        prop_assert!(check(addr as *mut u8, b.size, b.seed));
        // SAFETY: a live block.
        unsafe { tessera::free(addr as *mut u8) };
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn alloc_realloc_free_model(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        run(ops)?;
    }
}

/// `alloc_zeroed` takes fresh objects of a zeroed span without writing them; the objects a
/// program dirtied and freed must still come back zeroed when the fresh ones run out.
#[test]
fn zeroed_blocks_read_zero_after_reuse() {
    for size in [8usize, 48, 64, 1000, 4096, 20_000] {
        let dirty: Vec<*mut u8> = (0..2000).map(|_| tessera::alloc(size, 8)).collect();
        for &p in &dirty {
            assert!(!p.is_null());
            // SAFETY: a live block of `size` bytes.
            unsafe { p.write_bytes(0xa5, size) };
        }
        for &p in &dirty {
            // SAFETY: live, given up here.
            unsafe { tessera::free(p) };
        }
        let zeroed: Vec<*mut u8> = (0..6000).map(|_| tessera::alloc_zeroed(size, 8)).collect();
        for &p in &zeroed {
            assert!(!p.is_null());
            // SAFETY: a live block of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "size {size}: a dirty zeroed block"
            );
        }
        for &p in &zeroed {
            // SAFETY: live, given up here.
            unsafe { tessera::free(p) };
        }
    }
}
