//! `blocking(..)` and sysmon: hand-off of a P whose M is blocked, long-run records.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tessera_sched::{Runtime, WaitReason, blocking, sleep, spawn, yield_now};

#[test]
fn a_blocked_coroutine_does_not_stall_the_others_on_its_p() {
    let _w = common::Watchdog::new("blocking_handoff", 60);
    // One P: without a hand-off, nothing else could run while the M is blocked. The blocked
    // call lasts until the others have run (a spinner that only yields, a sleeper on
    // timers), not for a fixed time, so without the hand-off this hangs and the watchdog
    // fails the test, however slow or loaded the machine.
    let rt = Runtime::builder().procs(1).build().unwrap();
    let threads = rt.block_on(|| {
        let inside = Arc::new(AtomicBool::new(false));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let i = inside.clone();
        let blocker = spawn(move || {
            blocking(move || {
                i.store(true, Ordering::SeqCst);
                released.recv().unwrap();
            });
        });
        let spins = Arc::new(AtomicU64::new(0));
        let (s, i) = (spins.clone(), inside.clone());
        let spinner = spawn(move || {
            while !i.load(Ordering::SeqCst) {
                yield_now();
            }
            for _ in 0..1000 {
                s.fetch_add(1, Ordering::Relaxed);
                yield_now();
            }
        });
        let i = inside.clone();
        let sleeper = spawn(move || {
            while !i.load(Ordering::SeqCst) {
                yield_now();
            }
            for _ in 0..20 {
                sleep(Duration::from_millis(2));
            }
        });
        sleeper.join().unwrap();
        spinner.join().unwrap();
        assert_eq!(spins.load(Ordering::Relaxed), 1000);
        assert!(!blocker.is_finished(), "the blocked call was still waiting");
        // Read while the first M is still blocked.
        let threads = tessera_sched::stats().threads;
        release.send(()).unwrap();
        blocker.join().unwrap();
        threads
    });
    assert!(
        threads >= 2,
        "a second M was started for the hand-off ({threads})"
    );
}

#[test]
fn blocking_returns_values_propagates_panics_and_works_outside() {
    let _w = common::Watchdog::new("blocking_values", 60);
    assert_eq!(blocking(|| 5), 5);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                spawn(move || {
                    let v: Vec<u64> = blocking(|| (0..i).collect());
                    // Allocated in the section (thread's own cache), freed on a P.
                    v.iter().sum::<u64>()
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let i = i as u64;
            assert_eq!(h.join().unwrap(), i * i.saturating_sub(1) / 2);
        }
        let h = spawn(|| blocking(|| panic!("inside blocking")));
        match h.join() {
            Err(tessera_sched::JoinError::Panicked(p)) => {
                assert_eq!(p.downcast_ref::<&str>(), Some(&"inside blocking"));
            }
            other => panic!("expected a panic, got {:?}", other.map(|_| ())),
        }
        // File helpers go through `blocking`.
        let p = std::env::temp_dir().join(format!("tessera-fs-{}", std::process::id()));
        tessera_sched::fs::write(&p, b"abc").unwrap();
        assert_eq!(tessera_sched::fs::read(&p).unwrap(), b"abc");
        tessera_sched::fs::remove_file(&p).unwrap();
    });
}

#[test]
fn sysmon_records_a_coroutine_that_runs_long_without_yielding() {
    let _w = common::Watchdog::new("long_run", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (dump, long) = rt.block_on(|| {
        let (tx, rx) = tessera_sched::chan::bounded(0);
        let h = tessera_sched::Spawn::new().name("hog").spawn(move || {
            // Runs without yielding until sysmon has recorded it (after 10 ms of it at the
            // least): on a loaded machine sysmon may look late, so no fixed spin would do.
            while !common::dump_line("hog")
                .is_some_and(|l| l.contains("ran over 10ms without yielding"))
            {
                std::hint::spin_loop();
            }
            // Parked, so the dump below sees it alive.
            rx.recv().unwrap();
        });
        common::until_waiting("hog", WaitReason::ChanRecv, None);
        let dump = tessera_sched::dump();
        let long = tessera_sched::stats().long_runs;
        tx.send(()).unwrap();
        h.join().unwrap();
        (dump, long)
    });
    assert!(long >= 1, "long_runs = {long}");
    let line = dump.lines().find(|l| l.contains("\"hog\"")).expect(&dump);
    assert!(line.contains("ran over 10ms without yielding"), "{line}");
}

/// Sysmon runs under `SCHED_BATCH` (sysmon.rs, `run`), so its timed wake-ups do not preempt
/// the Ms it watches. The policy is set by sysmon itself as it starts: the test waits for it
/// (the watchdog fails a sysmon that never gets it), rather than reading once.
#[test]
fn sysmon_wakeups_do_not_preempt() {
    let _w = common::Watchdog::new("sysmon_batch", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| {
        // `/proc/self/task/*/stat`: field 2 is the name in parentheses, field 41 the
        // scheduling policy (3: SCHED_BATCH). Every runtime of this test binary has a sysmon;
        // each must get the policy.
        loop {
            let mut sysmons = 0;
            let mut batch = 0;
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue; // The thread exited meanwhile.
                };
                let Some(end) = stat.rfind(')') else { continue };
                if !stat[..end].ends_with("tessera-sysmon") {
                    continue;
                }
                sysmons += 1;
                // Fields from the third on, after the name: the policy is field 41.
                let policy = stat[end + 1..].split_whitespace().nth(41 - 3);
                batch += usize::from(policy == Some("3"));
            }
            if sysmons > 0 && batch == sysmons {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
