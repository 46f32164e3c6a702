//! "Where tessera's memory is": the table of Tessera's own accounting at the end of a run,
//! a section of the terminal table and of `report.md`.

use super::{Results, RowLabel, Samples, mib};
use crate::protocol::TesseraMemory;
use std::fmt::Write as _;

/// The figures of the repetition whose Tessera mapped the median total: one repetition's,
/// so that its parts add up, as a median of each part would not. For an even count it is
/// the lower of the two middle runs (the mean of two runs is not a run), which is why this
/// is not `stats::median`.
fn median_tessera_memory(cell: &Samples) -> Option<TesseraMemory> {
    let mut runs: Vec<TesseraMemory> = cell.reports.iter().filter_map(|r| r.tessera).collect();
    runs.sort_by_key(TesseraMemory::mapped);
    runs.get(runs.len().checked_sub(1)? / 2).copied()
}

/// "Where tessera's memory is": per row, Tessera's breakdown (`tessera::stats()`) at the
/// end of a run, after the workload's threads exited, in MiB, as a Markdown table (which
/// reads as well on a terminal). `None` when no run carries it (no tessera column, or a
/// mode whose runs do not report it).
pub fn render_tessera_memory<W: RowLabel>(results: &Results<W>) -> Option<String> {
    let column = results.allocators.iter().position(|a| *a == "tessera")?;
    let mut table = String::new();
    for row in &results.rows {
        let Some(m) = median_tessera_memory(&row.cells[column]) else {
            continue;
        };
        if table.is_empty() {
            table.push_str(
                "| workload | threads | live | cached | central | heap dirty | heap purged \
                 | metadata | = mapped | resident |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
        }
        let _ = write!(table, "| {} | {} |", row.workload.name(), row.threads);
        for bytes in [
            m.live,
            m.cached,
            m.central,
            m.dirty,
            m.purged,
            m.metadata,
            m.mapped(),
            m.resident,
        ] {
            let _ = write!(table, " {} |", mib(bytes as f64 / 1024.0));
        }
        table.push('\n');
    }
    (!table.is_empty()).then(|| {
        format!(
            "Where tessera's memory is at the end of a run (MiB; the repetition with the median \
             total): live objects, held by thread caches (exited threads' included), on central \
             lists, free pages not yet purged and purged, bookkeeping; they add up to what \
             tessera mapped. Resident is measured (mincore).\n\n{table}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_results;
    use crate::report::{render_markdown, render_terminal};

    #[test]
    fn tessera_memory_table_shows_the_median_run() {
        let mut results = sample_results();
        assert_eq!(
            render_tessera_memory(&results),
            None,
            "no column named tessera"
        );
        results.allocators[1] = "tessera";
        assert_eq!(render_tessera_memory(&results), None, "no run reported it");
        let mib = 1 << 20;
        for (i, report) in results.rows[0].cells[1].reports.iter_mut().enumerate() {
            let k = [3, 1, 2][i];
            report.tessera = Some(TesseraMemory {
                live: k * mib,
                cached: 2 * mib,
                central: mib / 2,
                dirty: 0,
                purged: 10 * mib,
                metadata: mib,
                resident: 4 * mib,
            });
        }
        let table = render_tessera_memory(&results).unwrap();
        // The run with live = 2 MiB has the median total: 2 + 2 + 0.5 + 0 + 10 + 1.
        assert!(
            table.contains("| fastpath | 1 | 2.0 | 2.0 | 0.5 | 0.0 | 10.0 | 1.0 | 15.5 | 4.0 |"),
            "{table}"
        );
        assert!(!table.contains("larson"), "{table}");
        assert!(render_markdown(&results).contains("### Where tessera's memory is"));
        assert!(render_terminal(&results).contains("| fastpath | 1 | 2.0 |"));
    }
}
