//! Bad input and fork, each in a child process (a re-run of this test binary with
//! `TESSERA_CHILD` naming the scenario), so an abort is observed from outside.

use std::process::{Command, Output};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

mod common;

use common::{assert_aborted_with, unhardened};

fn in_child(test_name: &str, scenario: &str, body: impl FnOnce()) -> Option<Output> {
    common::in_child(test_name, scenario, &[], body)
}

#[test]
fn foreign_pointer_is_reported() {
    if let Some(out) = in_child("foreign_pointer_is_reported", "foreign", || {
        let on_stack = [0u64; 4];
        // SAFETY: deliberately bad input: the report must abort before anything is touched.
        unsafe { tessera::free(on_stack.as_ptr() as *mut u8) };
    }) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer tessera does not own (never handed out, or already freed) (pointer 0x",
        );
    }
}

#[test]
fn large_double_free_is_reported() {
    if let Some(out) = in_child("large_double_free_is_reported", "large-double", || {
        let p = tessera::alloc(100_000, 8);
        // SAFETY: deliberately bad input: the second free must be reported.
        unsafe {
            tessera::free(p);
            tessera::free(p);
        }
    }) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer that is not allocated (double free?)",
        );
    }
}

#[test]
fn immediate_small_double_free_is_reported() {
    if let Some(out) = in_child(
        "immediate_small_double_free_is_reported",
        "small-double",
        || {
            let keep = tessera::alloc(64, 8);
            let p = tessera::alloc(64, 8);
            // SAFETY: deliberately bad input: the second free must be reported.
            unsafe {
                tessera::free(p);
                tessera::free(p);
            }
            std::hint::black_box(keep);
        },
    ) {
        assert_aborted_with(&out, "tessera: double free");
    }
}

#[test]
fn interior_pointer_is_reported() {
    if let Some(out) = in_child("interior_pointer_is_reported", "interior", || {
        let p = tessera::alloc(64, 8);
        // SAFETY: deliberately bad input.
        unsafe { tessera::free(p.add(8)) };
    }) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer into the middle of a block",
        );
    }
}

#[test]
fn huge_double_free_is_reported() {
    if let Some(out) = in_child("huge_double_free_is_reported", "huge-double", || {
        let p = tessera::alloc(40 << 20, 8);
        // SAFETY: deliberately bad input.
        unsafe {
            tessera::free(p);
            tessera::free(p);
        }
    }) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer tessera does not own (never handed out, or already freed)",
        );
    }
}

#[test]
fn fork_while_other_threads_allocate() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    held.push(vec![t as u8; 1 + i % 3000]);
                    if held.len() > 200 {
                        held.drain(..100);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for round in 0..40 {
        // SAFETY: the child only allocates, frees and exits with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let v: Vec<Vec<u8>> = (0..2000).map(|i| vec![round as u8; i % 5000 + 1]).collect();
            let ok = v
                .iter()
                .enumerate()
                .all(|(i, b)| b.len() == i % 5000 + 1 && b[0] == round as u8);
            let big = vec![1u8; 8 << 20];
            // SAFETY: `_exit` skips atexit handlers that could touch the parent's state.
            unsafe { libc::_exit(if ok && big[big.len() - 1] == 1 { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn odd_layouts() {
    // Huge requests fail with null, never with a crash or a tiny block.
    assert!(tessera::alloc(usize::MAX, 8).is_null());
    assert!(tessera::alloc(isize::MAX as usize, 8).is_null());
    assert!(tessera::alloc(usize::MAX - 4096, 4096).is_null());
    // Refused whether or not the fast path could serve the size: the bins of 64 and 1,000
    // bytes hold free blocks here. An alignment of 0 once took the fast path with a mask
    // that rounded every size down to the 8-byte class.
    for size in [64, 1000] {
        let warm: Vec<*mut u8> = (0..4).map(|_| tessera::alloc(size, 8)).collect();
        for p in warm {
            // SAFETY: allocated just above with this size and alignment.
            unsafe { tessera::dealloc(p, size, 8) };
        }
        for align in [0, 3, 6, 12, 24] {
            assert!(
                tessera::alloc(size, align).is_null(),
                "size {size}: alignment {align} is not a power of two and is refused"
            );
        }
    }
    // Zero-sized requests get a unique, freeable block.
    let a = tessera::alloc(0, 1);
    let b = tessera::alloc(0, 1);
    assert!(!a.is_null() && !b.is_null() && a != b);
    // Every power-of-two alignment up to 4 MiB, at sizes around every boundary.
    for shift in 0..=22 {
        let align = 1usize << shift;
        for size in [0, 1, align / 2 + 1, align, align + 1, 3 * align, 33 << 10] {
            let p = tessera::alloc(size, align);
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: a fresh block of at least `size.max(1)` bytes (zero-sized requests get a
            // real, minimal block).
            unsafe {
                p.write(1);
                p.add(size.max(1) - 1).write(2);
                assert!(tessera::usable_size(p) >= size);
                tessera::dealloc(p, size, align);
            }
        }
    }
    // SAFETY: both blocks are live.
    unsafe {
        tessera::free(a);
        tessera::free(b);
        tessera::free(std::ptr::null_mut());
    }
}

#[test]
fn huge_threshold_above_an_arena_still_allocates() {
    if std::env::var("TESSERA_CHILD").as_deref() == Ok("big-threshold") {
        // 100 MiB does not fit a 64 MiB arena: it must become a mapping, not a null.
        let p = tessera::alloc(100 << 20, 8);
        assert!(!p.is_null());
        // SAFETY: a live 100 MiB block.
        unsafe {
            p.add((100 << 20) - 1).write(7);
            tessera::free(p);
        }
        println!("BIG-BLOCK-OK");
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "huge_threshold_above_an_arena_still_allocates",
            "--nocapture",
        ])
        .env("TESSERA_CHILD", "big-threshold")
        .env("TESSERA_HUGE_THRESHOLD", "200m")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BIG-BLOCK-OK"),
        "the child must have run: {stdout}"
    );
}

// ---- hardening (issue #15): every Rust entry point checks alike ----------------------------

/// `dealloc` (the sized free `GlobalAlloc` uses) of a block under two others on its list.
#[test]
fn deep_double_dealloc_is_reported() {
    if unhardened("deep_double_dealloc_is_reported") {
        return;
    }
    if let Some(out) = in_child("deep_double_dealloc_is_reported", "deep-dealloc", || {
        let [a, b, c] = [0; 3].map(|_| tessera::alloc(48, 8));
        // SAFETY: deliberately bad input: the fourth dealloc must be reported.
        unsafe {
            tessera::dealloc(a, 48, 8);
            tessera::dealloc(b, 48, 8);
            tessera::dealloc(c, 48, 8);
            tessera::dealloc(a, 48, 8);
        }
    }) {
        assert_aborted_with(&out, "tessera: double free (pointer 0x");
        assert_aborted_with(&out, "size class");
    }
}

/// The unsized free at depth 64, in a span the thread no longer allocates from.
#[test]
fn deep_double_free_in_old_span_is_reported() {
    if unhardened("deep_double_free_in_old_span_is_reported") {
        return;
    }
    if let Some(out) = in_child(
        "deep_double_free_in_old_span_is_reported",
        "deep-old",
        || {
            let blocks: Vec<*mut u8> = (0..20_000).map(|_| tessera::alloc(100, 8)).collect();
            // SAFETY: deliberately bad input: the last free must be reported.
            unsafe {
                for &p in &blocks[..65] {
                    tessera::free(p);
                }
                tessera::free(blocks[0]);
            }
        },
    ) {
        assert_aborted_with(&out, "tessera: double free (pointer 0x");
    }
}

/// `realloc` of a freed block (it used to hand the block back, or copy it onto itself).
#[test]
fn realloc_of_freed_block_is_reported() {
    if unhardened("realloc_of_freed_block_is_reported") {
        return;
    }
    if let Some(out) = in_child(
        "realloc_of_freed_block_is_reported",
        "realloc-freed",
        || {
            let keep = tessera::alloc(64, 8);
            let p = tessera::alloc(64, 8);
            // SAFETY: deliberately bad input.
            unsafe {
                tessera::dealloc(p, 64, 8);
                tessera::realloc(p, 64, 8, 40);
            }
            std::hint::black_box(keep);
        },
    ) {
        assert_aborted_with(&out, "tessera: realloc of a freed pointer");
    }
}

/// `realloc` of a pointer into a block (it used to put a misaligned block on the list).
#[test]
fn realloc_of_interior_pointer_is_reported() {
    if let Some(out) = in_child(
        "realloc_of_interior_pointer_is_reported",
        "realloc-interior",
        || {
            let p = tessera::alloc(64, 8);
            // SAFETY: deliberately bad input.
            unsafe { tessera::realloc(p.add(16), 48, 8, 200) };
        },
    ) {
        assert_aborted_with(
            &out,
            "tessera: realloc of a pointer into the middle of a block",
        );
    }
}

/// The sized free's fast path (the bin's current span) checks the block boundary too.
#[test]
fn sized_dealloc_of_interior_pointer_is_reported() {
    if let Some(out) = in_child(
        "sized_dealloc_of_interior_pointer_is_reported",
        "dealloc-interior",
        || {
            let p = tessera::alloc(64, 8);
            // SAFETY: deliberately bad input.
            unsafe { tessera::dealloc(p.add(16), 64, 8) };
        },
    ) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer into the middle of a block",
        );
    }
}

/// The free path remembers the span its last free went to, with that span's object size
/// (`Cache::last_free`). A span that leaves the cache must be forgotten: reused for another
/// size class, its old geometry would pass an interior pointer of the new class as an
/// object start. Here the remembered span of 1,536 B blocks goes to the cache's stash and
/// comes back as the first span of 1,280 B blocks; a pointer 1,536 bytes in (inside the
/// second 1,280 B block) must still be reported.
/// The start of the 8 KiB page of `p`.
fn page_of(p: *mut u8) -> usize {
    p as usize & !(8192 - 1)
}

/// Allocates enough blocks of `size` (a class of its own) for the class's first three fresh
/// spans (1, 2 and 4 pages of 8 KiB as the ramp goes), then frees every other span's blocks
/// first, so that one of them is kept as the class's spare, and the first span's last:
/// emptied, the first span leaves the cache (while the free path may remember it), and the
/// next fresh one-page span of another class is the same memory. Returns that page and the
/// blocks that were in it, all freed.
fn empty_the_first_span_of(size: usize) -> (usize, Vec<*mut u8>) {
    let blocks: Vec<*mut u8> = (0..40).map(|_| tessera::alloc(size, 8)).collect();
    assert_eq!(
        tessera::block_size(blocks[0]),
        Some(size),
        "{size} is a class of its own"
    );
    let first = page_of(blocks[0]);
    let (in_first, rest): (Vec<*mut u8>, Vec<*mut u8>) =
        blocks.iter().partition(|&&p| page_of(p) == first);
    // SAFETY: blocks of ours, each freed once.
    unsafe {
        for &p in rest.iter().rev() {
            tessera::free(p);
        }
        for &p in &in_first {
            tessera::free(p);
        }
    }
    (first, in_first)
}

#[test]
fn interior_pointer_into_a_reused_span_is_reported() {
    if let Some(out) = common::in_child(
        "interior_pointer_into_a_reused_span_is_reported",
        "reused-span-interior",
        // Thread caches, whatever the environment says: the scenario is theirs.
        &[("TESSERA_CACHE", "thread")],
        || {
            const A: usize = 1536;
            const B: usize = 1280;
            let (first, in_first) = empty_the_first_span_of(A);
            // The next fresh one-page span, for B, is the same memory.
            let b: Vec<*mut u8> = (0..6).map(|_| tessera::alloc(B, 8)).collect();
            let base = *b.iter().min().unwrap();
            assert_eq!(
                tessera::block_size(base),
                Some(B),
                "B is a class of its own"
            );
            for &p in &b {
                // SAFETY: live blocks of B bytes: the program's data over A's old links.
                unsafe { p.write_bytes(0x55, B) };
            }
            assert_eq!(
                page_of(base),
                first,
                "scenario not reached: B's first span is not A's (A's blocks {in_first:?}, B's {b:?})"
            );
            // SAFETY: deliberately bad input: inside the second B block.
            unsafe { tessera::free(base.add(A)) };
        },
    ) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer into the middle of a block",
        );
    }
}

/// The other place a remembered span leaves its cache: a thread's exit flushes a partly used
/// span to the central list. Here thread 1 frees into span S (remembered) and exits; its
/// cache goes to the pool, and thread 2 takes it over; thread 3 takes S from the central
/// list. When thread 2 frees a block of S, that is a free into thread 3's span: had S been
/// remembered still, the block would go onto thread 2's own bin and come back from its next
/// allocation of that size while thread 3 still counts it as handed out.
#[test]
fn a_span_flushed_to_the_central_list_is_forgotten() {
    use std::sync::mpsc;
    if let Some(out) = common::in_child(
        "a_span_flushed_to_the_central_list_is_forgotten",
        "flushed-span",
        // Thread caches, whatever the environment says: the scenario is theirs.
        &[("TESSERA_CACHE", "thread")],
        || {
            // A class no one else here uses: 3,584 B, two to an 8 KiB first span.
            const SIZE: usize = 3584;
            let (b0, b1) = std::thread::spawn(|| {
                let b0 = tessera::alloc(SIZE, 8) as usize;
                let b1 = tessera::alloc(SIZE, 8) as usize;
                assert_eq!(b1 - b0, SIZE, "one span, side by side");
                // SAFETY: a block of ours, freed once: the free path remembers its span.
                unsafe { tessera::free(b0 as *mut u8) };
                (b0, b1)
            })
            .join()
            .unwrap();
            // Thread 2 takes thread 1's cache from the pool (the only idle one).
            let (to_two, two_waits) = mpsc::channel::<()>();
            let (from_two, main_waits) = mpsc::channel::<usize>();
            let two = std::thread::spawn(move || {
                // A first allocation (another class) binds the cache.
                let keep = tessera::alloc(40, 8);
                two_waits.recv().unwrap();
                // SAFETY: thread 1's live block, handed over; freed once.
                unsafe { tessera::free(b1 as *mut u8) };
                from_two.send(tessera::alloc(SIZE, 8) as usize).unwrap();
                std::hint::black_box(keep);
            });
            // Thread 3, with a cache of its own, takes S from the central list: its first
            // block of the size is thread 1's freed one.
            let (to_three, three_waits) = mpsc::channel::<()>();
            let (from_three, main_waits3) = mpsc::channel::<usize>();
            let three = std::thread::spawn(move || {
                from_three.send(tessera::alloc(SIZE, 8) as usize).unwrap();
                three_waits.recv().unwrap();
            });
            assert_eq!(main_waits3.recv().unwrap(), b0, "thread 3 took S");
            to_two.send(()).unwrap();
            let got = main_waits.recv().unwrap();
            assert_ne!(
                got, b1,
                "a block of thread 3's span came back from thread 2's bin"
            );
            to_three.send(()).unwrap();
            two.join().unwrap();
            three.join().unwrap();
            println!("FORGOTTEN-OK");
        },
    ) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("FORGOTTEN-OK"),
            "child failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A freed small sample (16 bytes into an object of its class, `profile/sample.rs`): a
/// second free, a `realloc` or a `usable_size` of the block must still be reported, though
/// the pointer is no object start and no longer in the profiler's table (once, the sample's
/// span was kept in a reserve for the next sample, and a second free sent it to the page
/// heap while the reserve handed it out again: the `corrupt` fuzz target found that).
/// `call`: 0 free, 1 realloc, 2 usable_size.
fn freed_sample_is_reported(test_name: &str, call: u8, message: &str) {
    if let Some(out) = common::in_child(
        test_name,
        "freed-sample",
        // Rate 1: every allocation of a few bytes or more is a sample.
        &[("TESSERA_PROF_RATE", "1")],
        || {
            let p = tessera::alloc(2896, 8);
            assert!(!p.is_null());
            // SAFETY: deliberately bad input: `p` is used after its free.
            unsafe {
                tessera::free(p);
                match call {
                    0 => tessera::free(p),
                    1 => {
                        tessera::realloc(p, 2896, 8, 3000);
                    }
                    _ => {
                        tessera::usable_size(p);
                    }
                }
            }
        },
    ) {
        // Without the `hardened` feature no marker says the block was freed: the second
        // call is still reported, as a pointer into the middle of a block (the sample's
        // pointer is 16 bytes into its object).
        let message = if tessera::hardened() {
            message
        } else {
            "tessera: "
        };
        assert_aborted_with(&out, message);
    }
}

#[test]
fn double_free_of_a_sample_is_reported() {
    freed_sample_is_reported(
        "double_free_of_a_sample_is_reported",
        0,
        "tessera: double free",
    );
}

#[test]
fn realloc_of_a_freed_sample_is_reported() {
    freed_sample_is_reported(
        "realloc_of_a_freed_sample_is_reported",
        1,
        "tessera: realloc of a freed pointer",
    );
}

#[test]
fn usable_size_of_a_freed_sample_is_reported() {
    freed_sample_is_reported(
        "usable_size_of_a_freed_sample_is_reported",
        2,
        "tessera: malloc_usable_size of a pointer tessera did not hand out",
    );
}

/// `usable_size` of a freed block.
#[test]
fn usable_size_of_freed_block_is_reported() {
    if unhardened("usable_size_of_freed_block_is_reported") {
        return;
    }
    if let Some(out) = in_child(
        "usable_size_of_freed_block_is_reported",
        "usable-freed",
        || {
            let keep = tessera::alloc(64, 8);
            let p = tessera::alloc(64, 8);
            // SAFETY: deliberately bad input.
            unsafe {
                tessera::free(p);
                tessera::usable_size(p);
            }
            std::hint::black_box(keep);
        },
    ) {
        assert_aborted_with(&out, "tessera: malloc_usable_size of a freed pointer");
    }
}

/// A block freed by its owner, then again by another thread: the owner finds it when it
/// takes its remote frees, before it hands the block out twice.
#[test]
fn cross_thread_double_free_is_reported() {
    if unhardened("cross_thread_double_free_is_reported") {
        return;
    }
    if let Some(out) = in_child(
        "cross_thread_double_free_is_reported",
        "cross-thread",
        || {
            let keep = tessera::alloc(64, 8);
            let p = tessera::alloc(64, 8) as usize;
            // SAFETY: deliberately bad input: the second free comes from another thread.
            unsafe { tessera::free(p as *mut u8) };
            std::thread::spawn(move || {
                // SAFETY: as above.
                unsafe { tessera::free(p as *mut u8) };
            })
            .join()
            .unwrap();
            allocate_without_repeats(64, 3000);
            std::hint::black_box(keep);
        },
    ) {
        assert_aborted_with(&out, "tessera: double free");
    }
}

/// Allocates `count` blocks of `size` bytes, keeping them, and fails if one comes twice (a
/// block freed twice and not caught).
fn allocate_without_repeats(size: usize, count: usize) {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..count {
        let q = tessera::alloc(size, 8) as usize;
        assert!(seen.insert(q), "{q:#x} handed out twice");
    }
}

/// A write into a freed neighbour's link (a linear overflow): the next allocations must
/// report it instead of returning the written address.
#[test]
fn overwritten_link_is_reported() {
    if unhardened("overwritten_link_is_reported") {
        return;
    }
    static TARGET: [u64; 64] = [0; 64];
    if let Some(out) = in_child("overwritten_link_is_reported", "overflow", || {
        let blocks: Vec<*mut u8> = (0..16).map(|_| tessera::alloc(64, 8)).collect();
        let (a, b) = blocks
            .iter()
            .flat_map(|&a| blocks.iter().map(move |&b| (a, b)))
            .find(|&(a, b)| b as usize == a as usize + 64)
            .expect("two neighbouring blocks");
        // SAFETY: deliberately bad input: `a`'s 64 bytes end where `b`'s link is.
        unsafe {
            tessera::free(b);
            a.add(64).cast::<usize>().write(TARGET.as_ptr() as usize);
        }
        for _ in 0..4 {
            let q = tessera::alloc(64, 8);
            assert!(
                !std::ptr::eq(q, TARGET.as_ptr().cast()),
                "attacker's address"
            );
        }
    }) {
        assert_aborted_with(&out, "tessera: corrupted free list");
    }
}

/// A block freed before its memory went to a new span of another class, at an object
/// boundary of the new span that its lazy carving has not reached: no such object was ever
/// handed out, so a free (`call` 0) or a `realloc` (`call` 1) of it is bad input. Pushed
/// onto a list, that object would be handed out twice (once from the list, once when the
/// carving reaches it).
fn uncarved_block_is_reported(test_name: &str, call: u8, message: &str) {
    if let Some(out) = common::in_child(
        test_name,
        "uncarved",
        &[("TESSERA_CACHE", "thread"), ("TESSERA_PROF_RATE", "0")],
        || {
            const A: usize = 2048;
            const B: usize = 1024;
            let (first, in_first) = empty_the_first_span_of(A);
            // The next fresh one-page span, for B, is the same memory; one allocation
            // carves its first 4 KiB only.
            let b = tessera::alloc(B, 8);
            assert_eq!(tessera::block_size(b), Some(B));
            assert_eq!(
                page_of(b),
                first,
                "scenario not reached: B's span is not A's"
            );
            // An A block in the uncarved half, at a B object boundary.
            let victim = in_first
                .iter()
                .copied()
                .find(|&p| p as usize - first >= 4096)
                .expect("an A block in the second half of the page");
            // SAFETY: deliberately bad input: A's block was freed already.
            unsafe {
                if call == 0 {
                    tessera::free(victim);
                } else {
                    tessera::realloc(victim, A, 8, B / 2);
                }
            }
            // Had it been taken, B's next allocations hand it out twice.
            let mut seen = Vec::new();
            for _ in 0..8 {
                let p = tessera::alloc(B, 8);
                assert!(!seen.contains(&p), "handed out twice: {p:?}");
                seen.push(p);
            }
        },
    ) {
        assert_aborted_with(&out, message);
    }
}

/// A double free into a span that local frees emptied and the cache let go of (to its
/// stash, still a small span for the page heap, owned by nobody): reported, not pushed onto
/// the remote list of a span about to be formatted afresh. 1 KiB blocks: a cache keeps the
/// spans it used up whatever the program does only up to that size (above, it gives them
/// up once other threads free its objects, and its frees into them are remote ones, checked
/// when its batch goes out: `size_class::shared`).
#[test]
fn double_free_into_an_emptied_span_is_reported() {
    if let Some(out) = common::in_child(
        "double_free_into_an_emptied_span_is_reported",
        "emptied-double",
        &[("TESSERA_CACHE", "thread"), ("TESSERA_PROF_RATE", "0")],
        || {
            let (_, in_first) = empty_the_first_span_of(1024);
            // SAFETY: deliberately bad input: every block of the span was freed already.
            unsafe { tessera::free(in_first[0]) };
        },
    ) {
        assert_aborted_with(
            &out,
            "tessera: free of a pointer that is not allocated (double free?)",
        );
    }
}

#[test]
fn double_free_into_an_uncarved_object_is_reported() {
    uncarved_block_is_reported(
        "double_free_into_an_uncarved_object_is_reported",
        0,
        "tessera: free of a pointer that is not allocated (double free?)",
    );
}

#[test]
fn realloc_of_a_block_over_an_uncarved_object_is_reported() {
    uncarved_block_is_reported(
        "realloc_of_a_block_over_an_uncarved_object_is_reported",
        1,
        "tessera: realloc of a freed pointer",
    );
}

/// Another thread frees a block twice with a block of the same span between: its remote
/// batch holds them as one run of that span, whose first block (the chain's tail) has no
/// link written until the push writes it, so no freed-block marker either. Publishing the
/// batch (at the thread's exit) must still find the second free.
#[test]
fn batched_double_free_of_a_runs_first_block_is_reported() {
    if let Some(out) = common::in_child(
        "batched_double_free_of_a_runs_first_block_is_reported",
        "batched-tail-double",
        &[("TESSERA_CACHE", "thread")],
        || {
            let keep = tessera::alloc(64, 8);
            let p = tessera::alloc(64, 8) as usize;
            let q = tessera::alloc(64, 8) as usize;
            std::thread::spawn(move || {
                // SAFETY: deliberately bad input: `p` freed twice, both remote frees.
                unsafe {
                    tessera::free(p as *mut u8);
                    tessera::free(q as *mut u8);
                    tessera::free(p as *mut u8);
                }
            })
            .join()
            .unwrap();
            allocate_without_repeats(64, 3000);
            std::hint::black_box(keep);
        },
    ) {
        assert_aborted_with(&out, "tessera: double free");
    }
}

/// `realloc` of a block freed with its span (emptied and let go of, owned by nobody), whose
/// first word was written after the free, so that it carries no freed-block marker: a span
/// no cache owns holds no live block, so it is reported, not moved and freed onto the
/// remote list of a span about to be formatted afresh.
#[test]
fn realloc_of_an_overwritten_block_of_an_emptied_span_is_reported() {
    if let Some(out) = common::in_child(
        "realloc_of_an_overwritten_block_of_an_emptied_span_is_reported",
        "emptied-realloc",
        &[("TESSERA_CACHE", "thread"), ("TESSERA_PROF_RATE", "0")],
        || {
            let (_, in_first) = empty_the_first_span_of(1024);
            // SAFETY: deliberately bad input: a write into a freed block (its span's memory
            // stays mapped: arenas are never unmapped), then a realloc of it.
            unsafe {
                in_first[0].cast::<u64>().write(0);
                tessera::realloc(in_first[0], 1024, 8, 4000);
            }
        },
    ) {
        assert_aborted_with(&out, "tessera: realloc of a freed pointer");
    }
}
