//! Parsing the runner's command line: the hidden flags of its child processes first, then
//! the flags of a run, checked against each other into a [`Command`].

use super::{
    C_DEFAULT_THREADS, CHILD_FLAG, COptions, ChildSpec, Command, DEFAULT_THREADS, FULL,
    ProgramOptions, QUICK, RunOptions, RustProgramOptions,
};
use crate::allocators;
use crate::c_mode;
use crate::programs;
use crate::rust_programs;
use crate::workloads::Workload;
use std::time::Duration;

/// Parses the arguments (without the program name).
pub fn parse(argv: &[String]) -> Result<Command, String> {
    if let Some(hidden) = parse_hidden(argv) {
        return hidden;
    }
    match Flags::scan(argv)? {
        Some(flags) => flags.command(),
        None => Ok(Command::Help),
    }
}

/// The command of a child process the runner starts, if `argv` starts with one of their
/// hidden flags.
fn parse_hidden(argv: &[String]) -> Option<Result<Command, String>> {
    match argv.first()?.as_str() {
        CHILD_FLAG => Some(parse_child(&argv[1..])),
        crate::sched::CHILD_FLAG => Some(parse_sched_child(argv)),
        crate::sched::PARKED_FLAG => Some(parse_sched_parked(argv)),
        crate::sched_timers::FLAG => Some(parse_sched_timers(argv)),
        _ => None,
    }
}

/// `--sched-child [--full] [--reps N]`.
fn parse_sched_child(argv: &[String]) -> Result<Command, String> {
    let full = argv.iter().any(|a| a == "--full");
    let reps = match argv.iter().position(|a| a == "--reps") {
        Some(i) => Some(positive(
            "--reps",
            argv.get(i + 1).ok_or("--reps needs a value")?,
        )?),
        None => None,
    };
    Ok(Command::SchedChild { full, reps })
}

/// `--sched-parked N`.
fn parse_sched_parked(argv: &[String]) -> Result<Command, String> {
    let n = argv.get(1).ok_or("the parked child needs N")?;
    Ok(Command::SchedParked(positive(
        crate::sched::PARKED_FLAG,
        n,
    )?))
}

/// `--sched-timers PEER N`.
fn parse_sched_timers(argv: &[String]) -> Result<Command, String> {
    let flag = crate::sched_timers::FLAG;
    let (Some(peer), Some(n)) = (argv.get(1), argv.get(2)) else {
        return Err(format!("{flag} needs PEER N"));
    };
    if !crate::sched_timers::PEERS.contains(&peer.as_str()) {
        return Err(format!("{flag}: unknown peer {peer}"));
    }
    Ok(Command::SchedTimers {
        peer: peer.clone(),
        n: positive(flag, n)?,
    })
}

/// The flags of a command line as given, before they are checked against each other and
/// turned into a [`Command`].
#[derive(Debug, Default)]
struct Flags {
    workload_names: Option<String>,
    allocator_names: Option<String>,
    threads: Option<Vec<usize>>,
    reps: Option<usize>,
    duration: Option<Duration>,
    full: bool,
    programs: bool,
    sched: bool,
    c: bool,
    rust_programs: bool,
    prof_cost: bool,
}

impl Flags {
    /// Reads every flag of `argv` and its value; `None` at `--help`, which wins over
    /// whatever follows it.
    fn scan(argv: &[String]) -> Result<Option<Self>, String> {
        let mut f = Self::default();
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
                "-h" | "--help" => return Ok(None),
                "--full" => f.full = true,
                "--programs" => f.programs = true,
                "--rust-programs" => f.rust_programs = true,
                "--sched" => f.sched = true,
                "--c" => f.c = true,
                "--prof-cost" => f.prof_cost = true,
                "--workloads" => f.workload_names = Some(value()?),
                "--allocators" => f.allocator_names = Some(value()?),
                "--threads" => f.threads = Some(list(&value()?, |t| positive("--threads", t))?),
                "--reps" => f.reps = Some(positive("--reps", &value()?)?),
                "--duration-ms" => {
                    f.duration = Some(Duration::from_millis(
                        positive("--duration-ms", &value()?)? as u64
                    ))
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(f))
    }

    /// The mode the flags select, with its options.
    fn command(self) -> Result<Command, String> {
        if [
            self.programs,
            self.sched,
            self.c,
            self.rust_programs,
            self.prof_cost,
        ]
        .iter()
        .filter(|&&m| m)
        .count()
            > 1
        {
            return Err(
                "--c, --programs, --rust-programs, --prof-cost and --sched are separate modes: \
                 give one"
                    .into(),
            );
        }
        if self.prof_cost {
            return self.prof_cost_command();
        }
        if self.sched {
            return Ok(Command::Sched {
                full: self.full,
                reps: self.reps,
            });
        }
        if self.rust_programs {
            return self.rust_programs_command();
        }
        let (mode_duration, mode_reps) = if self.full { FULL } else { QUICK };
        let reps = self.reps.unwrap_or(mode_reps);
        let duration = self.duration.unwrap_or(mode_duration);
        if self.c {
            return Ok(Command::C(self.c_options(
                self.threads.clone(),
                reps,
                duration,
            )?));
        }
        if self.programs {
            return Ok(Command::Programs(ProgramOptions {
                preloads: preloads(self.allocator_names.as_deref())?,
                reps,
                full: self.full,
            }));
        }
        self.run_command(reps, duration)
    }

    /// `--rust-programs`, which takes no flag about runs of a fixed length.
    fn rust_programs_command(&self) -> Result<Command, String> {
        if self.threads.is_some() || self.duration.is_some() || self.full {
            return Err(
                "--rust-programs runs whole programs: --threads, --duration-ms and \
                        --full do not apply"
                    .into(),
            );
        }
        let known = allocators::names();
        let all = allocators::all_names();
        Ok(Command::RustPrograms(RustProgramOptions {
            workloads: match &self.workload_names {
                Some(names) => list(names, |w| pick(w, &rust_programs::names(), "Rust program"))?,
                None => rust_programs::names(),
            },
            allocators: match &self.allocator_names {
                Some(names) => list(names, |a| pick(a, &all, "allocator"))?,
                None => known,
            },
            reps: self.reps.unwrap_or(rust_programs::DEFAULT_REPS),
        }))
    }

    /// `--prof-cost`, which runs every workload of both modes at fixed thread counts, once:
    /// only `--duration-ms` (its short budget) applies.
    fn prof_cost_command(&self) -> Result<Command, String> {
        if self.workload_names.is_some()
            || self.allocator_names.is_some()
            || self.threads.is_some()
            || self.reps.is_some()
            || self.full
        {
            return Err("--prof-cost measures every workload of both modes once: \
                        --workloads, --allocators, --threads, --reps and --full do not apply \
                        (--duration-ms sets its short budget)"
                .into());
        }
        Ok(Command::ProfCost {
            short: self.duration.unwrap_or(crate::icount::DEFAULT_SHORT),
        })
    }

    /// The C mode's options: `--c` alone, or the part of the default run after the Rust
    /// table (with the C mode's default thread counts).
    fn c_options(
        &self,
        threads: Option<Vec<usize>>,
        reps: usize,
        duration: Duration,
    ) -> Result<COptions, String> {
        Ok(COptions {
            programs: match &self.workload_names {
                Some(names) => list(names, |w| {
                    c_mode::workloads::find(w)
                        .ok_or_else(|| unknown("C workload", w, &c_mode::workloads::names()))
                })?,
                None => c_mode::PROGRAMS.iter().collect(),
            },
            preloads: preloads(self.allocator_names.as_deref())?,
            threads: threads.unwrap_or_else(|| C_DEFAULT_THREADS.to_vec()),
            reps,
            duration,
            full: self.full,
        })
    }

    /// The allocator comparison: the whole default run, or the Rust table alone when
    /// narrowed to some workloads, allocators or thread counts.
    fn run_command(self, reps: usize, duration: Duration) -> Result<Command, String> {
        let narrowed = self.workload_names.is_some()
            || self.allocator_names.is_some()
            || self.threads.is_some();
        let known = allocators::names();
        let allocators = match &self.allocator_names {
            Some(names) => list(names, |n| pick(n, &allocators::all_names(), "allocator"))?,
            None => known,
        };
        let workloads = match &self.workload_names {
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
                Some(self.c_options(None, reps, duration)?)
            },
            workloads,
            allocators,
            threads: self.threads.unwrap_or_else(|| DEFAULT_THREADS.to_vec()),
            reps,
            duration,
            full: self.full,
        }))
    }
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
        allocator: pick(allocator, &allocators::all_names(), "allocator")?,
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
    use crate::args::usage;

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
