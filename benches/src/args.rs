//! The runner's command line, parsed by hand (a dozen flags do not need clap).

use crate::allocators;
use crate::programs;
use crate::workloads::Workload;
use std::time::Duration;

/// Per-run budget and repetitions of the default (quick) mode: the whole default matrix
/// (10 workloads x 4 thread counts x 4 allocators x 3 repetitions) takes about two minutes.
pub const QUICK: (Duration, usize) = (Duration::from_millis(150), 3);
/// The same for `--full`: runs of 2 s, five repetitions.
pub const FULL: (Duration, usize) = (Duration::from_millis(2000), 5);
/// Thread counts run by default (more threads than cores is a case users hit).
pub const DEFAULT_THREADS: [usize; 4] = [1, 2, 4, 8];

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
<target>/tessera-bench/; then compares the scheduler with Go (when `go` is installed),
may and tokio on spawn-join, ping-pong, yield and parked (about one minute more).

OPTIONS:
    --workloads a,b     workloads to run [{workloads}]
    --allocators a,b    allocators to compare [{allocators}]
                        (with --programs: [{preloads}])
    --threads 1,2       thread counts [default 1,2,4,8]
    --reps N            repetitions, median shown [default {quick_reps}; {full_reps} with --full]
    --full              long runs ({full_ms} ms each instead of {quick_ms} ms)
    --duration-ms N     budget of one run, overriding the mode's
    --programs          real programs (python3, sqlite3, git, redis, a threaded C stress) under LD_PRELOAD allocators
    --sched             only the scheduler workloads (spawn-join, ping-pong, yield, parked)
                        against Go (if `go` is installed), may and tokio; the default run
                        ends with them
    -h, --help          this text
",
        workloads = Workload::ALL.map(Workload::name).join(", "),
        allocators = allocators::names().join(", "),
        preloads = programs::PRELOAD_NAMES.join(", "),
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
    let mut workloads = None;
    let mut allocator_names = None;
    let mut threads = None;
    let mut reps = None;
    let mut duration = None;
    let (mut full, mut programs, mut sched) = (false, false, false);

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
            "--sched" => sched = true,
            "--workloads" => {
                workloads = Some(list(&value()?, |w| {
                    Workload::from_name(w)
                        .ok_or_else(|| unknown("workload", w, &Workload::ALL.map(Workload::name)))
                })?)
            }
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

    if sched {
        return Ok(Command::Sched { full, reps });
    }
    let with_sched = workloads.is_none() && allocator_names.is_none() && threads.is_none();
    let (mode_duration, mode_reps) = if full { FULL } else { QUICK };
    let reps = reps.unwrap_or(mode_reps);
    if programs {
        let preloads = match allocator_names {
            Some(names) => list(&names, |n| pick(n, programs::PRELOAD_NAMES, "preload"))?,
            None => programs::PRELOAD_NAMES.to_vec(),
        };
        return Ok(Command::Programs(ProgramOptions {
            preloads,
            reps,
            full,
        }));
    }
    let known = allocators::names();
    let allocators = match allocator_names {
        Some(names) => list(&names, |n| pick(n, &known, "allocator"))?,
        None => known,
    };
    Ok(Command::Run(RunOptions {
        with_sched,
        workloads: workloads.unwrap_or_else(|| Workload::ALL.to_vec()),
        allocators,
        threads: threads.unwrap_or_else(|| DEFAULT_THREADS.to_vec()),
        reps,
        duration: duration.unwrap_or(mode_duration),
        full,
    }))
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
        let Ok(Command::Programs(p)) = parse_str("--programs --allocators glibc,tcmalloc") else {
            panic!()
        };
        assert_eq!(p.preloads, vec!["glibc", "tcmalloc"]);
        assert!(usage().contains("--workloads"));
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
