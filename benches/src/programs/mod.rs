//! `--programs`: real programs nobody here wrote (python3, sqlite3, git, redis-server) and a
//! threaded C stress program of ours, run under each C malloc replacement with `LD_PRELOAD`
//! (Debian's libmimalloc, libjemalloc, libtcmalloc_minimal, our libtessera.so) and under
//! glibc. Measures wall time (requests/s for redis) and peak RSS (`wait4`), and checks that
//! every run prints exactly what the glibc run printed: a crash or a wrong result here is a
//! release blocker (BENCHMARKS.md). The table gives time and peak-RSS ratios against glibc
//! and mimalloc, and marks tessera against the targets (time ≤ mimalloc's, RSS ≤ glibc's).
//!
//! This mode is separate from the allocator workloads: it links nothing, it only spawns.

pub mod measure;
pub mod native;
pub mod preload;
pub mod redis;
pub mod suite;
pub mod table;

pub use preload::{ALL_PRELOAD_NAMES, PRELOAD_NAMES};

use crate::args::ProgramOptions;
use crate::report;
use crate::runner::{self, Conditions, Order};
use preload::Preload;
use redis::Redis;
use std::path::{Path, PathBuf};
use std::time::Duration;
use suite::{Binary, Kind, PROGRAMS, Program};
use table::{ProgramCell, ProgramRow, Unit};

/// The longest one run to completion may take (quick, `--full`).
const TIMEOUT: (Duration, Duration) = (Duration::from_secs(120), Duration::from_secs(900));

/// A program ready to run: its executable, and what its glibc column preloads.
#[derive(Debug)]
struct Ready {
    program: &'static Program,
    binary: PathBuf,
    redis: Option<Redis>,
    /// For a program that links an allocator itself (Debian's redis-server needs
    /// libjemalloc.so.2), "glibc" means preloading the shim that puts glibc's malloc first;
    /// `Err` when the shim is needed but cannot be built.
    glibc_preload: Result<Option<PathBuf>, String>,
}

/// Runs the programs mode; returns the exit code (1 if any run failed or printed a different
/// result, 2 if nothing could run).
pub fn run(options: &ProgramOptions) -> i32 {
    let mut notes = Vec::new();
    let preloads = preload::available(&options.preloads, &mut notes);
    for p in &preloads {
        if let Some(lib) = &p.library {
            eprintln!("{:<9} LD_PRELOAD={}", p.name, lib.display());
        }
    }
    let programs = ready_programs(&mut notes);
    for note in &notes {
        eprintln!("note: {note}");
    }
    if preloads.is_empty() || programs.is_empty() {
        eprintln!("tessera-bench: nothing to run in --programs mode");
        return 2;
    }
    let names: Vec<&str> = preloads.iter().map(|p| p.name).collect();
    // Outputs are checked against glibc's; without glibc, against the first preload's.
    let reference = names.iter().position(|n| *n == "glibc").unwrap_or(0);
    let timeout = if options.full { TIMEOUT.1 } else { TIMEOUT.0 };

    let scratch =
        std::env::temp_dir().join(format!("tessera-bench-programs-{}", std::process::id()));
    let mut cells: Vec<ProgramCells<'_>> = programs
        .iter()
        .map(|ready| ProgramCells::new(ready, preloads.len()))
        .collect();
    let conditions = Conditions::announce(
        options.reps * programs.len() * preloads.len(),
        &format!(
            "--programs: {} program(s) x {} preload(s) x {} rep(s)",
            programs.len(),
            preloads.len(),
            options.reps
        ),
        None,
    );
    // The reference preload runs first in the first repetition, so later runs have an
    // output to be checked against.
    runner::interleave(
        &mut cells,
        &names,
        options.reps,
        Order::Rotating { first: reference },
        |c| format!("{:<15}", c.ready.program.name),
        |c, i| c.run_under(&preloads[i], i, &scratch, options.full, timeout),
    );
    let _ = std::fs::remove_dir_all(&scratch);

    let rows: Vec<ProgramRow> = cells.into_iter().map(|c| c.row).collect();
    report(&names, reference, &rows, &notes, options.reps, conditions);
    let failed = rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.failure.is_some());
    i32::from(failed)
}

/// The programs of the suite that can run here: installed (or, for the stress program,
/// built), with what their glibc column preloads; notes say which are skipped and why, and
/// which link an allocator themselves.
fn ready_programs(notes: &mut Vec<String>) -> Vec<Ready> {
    let mut shim: Option<Result<PathBuf, String>> = None;
    let mut programs: Vec<Ready> = Vec::new();
    for program in PROGRAMS {
        let found = match program.binary {
            Binary::Installed(name) => {
                suite::find_binary(name).ok_or_else(|| format!("`{name}` is not installed"))
            }
            Binary::Stress => native::build_stress(),
        };
        let redis = match program.kind {
            Kind::Redis { .. } => Some(Redis::find()),
            Kind::Command(_) => None,
        }
        .transpose();
        let (binary, redis) = match (found, redis) {
            (Ok(b), Ok(r)) => (b, r),
            (Err(why), _) | (_, Err(why)) => {
                notes.push(format!("skipped {}: {why}", program.name));
                continue;
            }
        };
        let glibc_preload = match native::linked_allocator(&binary) {
            None => Ok(None),
            Some(lib) => {
                let built = shim.get_or_insert_with(native::build_glibc_shim);
                notes.push(format!(
                    "{} links {lib} itself: its glibc column preloads {} so that it really \
                     runs on glibc's malloc",
                    program.name,
                    built
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "the glibc shim (which could not be built)".into())
                ));
                built.clone().map(Some).map_err(|why| {
                    format!("links {lib} itself, and the glibc shim could not be built: {why}")
                })
            }
        };
        programs.push(Ready {
            program,
            binary,
            redis,
            glibc_preload,
        });
    }
    programs
}

/// Prints the table and the targets, and writes them to `programs.md` with the `notes`.
fn report(
    names: &[&str],
    reference: usize,
    rows: &[ProgramRow],
    notes: &[String],
    reps: usize,
    conditions: Conditions,
) {
    let legend = format!(
        "median of {} repetition(s), allocators interleaved in each; time ratios < 1 are faster \
         (redis: time per request, from requests/s); spread = (max - min) / median of the \
         repetitions, ratios nearer 1 than that are noise; peak RSS from wait4 (redis: the \
         server's){}",
        reps,
        conditions.describe()
    );
    let targets = table::targets(names, rows);
    println!("\n{legend}");
    print!("{}", table::render(names, rows, false));
    println!("\n{targets}");
    let md = format!(
        "# tessera-bench --programs\n\n{legend}. Every run's output is checked against {}'s.\n\n{}\n```\n{targets}```\n{}",
        names[reference],
        table::render(names, rows, true),
        notes
            .iter()
            .map(|n| format!("\nNote: {n}.\n"))
            .collect::<String>()
    );
    match report::write_file("programs.md", &md) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(why) => eprintln!("tessera-bench: {why}"),
    }
}

/// One run of `ready` under `library` (None: no preload): the figure (seconds or
/// requests/s), the peak RSS in KiB, and the output to compare.
fn one_run(
    ready: &Ready,
    library: Option<&Path>,
    env: &[(&str, &str)],
    dir: &Path,
    full: bool,
    timeout: Duration,
) -> Result<(f64, u64, String), String> {
    match (ready.program.kind, &ready.redis) {
        (Kind::Command(prepare), _) => {
            let mut command = std::fs::create_dir_all(dir)
                .and_then(|()| prepare(&ready.binary, dir, full))
                .map_err(|e| format!("cannot prepare input: {e}"))?;
            match library {
                Some(lib) => command.env("LD_PRELOAD", lib),
                None => command.env_remove("LD_PRELOAD"),
            };
            command.envs(env.iter().copied());
            let m = measure::run(command, timeout)?;
            Ok((m.wall.as_secs_f64(), m.maxrss_kib, m.stdout))
        }
        (Kind::Redis { pipeline }, Some(redis)) => {
            let requests = suite::redis_requests(full, pipeline);
            let r = redis.run(library, env, library, requests, pipeline)?;
            Ok((r.rps, r.maxrss_kib, r.stdout))
        }
        (Kind::Redis { .. }, None) => Err("redis binaries not found".into()),
    }
}

/// The output every run of one program must print: the first run's (the reference
/// allocator's, which runs first), and whose it was.
#[derive(Debug, Default)]
pub struct Expected(Option<(String, &'static str)>);

impl Expected {
    /// Checks the output of a run under `allocator`; the first output checked becomes the
    /// expected one. `Err` names the first difference.
    pub fn check(&mut self, allocator: &'static str, stdout: &str) -> Result<(), String> {
        match &self.0 {
            None => {
                self.0 = Some((stdout.to_string(), allocator));
                Ok(())
            }
            Some((want, _)) if want == stdout => Ok(()),
            Some((want, by)) => Err(format!(
                "output differs from {by}'s: {}",
                first_difference(want, stdout)
            )),
        }
    }
}

/// One program's row and what its runs share, for [`runner::interleave`].
#[derive(Debug)]
struct ProgramCells<'a> {
    ready: &'a Ready,
    row: ProgramRow,
    expected: Expected,
    /// Runs so far.
    runs: usize,
}

impl<'a> ProgramCells<'a> {
    /// The row of `ready`, with an empty cell for each of `preloads` preloads.
    fn new(ready: &'a Ready, preloads: usize) -> Self {
        ProgramCells {
            ready,
            row: ProgramRow {
                program: ready.program.name,
                unit: match ready.program.kind {
                    Kind::Command(_) => Unit::Seconds,
                    Kind::Redis { .. } => Unit::RequestsPerSec,
                },
                cells: vec![ProgramCell::default(); preloads],
            },
            expected: Expected::default(),
            runs: 0,
        }
    }

    /// One run under `preload` (column `i`) in a scratch directory below `scratch`, its
    /// figures recorded in the column's cell if its output is the expected one; returns the
    /// progress line.
    fn run_under(
        &mut self,
        preload: &Preload,
        i: usize,
        scratch: &Path,
        full: bool,
        timeout: Duration,
    ) -> String {
        let ready = self.ready;
        let library = if preload.name == "glibc" {
            ready.glibc_preload.clone()
        } else {
            Ok(preload.library.clone())
        };
        // Each cell's runs are counted to name their scratch directories apart.
        self.runs += 1;
        let dir = scratch.join(format!(
            "{}-{}-{}",
            ready.program.name, preload.name, self.runs
        ));
        let result = library
            .and_then(|lib| one_run(ready, lib.as_deref(), preload.env, &dir, full, timeout));
        let _ = std::fs::remove_dir_all(&dir);
        let cell = &mut self.row.cells[i];
        match result {
            Ok((value, rss_kib, stdout)) => {
                let figure = match self.row.unit {
                    Unit::Seconds => format!("{value:.3}s"),
                    Unit::RequestsPerSec => format!("{:.1}k req/s", value / 1000.0),
                };
                match self.expected.check(preload.name, &stdout) {
                    Ok(()) => {
                        cell.values.push(value);
                        cell.rss_kib.push(rss_kib);
                        format!("{figure} {:.1} MiB", rss_kib as f64 / 1024.0)
                    }
                    Err(why) => {
                        cell.failure.get_or_insert(why.clone());
                        format!("WRONG OUTPUT ({why})")
                    }
                }
            }
            Err(why) => {
                cell.failure.get_or_insert(why.clone());
                format!("FAILED: {why}")
            }
        }
    }
}

/// The first line where two outputs differ, for the failure message.
fn first_difference(want: &str, got: &str) -> String {
    let mut lines = want.lines().zip(got.lines());
    match lines.find(|(w, g)| w != g) {
        Some((w, g)) => format!("expected {w:?}, got {g:?}"),
        None => format!(
            "{} line(s) expected, {} printed",
            want.lines().count(),
            got.lines().count()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_checked_against_the_first() {
        let mut expected = Expected::default();
        assert_eq!(expected.check("glibc", "a\nb\n"), Ok(()));
        assert_eq!(expected.check("tessera", "a\nb\n"), Ok(()));
        assert_eq!(
            expected.check("mimalloc", "a\nc\n"),
            Err("output differs from glibc's: expected \"b\", got \"c\"".into())
        );
        assert_eq!(
            expected.check("jemalloc", "a\n"),
            Err("output differs from glibc's: 2 line(s) expected, 1 printed".into())
        );
    }
}
