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
//!
//! A child that ran Tessera adds where Tessera's memory was when the run ended
//! ([`TesseraMemory`], bytes): `t_live= t_cached= t_central= t_dirty= t_purged= t_meta=
//! t_resident=`, all or none.

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
    /// Where Tessera's memory was at the end of the run, from a child that ran Tessera.
    pub tessera: Option<TesseraMemory>,
}

/// `tessera::stats()`'s breakdown at the end of a run, in bytes: the first six add up to
/// everything Tessera mapped; `resident` is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TesseraMemory {
    /// Objects handed out.
    pub live: u64,
    /// Held by thread caches (exited threads' included).
    pub cached: u64,
    /// Free room of spans on the central lists.
    pub central: u64,
    /// Free pages not purged yet.
    pub dirty: u64,
    /// Free pages returned to the OS.
    pub purged: u64,
    /// Arena headers, cache chunks, registry.
    pub metadata: u64,
    /// Resident (`mincore`).
    pub resident: u64,
}

impl TesseraMemory {
    /// The protocol's keys, in the order of [`TesseraMemory::values`].
    pub const KEYS: [&str; 7] = [
        "t_live",
        "t_cached",
        "t_central",
        "t_dirty",
        "t_purged",
        "t_meta",
        "t_resident",
    ];

    /// The figures, in the order of [`TesseraMemory::KEYS`].
    pub fn values(&self) -> [u64; 7] {
        [
            self.live,
            self.cached,
            self.central,
            self.dirty,
            self.purged,
            self.metadata,
            self.resident,
        ]
    }

    fn from_values(v: [u64; 7]) -> Self {
        TesseraMemory {
            live: v[0],
            cached: v[1],
            central: v[2],
            dirty: v[3],
            purged: v[4],
            metadata: v[5],
            resident: v[6],
        }
    }

    /// Everything mapped: the sum of the six parts.
    pub fn mapped(&self) -> u64 {
        self.live + self.cached + self.central + self.dirty + self.purged + self.metadata
    }

    /// The figures of the calling process's Tessera now.
    pub fn now() -> Self {
        let s = tessera::stats();
        let b = s.breakdown;
        let n = |v: usize| v as u64;
        TesseraMemory {
            live: n(b.live),
            cached: n(b.cached),
            central: n(b.central),
            dirty: n(b.heap_dirty),
            purged: n(b.heap_purged),
            metadata: n(b.metadata),
            resident: n(s.resident),
        }
    }
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
        let mut tessera = [None; 7];
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
                _ => {
                    if let Some(i) = TesseraMemory::KEYS.iter().position(|k| *k == key) {
                        tessera[i] = Some(number()?);
                    }
                }
            }
        }
        let missing = |name: &str| format!("missing field {name} in {line:?}");
        let tessera = if tessera.iter().all(Option::is_none) {
            None
        } else {
            let mut values = [0; 7];
            for (i, value) in tessera.into_iter().enumerate() {
                values[i] = value.ok_or_else(|| missing(TesseraMemory::KEYS[i]))?;
            }
            Some(TesseraMemory::from_values(values))
        };
        Ok(ChildReport {
            ops: ops.ok_or_else(|| missing("ops"))?,
            nanos: nanos.ok_or_else(|| missing("nanos"))?,
            maxrss_kib: maxrss.ok_or_else(|| missing("maxrss_kib"))?,
            tessera,
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
        )?;
        if let Some(t) = &self.tessera {
            for (key, value) in TesseraMemory::KEYS.iter().zip(t.values()) {
                write!(f, " {key}={value}")?;
            }
        }
        Ok(())
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
            tessera: None,
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
                maxrss_kib: 7,
                tessera: None,
            })
        );
    }

    #[test]
    fn carries_tessera_memory_all_or_nothing() {
        let report = ChildReport {
            ops: 1,
            nanos: 2,
            maxrss_kib: 3,
            tessera: Some(TesseraMemory::from_values([10, 20, 30, 40, 50, 60, 70])),
        };
        let line = report.to_string();
        assert!(
            line.ends_with(
                " t_live=10 t_cached=20 t_central=30 t_dirty=40 t_purged=50 t_meta=60 t_resident=70"
            ),
            "{line}"
        );
        assert_eq!(ChildReport::parse(&line), Ok(report));
        assert_eq!(report.tessera.unwrap().mapped(), 210);
        let partial = "tessera-bench-result v1 ops=1 nanos=1 maxrss_kib=1 t_live=5";
        assert!(ChildReport::parse(partial).is_err());
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
