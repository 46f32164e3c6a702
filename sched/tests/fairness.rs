//! Time slices (issue #14, item 1): a pair of coroutines handing the P back and forth over
//! a rendezvous channel shares one time slice, so it cannot keep a coroutine that yields,
//! or one freshly spawned, from running.
//!
//! The bounds count the pair's hand-offs, not time: with a 10 ms slice the pair makes a
//! few thousand hand-offs per slice (tens of thousands in a release build), and the test
//! allows it two million before it calls the others starved. Before the slices the pair
//! kept the P for all of them (the yielder ran once, the spawned coroutine never).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tessera_sched::{Runtime, chan, spawn, yield_now};

/// Hand-offs the pair may make before the others count as starved.
const LIMIT: u64 = 2_000_000;
/// The yielder's iterations that show it keeps getting the P (one per slice at least).
const YIELDS: u64 = 3;
/// When the pair spawns the fresh coroutine.
const SPAWN_AT: u64 = 1_000;
/// `started_at` before the spawned coroutine ran.
const NOT_YET: u64 = u64::MAX;

#[derive(Default)]
struct Progress {
    handoffs: AtomicU64,
    yields: AtomicU64,
    /// The pair's hand-off count when the spawned coroutine first ran.
    started_at: AtomicU64,
    spawned: AtomicBool,
    stop_yielder: AtomicBool,
}

impl Progress {
    fn others_ran(&self) -> bool {
        self.yields.load(Ordering::Relaxed) >= YIELDS
            && self.started_at.load(Ordering::Relaxed) != NOT_YET
    }
}

/// `pairs` ping-pong pairs, a yielder and (spawned by a pair) a fresh coroutine on
/// `procs` Ps. Returns the pair's hand-offs when it stopped, with the progress record.
fn run(procs: usize, pairs: usize) -> (u64, Arc<Progress>) {
    let rt = Runtime::builder().procs(procs).build().unwrap();
    let pr = Arc::new(Progress::default());
    pr.started_at.store(NOT_YET, Ordering::Relaxed);
    let mut handles = Vec::new();
    let mut pingers = Vec::new();
    for _ in 0..pairs {
        let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
        let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
        let p = pr.clone();
        // Stops once the others have run, or after LIMIT hand-offs.
        pingers.push(rt.spawn(move || {
            while !p.others_ran() && p.handoffs.load(Ordering::Relaxed) < LIMIT {
                ping_tx.send(1).unwrap();
                pong_rx.recv().unwrap();
            }
            p.handoffs.load(Ordering::Relaxed)
        }));
        let p = pr.clone();
        handles.push(rt.spawn(move || {
            loop {
                let n = p.handoffs.fetch_add(2, Ordering::Relaxed);
                // Spawned just before the receive, whose wake-up of the partner then
                // pushes the new coroutine out of `runnext` into the ring: the case that
                // starved.
                if n >= SPAWN_AT && !p.spawned.swap(true, Ordering::Relaxed) {
                    let p = p.clone();
                    drop(spawn(move || {
                        let at = p.handoffs.load(Ordering::Relaxed);
                        p.started_at.store(at, Ordering::Relaxed);
                    }));
                }
                let Ok(v) = ping_rx.recv() else { return };
                if pong_tx.send(v).is_err() {
                    return;
                }
            }
        }));
    }
    let p = pr.clone();
    handles.push(rt.spawn(move || {
        while !p.stop_yielder.load(Ordering::Relaxed) {
            yield_now();
            p.yields.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let stopped_at = pingers.into_iter().map(|h| h.join().unwrap()).max();
    pr.stop_yielder.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    (stopped_at.unwrap_or(0), pr)
}

fn check(procs: usize, pairs: usize) {
    let _w = common::Watchdog::new("fairness", 300);
    let (stopped_at, pr) = run(procs, pairs);
    let yields = pr.yields.load(Ordering::Relaxed);
    let started_at = pr.started_at.load(Ordering::Relaxed);
    assert!(
        pr.others_ran() && stopped_at < LIMIT,
        "procs {procs}: after {stopped_at} hand-offs of the pair the yielder ran {yields} \
         times and the spawned coroutine started at hand-off {started_at} \
         ({NOT_YET} = never)"
    );
    assert!((SPAWN_AT..LIMIT).contains(&started_at));
}

#[test]
fn a_ping_pong_pair_does_not_starve_a_yielder_or_a_new_coroutine_on_one_p() {
    check(1, 1);
}

#[test]
fn ping_pong_pairs_on_every_p_do_not_starve_the_others() {
    check(2, 2);
}
