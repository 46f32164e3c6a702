//! End-to-end checks of the runner binary: a tiny comparison writes its table, report.md and
//! chart.svg; a child speaks the line protocol; `--sched` measures every scheduler peer;
//! bad flags fail loudly.

use std::process::Command;
use tessera_bench::protocol::ChildReport;

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
}

#[test]
fn a_small_comparison_writes_table_report_and_chart() {
    let target = std::env::temp_dir().join(format!("tessera-bench-cli-{}", std::process::id()));
    let out = runner()
        .args([
            "--workloads",
            "fastpath,xmalloc",
            "--threads",
            "1,2",
            "--allocators",
            "jemalloc,system",
        ])
        .args(["--reps", "1", "--duration-ms", "10"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Without mimalloc selected, the first allocator is the baseline.
    assert!(stdout.contains("throughput vs jemalloc"), "{stdout}");
    assert!(stdout.contains("xmalloc          2 |"), "{stdout}");
    assert!(stderr.contains("[   8/8"), "progress: {stderr}");
    let report = std::fs::read_to_string(target.join("tessera-bench/report.md")).unwrap();
    assert!(report.contains("| fastpath | 1 |"), "{report}");
    let chart = std::fs::read_to_string(target.join("tessera-bench/chart.svg")).unwrap();
    assert!(chart.contains("system xmalloc t=2"), "{chart}");
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn a_child_reports_one_sane_result_line() {
    let out = runner()
        .args(["--child", "system", "glibc-simple", "2", "10"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = ChildReport::find_in(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(
        report.ops > 0 && report.nanos > 0 && report.maxrss_kib > 0,
        "{report:?}"
    );
}

#[test]
fn sched_compares_for_real_and_bad_flags_fail() {
    // One repetition: the table, with a measured figure for every Rust peer that has the
    // configuration, the user build's column (benches/sched-user, built by the runner), and
    // the parked line from its own process.
    let out = runner().args(["--sched", "--reps", "1"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("the runner's Rust peers allocate through Tessera"),
        "{stdout}"
    );
    for workload in [
        "spawn-join",
        "spawn-all-1k-2p",
        "spawn-all-100k-1p",
        "spawn-all-1m-2p",
        "ping-pong-1p",
        "ping-pong-2p",
        "yield",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{workload} ")))
            .unwrap_or_else(|| panic!("no {workload} row: {stdout}"));
        // Columns: tessera (this build), user (benches/sched-user).
        for column in [1, 2] {
            let ns: f64 = row.split_whitespace().nth(column).unwrap().parse().unwrap();
            assert!(ns > 0.0, "{row}");
        }
    }
    assert!(
        stdout.contains("tessera  parked 100000 rss_per_g_bytes"),
        "{stdout}"
    );
    let out = runner().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = runner().arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--programs"));
}
