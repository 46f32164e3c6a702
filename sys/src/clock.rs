//! Clocks. The coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): read through the vDSO in
//! a few nanoseconds, without a syscall, at the resolution of the kernel's tick (1-4 ms).
//! Good enough for the page heap's decay, a cache's idle stash and a coroutine's age; cheap
//! enough to read on every spawn. One reading, in two units. The precise monotonic clock
//! (`CLOCK_MONOTONIC`, also through the vDSO) in plain nanoseconds, for the scheduler's
//! sampled latencies. And the wall clock (`CLOCK_REALTIME`), for the time stamp a profile
//! carries.

/// Reads `clock`. Cannot fail: the clock ids used here are valid on every Linux since
/// 2.6.32 and the out-pointer is ours, so the return value is not checked.
#[inline]
fn read(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// The coarse clock's `(seconds, nanoseconds)`.
#[inline]
fn coarse() -> (u64, u64) {
    let ts = read(libc::CLOCK_MONOTONIC_COARSE);
    (ts.tv_sec as u64, ts.tv_nsec as u64)
}

/// Milliseconds on the coarse monotonic clock.
#[inline]
pub fn coarse_now_ms() -> u64 {
    let (sec, nsec) = coarse();
    sec * 1000 + nsec / 1_000_000
}

/// Nanoseconds on the coarse monotonic clock (a multiple of its resolution).
#[inline]
pub fn coarse_now_ns() -> u64 {
    let (sec, nsec) = coarse();
    sec * 1_000_000_000 + nsec
}

/// Nanoseconds on the monotonic clock (`CLOCK_MONOTONIC`, through the vDSO: the clock
/// `std::time::Instant` reads, without its conversions), since an arbitrary start (boot);
/// never 0. Cannot fail, as [`coarse_now_ns`].
#[inline]
pub fn monotonic_ns() -> u64 {
    let ts = read(libc::CLOCK_MONOTONIC);
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1)
}

/// Nanoseconds since the Unix epoch on the wall clock (`CLOCK_REALTIME`, through the vDSO);
/// it jumps when the system time is set. Cannot fail, as [`coarse_now_ns`]; negative only
/// for a clock set before 1970.
#[inline]
pub fn realtime_ns() -> i64 {
    let ts = read(libc::CLOCK_REALTIME);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_units_read_the_same_clock() {
        let ms = coarse_now_ms();
        let ns = coarse_now_ns();
        assert!(ns / 1_000_000 >= ms);
        assert!(coarse_now_ms() >= ms);
    }

    /// The precise clock is the coarse one's, at a finer resolution: a coarse reading
    /// taken between two precise ones lies between them, give or take a coarse tick.
    #[test]
    fn the_precise_clock_is_monotonic_and_the_coarse_ones() {
        let a = monotonic_ns();
        let coarse = coarse_now_ns();
        let b = monotonic_ns();
        assert!(a <= b);
        const TICK: u64 = 10_000_000;
        assert!(coarse <= b + TICK && coarse + TICK >= a, "{a} {coarse} {b}");
    }

    #[test]
    fn the_wall_clock_is_the_unix_time() {
        let std_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let ours = realtime_ns();
        // Read one after the other: within a minute of each other, whatever the machine.
        assert!((ours - std_ns).abs() < 60_000_000_000);
    }
}
