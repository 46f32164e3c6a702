//! The C programs of the C mode (`c/`, one file per workload plus `c/harness.h`) and the
//! rows of the table each one fills: one per figure its result line carries.

use crate::report::RowLabel;

/// `c/harness.h`, included by every program: command line, clock, checked blocks, worker
/// threads, the result line.
pub const HARNESS_H: &str = include_str!("c/harness.h");

/// One figure of a C program, and the row it makes in the tables.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    /// The row's name in the tables.
    pub name: &'static str,
    /// Its key in the result line (`ops.KEY=`), `None` for a program's only figure (`ops=`).
    pub key: Option<&'static str>,
    /// What one counted operation is.
    pub unit: &'static str,
    /// Whether the report also gives nanoseconds per operation and thread, because that is
    /// how people read this figure (fastpath: ns per pair).
    pub per_op_ns: bool,
}

/// One C program: a workload of BENCHMARKS.md, written in C.
#[derive(Debug, PartialEq, Eq)]
pub struct Program {
    /// Its name on the command line (`--workloads`) and in its result line (`workload=`).
    pub name: &'static str,
    /// The file stem: the source is `c/FILE.c`, the executable `FILE`.
    pub file: &'static str,
    /// The source text.
    pub source: &'static str,
    /// The figures its result line carries, in table order.
    pub series: &'static [Series],
}

/// A program with one figure.
const fn single(name: &'static str, unit: &'static str) -> [Series; 1] {
    [Series {
        name,
        key: None,
        unit,
        per_op_ns: false,
    }]
}

/// fastpath's series: one per size.
const fn pair(name: &'static str, key: &'static str, unit: &'static str) -> Series {
    Series {
        name,
        key: Some(key),
        unit,
        per_op_ns: true,
    }
}

/// A [`Program`] whose source is `c/FILE.c`.
macro_rules! program {
    ($name:literal, $file:literal, $series:expr) => {
        Program {
            name: $name,
            file: $file,
            source: include_str!(concat!("c/", $file, ".c")),
            series: $series,
        }
    };
}

/// Every C program, in table order.
pub const PROGRAMS: &[Program] = &[
    program!(
        "fastpath",
        "fastpath",
        &[
            pair(
                "fastpath-16",
                "16",
                "malloc(16)+free pair, each thread its own loop"
            ),
            pair(
                "fastpath-64",
                "64",
                "malloc(64)+free pair, each thread its own loop"
            ),
            pair(
                "fastpath-256",
                "256",
                "malloc(256)+free pair, each thread its own loop"
            ),
            pair(
                "fastpath-1024",
                "1024",
                "malloc(1024)+free pair, each thread its own loop"
            ),
        ]
    ),
    program!(
        "glibc-simple",
        "glibc_simple",
        &single("glibc-simple", "malloc (each later freed, all at once)")
    ),
    program!(
        "larson",
        "larson",
        &single("larson", "free+malloc replacement (8-1000 B)")
    ),
    program!(
        "xmalloc",
        "xmalloc",
        &single(
            "xmalloc",
            "block allocated by a producer and freed by a consumer"
        )
    ),
    program!(
        "cache-scratch",
        "cache_scratch",
        &single(
            "cache-scratch",
            "8 B object allocated, written 100 times, freed"
        )
    ),
    program!(
        "mstress",
        "mstress",
        &single("mstress", "slot swap (malloc and/or free)")
    ),
    program!(
        "manythreads",
        "manythreads",
        &single(
            "manythreads",
            "malloc or free, rounds of 1,000 blocks of 16-512 B per thread (run with 64, 256)"
        )
    ),
    program!(
        "burst",
        "burst",
        &single(
            "burst",
            "malloc in 48 MiB bursts (64 B-64 KiB, each later freed), 5 rounds, 200 ms pauses untimed"
        )
    ),
];

/// The program called `name`.
pub fn find(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// Every program's name, in table order.
pub fn names() -> Vec<&'static str> {
    PROGRAMS.iter().map(|p| p.name).collect()
}

impl RowLabel for &'static Series {
    fn name(&self) -> &'static str {
        self.name
    }

    fn unit(&self) -> &'static str {
        self.unit
    }

    fn detail(&self, ops_per_sec: f64, threads: usize) -> Option<String> {
        // Every thread runs its own loop, so one pair takes `threads / rate` of wall time
        // on its thread (more threads than CPUs stretch it: they share the cores).
        (self.per_op_ns && ops_per_sec > 0.0)
            .then(|| format!("{:.1} ns per pair", threads as f64 * 1e9 / ops_per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_includes_the_harness_and_names_itself() {
        for p in PROGRAMS {
            assert!(p.source.contains("#include \"harness.h\""), "{}", p.name);
            assert!(
                p.source.contains(&format!("\"{}\"", p.name)),
                "{} must print workload={}",
                p.file,
                p.name
            );
            assert!(!p.series.is_empty());
            assert_eq!(find(p.name), Some(p));
        }
        assert!(HARNESS_H.contains("tessera-bench-c v1"));
        assert_eq!(find("growth"), None);
    }

    #[test]
    fn fastpath_reads_as_ns_per_pair() {
        let s: &'static Series = &PROGRAMS[0].series[0];
        assert_eq!(s.detail(100e6, 1).as_deref(), Some("10.0 ns per pair"));
        assert_eq!(s.detail(100e6, 2).as_deref(), Some("20.0 ns per pair"));
        let larson: &'static Series = &find("larson").unwrap().series[0];
        assert_eq!(larson.detail(1e6, 1), None);
    }
}
