//! Mutex, WaitGroup, Once and Semaphore park coroutines, not threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tessera_sched::sync::{Mutex, Once, Semaphore, WaitGroup};
use tessera_sched::{Runtime, spawn, yield_now};

#[test]
fn mutex_excludes_across_yields() {
    let _w = common::Watchdog::new("mutex", 60);
    // One P: if the mutex blocked the thread, the holder (which yields while holding it)
    // could never run again and this would hang.
    let rt = Runtime::builder().procs(1).build().unwrap();
    let total = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let hs: Vec<_> = (0..50)
            .map(|_| {
                let m = m.clone();
                spawn(move || {
                    for _ in 0..100 {
                        let mut g = m.lock();
                        let v = *g;
                        yield_now();
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        *m.lock()
    });
    assert_eq!(total, 5000);
}

#[test]
fn mutex_on_two_procs() {
    let _w = common::Watchdog::new("mutex 2", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let total = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                spawn(move || {
                    for i in 0..2000 {
                        *m.lock() += 1;
                        if i % 64 == 0 {
                            yield_now();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        *m.lock()
    });
    assert_eq!(total, 16000);
}

#[test]
fn waitgroup_waits_for_all() {
    let _w = common::Watchdog::new("waitgroup", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let n = rt.block_on(|| {
        let wg = Arc::new(WaitGroup::new());
        let count = Arc::new(AtomicUsize::new(0));
        for i in 0..200 {
            wg.add(1);
            let (wg, count) = (wg.clone(), count.clone());
            spawn(move || {
                tessera_sched::sleep(Duration::from_micros(i % 13));
                count.fetch_add(1, Ordering::Relaxed);
                wg.done();
            });
        }
        wg.wait();
        count.load(Ordering::Relaxed)
    });
    assert_eq!(n, 200);
}

#[test]
fn once_runs_once_and_parks_latecomers() {
    let _w = common::Watchdog::new("once", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let runs = rt.block_on(|| {
        let once = Arc::new(Once::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..20)
            .map(|_| {
                let (once, runs) = (once.clone(), runs.clone());
                spawn(move || {
                    once.call_once(|| {
                        // Park inside: the others must wait, not run it again.
                        tessera_sched::sleep(Duration::from_millis(2));
                        runs.fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(once.is_completed());
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        runs.load(Ordering::Relaxed)
    });
    assert_eq!(runs, 1);
}

#[test]
fn semaphore_bounds_concurrency() {
    let _w = common::Watchdog::new("semaphore", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let max = rt.block_on(|| {
        let sem = Arc::new(Semaphore::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..40)
            .map(|_| {
                let (sem, inside, max) = (sem.clone(), inside.clone(), max.clone());
                spawn(move || {
                    let _p = sem.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    yield_now();
                    tessera_sched::sleep(Duration::from_micros(100));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(sem.available(), 3);
        max.load(Ordering::SeqCst)
    });
    assert!((1..=3).contains(&max), "{max}");
}
