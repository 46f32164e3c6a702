//! Child-process scenarios shared by the tests that expect an abort: the test binary runs
//! itself again with `TESSERA_CHILD` naming the scenario, so an abort is observed from
//! outside.

use std::process::{Command, Output};

/// Runs `scenario` in a child (this test binary, `--exact test_name`, with `env` set) and
/// returns its output. In the child, runs `body` and exits. Heap profiling is off in the
/// child unless `env` sets it: a sampled block lives in an object of another class (or a span
/// of its own), which would move it away from the neighbours a scenario lays out (or take a
/// guarded sample's place).
pub(crate) fn in_child(
    test_name: &str,
    scenario: &str,
    env: &[(&str, &str)],
    body: impl FnOnce(),
) -> Option<Output> {
    if std::env::var("TESSERA_CHILD").as_deref() == Ok(scenario) {
        body();
        std::process::exit(0);
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("TESSERA_CHILD", scenario)
        .env("TESSERA_PROF_RATE", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Some(output)
}

/// The child aborted (SIGABRT) and its stderr says `message`.
pub(crate) fn assert_aborted_with(output: &Output, message: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "child should abort; stderr: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "stderr should say {message:?}: {stderr}"
    );
}

/// Whether the crate was built without its `hardened` feature (`--no-default-features`):
/// the tests of the double-free marker and the encoded links (issue #15, items 1 and 2)
/// have nothing to test then, and say so instead of failing.
pub(crate) fn unhardened(test_name: &str) -> bool {
    if tessera::hardened() {
        return false;
    }
    eprintln!("{test_name}: skipped, it tests the `hardened` feature, which is off");
    true
}
