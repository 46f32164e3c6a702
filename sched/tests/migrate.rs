//! The migration hazard (ARCHITECTURE.md#migration): a coroutine allocates on one M (through that
//! M's P's Tessera cache), yields many times while the other P steals it, resumes on another
//! thread and frees there. Run it in release too (`cargo test --release`): with fat LTO
//! and inlining, a cached thread-local address would send the free to the wrong cache.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tessera_sched::{Runtime, spawn, yield_now};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// Returns how many distinct threads this coroutine ran on.
#[inline(never)]
fn work(round: usize) -> usize {
    let mut threads = HashSet::new();
    let mut live: Vec<Vec<u64>> = Vec::new();
    for i in 0..200 {
        threads.insert(std::thread::current().id());
        // Sizes across several classes, filled with a pattern we check after moving.
        let v: Vec<u64> = (0..(i % 37 + 1) as u64 * 3)
            .map(|x| x ^ round as u64)
            .collect();
        let b = Box::new([i as u8; 100]);
        live.push(v);
        yield_now();
        threads.insert(std::thread::current().id());
        assert!(b.iter().all(|&x| x == i as u8));
        drop(b); // freed on whatever thread we are on now
        if live.len() > 8 {
            let old = live.remove(0);
            assert!(
                old.iter()
                    .enumerate()
                    .all(|(k, &x)| x == k as u64 ^ round as u64)
            );
        }
    }
    threads.len()
}

#[test]
fn allocate_yield_migrate_free() {
    let _w = common::Watchdog::new("migrate", 300);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let all_threads = Arc::new(Mutex::new(HashSet::new()));
    // Stealing is up to the scheduler; run batches until some coroutine has moved and a
    // steal has been counted (in practice the first batch does both), for as long as a
    // loaded machine needs, within four minutes (the watchdog's five bound the test).
    let mut migrated = 0;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(240);
    for attempt in 0.. {
        if std::time::Instant::now() >= give_up {
            break;
        }
        let all = all_threads.clone();
        migrated = rt.block_on(move || {
            let hs: Vec<_> = (0..64)
                .map(|round| {
                    let all = all.clone();
                    spawn(move || {
                        all.lock().unwrap().insert(std::thread::current().id());
                        let n = work(round + attempt * 64);
                        all.lock().unwrap().insert(std::thread::current().id());
                        n
                    })
                })
                .collect();
            hs.into_iter()
                .filter(|_| true)
                .map(|h| h.join().unwrap())
                .filter(|&n| n > 1)
                .count()
        });
        if migrated > 0 && rt.stats().steals > 0 {
            break;
        }
    }
    let threads = all_threads.lock().unwrap().len();
    eprintln!("coroutines that ran on more than one thread: {migrated}/64; threads: {threads}");
    assert!(
        migrated > 0,
        "some coroutine resumed on another thread after a yield"
    );
    assert!(rt.stats().steals > 0);
}
