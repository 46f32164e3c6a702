//! A latency histogram with logarithmic buckets (the idea of HdrHistogram, written small):
//! each power of two is split into `SUB_BUCKETS` equal buckets, so every recorded value is
//! known to within 1/`SUB_BUCKETS` (< 0.8 %) at any scale, in a fixed array that recording
//! never allocates into. One per client thread; merged at the end.

use std::time::Duration;

/// log2 of the number of buckets per power of two.
const SUB_BITS: u32 = 7;
/// Buckets per power of two; values below this are counted exactly.
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64` nanosecond count: the exact range, then one row of
/// `SUB_BUCKETS` for each shift from 0 to `64 - SUB_BITS - 1`.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) << SUB_BITS;

/// Counts of latencies in nanoseconds.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The bucket of `ns`: values below `SUB_BUCKETS` are their own bucket; above, the bucket is
/// the row of the value's highest bit and the next `SUB_BITS` bits below it.
fn bucket_of(ns: u64) -> usize {
    if ns < SUB_BUCKETS {
        return ns as usize;
    }
    let shift = 63 - ns.leading_zeros() - SUB_BITS;
    let mantissa = (ns >> shift) - SUB_BUCKETS;
    (((shift + 1) as usize) << SUB_BITS) + mantissa as usize
}

/// The smallest value that falls in `bucket` and the width of the bucket.
fn bucket_range(bucket: usize) -> (u64, u64) {
    let row = bucket >> SUB_BITS;
    let mantissa = (bucket as u64) & (SUB_BUCKETS - 1);
    if row == 0 {
        return (mantissa, 1);
    }
    let shift = row as u32 - 1;
    ((SUB_BUCKETS + mantissa) << shift, 1 << shift)
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The latency below which a fraction `q` (0 < q ≤ 1) of the recorded requests fall: the
    /// middle of the bucket holding the `ceil(q × count)`-th smallest value. `None` if empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_range(bucket);
                return Some(Duration::from_nanos(low + width / 2));
            }
        }
        unreachable!("the counts add up to the total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut expected_low = 0;
        for bucket in 0..bucket_of(u64::MAX) + 1 {
            let (low, width) = bucket_range(bucket);
            assert_eq!(low, expected_low, "bucket {bucket}");
            assert_eq!(bucket_of(low), bucket);
            assert_eq!(bucket_of(low + (width - 1)), bucket);
            expected_low = low.wrapping_add(width);
        }
        assert_eq!(expected_low, 0, "the last bucket ends at u64::MAX");
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn relative_error_is_below_one_percent() {
        for ns in [
            1u64,
            127,
            128,
            129,
            1000,
            65_432,
            1_234_567,
            987_654_321_000,
        ] {
            let (low, width) = bucket_range(bucket_of(ns));
            let mid = low + width / 2;
            assert!(
                mid.abs_diff(ns) as f64 <= ns as f64 / 100.0,
                "{ns} -> {mid}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_sample() {
        let mut h = Histogram::new();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let close = |q: f64, us: f64| {
            let got = h.quantile(q).unwrap().as_nanos() as f64 / 1000.0;
            assert!((got - us).abs() <= us / 100.0, "q{q}: {got} µs, want {us}");
        };
        close(0.5, 500.0);
        close(0.99, 990.0);
        close(1.0, 1000.0);
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        b.record(Duration::from_micros(30));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let p50 = a.quantile(0.5).unwrap().as_micros();
        assert!((29..=31).contains(&p50), "{p50}");
    }
}
