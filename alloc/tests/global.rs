//! Tessera as the global allocator of a std-heavy program: collections, strings, threads,
//! channels, all checked for content.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[test]
fn collections_and_strings() {
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..20_000u64 {
        map.insert(format!("key-{i}"), vec![i; (i % 37) as usize]);
        tree.insert(i * 7 % 1009, i.to_string());
    }
    for i in 0..20_000u64 {
        let v = &map[&format!("key-{i}")];
        assert_eq!(v.len(), (i % 37) as usize);
        assert!(v.iter().all(|&x| x == i));
    }
    assert_eq!(tree.len(), 1009);
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
    }
    assert_eq!(
        s.len(),
        (0..10_000).map(|i: i32| i.to_string().len()).sum::<usize>()
    );
    let mut dq: VecDeque<Box<[u8]>> = VecDeque::new();
    for i in 0..5000usize {
        dq.push_back(vec![i as u8; i % 3000 + 1].into_boxed_slice());
        if i % 3 == 0 {
            let b = dq.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b[0]));
        }
    }
}

#[test]
fn threads_and_channels_move_memory_between_threads() {
    let (tx, rx) = mpsc::channel::<Vec<u64>>();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..5000u64 {
                    tx.send(vec![t * 1_000_000 + i; (i % 64 + 1) as usize])
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut total = 0;
    for v in rx {
        assert!(v.iter().all(|&x| x == v[0]));
        total += 1;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(total, 20_000);
}

#[test]
fn large_and_huge_blocks_grow_and_keep_contents() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..3_000_000u64 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
    let zeroed = vec![0u8; 64 << 20];
    assert!(zeroed.iter().step_by(4096).all(|&b| b == 0));
}

/// An alignment of at most 8 takes its own entry point (`alloc_word`), which skips the
/// rounding to the alignment: every size up to the largest fast one gets the same block size
/// as the rounded path gives it (an alignment of 16 rounds a multiple of 16 to itself, so
/// `size` rounded up to 16 is the rounded path's reference), aligned, through `alloc`,
/// `alloc_layout` and the global allocator alike.
#[test]
fn word_aligned_requests_get_the_rounded_paths_blocks() {
    // A heap-profile sample is a block of a size of its own: none in this test.
    tessera::profile::set_rate(0);
    for size in 1..=1100usize {
        let reference = tessera::alloc(size.next_multiple_of(16), 16);
        assert!(!reference.is_null());
        let expect = tessera::block_size(reference);
        for align in [1, 2, 4, 8] {
            let layout = std::alloc::Layout::from_size_align(size, align).unwrap();
            for p in [
                tessera::alloc(size, align),
                tessera::alloc_layout(layout),
                // SAFETY: a non-zero size.
                unsafe { std::alloc::alloc(layout) },
            ] {
                assert!(!p.is_null());
                assert_eq!(p as usize % 8, 0, "size {size} align {align}");
                let got = tessera::block_size(p).unwrap();
                assert!(got >= size, "size {size} align {align}: block of {got}");
                if size % 16 == 0 {
                    assert_eq!(Some(got), expect, "size {size} align {align}");
                }
                // SAFETY: just allocated with `layout`.
                unsafe { std::alloc::dealloc(p, layout) };
            }
        }
        // SAFETY: allocated above with this size and alignment.
        unsafe { tessera::dealloc(reference, size.next_multiple_of(16), 16) };
    }
}
