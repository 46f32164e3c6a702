//! Goroutine profiles taken while coroutines park and are woken all the time (issue #18
//! item 3): the profiler holds parked coroutines still while it walks their stacks, and a
//! wake-up that comes meanwhile is handed over to it. In a file of its own: the counts of
//! `goroutine_profile.rs` must not see these coroutines.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_sched::{Runtime, chan, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// Parks on a timer `rounds` times: woken by whichever M runs the timers, any time.
#[inline(never)]
fn nap(rounds: usize) {
    for _ in 0..rounds {
        tessera_sched::sleep(Duration::from_micros(20));
    }
}

#[inline(never)]
fn ping_pong(rounds: usize) {
    let (tx, rx) = chan::bounded::<usize>(0);
    let echo = spawn(move || {
        for v in rx.iter() {
            black_box(v);
        }
    });
    for i in 0..rounds {
        tx.send(i).unwrap();
    }
    drop(tx);
    echo.join().unwrap();
}

// A wake-up that comes while the profiler holds a coroutine still is handed over, never
// lost nor doubled: a lost one hangs the test, which the watchdog ends; a doubled one
// resumes a coroutine twice (corosensei panics on resuming a running coroutine, or the
// channel's hand-off breaks).
#[test]
fn profiles_taken_during_wake_ups_lose_none() {
    let _guard = common::Watchdog::new("profiles during wake-ups", 300);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (profiles, walked) = rt.block_on(|| {
        let done = Arc::new(AtomicBool::new(false));
        let mut workers: Vec<_> = (0..20).map(|_| spawn(|| ping_pong(2000))).collect();
        workers.extend((0..300).map(|_| spawn(|| nap(100))));
        let profiler = {
            let done = done.clone();
            spawn(move || {
                let (mut profiles, mut walked) = (0usize, 0usize);
                // At least a few, and on until the workers are done.
                while profiles < 5 || !done.load(Ordering::Relaxed) {
                    let c = tessera_sched::profile::write_goroutine(&mut std::io::sink()).unwrap();
                    walked += c.walked;
                    profiles += 1;
                    tessera_sched::yield_now();
                }
                (profiles, walked)
            })
        };
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        profiler.join().unwrap()
    });
    eprintln!("{profiles} profiles, {walked} parked coroutines walked in all");
    assert!(profiles >= 5);
    assert!(walked > 0);
}
