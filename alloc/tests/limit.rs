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

/// `assert!` for checks made while a limit is set: a failed check's report allocates (its
/// message, the backtrace's working directory), which at the limit would fail in turn
/// ("memory allocation of 20 bytes failed") and hide the check that failed, so the limit is
/// lifted first.
macro_rules! check {
    ($cond:expr, $($report:tt)+) => {
        if !$cond {
            tessera::set_memory_limit(None);
            panic!($($report)+);
        }
    };
}

/// Runs the test in this process, then (unless this is that run) once more in a child with
/// the per-CPU caches, whose slabs are metadata made on a thread's first allocation on a
/// CPU: made at the limit, they once took committed memory over it.
fn main() {
    the_hard_limit_holds_and_frees_make_room();
    let mode = std::env::var("TESSERA_CACHE").unwrap_or_default();
    println!("test the_hard_limit_holds_and_frees_make_room ({mode:?} caches) ... ok");
    if mode != "percpu" {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("TESSERA_CACHE", "percpu")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("\"percpu\" caches) ... ok"),
            "per-CPU run: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{stdout}");
    }
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
    check!(limits.hard == Some(limit), "hard limit {:?}", limits.hard);
    check!(
        limits.soft == Some(limit / 100 * 90),
        "the soft limit follows at 90%: {:?}",
        limits.soft
    );

    fill(&mut blocks, 2 * ROOM / 4096);
    let live = blocks.len() * 4096;
    let committed = tessera::memory_limits().committed;
    check!(
        committed <= limit,
        "committed {committed} over the limit {limit}"
    );
    check!(
        live >= ROOM / 10 * 8,
        "failed early: {live} bytes live of {ROOM} bytes of room"
    );
    check!(
        try_vec(32 << 20).is_err(),
        "a block that does not fit is refused"
    );
    check!(
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
    check!(
        kept.len() > half + half / 2,
        "{} blocks after freeing half of {}",
        kept.len(),
        2 * half
    );
    let committed = tessera::memory_limits().committed;
    check!(
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
