//! A comparison's section of `report.md`.

use super::{Results, RowLabel, human_rate, mib, render_tessera_memory};
use std::fmt::Write as _;

/// A section of `report.md`: settings, the ratio table, the absolute table, failures, and
/// what one operation is per workload.
pub fn render_markdown<W: RowLabel>(results: &Results<W>) -> String {
    let mut md = String::new();
    settings(&mut md, results);
    ratio_table(&mut md, results);
    absolute_table(&mut md, results);
    failures(&mut md, results);
    if let Some(memory) = render_tessera_memory(results) {
        let _ = write!(md, "\n### Where tessera's memory is\n\n{memory}");
    }
    units(&mut md, results);
    md
}

/// The heading, how the runs were made and on what machine, and the chart.
fn settings<W: RowLabel>(md: &mut String, results: &Results<W>) {
    let s = &results.settings;
    let _ = writeln!(md, "## {}\n", results.section.title);
    let _ = writeln!(
        md,
        "Mode: {}, {} ms per run, median of {} repetition(s), allocators interleaved within each \
         repetition; {} CPU(s). {}. Throughput ratios are against **{}** measured in the same \
         run (ratio > 1: faster than {}); each is the median of the per-repetition ratios.\n",
        if s.full { "full" } else { "quick" },
        s.duration.as_millis(),
        s.reps,
        s.cpus,
        results.section.method,
        results.baseline,
        results.baseline,
    );
    if let Some((before, after)) = s.load {
        let _ = writeln!(
            md,
            "Load average (1 min) before the runs: {before:.2}, after: {after:.2}.\n"
        );
    }
    let _ = writeln!(
        md,
        "![ratio vs {}]({})\n",
        results.baseline, results.section.chart
    );
}

/// Per cell the throughput ratio, the peak RSS and its ratio against the baseline; the
/// geometric means last.
fn ratio_table<W: RowLabel>(md: &mut String, results: &Results<W>) {
    let base = results.baseline_index();
    let _ = writeln!(md, "### Throughput ratio and peak RSS\n");
    table_header(md, &results.allocators);
    for row in &results.rows {
        let _ = write!(md, "| {} | {} |", row.workload.name(), row.threads);
        for (i, cell) in row.cells.iter().enumerate() {
            let text = if cell.failure.is_some() {
                "**FAILED**".to_string()
            } else {
                match (
                    row.ratio(i, base),
                    cell.median_rss_kib(),
                    row.rss_ratio(i, base),
                ) {
                    (Some(r), Some(rss), Some(rr)) if i != base => {
                        format!("{r:.2}x, {} MiB ({rr:.2}x)", mib(rss))
                    }
                    (Some(_), Some(rss), _) => format!("1.00x, {} MiB", mib(rss)),
                    _ => "n/a".to_string(),
                }
            };
            let _ = write!(md, " {text} |");
        }
        md.push('\n');
    }
    let _ = write!(md, "| **geomean** (throughput, peak RSS) | |");
    for (i, _) in results.allocators.iter().enumerate() {
        match (results.geomean_ratio(i), results.geomean_rss_ratio(i)) {
            (Some(g), Some(r)) => {
                let _ = write!(md, " {g:.2}x, RSS {r:.2}x |");
            }
            (Some(g), None) => {
                let _ = write!(md, " {g:.2}x |");
            }
            _ => md.push_str(" |"),
        }
    }
}

/// Per cell the median ops/s with the range over the repetitions, and the workload's own
/// figure where it has one.
fn absolute_table<W: RowLabel>(md: &mut String, results: &Results<W>) {
    md.push_str("\n\n### Absolute throughput (ops/s: median, min–max)\n\n");
    table_header(md, &results.allocators);
    for row in &results.rows {
        let _ = write!(md, "| {} | {} |", row.workload.name(), row.threads);
        for cell in &row.cells {
            let text = match (cell.median_ops_per_sec(), cell.range_ops_per_sec()) {
                (Some(m), Some((lo, hi))) => {
                    let detail = row
                        .workload
                        .detail(m, row.threads)
                        .map(|d| format!(", {d}"))
                        .unwrap_or_default();
                    format!(
                        "{} ({}–{}){detail}",
                        human_rate(m),
                        human_rate(lo),
                        human_rate(hi)
                    )
                }
                _ if cell.failure.is_some() => "**FAILED**".to_string(),
                _ => "n/a".to_string(),
            };
            let _ = write!(md, " {text} |");
        }
        md.push('\n');
    }
}

/// Every failed run's message, if any failed.
fn failures<W: RowLabel>(md: &mut String, results: &Results<W>) {
    let failures = results.failures();
    if !failures.is_empty() {
        md.push_str("\n### Failures\n\n");
        for (alloc, workload, threads, why) in failures {
            let _ = writeln!(
                md,
                "- {alloc}, {}, {threads} thread(s): `{why}`",
                workload.name()
            );
        }
    }
}

/// What one counted operation is, per workload.
fn units<W: RowLabel>(md: &mut String, results: &Results<W>) {
    md.push_str("\n### What one operation is\n\n");
    let mut seen = Vec::new();
    for row in &results.rows {
        if !seen.contains(&row.workload) {
            seen.push(row.workload);
            let _ = writeln!(md, "- **{}**: {}", row.workload.name(), row.workload.unit());
        }
    }
}

/// The header of a Markdown table with one column per allocator.
fn table_header(md: &mut String, allocators: &[&str]) {
    let _ = write!(md, "| workload | threads |");
    for name in allocators {
        let _ = write!(md, " {name} |");
    }
    let _ = write!(md, "\n|---|---:|");
    for _ in allocators {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_results;

    #[test]
    fn markdown_has_both_tables_and_the_legend() {
        let md = render_markdown(&sample_results());
        assert!(
            md.contains("| fastpath | 1 | 1.00x, 4.0 MiB | 2.00x, 2.0 MiB (0.50x) |"),
            "{md}"
        );
        assert!(
            md.contains("| larson | 2 | 1.00x, 1.0 MiB | **FAILED** |"),
            "{md}"
        );
        assert!(md.contains("1M (900k–1.1M)"), "{md}");
        assert!(md.starts_with("## Test comparison\n"), "{md}");
        assert!(md.contains("### Failures"));
        assert!(md.contains("**fastpath**: malloc+free pair"));
        assert!(md.contains("chart.svg"));
        assert!(md.contains("before the runs: 0.50, after: 1.25"), "{md}");
    }
}
