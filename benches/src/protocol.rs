//! The line protocol between the runner and its child processes.
//!
//! A child runs one (allocator, workload, threads) and prints exactly one result line on
//! stdout:
//!
//! ```text
//! tessera-bench-result v1 ops=123456 nanos=150000000 maxrss_kib=5120
//! ```
//!
//! Fields are `key=value` with unsigned integers, in any order; unknown keys are ignored so
//! the protocol can grow. Anything else the child prints (e.g. an allocator's own messages)
//! is skipped by [`ChildReport::find_in`].

use std::fmt;

/// The first word of a result line.
pub const PREFIX: &str = "tessera-bench-result";
/// The protocol version written after the prefix.
pub const VERSION: &str = "v1";

/// What a child reports about its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildReport {
    /// Operations completed.
    pub ops: u64,
    /// Wall time of the measured part, in nanoseconds.
    pub nanos: u64,
    /// Peak resident set size of the child process, in KiB (`ru_maxrss`).
    pub maxrss_kib: u64,
}

impl ChildReport {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 * 1e9 / self.nanos.max(1) as f64
    }

    /// Parses one result line.
    pub fn parse(line: &str) -> Result<ChildReport, String> {
        let mut words = line.split_whitespace();
        if words.next() != Some(PREFIX) {
            return Err(format!("not a result line: {line:?}"));
        }
        match words.next() {
            Some(VERSION) => {}
            other => {
                return Err(format!(
                    "unsupported protocol version {other:?} in {line:?}"
                ));
            }
        }
        let (mut ops, mut nanos, mut maxrss) = (None, None, None);
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!("malformed field {word:?} in {line:?}"));
            };
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("field {key}: {value:?}: {e}"))
            };
            match key {
                "ops" => ops = Some(number()?),
                "nanos" => nanos = Some(number()?),
                "maxrss_kib" => maxrss = Some(number()?),
                _ => {}
            }
        }
        let missing = |name: &str| format!("missing field {name} in {line:?}");
        Ok(ChildReport {
            ops: ops.ok_or_else(|| missing("ops"))?,
            nanos: nanos.ok_or_else(|| missing("nanos"))?,
            maxrss_kib: maxrss.ok_or_else(|| missing("maxrss_kib"))?,
        })
    }

    /// Finds and parses the (last) result line in a child's whole stdout.
    pub fn find_in(stdout: &str) -> Result<ChildReport, String> {
        match stdout.lines().rev().find(|l| l.starts_with(PREFIX)) {
            Some(line) => ChildReport::parse(line),
            None => Err("the child printed no result line".to_string()),
        }
    }
}

impl fmt::Display for ChildReport {
    /// The result line, without a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX} {VERSION} ops={} nanos={} maxrss_kib={}",
            self.ops, self.nanos, self.maxrss_kib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let report = ChildReport {
            ops: 123_456,
            nanos: 150_000_000,
            maxrss_kib: 5120,
        };
        let line = report.to_string();
        assert_eq!(
            line,
            "tessera-bench-result v1 ops=123456 nanos=150000000 maxrss_kib=5120"
        );
        assert_eq!(ChildReport::parse(&line), Ok(report));
        assert!((report.ops_per_sec() - 823_040.0).abs() < 1.0);
    }

    #[test]
    fn finds_the_line_among_noise_and_ignores_unknown_keys() {
        let out =
            "mimalloc: warning\ntessera-bench-result v1 nanos=10 extra=1 ops=5 maxrss_kib=7\n";
        assert_eq!(
            ChildReport::find_in(out),
            Ok(ChildReport {
                ops: 5,
                nanos: 10,
                maxrss_kib: 7
            })
        );
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(ChildReport::find_in("nothing here\n").is_err());
        assert!(ChildReport::parse("tessera-bench-result v2 ops=1 nanos=1 maxrss_kib=1").is_err());
        assert!(ChildReport::parse("tessera-bench-result v1 ops=1 nanos=1").is_err());
        assert!(ChildReport::parse("tessera-bench-result v1 ops=x nanos=1 maxrss_kib=1").is_err());
        assert!(ChildReport::parse("tessera-bench-result v1 ops nanos=1 maxrss_kib=1").is_err());
    }
}
