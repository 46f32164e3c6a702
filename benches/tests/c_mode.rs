//! End-to-end check of `--c`: every C program is compiled and run for real, with a tiny
//! budget, on glibc and on libtessera.so; the table appears, no run failed, and the report
//! gets its C-mode section and chart. Never looks at the figures themselves.
//!
//! The runner writes into a scratch target directory, where libtessera.so is a link to the
//! real target directory's (built here first if missing), and it is started without
//! `$CARGO`, so it uses that library as it is instead of building one into the scratch
//! directory (which would rebuild the whole allocator).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory this test's runner binary was built in (`<target>/<profile>/`).
fn real_target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_tessera-bench"));
    exe.parent()
        .and_then(Path::parent)
        .expect("the runner lives in <target>/<profile>/")
        .to_path_buf()
}

/// libtessera.so in the real target directory, built with the cargo running this test if
/// it is not there; `None` (with the reason on stderr) if it cannot be had.
fn libtessera() -> Option<PathBuf> {
    let target = real_target_dir();
    let lib = target.join("release/libtessera.so");
    if !lib.is_file() {
        let Some(cargo) = std::env::var_os("CARGO") else {
            eprintln!("{} is missing and no $CARGO to build it", lib.display());
            return None;
        };
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "tessera-preload"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .ok()?;
        if !status.success() {
            eprintln!("cargo build --release -p tessera-preload: {status}");
            return None;
        }
    }
    lib.is_file().then_some(lib)
}

/// Runs `tessera-bench --c ARGS` with `target` as its target directory and without `$CARGO`;
/// returns stdout and stderr, after checking it succeeded.
fn run_c_mode(args: &[&str], target: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .arg("--c")
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

fn has_c_compiler() -> bool {
    ["cc", "gcc", "clang"].iter().any(|cc| {
        Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn c_mode_runs_every_program_on_glibc_and_tessera() {
    if !has_c_compiler() {
        eprintln!("no C compiler (cc, gcc or clang): the C mode cannot run here; skipped");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("tessera-bench-c-{}", std::process::id()));
    let mut allocators = "glibc".to_string();
    match libtessera() {
        Some(lib) => {
            std::fs::create_dir_all(scratch.join("release")).unwrap();
            std::os::unix::fs::symlink(&lib, scratch.join("release/libtessera.so")).unwrap();
            allocators.push_str(",tessera");
        }
        None => eprintln!("libtessera.so cannot be had: glibc only"),
    }
    let tiny = ["--threads", "1,2", "--reps", "1", "--duration-ms", "20"];
    let (stdout, stderr) = run_c_mode(
        &[&["--allocators", &allocators], &tiny[..]].concat(),
        &scratch,
    );
    assert!(
        stdout.contains("C mode: C programs, allocators under LD_PRELOAD"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // A row with a figure in every column for every series at both thread counts.
    let columns = allocators.split(',').count();
    for series in [
        "fastpath-16",
        "fastpath-64",
        "fastpath-256",
        "fastpath-1024",
        "glibc-simple",
        "larson",
        "xmalloc",
        "cache-scratch",
        "mstress",
        "manythreads",
        "burst",
    ] {
        for threads in [1, 2] {
            let row = stdout
                .lines()
                .find(|l| {
                    let mut words = l.split_whitespace();
                    words.next() == Some(series) && words.next() == Some(&threads.to_string())
                })
                .unwrap_or_else(|| panic!("no {series} t={threads} row:\n{stdout}"));
            let cells: Vec<&str> = row.split('|').skip(1).collect();
            assert_eq!(cells.len(), columns, "{row}");
            for cell in cells {
                // A figure (ops/s or a ratio) and a peak RSS.
                assert_eq!(cell.split_whitespace().count(), 2, "{row}");
            }
        }
    }
    // 8 programs x 2 thread counts x the allocators, each announced on stderr.
    let runs = 8 * 2 * columns;
    assert!(stderr.contains(&format!("[{runs:>4}/{runs}")), "{stderr}");
    if columns == 2 {
        assert!(stderr.contains("not started by cargo"), "{stderr}");
    }
    let report = std::fs::read_to_string(scratch.join("tessera-bench/report.md")).unwrap();
    assert!(report.contains("## C mode"), "{report}");
    assert!(report.contains("| larson | 2 |"), "{report}");
    assert!(report.contains("ns per pair"), "{report}");
    let chart = std::fs::read_to_string(scratch.join("tessera-bench/chart-c.svg")).unwrap();
    assert!(chart.contains("larson t=2"), "{chart}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_missing_library_is_a_note_and_its_column_is_left_out() {
    if !has_c_compiler() {
        eprintln!("no C compiler (cc, gcc or clang): the C mode cannot run here; skipped");
        return;
    }
    // An empty target directory and no $CARGO: libtessera.so is not there and is not built.
    let scratch =
        std::env::temp_dir().join(format!("tessera-bench-c-missing-{}", std::process::id()));
    let args = [
        "--allocators",
        "glibc,tessera",
        "--workloads",
        "larson",
        "--threads",
        "1",
    ];
    let (stdout, stderr) = run_c_mode(
        &[&args[..], &["--reps", "1", "--duration-ms", "5"]].concat(),
        &scratch,
    );
    let lib = scratch.join("release/libtessera.so");
    let note = format!("skipped tessera: {} is not there", lib.display());
    assert!(stderr.contains(&note), "{stderr}");
    assert!(
        stderr.contains("cargo build --release -p tessera-preload"),
        "{stderr}"
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("workload"))
        .unwrap_or_else(|| panic!("no table:\n{stdout}"));
    assert!(
        header.contains("glibc") && !header.contains("tessera"),
        "{header}"
    );
    assert!(
        stdout.contains(&note),
        "the note follows the table: {stdout}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
