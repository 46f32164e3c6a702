//! The coroutine workloads of BENCHMARKS.md for tessera-sched, may and tokio: spawning
//! (spawn-join in batches, spawn-all with every handle live) and switching (ping-pong over
//! rendezvous channels, two coroutines yielding to each other).

use std::time::{Duration, Instant};

/// Coroutines spawned before each join round (BENCHMARKS.md: spawn-join).
pub const BATCH: u64 = 1000;

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
