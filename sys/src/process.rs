//! The process as a whole: ending it at once.

/// Ends the process with `SIGABRT` (core dump where enabled), without unwinding, running
/// exit handlers or allocating: what a report of corrupted memory ends with.
#[inline]
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}
