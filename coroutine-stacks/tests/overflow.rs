//! Overflowing a tessera stack ends the process with one clear line; other faults still reach
//! the handler that was installed before ours (std's, or the default action).

mod common;

use std::hint::black_box;

use common::{child_mode, run_child, signal_of, stderr_of};
use corosensei::Coroutine;

/// Recurses until the stack runs out; the frame keeps a buffer so each level uses ~1 KiB.
#[inline(never)]
#[allow(unconditional_recursion)] // the point: it ends on the guard
fn recurse_forever(depth: u64) -> u64 {
    let buf = black_box([depth as u8; 1024]);
    black_box(recurse_forever(depth + 1)) + u64::from(buf[7])
}

/// Entry point of the child processes; does nothing when run as part of the normal suite.
#[test]
fn child() {
    let Some(mode) = child_mode() else { return };
    match mode.as_str() {
        "overflow-coroutine" => {
            let mut stack = tessera_stacks::acquire(64 << 10).unwrap();
            stack.set_label(4242);
            eprintln!("child: stack {} ready", stack.id());
            let mut co = Coroutine::<(), (), u64, _>::with_stack(stack, |_, ()| recurse_forever(0));
            co.resume(());
        }
        "overflow-segment" => {
            tessera_stacks::grow(16 << 10, || recurse_forever(0));
        }
        "null-write" => {
            let _ready = tessera_stacks::acquire(16 << 10).unwrap(); // installs the handler
            let p = black_box(std::ptr::null_mut::<u64>());
            // SAFETY: deliberately faults: this child checks that a fault that is not a guard
            // hit reaches the default action unchanged.
            unsafe { p.write_volatile(1) };
        }
        "thread-overflow" => {
            let _ready = tessera_stacks::acquire(16 << 10).unwrap(); // installs the handler
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(|| recurse_forever(0))
                .unwrap()
                .join()
                .unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
    unreachable!("child mode {mode} should have crashed");
}

#[test]
fn coroutine_overflow_reports_stack_and_aborts() {
    let out = run_child("child", "overflow-coroutine", &[]);
    let err = stderr_of(&out);
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "stderr: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("tessera-stacks: stack overflow"))
        .unwrap_or_else(|| panic!("no overflow report in: {err}"));
    // The id printed by the child before the crash is the one reported.
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("child: stack "))
        .and_then(|l| l.strip_suffix(" ready"))
        .expect("child printed its stack id");
    assert!(
        line.contains(&format!("stack {id} (coroutine 4242) (64 KiB usable)")),
        "{line}"
    );
    assert!(line.contains("fault address 0x"), "{line}");
    assert!(
        line.contains("(guard: 64 KiB)"),
        "the default width: {line}"
    );
    assert!(
        line.contains("tessera_stacks::acquire(size) with size > 64 KiB"),
        "{line}"
    );
}

#[test]
fn overflow_of_a_growth_segment_is_reported() {
    let out = run_child("child", "overflow-segment", &[]);
    let err = stderr_of(&out);
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "stderr: {err}");
    // Segments carry no label.
    assert!(err.contains(".0 (16 KiB usable) hit its guard at"), "{err}");
}

#[test]
fn other_faults_keep_their_default_action() {
    let out = run_child("child", "null-write", &[]);
    let err = stderr_of(&out);
    assert_eq!(signal_of(&out), Some(libc::SIGSEGV), "stderr: {err}");
    assert!(!err.contains("tessera-stacks"), "{err}");
}

#[test]
fn thread_overflow_still_reaches_std_handler() {
    let out = run_child("child", "thread-overflow", &[]);
    let err = stderr_of(&out);
    // std reports the overflow of its own thread stacks, then aborts.
    assert_eq!(signal_of(&out), Some(libc::SIGABRT), "stderr: {err}");
    assert!(err.contains("has overflowed its stack"), "{err}");
    assert!(!err.contains("tessera-stacks"), "{err}");
}
