//! What a goroutine profile costs (issue #18): `N` coroutines parked on a channel receive,
//! then the profile taken `R` times from a coroutine; prints each wall time and the median,
//! with `dump()` (the text form) for comparison.
//!
//! `cargo run --release -p tessera-sched --example goroutine_profile_cost -- profile 100000 9`
//!
//! `... -- switches 1000000`: one coroutine parking and being woken by another through a
//! rendezvous channel `N` times on one P, for counting the switch path's instructions under
//! `valgrind --tool=callgrind` (the profile's share of it: three registers stored per
//! switch).

use std::hint::black_box;
use std::time::Instant;

use tessera_sched::{Runtime, chan, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[inline(never)]
fn parked_in_receive(rx: chan::Receiver<()>) {
    black_box(rx.recv()).ok();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn profile(n: usize, rounds: usize) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(move || {
        let (tx, rx) = chan::bounded::<()>(0);
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || parked_in_receive(rx))
            })
            .collect();
        while tessera_sched::stats().parked < n {
            tessera_sched::yield_now();
        }
        let mut profile_ms = Vec::new();
        let mut dump_ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..rounds {
            let mut out = Vec::new();
            let t = Instant::now();
            let counts = tessera_sched::profile::write_goroutine(&mut out).unwrap();
            profile_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(counts.walked >= n, "{counts:?}");
            bytes = out.len();
            let t = Instant::now();
            black_box(tessera_sched::dump());
            dump_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("profile ms: {profile_ms:.1?}");
        println!("dump ms:    {dump_ms:.1?}");
        println!(
            "{n} parked coroutines: goroutine profile median {:.1} ms ({bytes} bytes gzipped), dump() median {:.1} ms",
            median(&mut profile_ms),
            median(&mut dump_ms)
        );
        drop(tx);
        for h in handles {
            h.join().unwrap();
        }
    });
}

fn switches(n: usize) {
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(move || {
        let (tx, rx) = chan::bounded::<usize>(0);
        let echo = spawn(move || rx.iter().map(black_box).sum::<usize>());
        for i in 0..n {
            tx.send(i).unwrap();
        }
        drop(tx);
        black_box(echo.join().unwrap());
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("switches") => switches(num(1, 1_000_000)),
        _ => profile(num(1, 100_000), num(2, 9)),
    }
}
