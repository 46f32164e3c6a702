//! Small statistics over repetitions: the median (robust to the odd slow run a shared
//! machine produces) and the geometric mean (the right average of ratios).
//!
//! Every table of the runner takes its medians here: the allocator tables (`report/`,
//! `c_mode`), the program tables (`programs`, `rust_programs`), the echo comparison and the
//! scheduler tables (`sched`, `sched_timers`), so an even number of repetitions means the
//! same thing in all of them.

use std::cmp::Ordering;

/// The median of `values`: the middle value of an odd count, the mean of the two middle
/// values of an even count (the usual definition, and the one that does not lean towards
/// the slower or the faster half of the runs). `None` when there is no figure: `values` is
/// empty, or the median falls on a NaN.
///
/// A NaN sorts above every number whatever its sign bit, so a minority of them acts as
/// large outliers do (it moves the median by at most its count in ranks) and never panics
/// the sort.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(nan_last);
    let mid = sorted.len() / 2;
    let m = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    (!m.is_nan()).then_some(m)
}

/// Total order on `f64` with every NaN (either sign) after every number, numbers in
/// `total_cmp` order (so -0.0 before 0.0).
fn nan_last(a: &f64, b: &f64) -> Ordering {
    a.is_nan().cmp(&b.is_nan()).then_with(|| a.total_cmp(b))
}

/// The geometric mean of positive `values`; `None` if empty or any is not positive.
pub fn geomean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan() || *v <= 0.0) {
        return None;
    }
    Some((values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_ignores_the_order_of_its_input() {
        let mut values = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        for _ in 0..values.len() {
            values.rotate_left(1);
            assert_eq!(median(&values), Some(3.0));
        }
    }

    #[test]
    fn median_resists_outliers() {
        assert_eq!(median(&[1.0, 2.0, 3.0, 1e12]), Some(2.5));
        assert_eq!(median(&[-1e12, 2.0, 3.0]), Some(2.0));
        assert_eq!(median(&[f64::INFINITY, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_with_nans() {
        // A minority of NaNs, of either sign, counts as the largest values.
        let negative_nan = -f64::NAN;
        assert!(negative_nan.is_sign_negative() && negative_nan.is_nan());
        assert_eq!(median(&[f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[negative_nan, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, negative_nan, 4.0]), Some(3.0));
        // A median that falls on a NaN is no figure.
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 1.0, negative_nan]), None);
    }

    #[test]
    fn geomean_of_ratios() {
        let g = geomean(&[2.0, 0.5]).unwrap();
        assert!((g - 1.0).abs() < 1e-12);
        assert_eq!(geomean(&[1.0, 0.0]), None);
    }
}
