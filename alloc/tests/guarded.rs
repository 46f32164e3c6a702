//! Sampled guarded allocations (`TESSERA_GUARDED_SAMPLE_RATE`) through the Rust
//! `GlobalAlloc`: each scenario runs in a child (this test binary again, with
//! `TESSERA_CHILD` naming it and a low sampling rate), and the parent checks how it ended.

use std::process::Output;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[allow(dead_code)] // Of the shared helpers, `unhardened` serves no test here.
mod common;

/// A scenario in a child with about one allocation in four sampled. Not every one: at rate 1
/// the test harness's own live allocations (its threads, names, channels) could fill the
/// pool's 1,024 slots before the scenario runs, and a scenario that keeps every block it
/// allocates would then never get a guarded one (this failed about one run in forty).
fn in_child(test_name: &str, scenario: &str, body: impl FnOnce()) -> Option<Output> {
    in_child_at("4", test_name, scenario, body)
}

/// A scenario in a child at sampling rate `rate`.
fn in_child_at(rate: &str, test_name: &str, scenario: &str, body: impl FnOnce()) -> Option<Output> {
    common::in_child(
        test_name,
        scenario,
        &[("TESSERA_GUARDED_SAMPLE_RATE", rate)],
        body,
    )
}

fn assert_aborted_with(output: &Output, messages: &[&str]) {
    for message in messages {
        common::assert_aborted_with(output, message);
    }
}

/// A block of `size` bytes (alignment 1) that ends flush against a guard page: one of the
/// first few is, unless every slot is live; keeps trying past such a moment.
fn guarded_block(size: usize) -> *mut u8 {
    let layout = std::alloc::Layout::from_size_align(size, 1).unwrap();
    for _ in 0..10_000 {
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null());
        if (p as usize + size).is_multiple_of(4096) && unreadable(p.wrapping_add(size)) {
            return p;
        }
        // Not guarded: keep it (freeing it could hand the same block back). A block
        // that ends on a page boundary is not necessarily guarded: a sample is not taken
        // while another thread (the harness's, the purger's) is capturing a stack.
    }
    panic!("no guarded block in 10,000 allocations");
}

/// Whether the byte at `at` cannot be read, asked without a fault: the kernel copying it
/// into a pipe fails with `EFAULT`.
fn unreadable(at: *const u8) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: `write` checks the address itself; the descriptors are ours and closed here.
    let written = unsafe { libc::write(fds[1], at.cast(), 1) };
    // SAFETY: as above.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    written < 0
}

#[test]
fn overflow_by_one_byte_is_reported() {
    if let Some(out) = in_child("overflow_by_one_byte_is_reported", "overflow", || {
        let p = guarded_block(24);
        // SAFETY: deliberately out of bounds: the guard page must stop it.
        unsafe { p.add(24).write_volatile(1) };
    }) {
        assert_aborted_with(
            &out,
            &[
                "tessera: heap buffer overflow past a guarded block: write at 0x",
                "0 bytes past the end of the block 0x",
                " of 24 bytes",
                "allocated by thread",
            ],
        );
    }
}

#[test]
fn use_after_free_is_reported_with_both_stacks() {
    if let Some(out) = in_child("use_after_free_is_reported_with_both_stacks", "uaf", || {
        let p = guarded_block(64);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { std::alloc::dealloc(p, std::alloc::Layout::from_size_align(64, 1).unwrap()) };
        // SAFETY: deliberately after free: the closed slot must fault.
        let _ = unsafe { p.add(8).read_volatile() };
    }) {
        assert_aborted_with(
            &out,
            &[
                "tessera: use after free of a guarded block: read at 0x",
                "8 bytes into the block",
                "allocated by thread",
                "freed by thread",
            ],
        );
    }
}

#[test]
fn double_free_is_reported() {
    if let Some(out) = in_child("double_free_is_reported", "double", || {
        let p = guarded_block(40);
        // SAFETY: deliberately freed twice: the second free must be reported.
        unsafe {
            tessera::free(p);
            tessera::free(p);
        }
    }) {
        assert_aborted_with(
            &out,
            &[
                "tessera: double free of a guarded block (pointer 0x",
                "freed by thread",
            ],
        );
    }
}

#[test]
fn ordinary_work_runs_with_every_allocation_sampled() {
    // Rate 1: every allocation sampled while the pool has a free slot.
    if let Some(out) = in_child_at(
        "1",
        "ordinary_work_runs_with_every_allocation_sampled",
        "ordinary",
        || {
            let mut map = std::collections::HashMap::new();
            for i in 0..5_000u64 {
                map.insert(i, format!("value {i}").repeat((i % 7) as usize));
            }
            let mut v: Vec<String> = Vec::new();
            for i in 0..2_000 {
                v.push(i.to_string());
                v[i / 2].push('x');
            }
            let joined = std::thread::spawn(move || v.concat().len()).join().unwrap();
            assert!(joined > 0);
            for i in 0..5_000u64 {
                assert_eq!(map[&i].len(), format!("value {i}").len() * (i % 7) as usize);
            }
            let big: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
            let mut grown = Vec::with_capacity(1);
            grown.extend_from_slice(&big);
            assert_eq!(grown, big);
            let z = vec![0u64; 300];
            assert!(z.iter().all(|&x| x == 0));
        },
    ) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {stderr}");
    }
}
