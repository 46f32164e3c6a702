//! The OS primitives the scheduler uses, behind a narrow interface: futex wait/wake (the
//! parkers of `park.rs`) and the SIGQUIT pipe (`dump.rs`). Under loom the futex is a mutex
//! and a condition variable (below).

use core::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

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

/// Write end of the SIGQUIT pipe (-1 before `install_sigquit`).
static SIGQUIT_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigquit(_sig: libc::c_int) {
    let fd = SIGQUIT_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one byte on this stack. A full
        // pipe (a dump already pending) just drops the byte, which is what we want.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// Installs a SIGQUIT handler that only writes a byte to a pipe, and returns the pipe's read
/// end (the same one on every call). The reader (a thread of `dump.rs`) does the printing.
pub(crate) fn install_sigquit() -> std::io::Result<i32> {
    static READ: AtomicI32 = AtomicI32::new(-1);
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut err = None;
    ONCE.call_once(|| {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid out-array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            err = Some(std::io::Error::last_os_error());
            return;
        }
        // The read end blocks (the dump thread waits on it); the write end must not (signal).
        // SAFETY: fds[0] is the pipe's read end we just created.
        unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
        SIGQUIT_WRITE.store(fds[1], Ordering::Relaxed);
        READ.store(fds[0], Ordering::Relaxed);
        // SAFETY: a zeroed sigaction is a valid starting point; we set the handler and an
        // empty mask, and `on_sigquit` only does async-signal-safe work.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_sigquit as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGQUIT, &sa, core::ptr::null_mut()) != 0 {
                err = Some(std::io::Error::last_os_error());
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(READ.load(Ordering::Relaxed))
}

/// Blocks until one byte arrives on `fd`; false on EOF or error.
pub(crate) fn read_byte(fd: i32) -> bool {
    let mut b = 0u8;
    loop {
        // SAFETY: `b` is a valid one-byte buffer.
        let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
        if n == 1 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return false;
    }
}
