//! `tessera-bench`: the comparison runner (the project's main job) and the pieces the
//! criterion benches share with it.
//!
//! The runner (`cargo run --release -p tessera-bench`) runs every allocator workload of
//! BENCHMARKS.md against every allocator in [`allocators::ALLOCATORS`], one child process
//! per (allocator, workload, threads) so each run's peak RSS is its own, and prints the
//! throughput ratios against mimalloc; then the same workloads written in C under each
//! `LD_PRELOAD` allocator ([`c_mode`]); then the scheduler workloads against Go, may and
//! tokio ([`sched`]). `--programs` ([`programs`]) and `--rust-programs` ([`rust_programs`])
//! are modes of their own that measure whole programs; `--prof-cost` ([`icount`]) counts
//! the heap profiler's instructions under callgrind. `main.rs` only calls [`main_entry`].

pub mod allocators;
pub mod args;
pub mod c_mode;
pub mod cargo;
pub mod child;
pub mod global;
pub mod icount;
pub mod paths;
pub mod programs;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod rust_programs;
pub mod sched;
pub mod sched_timers;
pub mod spsc;
pub mod stats;
pub mod svg;
pub mod workloads;

/// Parses the command line and runs the requested mode; returns the process exit code.
pub fn main_entry() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("tessera-bench: {message}");
            eprintln!("run with --help for the options");
            return 2;
        }
    };
    match command {
        args::Command::Help => {
            print!("{}", args::usage());
            0
        }
        args::Command::Child(spec) => child::child_main(&spec),
        args::Command::Run(options) => {
            let mut report = report::ReportFile::default();
            let mut code = runner::run(&options, &mut report);
            // The default run also has the C mode and compares the scheduler; a run
            // narrowed to some allocators or workloads is about the Rust table only.
            if let Some(c) = &options.c {
                println!();
                // 2 (nothing could run, e.g. no C compiler) is a note, not a failure.
                if c_mode::run(c, &mut report) == 1 {
                    code = 1;
                }
            }
            if code == 0 && options.with_sched {
                println!();
                sched::run(options.full, None)
            } else {
                code
            }
        }
        args::Command::ProfCost { short } => icount::run(short, &mut report::ReportFile::default()),
        args::Command::Programs(options) => programs::run(&options),
        args::Command::RustPrograms(options) => rust_programs::run(&options),
        args::Command::C(options) => c_mode::run(&options, &mut report::ReportFile::default()),
        args::Command::Sched { full, reps } => sched::run(full, reps),
        args::Command::SchedChild { full, reps } => sched::run_here(full, reps),
        args::Command::SchedParked(n) => sched::parked_child(n),
        args::Command::SchedTimers { peer, n } => sched_timers::child(&peer, n),
    }
}
