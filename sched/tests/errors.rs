//! Errors, not panics (issue #14, item 5): a stack size no stack can have fails `build`,
//! `try_spawn` hands the stack error to the caller, and every public error type is a
//! `std::error::Error`.

mod common;

use std::error::Error;

use tessera_sched::chan::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use tessera_sched::{JoinError, Runtime, Spawn, StackError, chan, spawn, try_spawn};
use tessera_stacks::MAX_STACK_SIZE;

#[test]
fn build_rejects_a_stack_size_above_the_largest() {
    let requested = MAX_STACK_SIZE + 1;
    let err = Runtime::builder()
        .procs(1)
        .stack_size(requested)
        .build()
        .expect_err("no stack of that size exists");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StackError>());
    assert_eq!(inner, Some(&StackError::TooLarge { requested }));
    // The largest size itself is fine.
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(MAX_STACK_SIZE)
        .build()
        .unwrap();
    assert_eq!(rt.block_on(|| 7), 7);
}

#[test]
fn try_spawn_returns_the_stack_error() {
    let _w = common::Watchdog::new("try_spawn", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let too_big = 2 * MAX_STACK_SIZE;
    let from_outside = Spawn::new().stack_size(too_big).try_spawn_on(&rt, || ());
    assert_eq!(
        from_outside.err(),
        Some(StackError::TooLarge { requested: too_big })
    );
    let inside = rt.block_on(move || {
        let bad = Spawn::new().stack_size(too_big).try_spawn(|| ()).err();
        let good = try_spawn(|| 5).map(|h| h.join().unwrap());
        (bad, good)
    });
    assert_eq!(inside.0, Some(StackError::TooLarge { requested: too_big }));
    assert_eq!(inside.1, Ok(5));
    assert_eq!(rt.try_spawn(|| 6).unwrap().join().unwrap(), 6);
}

/// Child: spawns coroutines with mprotect guards (two mappings each) until the map count
/// runs out; `try_spawn` must say so, and the runtime must go on.
#[test]
fn child() {
    let Some(mode) = common::child_mode() else {
        return;
    };
    if mode == "exhaust-spawn" {
        return spawn_until_out_of_mappings();
    }
    assert_eq!(mode, "exhaust");
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(16 << 10)
        .build()
        .unwrap();
    let (tx, rx) = chan::bounded::<()>(0);
    let mut handles = Vec::new();
    let err = loop {
        let rx = rx.clone();
        match rt.try_spawn(move || {
            let _ = rx.recv();
        }) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
        assert!(handles.len() < 1_000_000, "the map count never ran out");
    };
    println!("held {} coroutines", handles.len());
    println!("error: {err}");
    assert!(matches!(err, StackError::OutOfMappings { .. }), "{err:?}");
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    // The stacks are back: spawning works again.
    assert_eq!(rt.block_on(|| 1), 1);
    println!("child done");
}

#[test]
fn try_spawn_reports_out_of_mappings() {
    let out = common::run_child("child", "exhaust", &[("TESSERA_STACK_GUARD", "mprotect")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child done"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("error: out of memory mappings"), "{stdout}");
}

/// Child: plain `spawn`s from a coroutine, none of which runs yet, with mprotect guards
/// until the map count runs out: the spawn itself must panic with the error (a coroutine
/// given no stack until its first run would find none then, with nobody to tell but an
/// abort), and the runtime must go on.
fn spawn_until_out_of_mappings() {
    // Stacks large enough for the root's loop in a debug build (catching panics, growing a
    // vector); the mappings run out at the same count whatever the size.
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(128 << 10)
        .build()
        .unwrap();
    let (held, message, sum) = rt.block_on(|| {
        let mut handles = Vec::new();
        let message = loop {
            match std::panic::catch_unwind(|| spawn(|| 1usize)) {
                Ok(h) => handles.push(h),
                Err(payload) => {
                    break payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                }
            }
            // Two mappings a stack under the default limit of 65,530: far fewer than this.
            assert!(handles.len() < 200_000, "spawn never ran out of mappings");
        };
        let held = handles.len();
        let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (held, message, sum)
    });
    println!("held {held} coroutines");
    println!("panic: {message}");
    assert_eq!(sum, held);
    // The stacks are back: spawning works again.
    assert_eq!(rt.block_on(|| spawn(|| 2).join().unwrap()), 2);
    println!("child done");
}

#[test]
fn spawn_panics_in_the_spawner_when_mappings_run_out() {
    let out = common::run_child(
        "child",
        "exhaust-spawn",
        &[("TESSERA_STACK_GUARD", "mprotect")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child done"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("panic: ") && stdout.contains("out of memory mappings"),
        "{stdout}"
    );
}

/// `e`'s message, checking that it is an `Error` without a source.
fn message(e: &dyn Error) -> String {
    assert!(e.source().is_none(), "{e}");
    e.to_string()
}

#[test]
fn channel_and_join_errors_are_errors() {
    assert_eq!(message(&SendError(1)), "sending on a closed channel");
    assert_eq!(message(&TrySendError::Full(1)), "channel full or closed");
    assert_eq!(message(&TrySendError::Closed(1)), "channel full or closed");
    assert_eq!(
        message(&SendTimeoutError::Timeout(1)),
        "send timed out or channel closed"
    );
    assert_eq!(message(&RecvError), "receiving on a closed channel");
    assert_eq!(message(&TryRecvError::Empty), "channel empty or closed");
    assert_eq!(
        message(&RecvTimeoutError::Closed),
        "receive timed out or channel closed"
    );
    assert_eq!(
        message(&JoinError::Cancelled),
        "runtime shut down before the coroutine finished"
    );
    // Boxed, as `?` into `Box<dyn Error>` makes them.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(TrySendError::Closed(String::new()));
    assert!(boxed.downcast_ref::<TrySendError<String>>().is_some());
}
