//! Spawn, join, yield, sleep, panics, builders and counters.

mod common;

use std::time::Duration;

use tessera_sched::{JoinError, Runtime, Spawn, spawn, yield_now};

#[test]
fn block_on_returns_the_value() {
    let _w = common::Watchdog::new("block_on", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    assert_eq!(rt.procs(), 2);
    assert_eq!(rt.block_on(|| 6 * 7), 42);
}

#[test]
fn spawn_and_join_many() {
    let _w = common::Watchdog::new("spawn_and_join_many", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let total: u64 = rt.block_on(|| {
        let hs: Vec<_> = (0..1000u64).map(|i| spawn(move || i * 2)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(total, 999 * 1000);
}

#[test]
fn yield_interleaves() {
    let _w = common::Watchdog::new("yield", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let log = rt.block_on(|| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..2)
            .map(|id| {
                let log = log.clone();
                spawn(move || {
                    for i in 0..3 {
                        log.lock().unwrap().push((id, i));
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        std::sync::Arc::try_unwrap(log)
            .unwrap()
            .into_inner()
            .unwrap()
    });
    assert_eq!(log.len(), 6);
    // With one P, each yield lets the other coroutine run: they alternate.
    let ids: Vec<_> = log.iter().map(|&(id, _)| id).collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "{ids:?}");
}

#[test]
fn panicking_coroutine_is_isolated() {
    let _w = common::Watchdog::new("panic", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (bad, good) = rt.block_on(|| {
        let bad = spawn(|| -> u32 { panic!("boom") });
        let good = spawn(|| 7u32);
        (bad.join(), good.join())
    });
    match bad {
        Err(JoinError::Panicked(p)) => assert_eq!(*p.downcast::<&str>().unwrap(), "boom"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(good.unwrap(), 7);
    // The runtime goes on.
    assert_eq!(rt.block_on(|| 1 + 1), 2);
}

#[test]
#[should_panic(expected = "inner")]
fn block_on_resumes_a_panic() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| panic!("inner"));
}

#[test]
fn sleep_parks_and_wakes() {
    let _w = common::Watchdog::new("sleep", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let n = rt.block_on(|| {
        let hs: Vec<_> = (0..100)
            .map(|i| {
                spawn(move || {
                    let d = Duration::from_millis(i % 7 + 1);
                    let start = std::time::Instant::now();
                    tessera_sched::sleep(d);
                    // A sleep that returned at once (a no-op) fails here; one that never
                    // returns, the watchdog. (timers.rs tests the upper bounds.)
                    assert!(start.elapsed() >= d, "woke before {d:?}");
                    1
                })
            })
            .collect();
        // While they sleep, they are parked, not spinning: this coroutine gets to look.
        common::until_waiting_any(tessera_sched::WaitReason::Sleep);
        hs.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
    });
    assert_eq!(n, 100);
}

#[test]
fn spawn_builder_sets_name_and_stack() {
    let _w = common::Watchdog::new("builder", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let dump = rt.block_on(|| {
        let (tx, rx) = tessera_sched::chan::bounded::<()>(0);
        let h = Spawn::new()
            .name("worker-1")
            .stack_size(256 << 10)
            .spawn(move || {
                // A deep-ish frame that needs more than the default 64 KiB.
                let buf = [1u8; 128 << 10];
                let s: u32 = std::hint::black_box(&buf).iter().map(|&b| b as u32).sum();
                rx.recv().unwrap();
                s
            });
        while tessera_sched::stats().parked == 0 {
            yield_now();
        }
        let d = tessera_sched::dump();
        tx.send(()).unwrap();
        assert_eq!(h.join().unwrap(), 128 << 10);
        d
    });
    assert!(dump.contains("\"worker-1\""), "{dump}");
    assert!(dump.contains("chan receive"), "{dump}");
    assert!(dump.contains("basic.rs"), "spawn site: {dump}");
    assert!(dump.contains("of 262144 bytes"), "{dump}");
}

#[test]
fn join_from_a_plain_thread() {
    let _w = common::Watchdog::new("join from thread", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let h = rt.spawn(|| {
        tessera_sched::sleep(Duration::from_millis(5));
        "done"
    });
    assert_eq!(h.join().unwrap(), "done");
}
