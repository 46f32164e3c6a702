//! The decay curve (jemalloc's decay, in its simplest form): the heap remembers how many
//! bytes were freed in each of the last ten tenths of the decay time, and lets dirty memory
//! stay up to the sum of those, each weighted by a smoothstep falling from 1 (just freed) to
//! 0 (freed a whole decay time ago). A program that frees and reallocates keeps what it is
//! about to reuse; one that stops has everything back within the decay time. The purge
//! steps (`purge.rs`) return to the OS what the curve does not let stay.

use core::sync::atomic::{AtomicU64, Ordering};

/// Epochs of the decay window: the purge step runs once per epoch.
pub(super) const EPOCHS: usize = 10;

/// The default decay time: a dropped structure that the program rebuilds within a second
/// is rebuilt in resident memory (mimalloc keeps freed memory about as long); a program
/// that goes idle has its free memory back within a second.
pub const DEFAULT_DECAY_MS: u64 = 1000;

/// Decay time in milliseconds; `u64::MAX` means never purge except when asked.
pub(super) static DECAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_DECAY_MS);

/// The decay time in milliseconds (`u64::MAX`: never).
pub fn decay_ms() -> u64 {
    DECAY_MS.load(Ordering::Relaxed)
}

/// How long one purge epoch lasts: a tenth of the decay time, at least 1 ms.
pub fn epoch_ms() -> u64 {
    (decay_ms() / EPOCHS as u64).max(1)
}

/// Smoothstep weights: how much of what was freed `age` epochs ago may stay dirty, in 1/1024.
const fn decay_weights() -> [u64; EPOCHS] {
    let mut w = [0; EPOCHS];
    let mut age = 0;
    while age < EPOCHS {
        // x = age / EPOCHS, in 1/1024; weight = 1 - (3x^2 - 2x^3): 1 in the epoch of the
        // free, falling to 0 when the epoch leaves the window.
        let x = ((age as u64) << 10) / EPOCHS as u64;
        let step = (3 * x * x * 1024 - 2 * x * x * x) >> 20;
        w[age] = 1024u64.saturating_sub(step);
        age += 1;
    }
    w
}
const WEIGHTS: [u64; EPOCHS] = decay_weights();

/// Bytes made dirty per epoch, over the last `EPOCHS` epochs.
pub(super) struct Decay {
    /// The epoch number (`now / epoch_ms`) `freed` was last advanced to.
    epoch: u64,
    freed: [usize; EPOCHS],
}

impl Decay {
    /// Nothing freed yet.
    pub(super) const EMPTY: Decay = Decay {
        epoch: 0,
        freed: [0; EPOCHS],
    };

    /// Moves the window to `now`, dropping epochs that left it.
    fn advance(&mut self, now: u64) {
        let epoch = now / epoch_ms();
        if epoch <= self.epoch {
            return;
        }
        let gone = (epoch - self.epoch).min(EPOCHS as u64);
        for k in 1..=gone {
            self.freed[((self.epoch + k) % EPOCHS as u64) as usize] = 0;
        }
        self.epoch = epoch;
    }

    pub(super) fn note(&mut self, bytes: usize, now: u64) {
        self.advance(now);
        self.freed[(self.epoch % EPOCHS as u64) as usize] += bytes;
    }

    /// Dirty bytes the curve lets stay at `now`.
    pub(super) fn allowed(&mut self, now: u64) -> usize {
        self.advance(now);
        let mut sum: u128 = 0;
        for (age, weight) in WEIGHTS.iter().enumerate() {
            let slot = (self.epoch + EPOCHS as u64 - age as u64) % EPOCHS as u64;
            sum += self.freed[slot as usize] as u128 * *weight as u128;
        }
        (sum >> 10) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_weights_fall_from_one_to_zero() {
        assert_eq!(WEIGHTS[0], 1024, "what was freed this epoch stays");
        assert!(WEIGHTS.windows(2).all(|w| w[0] > w[1]), "{WEIGHTS:?}");
        assert!(WEIGHTS[EPOCHS - 1] > 0 && WEIGHTS[EPOCHS - 1] < 64);
        assert_eq!(WEIGHTS[EPOCHS / 2], 512, "smoothstep is symmetric");
        let mut decay = Decay {
            epoch: 0,
            freed: [0; EPOCHS],
        };
        let e = epoch_ms();
        let t = 1000 * e;
        decay.note(1 << 20, t);
        assert_eq!(decay.allowed(t), 1 << 20);
        assert_eq!(decay.allowed(t + 5 * e), 1 << 19);
        assert_eq!(decay.allowed(t + EPOCHS as u64 * e), 0, "out of the window");
        assert_eq!(decay.allowed(t), 0, "time does not run backwards");
    }
}
