//! The heap profiler (issue #18) in a Rust program that uses tessera as its global
//! allocator: samples are taken and forgotten as blocks come and go, and the profile
//! attributes the live heap to its allocation sites in the right shares (checked with
//! `go tool pprof` when `go` is installed).

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::process::Command;

#[global_allocator]
static GLOBAL: tessera::Tessera = tessera::Tessera;

const BLOCK: usize = 1024;
const B_BLOCKS: usize = 8192;

#[inline(never)]
fn profile_site_a() -> *mut u8 {
    // SAFETY: a non-zero size.
    black_box(unsafe { alloc(Layout::from_size_align(BLOCK, 8).unwrap()) })
}

#[inline(never)]
fn profile_site_b() -> *mut u8 {
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

/// At rate 1 every allocation is a sample, and a freed sample's page is kept for the next
/// one (`sample.rs`'s reserve): a zeroed allocation served from it must read as zero, not
/// as the bytes the last sample left there.
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
