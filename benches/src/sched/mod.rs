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
//!
//! The pieces: `coroutines.rs` (spawning and switching: spawn-join, spawn-all, ping-pong,
//! yield), `channels.rs` (chan-buffered, select-2/8), `select_many.rs` (select-many, which
//! the user-build crate includes too), `compare.rs` (the
//! runner's comparison table), `external.rs` (Go's programs and the user-build crate),
//! `parked.rs` (the parked workload's child process); the timers workload is
//! `sched_timers.rs`.

mod channels;
mod compare;
mod coroutines;
mod external;
mod parked;
mod select_many;

pub use channels::{
    CHAN_CAP, SelectWidth, crossbeam_chan_buffered, crossbeam_select, tessera_chan_buffered,
    tessera_select,
};
pub use compare::{CHILD_FLAG, run, run_here};
pub use coroutines::{
    BATCH, may_ping_pong, may_spawn_join, may_yield, tessera_ping_pong, tessera_spawn_all,
    tessera_spawn_join, tessera_yield, tokio_ping_pong, tokio_spawn_all, tokio_spawn_join,
    tokio_yield,
};
pub use parked::{PARKED_FLAG, parked_child};
pub use select_many::{SELECT_ARMS, SELECT_MSGS, SELECT_WORKERS, tessera_select_many};

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
