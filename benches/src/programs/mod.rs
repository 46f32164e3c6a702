//! `--programs`: real programs nobody here wrote (python3, sqlite3, git), run under each C
//! malloc replacement with `LD_PRELOAD` (Debian's libmimalloc, libjemalloc, libtcmalloc_minimal,
//! our libtessera.so) and under plain glibc. Measures wall time and peak RSS (`wait4`), and
//! checks that every run prints exactly what the glibc run printed: a crash or a wrong result
//! here is a release blocker (BENCHMARKS.md).
//!
//! This mode is separate from the allocator workloads: it links nothing, it only spawns.

pub mod measure;
pub mod preload;
pub mod suite;
pub mod table;

pub use preload::PRELOAD_NAMES;

use crate::args::ProgramOptions;
use crate::paths;
use preload::Preload;
use std::path::PathBuf;
use suite::{PROGRAMS, Program};
use table::{ProgramCell, ProgramRow};

/// Runs the programs mode; returns the exit code (1 if any run failed or printed a different
/// result, 2 if nothing could run).
pub fn run(options: &ProgramOptions) -> i32 {
    let mut preloads = Vec::new();
    let mut notes = Vec::new();
    for name in &options.preloads {
        let preload = Preload::named(name);
        if preload.available() {
            preloads.push(preload);
        } else {
            let lib = preload
                .library
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            notes.push(format!(
                "skipped {name}: {lib} is not there ({})",
                preload.install_hint
            ));
        }
    }
    let mut programs: Vec<(&Program, PathBuf)> = Vec::new();
    for program in PROGRAMS {
        match suite::find_binary(program.binary) {
            Some(binary) => programs.push((program, binary)),
            None => notes.push(format!(
                "skipped {}: `{}` is not installed",
                program.name, program.binary
            )),
        }
    }
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

    let scratch =
        std::env::temp_dir().join(format!("tessera-bench-programs-{}", std::process::id()));
    let mut rows: Vec<ProgramRow> = programs
        .iter()
        .map(|(p, _)| ProgramRow {
            program: p.name,
            cells: vec![ProgramCell::default(); preloads.len()],
        })
        .collect();
    let mut expected: Vec<Option<String>> = vec![None; programs.len()];
    let total = options.reps * programs.len() * preloads.len();
    let mut done = 0;
    eprintln!(
        "tessera-bench --programs: {total} runs ({} program(s) x {} preload(s) x {} rep(s))",
        programs.len(),
        preloads.len(),
        options.reps
    );
    for rep in 1..=options.reps {
        for (p, (program, binary)) in programs.iter().enumerate() {
            // The reference preload runs first in each repetition, so later runs have an
            // output to be checked against; the others follow in table order.
            let order =
                std::iter::once(reference).chain((0..preloads.len()).filter(|&i| i != reference));
            for i in order {
                let preload = &preloads[i];
                let dir = scratch.join(format!("{}-{}-{rep}", program.name, preload.name));
                let result = std::fs::create_dir_all(&dir)
                    .and_then(|()| (program.prepare)(binary, &dir, options.full))
                    .map_err(|e| format!("cannot prepare input: {e}"))
                    .and_then(|mut command| {
                        match &preload.library {
                            Some(lib) => command.env("LD_PRELOAD", lib),
                            None => command.env_remove("LD_PRELOAD"),
                        };
                        measure::run(command)
                    });
                let _ = std::fs::remove_dir_all(&dir);
                let cell = &mut rows[p].cells[i];
                done += 1;
                let line = match result {
                    Ok(m) => {
                        let want = expected[p].get_or_insert_with(|| m.stdout.clone());
                        let line = format!(
                            "{:.3}s {:.1} MiB",
                            m.wall.as_secs_f64(),
                            m.maxrss_kib as f64 / 1024.0
                        );
                        if m.stdout == *want {
                            cell.walls.push(m.wall);
                            cell.rss_kib.push(m.maxrss_kib);
                            line
                        } else {
                            let why = format!(
                                "output differs from {}'s: {:?}",
                                names[reference],
                                first_difference(want, &m.stdout)
                            );
                            cell.failure.get_or_insert(why.clone());
                            format!("WRONG OUTPUT ({why})")
                        }
                    }
                    Err(why) => {
                        cell.failure.get_or_insert(why.clone());
                        format!("FAILED: {why}")
                    }
                };
                eprintln!(
                    "[{done:>3}/{total}] rep {rep}/{} {:<15} {:<9} {line}",
                    options.reps, program.name, preload.name
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "\nwall time (median of {}), time ratio vs {} (< 1: faster), peak RSS",
        options.reps, names[reference]
    );
    print!("{}", table::render(&names, reference, &rows, false));
    let dir = paths::report_dir();
    let md = format!(
        "# tessera-bench --programs\n\nMedian of {} run(s) per cell, preloads interleaved; wall time, \
         time ratio against {} (< 1: faster), peak RSS from `wait4`. Every run's output is \
         checked against {}'s.\n\n{}{}",
        options.reps,
        names[reference],
        names[reference],
        table::render(&names, reference, &rows, true),
        notes
            .iter()
            .map(|n| format!("\nNote: {n}.\n"))
            .collect::<String>()
    );
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("programs.md"), md)) {
        Ok(()) => println!("\nwrote {}", dir.join("programs.md").display()),
        Err(e) => eprintln!("tessera-bench: cannot write {}: {e}", dir.display()),
    }
    let failed = rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.failure.is_some());
    i32::from(failed)
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
