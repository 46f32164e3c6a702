//! A tiny, fast, seedable random number generator for the workloads (xorshift64*), so that
//! every allocator sees the same sequence of sizes and choices for the same seed.

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators",
/// 2016). Statistical quality is ample for picking sizes and slots.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; different seeds (e.g. thread indexes) give unrelated streams.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so small consecutive seeds do not start out correlated,
        // and never zero (xorshift's one fixed point).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (Lemire), without division.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_stays_in_bounds_and_covers_it() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 11];
        for _ in 0..10_000 {
            let v = rng.range(10, 20);
            assert!((10..=20).contains(&v));
            seen[v - 10] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn seeds_give_different_streams() {
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert_eq!(Rng::new(5).next_u64(), Rng::new(5).next_u64());
    }
}
