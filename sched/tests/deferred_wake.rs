//! Work queued on a running P without waking an idle one (coroutines that run short, see
//! the crate documentation, "Wake-ups") still reaches the idle P when it would otherwise
//! wait: behind a coroutine that keeps running, or in a backlog that keeps growing.
//!
//! One test in its own binary: other runtimes in the same process would compete for the
//! two CPUs and make the run-length estimate, which these scenarios depend on, say "long".
//! It needs an optimised build (`cargo test --release`, as `.ci/release-tests.sh` runs).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::{Runtime, chan, spawn, stats};

/// Runs batches of empty coroutines until sysmon judges that this runtime's coroutines
/// run short, so that new work no longer wakes the idle P at once. Fails the test if that
/// never happens (the scenarios below would then prove nothing).
fn teach_short_work() {
    let start = Instant::now();
    loop {
        let hs: Vec<_> = (0..1000).map(|_| spawn(|| ())).collect();
        for h in hs {
            h.join().unwrap();
        }
        if stats().run_ns.is_some_and(|n| n < 200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "empty coroutines never measured as short: {:?}",
            stats().run_ns
        );
    }
}

/// Two coroutines (so the ring, not only runnext, holds work) queued on this P, which then
/// runs on without yielding until both have run: only the idle P can run them, and only
/// sysmon's pending wake-up brings it in.
fn behind_a_coroutine_that_keeps_running() {
    teach_short_work();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let ran = ran.clone();
        spawn(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    let start = Instant::now();
    while ran.load(Ordering::SeqCst) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "work queued behind a running coroutine never reached the idle P"
        );
        std::hint::spin_loop();
    }
}

/// Many parked coroutines are woken by one locked to its thread, four per yield. A locked
/// coroutine resumes from its M's mailbox, which the M serves every other schedule, so the
/// P's queue grows by about three woken coroutines per round while the P keeps scheduling
/// short runs, and only sysmon seeing queued work wait (its "Backlog" rule) wakes the idle
/// P. (Parked coroutines are used, not new ones, because a backlog of new coroutines needs
/// fresh stacks, whose page faults make the runs long.) Each woken coroutine parks again,
/// and the wake-ups go on until one of them has run on another thread: when the idle P
/// gets its thread scheduled is up to the machine, so no fixed number of rounds would do;
/// if it never comes, the watchdog fails the test.
///
/// A liveness check rather than a check of that rule alone: the pace measured here sits
/// near the 500 ns line, and above it `make_runnable` wakes the idle P itself. (With a
/// debug log, the wake-up came from the global-queue backlog rule on the project's VM.)
/// The scenario above is the decisive one: without sysmon's pending wake-up it fails.
fn a_growing_backlog() {
    const N: usize = 20_000;
    let elsewhere = Arc::new(AtomicBool::new(false));
    let (tx, rx) = chan::unbounded::<std::thread::ThreadId>();
    let hs: Vec<_> = (0..N)
        .map(|_| {
            let (rx, elsewhere) = (rx.clone(), elsewhere.clone());
            spawn(move || {
                while let Ok(home) = rx.recv() {
                    if std::thread::current().id() != home {
                        elsewhere.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while stats().parked < N {
        tessera_sched::yield_now();
    }
    teach_short_work();
    tessera_sched::lock_to_thread();
    let home = std::thread::current().id();
    while !elsewhere.load(Ordering::Relaxed) {
        for _ in 0..4 {
            tx.send(home).unwrap();
        }
        tessera_sched::yield_now();
    }
    tessera_sched::unlock_from_thread();
    drop((tx, rx));
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "unoptimised, an empty coroutine takes over 1 µs per schedule and is never short; \
              .ci/release-tests.sh runs it"
)]
fn deferred_work_reaches_an_idle_p() {
    let _w = common::Watchdog::new("deferred wake-ups", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(behind_a_coroutine_that_keeps_running);
    rt.block_on(a_growing_backlog);
}
