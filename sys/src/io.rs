//! Writing without allocating: every report Tessera makes on its way down (a corrupted
//! free list, a failed page-heap check, a stack overflow in a signal handler, an
//! out-of-memory `operator new`) goes through [`write_all`], usually as a [`Line`] built in
//! a stack buffer. No `core::fmt` machinery, no allocation, no panic, no lock: `write(2)`
//! is async-signal-safe and the caller may hold any lock, malloc's included. ([`fwrite`], for
//! `malloc_info`'s C stream, is the exception, and says so.)

use core::ffi::c_int;

use crate::error::{EINTR, EIO, OsError};

/// The standard error descriptor.
pub const STDERR: c_int = 2;

/// Writes all of `bytes` to `fd`: a short write goes on with the rest, `EINTR` retries.
///
/// Errors: the `errno` of any other failure (`EBADF`, `EPIPE`, `EAGAIN` on a full
/// non-blocking pipe, `EIO`); a write that makes no progress (returns 0) ends with `EIO`.
/// What was written before the failure stays written.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), OsError> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is an initialised slice for the length given.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = OsError::last();
            if e.0 == EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(OsError(EIO));
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// Reads into `buf` from `fd`, retrying on `EINTR`; `Ok(0)` at end of file.
///
/// Errors: the `errno` of any other failure (`EAGAIN` on an empty non-blocking descriptor,
/// `EBADF`, `EIO`).
pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize, OsError> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and the kernel writes at
        // most that many.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = OsError::last();
        if e.0 != EINTR {
            return Err(e);
        }
    }
}

/// Writes `bytes` to stderr as far as it can ([`write_all`]); errors are dropped, since
/// there is nobody left to tell.
pub fn write_stderr(bytes: &[u8]) {
    let _ = write_all(STDERR, bytes);
}

/// Writes `bytes` to the C stream `fp` with `fwrite`; returns how many were written (fewer
/// on an error, which the stream records: `ferror(fp)`, `errno` set).
///
/// Not for the allocator's paths: glibc's stdio `malloc`s a buffer on the first output to a
/// buffered stream that has none yet, and takes the stream's lock.
///
/// # Safety
/// `fp` must be a valid stream open for writing.
pub unsafe fn fwrite(fp: *mut crate::c::FILE, bytes: &[u8]) -> usize {
    // SAFETY: `fp` is valid (the contract); `bytes` is initialised for its length.
    unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), fp) }
}

/// A line of a report, built in an `N`-byte stack buffer and written to stderr: text and
/// numbers are appended (what does not fit is cut off), [`Line::emit`] writes the line and
/// starts the next, [`Line::abort`] writes it and ends the process.
#[derive(Debug)]
pub struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Line<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
        }
    }

    /// Appends `s`.
    pub fn text(&mut self, s: &str) -> &mut Self {
        let bytes = s.as_bytes();
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    fn digits(&mut self, mut value: usize, base: usize) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut at = tmp.len();
        loop {
            at -= 1;
            tmp[at] = b"0123456789abcdef"[value % base];
            value /= base;
            if value == 0 {
                break;
            }
        }
        // The digits are ASCII.
        self.text(core::str::from_utf8(&tmp[at..]).unwrap_or("?"))
    }

    /// Appends `value` as `0x` and lower-case hexadecimal digits.
    pub fn hex(&mut self, value: usize) -> &mut Self {
        self.text("0x").digits(value, 16)
    }

    /// Appends `value` in decimal.
    pub fn dec(&mut self, value: usize) -> &mut Self {
        self.digits(value, 10)
    }

    /// What the line holds so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line and a newline to stderr and empties the buffer for the next one.
    pub fn emit(&mut self) -> &mut Self {
        self.text("\n");
        write_stderr(&self.buf[..self.len]);
        self.len = 0;
        self
    }

    /// Writes the line to stderr, then aborts the process.
    pub fn abort(&mut self) -> ! {
        self.emit();
        crate::process::abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_formats_numbers_and_cuts_what_does_not_fit() {
        let mut l = Line::<64>::new();
        l.text("a")
            .dec(0)
            .text(" ")
            .dec(1234)
            .text(" ")
            .hex(0xdead_beef);
        assert_eq!(l.as_bytes(), b"a0 1234 0xdeadbeef");
        let mut short = Line::<4>::new();
        short.text("abc").dec(12345);
        assert_eq!(short.as_bytes(), b"abc1");
    }

    #[test]
    fn write_all_reports_a_bad_descriptor() {
        assert_eq!(write_all(-1, b"x"), Err(OsError(crate::error::EBADF)));
        assert_eq!(write_all(-1, b""), Ok(()));
    }
}
