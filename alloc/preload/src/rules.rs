//! The arithmetic of the C interface, kept apart from the exported symbols so it can be
//! unit-tested in an ordinary test binary (which must not export `malloc` itself).
//!
//! Every function here is total: overflow and invalid input come back as `None` or
//! `false`, never as a panic, because all of them run on the `malloc` path.

use core::ffi::c_void;
use core::mem::size_of;

/// The largest size handed to Tessera. Rust's `Layout` never asks for more than
/// `isize::MAX`, so the allocator's internal rounding is only proven for sizes up to it;
/// larger C requests fail here, before reaching it, as they would fail anyway.
pub(crate) const MAX_REQUEST: usize = isize::MAX as usize;

/// glibc's `MALLOC_ALIGNMENT` on x86-64: `malloc` results are 16-byte aligned. Compilers
/// rely on it (vectorised code on `malloc`ed buffers), so a drop-in must keep it.
pub(crate) const MALLOC_ALIGN: usize = 16;

/// The alignment `malloc(size)` asks Tessera for. A block of at most 8 bytes cannot hold
/// anything that needs 16-byte alignment, and its 8-byte class wastes nothing; everything
/// else gets glibc's 16.
///
/// The same function must be used by the allocation and by a sized free: `tessera::dealloc`
/// derives the size class from `(size, align)`.
#[inline(always)]
pub(crate) const fn malloc_align(size: usize) -> usize {
    if size <= 8 { 8 } else { MALLOC_ALIGN }
}

/// The alignment to request for `size` bytes when the caller also asks for `align`
/// (a power of two): at least what `malloc` would give.
#[inline(always)]
pub(crate) const fn align_for(size: usize, align: usize) -> usize {
    let base = malloc_align(size);
    if align > base { align } else { base }
}

/// `n * m` for `calloc` and `reallocarray`; `None` on overflow.
#[inline(always)]
pub(crate) const fn array_bytes(n: usize, m: usize) -> Option<usize> {
    n.checked_mul(m)
}

/// Whether `posix_memalign` accepts `align`: a power of two and a multiple of
/// `sizeof(void *)` (POSIX); anything else is `EINVAL`.
#[inline]
pub(crate) const fn posix_align_ok(align: usize) -> bool {
    align.is_power_of_two() && align.is_multiple_of(size_of::<*mut c_void>())
}

/// The alignment `memalign` (and `valloc`, `pvalloc`) uses for a requested `align`, as
/// glibc 2.36 does: anything at most `MALLOC_ALIGN` (0 included) is plain `malloc`
/// alignment, a value that is not a power of two is rounded up to the next one, and one
/// that cannot be rounded (above `usize::MAX / 2 + 1`) is `None` (`EINVAL`).
#[inline]
pub(crate) const fn memalign_align(align: usize) -> Option<usize> {
    if align <= MALLOC_ALIGN {
        Some(MALLOC_ALIGN)
    } else {
        align.checked_next_power_of_two()
    }
}

/// `size` rounded up to a multiple of `page` (a power of two), and at least one page:
/// `pvalloc(0)` gets a page. `None` on overflow.
#[inline]
pub(crate) const fn round_to_page(size: usize, page: usize) -> Option<usize> {
    if size == 0 {
        return Some(page);
    }
    match size.checked_add(page - 1) {
        Some(s) => Some(s & !(page - 1)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_alignment_matches_glibc() {
        assert_eq!(malloc_align(0), 8);
        assert_eq!(malloc_align(8), 8);
        assert_eq!(malloc_align(9), 16);
        assert_eq!(malloc_align(1 << 20), 16);
        assert_eq!(align_for(4, 8), 8);
        assert_eq!(align_for(4, 4), 8);
        assert_eq!(align_for(100, 8), 16);
        assert_eq!(align_for(100, 64), 64);
        assert_eq!(align_for(3, 4096), 4096);
    }

    #[test]
    fn array_bytes_catches_overflow() {
        assert_eq!(array_bytes(0, usize::MAX), Some(0));
        assert_eq!(array_bytes(3, 5), Some(15));
        assert_eq!(array_bytes(usize::MAX, 2), None);
        assert_eq!(array_bytes(1 << 32, 1 << 32), None);
        assert_eq!(array_bytes(1 << 31, 1 << 32), Some(1 << 63));
    }

    #[test]
    fn posix_memalign_alignments() {
        for bad in [0, 1, 2, 4, 12, 24, 48, 100, usize::MAX] {
            assert!(!posix_align_ok(bad), "{bad}");
        }
        for shift in 3..usize::BITS {
            assert!(posix_align_ok(1 << shift), "{shift}");
        }
    }

    #[test]
    fn memalign_rounds_like_glibc() {
        assert_eq!(memalign_align(0), Some(16));
        assert_eq!(memalign_align(3), Some(16));
        assert_eq!(memalign_align(16), Some(16));
        assert_eq!(memalign_align(17), Some(32));
        assert_eq!(memalign_align(4096), Some(4096));
        assert_eq!(memalign_align(5000), Some(8192));
        assert_eq!(memalign_align(usize::MAX / 2 + 1), Some(usize::MAX / 2 + 1));
        assert_eq!(memalign_align(usize::MAX / 2 + 2), None);
        assert_eq!(memalign_align(usize::MAX), None);
    }

    #[test]
    fn page_rounding() {
        assert_eq!(round_to_page(0, 4096), Some(4096));
        assert_eq!(round_to_page(1, 4096), Some(4096));
        assert_eq!(round_to_page(4096, 4096), Some(4096));
        assert_eq!(round_to_page(4097, 4096), Some(8192));
        assert_eq!(round_to_page(usize::MAX - 100, 4096), None);
    }
}
