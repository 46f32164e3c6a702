//! The process as a whole: ending it, forking it, waiting for a child, fork and exit
//! handlers.

use crate::error::OsError;

/// Ends the process with `SIGABRT` (core dump where enabled), without unwinding, running
/// exit handlers or allocating: what a report of corrupted memory ends with.
#[inline]
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// Which side of a [`fork`] this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The calling process; the child's pid.
    Parent(i32),
}

/// `fork(2)`: a copy of the process with one thread, the caller.
///
/// Errors: `EAGAIN` (a process limit), `ENOMEM`.
///
/// # Safety
/// In the child, only async-signal-safe work may follow until it `exec`s or ends with
/// [`exit_now`]: any lock another thread held at the fork stays held for ever there (this
/// crate's futex locks and malloc's included, unless fork handlers release them).
pub unsafe fn fork() -> Result<Forked, OsError> {
    // SAFETY: forking itself is always allowed; what the child may do is the caller's
    // contract.
    match unsafe { libc::fork() } {
        -1 => Err(OsError::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends the calling process at once with `code` (`_exit(2)`): no exit handlers, no
/// unwinding, no flushing of C streams.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Arms `SIGALRM` for the calling process in `seconds` (0 disarms). Cannot fail.
pub fn alarm(seconds: u32) {
    // SAFETY: only arms a timer for this process.
    unsafe { libc::alarm(seconds) };
}

/// Waits for child `pid` to end; returns its exit code, or `None` when a signal ended it.
///
/// Errors: `ECHILD` (no such child), `EINTR` (a signal came first).
pub fn wait(pid: i32) -> Result<Option<i32>, OsError> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(OsError::last());
    }
    Ok(libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)))
}

/// Registers fork handlers (`pthread_atfork`): `prepare` runs in the forking thread before
/// the fork, `parent` after it in the parent, `child` after it in the child.
///
/// Errors: `ENOMEM` (glibc allocates a record per registration, from `malloc`: in
/// `libtessera.so` that is Tessera, re-entered).
pub fn atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> Result<(), OsError> {
    // SAFETY: the handlers are `extern "C"` functions, valid for the life of the process.
    match unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) } {
        0 => Ok(()),
        e => Err(OsError(e)),
    }
}

/// Registers `handler` to run at normal process exit (`atexit`: on `exit` or a return from
/// `main`, last registered first; not on `_exit`, `abort` or a fatal signal).
///
/// Errors: `ENOMEM` when the handler table cannot grow (glibc keeps 32 in place and
/// `calloc`s the rest: in `libtessera.so` that is Tessera, re-entered).
pub fn at_exit(handler: extern "C" fn()) -> Result<(), OsError> {
    // SAFETY: `handler` is an `extern "C"` function, valid for the life of the process.
    match unsafe { libc::atexit(handler) } {
        0 => Ok(()),
        _ => Err(OsError(crate::error::ENOMEM)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_exits_with_its_code() {
        // SAFETY: the child only calls `_exit`.
        match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(7),
            Forked::Parent(pid) => assert_eq!(wait(pid).unwrap(), Some(7)),
        }
    }
}
