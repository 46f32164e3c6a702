//! The results of `--programs` and their table (terminal and Markdown share one layout).

use crate::stats::median;
use std::fmt::Write as _;
use std::time::Duration;

/// One program's runs under every preload.
#[derive(Debug, Clone)]
pub struct ProgramRow {
    /// Program name.
    pub program: &'static str,
    /// Per preload, in column order.
    pub cells: Vec<ProgramCell>,
}

/// The repetitions of one (program, preload).
#[derive(Debug, Clone, Default)]
pub struct ProgramCell {
    /// Wall times of successful runs.
    pub walls: Vec<Duration>,
    /// Peak RSS (KiB) of successful runs.
    pub rss_kib: Vec<u64>,
    /// First failure: a crash, or output that differs from the reference run's.
    pub failure: Option<String>,
}

impl ProgramCell {
    /// Median wall time in seconds, if no run failed.
    pub fn median_secs(&self) -> Option<f64> {
        let secs: Vec<f64> = self.walls.iter().map(Duration::as_secs_f64).collect();
        self.failure.is_none().then(|| median(&secs)).flatten()
    }

    /// Median peak RSS in MiB, if no run failed.
    pub fn median_rss_mib(&self) -> Option<f64> {
        let mib: Vec<f64> = self.rss_kib.iter().map(|&k| k as f64 / 1024.0).collect();
        self.failure.is_none().then(|| median(&mib)).flatten()
    }
}

/// Renders the table: per preload, median wall time, time ratio against the reference
/// column (`< 1`: faster), and median peak RSS. `markdown` picks the syntax.
pub fn render(preloads: &[&str], reference: usize, rows: &[ProgramRow], markdown: bool) -> String {
    let mut out = String::new();
    let sep = if markdown { " | " } else { " |" };
    let _ = write!(out, "{}{:<16}", if markdown { "| " } else { "" }, "program");
    for name in preloads {
        let _ = write!(out, "{sep}{name:>24}");
    }
    out.push_str(if markdown { " |\n" } else { "\n" });
    if markdown {
        out.push_str("|---|");
        out.push_str(&"---:|".repeat(preloads.len()));
        out.push('\n');
    } else {
        let _ = writeln!(out, "{}", "-".repeat(16 + 26 * preloads.len()));
    }
    for row in rows {
        let _ = write!(
            out,
            "{}{:<16}",
            if markdown { "| " } else { "" },
            row.program
        );
        let base = row.cells[reference].median_secs();
        for cell in &row.cells {
            let text = match (&cell.failure, cell.median_secs(), cell.median_rss_mib()) {
                (Some(_), _, _) => "FAILED".to_string(),
                (None, Some(secs), Some(rss)) => {
                    let ratio = base
                        .map(|b| format!("{:.2}x", secs / b))
                        .unwrap_or_else(|| "n/a".into());
                    format!("{secs:.3}s {ratio} {rss:.1} MiB")
                }
                _ => "-".to_string(),
            };
            let _ = write!(out, "{sep}{text:>24}");
        }
        out.push_str(if markdown { " |\n" } else { "\n" });
    }
    for row in rows {
        for (i, cell) in row.cells.iter().enumerate() {
            if let Some(why) = &cell.failure {
                let _ = writeln!(
                    out,
                    "{}FAILED {} under {}: {why}",
                    if markdown { "\n- " } else { "" },
                    row.program,
                    preloads[i]
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_time_ratio_rss_and_failures() {
        let ok = |ms: u64, kib: u64| ProgramCell {
            walls: vec![Duration::from_millis(ms); 3],
            rss_kib: vec![kib; 3],
            failure: None,
        };
        let rows = vec![ProgramRow {
            program: "sqlite3",
            cells: vec![
                ok(1000, 10240),
                ok(500, 20480),
                ProgramCell {
                    failure: Some("wrong output".into()),
                    ..ok(1, 1)
                },
            ],
        }];
        let text = render(&["glibc", "mimalloc", "tessera"], 0, &rows, false);
        assert!(text.contains("1.000s 1.00x 10.0 MiB"), "{text}");
        assert!(text.contains("0.500s 0.50x 20.0 MiB"), "{text}");
        assert!(
            text.contains("FAILED sqlite3 under tessera: wrong output"),
            "{text}"
        );
        let md = render(&["glibc", "mimalloc", "tessera"], 0, &rows, true);
        assert!(md.starts_with("| program"), "{md}");
        assert!(md.contains("|---|---:|---:|---:|"), "{md}");
    }
}
