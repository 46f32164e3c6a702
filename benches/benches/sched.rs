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

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_bench::sched::{
    may_ping_pong, may_run, may_spawn_join, may_yield, tessera_ping_pong, tessera_rt,
    tessera_spawn_join, tessera_yield, tokio_ct, tokio_mt, tokio_ping_pong, tokio_spawn_join,
    tokio_yield,
};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

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
        b.iter_custom(|iters| rt.block_on(move || tessera_yield(iters)))
    });
    g.bench_function("may-2w", |b| {
        b.iter_custom(|iters| may_run(move || may_yield(iters)))
    });
    let ct = tokio_ct();
    g.bench_function("tokio-ct", |b| {
        b.iter_custom(|iters| ct.block_on(tokio_yield(iters)))
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
