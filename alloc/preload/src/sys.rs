//! The few libc services the C interface needs besides the allocator: `errno`, the page
//! size, a last-words report on stderr, and looking up C++ runtime functions by name.
//!
//! Nothing here allocates on the way to a normal return: `errno` is a thread-local int,
//! `sysconf(_SC_PAGESIZE)` reads a value the loader stored, and reports are assembled in a
//! stack buffer and written with `write(2)`.

use core::ffi::{CStr, c_int};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's `errno`, valid for as long
    // as the thread lives.
    unsafe { *libc::__errno_location() = value };
}

/// The OS page size (`valloc`, `pvalloc`), cached after the first call.
#[inline]
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `sysconf` has no preconditions; for `_SC_PAGESIZE` it returns the value the
    // kernel passed in the auxiliary vector, without allocating.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 && (page as usize).is_power_of_two() {
        page as usize
    } else {
        4096
    };
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// A message built in a stack buffer: no allocation, no `core::fmt`, no panic (every
/// write is clamped to the buffer).
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Message {
    const fn new() -> Self {
        Message {
            buf: [0; 256],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn put_decimal(&mut self, mut value: usize) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 || start == 0 {
                break;
            }
        }
        self.put(&digits[start..]);
    }

    fn write_to_stderr(&self) {
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        // SAFETY: writing an initialised stack buffer to fd 2. A short or failed write
        // changes nothing that follows, so the result is not checked.
        unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// Writes `tessera: <what> (<number> bytes)` to stderr and aborts the process.
#[cold]
#[inline(never)]
pub(crate) fn fatal_size(what: &[u8], bytes: usize) -> ! {
    let mut m = Message::new();
    m.put(b"tessera: ");
    m.put(what);
    m.put(b" (");
    m.put_decimal(bytes);
    m.put(b" bytes)\n");
    m.write_to_stderr();
    // SAFETY: `abort` has no preconditions.
    unsafe { libc::abort() }
}

/// Looks `name` up in the global scope of the process (`dlsym(RTLD_DEFAULT, name)`).
///
/// Only called on the out-of-memory path of C++ `operator new`, never on a normal
/// allocation: `dlsym` takes the loader's lock and may itself allocate, which is harmless
/// there because Tessera holds no lock of its own when it reports a failure.
pub(crate) fn lookup(name: &CStr) -> *mut libc::c_void {
    // SAFETY: `name` is a valid C string; `RTLD_DEFAULT` is always a valid handle.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_format_numbers_without_fmt() {
        let mut m = Message::new();
        m.put(b"x ");
        m.put_decimal(0);
        m.put(b" ");
        m.put_decimal(usize::MAX);
        assert_eq!(&m.buf[..m.len], b"x 0 18446744073709551615");
    }

    #[test]
    fn messages_are_clamped() {
        let mut m = Message::new();
        for _ in 0..100 {
            m.put(b"0123456789");
        }
        assert_eq!(m.len, 256);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert_eq!(page_size(), page_size());
    }
}
