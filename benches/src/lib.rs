//! `tessera-bench`: the comparison runner (the project's main job) and the pieces the
//! criterion benches share with it.
//!
//! The runner (`cargo run --release -p tessera-bench`) runs every allocator workload of
//! BENCHMARKS.md against every allocator in [`allocators::ALLOCATORS`], one child process
//! per (allocator, workload, threads) so each run's peak RSS is its own, and prints the
//! throughput ratios against mimalloc. `main.rs` only calls [`main_entry`].

pub mod allocators;
pub mod args;
pub mod child;
pub mod paths;
pub mod programs;
pub mod protocol;
pub mod report;
pub mod runner;
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
        args::Command::Run(options) => runner::run(&options),
        args::Command::Programs(options) => programs::run(&options),
        args::Command::Sched => {
            // The scheduler and stack workloads (spawn-join, ping-pong, yield, parked, echo,
            // stack-acquire) belong to the scheduler issue; they are not faked here.
            eprintln!(
                "tessera-bench: scheduler workloads (--sched) are not available yet; \
                 they arrive with tessera-sched"
            );
            3
        }
    }
}
