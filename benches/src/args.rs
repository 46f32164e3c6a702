//! The runner's command line, parsed by hand (a dozen flags do not need clap).

use crate::allocators;
use crate::c_mode;
use crate::programs;
use crate::rust_programs;
use crate::workloads::Workload;
use std::time::Duration;

/// Per-run budget and repetitions of the default (quick) mode: the whole default matrix
/// (10 workloads x 4 thread counts x 4 allocators x 3 repetitions) takes about two minutes.
pub const QUICK: (Duration, usize) = (Duration::from_millis(150), 3);
/// The same for `--full`: runs of 2 s, five repetitions.
pub const FULL: (Duration, usize) = (Duration::from_millis(2000), 5);
/// Thread counts run by default (more threads than cores is a case users hit).
pub const DEFAULT_THREADS: [usize; 4] = [1, 2, 4, 8];
/// Thread counts the C mode runs by default (fewer: it has five allocators to run, and the
/// default run must stay a few minutes long).
pub const C_DEFAULT_THREADS: [usize; 3] = [1, 2, 4];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`.
    Help,
    /// The comparison of allocator workloads (the default).
    Run(RunOptions),
    /// Hidden: one run inside a child process.
    Child(ChildSpec),
    /// `--programs`: real programs under `LD_PRELOAD` allocators.
    Programs(ProgramOptions),
    /// `--c`: the allocator workloads written in C, under `LD_PRELOAD` allocators.
    C(COptions),
    /// `--rust-programs`: Rust programs of a crate of their own, one binary per global
    /// allocator.
    RustPrograms(RustProgramOptions),
    /// `--sched`: the scheduler workloads against Go, may and tokio only.
    Sched {
        /// `--full`: more repetitions, and parked at 1,000,000 too.
        full: bool,
        /// `--reps`, if given.
        reps: Option<usize>,
    },
    /// Hidden: the scheduler comparison itself, in a child process that allocates through
    /// Tessera.
    SchedChild {
        /// As for `Sched`.
        full: bool,
        /// As for `Sched`.
        reps: Option<usize>,
    },
    /// Hidden: the parked workload with N coroutines, in a child process.
    SchedParked(usize),
    /// Hidden: the timers workload of one peer with N coroutines, in a child process.
    SchedTimers {
        /// `tessera` or `tokio` (`sched_timers::PEERS`).
        peer: String,
        /// Coroutines.
        n: usize,
    },
}

/// Options of the allocator comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Workloads to run, in table order.
    pub workloads: Vec<Workload>,
    /// Allocator names, in table order.
    pub allocators: Vec<&'static str>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions; the tables show the median.
    pub reps: usize,
    /// Budget of one run.
    pub duration: Duration,
    /// Whether `--full` was given (shown in the report).
    pub full: bool,
    /// Whether the scheduler comparison follows (the default run; not when the run was
    /// narrowed with `--workloads`, `--allocators` or `--threads`).
    pub with_sched: bool,
    /// The C mode, which follows in the default run (not when narrowed, as for the
    /// scheduler).
    pub c: Option<COptions>,
}

/// Options of the C mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct COptions {
    /// C programs to run, in table order.
    pub programs: Vec<&'static c_mode::Program>,
    /// Preload names (`glibc`, `tessera`, ...), in table order.
    pub preloads: Vec<&'static str>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions; the tables show the median.
    pub reps: usize,
    /// Budget of one run.
    pub duration: Duration,
    /// Whether `--full` was given (shown in the report).
    pub full: bool,
}

/// One run, as passed to a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Allocator name.
    pub allocator: &'static str,
    /// Workload.
    pub workload: Workload,
    /// Thread count.
    pub threads: usize,
    /// Budget of the run.
    pub duration: Duration,
}

/// The hidden flag that makes the binary a child.
pub const CHILD_FLAG: &str = "--child";

impl ChildSpec {
    /// The arguments that make a child run this spec (parsed back by [`parse`]).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            CHILD_FLAG.to_string(),
            self.allocator.to_string(),
            self.workload.name().to_string(),
            self.threads.to_string(),
            self.duration.as_millis().to_string(),
        ]
    }
}

/// Options of `--programs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOptions {
    /// Preload names (`glibc`, `mimalloc`, ...), in table order.
    pub preloads: Vec<&'static str>,
    /// Repetitions per (program, preload); the table shows the median.
    pub reps: usize,
    /// Larger inputs.
    pub full: bool,
}

/// Options of `--rust-programs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustProgramOptions {
    /// Workload names, in table order.
    pub workloads: Vec<&'static str>,
    /// Allocator names (the Rust table's), in column order.
    pub allocators: Vec<&'static str>,
    /// Rounds; the table shows the median.
    pub reps: usize,
}

/// The `--help` text.
pub fn usage() -> String {
    format!(
        "\
tessera-bench: compare Tessera with mimalloc, jemalloc and glibc

USAGE:
    cargo run --release -p tessera-bench [-- OPTIONS]

With no options, runs every allocator workload at 1, 2, 4 and 8 threads against every
allocator (quick mode, about two minutes), prints throughput ratios against mimalloc
(ratio > 1: faster than mimalloc) with peak RSS, and writes report.md and chart.svg to
<target>/tessera-bench/; then the C mode at 1, 2 and 4 threads (about a minute; a section
of report.md and chart-c.svg); then compares the scheduler with Go (when `go` is
installed), may and tokio on spawn-join, ping-pong, yield, select-many and parked (about
one minute more). --workloads, --allocators or --threads narrow the run to the Rust
allocator table.

OPTIONS:
    --workloads a,b     workloads to run [{workloads}]
                        (with --c: [{c_workloads}])
    --allocators a,b    allocators to compare [{allocators}]
                        (with --programs and --c: [{preloads}])
    --threads 1,2       thread counts [default 1,2,4,8; 1,2,4 with --c]
    --reps N            repetitions, median shown [default {quick_reps}; {full_reps} with --full]
    --full              long runs ({full_ms} ms each instead of {quick_ms} ms)
    --duration-ms N     budget of one run, overriding the mode's
    --c                 only the C mode: the allocator workloads written in C (compiled
                        with cc -O2 -pthread, malloc/free through the PLT) under each
                        LD_PRELOAD allocator, glibc with none; libtessera.so is built
                        first with the cargo that runs us; a peer not installed is left
                        out with a note
    --programs          real programs (python3, sqlite3, git, redis with and without
                        pipelining, a threaded C stress) under LD_PRELOAD allocators
    --rust-programs     Rust programs ({rust_programs}) of the crate
                        benches/rust-programs, built with cargo's default release profile,
                        one binary per #[global_allocator]; wall time, peak RSS and minor
                        faults, {rust_reps} rounds by default; --workloads, --allocators and
                        --reps apply (builds for about 2 minutes the first time, then runs
                        for about 4 minutes; not part of the default run)
    --sched             only the scheduler workloads (spawn-join, ping-pong, yield,
                        select-many, parked) against Go (if `go` is installed), may and
                        tokio; the default run ends with them
    -h, --help          this text
",
        workloads = Workload::ALL.map(Workload::name).join(", "),
        c_workloads = c_mode::workloads::names().join(", "),
        allocators = allocators::names().join(", "),
        preloads = programs::ALL_PRELOAD_NAMES.join(", "),
        rust_programs = rust_programs::names().join(", "),
        rust_reps = rust_programs::DEFAULT_REPS,
        quick_reps = QUICK.1,
        full_reps = FULL.1,
        quick_ms = QUICK.0.as_millis(),
        full_ms = FULL.0.as_millis(),
    )
}

/// Parses the arguments (without the program name).
pub fn parse(argv: &[String]) -> Result<Command, String> {
    if argv.first().map(String::as_str) == Some(CHILD_FLAG) {
        return parse_child(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some(crate::sched::CHILD_FLAG) {
        let full = argv.iter().any(|a| a == "--full");
        let reps = match argv.iter().position(|a| a == "--reps") {
            Some(i) => Some(positive(
                "--reps",
                argv.get(i + 1).ok_or("--reps needs a value")?,
            )?),
            None => None,
        };
        return Ok(Command::SchedChild { full, reps });
    }
    if argv.first().map(String::as_str) == Some(crate::sched::PARKED_FLAG) {
        let n = argv.get(1).ok_or("the parked child needs N")?;
        return Ok(Command::SchedParked(positive(
            crate::sched::PARKED_FLAG,
            n,
        )?));
    }
    if argv.first().map(String::as_str) == Some(crate::sched_timers::FLAG) {
        let flag = crate::sched_timers::FLAG;
        let (Some(peer), Some(n)) = (argv.get(1), argv.get(2)) else {
            return Err(format!("{flag} needs PEER N"));
        };
        if !crate::sched_timers::PEERS.contains(&peer.as_str()) {
            return Err(format!("{flag}: unknown peer {peer}"));
        }
        return Ok(Command::SchedTimers {
            peer: peer.clone(),
            n: positive(flag, n)?,
        });
    }
    let mut workload_names = None;
    let mut allocator_names = None;
    let mut threads = None;
    let mut reps = None;
    let mut duration = None;
    let (mut full, mut programs, mut sched, mut c) = (false, false, false, false);
    let mut rust_programs = false;

    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--full" => full = true,
            "--programs" => programs = true,
            "--rust-programs" => rust_programs = true,
            "--sched" => sched = true,
            "--c" => c = true,
            "--workloads" => workload_names = Some(value()?),
            "--allocators" => allocator_names = Some(value()?),
            "--threads" => threads = Some(list(&value()?, |t| positive("--threads", t))?),
            "--reps" => reps = Some(positive("--reps", &value()?)?),
            "--duration-ms" => {
                duration = Some(Duration::from_millis(
                    positive("--duration-ms", &value()?)? as u64
                ))
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    if [programs, sched, c, rust_programs]
        .iter()
        .filter(|&&m| m)
        .count()
        > 1
    {
        return Err(
            "--c, --programs, --rust-programs and --sched are separate modes: give one".into(),
        );
    }
    if sched {
        return Ok(Command::Sched { full, reps });
    }
    if rust_programs {
        if threads.is_some() || duration.is_some() || full {
            return Err(
                "--rust-programs runs whole programs: --threads, --duration-ms and \
                        --full do not apply"
                    .into(),
            );
        }
        let known = allocators::names();
        return Ok(Command::RustPrograms(RustProgramOptions {
            workloads: match &workload_names {
                Some(names) => list(names, |w| pick(w, &rust_programs::names(), "Rust program"))?,
                None => rust_programs::names(),
            },
            allocators: match &allocator_names {
                Some(names) => list(names, |a| pick(a, &known, "allocator"))?,
                None => known,
            },
            reps: reps.unwrap_or(rust_programs::DEFAULT_REPS),
        }));
    }
    let narrowed = workload_names.is_some() || allocator_names.is_some() || threads.is_some();
    let (mode_duration, mode_reps) = if full { FULL } else { QUICK };
    let reps = reps.unwrap_or(mode_reps);
    let duration = duration.unwrap_or(mode_duration);
    let c_options = |threads: Option<Vec<usize>>| -> Result<COptions, String> {
        Ok(COptions {
            programs: match &workload_names {
                Some(names) => list(names, |w| {
                    c_mode::workloads::find(w)
                        .ok_or_else(|| unknown("C workload", w, &c_mode::workloads::names()))
                })?,
                None => c_mode::PROGRAMS.iter().collect(),
            },
            preloads: preloads(allocator_names.as_deref())?,
            threads: threads.unwrap_or_else(|| C_DEFAULT_THREADS.to_vec()),
            reps,
            duration,
            full,
        })
    };
    if c {
        return Ok(Command::C(c_options(threads)?));
    }
    if programs {
        return Ok(Command::Programs(ProgramOptions {
            preloads: preloads(allocator_names.as_deref())?,
            reps,
            full,
        }));
    }
    let known = allocators::names();
    let allocators = match &allocator_names {
        Some(names) => list(names, |n| pick(n, &known, "allocator"))?,
        None => known,
    };
    let workloads = match &workload_names {
        Some(names) => list(names, |w| {
            Workload::from_name(w)
                .ok_or_else(|| unknown("workload", w, &Workload::ALL.map(Workload::name)))
        })?,
        None => Workload::ALL.to_vec(),
    };
    Ok(Command::Run(RunOptions {
        with_sched: !narrowed,
        c: if narrowed {
            None
        } else {
            Some(c_options(None)?)
        },
        workloads,
        allocators,
        threads: threads.unwrap_or_else(|| DEFAULT_THREADS.to_vec()),
        reps,
        duration,
        full,
    }))
}

/// The preloads named in `--allocators` (all of them without it), for `--programs` and
/// `--c`.
fn preloads(names: Option<&str>) -> Result<Vec<&'static str>, String> {
    match names {
        Some(names) => list(names, |n| pick(n, programs::ALL_PRELOAD_NAMES, "preload")),
        None => Ok(programs::PRELOAD_NAMES.to_vec()),
    }
}

fn parse_child(rest: &[String]) -> Result<Command, String> {
    let [allocator, workload, threads, millis] = rest else {
        return Err(format!(
            "{CHILD_FLAG} needs ALLOCATOR WORKLOAD THREADS MILLIS"
        ));
    };
    Ok(Command::Child(ChildSpec {
        allocator: pick(allocator, &allocators::names(), "allocator")?,
        workload: Workload::from_name(workload)
            .ok_or_else(|| unknown("workload", workload, &Workload::ALL.map(Workload::name)))?,
        threads: positive("threads", threads)?,
        duration: Duration::from_millis(
            millis
                .parse()
                .map_err(|_| format!("bad millis {millis:?}"))?,
        ),
    }))
}

/// Parses a comma-separated list, rejecting empty items and duplicates.
fn list<T: PartialEq>(
    text: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty item in list {text:?}"));
        }
        let value = item(part)?;
        if out.contains(&value) {
            return Err(format!("{part:?} given twice"));
        }
        out.push(value);
    }
    Ok(out)
}

fn positive(what: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what} wants a positive integer, not {text:?}")),
    }
}

fn pick(name: &str, known: &[&'static str], what: &str) -> Result<&'static str, String> {
    known
        .iter()
        .copied()
        .find(|k| *k == name)
        .ok_or_else(|| unknown(what, name, known))
}

fn unknown(what: &str, name: &str, known: &[&str]) -> String {
    format!("unknown {what} {name:?} (known: {})", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        parse(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn no_arguments_run_everything_in_quick_mode() {
        let Ok(Command::Run(o)) = parse_str("") else {
            panic!()
        };
        assert_eq!(o.workloads, Workload::ALL.to_vec());
        assert_eq!(o.allocators, allocators::names());
        assert_eq!(o.threads, vec![1, 2, 4, 8]);
        assert_eq!((o.duration, o.reps, o.full), (QUICK.0, QUICK.1, false));
        // The C mode follows, with every program and preload at 1, 2 and 4 threads.
        let c = o.c.expect("the default run has the C mode");
        assert_eq!(c.programs, c_mode::PROGRAMS.iter().collect::<Vec<_>>());
        assert_eq!(c.preloads, programs::PRELOAD_NAMES.to_vec());
        assert_eq!(c.threads, vec![1, 2, 4]);
        assert_eq!((c.duration, c.reps, c.full), (QUICK.0, QUICK.1, false));
        // --full and --reps size both parts.
        let Ok(Command::Run(o)) = parse_str("--full --reps 2") else {
            panic!()
        };
        let c = o.c.unwrap();
        assert_eq!((c.duration, c.reps, c.full), (FULL.0, 2, true));
    }

    #[test]
    fn c_mode_takes_its_own_names() {
        let Ok(Command::C(c)) = parse_str(
            "--c --workloads mstress,fastpath --allocators tessera,glibc --threads 3 --reps 2 --duration-ms 40",
        ) else {
            panic!()
        };
        let names: Vec<&str> = c.programs.iter().map(|p| p.name).collect();
        assert_eq!(names, vec!["mstress", "fastpath"]);
        assert_eq!(c.preloads, vec!["tessera", "glibc"]);
        assert_eq!(c.threads, vec![3]);
        assert_eq!((c.reps, c.duration), (2, Duration::from_millis(40)));
        let Ok(Command::C(c)) = parse_str("--c") else {
            panic!()
        };
        assert_eq!(c.threads, C_DEFAULT_THREADS.to_vec());
        assert_eq!(c.programs.len(), c_mode::PROGRAMS.len());
        for (line, needle) in [
            ("--c --workloads growth", "unknown C workload \"growth\""),
            ("--c --allocators system", "unknown preload \"system\""),
            ("--c --workloads larson,larson", "given twice"),
            ("--c --sched", "separate modes"),
            ("--programs --c", "separate modes"),
        ] {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
        // Without --c the same flag takes the Rust workloads' names.
        assert!(parse_str("--workloads growth,thread-churn").is_ok());
    }

    #[test]
    fn flags_select_and_override() {
        let Ok(Command::Run(o)) = parse_str(
            "--workloads larson,fastpath --allocators system,mimalloc --threads=2,1 --full --reps 7",
        ) else {
            panic!()
        };
        assert_eq!(o.workloads, vec![Workload::Larson, Workload::Fastpath]);
        assert_eq!(o.allocators, vec!["system", "mimalloc"]);
        assert_eq!(o.threads, vec![2, 1]);
        assert_eq!((o.duration, o.reps, o.full), (FULL.0, 7, true));
        let Ok(Command::Run(o)) = parse_str("--duration-ms 20") else {
            panic!()
        };
        assert_eq!(o.duration, Duration::from_millis(20));
    }

    #[test]
    fn bad_input_is_an_error_that_names_it() {
        for (line, needle) in [
            ("--workloads nope", "unknown workload \"nope\""),
            ("--allocators system,system", "given twice"),
            ("--threads 0", "positive"),
            ("--threads 1,,2", "empty item"),
            ("--reps", "needs a value"),
            ("--frobnicate", "unknown argument"),
            ("--allocators tcmalloc", "unknown allocator"),
        ] {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn help_sched_and_programs() {
        assert_eq!(parse_str("--threads 2 --help"), Ok(Command::Help));
        assert_eq!(
            parse_str("--sched"),
            Ok(Command::Sched {
                full: false,
                reps: None
            })
        );
        assert_eq!(
            parse_str("--sched --full --reps 3"),
            Ok(Command::Sched {
                full: true,
                reps: Some(3)
            })
        );
        assert_eq!(
            parse_str("--sched-parked 1000"),
            Ok(Command::SchedParked(1000))
        );
        assert!(parse_str("--sched-parked 0").is_err());
        assert_eq!(
            parse_str("--sched-timers tokio 100"),
            Ok(Command::SchedTimers {
                peer: "tokio".into(),
                n: 100
            })
        );
        assert!(parse_str("--sched-timers go 100").is_err());
        assert!(parse_str("--sched-timers tessera").is_err());
        assert_eq!(
            parse_str("--sched-child --full --reps 2"),
            Ok(Command::SchedChild {
                full: true,
                reps: Some(2)
            })
        );
        let Ok(Command::Run(r)) = parse_str("") else {
            panic!()
        };
        assert!(
            r.with_sched,
            "the default run ends with the scheduler comparison"
        );
        let Ok(Command::Run(r)) = parse_str("--threads 2") else {
            panic!()
        };
        assert!(!r.with_sched);
        assert_eq!(r.c, None, "a narrowed run is the Rust table only");
        let Ok(Command::Programs(p)) = parse_str("--programs --allocators glibc,tcmalloc") else {
            panic!()
        };
        assert_eq!(p.preloads, vec!["glibc", "tcmalloc"]);
        let help = usage();
        assert!(help.contains("--workloads"));
        assert!(help.contains("--c "), "{help}");
        assert!(help.contains("glibc-simple, larson, xmalloc"), "{help}");
    }

    #[test]
    fn rust_programs_take_workloads_allocators_and_reps() {
        let Ok(Command::RustPrograms(o)) = parse_str("--rust-programs") else {
            panic!()
        };
        assert_eq!(o.workloads, rust_programs::names());
        assert_eq!(o.allocators, allocators::names());
        assert_eq!(o.reps, rust_programs::DEFAULT_REPS);
        let Ok(Command::RustPrograms(o)) = parse_str(
            "--rust-programs --workloads syn,serde_json --allocators tessera,mimalloc --reps 2",
        ) else {
            panic!()
        };
        assert_eq!(o.workloads, vec!["syn", "serde_json"]);
        assert_eq!(o.allocators, vec!["tessera", "mimalloc"]);
        assert_eq!(o.reps, 2);
        for (line, needle) in [
            (
                "--rust-programs --workloads larson",
                "unknown Rust program \"larson\"",
            ),
            (
                "--rust-programs --allocators glibc",
                "unknown allocator \"glibc\"",
            ),
            ("--rust-programs --threads 2", "do not apply"),
            ("--rust-programs --full", "do not apply"),
            ("--rust-programs --programs", "separate modes"),
        ] {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
        assert!(usage().contains("--rust-programs"));
        // The default run does not include it.
        assert!(matches!(parse_str(""), Ok(Command::Run(_))));
    }

    #[test]
    fn child_spec_round_trips_through_arguments() {
        let spec = ChildSpec {
            allocator: "system",
            workload: Workload::Rptest,
            threads: 4,
            duration: Duration::from_millis(150),
        };
        assert_eq!(parse(&spec.to_args()), Ok(Command::Child(spec)));
        assert!(parse_str("--child system rptest").is_err());
    }
}
