//! Files read without allocating: `/proc`, `/sys` and cgroup files into stack buffers, and
//! directories listed with `getdents64` (glibc's `opendir` would `malloc` its buffer).

use core::ffi::{CStr, c_int, c_void};

use crate::error::{EINTR, OsError, check};

pub use libc::O_DIRECTORY;

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(c_int);

impl Fd {
    /// Opens `path` read-only and close-on-exec; `flags` may add `O_DIRECTORY`. Retries on
    /// `EINTR`.
    ///
    /// Errors: `None` on any other failure (`ENOENT`, `EACCES`, `ENOTDIR` with
    /// `O_DIRECTORY`, `EMFILE`): callers treat a file they cannot open as absent.
    pub fn open(path: &CStr, flags: c_int) -> Option<Fd> {
        loop {
            // SAFETY: `path` is a valid NUL-terminated string for the duration of the call;
            // `open` with these flags does not touch caller memory otherwise.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | flags) };
            if fd >= 0 {
                return Some(Fd(fd));
            }
            if crate::error::errno() != EINTR {
                return None;
            }
        }
    }

    /// Reads into `buf`; `Ok(0)` at end of file. Retries on `EINTR`.
    ///
    /// Errors: the `errno` of any other failure (`EISDIR`, `EIO`, and for sysfs attributes
    /// whatever the driver returns, e.g. `ENODEV` or `EINVAL`).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, OsError> {
        crate::io::read(self.0, buf)
    }

    /// Reads directory entries (`struct linux_dirent64` records) into `buf`; `Ok(0)` at end.
    ///
    /// Errors: `ENOTDIR` when the descriptor is not a directory, `EINVAL` when `buf` cannot
    /// hold the next record.
    pub fn getdents64(&self, buf: &mut [u8]) -> Result<usize, OsError> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the kernel writes whole
        // records and at most that many bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                self.0,
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
            )
        };
        check(n).map(|n| n as usize)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and nothing else refers to it after this point.
        unsafe { libc::close(self.0) };
    }
}

/// Reads up to `buf.len()` bytes of a small file (`/proc`, `/sys`) with one `read`, without
/// allocating. Errors read as empty: callers fall back to a default.
pub fn read_small_file<'a>(path: &CStr, buf: &'a mut [u8]) -> &'a [u8] {
    let Some(fd) = Fd::open(path, 0) else {
        return &[];
    };
    let n = fd.read(buf).unwrap_or(0);
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_read_whole_or_empty() {
        let mut buf = [0u8; 64];
        assert!(!read_small_file(c"/proc/self/stat", &mut buf).is_empty());
        assert!(read_small_file(c"/nonexistent/file", &mut buf).is_empty());
    }

    #[test]
    fn directories_list_and_files_do_not() {
        let dir = Fd::open(c"/proc/self", O_DIRECTORY).unwrap();
        let mut buf = [0u8; 1024];
        assert!(dir.getdents64(&mut buf).unwrap() > 0);
        assert!(Fd::open(c"/proc/self/stat", O_DIRECTORY).is_none());
    }
}
