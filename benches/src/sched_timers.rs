//! The timers workload of the scheduler comparison (issue #14, item 6): 100,000
//! coroutines each sleep a pseudo-random 1–100 ms once; reported are the process's CPU
//! time for the whole run (spawns, timer heaps, wake-ups, joins) and how late the sleeps
//! ended (p50, p99, max), for tessera-sched, tokio (multi-threaded, 2 workers) and Go
//! (`benches/go/sched`, `timers`), all with 2 processors.
//!
//! Each peer runs in a child process of its own (`--sched-timers PEER N`), so CPU time is
//! the child's alone; peers alternate over the repetitions and the medians are shown.

use crate::stats::median;
use std::process::Command;
use std::time::{Duration, Instant};

/// The hidden flag of the child process: `--sched-timers PEER N`.
pub const FLAG: &str = "--sched-timers";

/// Coroutines in the comparison.
pub const COROUTINES: usize = 100_000;

/// The Rust peers of the child process.
pub const PEERS: [&str; 2] = ["tessera", "tokio"];

/// Sleep of coroutine `i`: 1–100 ms, spread by a multiplicative hash (the Go program uses
/// the same formula, so both sleep the same set of durations).
pub fn duration_of(i: u64) -> Duration {
    Duration::from_millis(1 + (i.wrapping_mul(2_654_435_761) >> 7) % 100)
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: all-zero bytes are a valid `rusage`, which `getrusage` fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One figure line, as the Go program prints it too.
fn line(peer: &str, n: usize, cpu: Duration, mut late_ns: Vec<u64>) -> String {
    late_ns.sort_unstable();
    let pct = |q: f64| late_ns[((late_ns.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    format!(
        "{peer} timers {n} cpu_ms {:.1} late_p50_us {:.1} late_p99_us {:.1} late_max_us {:.1}",
        cpu.as_secs_f64() * 1e3,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    )
}

/// How late a sleep of `d` that started at `start` ended, in ns.
fn late_since(start: Instant, d: Duration) -> u64 {
    start.elapsed().saturating_sub(d).as_nanos() as u64
}

fn tessera(n: usize) -> Vec<u64> {
    let rt = crate::sched::tessera_rt(2);
    rt.block_on(move || {
        let handles: Vec<_> = (0..n as u64)
            .map(|i| {
                tessera_sched::spawn(move || {
                    let (d, start) = (duration_of(i), Instant::now());
                    tessera_sched::sleep(d);
                    late_since(start, d)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn tokio(n: usize) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let handles: Vec<_> = (0..n as u64)
            .map(|i| {
                tokio::spawn(async move {
                    let (d, start) = (duration_of(i), Instant::now());
                    tokio::time::sleep(d).await;
                    late_since(start, d)
                })
            })
            .collect();
        let mut late = Vec::with_capacity(n);
        for h in handles {
            late.push(h.await.unwrap());
        }
        late
    })
}

/// The child process: runs `peer` once and prints its line. Returns the exit code.
pub fn child(peer: &str, n: usize) -> i32 {
    let cpu = cpu_time();
    let late = match peer {
        "tessera" => tessera(n),
        "tokio" => tokio(n),
        _ => {
            eprintln!("{FLAG}: unknown peer {peer}");
            return 2;
        }
    };
    println!("{}", line(peer, n, cpu_time() - cpu, late));
    0
}

/// The figures of one line: (cpu ms, p50 µs, p99 µs, max µs).
fn parse(line: &str) -> Option<[f64; 4]> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| f.iter().position(|w| *w == key)?.checked_add(1);
    let get = |key: &str| f.get(at(key)?)?.parse().ok();
    Some([
        get("cpu_ms")?,
        get("late_p50_us")?,
        get("late_p99_us")?,
        get("late_max_us")?,
    ])
}

/// Runs the comparison (`reps` alternating rounds) and prints its table. `go_bin` is the
/// built Go reference program, if there is one.
pub fn compare(reps: usize, go_bin: Option<&std::path::Path>) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            println!("timers: {e}");
            return;
        }
    };
    let n = COROUTINES.to_string();
    let mut runs: Vec<(&str, Command)> = PEERS
        .iter()
        .map(|&peer| {
            let mut c = Command::new(&exe);
            c.args([FLAG, peer, &n]);
            (peer, c)
        })
        .collect();
    if let Some(go) = go_bin {
        let mut c = Command::new(go);
        c.args(["timers", &n]).env("GOMAXPROCS", "2");
        runs.push(("go", c));
    }
    let mut figures: Vec<Vec<[f64; 4]>> = vec![Vec::new(); runs.len()];
    for _ in 0..reps {
        for ((peer, cmd), figs) in runs.iter_mut().zip(figures.iter_mut()) {
            match cmd.output() {
                Ok(out) if out.status.success() => {
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    match stdout.lines().find_map(parse) {
                        Some(f) => figs.push(f),
                        None => println!("timers {peer}: no figures in {stdout:?}"),
                    }
                }
                Ok(out) => println!(
                    "timers {peer}: failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => println!("timers {peer}: {e}"),
            }
        }
    }
    println!("timers: {COROUTINES} coroutines sleep 1-100 ms once, 2 processors, median of {reps}");
    println!(
        "{:<10}{:>10}{:>14}{:>14}{:>14}",
        "peer", "cpu ms", "late p50 µs", "late p99 µs", "late max µs"
    );
    let medians: Vec<Option<[f64; 4]>> = figures
        .iter()
        .map(|figs| {
            let column = |k: usize| median(&figs.iter().map(|f| f[k]).collect::<Vec<_>>());
            Some([column(0)?, column(1)?, column(2)?, column(3)?])
        })
        .collect();
    for ((peer, _), m) in runs.iter().zip(&medians) {
        match m {
            Some([cpu, p50, p99, max]) => {
                println!("{peer:<10}{cpu:>10.1}{p50:>14.1}{p99:>14.1}{max:>14.1}")
            }
            None => println!("{peer:<10}{:>10}", "-"),
        }
    }
    let go = runs.iter().position(|(p, _)| *p == "go");
    if let (Some(Some(t)), Some(Some(g))) = (medians.first(), go.map(|i| &medians[i])) {
        println!(
            "tessera/go: cpu {:.2}, late p50 {:.2}, late p99 {:.2}",
            t[0] / g[0],
            t[1] / g[1],
            t[2] / g[2]
        );
    }
    if go_bin.is_none() {
        println!("timers: no Go column (go not installed)");
    }
}
