//! Issue #15, item 4: memcheck and AddressSanitizer see tessera's blocks.
//!
//! Each scenario runs in a child: this test binary again, under valgrind (built with the
//! `valgrind` feature: `cargo test -p tessera --features valgrind --test sanitizer`,
//! `.ci/valgrind.sh`) or as it is when built with `-Zsanitizer=address` (`.ci/asan.sh`).
//! A read of a freed block must be reported; an ordinary workload (sizes small to huge,
//! zeroed blocks, reallocs, frees from other threads) must run clean, so that the
//! allocator's own accesses to free blocks are not reported either. Without either build,
//! there is nothing to test and the file is empty.

#![cfg(any(feature = "valgrind", tessera_asan))]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::process::{Command, Output};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// Runs the scenario `name` if this process is its child, and exits.
fn child(name: &str, body: impl FnOnce()) {
    if std::env::var("TESSERA_CHILD").as_deref() == Ok(name) {
        body();
        std::process::exit(0);
    }
}

/// This binary, as the child running `test` with `TESSERA_CHILD=scenario`, under
/// `wrapper` (valgrind and its options) if any.
fn run_child(wrapper: &[&str], test: &str, scenario: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("TESSERA_CHILD", scenario)
        .output()
        .unwrap()
}

/// Reads a block after freeing it.
fn use_after_free() {
    let block = Box::new([7u64; 4]);
    let p = &block[1] as *const u64;
    drop(block);
    // SAFETY: none: this is the bug the tools must report (the memory stays mapped, so
    // without them the read returns whatever the block holds now).
    let value = unsafe { p.read_volatile() };
    println!("read {value:#x} from a freed block");
}

/// Allocations the way programs make them: every path of the allocator, nothing wrong.
fn workload() {
    // Small blocks of every class, freed in and out of order; tiny ones (fewer bytes than
    // a link word) asked for their size, which reads their first word.
    let mut boxes: Vec<Box<[u8]>> = (1..2000)
        .map(|n| vec![n as u8; n % 600 + 1].into())
        .collect();
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(b[0], (i + 1) as u8);
        assert!(tessera::block_size(b.as_ptr()).unwrap() >= b.len());
    }
    let tiny = Box::new([1u8, 2, 3]);
    assert!(tessera::block_size(tiny.as_ptr()).is_some());
    assert_eq!(tiny.iter().sum::<u8>(), 6);
    for i in (0..boxes.len()).step_by(2) {
        boxes[i] = Box::new([]);
    }
    drop(boxes);
    // Zeroed blocks, small, large and huge (own mapping from 32 MiB), read back.
    for n in [8, 100, 5000, 100_000, 40 << 20] {
        let v = vec![0u8; n];
        assert_eq!(v[n - 1] + v[n / 2], 0);
    }
    // Reallocs: a vector grown by pushes from one byte to large, then shrunk.
    let mut grown = Vec::new();
    for i in 0..300_000u32 {
        grown.push(i);
    }
    grown.truncate(10);
    grown.shrink_to_fit();
    assert_eq!(grown.iter().sum::<u32>(), 45);
    // Collections.
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..5000 {
        map.insert(i, format!("value {i}"));
        tree.insert(format!("key {i}"), i);
    }
    assert_eq!(map[&4999], "value 4999");
    assert_eq!(tree["key 17"], 17);
    // Blocks freed by other threads than the one that allocated them (remote frees), both
    // ways.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
    let consumer = std::thread::spawn(move || rx.iter().map(|v| v.iter().sum::<u64>()).sum());
    for i in 0..2000u64 {
        tx.send(vec![i; (i % 64 + 1) as usize]).unwrap();
    }
    drop(tx);
    let total: u64 = consumer.join().unwrap();
    assert!(total > 0);
    let from_thread = std::thread::spawn(|| (0..1000).map(|i| vec![i; 10]).collect::<Vec<_>>())
        .join()
        .unwrap();
    assert_eq!(black_box(from_thread).len(), 1000);
}

#[cfg(feature = "valgrind")]
mod valgrind {
    use super::*;

    /// Memcheck's options: any error is exit status 99.
    const VALGRIND: &[&str] = &["valgrind", "--error-exitcode=99", "--leak-check=no"];

    fn have_valgrind() -> bool {
        let found = Command::new("valgrind").arg("--version").output().is_ok();
        if !found {
            eprintln!("note: valgrind is not installed; skipping (`.ci/valgrind.sh` installs it)");
        }
        found
    }

    #[test]
    fn valgrind_reports_use_after_free() {
        child("vg-uaf", use_after_free);
        if !have_valgrind() {
            return;
        }
        let out = run_child(
            VALGRIND,
            "valgrind::valgrind_reports_use_after_free",
            "vg-uaf",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(99),
            "memcheck should report: {stderr}"
        );
        assert!(stderr.contains("Invalid read of size 8"), "{stderr}");
        assert!(
            stderr.contains("bytes inside a block of size 32 free'd"),
            "memcheck should name the freed block: {stderr}"
        );
    }

    #[test]
    fn valgrind_runs_a_workload_clean() {
        child("vg-clean", workload);
        if !have_valgrind() {
            return;
        }
        let out = run_child(
            VALGRIND,
            "valgrind::valgrind_runs_a_workload_clean",
            "vg-clean",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "memcheck should be silent: {stderr}"
        );
        assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    }
}

#[cfg(tessera_asan)]
mod asan {
    use super::*;

    #[test]
    fn asan_reports_use_after_free() {
        child("asan-uaf", use_after_free);
        let out = run_child(&[], "asan::asan_reports_use_after_free", "asan-uaf");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ASan should stop the child: {stderr}"
        );
        assert!(
            stderr.contains("ERROR: AddressSanitizer: heap-use-after-free"),
            "{stderr}"
        );
    }

    #[test]
    fn asan_runs_a_workload_clean() {
        child("asan-clean", workload);
        let out = run_child(&[], "asan::asan_runs_a_workload_clean", "asan-clean");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ASan should be silent: {stderr}");
    }
}
