//! The allocator workloads of BENCHMARKS.md, one file each, written here from their
//! descriptions.
//!
//! Every workload is generic over `A: GlobalAlloc + Sync` and calls the allocator it is given
//! directly. It runs for a fixed wall-clock budget ([`Params::duration`]) with a fixed amount
//! of work per round, and reports how many operations it completed ([`Outcome`]); the ratio of
//! two allocators' throughputs is then the ratio of their round rates. Every block a workload
//! allocates carries a check pattern ([`block`]) that is verified before the block is freed,
//! so an allocator that hands out overlapping or corrupted memory fails the run (a panic with
//! a message) instead of being timed.

pub mod block;
pub mod harness;
pub mod rng;

mod cache_scratch;
mod cache_thrash;
mod fastpath;
mod glibc_simple;
mod growth;
mod hammer;
mod larson;
mod manythreads;
mod mstress;
mod rptest;
mod thread_churn;
mod xmalloc;

use std::alloc::GlobalAlloc;
use std::time::Duration;

/// How one workload run is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Number of worker threads (the workload decides what each one does).
    pub threads: usize,
    /// Wall-clock budget; the workload stops starting new rounds after it.
    pub duration: Duration,
}

/// What a run did: operations completed and the time they took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Completed operations; what one operation is depends on the workload (see [`Workload::unit`]).
    pub ops: u64,
    /// Wall-clock time of the measured part.
    pub elapsed: Duration,
}

impl Outcome {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The allocator workloads, in the order the tables show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// malloc/free pairs of 16, 64, 256, 1024 B in a tight loop.
    Fastpath,
    /// Server "bleeding": live sets handed from one generation of threads to the next.
    Larson,
    /// Producer/consumer: every free is remote.
    Xmalloc,
    /// Passive false sharing.
    CacheScratch,
    /// Active false sharing.
    CacheThrash,
    /// Object migration, thread churn, mixed sizes with rare large objects.
    Mstress,
    /// Realistic size mix 16–16000 B, a cross-thread free every second op.
    Rptest,
    /// Allocate many small objects, free them all, repeat.
    GlibcSimple,
    /// Vec-style growth by realloc, and large reallocs.
    Growth,
    /// Many short-lived threads, each allocating a little.
    ThreadChurn,
    /// Many threads (64, 256) each allocating and freeing rounds of 1,000 blocks.
    Manythreads,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 11] = [
        Workload::Fastpath,
        Workload::Larson,
        Workload::Xmalloc,
        Workload::CacheScratch,
        Workload::CacheThrash,
        Workload::Mstress,
        Workload::Rptest,
        Workload::GlibcSimple,
        Workload::Growth,
        Workload::ThreadChurn,
        Workload::Manythreads,
    ];

    /// The name used on the command line and in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Fastpath => "fastpath",
            Workload::Larson => "larson",
            Workload::Xmalloc => "xmalloc",
            Workload::CacheScratch => "cache-scratch",
            Workload::CacheThrash => "cache-thrash",
            Workload::Mstress => "mstress",
            Workload::Rptest => "rptest",
            Workload::GlibcSimple => "glibc-simple",
            Workload::Growth => "growth",
            Workload::ThreadChurn => "thread-churn",
            Workload::Manythreads => "manythreads",
        }
    }

    /// What one counted operation is, for the report.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Fastpath => "malloc+free pair",
            Workload::Larson => "free+malloc replacement",
            Workload::Xmalloc => "block allocated by a producer and freed by a consumer",
            Workload::CacheScratch | Workload::CacheThrash => {
                "8 B object allocated, written 100 times, freed"
            }
            Workload::Mstress => "slot swap (malloc and/or free)",
            Workload::Rptest => "malloc (its free is local or remote)",
            Workload::GlibcSimple => "malloc (each later freed)",
            Workload::Growth => "malloc or realloc call",
            Workload::ThreadChurn => "thread spawned, allocating, joined",
            Workload::Manythreads => "malloc or free (rounds of 1,000 blocks of 16-512 B)",
        }
    }

    /// Looks a workload up by name.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// Runs `workload` with allocator `a`. Panics with a message if a check fails.
pub fn run<A: GlobalAlloc + Sync>(a: &A, workload: Workload, params: &Params) -> Outcome {
    assert!(params.threads >= 1, "a workload needs at least one thread");
    match workload {
        Workload::Fastpath => fastpath::run(a, params),
        Workload::Larson => larson::run(a, params),
        Workload::Xmalloc => xmalloc::run(a, params),
        Workload::CacheScratch => cache_scratch::run(a, params),
        Workload::CacheThrash => cache_thrash::run(a, params),
        Workload::Mstress => mstress::run(a, params),
        Workload::Rptest => rptest::run(a, params),
        Workload::GlibcSimple => glibc_simple::run(a, params),
        Workload::Growth => growth::run(a, params),
        Workload::ThreadChurn => thread_churn::run(a, params),
        Workload::Manythreads => manythreads::run(a, params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    /// Runs every workload briefly against `System` at 1 and 3 threads (3: an odd count
    /// exercises the uneven splits) and checks the numbers are sane.
    #[test]
    fn every_workload_runs_against_system() {
        for workload in Workload::ALL {
            for threads in [1, 3] {
                let params = Params {
                    threads,
                    duration: Duration::from_millis(15),
                };
                let outcome = run(&System, workload, &params);
                assert!(outcome.ops > 0, "{} t={threads}: no ops", workload.name());
                assert!(
                    outcome.elapsed >= Duration::from_millis(1)
                        && outcome.elapsed < Duration::from_secs(5),
                    "{} t={threads}: elapsed {:?}",
                    workload.name(),
                    outcome.elapsed
                );
                let rate = outcome.ops_per_sec();
                assert!(
                    rate.is_finite() && rate > 0.0,
                    "{}: rate {rate}",
                    workload.name()
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(Workload::from_name("nope"), None);
    }
}
