//! The heap profiler (issue #18) in a Rust program that uses tessera as its global
//! allocator: samples are taken and forgotten as blocks come and go, and the profile
//! attributes the live heap to its allocation sites in the right shares (checked with
//! `go tool pprof` when `go` is installed).

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::process::Command;

#[global_allocator]
static GLOBAL: tessera::Tessera = tessera::Tessera;

#[allow(dead_code)] // Of the shared helpers, `unhardened` serves no test here.
mod common;

const BLOCK: usize = 1024;
const B_BLOCKS: usize = 8192;

// Each site passes a constant of its own to `black_box`: identical bodies are merged into
// one function in a release build (LLVM's function merging), and the profile would then
// name one site for both.
#[inline(never)]
fn profile_site_a() -> *mut u8 {
    black_box(0xa);
    // SAFETY: a non-zero size.
    black_box(unsafe { alloc(Layout::from_size_align(BLOCK, 8).unwrap()) })
}

#[inline(never)]
fn profile_site_b() -> *mut u8 {
    black_box(0xb);
    // SAFETY: a non-zero size.
    black_box(unsafe { alloc(Layout::from_size_align(BLOCK, 8).unwrap()) })
}

fn free_all(blocks: &mut Vec<*mut u8>) {
    for p in blocks.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(p, Layout::from_size_align(BLOCK, 8).unwrap()) };
    }
}

/// `flat%` of the `-top` line whose function name ends with `name`.
fn flat_share(top: &str, name: &str) -> f64 {
    top.lines()
        .filter(|l| l.trim_end().ends_with(name))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .strip_suffix('%')?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

// One test function: the profiler's counters are process-wide, and the test harness would
// run several tests of this file at once.
#[test]
fn samples_follow_the_live_heap_and_the_profile_names_the_sites() {
    // About 2,000 samples over 32 MiB: the 75/25 share's standard error is 1 point.
    tessera::profile::set_rate(16 * 1024);
    let before = tessera::profile::totals();
    let mut a = Vec::with_capacity(3 * B_BLOCKS);
    let mut b = Vec::with_capacity(B_BLOCKS);
    for _ in 0..B_BLOCKS {
        for _ in 0..3 {
            a.push(profile_site_a());
        }
        b.push(profile_site_b());
    }
    let kept = tessera::profile::totals();
    let taken = kept.samples - before.samples;
    // 32 MiB at one sample per 16 KiB: 2,048 expected; Poisson's spread is 45.
    assert!(
        (1_500..3_000).contains(&taken),
        "{taken} samples for 32 MiB at 16 KiB"
    );
    assert!(
        kept.live >= before.live + taken / 2,
        "{kept:?} after {before:?}"
    );
    let mut live = vec![tessera::profile::LiveSample::default(); 10_000];
    let n = tessera::profile::live_samples(&mut live);
    let mine = live[..n.min(live.len())]
        .iter()
        .filter(|s| s.requested == BLOCK && s.size == BLOCK && s.at_ms > 0 && s.thread > 0)
        .count() as u64;
    assert!(
        mine >= taken / 2,
        "{mine} live samples of {BLOCK} bytes, {taken} taken"
    );

    let mut profile = Vec::new();
    tessera::profile::write_heap(&mut profile).unwrap();
    assert_eq!(&profile[..2], &[0x1f, 0x8b], "not gzip");

    if Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = std::env::temp_dir().join(format!("tessera-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("heap.pb.gz");
        std::fs::write(&file, &profile).unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("go")
            .args(["tool", "pprof", "-top", "-sample_index=inuse_space"])
            .arg(&exe)
            .arg(&file)
            .output()
            .unwrap();
        let top = String::from_utf8_lossy(&out.stdout);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (sa, sb) = (
            flat_share(&top, "profile_site_a"),
            flat_share(&top, "profile_site_b"),
        );
        // The rest of the live heap (the test harness's) is small beside 32 MiB.
        assert!(
            (sa - 75.0).abs() <= 6.0 && (sb - 25.0).abs() <= 6.0,
            "site_a {sa}%, site_b {sb}%:\n{top}"
        );
    } else {
        eprintln!("go not installed: the pprof reading is not checked");
    }

    // Freed samples leave the live set.
    let live = tessera::profile::totals().live;
    free_all(&mut b);
    free_all(&mut a);
    let after = tessera::profile::totals();
    assert!(
        after.live + taken / 2 <= live,
        "{after:?} after freeing, {live} live before"
    );
    resized_samples_keep_their_record();
    zeroed_samples_are_zero();
    tessera::profile::set_rate(tessera::profile::DEFAULT_RATE);
}

/// A sampled large block grown in place, and a sampled huge block remapped by `realloc`,
/// keep their sample (at its new address), and their free forgets it.
fn resized_samples_keep_their_record() {
    // The records' buffer first: made while sampling every allocation, it could take the
    // very address a block just freed left.
    let mut buf = vec![tessera::profile::LiveSample::default(); 100_000];
    let mut live = |addr: *mut u8| {
        let n = tessera::profile::live_samples(&mut buf).min(buf.len());
        buf[..n].iter().any(|s| s.addr == addr as usize)
    };
    // Rate 1: every allocation of a few bytes or more is sampled.
    tessera::profile::set_rate(1);
    for (from, to) in [(64 << 10, 200 << 10), (40 << 20, 90 << 20)] {
        let layout = Layout::from_size_align(from, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        assert!(live(p), "{from} B: not sampled at rate 1");
        // SAFETY: `p` is live with `layout`.
        let q = unsafe { std::alloc::realloc(p, layout, to) };
        assert!(!q.is_null());
        assert!(
            live(q),
            "{from} -> {to} B: the sample did not follow the block"
        );
        if q != p {
            assert!(
                !live(p),
                "{from} -> {to} B: the old address is still a sample"
            );
        }
        // SAFETY: `q` is live with `to` bytes.
        unsafe { dealloc(q, Layout::from_size_align(to, 8).unwrap()) };
        assert!(!live(q), "{from} -> {to} B: freed, still a live sample");
    }
}

/// At rate 1 every allocation is a sample, and a freed sample's object goes back to its
/// cache's bin, from which the next sample of the class comes: a zeroed sample must read as
/// zero, not as the bytes the last one left there.
fn zeroed_samples_are_zero() {
    tessera::profile::set_rate(1);
    for size in [1, 100, BLOCK, 5000, 8192] {
        for _ in 0..4 {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero size.
            let dirty = unsafe { alloc(layout) };
            assert!(!dirty.is_null());
            // SAFETY: `dirty` holds `size` bytes.
            unsafe { dirty.write_bytes(0xab, size) };
            // SAFETY: `dirty` is live with `layout`.
            unsafe { dealloc(dirty, layout) };
            // SAFETY: a non-zero size.
            let zeroed = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!zeroed.is_null());
            // SAFETY: `zeroed` holds `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(zeroed, size) };
            assert!(bytes.iter().all(|&b| b == 0), "{size} B: not zeroed");
            // SAFETY: `zeroed` is live with `layout`.
            unsafe { dealloc(zeroed, layout) };
        }
    }
}

/// `LabelSet::with_pairs` holds no lock while its closure runs: the closure may allocate
/// and make label sets (which takes the profiler's table lock: under the lock, a
/// self-deadlock).
#[test]
fn label_pairs_may_be_used_freely() {
    let set = tessera::profile::LabelSet::new(&[("handler", "upload"), ("tenant", "acme")]);
    let (owned, other) = set.with_pairs(|pairs| {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (owned, tessera::profile::LabelSet::new(&[("inner", "set")]))
    });
    assert_eq!(
        owned,
        [
            ("handler".to_string(), "upload".to_string()),
            ("tenant".to_string(), "acme".to_string())
        ]
    );
    other.with_pairs(|pairs| assert_eq!(pairs, [("inner", "set")]));
    tessera::profile::LabelSet::NONE.with_pairs(|pairs| assert!(pairs.is_empty()));
}

/// Whether `addr` is among the live samples (`buf` is the caller's, made before: a sample
/// of its own could take a just-freed address).
fn is_live_sample(buf: &mut [tessera::profile::LiveSample], addr: *mut u8) -> bool {
    let n = tessera::profile::live_samples(buf).min(buf.len());
    buf[..n].iter().any(|s| s.addr == addr as usize)
}

/// Small sampled blocks live in their class's spans, 16 bytes into an object of a larger
/// class (`profile/sample.rs`): a pointer that is no object start, so every free path hands
/// it to the one that asks the profiler's table. Each path that can receive one (the owner's
/// free, another thread's, `realloc` in place and moving, and with `percpu` a per-CPU
/// thread's) must forget the sample and free the object: a path that did not would report
/// the pointer as one into a block and abort the child, or leave the sample live. Each
/// block's bytes are checked before its free (two samples overlapping, or an object handed
/// out while its sample lives, would break them).
fn small_samples_on_every_free_path() {
    let mut buf = vec![tessera::profile::LiveSample::default(); 100_000];
    let mut blocks = Vec::with_capacity(4096);
    for (i, size) in [1usize, 8, 24, 100, 1000, 3000, 20_000, 32_000]
        .into_iter()
        .cycle()
        .take(512)
        .enumerate()
    {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        // At rate 1, an allocation of `size` bytes is a sample with probability
        // `1 - exp(-size)`: all but surely from 24 bytes on.
        let sampled = is_live_sample(&mut buf, p);
        assert!(sampled || size < 24, "{size} B: not sampled at rate 1");
        assert!(
            !sampled || (p as usize).is_multiple_of(16),
            "{size} B: a sample must stay 16-byte aligned"
        );
        assert!(
            tessera::block_size(p).is_some_and(|n| n >= size),
            "{size} B"
        );
        // SAFETY: `p` holds `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push((p as usize, size, i as u8));
    }
    let check = |&(p, size, tag): &(usize, usize, u8)| {
        // SAFETY: a live block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        assert!(
            bytes.iter().all(|&b| b == tag),
            "{size} B at {p:#x}: overwritten"
        );
    };
    blocks.iter().for_each(check);
    let remote: Vec<_> = blocks.split_off(blocks.len() / 2);
    // Another thread frees half: the remote path.
    std::thread::spawn(move || {
        let mut buf = vec![tessera::profile::LiveSample::default(); 100_000];
        for b in &remote {
            check(b);
            let (p, size, _) = *b;
            // SAFETY: allocated with this layout; given up here.
            unsafe { dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
            assert!(
                !is_live_sample(&mut buf, p as *mut u8),
                "{size} B: freed remotely, still live"
            );
        }
    })
    .join()
    .unwrap();
    for (k, &(p, size, tag)) in blocks.iter().enumerate() {
        check(&(p, size, tag));
        let p = p as *mut u8;
        let layout = Layout::from_size_align(size, 8).unwrap();
        let p = match k % 3 {
            // Shrunk a little: in place, still the same sample.
            0 if size >= 24 => {
                // SAFETY: `p` is live with `layout`.
                let q = unsafe { std::alloc::realloc(p, layout, size - size / 8) };
                assert_eq!(q, p, "{size} B: a slight shrink moved the sample");
                assert!(
                    is_live_sample(&mut buf, q),
                    "{size} B: the shrunk sample was lost"
                );
                // SAFETY: `q` is live with the new size.
                unsafe { dealloc(q, Layout::from_size_align(size - size / 8, 8).unwrap()) };
                q
            }
            // Grown: moved, the old sample freed (the new block is a sample of its own).
            1 => {
                let grown = size * 3 + 64;
                // SAFETY: `p` is live with `layout`.
                let q = unsafe { std::alloc::realloc(p, layout, grown) };
                assert!(
                    !q.is_null() && q != p,
                    "{size} B: grown past its object in place"
                );
                assert!(
                    !is_live_sample(&mut buf, p),
                    "{size} B: moved, the old sample lives"
                );
                // SAFETY: `q` holds `size` bytes of the old block.
                let kept = unsafe { std::slice::from_raw_parts(q, size) };
                assert!(
                    kept.iter().all(|&b| b == tag),
                    "{size} B: realloc lost the bytes"
                );
                // SAFETY: `q` is live with the new size.
                unsafe { dealloc(q, Layout::from_size_align(grown, 8).unwrap()) };
                q
            }
            // The owner's free.
            _ => {
                // SAFETY: allocated with `layout`; given up here.
                unsafe { dealloc(p, layout) };
                p
            }
        };
        assert!(!is_live_sample(&mut buf, p), "{size} B: freed, still live");
    }
}

/// Runs `small_samples_on_every_free_path` in a child at rate 1 (every allocation a sample)
/// with `TESSERA_CACHE=mode`.
fn small_samples_in_child(test_name: &str, mode: &str) {
    child_says(
        test_name,
        &format!("small-samples-{mode}"),
        &[("TESSERA_PROF_RATE", "1"), ("TESSERA_CACHE", mode)],
        "SAMPLES-OK",
        || {
            small_samples_on_every_free_path();
            println!("SAMPLES-OK");
        },
    );
}

/// Runs `body` in a child (`common::in_child`) with `env`, and requires it to succeed and
/// print `want`.
fn child_says(test_name: &str, tag: &str, env: &[(&str, &str)], want: &str, body: impl FnOnce()) {
    if let Some(out) = common::in_child(test_name, tag, env, body) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(want),
            "{tag}: child failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn small_samples_are_forgotten_on_every_free_path() {
    small_samples_in_child("small_samples_are_forgotten_on_every_free_path", "thread");
}

#[test]
fn small_samples_are_forgotten_on_every_free_path_per_cpu() {
    small_samples_in_child(
        "small_samples_are_forgotten_on_every_free_path_per_cpu",
        "percpu",
    );
}

/// `set_rate` applies from the caller's next allocation on: a countdown drawn at a rate that
/// samples about once a terabyte does not outlive `set_rate(1)`. In a child (the rate is
/// process-wide), with thread caches and with per-CPU caches, whose countdowns live in
/// different places. Fails without `restart_own_countdown`: the 64 KiB block is then sampled
/// with odds of about 2^-24.
fn a_new_rate_applies_at_once(test_name: &str, mode: &str) {
    child_says(
        test_name,
        &format!("new-rate-{mode}"),
        &[("TESSERA_CACHE", mode)],
        "NEW-RATE sampled=true",
        || {
            let mut buf = vec![tessera::profile::LiveSample::default(); 100_000];
            tessera::profile::set_rate(1 << 40);
            // A sample at the old rate (this block is larger than any countdown the default
            // rate draws in practice) makes the next countdown one of the new rate, whether or
            // not `set_rate` drew it.
            let big = vec![0u8; 1 << 30];
            drop(black_box(big));
            tessera::profile::set_rate(1);
            let layout = Layout::from_size_align(64 << 10, 8).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            let sampled = is_live_sample(&mut buf, p);
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p, layout) };
            tessera::profile::set_rate(tessera::profile::DEFAULT_RATE);
            println!("NEW-RATE sampled={sampled}");
        },
    );
}

#[test]
fn a_new_rate_applies_at_once_with_thread_caches() {
    a_new_rate_applies_at_once("a_new_rate_applies_at_once_with_thread_caches", "thread");
}

#[test]
fn a_new_rate_applies_at_once_with_per_cpu_caches() {
    a_new_rate_applies_at_once("a_new_rate_applies_at_once_with_per_cpu_caches", "percpu");
}

/// Bad frees of sampled blocks are reported as those of any other block: a second free of a
/// large sample (its span went back to the page heap), and a free of a pointer 16 bytes into
/// a small sample (the offset at which a sample sits in its object: it must not be taken for
/// a sample of its own).
fn bad_free_of_a_sample_is_reported(test_name: &str, call: u8, message: &str) {
    if let Some(out) = common::in_child(
        test_name,
        "bad-sample-free",
        &[("TESSERA_PROF_RATE", "1")],
        || {
            let size = if call == 0 { 40 << 10 } else { 1000 };
            let p = tessera::alloc(size, 8);
            assert!(!p.is_null());
            // SAFETY: deliberately bad input.
            unsafe {
                if call == 0 {
                    tessera::free(p);
                    tessera::free(p);
                } else {
                    tessera::free(p.add(16));
                }
            }
        },
    ) {
        common::assert_aborted_with(&out, message);
    }
}

#[test]
fn double_free_of_a_large_sample_is_reported() {
    bad_free_of_a_sample_is_reported(
        "double_free_of_a_large_sample_is_reported",
        0,
        "tessera: free of a pointer that is not allocated (double free?)",
    );
}

#[test]
fn free_inside_a_small_sample_is_reported() {
    bad_free_of_a_sample_is_reported(
        "free_inside_a_small_sample_is_reported",
        1,
        "tessera: free of a pointer into the middle of a block",
    );
}

#[inline(never)]
fn site_only_a_forked_child_calls(i: usize) -> Vec<u8> {
    black_box(vec![i as u8; 64 + i % 2048])
}

/// The loader's lock (`dl_iterate_phdr` holds it while its callback runs) held by another
/// thread at a `fork` stays held in the child, where that thread does not exist: the
/// child's samples must find their frames' unwind tables without it (`_dl_find_object`).
/// With the walk asking `dl_iterate_phdr`, the child waits for ever in its first sample at
/// a call site the parent never sampled, and the watchdog below fails the test.
#[test]
fn a_forked_child_samples_while_the_parent_was_inside_the_loader() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static INSIDE: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    extern "C" fn hold(_: *mut libc::dl_phdr_info, _: usize, _: *mut libc::c_void) -> i32 {
        INSIDE.store(true, Ordering::Release);
        while !RELEASE.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        1
    }
    // SAFETY: `hold` is a valid callback that touches no argument.
    let holder =
        std::thread::spawn(|| unsafe { libc::dl_iterate_phdr(Some(hold), std::ptr::null_mut()) });
    while !INSIDE.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    // SAFETY: the child allocates, frees and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Every allocation a sample, at call sites the parent never walked.
        tessera::profile::set_rate(1);
        let kept: Vec<Vec<u8>> = (0..200).map(site_only_a_forked_child_calls).collect();
        let ok = kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 64 + i % 2048);
        // SAFETY: `_exit` skips the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    RELEASE.store(true, Ordering::Release);
    holder.join().unwrap();
    // A watchdog for the failure this test is about (a child stuck on the lock): a correct
    // child is done in milliseconds; only a stuck one meets the limit.
    let mut status = 0;
    let mut waited_ms = 0;
    loop {
        // SAFETY: our own child.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            break;
        }
        assert_eq!(got, 0, "waitpid failed");
        if waited_ms >= 120_000 {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("the forked child is stuck in its first samples (the loader's lock?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited_ms += 10;
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
}
