//! `chart.svg`: grouped bars of each allocator's throughput ratio against the baseline, one
//! panel per thread count, one group per workload. Hand-written SVG, no dependency.
//!
//! The ratio axis is logarithmic (2x faster and 2x slower are the same distance from the
//! baseline line) and clamped to 1/8..8; a clamped bar ends in an arrow-like cap, a failed run
//! is a red "F". Hovering a bar shows its exact figure (an SVG `<title>`).

use crate::report::{Results, RowLabel};
use std::fmt::Write as _;

const PALETTE: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const BAR: f64 = 12.0;
const GROUP_GAP: f64 = 18.0;
const MIN_GROUP_WIDTH: f64 = 84.0;
const LEFT: f64 = 56.0;
const PANEL_HEIGHT: f64 = 190.0;
const PANEL_GAP: f64 = 64.0;
const TOP: f64 = 72.0;
/// log2 of the largest ratio drawn.
const LOG_LIMIT: f64 = 3.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart of `results`.
pub fn render<W: RowLabel>(results: &Results<W>) -> String {
    let layout = Layout::of(results);
    let mut svg = String::new();
    header(&mut svg, results, &layout);
    for (p, &t) in layout.threads.iter().enumerate() {
        let panel = Panel {
            top: TOP + p as f64 * (PANEL_HEIGHT + PANEL_GAP),
        };
        panel.axis(&mut svg, t, layout.width);
        for (g, &workload) in layout.workloads.iter().enumerate() {
            panel.group(&mut svg, results, &layout, g, workload, t);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// What the chart holds and how wide it is: the columns drawn (all but the baseline), the
/// workloads (groups) and thread counts (panels) in the order of the rows.
#[derive(Debug)]
struct Layout<W> {
    /// Column of the baseline.
    base: usize,
    /// Columns drawn, in order; bar `k` of a group is `others[k]`.
    others: Vec<usize>,
    workloads: Vec<W>,
    threads: Vec<usize>,
    group_width: f64,
    width: f64,
    height: f64,
}

impl<W: RowLabel> Layout<W> {
    fn of(results: &Results<W>) -> Self {
        let base = results.baseline_index();
        let others: Vec<usize> = (0..results.allocators.len())
            .filter(|&i| i != base)
            .collect();
        let mut workloads = Vec::new();
        let mut threads = Vec::new();
        for row in &results.rows {
            if !workloads.contains(&row.workload) {
                workloads.push(row.workload);
            }
            if !threads.contains(&row.threads) {
                threads.push(row.threads);
            }
        }
        // Wide enough for the longest workload name under the group.
        let group_width = (BAR * others.len().max(1) as f64 + GROUP_GAP).max(MIN_GROUP_WIDTH);
        let width = (LEFT + group_width * workloads.len() as f64 + 20.0).max(560.0);
        let height = TOP + (PANEL_HEIGHT + PANEL_GAP) * threads.len() as f64;
        Self {
            base,
            others,
            workloads,
            threads,
            group_width,
            width,
            height,
        }
    }
}

/// The opening tag, the title, the settings line and the legend.
fn header<W: RowLabel>(svg: &mut String, results: &Results<W>, layout: &Layout<W>) {
    let (width, height) = (layout.width, layout.height);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}: throughput ratio vs {}</text>"#,
        escape(results.section.title),
        escape(results.baseline)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="34" fill="#444">log scale, above the line = faster; median of {} rep(s) of {} ms</text>"##,
        results.settings.reps,
        results.settings.duration.as_millis()
    );
    // Legend.
    let mut x = LEFT;
    for (k, &i) in layout.others.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="44" width="10" height="10" fill="{color}"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="53">{}</text>"#,
            x + 14.0,
            escape(results.allocators[i])
        );
        x += 24.0 + 7.0 * results.allocators[i].len() as f64;
    }
}

/// One thread count's panel, `top` its upper edge: the ratio 1 line is across its middle.
#[derive(Debug)]
struct Panel {
    top: f64,
}

impl Panel {
    /// The height of the baseline's line.
    fn mid(&self) -> f64 {
        self.top + PANEL_HEIGHT / 2.0
    }

    /// The height of `ratio`, clamped to the drawn range.
    fn y_of(&self, ratio: f64) -> f64 {
        self.mid() - ratio.log2().clamp(-LOG_LIMIT, LOG_LIMIT) / LOG_LIMIT * (PANEL_HEIGHT / 2.0)
    }

    /// The panel's label (`t` threads) and its ratio grid, the line at 1 solid.
    fn axis(&self, svg: &mut String, t: usize, width: f64) {
        let _ = writeln!(
            svg,
            r#"<text x="4" y="{}" font-weight="bold">{t} thr</text>"#,
            self.top - 6.0
        );
        for (ratio, label) in [
            (8.0, "8x"),
            (4.0, "4x"),
            (2.0, "2x"),
            (1.0, "1x"),
            (0.5, "1/2"),
            (0.25, "1/4"),
            (0.125, "1/8"),
        ] {
            let y = self.y_of(ratio);
            let (stroke, dash) = if ratio == 1.0 {
                ("#000", "")
            } else {
                ("#ccc", r#" stroke-dasharray="3,3""#)
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"{dash}/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
                width - 10.0,
                LEFT - 6.0,
                y + 4.0
            );
        }
    }

    /// Group `g`: the name of `workload` under it and a bar per drawn column of its row at
    /// `t` threads (none if there is no such row).
    fn group<W: RowLabel>(
        &self,
        svg: &mut String,
        results: &Results<W>,
        layout: &Layout<W>,
        g: usize,
        workload: W,
        t: usize,
    ) {
        let bars = BAR * layout.others.len() as f64;
        let gx = LEFT + g as f64 * layout.group_width + (layout.group_width - bars) / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + bars / 2.0,
            self.top + PANEL_HEIGHT + 14.0,
            escape(workload.name())
        );
        let Some(row) = results
            .rows
            .iter()
            .find(|r| r.workload == workload && r.threads == t)
        else {
            return;
        };
        for (k, &i) in layout.others.iter().enumerate() {
            let x = gx + k as f64 * BAR;
            let name = escape(results.allocators[i]);
            if row.cells[i].failure.is_some() {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" fill="#d00" font-weight="bold" text-anchor="middle">F<title>{name} {} t={t}: FAILED</title></text>"##,
                    x + BAR / 2.0,
                    self.mid() - 4.0,
                    escape(workload.name())
                );
                continue;
            }
            if let Some(ratio) = row.ratio(i, layout.base) {
                let label = format!("{name} {} t={t}", escape(workload.name()));
                self.bar(svg, x, ratio, PALETTE[k % PALETTE.len()], &label);
            }
        }
    }

    /// A bar at `x` from the baseline's line to `ratio`, with an arrow-like cap when the
    /// ratio is beyond the drawn range; hovering it shows `label` and the ratio.
    fn bar(&self, svg: &mut String, x: f64, ratio: f64, color: &str, label: &str) {
        let mid = self.mid();
        let y = self.y_of(ratio);
        let (y0, h) = if y < mid {
            (y, mid - y)
        } else {
            (mid, y - mid)
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{label}: {ratio:.2}x</title></rect>"#,
            x + 1.0,
            BAR - 2.0,
            h.max(0.5),
        );
        if ratio.log2().abs() > LOG_LIMIT {
            let tip = if ratio > 1.0 { y0 - 6.0 } else { y0 + h + 6.0 };
            let _ = writeln!(
                svg,
                r#"<path d="M{:.1},{:.1} L{:.1},{tip:.1} L{:.1},{:.1} Z" fill="{color}"/>"#,
                x + 1.0,
                if ratio > 1.0 { y0 } else { y0 + h },
                x + BAR / 2.0,
                x + BAR - 1.0,
                if ratio > 1.0 { y0 } else { y0 + h }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_results;

    #[test]
    fn chart_has_bars_failures_and_is_balanced() {
        let svg = render(&sample_results());
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("b fastpath t=1: 2.00x"), "{svg}");
        assert!(svg.contains("b larson t=2: FAILED"), "{svg}");
        assert!(svg.contains(">1 thr<"));
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count() + 2,
            "{svg}"
        );
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
