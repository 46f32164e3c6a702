//! The futex, Linux's wait-on-a-word primitive, behind two functions: every lock and parker in
//! the workspace (`lock.rs` here, the scheduler's parkers and channel locks) sleeps through it.

use core::sync::atomic::AtomicU32;
use core::time::Duration;

/// Blocks while `*word == expected`, for at most `timeout` (forever with `None`). May return
/// early or spuriously: callers re-check their condition in a loop.
///
/// Errors are not reported, since every one means "look at the word again": `EAGAIN` (the
/// word did not hold `expected`), `EINTR` (a signal), `ETIMEDOUT`.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT only reads the word, which outlives the call, and compares it;
    // `ts_ptr` is null or points at `ts`, alive until the call returns.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `n` threads blocked in `wait` on `word`. Cannot fail on a valid word (the
/// kernel's `EFAULT`/`EINVAL` are ruled out by the reference), so nothing is returned.
pub fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE uses the word's address as a key and touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn wait_returns_when_the_word_differs_or_times_out() {
        let word = AtomicU32::new(1);
        wait(&word, 0, None); // not equal: returns at once
        wait(&word, 1, Some(Duration::from_millis(1))); // equal: returns after the timeout
    }

    #[test]
    fn wake_releases_a_waiter() {
        let word = Arc::new(AtomicU32::new(0));
        let waiter = {
            let word = Arc::clone(&word);
            thread::spawn(move || {
                while word.load(Ordering::Acquire) == 0 {
                    wait(&word, 0, None);
                }
            })
        };
        word.store(1, Ordering::Release);
        wake(&word, 1);
        waiter.join().unwrap();
    }
}
