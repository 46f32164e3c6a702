//! What a Tessera feature costs in the same run, when `--allocators` names Tessera both with
//! and without it: the heap profiler (issue #18, item 4: `tessera`, sampling at the default
//! rate, against `tessera-noprof`, `TESSERA_PROF_RATE=0`; bars 3% on the fast path's rows,
//! 1% on the geomean of all rows) and the hardening (issue #15, item 6: `tessera` against
//! `tessera-unhardened`, built with `--cfg tessera_unhardened`; bars 3% and 3%). Wall time
//! on a shared machine swings by more than those bars; `--prof-cost` (`crate::icount`)
//! counts the profiler's cost in instructions, and judges its figures with [`judge`] too.

use std::fmt::Write as _;

use super::{Results, Row, RowLabel};
use crate::stats::geomean;

/// The most the fast path's rows may lose to sampling.
pub const FAST_PATH_BAR: f64 = 0.03;
/// The most the geomean of every row may lose to sampling.
pub const GEOMEAN_BAR: f64 = 0.01;

/// A feature whose cost the tables report: the column without it, and the bars.
#[derive(Debug)]
pub struct Cost {
    /// The column of Tessera without the feature (`tessera` has it).
    pub off: &'static str,
    /// The lines' heading.
    pub heading: &'static str,
    /// The most a fast-path row may lose.
    pub fast_bar: f64,
    /// The most the geomean of every row may lose.
    pub geomean_bar: f64,
}

/// The heap profiler's sampling (issue #18).
pub const PROFILING: Cost = Cost {
    off: "tessera-noprof",
    heading: "profiling cost (issue #18): tessera (sampling at the default rate) against \
              tessera-noprof (TESSERA_PROF_RATE=0), same run:",
    fast_bar: FAST_PATH_BAR,
    geomean_bar: GEOMEAN_BAR,
};

/// The hardened free lists and double-free checks (issue #15).
pub const HARDENING: Cost = Cost {
    off: "tessera-unhardened",
    heading: "hardening cost (issue #15): tessera against tessera-unhardened (built with \
              --cfg tessera_unhardened), same run:",
    fast_bar: 0.03,
    geomean_bar: 0.03,
};

/// The cost lines of every feature in [`PROFILING`] and [`HARDENING`] whose two columns the
/// run has (see [`cost`]).
pub fn feature_costs<W: RowLabel>(
    results: &Results<W>,
    fast_path: impl Fn(&Row<W>) -> bool,
) -> String {
    [&PROFILING, &HARDENING]
        .iter()
        .map(|c| cost(results, &fast_path, c))
        .collect()
}

/// The profiler's cost lines (see [`cost`]).
pub fn profiling_cost<W: RowLabel>(
    results: &Results<W>,
    fast_path: impl Fn(&Row<W>) -> bool,
) -> String {
    cost(results, &fast_path, &PROFILING)
}

/// The cost lines of `feature`: per fast-path row (`fast_path` picks them) and over all
/// rows, the throughput `tessera` loses against `feature.off` (1 - the median of
/// per-repetition ratios; negative: faster). Empty without both columns.
pub fn cost<W: RowLabel>(
    results: &Results<W>,
    fast_path: &impl Fn(&Row<W>) -> bool,
    feature: &Cost,
) -> String {
    let column = |name: &str| results.allocators.iter().position(|a| *a == name);
    let (Some(on), Some(off)) = (column("tessera"), column(feature.off)) else {
        return String::new();
    };
    let mut out = format!("{}\n", feature.heading);
    let fast: Vec<(String, Option<f64>)> = results
        .rows
        .iter()
        .filter(|r| fast_path(r))
        .map(|row| {
            (
                format!("{} t={}", row.workload.name(), row.threads),
                row.ratio(on, off).map(|ratio| 1.0 - ratio),
            )
        })
        .collect();
    let ratios: Vec<f64> = results
        .rows
        .iter()
        .filter_map(|r| r.ratio(on, off))
        .collect();
    out.push_str(&judge(
        &fast,
        geomean(&ratios).map(|g| 1.0 - g),
        "  ",
        feature,
    ));
    out
}

/// The verdict lines against `feature`'s bars, each line starting with `indent`: of the
/// fast path's rows (label, cost: the fraction of throughput or instructions the feature
/// costs, `None` without a figure), how many meet its fast-path bar, the highest and the
/// misses; then the geomean cost of every row against its geomean bar. Shared by the
/// wall-time lines above and `--prof-cost`'s instruction counts (`crate::icount`).
pub fn judge(
    fast: &[(String, Option<f64>)],
    geomean_cost: Option<f64>,
    indent: &str,
    feature: &Cost,
) -> String {
    let mut out = String::new();
    let (mut met, mut misses) = (0, Vec::new());
    let mut worst: Option<(f64, &str)> = None;
    for (label, cost) in fast {
        match *cost {
            Some(cost) => {
                if cost <= feature.fast_bar {
                    met += 1;
                } else {
                    misses.push(format!("{label} {}", percent(cost)));
                }
                if worst.is_none_or(|(w, _)| cost > w) {
                    worst = Some((cost, label));
                }
            }
            None => misses.push(format!("{label} no figure")),
        }
    }
    if !fast.is_empty() {
        let _ = write!(
            out,
            "{indent}fast path cost <= {}: {met} of {} rows",
            percent(feature.fast_bar),
            fast.len()
        );
        if let Some((cost, label)) = worst {
            let _ = write!(out, " (highest {label} {})", percent(cost));
        }
        if misses.is_empty() {
            out.push_str(": pass\n");
        } else {
            let _ = writeln!(out, ", MISS: {}", misses.join(", "));
        }
    }
    match geomean_cost {
        Some(cost) => {
            let verdict = if cost <= feature.geomean_bar {
                "pass"
            } else {
                "MISS"
            };
            let _ = writeln!(
                out,
                "{indent}geomean cost {} <= {}: {verdict}",
                percent(cost),
                percent(feature.geomean_bar)
            );
        }
        None => {
            let _ = writeln!(out, "{indent}geomean cost: no figure");
        }
    }
    out
}

/// `0.0312` → `"3.1%"`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChildReport;
    use crate::report::Samples;
    use crate::report::tests::sample_results;
    use crate::workloads::Workload;

    fn cell(ops: &[u64]) -> Samples {
        Samples {
            reports: ops
                .iter()
                .map(|&ops| ChildReport {
                    ops,
                    nanos: 1_000_000_000,
                    maxrss_kib: 4096,
                    tessera: None,
                })
                .collect(),
            failure: None,
        }
    }

    /// Rows of (workload, tessera's ops per repetition, tessera-noprof's); any other
    /// column 1,000 ops.
    fn results(allocators: Vec<&'static str>, rows: &[(Workload, [u64; 3], [u64; 3])]) -> Results {
        let rows = rows
            .iter()
            .map(|(w, on, off)| Row {
                workload: *w,
                threads: 1,
                cells: allocators
                    .iter()
                    .map(|&a| match a {
                        "tessera" => cell(on),
                        "tessera-noprof" => cell(off),
                        _ => cell(&[1000; 3]),
                    })
                    .collect(),
            })
            .collect();
        Results {
            baseline: allocators[0],
            allocators,
            rows,
            ..sample_results()
        }
    }

    fn fast(row: &Row) -> bool {
        row.workload == Workload::Fastpath
    }

    #[test]
    fn the_cost_is_per_repetition_and_names_the_misses() {
        let both = vec!["tessera", "tessera-noprof", "mimalloc"];
        // Fast path: ratios 0.95, 0.96, 0.97 per repetition: median 0.96, a 4% cost.
        let dear = results(
            both.clone(),
            &[
                (Workload::Fastpath, [950, 960, 970], [1000; 3]),
                (Workload::Larson, [1000; 3], [1000; 3]),
            ],
        );
        let t = profiling_cost(&dear, fast);
        assert!(
            t.contains("fast path cost <= 3.0%: 0 of 1 rows (highest fastpath t=1 4.0%), MISS: fastpath t=1 4.0%\n"),
            "{t}"
        );
        // sqrt(0.96 * 1.0) = 0.9798: 2.0%.
        assert!(t.contains("geomean cost 2.0% <= 1.0%: MISS"), "{t}");

        let cheap = results(
            both,
            &[
                (Workload::Fastpath, [990, 1010, 980], [1000; 3]),
                (Workload::Larson, [1010; 3], [1000; 3]),
            ],
        );
        let t = profiling_cost(&cheap, fast);
        assert!(
            t.contains("fast path cost <= 3.0%: 1 of 1 rows (highest fastpath t=1 1.0%): pass"),
            "{t}"
        );
        assert!(t.contains("geomean cost 0.0% <= 1.0%: pass"), "{t}");
    }

    #[test]
    fn the_hardening_is_judged_against_its_own_column_and_bars() {
        let rows = [
            (Workload::Fastpath, [980, 980, 980], [1000; 3]),
            (Workload::Larson, [980; 3], [1000; 3]),
        ];
        // `results` fills `tessera-noprof`'s cells with the "off" figures; here that column
        // is `tessera-unhardened`, so rename it.
        let mut r = results(vec!["tessera", "tessera-noprof", "mimalloc"], &rows);
        r.allocators[1] = "tessera-unhardened";
        let t = feature_costs(&r, fast);
        assert!(t.starts_with("hardening cost (issue #15)"), "{t}");
        // 2% against a 3% bar passes on both lines (the profiler's geomean bar is 1%).
        assert!(t.contains("(highest fastpath t=1 2.0%): pass"), "{t}");
        assert!(t.contains("geomean cost 2.0% <= 3.0%: pass"), "{t}");
        assert!(!t.contains("profiling cost"), "{t}");
    }

    #[test]
    fn nothing_without_both_columns() {
        let rows = [(Workload::Fastpath, [1; 3], [1; 3])];
        for columns in [
            vec!["tessera", "mimalloc"],
            vec!["tessera-noprof", "mimalloc"],
        ] {
            assert_eq!(profiling_cost(&results(columns, &rows), fast), "");
        }
    }
}
