//! The re-entrancy proof ARCHITECTURE.md#re-entrancy asks for: a wrapper global allocator counts
//! calls that arrive while the same thread is already inside Tessera. Tessera never calls an
//! allocator, so the count must stay zero through thread start and exit (the pthread key
//! destructor), realloc, huge blocks, processor caches and fork.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static NESTED: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn enter() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    if INSIDE.with(|c| c.replace(true)) {
        NESTED.fetch_add(1, Ordering::Relaxed);
    }
}

fn leave() {
    INSIDE.with(|c| c.set(false));
}

// SAFETY: forwards every call to Tessera unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        enter();
        // SAFETY: forwarded.
        let p = unsafe { tessera::Tessera.alloc(layout) };
        leave();
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        enter();
        // SAFETY: forwarded.
        unsafe { tessera::Tessera.dealloc(ptr, layout) };
        leave();
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        enter();
        // SAFETY: forwarded.
        let p = unsafe { tessera::Tessera.alloc_zeroed(layout) };
        leave();
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        enter();
        // SAFETY: forwarded.
        let p = unsafe { tessera::Tessera.realloc(ptr, layout, new_size) };
        leave();
        p
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn tessera_never_reenters_an_allocator() {
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v: Vec<String> = Vec::new();
                for i in 0..5000 {
                    v.push(format!("{t}-{i}"));
                }
                let mut big = vec![0u8; 100_000];
                big.resize(40 << 20, 1);
                big.resize(50, 0);
                big.shrink_to_fit();
                v.len() + big.len()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut cache = tessera::ProcessorCache::new().unwrap();
    {
        // SAFETY: the guard ends before the cache is dropped.
        let _installed = unsafe { tessera::install_cache(&mut cache) };
        let v: Vec<u32> = (0..1000).collect();
        assert_eq!(v.len(), 1000);
    }
    drop(cache);
    let _ = tessera::stats();
    tessera::collect();
    assert!(
        CALLS.load(Ordering::Relaxed) > 10_000,
        "the wrapper must see the traffic"
    );
    assert_eq!(
        NESTED.load(Ordering::Relaxed),
        0,
        "an allocator call arrived from inside Tessera"
    );
}
