//! The memory limit through the Rust API (issue #13, "A memory limit"): with a hard limit
//! set, allocations fail (null from `GlobalAlloc`, which `Vec` and `Box` hand to
//! `handle_alloc_error`) before committed memory crosses it; freeing makes room again;
//! removing the limit lifts it. Its own test binary without libtest's harness (Cargo.toml
//! says why), one test: the limit is process-wide, so no other thread may allocate while
//! memory is at the limit.

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const BLOCK: Layout = match Layout::from_size_align(4096, 8) {
    Ok(layout) => layout,
    Err(_) => panic!(),
};

/// `Vec::try_reserve_exact` on an empty vector: the fallible allocation path `Vec` takes.
fn try_vec(bytes: usize) -> Result<Vec<u8>, std::collections::TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes).map(|()| v)
}

fn fill(blocks: &mut Vec<usize>, cap: usize) {
    while blocks.len() < cap {
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { A.alloc(BLOCK) };
        if p.is_null() {
            break;
        }
        // SAFETY: a fresh block of 4096 bytes.
        unsafe { p.write_bytes(0x5a, 4096) };
        blocks.push(p as usize);
    }
}

fn main() {
    // A failed assertion's report allocates (its message, the backtrace's working
    // directory): lift the limit first, or the report itself fails and the process hangs in
    // the allocation-error hook, waiting on the backtrace lock the panic holds.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tessera::set_memory_limit(None);
        report(info)
    }));
    the_hard_limit_holds_and_frees_make_room();
    println!("test the_hard_limit_holds_and_frees_make_room ... ok");
}

fn the_hard_limit_holds_and_frees_make_room() {
    const ROOM: usize = 64 << 20;
    // Everything the test keeps is allocated before the heap is full.
    let mut blocks = Vec::with_capacity(2 * ROOM / 4096);
    let mut kept = Vec::with_capacity(2 * ROOM / 4096);
    tessera::collect();
    let base = tessera::memory_limits().committed;
    let limit = base + ROOM;
    tessera::set_memory_limit(Some(limit));
    let limits = tessera::memory_limits();
    assert_eq!(limits.hard, Some(limit));
    assert_eq!(
        limits.soft,
        Some(limit / 100 * 90),
        "the soft limit follows at 90%"
    );

    fill(&mut blocks, 2 * ROOM / 4096);
    let live = blocks.len() * 4096;
    let committed = tessera::memory_limits().committed;
    assert!(
        committed <= limit,
        "committed {committed} over the limit {limit}"
    );
    assert!(
        live >= ROOM / 10 * 8,
        "failed early: {live} bytes live of {ROOM} bytes of room"
    );
    assert!(
        try_vec(32 << 20).is_err(),
        "a block that does not fit is refused"
    );
    assert!(
        try_vec(ROOM).is_err(),
        "a huge block that does not fit is refused"
    );

    // Free half: allocation works again, up to the limit again.
    for (i, &p) in blocks.iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: each block is live and freed once.
            unsafe { A.dealloc(p as *mut u8, BLOCK) };
        } else {
            kept.push(p);
        }
    }
    let half = kept.len();
    fill(&mut kept, 2 * ROOM / 4096);
    assert!(
        kept.len() > half + half / 2,
        "{} blocks after freeing half of {}",
        kept.len(),
        2 * half
    );
    let committed = tessera::memory_limits().committed;
    assert!(
        committed <= limit,
        "committed {committed} over the limit {limit} after the refill"
    );

    // No limit: the same request succeeds.
    tessera::set_memory_limit(None);
    assert_eq!(tessera::memory_limits().hard, None);
    let big = try_vec(32 << 20);
    assert!(big.is_ok());
    drop(big);
    for p in kept {
        // SAFETY: each block is live and freed once.
        unsafe { A.dealloc(p as *mut u8, BLOCK) };
    }
}
