//! With the `mprotect` fallback forced, exhausting `vm.max_map_count` gives a clear error, not
//! a crash. Runs in a child process: the exhausted mapping space would break other tests.

mod common;

use common::{child_mode, run_child, stderr_of, stdout_of};
use tessera_stacks::{GuardMode, StackError};

#[test]
fn child() {
    let Some(mode) = child_mode() else { return };
    assert_eq!(mode, "exhaust");
    assert_eq!(tessera_stacks::guard_mode(), Ok(GuardMode::Mprotect));
    let mut held = Vec::new();
    let err = loop {
        match tessera_stacks::acquire(16 << 10) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 1_000_000, "the map count never ran out");
    };
    let stats = tessera_stacks::stats();
    println!("held {} stacks, stats {stats:?}", held.len());
    println!("error: {err}");
    assert!(matches!(err, StackError::OutOfMappings { .. }), "{err:?}");
    // Giving the stacks back needs no new mapping and must not fail either.
    drop(held);
    assert_eq!(tessera_stacks::stats().live, 0);
    println!("child done");
}

#[test]
fn mprotect_guards_run_out_with_a_clear_error() {
    let out = run_child("child", "exhaust", &[("TESSERA_STACK_GUARD", "mprotect")]);
    let stdout = stdout_of(&out);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        stderr_of(&out)
    );
    assert!(stdout.contains("child done"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("error: out of memory mappings"))
        .expect("child printed the error");
    let limit = tessera_stacks::max_map_count().unwrap();
    assert!(
        line.contains(&format!("vm.max_map_count = {limit}")),
        "{line}"
    );
    assert!(line.contains("sysctl -w vm.max_map_count="), "{line}");
    // The test harness may print its own "test child ... " on the same lines, hence the
    // searches inside lines above.
    // With two VMAs per guard, the limit caps the count near half the map count.
    let held: usize = stdout
        .lines()
        .find_map(|l| l.split_once("held ").map(|(_, rest)| rest))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("child printed how many it held");
    assert!(held > limit / 2 - 1000 && held < limit / 2, "held {held}");
}
