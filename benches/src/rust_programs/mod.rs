//! `--rust-programs`: Rust programs built the way a user builds them, measured from the
//! outside (BENCHMARKS.md, "Measure as an outsider would"; issue #13). The crate
//! `benches/rust-programs/` is a workspace of its own with cargo's default release profile
//! (no LTO, default codegen units) and one binary per `#[global_allocator]` (`with-tessera`,
//! `with-mimalloc` from the `mimalloc` crate, `with-jemalloc` from `tikv-jemallocator`,
//! `with-system` on glibc); each takes a workload name: serde_json, rayon, regex, tokio,
//! syn, on data it generates itself.
//!
//! The runner builds the binaries of the allocators asked for into
//! `<target>/rust-programs/`, then runs every (workload, allocator) N times, allocators in a
//! rotating order within each round ([`Order::Rotating`]), and takes from `wait4` the wall
//! time, peak RSS and minor page faults of each process (`programs::measure`). Every run must
//! print what the first one of its workload printed (the system allocator's, which runs
//! first). The table (`table.rs`) gives medians and ratios against mimalloc, and marks
//! tessera against the issue's targets.

pub mod table;

use crate::allocators;
use crate::args::RustProgramOptions;
use crate::cargo;
use crate::paths;
use crate::programs::Expected;
use crate::programs::measure;
use crate::programs::table::{ProgramCell, ProgramRow, Unit};
use crate::report;
use crate::runner::{self, Conditions, Order};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workloads of the crate, in table order, with what each does. The crate's own list
/// (`WORKLOADS` in `benches/rust-programs/src/lib.rs`) has the same names in the same order.
pub const WORKLOADS: &[(&str, &str)] = &[
    (
        "serde_json",
        "48 MiB of generated JSON parsed into serde_json::Value 3 times, serialised back, \
         parsed into #[derive(Deserialize)] structs",
    ),
    (
        "rayon",
        "1M Strings par_sort-ed, then indexed by parallel HashMap chunks merged into one",
    ),
    (
        "regex",
        "400k generated log lines matched with named captures into owned structs in a BTreeMap",
    ),
    (
        "tokio",
        "4 rounds of 100k tasks x 8 boxed messages through bounded mpsc channels (multi-thread runtime)",
    ),
    (
        "syn",
        "syn::parse_file of a generated 3 MiB Rust source, 5 times",
    ),
];

/// Repetitions by default.
pub const DEFAULT_REPS: usize = 5;

/// The crate, from the workspace root.
const CRATE: &str = "benches/rust-programs";

/// The longest one run may take before it is killed as hung.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The allocator whose output the others are checked against, when it is compared.
const REFERENCE: &str = "system";

/// The workload names, in table order.
pub fn names() -> Vec<&'static str> {
    WORKLOADS.iter().map(|(name, _)| *name).collect()
}

/// One workload's row and its expected output, for [`runner::interleave`].
#[derive(Debug)]
struct Cell {
    row: ProgramRow,
    expected: Expected,
}

/// Runs the mode; returns the exit code: 1 if the build or a run failed (crash, timeout,
/// an output that differs), else 0.
pub fn run(options: &RustProgramOptions) -> i32 {
    let names = &options.allocators;
    let target = paths::target_dir().join("rust-programs");
    let manifest = paths::workspace_root().join(CRATE).join("Cargo.toml");
    let features = format!("--features={}", names.join(","));
    let started = Instant::now();
    if let Err(why) = build(&manifest, &target, &features) {
        eprintln!("tessera-bench: building the Rust programs failed: {why}");
        return 1;
    }
    let build_time = started.elapsed();
    eprintln!(
        "tessera-bench: built (or found up to date) in {:.1} s",
        build_time.as_secs_f64()
    );
    let binaries: Vec<PathBuf> = names.iter().map(|a| binary(&target, a)).collect();

    let mut cells: Vec<Cell> = options
        .workloads
        .iter()
        .map(|&program| Cell::new(program, names.len()))
        .collect();
    let conditions = Conditions::announce(
        cells.len() * names.len() * options.reps,
        &format!(
            "--rust-programs: {} workload(s) x {} allocator(s) x {} round(s)",
            cells.len(),
            names.len(),
            options.reps
        ),
        None,
    );
    let reference = names.iter().position(|a| *a == REFERENCE).unwrap_or(0);
    let runs = Instant::now();
    runner::interleave(
        &mut cells,
        names,
        options.reps,
        Order::Rotating { first: reference },
        |c| format!("{:<10}", c.row.program),
        |c, i| c.run_under(&binaries[i], names[i], i),
    );
    let run_time = runs.elapsed();
    let rows: Vec<ProgramRow> = cells.into_iter().map(|c| c.row).collect();

    report(
        options,
        &rows,
        conditions,
        &Built {
            manifest: &manifest,
            features: &features,
            build_time,
        },
        run_time,
    );
    eprintln!(
        "tessera-bench: --rust-programs took {:.0} s (build {:.0} s, runs {:.0} s)",
        started.elapsed().as_secs_f64(),
        build_time.as_secs_f64(),
        run_time.as_secs_f64()
    );
    let failed = rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.failure.is_some());
    i32::from(failed)
}

/// Builds the crate's binaries (`features`: one per allocator) into `target` with the
/// cargo that started the runner.
fn build(manifest: &Path, target: &Path, features: &str) -> Result<(), String> {
    let cargo = cargo::started_by().unwrap_or_else(|| "cargo".into());
    cargo::build_release(
        &cargo,
        manifest,
        target,
        &[features],
        "one binary per global allocator, cargo's default release profile",
    )
}

impl Cell {
    /// The row of `program`, with an empty cell for each of `allocators` allocators.
    fn new(program: &'static str, allocators: usize) -> Self {
        Cell {
            row: ProgramRow {
                program,
                unit: Unit::Seconds,
                cells: vec![ProgramCell::default(); allocators],
            },
            expected: Expected::default(),
        }
    }

    /// One run by `binary` (allocator `name`, column `i`), its figures recorded in the
    /// column's cell if its output is the expected one; returns the progress line.
    fn run_under(&mut self, binary: &Path, name: &'static str, i: usize) -> String {
        let outcome = one_run(binary, self.row.program)
            .and_then(|m| self.expected.check(name, &m.stdout).map(|()| m));
        let cell = &mut self.row.cells[i];
        match outcome {
            Ok(m) => {
                cell.values.push(m.wall.as_secs_f64());
                cell.rss_kib.push(m.maxrss_kib);
                cell.minflt.push(m.minflt);
                format!(
                    "{:.3}s {:.1} MiB {} minor faults",
                    m.wall.as_secs_f64(),
                    m.maxrss_kib as f64 / 1024.0,
                    m.minflt
                )
            }
            Err(why) => {
                cell.failure.get_or_insert(why.clone());
                format!("FAILED: {why}")
            }
        }
    }
}

/// How the binaries were built, for the report.
#[derive(Debug)]
struct Built<'a> {
    manifest: &'a Path,
    features: &'a str,
    build_time: Duration,
}

/// Prints the table and the targets, and writes them to `rust-programs.md` with how the
/// binaries were built and what each workload is.
fn report(
    options: &RustProgramOptions,
    rows: &[ProgramRow],
    conditions: Conditions,
    built: &Built<'_>,
    run_time: Duration,
) {
    let names = &options.allocators;
    let base = runner::baseline(names);
    let legend = format!(
        "median of {} round(s), allocators in a rotating order within each; whole-process wall \
         time, peak RSS and minor page faults from wait4 (input generation included); speed = \
         {base}'s time / this time (> 1: faster), RSS and faults ratios = this / {base}'s; \
         spread = (max - min) / median of the rounds, ratios nearer 1 than that are noise{}",
        options.reps,
        conditions.describe()
    );
    let targets = table::targets(names, base, rows);
    println!("\n{legend}");
    print!("{}", table::render(names, base, rows, false));
    println!("\n{targets}");
    let lock =
        std::fs::read_to_string(built.manifest.with_file_name("Cargo.lock")).unwrap_or_default();
    let md = format!(
        "# tessera-bench --rust-programs\n\n{legend}.\n\nBuilt with `cargo build --release \
         {}` ({}): {:.0} s (a few when up to date); the runs: {:.0} s.\n\n{}\n```\n{targets}```\n\n\
         ### Workloads\n\n{}",
        built.features,
        lock_versions(&lock).join(", "),
        built.build_time.as_secs_f64(),
        run_time.as_secs_f64(),
        table::render(names, base, rows, true),
        WORKLOADS
            .iter()
            .filter(|(name, _)| options.workloads.contains(name))
            .map(|(name, what)| format!("- **{name}**: {what}\n"))
            .collect::<String>()
    );
    match report::write_file("rust-programs.md", &md) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(why) => eprintln!("tessera-bench: {why}"),
    }
}

/// The binary of `allocator` in the crate's target directory `target`.
fn binary(target: &Path, allocator: &str) -> PathBuf {
    target.join("release").join(format!("with-{allocator}"))
}

/// One run of `workload` by `binary`.
fn one_run(binary: &Path, workload: &str) -> Result<measure::Measured, String> {
    let mut command = Command::new(binary);
    command.arg(workload);
    measure::run(command, TIMEOUT)
}

/// `name version` of the allocator crates in the crate's Cargo.lock, in the order they
/// appear there.
fn lock_versions(lock: &str) -> Vec<String> {
    let mut out = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.trim().strip_prefix("= ")?;
                Some(value.trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version)) = (field("name"), field("version"))
            && allocators::names()
                .iter()
                .chain(&["tikv-jemallocator", "libmimalloc-sys", "tikv-jemalloc-sys"])
                .any(|a| *a == name)
        {
            out.push(format!("{name} {version}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's `WORKLOADS`, read from its source.
    const CRATE_LIB: &str = include_str!("../../rust-programs/src/lib.rs");

    #[test]
    fn names_match_the_crate() {
        let list = CRATE_LIB
            .split("pub const WORKLOADS")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .expect("the crate has a WORKLOADS list");
        let theirs: Vec<&str> = list
            .split("(\"")
            .skip(1)
            .filter_map(|item| item.split('"').next())
            .collect();
        assert_eq!(theirs, names());
    }

    #[test]
    fn allocator_binaries_are_named_by_allocator() {
        let target = Path::new("/t/rust-programs");
        for name in allocators::names() {
            let bin = binary(target, name);
            assert_eq!(bin, target.join("release").join(format!("with-{name}")));
            // Every allocator of the runner has its binary in the crate.
            let source = paths::workspace_root()
                .join(CRATE)
                .join(format!("src/bin/with-{name}.rs"));
            assert!(source.is_file(), "{}", source.display());
        }
    }

    #[test]
    fn lock_versions_lists_the_allocator_crates() {
        let lock = "version = 4\n\n[[package]]\nname = \"mimalloc\"\nversion = \"0.1.52\"\n\
                    source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
                    [[package]]\nname = \"serde\"\nversion = \"1.0.0\"\n\n\
                    [[package]]\nname = \"tessera\"\nversion = \"0.1.0\"\ndependencies = [\n \"libc\",\n]\n\n\
                    [[package]]\nname = \"tikv-jemallocator\"\nversion = \"0.7.0\"\n";
        assert_eq!(
            lock_versions(lock),
            vec![
                "mimalloc 0.1.52",
                "tessera 0.1.0",
                "tikv-jemallocator 0.7.0"
            ]
        );
        // The committed lock file pins all three.
        let committed = include_str!("../../rust-programs/Cargo.lock");
        let pinned = lock_versions(committed);
        for name in ["mimalloc ", "tessera ", "tikv-jemallocator "] {
            assert!(pinned.iter().any(|p| p.starts_with(name)), "{pinned:?}");
        }
    }
}
