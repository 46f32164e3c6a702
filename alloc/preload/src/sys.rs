//! The few libc services the C interface needs besides the allocator: `errno`, the page
//! size, a last-words report on stderr, and looking up C++ runtime functions by name.
//!
//! Nothing here allocates on the way to a normal return: `errno` is a thread-local int,
//! `sysconf(_SC_PAGESIZE)` reads a value the loader stored, and reports are assembled in a
//! stack buffer and written with `write(2)` (`text.rs`).

use core::ffi::{CStr, c_int};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::text::{Fd, Text};

/// The calling thread's `errno`.
#[inline]
pub(crate) fn errno() -> c_int {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

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

/// Writes `tessera: <what> (<number> bytes)` to stderr and aborts the process.
#[cold]
#[inline(never)]
pub(crate) fn fatal_size(what: &[u8], bytes: usize) -> ! {
    let mut m = Text::<_, 256>::new(Fd(2));
    m.put(b"tessera: ");
    m.put(what);
    m.put(b" (");
    m.put_decimal(bytes);
    m.put(b" bytes)\n");
    m.flush();
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
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert_eq!(page_size(), page_size());
    }
}
