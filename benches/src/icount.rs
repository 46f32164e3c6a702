//! `--prof-cost`: what the heap profiler costs, in instructions (issue #18, item 4: sampling
//! at the default rate against `TESSERA_PROF_RATE=0`, at most 1% on the geomean and 3% on
//! the fast path, in the Rust and the C mode).
//!
//! The wall-time lines of the ordinary tables (`report::profiling_cost`) cannot resolve 1%
//! on a shared machine, where a row swings by tens of percent; an instruction count does not
//! swing. Every workload of both modes runs under `valgrind --tool=callgrind` with profiling
//! on and off: the Rust workloads in this binary's child processes (`tessera` and
//! `tessera-noprof`, as in the Rust table), the C programs under `LD_PRELOAD` of
//! libtessera.so (`tessera` and `tessera-noprof`, as in the C mode). Callgrind counts the
//! instructions of the whole process, start-up and exit included, while a workload counts
//! operations for a wall-time budget; so each variant runs twice, with a short and a long
//! budget, and instructions per operation are the difference of the two runs' instructions
//! over the difference of their operations ([`per_op`]): start-up, exit and whatever else
//! does not grow with the work cancel out. A program whose work does not follow the budget
//! (the C burst: five rounds whatever the budget) does the same operations in both runs;
//! its figure is then the whole run's instructions over its operations, start-up included.
//!
//! Sampling intervals are random (seeded per thread cache), so the "on" counts move a
//! little from one invocation to the next (by the samples a run happened to take); "off"
//! counts of one thread hardly move. Valgrind runs one thread at a time, so how the threads
//! of the two-thread rows take turns (and thread-churn's few hundred operations) moves
//! their figures by up to a point or two between invocations; the one-thread rows move by
//! hundredths of a point (the fast path's not at all). Valgrind refuses `rseq`, so Tessera runs on thread caches under it:
//! the per-CPU caches (`TESSERA_CACHE=percpu`) cannot be measured this way.

use crate::args::ChildSpec;
use crate::c_mode::{self, Program};
use crate::child;
use crate::paths;
use crate::programs::measure;
use crate::programs::native;
use crate::programs::preload::{self, Preload};
use crate::protocol::ChildReport;
use crate::report::{self, ReportFile};
use crate::stats::geomean;
use crate::workloads::Workload;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The short budget by default; the long one is [`LONG_FACTOR`] times it. Under callgrind
/// a workload does some 50 times less work per second, so 200 ms is already a few hundred
/// thousand operations of the fast path.
pub const DEFAULT_SHORT: Duration = Duration::from_millis(200);
/// The long budget over the short one.
pub const LONG_FACTOR: u32 = 3;
/// The report section's title.
pub const TITLE: &str = "Heap profiling's cost in instructions (--prof-cost, issue #18)";
/// Rust workloads also run with 2 threads, where one thread does not show what they are
/// about: remote frees.
const RUST_THREADED: [Workload; 2] = [Workload::Xmalloc, Workload::Rptest];
/// The same for the C programs.
const C_THREADED: [&str; 1] = ["xmalloc"];
/// The variable `fastpath.c` reads to run one size alone.
const FASTPATH_SIZE_VAR: &str = "TESSERA_BENCH_FASTPATH_SIZE";

/// Which table a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The Rust workloads, in child processes of this binary.
    Rust,
    /// The C programs under `LD_PRELOAD`.
    C,
}

impl Mode {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rust => "Rust",
            Mode::C => "C",
        }
    }
}

/// What callgrind and the workload said about one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Instructions the whole process executed (callgrind's `Ir`).
    pub instructions: u64,
    /// Operations the workload reported.
    pub ops: u64,
}

/// Instructions per operation of one variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerOp {
    /// The figure.
    pub instructions: f64,
    /// Whether it is a whole run's (start-up included), because the two budgets did the
    /// same operations; otherwise it is the two runs' difference.
    pub whole_run: bool,
}

/// How many times a variant's pair of runs is tried when its long run did no more work
/// than its short one.
const MEASURE_ATTEMPTS: usize = 3;

/// Instructions per operation from a run with the short budget and one with the long:
/// (instructions of the long - of the short) / (operations of the long - of the short),
/// which leaves out everything that does not grow with the work. When both did the same
/// operations (the workload does a fixed amount of work), the long run's instructions over
/// its operations.
pub fn per_op(short: Count, long: Count) -> Result<PerOp, String> {
    if long.ops == short.ops && long.ops > 0 {
        return Ok(PerOp {
            instructions: long.instructions as f64 / long.ops as f64,
            whole_run: true,
        });
    }
    if long.ops <= short.ops || long.instructions <= short.instructions {
        return Err(format!(
            "the long run did less than the short ({} ops, {} instructions against {} ops, \
             {} instructions)",
            long.ops, long.instructions, short.ops, short.instructions
        ));
    }
    Ok(PerOp {
        instructions: (long.instructions - short.instructions) as f64
            / (long.ops - short.ops) as f64,
        whole_run: false,
    })
}

/// One row of the table: a workload at a thread count, measured with profiling off and on.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its table.
    pub mode: Mode,
    /// The workload (a C fastpath row per size: `fastpath-1024`).
    pub name: String,
    /// Threads.
    pub threads: usize,
    /// Whether it is one of the fast path's rows (held to the 3% bar).
    pub fast_path: bool,
    /// With `TESSERA_PROF_RATE=0`, or why there is no figure.
    pub off: Result<PerOp, String>,
    /// At the default rate, or why there is no figure.
    pub on: Result<PerOp, String>,
}

impl Row {
    /// The instructions sampling adds, as a fraction of those without it.
    pub fn cost(&self) -> Option<f64> {
        match (&self.off, &self.on) {
            (Ok(off), Ok(on)) if off.instructions > 0.0 => {
                Some(on.instructions / off.instructions - 1.0)
            }
            _ => None,
        }
    }

    fn label(&self) -> String {
        format!("{} t={}", self.name, self.threads)
    }
}

/// The table of `rows` and, per mode, the verdicts against the issue's bars: the fast
/// path's rows against 3%, the geomean of every row's on/off ratio against 1%.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<5} {:<15} {:>2} {:>12} {:>12} {:>8}\n",
        "mode", "workload", "t", "Ir/op off", "Ir/op on", "cost"
    );
    let figure = |p: &Result<PerOp, String>| match p {
        Ok(p) => format!(
            "{:.2}{}",
            p.instructions,
            if p.whole_run { "*" } else { "" }
        ),
        Err(_) => "FAILED".to_string(),
    };
    for row in rows {
        let _ = writeln!(
            out,
            "{:<5} {:<15} {:>2} {:>12} {:>12} {:>8}",
            row.mode.name(),
            row.name,
            row.threads,
            figure(&row.off),
            figure(&row.on),
            row.cost()
                .map_or("n/a".to_string(), |c| format!("{:+.2}%", c * 100.0)),
        );
    }
    for mode in [Mode::Rust, Mode::C] {
        let of_mode: Vec<&Row> = rows.iter().filter(|r| r.mode == mode).collect();
        if of_mode.is_empty() {
            continue;
        }
        let fast: Vec<(String, Option<f64>)> = of_mode
            .iter()
            .filter(|r| r.fast_path)
            .map(|r| (r.label(), r.cost()))
            .collect();
        let ratios: Vec<f64> = of_mode
            .iter()
            .filter_map(|r| r.cost())
            .map(|c| 1.0 + c)
            .collect();
        let _ = writeln!(out, "{}, {} rows:", mode.name(), of_mode.len());
        out.push_str(&report::judge(
            &fast,
            geomean(&ratios).map(|g| g - 1.0),
            "  ",
            &report::PROFILING,
        ));
    }
    if rows.iter().any(|r| {
        [&r.off, &r.on]
            .iter()
            .any(|p| p.as_ref().is_ok_and(|p| p.whole_run))
    }) {
        out.push_str(
            "*: the whole run's instructions over its operations, start-up included (the \
             program does the same work whatever the budget)\n",
        );
    }
    for row in rows {
        for (variant, p) in [("off", &row.off), ("on", &row.on)] {
            if let Err(why) = p {
                let _ = writeln!(
                    out,
                    "FAILED {} {} {variant}: {why}",
                    row.mode.name(),
                    row.label()
                );
            }
        }
    }
    out
}

/// The instruction count callgrind reports in its log (`==PID== Collected : N`).
pub fn collected(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

/// One variant of a row: its program, with profiling on or off.
#[derive(Debug)]
enum Variant<'a> {
    /// A Rust workload in a child of this binary, on `allocator` (`tessera` or
    /// `tessera-noprof`).
    Rust {
        workload: Workload,
        threads: usize,
        allocator: &'static str,
    },
    /// A C program under `preload` (`tessera` or `tessera-noprof`); a fastpath row runs
    /// its size (`key`) alone.
    C {
        program: &'static Program,
        key: Option<&'static str>,
        threads: usize,
        executable: &'a Path,
        preload: Preload,
    },
}

impl Variant<'_> {
    /// The command that runs it with `budget`. `TESSERA_PROF_RATE` is removed from the
    /// environment, so "on" is the default rate ("off" sets 0 itself).
    fn command(&self, budget: Duration) -> Command {
        match self {
            Variant::Rust {
                workload,
                threads,
                allocator,
            } => {
                let child = ChildSpec {
                    allocator,
                    workload: *workload,
                    threads: *threads,
                    duration: budget,
                };
                let mut command = Command::new(
                    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tessera-bench")),
                );
                command
                    .args(child.to_args())
                    .env_remove("TESSERA_PROF_RATE");
                command
            }
            Variant::C {
                key,
                threads,
                executable,
                preload,
                ..
            } => {
                let mut command = Command::new(executable);
                command.env_remove("TESSERA_PROF_RATE");
                c_mode::command_for(&mut command, *threads, budget, preload);
                if let Some(size) = key {
                    command.env(FASTPATH_SIZE_VAR, size);
                }
                command
            }
        }
    }

    /// The operations a run's stdout reports.
    fn ops(&self, stdout: &str) -> Result<u64, String> {
        match self {
            Variant::Rust { .. } => ChildReport::find_in(stdout).map(|r| r.ops),
            Variant::C {
                program,
                key,
                threads,
                preload,
                ..
            } => {
                let line = c_mode::checked_line(stdout, program, *threads, preload)?;
                line.figure(*key)
                    .map(|(ops, _)| ops)
                    .ok_or_else(|| format!("no figure {key:?} in the result line"))
            }
        }
    }
}

/// Runs `--prof-cost` with `short` as the short budget; returns the exit code (0; 1 if a
/// run failed or the report could not be written; 2 without valgrind).
pub fn run(short: Duration, report: &mut ReportFile) -> i32 {
    let long = short * LONG_FACTOR;
    let version = Command::new("valgrind").arg("--version").output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => {
            let why = "valgrind is not installed (Debian: apt-get install valgrind): \
                       --prof-cost counts instructions with callgrind";
            eprintln!("tessera-bench: not run: {why}");
            report.add_note(TITLE, &format!("Not run: {why}."));
            let _ = report.write();
            return 2;
        }
    };
    let scratch = paths::report_dir().join("prof-cost");
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("tessera-bench: cannot make {}: {e}", scratch.display());
        return 1;
    }
    let mut notes = vec![
        "valgrind refuses rseq: Tessera runs on thread caches under it, so the per-CPU \
         caches (TESSERA_CACHE=percpu) are not measured here"
            .to_string(),
    ];
    let mut plan = rust_plan();
    let c = c_plan(&mut notes);
    plan.extend(c.iter().map(|(spec, _)| spec.clone()));
    let started = Instant::now();
    let total = plan.len() * 4;
    eprintln!(
        "tessera-bench: --prof-cost: {total} runs under callgrind ({} rows x off/on x {} and \
         {} ms)",
        plan.len(),
        short.as_millis(),
        long.as_millis()
    );
    let mut rows = Vec::new();
    let mut done = 0;
    for spec in &plan {
        let mut figures = Vec::new();
        for on in [false, true] {
            let executable = c
                .iter()
                .find(|(s, _)| s == spec)
                .map(|(_, exe)| exe.as_path());
            let variant = variant(spec, executable, on);
            // A pair whose long run did no more than the short (a workload of a few hundred
            // operations, its threads taking turns under valgrind on a busy machine: seen
            // with thread-churn) is measured again, twice at most.
            let mut figure = Err(String::new());
            for attempt in 0..MEASURE_ATTEMPTS {
                let mut counts = Vec::new();
                for budget in [short, long] {
                    let result = count(&variant, budget, &scratch);
                    if attempt == 0 {
                        done += 1;
                    }
                    eprintln!(
                        "[{done:>3}/{total} {:>4.0}s] {} {:<15} t={} prof {:<3} {:>4} ms: {}",
                        started.elapsed().as_secs_f64(),
                        spec.mode.name(),
                        spec.name,
                        spec.threads,
                        if on { "on" } else { "off" },
                        budget.as_millis(),
                        match &result {
                            Ok(c) => format!("{} Ir, {} ops", c.instructions, c.ops),
                            Err(why) => format!("FAILED: {why}"),
                        }
                    );
                    counts.push(result);
                }
                let (retry, result) = match (&counts[0], &counts[1]) {
                    (Ok(s), Ok(l)) => {
                        let result = per_op(*s, *l);
                        (result.is_err(), result)
                    }
                    (Err(why), _) | (_, Err(why)) => (false, Err(why.clone())),
                };
                figure = result;
                if !retry {
                    break;
                }
            }
            figures.push(figure);
        }
        let on = figures.pop().expect("two variants");
        let off = figures.pop().expect("two variants");
        rows.push(Row {
            mode: spec.mode,
            name: spec.name.clone(),
            threads: spec.threads,
            fast_path: spec.fast_path,
            off,
            on,
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let table = render(&rows);
    let legend = format!(
        "{version}, callgrind; budgets {} and {} ms; instructions per operation with \
         TESSERA_PROF_RATE=0 (off) and at the default rate (on); cost = on / off - 1",
        short.as_millis(),
        long.as_millis()
    );
    println!("\n{TITLE}\n{legend}\n\n{table}");
    for note in &notes {
        println!("note: {note}");
    }
    let md_notes: String = notes.iter().map(|n| format!("- {n}\n")).collect();
    report.add_note(
        TITLE,
        &format!(
            "{legend}. Each row runs each variant under `valgrind --tool=callgrind` with both \
             budgets; instructions per operation = (Ir of the long run - Ir of the short) / \
             (ops of the long - ops of the short), which leaves out start-up and exit.\n\n\
             ```\n{table}```\n\n{md_notes}"
        ),
    );
    let failed = rows.iter().any(|r| r.off.is_err() || r.on.is_err());
    match report.write() {
        Ok(line) => println!("\n{line}"),
        Err(why) => {
            eprintln!("tessera-bench: {why}");
            return 1;
        }
    }
    i32::from(failed)
}

/// One row to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    mode: Mode,
    name: String,
    threads: usize,
    fast_path: bool,
    /// The Rust workload (Rust rows).
    workload: Option<Workload>,
    /// The C program and, for a fastpath row, its size's key (C rows).
    program: Option<(&'static Program, Option<&'static str>)>,
}

/// The Rust rows: every workload with 1 thread, [`RUST_THREADED`] with 2 too.
fn rust_plan() -> Vec<Spec> {
    let one = Workload::ALL.iter().map(|&w| (w, 1));
    let two = RUST_THREADED.iter().map(|&w| (w, 2));
    one.chain(two)
        .map(|(workload, threads)| Spec {
            mode: Mode::Rust,
            name: workload.name().to_string(),
            threads,
            fast_path: workload == Workload::Fastpath,
            workload: Some(workload),
            program: None,
        })
        .collect()
}

/// The C rows, each with its program's executable: every program with 1 thread (fastpath
/// one row per size, run alone), [`C_THREADED`] with 2 too. Empty (with a note) without a C
/// compiler.
fn c_plan(notes: &mut Vec<String>) -> Vec<(Spec, PathBuf)> {
    let Some(cc) = native::compiler() else {
        notes.push("no C compiler (cc, gcc or clang): the C rows are not measured".into());
        return Vec::new();
    };
    let programs: Vec<&'static Program> = c_mode::PROGRAMS.iter().collect();
    let (built, _) = c_mode::build_all(&cc, &programs, notes);
    // Built here (or found, outside cargo); `c_variant` takes the preloads by name.
    if preload::available(&["tessera"], notes).is_empty() {
        notes.push("no libtessera.so: the C rows are not measured".into());
        return Vec::new();
    }
    let mut plan = Vec::new();
    for (program, exe) in built {
        let threads: &[usize] = if C_THREADED.contains(&program.name) {
            &[1, 2]
        } else {
            &[1]
        };
        for &t in threads {
            for series in program.series {
                plan.push((
                    Spec {
                        mode: Mode::C,
                        name: series.name.to_string(),
                        threads: t,
                        fast_path: series.per_op_ns,
                        workload: None,
                        program: Some((program, series.key)),
                    },
                    exe.clone(),
                ));
            }
        }
    }
    plan
}

/// A row's variant with profiling on or off: for a Rust row the Rust table's `tessera` or
/// `tessera-noprof`, for a C row the C mode's (libtessera.so with `TESSERA_PROF_RATE` unset
/// or 0).
fn variant<'a>(spec: &Spec, executable: Option<&'a Path>, on: bool) -> Variant<'a> {
    let name = if on { "tessera" } else { "tessera-noprof" };
    match (spec.workload, spec.program, executable) {
        (Some(workload), _, _) => Variant::Rust {
            workload,
            threads: spec.threads,
            allocator: name,
        },
        (None, Some((program, key)), Some(executable)) => Variant::C {
            program,
            key,
            threads: spec.threads,
            executable,
            preload: Preload::named(name),
        },
        _ => unreachable!("a Rust row has its workload, a C row its program and executable"),
    }
}

/// One run of `variant` with `budget` under callgrind, its log and output file in
/// `scratch`.
fn count(variant: &Variant<'_>, budget: Duration, scratch: &Path) -> Result<Count, String> {
    let program = variant.command(budget);
    let log = scratch.join("callgrind.log");
    let out = scratch.join("callgrind.out");
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(program.get_program())
        .args(program.get_args());
    for (key, value) in program.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    // Valgrind's start-up reads the program's symbols, and the program runs some 50 times
    // slower: more room than a plain run's limit.
    let measured = measure::run(command, child::time_limit(budget) * 3);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&out);
    let measured = measured?;
    let instructions = collected(&log_text).ok_or("callgrind's log has no \"Collected :\" line")?;
    let ops = variant.ops(&measured.stdout)?;
    Ok(Count { instructions, ops })
}
