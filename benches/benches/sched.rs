//! Scheduler benchmarks (BENCHMARKS.md, "Scheduler and stack workloads"): tessera-sched
//! side by side with `may` and `tokio` (multi-thread and current-thread runtimes) in one
//! run. Go's figures come from `benches/go/sched/run.sh` (same workloads, see its
//! `main.go`); `benches/go/sched/compare.sh` runs both and prints ratios.
//!
//! - spawn-join: spawn empty coroutines in batches of 1000 and join each batch; per
//!   coroutine. (Go: `go f()` + WaitGroup per batch.)
//! - ping-pong-1p / -2p: a round trip between two coroutines over two rendezvous channels
//!   (tokio: `mpsc::channel(1)`; may has no rendezvous channel, so its unbounded mpsc, which
//!   holds at most one value here).
//! - yield: two coroutines on one processor yield to each other; per switch.
//!
//! `may`'s worker count is global and fixed at first use: it runs with 2 workers in every
//! group (so its "1p" figure is really 2 workers). The whole binary (every peer) allocates
//! through Tessera, the project's allocator.
//!
//! `cargo bench -p tessera-bench --bench sched`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const BATCH: u64 = 1000;

fn tessera_rt(procs: usize) -> tessera_sched::Runtime {
    tessera_sched::Runtime::builder()
        .procs(procs)
        .build()
        .unwrap()
}

fn tokio_mt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .unwrap()
}

fn tokio_ct() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn may_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(2);
    });
}

/// Runs `f` in a may coroutine and returns its result.
fn may_run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    may_init();
    // SAFETY: the closure keeps no thread-local references across may's switches.
    unsafe { may::coroutine::spawn(f) }.join().unwrap()
}

// ---------------------------------------------------------------- spawn-join

fn tessera_spawn_join(iters: u64) -> Duration {
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

fn may_spawn_join(iters: u64) -> Duration {
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

async fn tokio_spawn_join(iters: u64) -> Duration {
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

fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn-join");
    let rt = tessera_rt(2);
    g.bench_function("tessera-2p", |b| {
        b.iter_custom(|iters| rt.block_on(move || tessera_spawn_join(iters)))
    });
    g.bench_function("may-2w", |b| {
        b.iter_custom(|iters| may_run(move || may_spawn_join(iters)))
    });
    let mt = tokio_mt(2);
    g.bench_function("tokio-mt-2w", |b| {
        b.iter_custom(|iters| {
            mt.block_on(async move { tokio::spawn(tokio_spawn_join(iters)).await.unwrap() })
        })
    });
    let ct = tokio_ct();
    g.bench_function("tokio-ct", |b| {
        b.iter_custom(|iters| ct.block_on(tokio_spawn_join(iters)))
    });
    g.finish();
}

// ---------------------------------------------------------------- ping-pong

fn tessera_ping_pong(iters: u64) -> Duration {
    use tessera_sched::chan;
    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let echo = tessera_sched::spawn(move || {
        for v in ping_rx.iter() {
            pong_tx.send(v + 1).unwrap();
        }
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        ping_tx.send(v).unwrap();
        v = pong_rx.recv().unwrap();
    }
    let el = start.elapsed();
    drop(ping_tx);
    echo.join().unwrap();
    black_box(v);
    el
}

fn may_ping_pong(iters: u64) -> Duration {
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
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        ping_tx.send(v).unwrap();
        v = pong_rx.recv().unwrap();
    }
    let el = start.elapsed();
    drop(ping_tx);
    echo.join().unwrap();
    black_box(v);
    el
}

async fn tokio_ping_pong(iters: u64) -> Duration {
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
    black_box(v);
    el
}

fn ping_pong(c: &mut Criterion) {
    for procs in [1usize, 2] {
        let mut g = c.benchmark_group(format!("ping-pong-{procs}p"));
        let rt = tessera_rt(procs);
        g.bench_function(format!("tessera-{procs}p"), |b| {
            b.iter_custom(|iters| rt.block_on(move || tessera_ping_pong(iters)))
        });
        g.bench_function("may-2w", |b| {
            b.iter_custom(|iters| may_run(move || may_ping_pong(iters)))
        });
        if procs == 1 {
            let ct = tokio_ct();
            g.bench_function("tokio-ct", |b| {
                b.iter_custom(|iters| ct.block_on(tokio_ping_pong(iters)))
            });
        } else {
            let mt = tokio_mt(procs);
            g.bench_function(format!("tokio-mt-{procs}w"), |b| {
                b.iter_custom(|iters| {
                    mt.block_on(async move { tokio::spawn(tokio_ping_pong(iters)).await.unwrap() })
                })
            });
        }
        g.finish();
    }
}

// ---------------------------------------------------------------- yield

fn yields(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield");
    let rt = tessera_rt(1);
    g.bench_function("tessera-1p", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
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
            })
        })
    });
    g.bench_function("may-2w", |b| {
        b.iter_custom(|iters| {
            may_run(move || {
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
            })
        })
    });
    let ct = tokio_ct();
    g.bench_function("tokio-ct", |b| {
        b.iter_custom(|iters| {
            ct.block_on(async move {
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
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = spawn_join, ping_pong, yields
}
criterion_main!(benches);
