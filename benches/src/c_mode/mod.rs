//! The C mode (`--c`, and part of the default run): the allocator workloads written in C
//! (`c/`), compiled at run time with the system C compiler (`cc -O2 -pthread`, no
//! allocator-specific API: plain `malloc`/`free` through the PLT, and `free` without a size)
//! and run under `LD_PRELOAD` for tessera, mimalloc, jemalloc and tcmalloc-minimal, and
//! glibc with none. This is how outsiders measure an allocator (BENCHMARKS.md, "Measure as
//! an outsider would"), so its table is the one they would see.
//!
//! Each (program, threads, allocator) run is a process of its own; its peak RSS is the
//! program's `ru_maxrss` from `wait4` (`programs::measure`). The order of runs, the ratios
//! against mimalloc, the table, the report section and the chart are the Rust comparison's
//! (`runner.rs`, `report/`, `svg.rs`). A program prints one result line (`line.rs`) with
//! one figure per row it fills (fastpath: one per size) and the library its `malloc` came
//! from, which must be the one preloaded.
//!
//! libtessera.so is built first with the cargo that started the runner, so the C mode
//! measures the allocator of this working tree; a peer library that is not installed is
//! left out with a note.

pub mod line;
pub mod workloads;

pub use workloads::{PROGRAMS, Program, Series};

use crate::args::COptions;
use crate::child;
use crate::paths;
use crate::programs::measure;
use crate::programs::native;
use crate::programs::preload::{self, Preload};
use crate::protocol::ChildReport;
use crate::report::{self, ReportFile, Results, Row, Samples, Section};
use crate::runner::{self, Conditions};
use line::ResultLine;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The C mode's section of the report.
pub const SECTION: Section = Section {
    title: "C mode: C programs, allocators under LD_PRELOAD",
    method: "Each run is one of the C programs of `benches/src/c_mode/c/`, compiled with \
             `cc -O2 -pthread` and calling `malloc`/`free` through the PLT, with the \
             allocator under `LD_PRELOAD` (glibc: none); peak RSS is the program's own \
             `ru_maxrss` from `wait4`",
    chart: "chart-c.svg",
};

/// A (program, threads) cell: one run per allocator and repetition, filling the rows in
/// `rows` (one per series of the program).
#[derive(Debug)]
struct Cell {
    program: &'static Program,
    executable: PathBuf,
    threads: usize,
    rows: Range<usize>,
}

/// Runs the C mode and adds its section to `report`. Returns the exit code: 0, 1 if a run
/// failed (a crash, a failed check, a preload that did not take) or a program did not
/// compile, 2 if nothing could run (no C compiler; the reason is on stderr and in the
/// report).
pub fn run(options: &COptions, report: &mut ReportFile) -> i32 {
    let mut notes = Vec::new();
    let Some(cc) = native::compiler() else {
        let why = "no C compiler (cc, gcc or clang) found: the C mode needs one (Debian: apt-get install gcc)";
        eprintln!("tessera-bench: C mode skipped: {why}");
        report.add_note(SECTION.title, &format!("Not run: {why}."));
        let _ = report.write();
        return 2;
    };
    let (built, broken) = build_all(&cc, &options.programs, &mut notes);
    let preloads = preload::available(&options.preloads, &mut notes);
    for note in &notes {
        eprintln!("note: {note}");
    }
    if built.is_empty() || preloads.is_empty() {
        eprintln!("tessera-bench: nothing to run in the C mode");
        report.add_note(SECTION.title, &markdown_notes(&notes));
        let _ = report.write();
        return if broken { 1 } else { 2 };
    }
    for p in &preloads {
        if let Some(lib) = &p.library {
            eprintln!("{:<9} LD_PRELOAD={}", p.name, lib.display());
        }
    }

    let (mut rows, mut cells) = layout(&built, &options.threads, preloads.len());
    let names: Vec<&'static str> = preloads.iter().map(|p| p.name).collect();
    let conditions = Conditions::announce(
        cells.len() * names.len() * options.reps,
        &format!(
            "C mode: {} program(s) x {} thread count(s) x {} allocator(s) x {} rep(s)",
            built.len(),
            options.threads.len(),
            names.len(),
            options.reps
        ),
        Some(options.duration),
    );
    runner::interleave(
        &mut cells,
        &names,
        options.reps,
        runner::Order::Rotating { first: 0 },
        |cell| format!("{:<13} t={:<2}", cell.program.name, cell.threads),
        |cell, i| cell.run_under(&preloads[i], i, options.duration, &mut rows),
    );
    let results = Results {
        section: SECTION,
        allocators: names.clone(),
        baseline: runner::baseline(&names),
        rows,
        settings: conditions.settings(options.reps, options.duration, options.full),
    };
    let mut extra = targets(&results);
    extra.push_str(&report::feature_costs(&results, |row| {
        row.workload.per_op_ns
    }));
    if !notes.is_empty() {
        extra.push_str(
            &notes
                .iter()
                .map(|n| format!("note: {n}\n"))
                .collect::<String>(),
        );
    }
    let code = runner::conclude(&results, &extra, report);
    if broken { 1 } else { code }
}

/// Compiles each of `programs` with `cc`; the ones that compiled, and whether any did not
/// (a note says why).
pub(crate) fn build_all(
    cc: &Path,
    programs: &[&'static Program],
    notes: &mut Vec<String>,
) -> (Vec<(&'static Program, PathBuf)>, bool) {
    let mut broken = false;
    let mut built = Vec::new();
    for &program in programs {
        match build(cc, program, &paths::report_dir().join("c-mode")) {
            Ok(executable) => built.push((program, executable)),
            Err(why) => {
                broken = true;
                notes.push(format!("{} did not compile: {why}", program.name));
            }
        }
    }
    (built, broken)
}

/// The table's rows, one per (program, threads, series), with `columns` empty cells each,
/// and the cells that fill them, one per (program, threads).
fn layout(
    built: &[(&'static Program, PathBuf)],
    threads: &[usize],
    columns: usize,
) -> (Vec<Row<&'static Series>>, Vec<Cell>) {
    let mut rows: Vec<Row<&'static Series>> = Vec::new();
    let mut cells: Vec<Cell> = Vec::new();
    for (program, executable) in built {
        for &threads in threads {
            let first = rows.len();
            rows.extend(program.series.iter().map(|series| Row {
                workload: series,
                threads,
                cells: vec![Samples::default(); columns],
            }));
            cells.push(Cell {
                program,
                executable: executable.clone(),
                threads,
                rows: first..rows.len(),
            });
        }
    }
    (rows, cells)
}

impl Cell {
    /// One run under `preload` (column `i`), each of its figures pushed into its row of
    /// `rows`; returns the progress line.
    fn run_under(
        &self,
        preload: &Preload,
        i: usize,
        duration: Duration,
        rows: &mut [Row<&'static Series>],
    ) -> String {
        let result = one_run(self, preload, duration);
        let figures: Vec<Result<ChildReport, String>> = self
            .program
            .series
            .iter()
            .map(|series| figure(&result, series))
            .collect();
        // The progress line shows the first row's figure (fastpath's: 16 B).
        let progress = runner::progress(&figures[0]);
        for (row, figure) in rows[self.rows.clone()].iter_mut().zip(figures) {
            row.cells[i].push(figure);
        }
        progress
    }
}

/// Compiles `program` into `dir` (the runner's: `<target>/tessera-bench/c-mode/`).
fn build(cc: &Path, program: &Program, dir: &Path) -> Result<PathBuf, String> {
    native::compile(
        cc,
        program.file,
        program.source,
        &[("harness.h", workloads::HARNESS_H)],
        native::PROGRAM_FLAGS,
        &dir.join(program.file),
    )
}

/// One run of `cell`'s program under `preload`: its result line and peak RSS in KiB.
fn one_run(
    cell: &Cell,
    preload: &Preload,
    duration: Duration,
) -> Result<(ResultLine, u64), String> {
    let mut command = Command::new(&cell.executable);
    command_for(&mut command, cell.threads, duration, preload);
    let measured = measure::run(command, child::time_limit(duration))?;
    let line = checked_line(&measured.stdout, cell.program, cell.threads, preload)?;
    Ok((line, measured.maxrss_kib))
}

/// Completes `command`, which starts a C program (directly, or under a tool such as
/// valgrind that runs the program it is given), into a run with `threads` threads for
/// `duration` under `preload`: the program's arguments, `LD_PRELOAD` and the preload's
/// environment.
pub(crate) fn command_for(
    command: &mut Command,
    threads: usize,
    duration: Duration,
    preload: &Preload,
) {
    command
        .arg(threads.to_string())
        .arg(duration.as_millis().to_string());
    match &preload.library {
        Some(lib) => command.env("LD_PRELOAD", lib),
        None => command.env_remove("LD_PRELOAD"),
    };
    command.envs(preload.env.iter().copied());
}

/// The result line in a run's `stdout`, checked to be `program`'s with `threads` threads,
/// and to have called the `malloc` of `preload`.
pub(crate) fn checked_line(
    stdout: &str,
    program: &Program,
    threads: usize,
    preload: &Preload,
) -> Result<ResultLine, String> {
    let line = ResultLine::find_in(stdout)?;
    if line.workload != program.name || line.threads != threads {
        return Err(format!(
            "the result line is for {} with {} thread(s)",
            line.workload, line.threads
        ));
    }
    line.check_allocator(preload.library.as_deref())?;
    Ok(line)
}

/// One series' figure of a run, as the report takes it.
fn figure(run: &Result<(ResultLine, u64), String>, series: &Series) -> Result<ChildReport, String> {
    let (line, maxrss_kib) = run.as_ref().map_err(Clone::clone)?;
    let (ops, nanos) = line
        .figure(series.key)
        .ok_or_else(|| format!("no figure {:?} in the result line", series.key))?;
    Ok(ChildReport {
        ops,
        nanos,
        maxrss_kib: *maxrss_kib,
        tessera: None,
    })
}

/// The BENCHMARKS.md targets of the C mode for the tessera column against mimalloc's: fast
/// path no slower at every size, every row at least 0.95x, geomean at least 1.1x, and
/// (issue #12) a peak-RSS geomean no higher than mimalloc's. Empty without both columns.
pub fn targets(results: &Results<&'static Series>) -> String {
    let column = |name: &str| results.allocators.iter().position(|a| *a == name);
    let (Some(t), Some(m)) = (column("tessera"), column("mimalloc")) else {
        return String::new();
    };
    let mut out = String::from("targets (BENCHMARKS.md, C mode), tessera against mimalloc:\n");
    let mut check = |what: &str, bar: f64, rows: Vec<&Row<&'static Series>>| {
        if rows.is_empty() {
            return;
        }
        let (mut met, mut misses) = (0, Vec::new());
        for row in &rows {
            match row.ratio(t, m) {
                Some(r) if r >= bar => met += 1,
                Some(r) => misses.push(format!("{} t={} {r:.2}x", row.workload.name, row.threads)),
                None => misses.push(format!("{} t={} no figure", row.workload.name, row.threads)),
            }
        }
        let _ = write!(out, "  {what}: {met} of {} rows", rows.len());
        if misses.is_empty() {
            out.push_str(": pass\n");
        } else {
            let _ = writeln!(out, ", MISS: {}", misses.join(", "));
        }
    };
    check(
        "fast path time <= mimalloc's (ratio >= 1.00x)",
        1.0,
        results
            .rows
            .iter()
            .filter(|r| r.workload.per_op_ns)
            .collect(),
    );
    check(
        "every workload >= 0.95x",
        0.95,
        results.rows.iter().collect(),
    );
    match results.geomean_ratio(t) {
        Some(g) => {
            let verdict = if g >= 1.1 { "pass" } else { "MISS" };
            let _ = writeln!(out, "  geomean {g:.2}x >= 1.10x: {verdict}");
        }
        None => out.push_str("  geomean: no figure\n"),
    }
    match results.geomean_rss_ratio(t) {
        Some(r) => {
            let verdict = if r <= 1.0 { "pass" } else { "MISS" };
            let _ = writeln!(out, "  peak RSS geomean {r:.2}x <= 1.00x: {verdict}");
        }
        None => out.push_str("  peak RSS geomean: no figure\n"),
    }
    out
}

fn markdown_notes(notes: &[String]) -> String {
    notes.iter().map(|n| format!("- {n}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Settings;

    fn ok(ops: u64, maxrss_kib: u64) -> Samples {
        let mut s = Samples::default();
        for _ in 0..3 {
            s.push(Ok(ChildReport {
                ops,
                nanos: 1_000_000_000,
                maxrss_kib,
                tessera: None,
            }));
        }
        s
    }

    /// Three rows; tessera's ops per row as given and its peak RSS `tessera_rss` KiB,
    /// everyone else 100 ops and 4096 KiB.
    fn results_rss(
        allocators: Vec<&'static str>,
        tessera: [u64; 3],
        tessera_rss: u64,
    ) -> Results<&'static Series> {
        let fastpath = &PROGRAMS[0];
        let larson = workloads::find("larson").unwrap();
        let series = [&fastpath.series[0], &fastpath.series[1], &larson.series[0]];
        Results {
            section: SECTION,
            baseline: "mimalloc",
            rows: series
                .iter()
                .zip(tessera)
                .map(|(&s, t)| Row {
                    workload: s,
                    threads: 1,
                    cells: allocators
                        .iter()
                        .map(|&a| {
                            if a == "tessera" {
                                ok(t, tessera_rss)
                            } else {
                                ok(100, 4096)
                            }
                        })
                        .collect(),
                })
                .collect(),
            allocators,
            settings: Settings {
                reps: 3,
                duration: Duration::from_millis(150),
                full: false,
                cpus: 2,
                load: None,
            },
        }
    }

    fn results(allocators: Vec<&'static str>, tessera: [u64; 3]) -> Results<&'static Series> {
        results_rss(allocators, tessera, 4096)
    }

    #[test]
    fn targets_name_every_miss() {
        let r = results(vec!["tessera", "mimalloc"], [120, 90, 96]);
        let t = targets(&r);
        assert!(
            t.contains("fast path time <= mimalloc's (ratio >= 1.00x): 1 of 2 rows, MISS: fastpath-64 t=1 0.90x"),
            "{t}"
        );
        assert!(
            t.contains("every workload >= 0.95x: 2 of 3 rows, MISS: fastpath-64 t=1 0.90x\n"),
            "{t}"
        );
        // (1.2 * 0.9 * 0.96) ^ (1/3) = 1.01
        assert!(t.contains("geomean 1.01x >= 1.10x: MISS"), "{t}");
        let all = targets(&results(vec!["tessera", "mimalloc"], [200, 200, 200]));
        assert!(all.contains("2 of 2 rows: pass"), "{all}");
        assert!(all.contains("geomean 2.00x >= 1.10x: pass"), "{all}");
        assert!(
            all.contains("peak RSS geomean 1.00x <= 1.00x: pass"),
            "{all}"
        );
        let lean = targets(&results_rss(vec!["tessera", "mimalloc"], [1, 1, 1], 2048));
        assert!(
            lean.contains("peak RSS geomean 0.50x <= 1.00x: pass"),
            "{lean}"
        );
        let fat = targets(&results_rss(vec!["tessera", "mimalloc"], [1, 1, 1], 5000));
        assert!(
            fat.contains("peak RSS geomean 1.22x <= 1.00x: MISS"),
            "{fat}"
        );
        assert_eq!(targets(&results(vec!["glibc", "mimalloc"], [1, 1, 1])), "");
    }

    /// The C compiler and a scratch directory `NAME-PID` to build in; `None` (the test
    /// skipped, with a note) without a compiler.
    fn compiler_and_dir(name: &str) -> Option<(PathBuf, PathBuf)> {
        let Some(cc) = native::compiler() else {
            eprintln!("no C compiler: skipped");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        Some((cc, dir))
    }

    #[test]
    fn every_program_compiles_runs_on_glibc_and_reports_its_series() {
        let Some((cc, dir)) = compiler_and_dir("tessera-c-mode") else {
            return;
        };
        for program in PROGRAMS {
            let exe = build(&cc, program, &dir).unwrap();
            for threads in [1, 3] {
                let cell = Cell {
                    program,
                    executable: exe.clone(),
                    threads,
                    rows: 0..program.series.len(),
                };
                let run = one_run(&cell, &Preload::named("glibc"), Duration::from_millis(5));
                let (line, rss) = run.as_ref().unwrap();
                assert!(*rss > 0);
                for series in program.series {
                    let report = figure(&run, series).unwrap();
                    assert!(report.ops > 0 && report.nanos > 0, "{line:?}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fastpath_runs_one_size_alone_when_asked() {
        // `--prof-cost` counts a size's instructions from a run of that size alone.
        let Some((cc, dir)) = compiler_and_dir("tessera-c-one-size") else {
            return;
        };
        let program = &PROGRAMS[0];
        let exe = build(&cc, program, &dir).unwrap();
        let glibc = Preload::named("glibc");
        let run = |size: &str| {
            let mut command = Command::new(&exe);
            command_for(&mut command, 1, Duration::from_millis(5), &glibc);
            command.env("TESSERA_BENCH_FASTPATH_SIZE", size);
            measure::run(command, Duration::from_secs(60))
        };
        let out = run("256").unwrap();
        let line = checked_line(&out.stdout, program, 1, &glibc).unwrap();
        assert_eq!(line.figures.len(), 1, "{line:?}");
        assert!(line.figure(Some("256")).is_some_and(|(ops, _)| ops > 0));
        let err = run("100").unwrap_err();
        assert!(err.contains("is not one of"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
