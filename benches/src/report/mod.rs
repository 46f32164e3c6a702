//! The results of a comparison and their renderings: the terminal table and a section of
//! `report.md` (with its chart, `svg.rs`).
//!
//! Every figure is relative to the baseline allocator (mimalloc) measured in the same run:
//! the ratio of a cell is the median over repetitions of (this allocator's ops/s) / (the
//! baseline's ops/s in the same repetition). Repetitions interleave the allocators, so a
//! repetition's pair saw the same machine weather. Ratio > 1: faster than the baseline.
//!
//! Both comparisons use these types: the Rust allocator workloads (rows labelled by a
//! [`Workload`]) and the C mode (rows labelled by a C program's series,
//! `crate::c_mode::Series`); [`RowLabel`] is what a row label must tell the renderings.
//! [`ReportFile`] gathers the sections of one invocation into `report.md`.

mod markdown;
mod memory;
mod profcost;
mod terminal;

pub use markdown::render_markdown;
pub use memory::render_tessera_memory;
pub use profcost::{
    Cost, FAST_PATH_BAR, GEOMEAN_BAR, HARDENING, PROFILING, cost, feature_costs, judge, percent,
    profiling_cost,
};
pub use terminal::render_terminal;

use crate::paths;
use crate::protocol::ChildReport;
use crate::stats::{geomean, median};
use crate::workloads::Workload;
use std::time::Duration;

/// What labels a row: a workload, or one figure of a workload (the C fastpath has one per
/// size). Shown in the tables' first column and as the chart's groups.
pub trait RowLabel: Copy + PartialEq + std::fmt::Debug {
    /// The name in the tables.
    fn name(&self) -> &'static str;
    /// What one counted operation is, for the report.
    fn unit(&self) -> &'static str;
    /// The absolute figure the Markdown report adds after the ops/s of a cell run with
    /// `threads` threads, when ops/s is not how people read this workload (ns per pair).
    fn detail(&self, _ops_per_sec: f64, _threads: usize) -> Option<String> {
        None
    }
}

impl RowLabel for Workload {
    fn name(&self) -> &'static str {
        Workload::name(*self)
    }

    fn unit(&self) -> &'static str {
        Workload::unit(*self)
    }
}

/// What a results table is about: its heading, how its runs were made, its chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Heading in report.md and the terminal, title of the chart.
    pub title: &'static str,
    /// How one run is made and what its peak RSS counts, one sentence for the report.
    pub method: &'static str,
    /// The chart's file name in the report directory.
    pub chart: &'static str,
}

/// Everything a comparison measured.
#[derive(Debug, Clone)]
pub struct Results<W = Workload> {
    /// What the comparison is.
    pub section: Section,
    /// Allocator names, in column order.
    pub allocators: Vec<&'static str>,
    /// The allocator ratios are taken against (one of `allocators`).
    pub baseline: &'static str,
    /// One row per (workload, threads).
    pub rows: Vec<Row<W>>,
    /// How the runs were sized.
    pub settings: Settings,
}

/// How the runs were sized, for the report's header.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Repetitions per cell.
    pub reps: usize,
    /// Budget of one run.
    pub duration: Duration,
    /// `--full` mode.
    pub full: bool,
    /// Online CPUs of the machine.
    pub cpus: usize,
    /// 1-minute load average before and after the runs (`/proc/loadavg`), if readable: a load
    /// above the CPU count means other work shared the machine and the spread is wider.
    pub load: Option<(f64, f64)>,
}

/// One (workload, threads) row: one [`Samples`] per allocator, in column order.
#[derive(Debug, Clone)]
pub struct Row<W = Workload> {
    /// The workload.
    pub workload: W,
    /// Its thread count.
    pub threads: usize,
    /// Per allocator, in the order of [`Results::allocators`].
    pub cells: Vec<Samples>,
}

/// The repetitions of one (allocator, workload, threads), in repetition order.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Successful runs.
    pub reports: Vec<ChildReport>,
    /// The first failure, if any run failed; a cell with a failure shows FAILED, not a number.
    pub failure: Option<String>,
}

impl Samples {
    /// Records one run's result.
    pub fn push(&mut self, result: Result<ChildReport, String>) {
        match result {
            Ok(report) => self.reports.push(report),
            Err(why) => {
                self.failure.get_or_insert(why);
            }
        }
    }

    fn usable(&self) -> bool {
        self.failure.is_none() && !self.reports.is_empty()
    }

    /// Median ops/s, if every run succeeded.
    pub fn median_ops_per_sec(&self) -> Option<f64> {
        let rates: Vec<f64> = self.reports.iter().map(ChildReport::ops_per_sec).collect();
        self.usable().then(|| median(&rates)).flatten()
    }

    /// Smallest and largest ops/s over the repetitions.
    pub fn range_ops_per_sec(&self) -> Option<(f64, f64)> {
        let rates = self.reports.iter().map(ChildReport::ops_per_sec);
        let min = rates.clone().reduce(f64::min)?;
        Some((min, rates.reduce(f64::max)?))
    }

    /// Median peak RSS in KiB.
    pub fn median_rss_kib(&self) -> Option<f64> {
        let rss: Vec<f64> = self.reports.iter().map(|r| r.maxrss_kib as f64).collect();
        self.usable().then(|| median(&rss)).flatten()
    }
}

impl<W> Row<W> {
    /// Throughput ratio of column `i` against column `base`: the median of per-repetition
    /// ratios. `None` if either side has a failure or no runs.
    pub fn ratio(&self, i: usize, base: usize) -> Option<f64> {
        let (x, b) = (&self.cells[i], &self.cells[base]);
        if !x.usable() || !b.usable() {
            return None;
        }
        let ratios: Vec<f64> = x
            .reports
            .iter()
            .zip(&b.reports)
            .map(|(x, b)| x.ops_per_sec() / b.ops_per_sec())
            .collect();
        median(&ratios)
    }

    /// Peak-RSS ratio of column `i` against column `base` (medians).
    pub fn rss_ratio(&self, i: usize, base: usize) -> Option<f64> {
        Some(self.cells[i].median_rss_kib()? / self.cells[base].median_rss_kib()?)
    }
}

impl<W: RowLabel> Results<W> {
    /// Column index of the baseline.
    pub fn baseline_index(&self) -> usize {
        self.allocators
            .iter()
            .position(|a| *a == self.baseline)
            .expect("baseline is one of the allocators")
    }

    /// Geometric mean over all rows of column `i`'s ratio (rows where it has one).
    pub fn geomean_ratio(&self, i: usize) -> Option<f64> {
        let base = self.baseline_index();
        let ratios: Vec<f64> = self.rows.iter().filter_map(|r| r.ratio(i, base)).collect();
        geomean(&ratios)
    }

    /// Geometric mean over all rows of column `i`'s peak-RSS ratio against the baseline
    /// (rows where both have one).
    pub fn geomean_rss_ratio(&self, i: usize) -> Option<f64> {
        let base = self.baseline_index();
        let ratios: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|r| r.rss_ratio(i, base))
            .collect();
        geomean(&ratios)
    }

    /// Every failure, as `(allocator, workload, threads, message)`.
    pub fn failures(&self) -> Vec<(&'static str, W, usize, &str)> {
        let mut out = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.cells.iter().enumerate() {
                if let Some(why) = &cell.failure {
                    out.push((self.allocators[i], row.workload, row.threads, why.as_str()));
                }
            }
        }
        out
    }
}

/// `1234567.0` → `"1.23M"`.
pub fn human_rate(ops_per_sec: f64) -> String {
    let (value, unit) = if ops_per_sec >= 1e9 {
        (ops_per_sec / 1e9, "G")
    } else if ops_per_sec >= 1e6 {
        (ops_per_sec / 1e6, "M")
    } else if ops_per_sec >= 1e3 {
        (ops_per_sec / 1e3, "k")
    } else {
        (ops_per_sec, "")
    };
    let digits = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let digits = if digits.contains('.') {
        digits.trim_end_matches('0').trim_end_matches('.')
    } else {
        &digits
    };
    format!("{digits}{unit}")
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

/// `report.md` and its charts for one invocation of the runner: the sections of every
/// comparison it ran, in order. Written again after each comparison, so one that crashes
/// later leaves the earlier ones on disk.
#[derive(Debug, Default)]
pub struct ReportFile {
    sections: Vec<String>,
    charts: Vec<(&'static str, String)>,
}

impl ReportFile {
    /// Adds a comparison's section (`extra` Markdown after its tables) and its chart.
    pub fn add<W: RowLabel>(&mut self, results: &Results<W>, extra: &str) {
        self.sections
            .push(format!("{}{extra}", render_markdown(results)));
        self.charts
            .push((results.section.chart, crate::svg::render(results)));
    }

    /// Adds a section that says why a comparison did not run.
    pub fn add_note(&mut self, title: &str, note: &str) {
        self.sections.push(format!("## {title}\n\n{note}\n"));
    }

    /// The whole of report.md.
    pub fn markdown(&self) -> String {
        format!("# tessera-bench report\n\n{}", self.sections.join("\n"))
    }

    /// Writes report.md and the charts into [`paths::report_dir`]; returns a line naming
    /// what was written.
    pub fn write(&self) -> Result<String, String> {
        let report = write_file("report.md", &self.markdown())?;
        for (name, svg) in &self.charts {
            write_file(name, svg)?;
        }
        let charts: Vec<&str> = self.charts.iter().map(|(name, _)| *name).collect();
        Ok(format!(
            "wrote {}{}",
            report.display(),
            if charts.is_empty() {
                String::new()
            } else {
                format!(" and {}", charts.join(", "))
            }
        ))
    }
}

/// Writes `contents` to the file `name` of [`paths::report_dir`] (made if missing); returns
/// its path.
pub fn write_file(name: &str, contents: &str) -> Result<std::path::PathBuf, String> {
    let dir = paths::report_dir();
    let path = dir.join(name);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, contents))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn report(ops: u64, maxrss_kib: u64) -> ChildReport {
        ChildReport {
            ops,
            nanos: 1_000_000_000,
            maxrss_kib,
            tessera: None,
        }
    }

    /// Two allocators, two rows; "b" is twice as fast as the baseline "a" on fastpath and
    /// fails on larson.
    pub(crate) fn sample_results() -> Results {
        let cell = |ops: &[u64], rss| Samples {
            reports: ops.iter().map(|&o| report(o, rss)).collect(),
            failure: None,
        };
        let mut failed = cell(&[5], 2048);
        failed.failure = Some("allocator corrupted a block".into());
        Results {
            section: Section {
                title: "Test comparison",
                method: "one child process per run",
                chart: "chart.svg",
            },
            allocators: vec!["a", "b"],
            baseline: "a",
            rows: vec![
                Row {
                    workload: Workload::Fastpath,
                    threads: 1,
                    cells: vec![
                        cell(&[1_000_000, 1_100_000, 900_000], 4096),
                        cell(&[2_000_000, 2_200_000, 1_800_000], 2048),
                    ],
                },
                Row {
                    workload: Workload::Larson,
                    threads: 2,
                    cells: vec![cell(&[10, 10, 10], 1024), failed],
                },
            ],
            settings: Settings {
                reps: 3,
                duration: Duration::from_millis(150),
                full: false,
                cpus: 2,
                load: Some((0.5, 1.25)),
            },
        }
    }

    #[test]
    fn ratios_are_medians_of_paired_ratios() {
        let r = sample_results();
        assert_eq!(r.rows[0].ratio(1, 0), Some(2.0));
        assert_eq!(r.rows[0].rss_ratio(1, 0), Some(0.5));
        assert_eq!(r.rows[1].ratio(1, 0), None);
        assert_eq!(r.geomean_ratio(1), Some(2.0));
        assert_eq!(r.failures().len(), 1);
    }

    #[test]
    fn human_rates() {
        assert_eq!(human_rate(1_234_567.0), "1.23M");
        assert_eq!(human_rate(1_000_000.0), "1M");
        assert_eq!(human_rate(999.0), "999");
        assert_eq!(human_rate(123_456_789.0), "123M");
        assert_eq!(human_rate(2_500.0), "2.5k");
    }
}
