//! The scheduler workloads of BENCHMARKS.md built the way a user builds a program on
//! `tessera-sched` (issue #17): this crate's own workspace, cargo's default release profile,
//! no `#[global_allocator]`. The comparison runner (`tessera-bench --sched`) builds it and
//! runs it beside the Go reference programs, with their command line and their output:
//!
//! ```text
//! sched-user spawn-join | spawn-all N... | ping-pong | yield | chan-buffered | select K...
//!            | select-many | echo ADDR
//! ```
//!
//! Each workload prints `name ns/op value` lines, the median of several repetitions. The
//! number of processors comes from `TESSERA_PROCS` (the runner sets it with `GOMAXPROCS`),
//! except for yield, which runs on one, as Go's does.
//!
//! `echo ADDR` is the echo workload's server (BENCHMARKS.md, "echo") in the user's build:
//! the source of tessera-sched's `echo` example (`sched/examples/common/echo_server.rs`),
//! which the runner builds its own way (thin LTO, Tessera as the global allocator). It prints
//! `listening on ADDR` and serves until killed; the echo comparison (`echo compare`, in
//! `benches/src/bin/echo`) measures it as its `user` row.

use std::time::{Duration, Instant};

use tessera_sched::{Runtime, chan, select, spawn};

// The echo server: the very source of tessera-sched's `echo` example, so that this row and
// the runner's build of the example measure the same program.
#[path = "../../../sched/examples/common/echo_server.rs"]
mod echo_server;

// select-many: the runner's source of it (benches/src/sched), so both columns measure the
// same program; its items are `pub` for the runner's library, which a binary cannot reach.
#[allow(unreachable_pub)]
#[path = "../../src/sched/select_many.rs"]
mod select_many;

/// Repetitions per figure (as the Go programs).
const REPS: usize = 7;

/// Spawns per repetition of spawn-all, at least (a round of N = 1,000 is too short to time
/// alone).
const SPAWN_ALL_MIN: usize = 100_000;

fn median(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut xs: Vec<f64> = (0..reps).map(|_| f()).collect();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn per_op(d: Duration, ops: usize) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

/// spawn-join: 1,000,000 empty coroutines in batches of 1,000, each batch joined.
fn spawn_join() -> f64 {
    const TOTAL: usize = 1_000_000;
    const BATCH: usize = 1000;
    let start = Instant::now();
    for _ in 0..TOTAL / BATCH {
        let hs: Vec<_> = (0..BATCH).map(|_| spawn(|| ())).collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    per_op(start.elapsed(), TOTAL)
}

/// spawn-all (issue #17): spawn `n` empty coroutines keeping every handle, then join them
/// all; rounds repeated up to `SPAWN_ALL_MIN` spawns.
fn spawn_all(n: usize) -> f64 {
    let rounds = SPAWN_ALL_MIN.div_ceil(n);
    let start = Instant::now();
    for _ in 0..rounds {
        let hs: Vec<_> = (0..n).map(|_| spawn(|| ())).collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    per_op(start.elapsed(), rounds * n)
}

/// ping-pong: round trips over two rendezvous channels.
fn ping_pong() -> f64 {
    const N: usize = 200_000;
    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let echo = spawn(move || {
        for v in ping_rx.iter() {
            pong_tx.send(v + 1).unwrap();
        }
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..N {
        ping_tx.send(v).unwrap();
        v = pong_rx.recv().unwrap();
    }
    let el = start.elapsed();
    drop(ping_tx);
    echo.join().unwrap();
    std::hint::black_box(v);
    per_op(el, N)
}

/// yield: two coroutines on one processor yield to each other; ns per switch.
fn yield_switch() -> f64 {
    const N: usize = 1_000_000;
    let start = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            spawn(|| {
                for _ in 0..N {
                    tessera_sched::yield_now();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    per_op(start.elapsed(), 2 * N)
}

/// chan-buffered: one producer sends 1,000,000 values over `bounded(64)`; this coroutine
/// receives until the channel closes. ns per message.
fn chan_buffered() -> f64 {
    const N: u64 = 1_000_000;
    let (tx, rx) = chan::bounded::<u64>(64);
    let start = Instant::now();
    let producer = spawn(move || {
        for i in 0..N {
            tx.send(i).unwrap();
        }
    });
    let sum: u64 = rx.iter().sum();
    producer.join().unwrap();
    let el = start.elapsed();
    assert_eq!(sum, N * (N - 1) / 2, "chan-buffered lost messages");
    per_op(el, N as usize)
}

/// select-k: k producers each send 200,000 / k values on a rendezvous channel of their
/// own; this coroutine selects over all k until it has them all. ns per message. `$i`: the
/// arms' indices.
macro_rules! select_k {
    ($($i:tt)*) => {{
        const N: u64 = 200_000;
        let k = [$($i),*].len() as u64;
        let per = N / k;
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        let mut producers = Vec::new();
        let start = Instant::now();
        for _ in 0..k {
            let (tx, rx) = chan::bounded::<u64>(0);
            rxs.push(rx);
            // Held until the end: a producer's drop must not close its channel, which a
            // select would then find ready (as Go's, whose producers never close).
            txs.push(tx.clone());
            producers.push(spawn(move || {
                for v in 0..per {
                    tx.send(v).unwrap();
                }
            }));
        }
        let mut sum = 0u64;
        for _ in 0..per * k {
            select! {
                $(recv(rxs[$i]) -> v => sum += v.unwrap(),)*
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        let el = start.elapsed();
        drop(txs);
        assert_eq!(sum, k * (per * (per - 1) / 2), "select lost messages");
        per_op(el, (per * k) as usize)
    }};
}

fn select_2() -> f64 {
    select_k!(0 1)
}

fn select_8() -> f64 {
    select_k!(0 1 2 3 4 5 6 7)
}

/// select-many (issue #14): the runner's own source of it, per message.
fn select_many() -> f64 {
    let msgs = select_many::SELECT_MSGS;
    per_op(select_many::tessera_select_many(msgs), msgs as usize)
}

/// 1000 -> 1k, 100000 -> 100k, 1000000 -> 1m (the runner's row names, as Go's `countName`).
fn count_name(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn usage() -> i32 {
    eprintln!(
        "usage: sched-user spawn-join | spawn-all N... | ping-pong | yield | chan-buffered | select K... | select-many | echo ADDR"
    );
    2
}

fn run(args: &[String]) -> i32 {
    let Some(what) = args.first() else {
        return usage();
    };
    let rt = match what.as_str() {
        "yield" => Runtime::builder().procs(1).build(),
        _ => Runtime::new(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sched-user: runtime: {e}");
            return 1;
        }
    };
    let procs = rt.procs();
    match what.as_str() {
        "spawn-join" => {
            let ns = rt.block_on(|| median(REPS, spawn_join));
            println!("spawn-join ns/op {ns:.1}");
        }
        "spawn-all" => {
            let mut counts = Vec::new();
            for a in &args[1..] {
                match a.parse::<usize>() {
                    Ok(n) if n > 0 => counts.push(n),
                    _ => {
                        eprintln!("sched-user: spawn-all: not a count: {a}");
                        return 2;
                    }
                }
            }
            for n in counts {
                let ns = rt.block_on(move || median(REPS, || spawn_all(n)));
                println!("spawn-all-{}-{procs}p ns/op {ns:.1}", count_name(n));
            }
        }
        "ping-pong" => {
            let ns = rt.block_on(|| median(REPS, ping_pong));
            println!("ping-pong-{procs}p ns/op {ns:.1}");
        }
        "yield" => {
            let ns = rt.block_on(|| median(REPS, yield_switch));
            println!("yield ns/op {ns:.1}");
        }
        "chan-buffered" => {
            let ns = rt.block_on(|| median(REPS, chan_buffered));
            println!("chan-buffered ns/op {ns:.1}");
        }
        "select" => {
            for a in &args[1..] {
                let f: fn() -> f64 = match a.as_str() {
                    "2" => select_2,
                    "8" => select_8,
                    _ => {
                        eprintln!("sched-user: select: 2 or 8 channels, not {a}");
                        return 2;
                    }
                };
                let ns = rt.block_on(move || median(REPS, f));
                println!("select-{a} ns/op {ns:.1}");
            }
        }
        "select-many" => {
            let ns = rt.block_on(|| median(REPS, select_many));
            println!("select-many ns/op {ns:.1}");
        }
        "echo" => {
            let Some(addr) = args.get(1).cloned() else {
                return usage();
            };
            if let Err(e) = rt.block_on(move || echo_server::serve_forever(&addr)) {
                eprintln!("sched-user: echo: {e}");
                return 1;
            }
        }
        _ => return usage(),
    }
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(run(&args));
}
