//! Files without allocating: `/proc`, `/sys` and cgroup files read into stack buffers,
//! directories listed with `getdents64` (glibc's `opendir` would `malloc` its buffer),
//! symbolic links read into the caller's buffer, and files written from a slice (the heap
//! profile), never through stdio.

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

    /// Creates `path`, or truncates it if it exists, for writing only, close-on-exec, with
    /// permissions `mode` less the umask for a new file. Retries on `EINTR`.
    ///
    /// Errors: the `errno` of any other failure (`ENOENT` for a missing directory, `EACCES`,
    /// `EISDIR`, `EROFS`, `EMFILE`, `ENOSPC`).
    pub fn create(path: &CStr, mode: u32) -> Result<Fd, OsError> {
        loop {
            // SAFETY: `path` is a valid NUL-terminated string for the duration of the call;
            // `open` does not touch caller memory otherwise.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                    mode,
                )
            };
            if fd >= 0 {
                return Ok(Fd(fd));
            }
            let e = OsError::last();
            if e.0 != EINTR {
                return Err(e);
            }
        }
    }

    /// Writes all of `bytes` ([`io::write_all`](crate::io::write_all): short writes go on,
    /// `EINTR` retries).
    ///
    /// Errors: the `errno` of the write that failed (`ENOSPC`, `EDQUOT`, `EIO`, `EFBIG`);
    /// `EIO` for a write that makes no progress. What was written before stays written.
    pub fn write_all(&self, bytes: &[u8]) -> Result<(), OsError> {
        crate::io::write_all(self.0, bytes)
    }

    /// Reads into `buf`; `Ok(0)` at end of file. Retries on `EINTR`.
    ///
    /// Errors: the `errno` of any other failure (`EISDIR`, `EIO`, and for sysfs attributes
    /// whatever the driver returns, e.g. `ENODEV` or `EINVAL`).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, OsError> {
        crate::io::read(self.0, buf)
    }

    /// Reads up to `buf.len()` bytes at `offset` in the file (`pread`), leaving the file
    /// position alone; fewer at end of file. Retries on `EINTR`. The bytes come from the
    /// page cache without mapping anything into the process (the unwinder reads `.eh_frame`
    /// this way: `tessera`'s `unwind/file.rs`).
    ///
    /// Errors: the `errno` of any other failure (`EISDIR`, `EIO`, `ESPIPE` for a pipe or
    /// socket, `EINVAL` for an offset beyond `i64`).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, OsError> {
        let offset = i64::try_from(offset).map_err(|_| OsError(libc::EINVAL))?;
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and the kernel writes
            // at most that many.
            let n = unsafe { libc::pread64(self.0, buf.as_mut_ptr().cast(), buf.len(), offset) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = OsError::last();
            if e.0 != EINTR {
                return Err(e);
            }
        }
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

/// Reads the target of the symbolic link `path` into `buf` (`readlink`, which writes no NUL)
/// and returns its length. A target as long as `buf` may have been cut short: callers that
/// need the whole of it treat `Ok(buf.len())` as too long.
///
/// Errors: `ENOENT`, `EACCES`, `EINVAL` (not a symbolic link), `ENOTDIR`, `ELOOP`.
pub fn read_link(path: &CStr, buf: &mut [u8]) -> Result<usize, OsError> {
    // SAFETY: `path` is NUL-terminated and `buf` is writable for its whole length; readlink
    // writes at most that many bytes.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// What `path` names, without following a final symbolic link (`lstat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing (`ENOENT`).
    Absent,
    /// A regular file.
    Regular,
    /// Anything else: a directory, a device (`/dev/stdout`), a pipe, a socket, a symbolic
    /// link; or `lstat` failed otherwise (`EACCES`, `ENOTDIR`).
    Other,
}

/// What `path` names ([`Kind`]).
pub fn kind(path: &CStr) -> Kind {
    // SAFETY: all-zero is a valid `stat`, which lstat fills in.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is writable, for the call.
    if unsafe { libc::lstat(path.as_ptr(), &mut st) } != 0 {
        return if crate::error::errno() == crate::error::ENOENT {
            Kind::Absent
        } else {
            Kind::Other
        };
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        Kind::Regular
    } else {
        Kind::Other
    }
}

/// Renames `from` to `to`, replacing `to` atomically if it exists (`rename`): a reader of
/// `to` sees the old file or the new one, never a part of either.
///
/// Errors: `ENOENT`, `EACCES`, `EXDEV` (different file systems), `EISDIR`, `EROFS`.
pub fn rename(from: &CStr, to: &CStr) -> Result<(), OsError> {
    // SAFETY: both paths are NUL-terminated strings, valid for the call.
    check(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) } as libc::c_long).map(|_| ())
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
    fn kinds_of_paths() {
        assert_eq!(kind(c"/proc/self/status"), Kind::Regular);
        assert_eq!(kind(c"/nonexistent/file"), Kind::Absent);
        assert_eq!(kind(c"/dev/null"), Kind::Other);
        assert_eq!(kind(c"/proc/self"), Kind::Other); // a symbolic link
        assert_eq!(kind(c"/"), Kind::Other);
    }

    #[test]
    fn rename_replaces_the_target() {
        let dir = std::env::temp_dir();
        let from = dir.join(std::format!("tessera-sys-rename-{}.a", std::process::id()));
        let to = dir.join(std::format!("tessera-sys-rename-{}.b", std::process::id()));
        std::fs::write(&from, b"new").unwrap();
        std::fs::write(&to, b"old").unwrap();
        let c =
            |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        rename(&c(&from), &c(&to)).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
        assert_eq!(
            rename(&c(&from), &c(&to)),
            Err(OsError(crate::error::ENOENT))
        );
        std::fs::remove_file(&to).unwrap();
    }

    #[test]
    fn links_read_into_the_buffer() {
        let mut buf = [0u8; 4096];
        let n = read_link(c"/proc/self/exe", &mut buf).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&buf[..n], exe.as_os_str().as_encoded_bytes());
        let mut short = [0u8; 2];
        assert_eq!(read_link(c"/proc/self/exe", &mut short), Ok(2));
        assert_eq!(
            read_link(c"/proc/self/stat", &mut buf),
            Err(OsError(crate::error::EINVAL))
        );
    }

    #[test]
    fn created_files_are_written_whole_and_truncated_when_created_again() {
        let path = std::format!(
            "{}/tessera-sys-fs-{}\0",
            std::env::temp_dir().display(),
            std::process::id()
        );
        let c_path = CStr::from_bytes_with_nul(path.as_bytes()).unwrap();
        let fd = Fd::create(c_path, 0o600).unwrap();
        fd.write_all(b"hello, world").unwrap();
        drop(fd);
        Fd::create(c_path, 0o600).unwrap().write_all(b"hi").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(read_small_file(c_path, &mut buf), b"hi");
        std::fs::remove_file(&path[..path.len() - 1]).unwrap();
        assert_eq!(
            Fd::create(c"/nonexistent/dir/file", 0o600).unwrap_err(),
            OsError(crate::error::ENOENT)
        );
    }

    #[test]
    fn directories_list_and_files_do_not() {
        let dir = Fd::open(c"/proc/self", O_DIRECTORY).unwrap();
        let mut buf = [0u8; 1024];
        assert!(dir.getdents64(&mut buf).unwrap() > 0);
        assert!(Fd::open(c"/proc/self/stat", O_DIRECTORY).is_none());
    }
}
