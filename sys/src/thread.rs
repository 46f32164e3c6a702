//! Threads as the kernel sees them: ids, liveness, yielding.

/// The calling thread's kernel id (`gettid(2)`), always positive. Cannot fail.
#[inline]
pub fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` exists in this process: `tgkill(getpid(), tid, 0)` sends no signal
/// and fails with `ESRCH` only when there is no such thread in our thread group (any other
/// failure, `EPERM` say, still means the thread is there).
pub fn thread_alive(tid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    r == 0 || crate::error::errno() != libc::ESRCH
}

/// `sched_yield(2)`, for brief waits on another thread. Cannot fail on Linux.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_positive() {
        let me = gettid();
        assert!(me > 0);
        assert!(thread_alive(me));
        yield_now();
    }
}
