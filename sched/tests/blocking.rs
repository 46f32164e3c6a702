//! `blocking(..)` and sysmon: hand-off of a P whose M is blocked, long-run records.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::{Runtime, blocking, sleep, spawn, yield_now};

#[test]
fn a_blocked_coroutine_does_not_stall_the_others_on_its_p() {
    let _w = common::Watchdog::new("blocking_handoff", 60);
    // One P: without a hand-off, nothing else could run while the M sleeps.
    let rt = Runtime::builder().procs(1).build().unwrap();
    let (ticks_during, sleeper_ticks, threads) = rt.block_on(|| {
        let blocked = Arc::new(AtomicBool::new(true));
        let spins = Arc::new(AtomicU64::new(0));
        let b = blocked.clone();
        let blocker = spawn(move || {
            blocking(|| std::thread::sleep(Duration::from_millis(200)));
            b.store(false, Ordering::SeqCst);
        });
        // A CPU-bound coroutine that only yields, and one that sleeps.
        let s = spins.clone();
        let b = blocked.clone();
        let spinner = spawn(move || {
            while b.load(Ordering::SeqCst) {
                s.fetch_add(1, Ordering::Relaxed);
                yield_now();
            }
        });
        let b = blocked.clone();
        let sleeper = spawn(move || {
            let mut n = 0u64;
            while b.load(Ordering::SeqCst) && n < 20 {
                sleep(Duration::from_millis(2));
                n += 1;
            }
            n
        });
        let sleeper_ticks = sleeper.join().unwrap();
        let during = spins.load(Ordering::Relaxed);
        let still_blocked = blocked.load(Ordering::SeqCst);
        blocker.join().unwrap();
        spinner.join().unwrap();
        assert!(
            still_blocked,
            "the sleeper finished its 20 ticks inside the 200 ms block"
        );
        (during, sleeper_ticks, tessera_sched::stats().threads)
    });
    assert_eq!(sleeper_ticks, 20);
    assert!(ticks_during > 1000, "the spinner ran {ticks_during} times");
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
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(60) {
                std::hint::spin_loop();
            }
            // Parked, so the dump below sees it alive.
            rx.recv().unwrap();
        });
        sleep(Duration::from_millis(100));
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
