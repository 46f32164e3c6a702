//! The comparison: every (workload, threads) x allocator, repeated, each run in a child
//! process; then the table on stdout and `report.md` + `chart.svg` on disk.
//!
//! Order of runs: repetition by repetition over the whole matrix, and within each
//! (workload, threads) the allocators back to back (ABCD ABCD ...). Slow drifts of a shared
//! machine then hit every allocator of a cell alike, and the per-repetition ratios the report
//! takes the median of compare runs made seconds apart.

use crate::allocators::BASELINE;
use crate::args::{ChildSpec, RunOptions};
use crate::child;
use crate::paths;
use crate::report::{self, Results, Row, Samples, Settings};
use crate::svg;
use std::time::Instant;

/// Runs the comparison; returns the exit code (1 if any run failed).
pub fn run(options: &RunOptions) -> i32 {
    if cfg!(debug_assertions) {
        eprintln!(
            "tessera-bench: warning: this is a debug build; run with --release for figures that mean anything"
        );
    }
    let baseline = if options.allocators.contains(&BASELINE) {
        BASELINE
    } else {
        options.allocators[0]
    };
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

    let total = rows.len() * options.allocators.len() * options.reps;
    eprintln!(
        "tessera-bench: {total} runs ({} workload(s) x {} thread count(s) x {} allocator(s) x {} rep(s)), {} ms each",
        options.workloads.len(),
        options.threads.len(),
        options.allocators.len(),
        options.reps,
        options.duration.as_millis()
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    if let Some(load) = load_before.filter(|&l| l > cpus as f64) {
        eprintln!(
            "tessera-bench: note: load average {load:.2} on {cpus} CPU(s): other work is running, expect a wide spread"
        );
    }
    let started = Instant::now();
    let mut done = 0;
    for rep in 1..=options.reps {
        for row in &mut rows {
            for (i, &allocator) in options.allocators.iter().enumerate() {
                let spec = ChildSpec {
                    allocator,
                    workload: row.workload,
                    threads: row.threads,
                    duration: options.duration,
                };
                let result = child::spawn(&spec);
                done += 1;
                let what = match &result {
                    Ok(r) => format!(
                        "{:>8} ops/s {:>8.1} MiB",
                        report::human_rate(r.ops_per_sec()),
                        r.maxrss_kib as f64 / 1024.0
                    ),
                    Err(why) => format!("FAILED: {why}"),
                };
                eprintln!(
                    "[{done:>4}/{total} {:>4.0}s] rep {rep}/{} {:<13} t={:<2} {:<9} {what}",
                    started.elapsed().as_secs_f64(),
                    options.reps,
                    row.workload.name(),
                    row.threads,
                    allocator,
                );
                row.cells[i].push(result);
            }
        }
    }

    let results = Results {
        allocators: options.allocators.clone(),
        baseline,
        rows,
        settings: Settings {
            reps: options.reps,
            duration: options.duration,
            full: options.full,
            cpus,
            load: load_before.zip(load_average()),
        },
    };
    println!();
    print!("{}", report::render_terminal(&results));
    let dir = paths::report_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("report.md"), report::render_markdown(&results)))
        .and_then(|()| std::fs::write(dir.join("chart.svg"), svg::render(&results)));
    match written {
        Ok(()) => println!("\nwrote {} and chart.svg", dir.join("report.md").display()),
        Err(e) => {
            eprintln!(
                "tessera-bench: cannot write the report to {}: {e}",
                dir.display()
            );
            return 1;
        }
    }
    if results.failures().is_empty() { 0 } else { 1 }
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
