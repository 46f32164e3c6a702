//! End-to-end check of the echo comparison binary: a tiny run against the tokio and may
//! servers measures both, skips a missing tessera-sched example with a message, and writes
//! `echo.md`. (Figures are not checked: speed is the benchmark's job, not a test's.)

use std::process::Command;

#[test]
fn a_tiny_comparison_measures_the_rust_peers_and_skips_a_missing_server() {
    let target = std::env::temp_dir().join(format!("tessera-bench-echo-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_echo"))
        .args(["compare", "--servers", "tessera,tokio,may", "--rounds", "1"])
        .args(["--conns", "8", "--warmup-ms", "50", "--duration-ms", "200"])
        // Free ports from the kernel: a fixed or guessed one may be in use by anyone.
        .args(["--base-port", "0"])
        .args(["--tessera", "/nonexistent/echo"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("skipping tessera: /nonexistent/echo not found"),
        "{stderr}"
    );
    assert!(stdout.contains("no tessera row"), "{stdout}");
    let report = std::fs::read_to_string(target.join("tessera-bench/echo.md")).unwrap();
    assert!(report.contains("| tokio | "), "{report}");
    assert!(report.contains("| may | "), "{report}");
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn the_client_alone_reports_rate_and_percentiles() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_echo"))
        .args(["server", "tokio", "127.0.0.1:0", "--workers", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_echo"))
        .args(["client", &addr, "--conns", "4", "--size", "100"])
        .args(["--warmup-ms", "20", "--duration-ms", "100"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(" req/s  p50 ") && stdout.contains(" p99 "),
        "{stdout}"
    );
}
