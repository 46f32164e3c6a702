//! A coroutine woken by a thread that holds no P (sysmon firing an overdue timer, a plain
//! thread sending on a channel), or woken on a P in such numbers that its ring overflows
//! (a P firing a heap of timers at once), runs before a backlog of coroutines that have not
//! started yet (issue #17: with 100,000 sleepers on 2 Ps, such wake-ups queued behind tens of
//! thousands of unstarted coroutines on the global queue, and their sleeps ended 100–300 ms
//! late).
//!
//! No timing is asserted: on one P, the waker's wake-up lands while the only P is held by a
//! coroutine that spins until it sees the wake-up done, with `BACKLOG` unstarted
//! coroutines queued; the test then counts how many of them ran before the woken one.
//! Behind the backlog, all of them would have; in front of it, at most the P's own ring
//! (256) and `runnext`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tessera_sched::{Runtime, chan, sleep, spawn, stats, yield_now};

/// Unstarted coroutines queued when the wake-up comes: far more than a P's ring holds, so
/// most wait on the global queue.
const BACKLOG: usize = 4_000;

/// How many of the backlog may run before the woken coroutine: a P's ring and `runnext`
/// (the global queue's woken Gs are taken before the rest, global_queue.rs).
const AHEAD_AT_MOST: usize = 257;

/// Runs the scenario on one P. `wait` is the coroutine's wait, `wake` what the spinning
/// coroutine does to have it woken from outside (it must return once the wake-up is
/// under way); the spinning coroutine then waits until the waiter is runnable. Returns how
/// many backlog coroutines ran before the waiter, or `None` if the waiter was woken before
/// the backlog was all queued (a timer that expired that early: try a longer one).
fn ran_before_woken(
    wait: impl FnOnce() + Send + 'static,
    wake: impl FnOnce() + Send + 'static,
) -> Option<usize> {
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(move || {
        let ran = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let ran = ran.clone();
            spawn(move || {
                wait();
                ran.load(Ordering::SeqCst)
            })
        };
        // Let it run and park (nothing else is parked in this runtime).
        while stats().parked != 1 {
            yield_now();
        }
        for _ in 0..BACKLOG {
            let ran = ran.clone();
            spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        let early = stats().parked != 1;
        wake();
        // Hold the only P until the waiter has been made runnable by the other thread.
        while stats().parked != 0 {
            std::thread::yield_now();
        }
        let seen = waiter.join().unwrap();
        (!early).then_some(seen)
    })
}

/// Asserts that at most `AHEAD_AT_MOST` of the backlog ran before `woken`.
fn assert_not_behind_backlog(ran_before: usize, woken: &str) {
    assert!(
        ran_before <= AHEAD_AT_MOST,
        "{ran_before} of {BACKLOG} unstarted coroutines ran before {woken}"
    );
}

#[test]
fn timer_fired_by_sysmon_runs_before_backlog() {
    let _w = common::Watchdog::new("timer_fired_by_sysmon_runs_before_backlog", 120);
    // The sleep's P is busy spinning, so sysmon fires the timer, holding no P. The sleep
    // must outlast queueing the backlog, however slow the machine: doubled until it does.
    let mut d = Duration::from_millis(20);
    let seen = loop {
        if let Some(seen) = ran_before_woken(move || sleep(d), || {}) {
            break seen;
        }
        d *= 2;
    };
    assert_not_behind_backlog(seen, "the one sysmon's timer woke");
}

#[test]
fn channel_wake_from_plain_thread_runs_before_backlog() {
    let _w = common::Watchdog::new("channel_wake_from_plain_thread_runs_before_backlog", 120);
    let (tx, rx) = chan::bounded::<u32>(1);
    let go = Arc::new(AtomicBool::new(false));
    let sender = {
        let go = go.clone();
        std::thread::spawn(move || {
            while !go.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            tx.send(7).unwrap();
        })
    };
    let seen = ran_before_woken(
        move || assert_eq!(rx.recv(), Ok(7)),
        move || go.store(true, Ordering::SeqCst),
    )
    .expect("nothing wakes the receiver before `go`");
    sender.join().unwrap();
    assert_not_behind_backlog(seen, "the one a plain thread woke");
}

#[test]
fn woken_gs_a_full_ring_spills_run_before_backlog() {
    let _w = common::Watchdog::new("woken_gs_a_full_ring_spills_run_before_backlog", 120);
    // More than a ring: readying them all on the P spills some to the global queue.
    const WAITERS: usize = 600;
    let rt = Runtime::builder().procs(1).build().unwrap();
    let most = rt.block_on(|| {
        let ran = Arc::new(AtomicUsize::new(0));
        let mut txs = Vec::new();
        let mut waiters = Vec::new();
        for _ in 0..WAITERS {
            let (tx, rx) = chan::bounded::<()>(1);
            let ran = ran.clone();
            txs.push(tx);
            waiters.push(spawn(move || {
                rx.recv().unwrap();
                ran.load(Ordering::SeqCst)
            }));
        }
        while stats().parked != WAITERS {
            yield_now();
        }
        for _ in 0..BACKLOG {
            let ran = ran.clone();
            spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Ready them all on this P (nothing runs meanwhile: this coroutine holds the P).
        for tx in &txs {
            tx.send(()).unwrap();
        }
        waiters
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    });
    assert_not_behind_backlog(most, "a woken one");
}
