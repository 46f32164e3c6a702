//! Counters and the scheduling-latency histogram (runnable → running, log2 buckets,
//! sampled one transition in eight per G like Go's `/sched/latencies:seconds`).

use core::sync::atomic::Ordering;

use crate::coroutine::{NOTIFIED, PARKED, RUNNABLE, RUNNING, SCAN_READIED, SCANNING};
use crate::processor::LATENCY_BUCKETS;
use crate::runtime::Shared;

/// A snapshot of a runtime's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Ps.
    pub procs: usize,
    /// Coroutines spawned so far.
    pub spawned: u64,
    /// Live coroutines.
    pub live: usize,
    /// Coroutines running now.
    pub running: usize,
    /// Runnable coroutines waiting for a P.
    pub runnable: usize,
    /// Parked coroutines.
    pub parked: usize,
    /// Finished coroutines whose records (most with their stacks) the runtime keeps for the
    /// next spawns (not counted in `live`); sysmon hands back what goes unused for a second,
    /// down to a few thousand.
    pub kept: usize,
    /// Successful steals from another P's run queue.
    pub steals: u64,
    /// Times sysmon saw a coroutine run for more than 10 ms without yielding.
    pub long_runs: u64,
    /// OS threads (Ms) started, including those started to hand off Ps from blocking calls.
    pub threads: usize,
    /// `latency[i]`: sampled runnable → running latencies in `[2^i, 2^(i+1))` ns.
    pub latency: [u64; LATENCY_BUCKETS],
    /// How long coroutines typically run between two schedules, in ns, as sysmon
    /// measures it (`None` until it has): below 500 ns, work a coroutine queues stays on
    /// its P instead of waking an idle one (see the crate documentation, "Wake-ups").
    /// Over several runtimes, the largest.
    pub run_ns: Option<u64>,
}

impl Stats {
    /// Samples in the histogram.
    pub fn latency_samples(&self) -> u64 {
        self.latency.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in nanoseconds.
    pub fn latency_quantile_ns(&self, q: f64) -> Option<u64> {
        let total = self.latency_samples();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(1u64 << (i + 1));
            }
        }
        None
    }
}

pub(crate) fn collect(sh: &Shared) -> Stats {
    let mut s = Stats {
        procs: sh.ps.len(),
        spawned: sh.spawned_outside.load(Ordering::Relaxed),
        live: 0,
        running: 0,
        runnable: 0,
        parked: 0,
        kept: 0,
        steals: 0,
        long_runs: sh.long_runs.load(Ordering::Relaxed),
        threads: sh.all_ms.lock().unwrap_or_else(|e| e.into_inner()).len(),
        latency: [0; LATENCY_BUCKETS],
        run_ns: sh.run_ns(),
    };
    for p in sh.ps.iter() {
        s.spawned += p.spawned.load(Ordering::Relaxed);
        s.steals += p.steals.load(Ordering::Relaxed);
        for (a, b) in s.latency.iter_mut().zip(p.latency.iter()) {
            *a += b.load(Ordering::Relaxed);
        }
    }
    s.kept = sh.allgs.count_dead();
    sh.allgs.for_each(&mut |g| {
        s.live += 1;
        match g.state() {
            RUNNING | NOTIFIED => s.running += 1,
            RUNNABLE => s.runnable += 1,
            // A G being walked by a goroutine profile is parked as far as it knows.
            PARKED | SCANNING | SCAN_READIED => s.parked += 1,
            _ => {}
        }
    });
    s
}

/// Counters of the runtime the caller runs on (or of every live runtime, summed, from a
/// plain thread).
pub fn stats() -> Stats {
    let one = crate::machine::current_runtime().map(|r| vec![r]);
    let rts = one.unwrap_or_else(crate::dump::live_runtimes);
    let mut total: Option<Stats> = None;
    for r in rts {
        let s = collect(&r);
        total = Some(match total {
            None => s,
            Some(mut t) => {
                t.procs += s.procs;
                t.spawned += s.spawned;
                t.live += s.live;
                t.running += s.running;
                t.runnable += s.runnable;
                t.parked += s.parked;
                t.kept += s.kept;
                t.steals += s.steals;
                t.long_runs += s.long_runs;
                t.threads += s.threads;
                for (a, b) in t.latency.iter_mut().zip(s.latency) {
                    *a += b;
                }
                t.run_ns = t.run_ns.max(s.run_ns);
                t
            }
        });
    }
    total.unwrap_or(Stats {
        procs: 0,
        spawned: 0,
        live: 0,
        running: 0,
        runnable: 0,
        parked: 0,
        kept: 0,
        steals: 0,
        long_runs: 0,
        threads: 0,
        latency: [0; LATENCY_BUCKETS],
        run_ns: None,
    })
}
