//! A stack given back to the pool keeps only its hot pages; `trim` drops those too. Checked
//! page by page with `mincore`.

use corosensei::Coroutine;
use tessera_stacks::{PooledStack, StackCache};

/// Recurses, touching the stack on the way down, until fewer than `stop` bytes remain.
#[inline(never)]
fn dig(stop: usize) -> usize {
    let buf = std::hint::black_box([7u8; 1024]);
    if tessera_stacks::remaining_stack().unwrap() < stop {
        return buf[0] as usize;
    }
    std::hint::black_box(dig(stop)) + buf[1] as usize
}

/// Runs a coroutine that uses about `kib` KiB of `stack`, and hands the stack back.
fn run_deep(stack: PooledStack, kib: usize) -> PooledStack {
    let stop = stack.usable_size() - (kib << 10);
    let mut co = Coroutine::<(), (), usize, _>::with_stack(stack, move |_, ()| dig(stop));
    co.resume(());
    co.into_stack()
}

/// The hot watermark this process runs with (`TESSERA_STACK_HOT_KB`, 8 KiB by default).
fn hot_bytes() -> usize {
    let kib = std::env::var("TESSERA_STACK_HOT_KB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(8);
    (kib << 10).next_multiple_of(tessera_sys::mem::page_size())
}

#[test]
fn released_stack_keeps_only_hot_pages() {
    let mut cache = StackCache::new();
    let stack = tessera_stacks::acquire_in(&mut cache, 256 << 10).unwrap();
    let id = stack.id();
    let stack = run_deep(stack, 200);
    let deep = stack.resident_bytes();
    assert!(deep >= 190 << 10, "recursion made {deep} bytes resident");

    cache.release(stack);
    // The cache is LIFO, so the same stack comes back.
    let again = tessera_stacks::acquire_in(&mut cache, 256 << 10).unwrap();
    assert_eq!(again.id(), id);
    let shrunk = again.resident_bytes();
    // The pages within the watermark (8 KiB by default), which the recursion touched, stay.
    assert_eq!(shrunk, hot_bytes(), "resident after release");

    cache.release(again);
    assert_eq!(cache.trim(), 1);
    let trimmed = tessera_stacks::acquire_in(&mut cache, 256 << 10).unwrap();
    assert_eq!(trimmed.id(), id);
    assert_eq!(trimmed.resident_bytes(), 0);
}

#[test]
fn dropped_stack_shrinks_and_global_trim_empties_the_pool() {
    let stack = tessera_stacks::acquire(1 << 20).unwrap();
    let id = stack.id();
    let stack = run_deep(stack, 600);
    assert!(stack.resident_bytes() >= 590 << 10);
    drop(stack); // back to this thread's default cache, shrunk
    let again = tessera_stacks::acquire(1 << 20).unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.resident_bytes(), hot_bytes());
    drop(again);
    assert!(tessera_stacks::trim() >= 1);
    let again = tessera_stacks::acquire(1 << 20).unwrap();
    assert_eq!(again.resident_bytes(), 0);
}
