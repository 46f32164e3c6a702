//! Helpers shared by the integration tests: running one test of the current binary in a
//! child process, for the cases that must crash or exhaust a process-wide resource.

#![allow(dead_code)] // each test binary uses its own subset

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

/// Environment variable that tells a re-executed test binary which child mode to run.
pub(crate) const CHILD_MODE: &str = "TESSERA_STACKS_CHILD";

/// The child mode this process was started in, if it is a child.
pub(crate) fn child_mode() -> Option<String> {
    std::env::var(CHILD_MODE).ok()
}

/// Re-runs this test binary, running only `test` (which must dispatch on `child_mode()`), with
/// `mode` and extra environment variables set.
pub(crate) fn run_child(test: &str, mode: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn child test process")
}

/// The signal that ended the child, if one did.
pub(crate) fn signal_of(out: &Output) -> Option<i32> {
    out.status.signal()
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
