//! A Go-style M:N scheduler (G/M/P) on Tessera stacks (ARCHITECTURE.md#scheduler).
//!
//! ```
//! use tessera_sched::{Runtime, chan, spawn};
//! let rt = Runtime::builder().procs(2).build().unwrap();
//! let sum = rt.block_on(|| {
//!     let (tx, rx) = chan::bounded(0);
//!     let producer = spawn(move || for i in 0..10 { tx.send(i).unwrap() });
//!     let sum: i32 = rx.iter().sum();
//!     producer.join().unwrap();
//!     sum
//! });
//! assert_eq!(sum, 45);
//! ```
//!
//! - **G** (coroutine.rs): a corosensei coroutine on a guarded tessera stack taken from the
//!   P's `StackCache`. **P** (processor.rs): a lock-free run queue of 256 with `runnext`
//!   (runqueue.rs), a Tessera allocator cache made current on whichever M runs it, a stack
//!   cache. **M** (machine/): an OS thread running Gs while it holds a P; it steals, spins
//!   (bounded) and parks on a futex (park.rs). A global queue (global_queue.rs) is checked
//!   first every 61 ticks.
//! - Channels with `select!` (chan/), sync primitives that park coroutines (sync/), timers
//!   (timer.rs, a heap per P, as in Go 1.14+), coroutine-locals and `lock_to_thread`
//!   (local.rs, machine/api.rs), `dump()` and SIGQUIT (dump.rs), counters and a latency
//!   histogram (stats.rs).
//! - I/O: an edge-triggered epoll per runtime (netpoll.rs) under `net::{TcpListener,
//!   TcpStream, UdpSocket}` (net.rs); `blocking(f)` for system calls that cannot be polled
//!   (machine/api.rs; `fs` wraps file I/O in it); sysmon (sysmon.rs) hands a P whose M is
//!   blocked to another M, polls the network when nobody has for 10 ms, and records
//!   coroutines that run over 10 ms without yielding.
//!
//! # Wake-ups
//!
//! Go wakes an idle P for every coroutine made runnable while one is idle. Tessera does
//! so only when the work is worth moving: while the runtime's coroutines typically run
//! for less than 500 ns between two schedules (`Stats::run_ns`, measured by sysmon at no
//! cost to the switch path), a coroutine spawned or woken onto a running P stays there,
//! because that P runs it sooner than another could take it over, and each one moved costs
//! the P that made it more (cache misses on the coroutine's record, stack and join state)
//! than running it. Such work is never lost, it sits on a running P's queue, and sysmon
//! hands it to an idle P when it waits: behind a coroutine that keeps running, or in a
//! queue that has held it for about a millisecond. So work conservation is given up for
//! one to two milliseconds (sysmon looks every millisecond while Ps are busy), and only for
//! short work; an idle P that is awake (spinning)
//! still steals anything. (Go's runtime team weighs the same trade-off in
//! golang/go#54622.) Spawning many empty coroutines and joining them runs at the speed of
//! one P rather than slower than one P, which is what Go, tokio and may show on two.
//!
//! The coroutines one poll of the network wakes stay on the P that polled, whatever they
//! run, under the same rule (sysmon moves them if they wait): handing half of each batch to
//! a second P makes both go idle sooner, and a P with nothing to do blocks in epoll and
//! takes each later event with a wake-up of its own, several µs each on a VM. A
//! request/response server on two Ps then serves the same load with a fraction of the
//! wake-ups (the `echo` example: about one per 55 requests instead of one per 6–11).
//! Except when the OS keeps preempting the M that delivers a batch (twice or more since
//! its previous batch): more threads are runnable than there are CPUs, the one M doing all
//! the work uses more than its share of its CPU, and every thread its coroutines wake (a
//! client its reply wakes) preempts it. Such a batch wakes an idle M to steal half, as
//! tokio does after every poll (`machine/ready.rs` `spread_batch`).
//!
//! # Thread-locals and migration
//!
//! A coroutine may resume on another thread after any yield, park, channel operation,
//! sleep or lock. `thread_local!` inside a coroutine is the *current M's*: it may change
//! across any of those points, and a reference into one must not be held across them (the
//! compiler cannot check this; it is the one contract `spawn` cannot express in types).
//! Use [`coroutine_local!`] for per-coroutine state and [`lock_to_thread`] to pin a
//! coroutine to its thread. The scheduler itself and Tessera's allocator re-read their
//! thread-locals after every switch.

mod coroutine;
mod dump;
mod gfree;
mod global_queue;
mod join;
mod machine;
mod netpoll;
mod palloc;
mod park;
mod prefetch;
mod processor;
mod runqueue;
mod runtime;
mod shim;
mod spawn;
mod stats;
mod sys;
mod sysmon;
mod teardown;
mod timer;
mod wait;

pub mod chan;
pub mod fs;
pub mod labels;
pub mod local;
pub mod net;
pub mod profile;
pub mod sync;

pub use coroutine::WaitReason;
pub use dump::dump;
pub use machine::{blocking, is_locked_to_thread, lock_to_thread, unlock_from_thread, yield_now};
pub use runtime::{Builder, DEFAULT_STACK_SIZE, JoinError, JoinHandle, Runtime, default_procs};
pub use spawn::{Spawn, spawn, try_spawn};
pub use stats::{Stats, stats};
pub use tessera_stacks::StackError;
pub use timer::{Ticker, after, sleep, sleep_until};
