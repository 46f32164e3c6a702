//! The result line of a C program (written by `result_*` in `c/harness.h`) and the check
//! that the allocator it ran on is the one the runner preloaded.
//!
//! ```text
//! tessera-bench-c v1 workload=larson threads=2 ops=1234 nanos=150000000 malloc=/usr/lib/x86_64-linux-gnu/libc.so.6
//! tessera-bench-c v1 workload=fastpath threads=1 ops.16=10 nanos.16=20 ops.64=11 nanos.64=20 malloc=...
//! ```
//!
//! Fields are `key=value`, in any order, unknown keys ignored, except `malloc=`, which comes
//! last and runs to the end of the line (a path may hold spaces).

use std::path::Path;

/// The first word of a result line.
pub const PREFIX: &str = "tessera-bench-c";
/// The protocol version after it.
pub const VERSION: &str = "v1";

/// One program's result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    /// `workload=`: the program's name.
    pub workload: String,
    /// `threads=`.
    pub threads: usize,
    /// Every figure: its series key (`None` for `ops=`/`nanos=`), operations and nanoseconds.
    pub figures: Vec<(Option<String>, u64, u64)>,
    /// The file that defines the `malloc` the program called.
    pub malloc: String,
}

impl ResultLine {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<ResultLine, String> {
        let bad = |why: String| format!("{why} in {line:?}");
        let rest = line
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| bad("not a result line".into()))?;
        let (fields, malloc) = rest
            .split_once(" malloc=")
            .ok_or_else(|| bad("no malloc= field".into()))?;
        let mut words = fields.split_whitespace();
        match words.next() {
            Some(VERSION) => {}
            other => return Err(bad(format!("unsupported version {other:?}"))),
        }
        let (mut workload, mut threads) = (None, None);
        // Per series key: (ops, nanos), in the order the keys first appear.
        let mut series: Vec<(Option<String>, Option<u64>, Option<u64>)> = Vec::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("malformed field {word:?}")))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| bad(format!("field {key}={value:?}: {e}")))
            };
            let (figure, suffix) = match key.split_once('.') {
                Some((figure, suffix)) => (figure, Some(suffix)),
                None => (key, None),
            };
            match (figure, suffix) {
                ("workload", None) => workload = Some(value.to_string()),
                ("threads", None) => threads = Some(number()? as usize),
                ("ops" | "nanos", suffix) => {
                    let suffix = suffix.map(str::to_string);
                    let i = match series.iter().position(|(k, _, _)| *k == suffix) {
                        Some(i) => i,
                        None => {
                            series.push((suffix, None, None));
                            series.len() - 1
                        }
                    };
                    let slot = if figure == "ops" {
                        &mut series[i].1
                    } else {
                        &mut series[i].2
                    };
                    *slot = Some(number()?);
                }
                _ => {}
            }
        }
        let figures = series
            .into_iter()
            .map(|(key, ops, nanos)| match (ops, nanos) {
                (Some(ops), Some(nanos)) => Ok((key, ops, nanos)),
                _ => Err(bad(format!("series {key:?} lacks ops or nanos"))),
            })
            .collect::<Result<Vec<_>, String>>()?;
        if figures.is_empty() {
            return Err(bad("no figures".into()));
        }
        Ok(ResultLine {
            workload: workload.ok_or_else(|| bad("no workload= field".into()))?,
            threads: threads.ok_or_else(|| bad("no threads= field".into()))?,
            figures,
            malloc: malloc.trim_end().to_string(),
        })
    }

    /// Finds and parses the (last) result line of a program's whole stdout.
    pub fn find_in(stdout: &str) -> Result<ResultLine, String> {
        match stdout.lines().rev().find(|l| l.starts_with(PREFIX)) {
            Some(line) => ResultLine::parse(line),
            None => Err("the program printed no result line".to_string()),
        }
    }

    /// The (ops, nanos) of series `key`.
    pub fn figure(&self, key: Option<&str>) -> Option<(u64, u64)> {
        self.figures
            .iter()
            .find(|(k, _, _)| k.as_deref() == key)
            .map(|&(_, ops, nanos)| (ops, nanos))
    }

    /// Checks that the program ran on `preload` (`None`: glibc's own malloc), from the file
    /// it says defines its `malloc`.
    pub fn check_allocator(&self, preload: Option<&Path>) -> Result<(), String> {
        let reported = Path::new(&self.malloc);
        let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let ok = match preload {
            Some(lib) => real(lib) == real(reported),
            None => reported
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "malloc came from {}, not {}: LD_PRELOAD did not take",
                self.malloc,
                preload.map_or("glibc".into(), |p| p.display().to_string())
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_figure() {
        let line = ResultLine::parse(
            "tessera-bench-c v1 workload=larson threads=2 ops=1234 nanos=150000000 \
             malloc=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
        )
        .unwrap();
        assert_eq!(line.workload, "larson");
        assert_eq!(line.threads, 2);
        assert_eq!(line.figure(None), Some((1234, 150_000_000)));
        assert_eq!(line.malloc, "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2");
    }

    #[test]
    fn parses_series_in_any_order_and_a_path_with_spaces() {
        let line = ResultLine::parse(
            "tessera-bench-c v1 threads=4 workload=fastpath ops.16=10 nanos.64=21 nanos.16=20 \
             extra=7 ops.64=11 malloc=/home/a b/target/release/libtessera.so\n",
        )
        .unwrap();
        assert_eq!(
            line.figures,
            vec![(Some("16".into()), 10, 20), (Some("64".into()), 11, 21)]
        );
        assert_eq!(line.figure(Some("64")), Some((11, 21)));
        assert_eq!(line.figure(None), None);
        assert_eq!(line.malloc, "/home/a b/target/release/libtessera.so");
    }

    #[test]
    fn finds_the_line_among_other_output() {
        let out =
            "warming up\ntessera-bench-c v1 workload=mstress threads=1 ops=5 nanos=9 malloc=x\n";
        assert_eq!(ResultLine::find_in(out).unwrap().figure(None), Some((5, 9)));
        assert!(ResultLine::find_in("nothing\n").is_err());
    }

    #[test]
    fn rejects_bad_lines() {
        for (line, needle) in [
            (
                "tessera-bench-c v2 workload=a threads=1 ops=1 nanos=1 malloc=x",
                "version",
            ),
            (
                "tessera-bench-c v1 workload=a threads=1 ops=1 nanos=1",
                "malloc=",
            ),
            (
                "tessera-bench-c v1 workload=a threads=1 ops=1 malloc=x",
                "lacks",
            ),
            (
                "tessera-bench-c v1 workload=a threads=1 malloc=x",
                "no figures",
            ),
            (
                "tessera-bench-c v1 threads=1 ops=1 nanos=1 malloc=x",
                "workload=",
            ),
            (
                "tessera-bench-c v1 workload=a ops=1 nanos=1 malloc=x",
                "threads=",
            ),
            (
                "tessera-bench-c v1 workload=a threads=1 ops=x nanos=1 malloc=x",
                "ops=",
            ),
            (
                "tessera-bench-c v1 workload=a threads=1 ops nanos=1 malloc=x",
                "malformed",
            ),
            (
                "tessera-bench-result v1 ops=1 nanos=1 maxrss_kib=1",
                "not a result",
            ),
        ] {
            let err = ResultLine::parse(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn the_allocator_must_be_the_preloaded_one() {
        let ran_on = |malloc: &str| ResultLine {
            workload: "larson".into(),
            threads: 1,
            figures: vec![(None, 1, 1)],
            malloc: malloc.into(),
        };
        assert!(
            ran_on("/lib/x86_64-linux-gnu/libc.so.6")
                .check_allocator(None)
                .is_ok()
        );
        let lib = Path::new("/opt/x/libmimalloc.so.2");
        assert!(
            ran_on("/opt/x/libmimalloc.so.2")
                .check_allocator(Some(lib))
                .is_ok()
        );
        let err = ran_on("/lib/x86_64-linux-gnu/libc.so.6")
            .check_allocator(Some(lib))
            .unwrap_err();
        assert!(err.contains("LD_PRELOAD did not take"), "{err}");
        assert!(
            ran_on("/opt/x/libmimalloc.so.2")
                .check_allocator(None)
                .is_err()
        );
    }
}
