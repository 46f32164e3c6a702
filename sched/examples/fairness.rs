//! Issue #14's starvation reproducer: on one P, two coroutines hand the P back and forth
//! over a rendezvous channel while a third yields in a loop; after 100 ms one of the pair
//! spawns a fourth just before it receives (the receive wakes its partner into `runnext`,
//! which pushes the new coroutine into the ring). Prints how often the yielder ran, how
//! long the spawned coroutine waited for its first run, and the pair's hand-offs.
//!
//! `cargo run --release -p tessera-sched --example fairness -- [procs] [seconds]`
//!
//! The Go program doing the same: `benches/go/sched`, `GOMAXPROCS=1 go run . fairness`.
//! On this project's 2-vCPU VM, procs 1, 3 s: before the time slices (machine/find_work.rs,
//! "Time slices") the yielder ran 0–1 times and the spawned coroutine never started; with them,
//! 295 iterations and a start after 1–4 ms. Go 1.19: 67–96 iterations, 0.01–15 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::{Runtime, chan, spawn, yield_now};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

fn main() {
    let mut args = std::env::args().skip(1);
    let procs = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rt = Runtime::builder().procs(procs).build().expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let yields = Arc::new(AtomicU64::new(0));
    let handoffs = Arc::new(AtomicU64::new(0));
    // Nanoseconds from the spawn to the spawned coroutine's first run; 0: never ran.
    let start_latency = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();

    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let pinger = {
        let stop = stop.clone();
        rt.spawn(move || {
            let mut v = 0;
            while !stop.load(Ordering::Relaxed) {
                ping_tx.send(v).unwrap();
                v = pong_rx.recv().unwrap();
            }
        })
    };
    let ponger = {
        let (handoffs, start_latency) = (handoffs.clone(), start_latency.clone());
        rt.spawn(move || {
            let mut spawned = false;
            loop {
                let n = handoffs.fetch_add(2, Ordering::Relaxed);
                if !spawned && n % 1024 == 0 && t0.elapsed() >= Duration::from_millis(100) {
                    spawned = true;
                    let at = Instant::now();
                    let lat = start_latency.clone();
                    drop(spawn(move || {
                        lat.store(at.elapsed().as_nanos() as u64 + 1, Ordering::Relaxed)
                    }));
                }
                let Ok(v) = ping_rx.recv() else { break };
                if pong_tx.send(v + 1).is_err() {
                    break;
                }
            }
        })
    };
    let yielder = {
        let (stop, yields) = (stop.clone(), yields.clone());
        rt.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                yield_now();
                yields.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (y, lat, h) = (
        yields.load(Ordering::Relaxed),
        start_latency.load(Ordering::Relaxed),
        handoffs.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    let lat = if lat == 0 {
        format!("not started after {:.1} s", secs - 0.1)
    } else {
        format!("{:.2} ms", (lat - 1) as f64 / 1e6)
    };
    println!(
        "tessera procs={procs} {secs} s: yielder iterations {y}, spawned coroutine start {lat}, pair hand-offs {h}"
    );
    // Exit without waiting for the pair: before the fix, a runtime drop with the pair
    // still running could take long.
    drop((pinger, ponger, yielder));
    std::process::exit(0);
}
