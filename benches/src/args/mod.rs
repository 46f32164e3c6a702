//! The runner's command line, parsed by hand (a dozen flags do not need clap): what it can
//! ask for ([`Command`] and the options of each mode) and the `--help` text here, the
//! parsing in `parse.rs`.

mod parse;

pub use parse::parse;

use crate::allocators;
use crate::c_mode;
use crate::programs;
use crate::rust_programs;
use crate::workloads::Workload;
use std::time::Duration;

/// Per-run budget and repetitions of the default (quick) mode: the whole default matrix
/// (10 workloads x 4 thread counts x 4 allocators x 3 repetitions) takes about two minutes.
pub const QUICK: (Duration, usize) = (Duration::from_millis(150), 3);
/// The same for `--full`: runs of 2 s, five repetitions.
pub const FULL: (Duration, usize) = (Duration::from_millis(2000), 5);
/// Thread counts run by default (more threads than cores is a case users hit).
pub const DEFAULT_THREADS: [usize; 4] = [1, 2, 4, 8];
/// Thread counts the C mode runs by default (fewer: it has five allocators to run, and the
/// default run must stay a few minutes long).
pub const C_DEFAULT_THREADS: [usize; 3] = [1, 2, 4];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`.
    Help,
    /// The comparison of allocator workloads (the default).
    Run(RunOptions),
    /// Hidden: one run inside a child process.
    Child(ChildSpec),
    /// `--prof-cost`: heap profiling's cost in instructions under callgrind, every
    /// workload of the Rust and the C mode with profiling off and on, with this short
    /// budget (the long one is `icount::LONG_FACTOR` times it).
    ProfCost {
        /// The short budget.
        short: Duration,
    },
    /// `--programs`: real programs under `LD_PRELOAD` allocators.
    Programs(ProgramOptions),
    /// `--c`: the allocator workloads written in C, under `LD_PRELOAD` allocators.
    C(COptions),
    /// `--rust-programs`: Rust programs of a crate of their own, one binary per global
    /// allocator.
    RustPrograms(RustProgramOptions),
    /// `--sched`: the scheduler workloads against Go, may and tokio only.
    Sched {
        /// `--full`: more repetitions, and parked at 1,000,000 too.
        full: bool,
        /// `--reps`, if given.
        reps: Option<usize>,
    },
    /// Hidden: the scheduler comparison itself, in a child process that allocates through
    /// Tessera.
    SchedChild {
        /// As for `Sched`.
        full: bool,
        /// As for `Sched`.
        reps: Option<usize>,
    },
    /// Hidden: the parked workload with N coroutines, in a child process.
    SchedParked(usize),
    /// Hidden: the timers workload of one peer with N coroutines, in a child process.
    SchedTimers {
        /// `tessera` or `tokio` (`sched_timers::PEERS`).
        peer: String,
        /// Coroutines.
        n: usize,
    },
}

/// Options of the allocator comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Workloads to run, in table order.
    pub workloads: Vec<Workload>,
    /// Allocator names, in table order.
    pub allocators: Vec<&'static str>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions; the tables show the median.
    pub reps: usize,
    /// Budget of one run.
    pub duration: Duration,
    /// Whether `--full` was given (shown in the report).
    pub full: bool,
    /// Whether the scheduler comparison follows (the default run; not when the run was
    /// narrowed with `--workloads`, `--allocators` or `--threads`).
    pub with_sched: bool,
    /// The C mode, which follows in the default run (not when narrowed, as for the
    /// scheduler).
    pub c: Option<COptions>,
}

/// Options of the C mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct COptions {
    /// C programs to run, in table order.
    pub programs: Vec<&'static c_mode::Program>,
    /// Preload names (`glibc`, `tessera`, ...), in table order.
    pub preloads: Vec<&'static str>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions; the tables show the median.
    pub reps: usize,
    /// Budget of one run.
    pub duration: Duration,
    /// Whether `--full` was given (shown in the report).
    pub full: bool,
}

/// One run, as passed to a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Allocator name.
    pub allocator: &'static str,
    /// Workload.
    pub workload: Workload,
    /// Thread count.
    pub threads: usize,
    /// Budget of the run.
    pub duration: Duration,
}

/// The hidden flag that makes the binary a child.
pub const CHILD_FLAG: &str = "--child";

impl ChildSpec {
    /// The arguments that make a child run this spec (parsed back by [`parse`]).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            CHILD_FLAG.to_string(),
            self.allocator.to_string(),
            self.workload.name().to_string(),
            self.threads.to_string(),
            self.duration.as_millis().to_string(),
        ]
    }
}

/// Options of `--programs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOptions {
    /// Preload names (`glibc`, `mimalloc`, ...), in table order.
    pub preloads: Vec<&'static str>,
    /// Repetitions per (program, preload); the table shows the median.
    pub reps: usize,
    /// Larger inputs.
    pub full: bool,
}

/// Options of `--rust-programs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustProgramOptions {
    /// Workload names, in table order.
    pub workloads: Vec<&'static str>,
    /// Allocator names (the Rust table's), in column order.
    pub allocators: Vec<&'static str>,
    /// Rounds; the table shows the median.
    pub reps: usize,
}

/// The `--help` text.
pub fn usage() -> String {
    format!(
        "\
tessera-bench: compare Tessera with mimalloc, jemalloc and glibc

USAGE:
    cargo run --release -p tessera-bench [-- OPTIONS]

With no options, runs every allocator workload at 1, 2, 4 and 8 threads against every
allocator (quick mode, about two minutes), prints throughput ratios against mimalloc
(ratio > 1: faster than mimalloc) with peak RSS, and writes report.md and chart.svg to
<target>/tessera-bench/; then the C mode at 1, 2 and 4 threads (about a minute; a section
of report.md and chart-c.svg); then compares the scheduler with Go (when `go` is
installed), may and tokio on spawn-join, ping-pong, yield, select-many and parked (about
one minute more). --workloads, --allocators or --threads narrow the run to the Rust
allocator table.

OPTIONS:
    --workloads a,b     workloads to run [{workloads}]
                        (with --c: [{c_workloads}])
    --allocators a,b    allocators to compare [{allocators}]
                        (with --programs and --c: [{preloads}])
    --threads 1,2       thread counts [default 1,2,4,8; 1,2,4 with --c]
    --reps N            repetitions, median shown [default {quick_reps}; {full_reps} with --full]
    --full              long runs ({full_ms} ms each instead of {quick_ms} ms)
    --duration-ms N     budget of one run, overriding the mode's
    --c                 only the C mode: the allocator workloads written in C (compiled
                        with cc -O2 -pthread, malloc/free through the PLT) under each
                        LD_PRELOAD allocator, glibc with none; libtessera.so is built
                        first with the cargo that runs us; a peer not installed is left
                        out with a note
    --programs          real programs (python3, sqlite3, git, redis with and without
                        pipelining, a threaded C stress) under LD_PRELOAD allocators
    --rust-programs     Rust programs ({rust_programs}) of the crate
                        benches/rust-programs, built with cargo's default release profile,
                        one binary per #[global_allocator]; wall time, peak RSS and minor
                        faults, {rust_reps} rounds by default; --workloads, --allocators and
                        --reps apply (builds for about 2 minutes the first time, then runs
                        for about 4 minutes; not part of the default run)
    --prof-cost         heap profiling's cost in instructions (issue #18): every Rust
                        workload (child processes, tessera against tessera-noprof) and
                        C program (LD_PRELOAD libtessera.so, TESSERA_PROF_RATE default
                        against 0) at 1 thread (xmalloc also 2, Rust rptest too) under valgrind
                        --tool=callgrind, with budgets of {prof_short} and {prof_long} ms
                        (--duration-ms sets the short one); instructions per operation
                        from the difference of the two, the cost per row, the fast
                        path's rows against 3% and the geomean against 1%, per mode
                        (about a minute and a half; skipped without valgrind; per-CPU
                        caches cannot be measured: valgrind refuses rseq)
    --sched             only the scheduler workloads (spawn-join, ping-pong, yield,
                        select-many, parked) against Go (if `go` is installed), may and
                        tokio; the default run ends with them
    -h, --help          this text
",
        workloads = Workload::ALL.map(Workload::name).join(", "),
        c_workloads = c_mode::workloads::names().join(", "),
        allocators = allocators::all_names().join(", "),
        preloads = programs::ALL_PRELOAD_NAMES.join(", "),
        rust_programs = rust_programs::names().join(", "),
        rust_reps = rust_programs::DEFAULT_REPS,
        prof_short = crate::icount::DEFAULT_SHORT.as_millis(),
        prof_long = (crate::icount::DEFAULT_SHORT * crate::icount::LONG_FACTOR).as_millis(),
        quick_reps = QUICK.1,
        full_reps = FULL.1,
        quick_ms = QUICK.0.as_millis(),
        full_ms = FULL.0.as_millis(),
    )
}
