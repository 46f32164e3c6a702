//! select-many (issue #14): tessera-sched and Go only (may and tokio have no select over
//! channels of this shape). One source for both of tessera-sched's builds: the runner's
//! (`channels` re-exports it) and the user-build crate's (`benches/sched-user` includes this
//! file), so the two columns measure the same program.

use std::time::{Duration, Instant};

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
