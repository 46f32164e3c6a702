//! The terminal table of a comparison.

use super::{Results, RowLabel, human_rate, mib, render_tessera_memory};
use std::fmt::Write as _;

/// The terminal table: per allocator, the ratio against the baseline (the baseline shows its
/// absolute ops/s) and peak RSS in MiB.
pub fn render_terminal<W: RowLabel>(results: &Results<W>) -> String {
    const CELL: usize = 18;
    let base = results.baseline_index();
    let s = &results.settings;
    let mut out = String::new();
    let _ = writeln!(out, "{}", results.section.title);
    let _ = writeln!(
        out,
        "throughput vs {} (ratio > 1: faster), median of {} rep(s) of {} ms; peak RSS in MiB",
        results.baseline,
        s.reps,
        s.duration.as_millis()
    );
    let _ = write!(out, "{:<14}{:>4} ", "workload", "thr");
    for name in &results.allocators {
        let _ = write!(out, "|{name:>w$} ", w = CELL - 1);
    }
    out.push('\n');
    let _ = write!(out, "{:<14}{:>4} ", "", "");
    for (i, _) in results.allocators.iter().enumerate() {
        let head = if i == base {
            "ops/s      RSS"
        } else {
            "ratio      RSS"
        };
        let _ = write!(out, "|{head:>w$} ", w = CELL - 1);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        "-".repeat(19 + (CELL + 1) * results.allocators.len())
    );
    for row in &results.rows {
        let _ = write!(out, "{:<14}{:>4} ", row.workload.name(), row.threads);
        for (i, cell) in row.cells.iter().enumerate() {
            let text = if cell.failure.is_some() {
                "FAILED".to_string()
            } else if cell.reports.is_empty() {
                "-".to_string()
            } else {
                let figure = if i == base {
                    cell.median_ops_per_sec()
                        .map(human_rate)
                        .unwrap_or_default()
                } else {
                    row.ratio(i, base)
                        .map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "n/a".into())
                };
                let rss = cell.median_rss_kib().map(mib).unwrap_or_default();
                format!("{figure:>8} {rss:>8}")
            };
            let _ = write!(out, "|{text:>w$} ", w = CELL - 1);
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<19}", "geomean");
    for (i, _) in results.allocators.iter().enumerate() {
        // The ratio, and the peak-RSS ratio where the RSS column stands.
        let text = match (results.geomean_ratio(i), results.geomean_rss_ratio(i)) {
            (Some(g), Some(r)) if i != base => {
                format!("{:>8} {:>8}", format!("{g:.2}x"), format!("{r:.2}x"))
            }
            (Some(g), None) if i != base => format!("{g:.2}x         "),
            _ => String::new(),
        };
        let _ = write!(out, "|{text:>w$} ", w = CELL - 1);
    }
    out.push('\n');
    for (alloc, workload, threads, why) in results.failures() {
        let _ = writeln!(out, "FAILED {alloc} {} t={threads}: {why}", workload.name());
    }
    if let Some(memory) = render_tessera_memory(results) {
        let _ = write!(out, "\n{memory}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_results;

    #[test]
    fn terminal_table_shows_ratios_rss_and_failures() {
        let text = render_terminal(&sample_results());
        assert!(text.contains("throughput vs a"), "{text}");
        assert!(text.contains("2.00x"), "{text}");
        assert!(text.contains("1M"), "{text}"); // baseline absolute rate
        assert!(text.contains("FAILED"), "{text}");
        assert!(
            text.contains("FAILED b larson t=2: allocator corrupted a block"),
            "{text}"
        );
        assert!(text.contains("4.0"), "{text}"); // 4096 KiB in MiB
    }
}
