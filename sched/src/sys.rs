//! The OS primitives the scheduler uses (from `tessera_sys`), behind a narrow interface:
//! futex wait/wake (the parkers of `park.rs`), the coarse clock, the SIGQUIT pipe (`dump.rs`)
//! and `OsError` as `io::Error`. Under loom the futex is a mutex and a condition variable
//! (below).

use core::ffi::c_int;
use core::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tessera_sys::{io, signal};

use crate::shim::AtomicU32;

/// Blocks while `*word == expected`, at most `timeout`. May return spuriously.
#[cfg(not(tessera_loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    tessera_sys::futex::wait(word, expected, timeout);
}

/// Wakes up to `n` threads blocked in `futex_wait` on `word`.
#[cfg(not(tessera_loom))]
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    tessera_sys::futex::wake(word, n);
}

// Under loom an untimed futex wait really blocks: every word shares one model-wide mutex and
// condition variable. The waiter compares the word and sleeps under the mutex; the waker
// takes the mutex after changing the word and wakes every sleeper (each re-checks, as after
// a spurious wake-up). So a wake-up is never lost that the kernel would deliver, and a
// thread nobody wakes is blocked: loom reports it as a deadlock at once. A yield instead
// would leave two forgotten sleepers spinning, which loom only reports through its branch
// limit, after exploring the spin. Timed waits stay a yield: loom has no clock.
#[cfg(tessera_loom)]
loom::lazy_static! {
    static ref FUTEX: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

#[cfg(tessera_loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    if timeout.is_some() {
        loom::thread::yield_now();
        return;
    }
    let (lock, cv) = &*FUTEX;
    let g = lock.lock().unwrap();
    if word.load(core::sync::atomic::Ordering::Relaxed) == expected {
        drop(cv.wait(g).unwrap());
    }
}

#[cfg(tessera_loom)]
pub(crate) fn futex_wake(_word: &AtomicU32, _n: i32) {
    let (lock, cv) = &*FUTEX;
    let _g = lock.lock().unwrap();
    cv.notify_all();
}

/// An error of `tessera_sys` as std's, for the scheduler's `io::Result`s.
pub(crate) fn os_error(e: tessera_sys::error::OsError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.0)
}

/// Monotonic nanoseconds from the coarse clock (a few ns through the vDSO, ~1-4 ms
/// resolution): good enough for a coroutine's age, cheap enough for every spawn.
pub(crate) use tessera_sys::clock::coarse_now_ns;

/// Nanoseconds on the precise monotonic clock (since boot, never 0): for the sampled
/// latencies and run lengths, which compare two readings of their own. `Shared::now_ns`
/// (the timers' clock) converts an `Instant`, some 70 instructions more per reading.
pub(crate) use tessera_sys::clock::monotonic_ns;

/// Write end of the SIGQUIT pipe (-1 before `install_sigquit`).
static SIGQUIT_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigquit(_sig: c_int) {
    let fd = SIGQUIT_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // write(2) is async-signal-safe. A full pipe (a dump already pending) just drops the
        // byte, which is what we want.
        let _ = io::write_all(fd, &[1]);
    }
}

/// Installs a SIGQUIT handler that only writes a byte to a pipe, and returns the pipe's read
/// end (the same one on every call). The reader (a thread of `dump.rs`) does the printing.
pub(crate) fn install_sigquit() -> std::io::Result<i32> {
    static READ: AtomicI32 = AtomicI32::new(-1);
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut err = None;
    ONCE.call_once(|| {
        let (read, write) = match signal::self_pipe() {
            Ok(fds) => fds,
            Err(e) => {
                err = Some(os_error(e));
                return;
            }
        };
        SIGQUIT_WRITE.store(write, Ordering::Relaxed);
        READ.store(read, Ordering::Relaxed);
        // SAFETY: `on_sigquit` only does async-signal-safe work.
        if let Err(e) = unsafe { signal::install_handler(signal::SIGQUIT, on_sigquit) } {
            err = Some(os_error(e));
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(READ.load(Ordering::Relaxed))
}

/// Blocks until one byte arrives on `fd`; false on EOF or error (`EINTR` is retried).
pub(crate) fn read_byte(fd: i32) -> bool {
    let mut b = [0u8];
    matches!(io::read(fd, &mut b), Ok(1))
}
