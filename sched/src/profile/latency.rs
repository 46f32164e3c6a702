//! The scheduling-latency histogram (`Stats::latency`) as text.
//!
//! The format is Prometheus's text exposition format, a histogram with cumulative
//! `_bucket{le=".."}` lines in seconds: it is what metrics scrapers read (Go exports its own
//! `/sched/latencies:seconds` to Prometheus the same way, through client libraries), and a
//! person reads it too. pprof has no histogram type. The buckets are the histogram's own
//! (powers of two of nanoseconds); there is no `_sum`, since the runtime counts samples per
//! bucket and not their total.

use std::io::Write;

use crate::stats::Stats;

/// The metric's name.
const NAME: &str = "tessera_sched_latency_seconds";

/// Writes the scheduling-latency histogram of the runtime the caller runs on (or of every
/// live runtime, from a plain thread: [`crate::stats`]) in Prometheus's text format:
/// the time from becoming runnable to running, sampled one transition in eight per
/// coroutine, in cumulative buckets whose upper bounds are powers of two of nanoseconds.
pub fn write_sched_latency(out: &mut impl Write) -> std::io::Result<()> {
    write_histogram(out, &crate::stats())
}

fn write_histogram(out: &mut impl Write, s: &Stats) -> std::io::Result<()> {
    writeln!(
        out,
        "# HELP {NAME} Time from runnable to running, sampled one transition in eight per coroutine."
    )?;
    writeln!(out, "# TYPE {NAME} histogram")?;
    let mut cumulative = 0;
    let buckets = s.latency.len();
    for (i, &n) in s.latency.iter().enumerate() {
        cumulative += n;
        // The last bucket holds everything longer: it is +Inf's alone.
        if i + 1 < buckets {
            // Both exact, so the quotient is the double nearest the bound, printed shortest.
            let le = (1u64 << (i + 1)) as f64 / 1e9;
            writeln!(out, "{NAME}_bucket{{le=\"{le:e}\"}} {cumulative}")?;
        }
    }
    writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}")?;
    writeln!(out, "{NAME}_count {cumulative}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_in_inf() {
        let mut s = crate::stats();
        s.latency = [0; crate::processor::LATENCY_BUCKETS];
        s.latency[0] = 3; // [1, 2) ns
        s.latency[10] = 5; // [1024, 2048) ns
        s.latency[crate::processor::LATENCY_BUCKETS - 1] = 1; // very long
        let mut out = Vec::new();
        write_histogram(&mut out, &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        let value = |le: &str| -> u64 {
            let key = format!("{NAME}_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse().unwrap()
        };
        assert_eq!(value("2e-9"), 3);
        assert_eq!(value("1.024e-6"), 3);
        assert_eq!(value("2.048e-6"), 8);
        assert_eq!(value("+Inf"), 9);
        assert!(text.contains(&format!("{NAME}_count 9")));
        assert!(text.contains(&format!("# TYPE {NAME} histogram")));
    }
}
