//! A large frame cannot step over a stack's guard (issue #15): a C function with a 32 KiB
//! frame, called by a coroutine that has used about 39 KiB of its 64 KiB stack, faults in the
//! guard with tessera's overflow report instead of writing into the neighbouring stack. With
//! a one-page guard (`TESSERA_STACK_GUARD_KB=4`) the same frame writes into the neighbour
//! without any fault, which is what the default width is for.
//!
//! Each case runs in a child process (re-executing this binary), since it must crash.

mod common;

use std::hint::black_box;

use common::{child_mode, run_child, signal_of, stderr_of};
use corosensei::Coroutine;
use tessera_stacks::PooledStack;

/// The frame of `void f(char v) { volatile char buf[32768]; buf[0] = v; }` as gcc 12 -O0
/// compiles it without `-fstack-clash-protection` (Debian's default; `gcc -O0 -S`): one `sub`
/// reserves the frame and the first store is its lowest byte, 32 KiB below the caller.
///
/// Written in assembly because the Rust version of the same function would not show the
/// problem: rustc probes a frame larger than a page one page at a time, top down, so it
/// faults on the first guard page whatever the guard's width.
///
/// # Safety
/// Writes one byte 32 KiB below the stack pointer: the caller must have that much stack, or
/// be testing what happens when it has not.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "C" fn c_32k_frame(value: u8) {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "sub rsp, 0x7f88",
        "mov byte ptr [rbp - 0x8000], dil",
        "leave",
        "ret",
    )
}

/// Usable size of both stacks: the case, a 32 KiB frame on top of 34-40 KiB used.
const STACK: usize = 64 << 10;
/// The coroutine calls the frame with at most this much stack left (about 39 KiB used).
const LEFT_AT_CALL: usize = 26 << 10;
/// What the frame stores, and what the neighbour is filled with beforehand.
const STORED: u8 = 0x5a;
const FILL: u8 = 0xa5;
/// Bytes at the top of the neighbouring stack that are filled and checked.
const WATCHED: usize = 16 << 10;

/// Recurses with ~1 KiB frames until at most `left_at_most` bytes of stack remain, then calls
/// `f` with the bytes left.
#[inline(never)]
fn descend_then(left_at_most: usize, f: &mut dyn FnMut(usize)) {
    let buf = black_box([1u8; 1024]);
    let left = tessera_stacks::remaining_stack().expect("on a tessera stack");
    if left <= left_at_most {
        f(left);
    } else {
        descend_then(left_at_most, f);
    }
    black_box(&buf);
}

/// The top `WATCHED` bytes of a stack nobody runs on.
fn watched(stack: &PooledStack) -> *mut u8 {
    (stack.base() - WATCHED) as *mut u8
}

/// Two adjacent stacks: a coroutine on the upper one calls the 32 KiB frame near the end of
/// its stack. Prints what happened to the lower one if the process survives.
#[cfg(target_arch = "x86_64")]
fn big_frame_child() {
    // A fresh process carves slots bottom up, one per refill: the first stack is the lower.
    let neighbour = tessera_stacks::acquire(STACK).unwrap();
    let mut victim = tessera_stacks::acquire(STACK).unwrap();
    assert_eq!(
        victim.limit(),
        neighbour.base(),
        "the victim's guard lies right above the neighbour"
    );
    // SAFETY: the neighbour's top is usable memory of a stack this child holds and nobody runs
    // on; filling it makes any later store visible.
    unsafe { watched(&neighbour).write_bytes(FILL, WATCHED) };
    victim.set_label(77);
    let bounds = victim.bounds();
    eprintln!(
        "child: victim {} guard {:#x} to {:#x} usable_lo {:#x}",
        victim.id(),
        bounds.guard.start,
        bounds.guard.end,
        bounds.usable_lo
    );
    let mut co = Coroutine::<(), (), (), _>::with_stack(victim, |_, ()| {
        descend_then(LEFT_AT_CALL, &mut |left| {
            eprintln!("child: calling the 32 KiB frame with {left} bytes of stack left");
            // SAFETY: this is the overflow under test; the store lands below the stack.
            unsafe { c_32k_frame(STORED) };
        });
    });
    co.resume(());
    // Only reached when the store did not fault.
    let top = watched(&neighbour);
    // SAFETY: as for the fill above.
    let bytes = unsafe { std::slice::from_raw_parts(top, WATCHED) };
    let changed: Vec<usize> = (0..WATCHED).filter(|&i| bytes[i] != FILL).collect();
    for &i in &changed {
        eprintln!(
            "child: neighbour {} overwritten {} bytes below its top: {:#x}",
            neighbour.id(),
            WATCHED - i,
            bytes[i]
        );
    }
    eprintln!("child: survived, {} neighbour bytes changed", changed.len());
}

/// Takes a stack, runs a deep coroutine on it, gives it back, trims the pool, takes the same
/// stack again and stores to the lowest byte of its guard, the guard's far end.
fn far_end_child() {
    let mut stack = tessera_stacks::acquire(STACK).unwrap();
    let id = stack.id();
    stack.set_label(78);
    let mut co = Coroutine::<(), (), (), _>::with_stack(stack, |_, ()| {
        descend_then(8 << 10, &mut |_| {});
    });
    co.resume(());
    drop(co.into_stack()); // back to this thread's cache: the shrink path purges it
    assert!(tessera_stacks::trim() > 0);
    let again = tessera_stacks::acquire(STACK).unwrap();
    assert_eq!(again.id(), id, "the pool hands the same slot out again");
    let guard = again.guard();
    eprintln!(
        "child: reused {} guard {} bytes, stats say {}",
        again.id(),
        guard.len(),
        tessera_stacks::stats().guard_bytes
    );
    // SAFETY: deliberately faults: the lowest guard byte of a stack this child holds.
    unsafe { (guard.start as *mut u8).write_volatile(1) };
}

/// Entry point of the child processes; does nothing when run as part of the normal suite.
#[test]
fn child() {
    let Some(mode) = child_mode() else { return };
    match mode.as_str() {
        #[cfg(target_arch = "x86_64")]
        "big-frame" => big_frame_child(),
        "far-end" => far_end_child(),
        other => panic!("unknown child mode {other}"),
    }
}

/// The overflow report line of a child's stderr.
fn report(err: &str) -> &str {
    err.lines()
        .find(|l| l.starts_with("tessera-stacks: stack overflow"))
        .unwrap_or_else(|| panic!("no overflow report in: {err}"))
}

/// The number after `key` in `line`, up to the next space or comma.
fn number_after(line: &str, key: &str) -> usize {
    let rest = line
        .split_once(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        .1;
    let end = rest.find([' ', ',', '\n']).unwrap_or(rest.len());
    let digits = &rest[..end];
    match digits.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .unwrap_or_else(|e| panic!("{key:?} in {line}: {e}"))
}

const PAGE: usize = 4096;

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_kib_frame_faults_in_the_guard_instead_of_writing_into_the_neighbour() {
    for guard_mode in ["auto", "mprotect"] {
        let out = run_child("child", "big-frame", &[("TESSERA_STACK_GUARD", guard_mode)]);
        let err = stderr_of(&out);
        assert_eq!(signal_of(&out), Some(libc::SIGABRT), "{guard_mode}: {err}");
        assert!(!err.contains("survived"), "{guard_mode}: {err}");
        let line = report(&err);
        let id = err
            .lines()
            .find_map(|l| l.strip_prefix("child: victim "))
            .and_then(|l| l.split(' ').next())
            .expect("child printed the victim's id");
        assert!(
            line.contains(&format!("stack {id} (coroutine 77) (64 KiB usable)")),
            "{line}"
        );
        assert!(line.contains("(guard: 64 KiB)"), "{line}");
        // The store went further below the stack than a one-page guard reaches, and was
        // caught inside the wide one.
        let guard_lo = number_after(&err, " guard ");
        let usable_lo = number_after(&err, " usable_lo ");
        let fault = number_after(line, "fault address ");
        let below = number_after(line, ", ");
        assert_eq!(usable_lo - fault, below, "{line}");
        assert!(fault >= guard_lo, "fault {fault:#x} below the guard: {err}");
        assert!(
            below > PAGE,
            "{guard_mode}: only {below} bytes below: {line}"
        );
        assert!(below < 64 << 10, "{line}");
        // The frame was called with 24-26 KiB left: 38-40 KiB of the 64 KiB were in use.
        let left = number_after(&err, "frame with ");
        assert!(left <= LEFT_AT_CALL && left > LEFT_AT_CALL - 2048, "{err}");
    }
}

/// The evidence that the test above tests something: with the old one-page guard the same
/// frame writes into the neighbouring stack and the process carries on.
#[cfg(target_arch = "x86_64")]
#[test]
fn with_a_one_page_guard_the_same_frame_writes_into_the_neighbour() {
    if tessera_sys::mem::page_size() != PAGE {
        return; // a 4 KiB setting rounds up to a larger page, which the frame may not jump
    }
    let out = run_child("child", "big-frame", &[("TESSERA_STACK_GUARD_KB", "4")]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("tessera-stacks: stack overflow"), "{err}");
    assert!(
        err.contains("child: survived, 1 neighbour bytes changed"),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("overwritten"))
        .expect("the child named the overwritten byte");
    assert!(line.ends_with(&format!("{STORED:#x}")), "{line}");
    let below_top = number_after(line, "overwritten ");
    assert!(below_top <= PAGE, "in the neighbour's top page: {line}");
}

#[test]
fn the_setting_sets_the_width_and_a_reused_stack_keeps_all_of_it() {
    let cases: [(&[(&str, &str)], usize); 4] = [
        (&[], 64),
        (&[("TESSERA_STACK_GUARD_KB", "128")], 128),
        (&[("TESSERA_STACK_GUARD_KB", "100")], 100),
        (
            &[
                ("TESSERA_STACK_GUARD_KB", "256"),
                ("TESSERA_STACK_GUARD", "mprotect"),
            ],
            256,
        ),
    ];
    let page = tessera_sys::mem::page_size();
    for (env, kib) in cases {
        let width = (kib << 10).next_multiple_of(page);
        let out = run_child("child", "far-end", env);
        let err = stderr_of(&out);
        assert_eq!(signal_of(&out), Some(libc::SIGABRT), "{env:?}: {err}");
        assert!(
            err.contains(&format!("guard {width} bytes, stats say {width}")),
            "{env:?}: {err}"
        );
        let line = report(&err);
        assert!(
            !line.contains("(coroutine"),
            "the label went with the release: {line}"
        );
        assert!(
            line.contains(&format!(
                ", {width} bytes below the stack (guard: {} KiB)",
                width >> 10
            )),
            "{env:?}: {line}"
        );
    }
}
