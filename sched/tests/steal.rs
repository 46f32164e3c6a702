//! Work stealing, wake-ups under stress, and shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::{Runtime, chan, spawn, yield_now};

#[test]
fn work_is_stolen_when_one_p_is_loaded() {
    let _w = common::Watchdog::new("steal", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    // One coroutine spawns a batch onto its own P, small enough (< 256) not to overflow to
    // the global queue: the only way the other P gets any of it is by stealing. Whether it
    // does in a given batch is up to timing, so run batches until it has: for as long as
    // it takes, within a minute (a loaded machine may need many; normally one or two do).
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        let batch_seen = seen.clone();
        rt.block_on(move || {
            let seen = batch_seen;
            let hs: Vec<_> = (0..200)
                .map(|_| {
                    let seen = seen.clone();
                    spawn(move || {
                        let mut x = 0u64;
                        for i in 0..20_000u64 {
                            x = x.wrapping_mul(31).wrapping_add(i);
                            if i % 5000 == 0 {
                                yield_now();
                            }
                        }
                        seen.lock().unwrap().insert(std::thread::current().id());
                        std::hint::black_box(x)
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        // The latency histogram samples one transition in eight per G, so a single short
        // batch may have none yet.
        let s = rt.stats();
        if s.steals > 0 && seen.lock().unwrap().len() == 2 && s.latency_samples() > 0 {
            break;
        }
    }
    let s = rt.stats();
    assert!(s.steals > 0, "no steals: {s:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(s.latency_samples() > 0);
}

#[test]
fn no_lost_wakeups_under_stress() {
    let _w = common::Watchdog::new("stress", 300);
    for procs in [2, 3] {
        let rt = Runtime::builder().procs(procs).build().unwrap();
        let done = rt.block_on(|| {
            // Rings of coroutines passing tokens over unbuffered channels, with sleeps and
            // yields mixed in so Ms keep going idle and being woken.
            let done = Arc::new(AtomicUsize::new(0));
            let mut hs = Vec::new();
            for ring in 0..20 {
                let n = 5;
                let chans: Vec<_> = (0..n).map(|_| chan::bounded::<u32>(0)).collect();
                let (txs, rxs): (Vec<_>, Vec<_>) = chans.into_iter().unzip();
                for (i, rx) in rxs.into_iter().enumerate() {
                    let tx = txs[(i + 1) % n].clone();
                    let done = done.clone();
                    hs.push(spawn(move || {
                        for v in rx.iter() {
                            if v % 7 == 0 {
                                tessera_sched::sleep(Duration::from_micros(50));
                            } else if v % 3 == 0 {
                                yield_now();
                            }
                            if v >= 500 || tx.send(v + 1).is_err() {
                                break;
                            }
                        }
                        // The ring ends when one member stops: each one's channel closes.
                        done.fetch_add(1, Ordering::Relaxed);
                    }));
                }
                txs[ring % n].send(0).unwrap();
            }
            for h in hs {
                h.join().unwrap();
            }
            done.load(Ordering::Relaxed)
        });
        assert_eq!(done, 20 * 5, "every coroutine of every ring finished");
        // Threads outside the runtime waking coroutines.
        let (tx, rx) = chan::bounded::<u32>(1);
        let h = rt.spawn(move || rx.iter().count());
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        tx.send(i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(h.join().unwrap(), 20_000);
    }
}

#[test]
fn shutdown_with_parked_coroutines_and_sleeping_ms() {
    let _w = common::Watchdog::new("shutdown", 120);
    for _ in 0..20 {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let (tx, rx) = chan::bounded::<()>(0);
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let rx = rx.clone();
                rt.spawn(move || {
                    let _ = rx.recv();
                })
            })
            .collect();
        let sleeper = rt.spawn(|| tessera_sched::sleep(Duration::from_secs(3600)));
        // Let them park; the Ms then go idle on their futexes.
        while rt.stats().parked < 100 {
            std::thread::yield_now();
        }
        drop(rt);
        // Joiners learn that the runtime is gone instead of hanging.
        for h in handles {
            assert!(matches!(h.join(), Err(tessera_sched::JoinError::Cancelled)));
        }
        assert!(sleeper.join().is_err());
        drop(tx);
    }
}
