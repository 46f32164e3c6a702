//! Allocation-heavy Rust programs for `tessera-bench --rust-programs`: the work real crates
//! do (serde_json, rayon, regex, tokio, syn) on data generated here, deterministically, so
//! that the runner can compare the global allocators the way a user meets them: a crate of
//! their own built with cargo's default release profile, the allocator chosen with
//! `#[global_allocator]` (one binary per allocator, `src/bin/`).
//!
//! Each binary takes one workload name and prints one result line on stdout: counts and
//! checksums of what it computed, never a time or an address, so the runner can check that
//! every allocator's run printed exactly what the others did. The runner times the whole
//! process from the outside (generation included: building the input allocates too).

mod channels;
mod json;
mod logs;
mod parse;
mod rng;
mod sort_merge;

/// A workload: runs, and returns its result line.
pub type Workload = fn() -> String;

/// Every workload: its name on the command line and the function that runs it. The runner
/// keeps the same names, in the same order (its unit test reads this file).
pub const WORKLOADS: &[(&str, Workload)] = &[
    ("serde_json", json::run),
    ("rayon", sort_merge::run),
    ("regex", logs::run),
    ("tokio", channels::run),
    ("syn", parse::run),
];

/// The whole of a binary's `main`: runs the workload named by the one argument and prints
/// its result line; returns the exit code (2 for a bad command line).
pub fn main_entry(allocator: &str) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = WORKLOADS.iter().map(|(name, _)| *name).collect();
    let [name] = args.as_slice() else {
        eprintln!(
            "usage: with-{allocator} WORKLOAD (one of {})",
            names.join(", ")
        );
        return 2;
    };
    match WORKLOADS.iter().find(|(n, _)| n == name) {
        Some((_, run)) => {
            println!("{}", run());
            0
        }
        None => {
            eprintln!(
                "with-{allocator}: unknown workload {name:?} (known: {})",
                names.join(", ")
            );
            2
        }
    }
}
