//! The table of `--rust-programs` (terminal and Markdown share one layout,
//! `programs::table::layout`): one line per (workload, allocator) with the median time, its
//! spread, the speed against the baseline (its time / this time), peak RSS and minor page
//! faults with their ratios against the baseline, then one geomean line per allocator; the
//! tessera lines carry the issue #13 targets, and [`targets`] sums them up.

use crate::programs::table::{ProgramRow, TargetCount, failures, layout, mark, ratio};
use crate::stats::geomean;
use std::fmt::Write as _;

/// Issue #13's targets for tessera against mimalloc in the same run: speed at least this...
pub const SPEED_AT_LEAST: f64 = 1.0;
/// ...peak RSS at most this ratio...
pub const RSS_AT_MOST: f64 = 1.0;
/// ...and minor faults at most this ratio.
pub const FAULTS_AT_MOST: f64 = 3.0;

/// The allocator whose line carries the target marks.
const MARKED: &str = "tessera";

/// Speed of column `i` against column `base`: the baseline's median time over `i`'s (> 1:
/// faster).
pub fn speed(row: &ProgramRow, i: usize, base: usize) -> Option<f64> {
    row.time_ratio(base, i)
}

/// The three ratios of column `i` against `base` on `row`: speed, peak RSS, minor faults.
fn ratios(row: &ProgramRow, i: usize, base: usize) -> [Option<f64>; 3] {
    [
        speed(row, i, base),
        row.rss_ratio(i, base),
        row.minflt_ratio(i, base),
    ]
}

/// Geometric means over the rows of column `i`'s three ratios (rows that have them).
pub fn geomeans(rows: &[ProgramRow], i: usize, base: usize) -> [Option<f64>; 3] {
    let per_row: Vec<[Option<f64>; 3]> = rows.iter().map(|r| ratios(r, i, base)).collect();
    [0, 1, 2].map(|k| geomean(&per_row.iter().filter_map(|r| r[k]).collect::<Vec<f64>>()))
}

/// "speed pass RSS MISS faults pass" for a tessera line.
fn marks([speed, rss, faults]: [Option<f64>; 3]) -> String {
    format!(
        "speed {} RSS {} faults {}",
        mark(speed, |r| r >= SPEED_AT_LEAST),
        mark(rss, |r| r <= RSS_AT_MOST),
        mark(faults, |r| r <= FAULTS_AT_MOST)
    )
}

/// Renders the table: `allocators` are the columns of every row, ratios are against the
/// one named `base`. `markdown` picks the syntax.
pub fn render(allocators: &[&str], base: &str, rows: &[ProgramRow], markdown: bool) -> String {
    let b = allocators.iter().position(|a| *a == base);
    let header = [
        "workload".to_string(),
        "allocator".into(),
        "median".into(),
        "spread".into(),
        format!("speed vs {base}"),
        "peak RSS".into(),
        format!("RSS vs {base}"),
        "minor faults".into(),
        format!("faults vs {base}"),
        "targets".into(),
    ];
    let widths = [10, 9, 9, 6, 18, 11, 16, 12, 19, 27];
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in rows {
        for (i, name) in allocators.iter().enumerate() {
            let cell = &row.cells[i];
            let r = b.map_or([None; 3], |b| ratios(row, i, b));
            let targets = if *name == MARKED && b != Some(i) {
                marks(r)
            } else {
                String::new()
            };
            let median = if cell.failure.is_some() {
                "FAILED".to_string()
            } else {
                row.figure(i).unwrap_or_else(|| "-".into())
            };
            lines.push(vec![
                row.program.to_string(),
                name.to_string(),
                median,
                cell.spread()
                    .map(|s| format!("{:.0}%", s * 100.0))
                    .unwrap_or_else(|| "-".into()),
                ratio(r[0]),
                cell.median_rss_mib()
                    .map(|m| format!("{m:.1} MiB"))
                    .unwrap_or_else(|| "-".into()),
                ratio(r[1]),
                cell.median_minflt()
                    .map(|f| format!("{f:.0}"))
                    .unwrap_or_else(|| "-".into()),
                ratio(r[2]),
                targets,
            ]);
        }
    }
    if let Some(b) = b {
        for (i, name) in allocators.iter().enumerate() {
            let g = geomeans(rows, i, b);
            let targets = if *name == MARKED && i != b {
                marks(g)
            } else {
                String::new()
            };
            let blank = String::new;
            lines.push(vec![
                "geomean".into(),
                name.to_string(),
                blank(),
                blank(),
                ratio(g[0]),
                blank(),
                ratio(g[1]),
                blank(),
                ratio(g[2]),
                targets,
            ]);
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = layout(&header, &widths, &[0, 1, 9], &lines, markdown);
    out.push_str(&failures(allocators, rows, markdown));
    out
}

/// The issue #13 targets for the tessera column against `base` (mimalloc), one line per
/// workload, the geomeans, and a count. Empty without both columns.
pub fn targets(allocators: &[&str], base: &str, rows: &[ProgramRow]) -> String {
    let column = |name: &str| allocators.iter().position(|a| *a == name);
    let (Some(t), Some(b)) = (column(MARKED), column(base)) else {
        return String::new();
    };
    if t == b {
        return String::new();
    }
    let mut out = format!(
        "targets (issue #13, Rust programs), tessera against {base} in the same run: speed >= \
         {SPEED_AT_LEAST:.2}x, peak RSS <= {RSS_AT_MOST:.2}x, minor faults <= {FAULTS_AT_MOST:.2}x\n"
    );
    let mut count = TargetCount::default();
    let mut line = |label: &str, [speed, rss, faults]: [Option<f64>; 3]| {
        let speed = count.check("speed", speed, base, |r| r >= SPEED_AT_LEAST);
        let rss = count.check("peak RSS", rss, base, |r| r <= RSS_AT_MOST);
        let faults = count.check("minor faults", faults, base, |r| r <= FAULTS_AT_MOST);
        let _ = writeln!(out, "  {label:<10} {speed:<28} {rss:<31} {faults}");
    };
    for row in rows {
        line(row.program, ratios(row, t, b));
    }
    line("geomean", geomeans(rows, t, b));
    let _ = writeln!(out, "  {count}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::table::{ProgramCell, Unit};

    fn cell(seconds: &[f64], kib: u64, faults: u64) -> ProgramCell {
        ProgramCell {
            values: seconds.to_vec(),
            rss_kib: vec![kib; seconds.len()],
            minflt: vec![faults; seconds.len()],
            failure: None,
        }
    }

    /// Columns tessera, mimalloc, system.
    fn rows() -> Vec<ProgramRow> {
        vec![
            ProgramRow {
                program: "serde_json",
                unit: Unit::Seconds,
                cells: vec![
                    // Median 0.8 s against mimalloc's 1.0: speed 1.25x.
                    cell(&[0.8, 0.7, 0.9], 2048, 4000),
                    cell(&[1.0, 1.1, 0.9], 1024, 1000),
                    cell(&[2.0, 2.0, 2.0], 4096, 500),
                ],
            },
            ProgramRow {
                program: "syn",
                unit: Unit::Seconds,
                cells: vec![
                    cell(&[2.0], 512, 2000),
                    cell(&[1.0], 1024, 1000),
                    ProgramCell {
                        failure: Some("exit status 101: panicked".into()),
                        ..cell(&[1.0], 1, 1)
                    },
                ],
            },
        ]
    }

    #[test]
    fn ratios_are_against_the_baseline_in_the_right_direction() {
        let rows = rows();
        // tessera: faster on serde_json, twice as slow on syn.
        assert_eq!(speed(&rows[0], 0, 1), Some(1.25));
        assert_eq!(speed(&rows[1], 0, 1), Some(0.5));
        assert_eq!(rows[0].rss_ratio(0, 1), Some(2.0));
        assert_eq!(rows[0].minflt_ratio(0, 1), Some(4.0));
        let [s, r, f] = geomeans(&rows, 0, 1);
        // sqrt(1.25 * 0.5), sqrt(2 * 0.5), sqrt(4 * 2)
        assert!((s.unwrap() - 0.790_569).abs() < 1e-6, "{s:?}");
        assert_eq!(r, Some(1.0));
        assert!((f.unwrap() - 8f64.sqrt()).abs() < 1e-9, "{f:?}");
        // A failed cell has no ratios, and the geomean skips it.
        assert_eq!(speed(&rows[1], 2, 1), None);
        assert_eq!(geomeans(&rows, 2, 1)[0], Some(0.5));
        assert_eq!(geomeans(&rows, 1, 1), [Some(1.0); 3]);
    }

    #[test]
    fn table_marks_tessera_and_lists_failures() {
        let names = ["tessera", "mimalloc", "system"];
        let text = render(&names, "mimalloc", &rows(), false);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start:?} in\n{text}"))
                .to_string()
        };
        let t = line("serde_json tessera");
        assert!(t.contains("0.800 s"), "{t}");
        assert!(t.contains("1.25x"), "{t}");
        assert!(t.contains("2.0 MiB"), "{t}");
        assert!(t.contains("4000"), "{t}");
        assert!(t.contains("speed pass RSS MISS faults MISS"), "{t}");
        assert!(!line("serde_json mimalloc").contains("speed"), "no marks");
        assert!(line("syn        system").contains("FAILED"));
        assert!(line("geomean    tessera").contains("speed MISS RSS pass faults pass"));
        assert!(text.contains("FAILED syn under system: exit status 101: panicked"));
        let md = render(&names, "mimalloc", &rows(), true);
        assert!(md.starts_with("| workload | allocator | median"), "{md}");
        assert!(
            md.contains("|---|---|---:|---:|---:|---:|---:|---:|---:|---|"),
            "{md}"
        );
        assert!(md.contains("| geomean | tessera |"), "{md}");
    }

    #[test]
    fn targets_count_every_check() {
        let names = ["tessera", "mimalloc", "system"];
        let t = targets(&names, "mimalloc", &rows());
        assert!(t.contains("speed 1.25x mimalloc: pass"), "{t}");
        assert!(t.contains("peak RSS 2.00x mimalloc: MISS"), "{t}");
        assert!(t.contains("minor faults 4.00x mimalloc: MISS"), "{t}");
        assert!(t.contains("speed 0.50x mimalloc: MISS"), "{t}");
        // serde_json 1 of 3, syn 2 of 3, geomean 2 of 3.
        assert!(t.ends_with("met 5 of 9\n"), "{t}");
        assert_eq!(targets(&names[1..], "mimalloc", &rows()), "");
    }
}
