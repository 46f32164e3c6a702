//! Timers (issue #14, item 6): `sleep`, `sleep_until`, `after` and `Ticker` fire neither
//! early, nor far too late, nor never, on the per-P heaps (timer.rs), including when the
//! timer's P is busy.
//!
//! "Far too late" is `LATE`: a bound a loaded machine never reaches for a 20 ms timer, and
//! a timer lost until something else happens to wake the runtime does (the runtimes here
//! are otherwise idle). "Never" is the watchdog.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::{Runtime, Ticker, WaitReason, after, sleep, sleep_until, spawn};

const D: Duration = Duration::from_millis(20);
const LATE: Duration = Duration::from_secs(5);

/// Asserts that an event due at `due` happened at `at`: not before, not `LATE` after.
fn on_time(what: &str, due: Instant, at: Instant) {
    assert!(at >= due, "{what} fired {:?} early", due - at);
    assert!(
        at < due + LATE,
        "{what} fired {:?} late",
        at.saturating_duration_since(due)
    );
}

fn runtime(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

#[test]
fn sleep_wakes_on_time() {
    let _w = common::Watchdog::new("sleep", 60);
    for procs in [1, 2] {
        runtime(procs).block_on(|| {
            let start = Instant::now();
            sleep(D);
            on_time("sleep", start + D, Instant::now());
        });
    }
}

#[test]
fn sleep_until_wakes_on_time() {
    let _w = common::Watchdog::new("sleep_until", 60);
    runtime(2).block_on(|| {
        let deadline = Instant::now() + D;
        sleep_until(deadline);
        on_time("sleep_until", deadline, Instant::now());
        // A deadline in the past returns at once (it only yields).
        sleep_until(deadline);
    });
}

#[test]
fn after_sends_the_time_once() {
    let _w = common::Watchdog::new("after", 60);
    runtime(2).block_on(|| {
        let start = Instant::now();
        let rx = after(D);
        let sent = rx.recv().unwrap();
        on_time("after", start + D, sent);
        on_time("after's receive", sent, Instant::now());
        // Once: the channel stays empty.
        assert!(rx.try_recv().is_err());
    });
    // On a plain thread (the process-wide heap).
    let start = Instant::now();
    let sent = after(D).recv().unwrap();
    on_time("after on a thread", start + D, sent);
}

#[test]
fn a_ticker_ticks_every_period() {
    let _w = common::Watchdog::new("ticker", 60);
    runtime(2).block_on(|| {
        let start = Instant::now();
        let ticker = Ticker::new(D);
        let mut last = start;
        for i in 1..=3 {
            let t = ticker.tick();
            // Ticks keep the phase of the start: tick i is due at start + i * D (a slow
            // receiver loses ticks, it does not shift them).
            on_time("tick", start + D * i, t);
            assert!(t > last);
            last = t;
        }
        ticker.stop();
    });
}

#[test]
fn many_sleepers_on_every_p_wake_on_time() {
    let _w = common::Watchdog::new("sleepers", 120);
    runtime(2).block_on(|| {
        let hs: Vec<_> = (0..2_000u64)
            .map(|i| {
                spawn(move || {
                    let d = Duration::from_millis(1 + i * 7919 % 50);
                    let start = Instant::now();
                    sleep(d);
                    on_time("sleep", start + d, Instant::now());
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// On one P, a coroutine that never yields holds the P: the timer of a sleeper queued on
/// that P's heap must still fire (sysmon fires it), so the sleeper is runnable by the time
/// the spinner looks, not only when the spinner gives the P back.
#[test]
fn a_timer_fires_while_its_p_is_busy() {
    let _w = common::Watchdog::new("busy p", 60);
    let rt = runtime(1);
    let woke = Arc::new(AtomicBool::new(false));
    let w = woke.clone();
    rt.block_on(move || {
        let sleeper = tessera_sched::Spawn::new()
            .name("busy-p-sleeper")
            .spawn(move || {
                sleep(D);
                w.store(true, Ordering::Relaxed);
            });
        common::until_waiting("busy-p-sleeper", WaitReason::Sleep, None);
        // Spin without yielding until the sleeper is runnable: its timer fired without
        // this P scheduling.
        while tessera_sched::stats().runnable == 0 {
            std::hint::spin_loop();
        }
        sleeper.join().unwrap();
    });
    assert!(woke.load(Ordering::Relaxed));
}
