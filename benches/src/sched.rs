//! The scheduler workloads of BENCHMARKS.md (spawn-join in batches and all-live, ping-pong,
//! yield, parked) for tessera-sched, may and tokio, issue #14's select-many (tessera-sched
//! and Go only: may and tokio have no select over channels of this shape), and issue #17's
//! channel rows (a buffered channel's throughput, `select!` over 2 and 8 channels) against
//! Go and crossbeam-channel on OS threads,
//! shared by the criterion bench (`benches/sched.rs`) and the runner's scheduler comparison
//! (`tessera-bench --sched`, also part of the default run). The comparison adds Go's runtime
//! through the reference programs in `benches/go/sched` when `go` is installed (Debian:
//! `golang-go`), and tessera-sched as a user builds it (issue #17): the crate
//! `benches/sched-user`, a workspace of its own with cargo's default release profile and
//! the system allocator, which the runner builds with the cargo that started it.
//!
//! `may`'s worker count is global and fixed at first use: it runs with 2 workers in every
//! group (so its "1p" figure is really 2 workers).

use crate::stats::median;
use std::process::Command;
use std::time::{Duration, Instant};

/// Coroutines spawned before each join round (BENCHMARKS.md: spawn-join).
pub const BATCH: u64 = 1000;

/// A tessera-sched runtime with `procs` Ps.
pub fn tessera_rt(procs: usize) -> tessera_sched::Runtime {
    tessera_sched::Runtime::builder()
        .procs(procs)
        .build()
        .unwrap()
}

/// A multi-threaded tokio runtime with `workers` workers.
pub fn tokio_mt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .unwrap()
}

/// A current-thread tokio runtime.
pub fn tokio_ct() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Sets may's worker count (global, fixed at first use) to 2.
pub fn may_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(2);
    });
}

/// Runs `f` in a may coroutine and returns its result.
pub fn may_run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    may_init();
    // SAFETY: the closure keeps no thread-local references across may's switches.
    unsafe { may::coroutine::spawn(f) }.join().unwrap()
}

// ---------------------------------------------------------------- spawn-join

/// spawn-join on the current tessera-sched runtime (call inside `block_on`).
pub fn tessera_spawn_join(iters: u64) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        let hs: Vec<_> = (0..k).map(|_| tessera_sched::spawn(|| ())).collect();
        for h in hs {
            h.join().unwrap();
        }
        left -= k;
    }
    start.elapsed()
}

/// spawn-join in a may coroutine (call inside `may_run`).
pub fn may_spawn_join(iters: u64) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        // SAFETY: the empty closures touch nothing.
        let hs: Vec<_> = (0..k)
            .map(|_| unsafe { may::coroutine::spawn(|| ()) })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        left -= k;
    }
    start.elapsed()
}

/// spawn-join on the current tokio runtime.
pub async fn tokio_spawn_join(iters: u64) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        let hs: Vec<_> = (0..k).map(|_| tokio::spawn(async {})).collect();
        for h in hs {
            h.await.unwrap();
        }
        left -= k;
    }
    start.elapsed()
}

/// spawn-all (issue #17): `iters` empty coroutines spawned in rounds of `n`, every handle
/// kept until the whole round is spawned, then all joined (Go's WaitGroup shape, which keeps
/// `n` coroutines alive at once), on the current tessera-sched runtime.
pub fn tessera_spawn_all(n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters.div_ceil(n) {
        let hs: Vec<_> = (0..n).map(|_| tessera_sched::spawn(|| ())).collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    start.elapsed()
}

/// As `tessera_spawn_all`, on the current tokio runtime.
pub async fn tokio_spawn_all(n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters.div_ceil(n) {
        let hs: Vec<_> = (0..n).map(|_| tokio::spawn(async {})).collect();
        for h in hs {
            h.await.unwrap();
        }
    }
    start.elapsed()
}

/// Times `iters` round trips: `send` a value to the echoing side, `recv` its answer.
fn round_trips(iters: u64, mut send: impl FnMut(u64), mut recv: impl FnMut() -> u64) -> Duration {
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        send(v);
        v = recv();
    }
    let el = start.elapsed();
    std::hint::black_box(v);
    el
}

/// ping-pong round trips on the current tessera-sched runtime.
pub fn tessera_ping_pong(iters: u64) -> Duration {
    use tessera_sched::chan;
    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let echo = tessera_sched::spawn(move || {
        for v in ping_rx.iter() {
            pong_tx.send(v + 1).unwrap();
        }
    });
    let el = round_trips(
        iters,
        |v| ping_tx.send(v).unwrap(),
        || pong_rx.recv().unwrap(),
    );
    drop(ping_tx);
    echo.join().unwrap();
    el
}

/// ping-pong round trips in may (its unbounded mpsc, which holds at most one value here).
pub fn may_ping_pong(iters: u64) -> Duration {
    use may::sync::mpsc;
    let (ping_tx, ping_rx) = mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = mpsc::channel::<u64>();
    // SAFETY: the echo closure owns its channel ends and keeps no thread-local references.
    let echo = unsafe {
        may::coroutine::spawn(move || {
            while let Ok(v) = ping_rx.recv() {
                if pong_tx.send(v + 1).is_err() {
                    break;
                }
            }
        })
    };
    let el = round_trips(
        iters,
        |v| ping_tx.send(v).unwrap(),
        || pong_rx.recv().unwrap(),
    );
    drop(ping_tx);
    echo.join().unwrap();
    el
}

/// ping-pong round trips on the current tokio runtime (`mpsc::channel(1)`).
pub async fn tokio_ping_pong(iters: u64) -> Duration {
    use tokio::sync::mpsc;
    let (ping_tx, mut ping_rx) = mpsc::channel::<u64>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<u64>(1);
    let echo = tokio::spawn(async move {
        while let Some(v) = ping_rx.recv().await {
            if pong_tx.send(v + 1).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        ping_tx.send(v).await.unwrap();
        v = pong_rx.recv().await.unwrap();
    }
    let el = start.elapsed();
    drop(ping_tx);
    echo.await.unwrap();
    std::hint::black_box(v);
    el
}

// ---------------------------------------------------------------- yield

/// Two coroutines yield to each other on the current tessera-sched runtime (1 P): `iters`
/// switches in all.
pub fn tessera_yield(iters: u64) -> Duration {
    let n = iters.div_ceil(2);
    let start = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            tessera_sched::spawn(move || {
                for _ in 0..n {
                    tessera_sched::yield_now();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
}

/// As `tessera_yield`, in may.
pub fn may_yield(iters: u64) -> Duration {
    let n = iters.div_ceil(2);
    let start = Instant::now();
    // SAFETY: the closures capture only `n`.
    let hs: Vec<_> = (0..2)
        .map(|_| unsafe {
            may::coroutine::spawn(move || {
                for _ in 0..n {
                    may::coroutine::yield_now();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
}

/// As `tessera_yield`, on the current (current-thread) tokio runtime.
pub async fn tokio_yield(iters: u64) -> Duration {
    let n = iters.div_ceil(2);
    let start = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    start.elapsed()
}

// ---------------------------------------------------------------- select-many

/// select-many (issue #14): coroutines each in a select over the same rendezvous channels.
pub const SELECT_WORKERS: usize = 2000;
/// Receive arms of each select (plus a 100 ms timeout arm).
pub const SELECT_ARMS: usize = 31;
/// Messages per repetition.
pub const SELECT_MSGS: u64 = 9300;

/// select-many on the current tessera-sched runtime: `SELECT_WORKERS` coroutines each loop
/// in a `select!` over the same `SELECT_ARMS` rendezvous channels with `default(100 ms)`;
/// this coroutine sends `msgs` values round-robin and then says it is done, and each worker
/// leaves at its next timeout after that. Timed from the first spawn to the last join, so
/// the figure holds one 100 ms wave of timeouts, in which every worker takes all its arms
/// off their queues at once: each queue holds up to `SELECT_WORKERS` waiters, so what it
/// costs to take one off shows, both there and after every hand-off (Go's reference:
/// `selectMany` in benches/go/sched).
pub fn tessera_select_many(msgs: u64) -> Duration {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tessera_sched::{chan, select};
    // A `select!` loop over `r[i]` for each listed index.
    macro_rules! select_loop {
        ($r:ident, $got:ident, $done:ident, $($i:tt)*) => {
            loop {
                select! {
                    $(recv($r[$i]) -> v => {
                        v.unwrap();
                        $got.fetch_add(1, Ordering::Relaxed);
                    })*
                    default(Duration::from_millis(100)) => if $done.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        };
    }
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..SELECT_ARMS).map(|_| chan::bounded::<u64>(0)).unzip();
    let rxs = Arc::new(rxs);
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..SELECT_WORKERS)
        .map(|_| {
            let (r, got, done) = (rxs.clone(), got.clone(), done.clone());
            tessera_sched::spawn(move || {
                select_loop!(r, got, done, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30)
            })
        })
        .collect();
    for i in 0..msgs {
        txs[i as usize % SELECT_ARMS].send(i).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let el = start.elapsed();
    assert_eq!(
        got.load(Ordering::Relaxed),
        msgs,
        "select-many lost messages"
    );
    el
}

// ---------------------------------------------------------------- channel throughput

/// Capacity of the buffered channel of `chan-buffered` (issue #17).
pub const CHAN_CAP: usize = 64;

/// chan-buffered (issue #17): one producer sends `$iters` values over `bounded(CHAN_CAP)`
/// of the channel module `$chan`, started with `$spawn`; the caller receives them until
/// the channel closes. ns per message.
macro_rules! chan_buffered {
    ($chan:path, $spawn:path, $iters:expr) => {{
        use $chan as chan;
        let iters: u64 = $iters;
        let (tx, rx) = chan::bounded::<u64>(CHAN_CAP);
        let start = Instant::now();
        let producer = $spawn(move || {
            for i in 0..iters {
                tx.send(i).unwrap();
            }
        });
        let sum: u64 = rx.iter().sum();
        producer.join().unwrap();
        let el = start.elapsed();
        assert_eq!(
            sum,
            iters * iters.saturating_sub(1) / 2,
            "chan-buffered lost messages"
        );
        el
    }};
}

/// chan-buffered on the current tessera-sched runtime, the producer a coroutine.
pub fn tessera_chan_buffered(iters: u64) -> Duration {
    chan_buffered!(tessera_sched::chan, tessera_sched::spawn, iters)
}

/// chan-buffered with crossbeam-channel between two OS threads.
pub fn crossbeam_chan_buffered(iters: u64) -> Duration {
    chan_buffered!(crossbeam_channel, std::thread::spawn, iters)
}

/// The channels of `select-<k>`: k producers, each sending `per` values on a rendezvous
/// channel of its own, and a consumer in a `select!` over all k receivers until it has
/// `k * per` values (Go's reference: `selectK` in benches/go/sched). `$chan` is the channel
/// module, `$spawn` starts a producer and `$select` is the select macro; `$k` arms.
macro_rules! select_k {
    ($chan:path, $spawn:path, $select:path, $per:expr, $($i:tt)*) => {{
        use $chan as chan;
        let per: u64 = $per;
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        let mut producers = Vec::new();
        let start = Instant::now();
        $(
            let _ = $i;
            let (tx, rx) = chan::bounded::<u64>(0);
            rxs.push(rx);
            // Held until the end: a producer's drop must not close its channel, which a
            // select would then find ready (as Go's, whose producers never close).
            txs.push(tx.clone());
            producers.push($spawn(move || {
                for v in 0..per {
                    tx.send(v).unwrap();
                }
            }));
        )*
        let total = per * rxs.len() as u64;
        let mut sum = 0u64;
        for _ in 0..total {
            $select! {
                $(recv(rxs[$i]) -> v => sum += v.unwrap(),)*
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        let el = start.elapsed();
        drop(txs);
        assert_eq!(sum, rxs.len() as u64 * (per * per.saturating_sub(1) / 2), "select lost messages");
        el
    }};
}

/// How many channels a `select-<k>` row selects over: the rows that exist, so a width
/// without a row cannot be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectWidth {
    /// `select-2`.
    Two,
    /// `select-8`.
    Eight,
}

impl SelectWidth {
    fn channels(self) -> u64 {
        match self {
            Self::Two => 2,
            Self::Eight => 8,
        }
    }
}

/// select-2 or select-8 on the current tessera-sched runtime: `iters` messages in all.
pub fn tessera_select(width: SelectWidth, iters: u64) -> Duration {
    let per = iters / width.channels();
    match width {
        SelectWidth::Two => {
            select_k!(tessera_sched::chan, tessera_sched::spawn, tessera_sched::select, per, 0 1)
        }
        SelectWidth::Eight => {
            select_k!(tessera_sched::chan, tessera_sched::spawn, tessera_sched::select, per, 0 1 2 3 4 5 6 7)
        }
    }
}

/// As `tessera_select`, with crossbeam-channel and a producer thread per channel.
pub fn crossbeam_select(width: SelectWidth, iters: u64) -> Duration {
    let per = iters / width.channels();
    match width {
        SelectWidth::Two => {
            select_k!(crossbeam_channel, std::thread::spawn, crossbeam_channel::select, per, 0 1)
        }
        SelectWidth::Eight => {
            select_k!(crossbeam_channel, std::thread::spawn, crossbeam_channel::select, per, 0 1 2 3 4 5 6 7)
        }
    }
}

// ---------------------------------------------------------------- the runner's comparison

/// The scheduler peers, as columns. `user` is tessera-sched built the way a user builds
/// it (`benches/sched-user`: its own crate, cargo's default release profile, the system
/// allocator); `tessera` is the runner's own build (thin LTO, one codegen unit, Tessera as
/// the global allocator). `user` and `go` are separate programs (`external_figures`).
/// `crossbeam` is crossbeam-channel on OS threads, for the channel rows only.
const PEERS: [&str; 7] = [
    "tessera",
    "user",
    "go",
    "may",
    "tokio-mt",
    "tokio-ct",
    "crossbeam",
];
const TESSERA: usize = 0;
const USER: usize = 1;
const GO: usize = 2;
const MAY: usize = 3;
const TOKIO_MT: usize = 4;
const TOKIO_CT: usize = 5;
const CROSSBEAM: usize = 6;

/// (workload, iterations per repetition). `spawn-all-<N>-<P>p`: rounds of N coroutines
/// all spawned before any is joined (issue #17), on P processors, at least 100,000 spawns
/// per repetition. `chan-buffered`, `select-2` and `select-8` (issue #17) run on 2 Ps, ns
/// per message.
const WORKLOADS: [(&str, u64); 14] = [
    ("spawn-join", 1_000_000),
    ("spawn-all-1k-2p", 100_000),
    ("spawn-all-100k-2p", 100_000),
    ("spawn-all-1m-2p", 1_000_000),
    ("spawn-all-1k-1p", 100_000),
    ("spawn-all-100k-1p", 100_000),
    ("spawn-all-1m-1p", 1_000_000),
    ("ping-pong-1p", 200_000),
    ("ping-pong-2p", 200_000),
    ("yield", 2_000_000),
    ("chan-buffered", 1_000_000),
    ("select-2", 200_000),
    ("select-8", 200_000),
    ("select-many", SELECT_MSGS),
];

/// The spawn-all counts, as the reference programs take them.
const SPAWN_ALL_COUNTS: [&str; 3] = ["1000", "100000", "1000000"];

/// (N, processors) of a `spawn-all-<N>-<P>p` workload.
fn spawn_all_shape(workload: &str) -> Option<(u64, usize)> {
    let rest = workload.strip_prefix("spawn-all-")?;
    let (count, procs) = rest.split_once('-')?;
    let n = match count {
        "1k" => 1000,
        "100k" => 100_000,
        "1m" => 1_000_000,
        _ => return None,
    };
    let procs = procs.strip_suffix('p')?.parse().ok()?;
    Some((n, procs))
}

/// ns per operation of `peer` on `workload` (one repetition), or `None` if the peer has
/// no such configuration (tokio-ct on two Ps, tokio-mt on one; may's spawn-all, whose
/// worker count is fixed and whose stacks are a fresh mapping each) or runs as a program of
/// its own (`user`, `go`).
fn measure(workload: &str, peer: &str, iters: u64, rts: &Runtimes) -> Option<f64> {
    if let Some((n, procs)) = spawn_all_shape(workload) {
        let d = match (peer, procs) {
            ("tessera", 1) => rts.t1.block_on(move || tessera_spawn_all(n, iters)),
            ("tessera", _) => rts.t2.block_on(move || tessera_spawn_all(n, iters)),
            ("tokio-ct", 1) => rts.ct.block_on(tokio_spawn_all(n, iters)),
            ("tokio-mt", 2) => rts
                .mt
                .block_on(async move { tokio::spawn(tokio_spawn_all(n, iters)).await.unwrap() }),
            _ => return None,
        };
        return Some(d.as_nanos() as f64 / (iters.div_ceil(n) * n) as f64);
    }
    let d = match (workload, peer) {
        ("spawn-join", "tessera") => rts.t2.block_on(move || tessera_spawn_join(iters)),
        ("spawn-join", "may") => may_run(move || may_spawn_join(iters)),
        ("spawn-join", "tokio-mt") => rts
            .mt
            .block_on(async move { tokio::spawn(tokio_spawn_join(iters)).await.unwrap() }),
        ("spawn-join", "tokio-ct") => rts.ct.block_on(tokio_spawn_join(iters)),
        ("ping-pong-1p", "tessera") => rts.t1.block_on(move || tessera_ping_pong(iters)),
        ("ping-pong-2p", "tessera") => rts.t2.block_on(move || tessera_ping_pong(iters)),
        ("ping-pong-1p" | "ping-pong-2p", "may") => may_run(move || may_ping_pong(iters)),
        ("ping-pong-1p", "tokio-ct") => rts.ct.block_on(tokio_ping_pong(iters)),
        ("ping-pong-2p", "tokio-mt") => rts
            .mt
            .block_on(async move { tokio::spawn(tokio_ping_pong(iters)).await.unwrap() }),
        ("yield", "tessera") => rts.t1.block_on(move || tessera_yield(iters)),
        ("yield", "may") => may_run(move || may_yield(iters)),
        ("yield", "tokio-ct") => rts.ct.block_on(tokio_yield(iters)),
        ("select-many", "tessera") => rts.t2.block_on(move || tessera_select_many(iters)),
        ("chan-buffered", "tessera") => rts.t2.block_on(move || tessera_chan_buffered(iters)),
        ("chan-buffered", "crossbeam") => crossbeam_chan_buffered(iters),
        ("select-2", "tessera") => rts
            .t2
            .block_on(move || tessera_select(SelectWidth::Two, iters)),
        ("select-8", "tessera") => rts
            .t2
            .block_on(move || tessera_select(SelectWidth::Eight, iters)),
        ("select-2", "crossbeam") => crossbeam_select(SelectWidth::Two, iters),
        ("select-8", "crossbeam") => crossbeam_select(SelectWidth::Eight, iters),
        _ => return None,
    };
    Some(d.as_nanos() as f64 / iters as f64)
}

struct Runtimes {
    t1: tessera_sched::Runtime,
    t2: tessera_sched::Runtime,
    mt: tokio::runtime::Runtime,
    ct: tokio::runtime::Runtime,
}

/// Figures of the programs that run apart from the runner: Go's reference programs and
/// the user-build crate.
struct External {
    /// (workload, ns/op) of each, or why it has none.
    go: Result<Vec<(String, f64)>, String>,
    user: Result<Vec<(String, f64)>, String>,
    /// Go's parked lines, as printed.
    parked: Vec<String>,
}

/// Builds Go's reference programs into the report directory.
fn build_go() -> Result<std::path::PathBuf, String> {
    if Command::new("go").arg("version").output().is_err() {
        return Err("go not installed (Debian: apt-get install golang-go)".into());
    }
    let src = crate::paths::workspace_root().join("benches/go/sched");
    let dir = crate::paths::report_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bin = dir.join("go-sched");
    let build = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !build.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&build.stderr).trim()
        ));
    }
    Ok(bin)
}

/// The user-build crate (`benches/sched-user`, a workspace of its own).
const USER_CRATE: &str = "benches/sched-user";

/// Builds the user-build crate with cargo's default release profile into
/// `<target>/sched-user/` (a no-op when it is up to date).
fn build_user() -> Result<std::path::PathBuf, String> {
    let target = crate::paths::target_dir().join("sched-user");
    let manifest = crate::paths::workspace_root()
        .join(USER_CRATE)
        .join("Cargo.toml");
    let cargo = crate::cargo::started_by().unwrap_or_else(|| "cargo".into());
    crate::cargo::build_release(
        &cargo,
        &manifest,
        &target,
        &[],
        "tessera-sched as a user builds it: default release profile, system allocator",
    )?;
    Ok(target.join("release").join("tessera-sched-user"))
}

/// Runs `bin ARGS` with `procs` processors (`GOMAXPROCS` for Go, `TESSERA_PROCS` for
/// tessera-sched) and returns its stdout.
fn run_program(bin: &std::path::Path, procs: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .env("GOMAXPROCS", procs)
        .env("TESSERA_PROCS", procs)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds the `name ns/op value` lines of `out` to `figures`.
fn parse_figures(out: &str, figures: &mut Vec<(String, f64)>) {
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, "ns/op", v] = f[..]
            && let Ok(v) = v.parse()
        {
            figures.push((name.to_string(), v));
        }
    }
}

/// Runs Go's reference programs and the user-build crate, one workload group at a time,
/// alternating between the two (each prints the median of its own repetitions), then Go's
/// parked workload.
fn external_figures(parked: &[usize]) -> External {
    let mut go = build_go().map(|bin| (bin, Vec::new()));
    let mut user = build_user().map(|bin| (bin, Vec::new()));
    let spawn_all: Vec<&str> = std::iter::once("spawn-all")
        .chain(SPAWN_ALL_COUNTS)
        .collect();
    // (processors, arguments, whether the user crate has it).
    let groups: [(&str, &[&str], bool); 9] = [
        ("2", &["spawn-join"], true),
        ("2", &spawn_all, true),
        ("1", &spawn_all, true),
        ("1", &["ping-pong"], true),
        ("2", &["ping-pong"], true),
        ("1", &["yield"], true),
        ("2", &["chan-buffered"], true),
        ("2", &["select", "2", "8"], true),
        ("2", &["select-many"], false),
    ];
    for (i, (procs, args, in_user)) in groups.into_iter().enumerate() {
        // Alternate which program goes first, so neither always runs on a machine the other
        // just warmed (or heated).
        for turn in 0..2 {
            let (side, wanted) = if (i + turn) % 2 == 0 {
                (&mut go, true)
            } else {
                (&mut user, in_user)
            };
            if !wanted {
                continue;
            }
            if let Ok((bin, figures)) = side {
                match run_program(bin, procs, args) {
                    Ok(out) => parse_figures(&out, figures),
                    Err(why) => *side = Err(why),
                }
            }
        }
    }
    let mut lines = Vec::new();
    if let Ok((bin, _)) = &go {
        for &n in parked {
            match run_program(bin, "2", &["parked", &n.to_string()]) {
                Ok(out) => lines.extend(out.lines().map(|l| format!("go       {l}"))),
                Err(why) => lines.push(format!("go       parked {n}: {why}")),
            }
        }
    }
    External {
        go: go.map(|(_, f)| f),
        user: user.map(|(_, f)| f),
        parked: lines,
    }
}

/// The hidden flag of the comparison's child process.
pub const CHILD_FLAG: &str = "--sched-child";

/// `tessera-bench --sched`: runs the comparison (`run_here`) in a child process that
/// allocates through Tessera (`global.rs`), as the criterion bench does. Returns the exit
/// code.
pub fn run(full: bool, reps: Option<usize>) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("tessera-bench: cannot find its own executable: {e}");
            return 1;
        }
    };
    let mut child = Command::new(exe);
    child.arg(CHILD_FLAG).env(crate::global::ENV, "tessera");
    if full {
        child.arg("--full");
    }
    if let Some(reps) = reps {
        child.arg("--reps").arg(reps.to_string());
    }
    match child.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("tessera-bench: cannot start the scheduler comparison: {e}");
            1
        }
    }
}

/// The comparison itself: every scheduler workload for every peer (interleaved
/// repetitions, median shown), then the ratios against Go, may and tokio, and the parked
/// figures (each in a process of its own). Returns the exit code.
pub fn run_here(full: bool, reps: Option<usize>) -> i32 {
    let reps = reps.unwrap_or(if full { 11 } else { 5 });
    let parked: &[usize] = if full {
        &[100_000, 1_000_000]
    } else {
        &[100_000]
    };
    println!(
        "scheduler workloads: {reps} interleaved repetitions, median (ns per operation); \
         the runner's Rust peers allocate through {}",
        if crate::global::is_tessera() {
            "Tessera"
        } else {
            "the system allocator"
        }
    );
    let rts = Runtimes {
        t1: tessera_rt(1),
        t2: tessera_rt(2),
        mt: tokio_mt(2),
        ct: tokio_ct(),
    };
    let mut table: Vec<(&str, Vec<Option<f64>>)> = Vec::new();
    for (workload, iters) in WORKLOADS {
        // One warm-up round, then `reps` rounds with the peers interleaved.
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
        for round in 0..=reps {
            for (i, peer) in PEERS.iter().enumerate() {
                if let Some(ns) = measure(workload, peer, iters, &rts)
                    && round > 0
                {
                    samples[i].push(ns);
                }
            }
        }
        table.push((workload, samples.iter().map(|s| median(s)).collect()));
    }
    let external = external_figures(parked);
    for (column, figures) in [(GO, &external.go), (USER, &external.user)] {
        if let Ok(ns) = figures {
            for (workload, row) in table.iter_mut() {
                row[column] = ns
                    .iter()
                    .find(|(name, _)| name == workload)
                    .map(|&(_, v)| v);
            }
        }
    }
    print!("{:<18}", "workload");
    for peer in PEERS {
        print!("{peer:>10}");
    }
    println!("   tessera/go  user/go  tessera/may  tessera/tokio  tessera/xbeam");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for (workload, row) in &table {
        print!("{workload:<18}");
        for v in row {
            print!("{:>10}", cell(*v));
        }
        let ratio = |ours: Option<f64>, peer: Option<f64>| match (ours, peer) {
            (Some(t), Some(p)) => format!("{:.2}", t / p),
            _ => "-".to_string(),
        };
        let tokio = row[TOKIO_MT].or(row[TOKIO_CT]);
        println!(
            "   {:>10}  {:>7}  {:>11}  {:>13}  {:>13}",
            ratio(row[TESSERA], row[GO]),
            ratio(row[USER], row[GO]),
            ratio(row[TESSERA], row[MAY]),
            ratio(row[TESSERA], tokio),
            ratio(row[TESSERA], row[CROSSBEAM])
        );
    }
    println!(
        "(ratio < 1: tessera takes less time; tessera: this runner's build (thin LTO, Tessera \
         as the global allocator), user: {USER_CRATE} (cargo's default release profile, the \
         system allocator) and go each print the median of their own repetitions, run \
         alternately after the runner's rounds; tokio: tokio-mt where it has a figure, else \
         tokio-ct; crossbeam: crossbeam-channel on OS threads, channel rows only)"
    );
    for (who, figures) in [("go", &external.go), ("user", &external.user)] {
        if let Err(why) = figures {
            println!("{who}: {why}");
        }
    }
    drop(rts);
    let exe = std::env::current_exe();
    for &n in parked {
        match &exe {
            Ok(exe) => match Command::new(exe)
                .arg(PARKED_FLAG)
                .arg(n.to_string())
                .output()
            {
                Ok(out) if out.status.success() => {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        println!("tessera  {line}");
                    }
                }
                Ok(out) => println!(
                    "tessera  parked {n}: failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => println!("tessera  parked {n}: {e}"),
            },
            Err(e) => println!("tessera  parked {n}: {e}"),
        }
    }
    for line in &external.parked {
        println!("{line}");
    }
    println!();
    let go_bin = external
        .go
        .is_ok()
        .then(|| crate::paths::report_dir().join("go-sched"));
    crate::sched_timers::compare(reps.min(5), go_bin.as_deref());
    0
}

/// The hidden flag of the parked child process.
pub const PARKED_FLAG: &str = "--sched-parked";

/// The parked workload in this (child) process: `n` coroutines, each on its own guarded
/// 16 KiB stack, parked receiving on one channel; prints the RSS growth per coroutine
/// (stack page, G record, join state and channel waiter together) and the VMAs used.
pub fn parked_child(n: usize) -> i32 {
    use tessera_sched::{Runtime, Spawn, chan};
    let rt = match Runtime::builder().procs(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return 1;
        }
    };
    // Warm the runtime up so its own start-up memory is not counted.
    rt.block_on(|| ());
    let rss_before = tessera_stacks::process_rss_kib().unwrap_or(0);
    let vmas_before = tessera_stacks::process_vma_count().unwrap_or(0);
    let (tx, rx) = chan::bounded::<()>(0);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let rx = rx.clone();
            Spawn::new().stack_size(16 << 10).spawn_on(&rt, move || {
                let _ = rx.recv();
            })
        })
        .collect();
    while rt.stats().parked < n {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss = tessera_stacks::process_rss_kib()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    let vmas = tessera_stacks::process_vma_count().unwrap_or(0);
    let s = tessera_stacks::stats();
    println!(
        "parked {n} rss_per_g_bytes {} vmas {vmas_before}->{vmas} (stack resident {} B each, guard {:?}, vm.max_map_count {})",
        rss * 1024 / n.max(1),
        s.resident_bytes / n.max(1),
        s.guard,
        tessera_stacks::max_map_count().unwrap_or(0)
    );
    drop(tx);
    drop(rx);
    for h in handles {
        let _ = h.join();
    }
    0
}
