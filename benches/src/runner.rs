//! The comparison: every (workload, threads) x allocator, repeated, each run in a child
//! process; then the table on stdout and a section of `report.md` + `chart.svg` on disk.
//!
//! Order of runs: repetition by repetition over the whole matrix, and within each
//! (workload, threads) the allocators back to back, each repetition in a different order
//! (ABC CBA BCA ACB ..., [`Order::Rotating`], which says why). Slow drifts of a shared
//! machine then hit every allocator of a cell alike, and the per-repetition ratios the report
//! takes the median of compare runs made seconds apart. [`interleave`], [`Conditions`] and
//! [`conclude`] are that order, the run's header and its ending, shared with the C mode
//! (`c_mode.rs`), which runs C programs instead of child processes of this binary, and with
//! the program modes (`programs`, `rust_programs`).

use crate::allocators::{self, BASELINE};
use crate::args::{ChildSpec, RunOptions};
use crate::child;
use crate::report::{self, ReportFile, Results, Row, RowLabel, Samples, Section, Settings};
use std::time::{Duration, Instant};

/// The Rust comparison's section of the report.
pub const SECTION: Section = Section {
    title: "Allocator workloads (Rust, through GlobalAlloc)",
    method: "One child process per run, calling the allocator directly through `GlobalAlloc`; \
             peak RSS is the child's `ru_maxrss`, including the runner's own few MiB",
    chart: "chart.svg",
};

/// Builds the runner again with `--cfg tessera_unhardened`, whose children measure
/// `tessera-unhardened` (`child::spawn`): Tessera's hardening compiled out, so its cost
/// shows beside `tessera` in one run (issue #15). Not started by cargo, an existing build
/// is used as it is; a failed build leaves that column's runs failing with the reason.
fn build_unhardened_runner() {
    match crate::programs::preload::build_unhardened(
        "tessera-bench",
        "this runner without Tessera's hardening, for the tessera-unhardened column",
    ) {
        Some(Ok(())) => {}
        Some(Err(why)) => eprintln!("tessera-bench: building tessera-unhardened failed: {why}"),
        None => eprintln!(
            "tessera-bench: not started by cargo: tessera-unhardened runs in {} as it is",
            std::env::current_exe()
                .map(|own| child::unhardened_exe(&own).display().to_string())
                .unwrap_or_default()
        ),
    }
}

/// Runs the comparison and adds its section to `report`; returns the exit code (1 if any
/// run failed or the report could not be written).
pub fn run(options: &RunOptions, report: &mut ReportFile) -> i32 {
    if options.allocators.contains(&allocators::UNHARDENED) {
        build_unhardened_runner();
    }
    let mut rows: Vec<Row> = options
        .workloads
        .iter()
        .flat_map(|&workload| {
            options.threads.iter().map(move |&threads| Row {
                workload,
                threads,
                cells: vec![Samples::default(); options.allocators.len()],
            })
        })
        .collect();

    let conditions = Conditions::announce(
        rows.len() * options.allocators.len() * options.reps,
        &format!(
            "{} workload(s) x {} thread count(s) x {} allocator(s) x {} rep(s)",
            options.workloads.len(),
            options.threads.len(),
            options.allocators.len(),
            options.reps
        ),
        Some(options.duration),
    );
    interleave(
        &mut rows,
        &options.allocators,
        options.reps,
        Order::Rotating { first: 0 },
        |row| format!("{:<13} t={:<2}", row.workload.name(), row.threads),
        |row, i| {
            let result = child::spawn(&ChildSpec {
                allocator: options.allocators[i],
                workload: row.workload,
                threads: row.threads,
                duration: options.duration,
            });
            let line = progress(&result);
            row.cells[i].push(result);
            line
        },
    );
    let results = Results {
        section: SECTION,
        allocators: options.allocators.clone(),
        baseline: baseline(&options.allocators),
        rows,
        settings: conditions.settings(options.reps, options.duration, options.full),
    };
    let cost = report::feature_costs(&results, |row| {
        row.workload == crate::workloads::Workload::Fastpath
    });
    conclude(&results, &cost, report)
}

/// The allocator ratios are taken against: mimalloc when it is one of `allocators`, else
/// the first.
pub fn baseline(allocators: &[&'static str]) -> &'static str {
    if allocators.contains(&BASELINE) {
        BASELINE
    } else {
        allocators[0]
    }
}

/// The progress line's figure for one run: its rate and peak RSS, or why it failed.
pub fn progress(result: &Result<crate::protocol::ChildReport, String>) -> String {
    match result {
        Ok(r) => format!(
            "{:>8} ops/s {:>8.1} MiB",
            report::human_rate(r.ops_per_sec()),
            r.maxrss_kib as f64 / 1024.0
        ),
        Err(why) => format!("FAILED: {why}"),
    }
}

/// In what order the columns of a cell run within one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Forward, then backward, then forward from one column later, and so on (ABC CBA BCA
    /// ACB CAB BAC ...), from column `first` in the first repetition, so that no column
    /// always runs first, nor always right after the same one (over 2n repetitions each
    /// runs twice in every position, and after each of its neighbours in the cycle; with
    /// up to three columns, after every other). A run can leave the machine warm or cold for
    /// the next: the page cache and CPU frequency for whole programs, and the kernel's free
    /// huge pages for any program that faults many in. On a VM whose balloon reports free
    /// memory to the host, a program that follows one that just freed huge pages gets them
    /// back hot, and one that follows a program of 4 KiB pages faults in huge pages the host
    /// must back first: with every repetition in the same order, the C mode's burst ran at
    /// 0.20-0.31x mimalloc for the tessera build that came right after mimalloc and at
    /// 2.2-4.1x for the one after that, the same code either way (session 12); rotating
    /// alone keeps who follows whom. `first` is the column whose output the others are
    /// checked against.
    Rotating {
        /// The column that runs first in the first repetition.
        first: usize,
    },
}

impl Order {
    /// The column indexes of repetition `rep` (1-based) over `n` columns, in running order.
    pub fn columns(self, n: usize, rep: usize) -> Vec<usize> {
        let Order::Rotating { first } = self;
        let offset = first + (rep - 1) / 2;
        let forward = (0..n).map(|k| (offset + k) % n);
        if rep % 2 == 1 {
            forward.collect()
        } else {
            forward.rev().collect()
        }
    }
}

/// Runs `run(cell, column)` for every cell and column, `reps` times: repetition by
/// repetition over all cells, and within a cell the columns back to back in `order`. Prints
/// a progress line per run on stderr: `describe(cell)`, the column's name, and what `run`
/// returned.
pub fn interleave<C>(
    cells: &mut [C],
    columns: &[&str],
    reps: usize,
    order: Order,
    describe: impl Fn(&C) -> String,
    mut run: impl FnMut(&mut C, usize) -> String,
) {
    let total = cells.len() * columns.len() * reps;
    let started = Instant::now();
    let mut done = 0;
    for rep in 1..=reps {
        for cell in cells.iter_mut() {
            for i in order.columns(columns.len(), rep) {
                let what = run(cell, i);
                done += 1;
                eprintln!(
                    "[{done:>4}/{total} {:>4.0}s] rep {rep}/{reps} {} {:<9} {what}",
                    started.elapsed().as_secs_f64(),
                    describe(cell),
                    columns[i],
                );
            }
        }
    }
}

/// The state of the machine when a comparison starts, for its report.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    cpus: usize,
    load_before: Option<f64>,
}

impl Conditions {
    /// Prints what is about to run (`total` runs: `matrix`, `duration` each, if they have
    /// a budget) and warnings about a debug build or a busy machine; reads the CPU count and
    /// load average.
    pub fn announce(total: usize, matrix: &str, duration: Option<Duration>) -> Conditions {
        if cfg!(debug_assertions) {
            eprintln!(
                "tessera-bench: warning: this is a debug build; run with --release for figures that mean anything"
            );
        }
        let each = duration
            .map(|d| format!(", {} ms each", d.as_millis()))
            .unwrap_or_default();
        eprintln!("tessera-bench: {total} runs ({matrix}){each}");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let load_before = load_average();
        if let Some(load) = load_before.filter(|&l| l > cpus as f64) {
            eprintln!(
                "tessera-bench: note: load average {load:.2} on {cpus} CPU(s): other work is running, expect a wide spread"
            );
        }
        Conditions { cpus, load_before }
    }

    /// The report's settings, with the load average now as the "after" figure.
    pub fn settings(self, reps: usize, duration: Duration, full: bool) -> Settings {
        Settings {
            reps,
            duration,
            full,
            cpus: self.cpus,
            load: self.load(),
        }
    }

    /// For a legend: the CPU count, and the load average before the runs and now.
    pub fn describe(self) -> String {
        let load = self
            .load()
            .map(|(before, after)| {
                format!("; load average (1 min) {before:.2} before the runs, {after:.2} after")
            })
            .unwrap_or_default();
        format!("; {} CPU(s){load}", self.cpus)
    }

    fn load(self) -> Option<(f64, f64)> {
        self.load_before.zip(load_average())
    }
}

/// Prints the table (and `extra`, e.g. targets, after it), adds the section to `report`
/// and writes it; returns the exit code: 1 if any run failed or the report could not be
/// written.
pub fn conclude<W: RowLabel>(results: &Results<W>, extra: &str, report: &mut ReportFile) -> i32 {
    println!();
    print!("{}", report::render_terminal(results));
    if !extra.is_empty() {
        println!("\n{extra}");
    }
    let md_extra = if extra.is_empty() {
        String::new()
    } else {
        format!("\n```\n{extra}```\n")
    };
    report.add(results, &md_extra);
    match report.write() {
        Ok(line) => println!("\n{line}"),
        Err(why) => {
            eprintln!("tessera-bench: {why}");
            return 1;
        }
    }
    i32::from(!results.failures().is_empty())
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_order_moves_on() {
        let rotating = Order::Rotating { first: 2 };
        assert_eq!(rotating.columns(4, 1), vec![2, 3, 0, 1]);
        assert_eq!(rotating.columns(4, 2), vec![1, 0, 3, 2]);
        assert_eq!(rotating.columns(4, 3), vec![3, 0, 1, 2]);
        assert_eq!(rotating.columns(4, 9), vec![2, 3, 0, 1]);
        // Over 2n repetitions every column runs twice in every position.
        for position in 0..4 {
            let mut seen: Vec<usize> = (1..=8)
                .map(|rep| rotating.columns(4, rep)[position])
                .collect();
            seen.sort();
            assert_eq!(seen, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        }
        // With three columns, each runs right after each other one, twice in six.
        let mut after = [[0; 3]; 3];
        for rep in 1..=6 {
            for pair in (Order::Rotating { first: 0 }).columns(3, rep).windows(2) {
                after[pair[1]][pair[0]] += 1;
            }
        }
        assert_eq!(after, [[0, 2, 2], [2, 0, 2], [2, 2, 0]]);
    }
}
