//! The results of `--programs` and their table (terminal and Markdown share one layout): one
//! line per (program, allocator) with the median figure, time and peak-RSS ratios against
//! glibc and against mimalloc, and the BENCHMARKS.md targets for tessera (time ≤ mimalloc's,
//! peak RSS ≤ glibc's) marked pass or miss.

use crate::stats::median;
use std::fmt::Write as _;

/// What a program's figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Wall time in seconds (lower is better).
    Seconds,
    /// Requests per second (higher is better); its time ratio is the inverse ratio, the time
    /// per request.
    RequestsPerSec,
}

/// One program's runs under every preload.
#[derive(Debug, Clone)]
pub struct ProgramRow {
    /// Program name.
    pub program: &'static str,
    /// What `ProgramCell::values` hold.
    pub unit: Unit,
    /// Per preload, in column order.
    pub cells: Vec<ProgramCell>,
}

/// The repetitions of one (program, preload).
#[derive(Debug, Clone, Default)]
pub struct ProgramCell {
    /// The figure of each successful run (seconds or requests/s, per the row's unit).
    pub values: Vec<f64>,
    /// Peak RSS (KiB) of successful runs.
    pub rss_kib: Vec<u64>,
    /// Minor page faults of successful runs (`--rust-programs`; empty where not counted).
    pub minflt: Vec<u64>,
    /// First failure: a crash, a timeout, or output that differs from the reference run's.
    pub failure: Option<String>,
}

impl ProgramCell {
    /// Median figure, if no run failed.
    pub fn median_value(&self) -> Option<f64> {
        self.failure
            .is_none()
            .then(|| median(&self.values))
            .flatten()
    }

    /// Spread of the figure over the repetitions, (max - min) / median, if no run failed:
    /// a ratio closer to 1 than this is within the noise.
    pub fn spread(&self) -> Option<f64> {
        let m = self.median_value()?;
        let max = self.values.iter().copied().fold(f64::MIN, f64::max);
        let min = self.values.iter().copied().fold(f64::MAX, f64::min);
        (m > 0.0).then(|| (max - min) / m)
    }

    /// Median peak RSS in MiB, if no run failed.
    pub fn median_rss_mib(&self) -> Option<f64> {
        let mib: Vec<f64> = self.rss_kib.iter().map(|&k| k as f64 / 1024.0).collect();
        self.failure.is_none().then(|| median(&mib)).flatten()
    }

    /// Median minor page faults, if no run failed and they were counted.
    pub fn median_minflt(&self) -> Option<f64> {
        let faults: Vec<f64> = self.minflt.iter().map(|&f| f as f64).collect();
        self.failure.is_none().then(|| median(&faults)).flatten()
    }
}

impl ProgramRow {
    /// Time of cell `i` over time of cell `base` (< 1: faster); for requests/s, the inverse
    /// of the rates.
    pub fn time_ratio(&self, i: usize, base: usize) -> Option<f64> {
        let (v, b) = (
            self.cells[i].median_value()?,
            self.cells[base].median_value()?,
        );
        match self.unit {
            Unit::Seconds => Some(v / b),
            Unit::RequestsPerSec => Some(b / v),
        }
    }

    /// Peak RSS of cell `i` over that of cell `base`.
    pub fn rss_ratio(&self, i: usize, base: usize) -> Option<f64> {
        Some(self.cells[i].median_rss_mib()? / self.cells[base].median_rss_mib()?)
    }

    /// Minor faults of cell `i` over those of cell `base`.
    pub fn minflt_ratio(&self, i: usize, base: usize) -> Option<f64> {
        Some(self.cells[i].median_minflt()? / self.cells[base].median_minflt()?.max(1.0))
    }

    /// The median figure of cell `i` with its unit.
    pub fn figure(&self, i: usize) -> Option<String> {
        let v = self.cells[i].median_value()?;
        Some(match self.unit {
            Unit::Seconds => format!("{v:.3} s"),
            Unit::RequestsPerSec => format!("{:.1}k req/s", v / 1000.0),
        })
    }
}

/// A ratio as the tables show it: `1.23x`, or `-` without one.
pub fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// A target's mark: `pass` when the ratio meets it, `MISS` when not, `n/a` without a ratio.
pub fn mark(r: Option<f64>, meets: impl Fn(f64) -> bool) -> &'static str {
    match r {
        Some(r) if meets(r) => "pass",
        Some(_) => "MISS",
        None => "n/a",
    }
}

/// Lays out a long table, one line per (program, allocator): aligned columns of `widths` for
/// the terminal (a blank line where the first column changes), or a Markdown table. Columns
/// in `left` are left-aligned, the others (figures) right-aligned.
pub fn layout(
    header: &[&str],
    widths: &[usize],
    left: &[usize],
    lines: &[Vec<String>],
    markdown: bool,
) -> String {
    let mut out = String::new();
    let emit = |out: &mut String, cols: &[String]| {
        if markdown {
            let _ = writeln!(out, "| {} |", cols.join(" | "));
        } else {
            for (k, (c, &w)) in cols.iter().zip(widths).enumerate() {
                if left.contains(&k) {
                    let _ = write!(out, "{c:<w$} ");
                } else {
                    let _ = write!(out, "{c:>w$} ");
                }
            }
            let len = out.trim_end_matches(' ').len();
            out.truncate(len);
            out.push('\n');
        }
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    emit(&mut out, &header);
    if markdown {
        out.push('|');
        for k in 0..header.len() {
            out.push_str(if left.contains(&k) { "---|" } else { "---:|" });
        }
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "{}",
            "-".repeat(widths.iter().sum::<usize>() + widths.len() - 1)
        );
    }
    // A blank line between programs in the terminal.
    let mut previous: Option<&str> = None;
    for line in lines {
        if !markdown && previous.is_some_and(|p| p != line[0]) {
            out.push('\n');
        }
        previous = Some(&line[0]);
        emit(&mut out, line);
    }
    out
}

/// Renders the table. `preloads` are the column names; ratios are against the `glibc` and
/// `mimalloc` columns when present. `markdown` picks the syntax.
pub fn render(preloads: &[&str], rows: &[ProgramRow], markdown: bool) -> String {
    let glibc = preloads.iter().position(|p| *p == "glibc");
    let mimalloc = preloads.iter().position(|p| *p == "mimalloc");
    let header = [
        "program",
        "allocator",
        "median",
        "spread",
        "time/glibc",
        "time/mimalloc",
        "peak RSS",
        "RSS/glibc",
        "RSS/mimalloc",
        "targets",
    ];
    let widths = [15, 9, 14, 6, 10, 13, 11, 9, 12, 20];
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in rows {
        for (i, name) in preloads.iter().enumerate() {
            let cell = &row.cells[i];
            let against = |base: Option<usize>, f: fn(&ProgramRow, usize, usize) -> Option<f64>| {
                ratio(base.and_then(|b| f(row, i, b)))
            };
            let targets = if *name == "tessera" {
                target_marks(row, i, glibc, mimalloc)
            } else {
                String::new()
            };
            let line = if cell.failure.is_some() {
                vec![
                    row.program.to_string(),
                    name.to_string(),
                    "FAILED".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    targets,
                ]
            } else {
                vec![
                    row.program.to_string(),
                    name.to_string(),
                    row.figure(i).unwrap_or_else(|| "-".into()),
                    cell.spread()
                        .map(|s| format!("{:.0}%", s * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    against(glibc, ProgramRow::time_ratio),
                    against(mimalloc, ProgramRow::time_ratio),
                    cell.median_rss_mib()
                        .map(|m| format!("{m:.1} MiB"))
                        .unwrap_or_else(|| "-".into()),
                    against(glibc, ProgramRow::rss_ratio),
                    against(mimalloc, ProgramRow::rss_ratio),
                    targets,
                ]
            };
            lines.push(line);
        }
    }
    let mut out = layout(&header, &widths, &[0, 1, 9], &lines, markdown);
    out.push_str(&failures(preloads, rows, markdown));
    out
}

/// One line per failed cell, "FAILED program under allocator: why" (a Markdown list item
/// for `markdown`), for after a table.
pub fn failures(columns: &[&str], rows: &[ProgramRow], markdown: bool) -> String {
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.cells.iter().enumerate() {
            if let Some(why) = &cell.failure {
                let _ = writeln!(
                    out,
                    "{}FAILED {} under {}: {why}",
                    if markdown { "\n- " } else { "" },
                    row.program,
                    columns[i]
                );
            }
        }
    }
    out
}

/// "time ok, RSS miss" style marks for one tessera cell.
fn target_marks(
    row: &ProgramRow,
    i: usize,
    glibc: Option<usize>,
    mimalloc: Option<usize>,
) -> String {
    let at_most_1 = |r: f64| r <= 1.0;
    format!(
        "time {} RSS {}",
        mark(mimalloc.and_then(|m| row.time_ratio(i, m)), at_most_1),
        mark(glibc.and_then(|g| row.rss_ratio(i, g)), at_most_1)
    )
}

/// The BENCHMARKS.md targets for the `tessera` column, one line per program and a count.
/// Empty if there is no tessera column.
pub fn targets(preloads: &[&str], rows: &[ProgramRow]) -> String {
    let Some(t) = preloads.iter().position(|p| *p == "tessera") else {
        return String::new();
    };
    let glibc = preloads.iter().position(|p| *p == "glibc");
    let mimalloc = preloads.iter().position(|p| *p == "mimalloc");
    let mut out = String::from(
        "targets (BENCHMARKS.md, real programs): tessera's time <= mimalloc's, peak RSS <= glibc's\n",
    );
    let mut count = TargetCount::default();
    let at_most_1 = |r: f64| r <= 1.0;
    for row in rows {
        let time = count.check(
            "time",
            mimalloc.and_then(|m| row.time_ratio(t, m)),
            "mimalloc",
            at_most_1,
        );
        let rss = count.check(
            "peak RSS",
            glibc.and_then(|g| row.rss_ratio(t, g)),
            "glibc",
            at_most_1,
        );
        let _ = writeln!(out, "  {:<15} {time:<28} {rss}", row.program);
    }
    let _ = writeln!(out, "  {count}");
    out
}

/// The targets checked so far and how many were met, for a summary's last line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TargetCount {
    /// Checks that passed.
    pub met: usize,
    /// Checks made.
    pub total: usize,
}

impl TargetCount {
    /// Counts one check of ratio `r` against `base` and words it: `"{what} 1.23x {base}:
    /// pass"` (or `MISS`), or that there is no figure.
    pub fn check(
        &mut self,
        what: &str,
        r: Option<f64>,
        base: &str,
        meets: impl Fn(f64) -> bool,
    ) -> String {
        self.total += 1;
        self.met += usize::from(r.is_some_and(&meets));
        match r {
            Some(r) => format!("{what} {r:.2}x {base}: {}", mark(Some(r), meets)),
            None => format!("{what} vs {base}: no figure (failed or not run)"),
        }
    }
}

impl std::fmt::Display for TargetCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "met {} of {}", self.met, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: f64, kib: u64) -> ProgramCell {
        ProgramCell {
            values: vec![v; 3],
            rss_kib: vec![kib; 3],
            ..ProgramCell::default()
        }
    }

    #[test]
    fn table_shows_ratios_rss_and_failures() {
        let rows = vec![
            ProgramRow {
                program: "sqlite3",
                unit: Unit::Seconds,
                cells: vec![
                    ok(1.0, 10240),
                    ok(0.5, 20480),
                    ProgramCell {
                        failure: Some("wrong output".into()),
                        ..ok(1.0, 1)
                    },
                ],
            },
            ProgramRow {
                program: "redis",
                unit: Unit::RequestsPerSec,
                cells: vec![ok(40_000.0, 8192), ok(50_000.0, 8192), ok(40_000.0, 4096)],
            },
        ];
        let names = ["glibc", "mimalloc", "tessera"];
        let text = render(&names, &rows, false);
        assert!(text.contains("sqlite3         mimalloc"), "{text}");
        assert!(text.contains("0.500 s"), "{text}");
        assert!(text.contains("0.50x"), "{text}");
        assert!(text.contains("20.0 MiB"), "{text}");
        assert!(
            text.contains("FAILED sqlite3 under tessera: wrong output"),
            "{text}"
        );
        // redis: 50k req/s is 0.80x glibc's time per request; tessera is 1.25x mimalloc's.
        let line = text
            .lines()
            .find(|l| l.starts_with("redis           mimalloc"))
            .unwrap();
        assert!(line.contains("50.0k req/s     0%      0.80x"), "{line}");
        assert!(text.contains("time MISS RSS pass"), "{text}");
        let md = render(&names, &rows, true);
        assert!(md.starts_with("| program | allocator"), "{md}");
        assert!(md.contains("|---|---|---:|"), "{md}");
        let t = targets(&names, &rows);
        assert!(t.contains("time 1.25x mimalloc: MISS"), "{t}");
        assert!(t.contains("peak RSS 0.50x glibc: pass"), "{t}");
        assert!(t.contains("no figure"), "{t}");
        assert!(t.contains("met 1 of 4"), "{t}");
        assert_eq!(targets(&names[..2], &rows), "");
    }
}
