//! `tessera-bench`: the comparison runner (the project's main job) and the pieces the
//! criterion benches share with it.
//!
//! The runner (`cargo run --release -p tessera-bench`) runs every allocator workload of
//! BENCHMARKS.md against every allocator in [`allocators::ALLOCATORS`], one child process
//! per (allocator, workload, threads) so each run's peak RSS is its own, and prints the
//! throughput ratios against mimalloc; then the scheduler workloads against Go, may and
//! tokio ([`sched`]). `main.rs` only calls [`main_entry`].

pub mod allocators;
pub mod args;
pub mod child;
pub mod global;
pub mod paths;
pub mod programs;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod sched;
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
            let code = runner::run(&options, &mut report::ReportFile::default());
            // The default run also compares the scheduler; a run narrowed to some
            // allocators or workloads is about the allocator only.
            if code == 0 && options.with_sched {
                println!();
                sched::run(options.full, None)
            } else {
                code
            }
        }
        args::Command::Programs(options) => programs::run(&options),
        args::Command::Sched { full, reps } => sched::run(full, reps),
        args::Command::SchedChild { full, reps } => sched::run_here(full, reps),
        args::Command::SchedParked(n) => sched::parked_child(n),
    }
}
