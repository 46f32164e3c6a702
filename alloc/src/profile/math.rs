//! The two transcendental functions the profiler needs, without libm.
//!
//! `f64::ln` and `f64::exp` call libm's `log` and `exp`, and those two calls were all that
//! made `libtessera.so` depend on `libm.so.6`. A program that does not link libm itself
//! (git, most small C tools) then loaded it for us: ~460 KiB more resident memory under
//! `LD_PRELOAD`, since every symbol lookup of the process also searches libm's hash
//! tables. The profiler needs neither function to the last bit: `ln_unit` spaces the
//! samples (an exponential draw), to 1e-11; `exp` scales them (Go's `scaleHeapSample`), to a
//! few units in the last place over the range it is used on (tests below).

use core::f64::consts::{LN_2, SQRT_2};

/// The natural logarithm of `x` in `(0, 1]`, normal, to about 1e-11 relative: the
/// sampler's interval draw (its argument is at least 2^-53), which needs no more (the full
/// precision took five more terms and ~60 more instructions per sample).
#[inline]
pub(crate) fn ln_unit(x: f64) -> f64 {
    debug_assert!((f64::MIN_POSITIVE..=1.0).contains(&x));
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1) / (m + 1), |s| < 0.172:
    // seven terms, the rest below 2 * 0.172^15 / 15 < 1e-12.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut sum = 1.0 / 13.0;
    for k in (0..6).rev() {
        sum = sum * s2 + 1.0 / (2 * k + 1) as f64;
    }
    e as f64 * LN_2 + 2.0 * s * sum
}

/// e raised to `x` (0 below -745, infinity above 709.8, NaN for NaN).
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < -745.2 {
        return 0.0;
    }
    if x > 709.8 {
        return f64::INFINITY;
    }
    // x = k ln 2 + r with |r| <= ln 2 / 2; e^r by its Taylor series (14 terms: 4e-18).
    let q = x / LN_2;
    let k = (if q < 0.0 { q - 0.5 } else { q + 0.5 }) as i64;
    let r = x - k as f64 * LN_2;
    let mut sum = 1.0;
    for n in (1..15).rev() {
        sum = 1.0 + sum * r / n as f64;
    }
    // 2^k in two steps, so that k down to -1075 stays representable on the way.
    let half = k / 2;
    sum * pow2(half) * pow2(k - half)
}

/// 2^k for k in [-1022, 1023].
fn pow2(k: i64) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        a == b || (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn ln_unit_matches_libm_on_the_unit_interval() {
        // Every binade the sampler's draws reach (2^-53 to 1), and points inside each.
        let mut x = 1.0f64;
        while x >= 1.0 / (1u64 << 53) as f64 {
            for f in [1.0, 0.999_999_9, 0.75, 0.71, 0.70, 0.5 + 1e-12] {
                let v = x * f;
                let want = v.ln();
                assert!(
                    (ln_unit(v) - want).abs() <= 1e-11 * want.abs().max(1e-300),
                    "ln_unit({v}) = {} not {want}",
                    ln_unit(v)
                );
            }
            x *= 0.5;
        }
        assert_eq!(ln_unit(1.0), 0.0);
    }

    #[test]
    fn exp_matches_libm() {
        let mut x = -708.0f64;
        while x < 709.0 {
            assert!(
                close(exp(x), x.exp(), 1e-13),
                "exp({x}) = {} not {}",
                exp(x),
                x.exp()
            );
            x += 0.731;
        }
        for v in [0.0, -1.0, 1.0, -1e-9, -32768.0, 1e-300] {
            assert!(
                close(exp(v), v.exp(), 1e-14),
                "exp({v}) = {} not {}",
                exp(v),
                v.exp()
            );
        }
        // Subnormal results: a few ulps of the smallest subnormal.
        for v in [-709.5, -720.0, -740.0, -745.0] {
            assert!(
                (exp(v) - v.exp()).abs() <= 1e-13 * v.exp() + 2e-323,
                "exp({v})"
            );
        }
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(800.0), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
    }
}
