//! A dead coroutine's record is reused by the next spawn on its P (gfree.rs), and the new
//! incarnation must not inherit anything from the old one: whatever the old one changed
//! beyond the record's birth line (coroutine.rs, `G`'s line plan) is blanked when it retires
//! (`G::retire`), since a spawn writes the birth line alone.
//!
//! On one P, a spawn right after a join takes the record the joined coroutine left on the
//! P's free list (last in, first out), so each test below runs its new coroutine on the
//! previous one's record.

mod common;

use std::sync::Arc;

use tessera_sched::{Runtime, is_locked_to_thread, lock_to_thread, spawn, yield_now};

#[test]
fn a_coroutine_on_a_reused_record_is_not_locked_to_a_thread() {
    let _w = common::Watchdog::new("reuse lock", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let locked = rt.block_on(|| {
        (0..100)
            .filter(|_| {
                // Each one locks itself and returns locked; the next one runs on its record.
                spawn(|| {
                    let inherited = is_locked_to_thread();
                    lock_to_thread();
                    inherited
                })
                .join()
                .unwrap()
            })
            .count()
    });
    assert_eq!(locked, 0, "coroutines born locked to their thread");
}

#[test]
fn a_reused_record_shows_no_stack_in_use_before_it_runs() {
    let _w = common::Watchdog::new("reuse stack", 60);
    // Dumped through its own handle: `tessera_sched::dump()` lists every live runtime of
    // the process, and the other tests of this file run theirs at the same time, with the
    // same coroutine ids (each runtime counts from 1). A line found by id alone there was,
    // once in a CI run, another runtime's coroutine, `running`. On one P nothing else can
    // run the new coroutine while its spawner holds the P and does not switch out, so
    // every sample must show it waiting in runnext.
    let rt = Arc::new(Runtime::builder().procs(1).build().unwrap());
    let own = rt.clone();
    let lines = rt.block_on(move || {
        let mut lines = Vec::new();
        for _ in 0..20 {
            // Switches out once, which saves its stack pointer in the record; shallow, so
            // the record is kept for reuse.
            spawn(yield_now).join().unwrap();
            // Not run yet: it waits in runnext while this coroutine dumps.
            let h = spawn(|| ());
            let id = h.id();
            let dump = own.dump();
            let line = dump
                .lines()
                .find(|l| l.starts_with(&format!("coroutine {id} ")))
                .unwrap_or_else(|| panic!("coroutine {id} not in the dump:\n{dump}"))
                .to_owned();
            h.join().unwrap();
            lines.push(line);
        }
        lines
    });
    for line in &lines {
        assert!(line.contains("[runnable"), "{line}");
        assert!(
            line.contains(", stack 0 of "),
            "a new coroutine with stack in use: {line}"
        );
    }
}
