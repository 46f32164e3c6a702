//! Errors from the kernel: [`OsError`] carries the `errno` of a failed call, and the
//! `errno` values callers test for are re-exported here, so no crate above needs `libc` to
//! name them.

use core::fmt;

pub use libc::{
    EAGAIN, EBADF, EEXIST, EFAULT, EINPROGRESS, EINTR, EINVAL, EIO, ENOENT, ENOMEM, ENOSYS,
    ENOTCONN, EPERM, ESRCH,
};

/// An OS call failed; carries `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsError(pub i32);

impl OsError {
    /// The calling thread's `errno` now, as an error: call right after the failed call.
    #[inline]
    pub fn last() -> Self {
        Self(errno())
    }

    /// True when the kernel refused for lack of memory or of mappings (`vm.max_map_count`).
    pub fn is_out_of_memory(self) -> bool {
        self.0 == ENOMEM
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OS error {}", self.0)
    }
}

impl core::error::Error for OsError {}

/// The calling thread's `errno`.
#[inline]
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` has no preconditions and returns a valid pointer to this
    // thread's errno for the life of the thread.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno` (the C interface reports its failures there).
#[inline]
pub fn set_errno(value: i32) {
    // SAFETY: `__errno_location` returns the calling thread's `errno`, valid for as long
    // as the thread lives.
    unsafe { *libc::__errno_location() = value };
}

/// Turns a raw return (negative on failure, `errno` set) into `Ok(value)` or the error.
#[inline]
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, OsError> {
    if ret < 0 {
        Err(OsError::last())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn os_error_is_an_error_without_a_source() {
        let e: &dyn core::error::Error = &OsError(ENOMEM);
        assert_eq!(e.to_string(), "OS error 12");
        assert!(e.source().is_none());
    }

    #[test]
    fn errno_round_trips() {
        set_errno(EINVAL);
        assert_eq!(errno(), EINVAL);
        assert_eq!(OsError::last(), OsError(EINVAL));
    }
}
