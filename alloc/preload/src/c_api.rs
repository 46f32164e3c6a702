//! The C allocation functions: `malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size` and `cfree`, each a thin shell over `tessera`'s entry points that
//! adds what C promises and Rust's `GlobalAlloc` does not: `errno`, overflow checks on
//! `n * m`, glibc's alignment guarantee, and glibc's answers to odd inputs.
//!
//! Odd inputs, and where this follows glibc 2.36 (the C library these machines run):
//! - `malloc(0)`, `calloc(0, n)`, `realloc(NULL, 0)`: a unique, freeable pointer (as glibc).
//! - `realloc(p, 0)` with `p` not null: frees `p` and returns `NULL`, as glibc does
//!   (`REALLOC_ZERO_BYTES_FREES`). This `NULL` is not a failure, so `errno` is left alone
//!   (glibc leaves it too); every other `NULL` from this file sets `errno = ENOMEM`
//!   (or `EINVAL` for a bad alignment).
//! - `realloc`/`reallocarray` failing leave the old block intact (C's rule).
//! - `posix_memalign` returns `EINVAL` for an alignment that is not a power of two or not a
//!   multiple of `sizeof(void *)`, `ENOMEM` when out of memory, and leaves `*memptr`
//!   untouched on failure (POSIX); `errno` is `ENOMEM` after an out-of-memory failure, as
//!   glibc 2.36 leaves it (the fuzz target `c_api` found the comment wrong).
//! - `memalign`, `valloc`, `pvalloc`: an alignment up to 16 (0 included) is `malloc`'s; one
//!   that is not a power of two is rounded up to the next; one too large to round is
//!   `EINVAL`. `pvalloc` rounds the size up to whole pages (0 → one page).
//! - `aligned_alloc` requires a power of two (`EINVAL` otherwise), as glibc does from 2.38
//!   and C17 (DR 460) allows; any size is accepted, a multiple of the alignment or not.
//! - Requests above `isize::MAX` bytes fail with `ENOMEM` before reaching the allocator.
//! - A pointer Tessera never handed out, passed to `free`, `realloc` or
//!   `malloc_usable_size`, is reported on stderr (`tessera: ...`) and aborts the process.
//!
//! Statistics and trimming: `malloc_stats`, `malloc_info`, `mallinfo2` and `mallinfo`
//! replace glibc's with Tessera's figures (glibc's would describe its own heap, empty under
//! the preload), `malloc_trim` returns Tessera's free pages to the OS, and `tessera_stats`
//! fills the struct of `include/tessera.h` (the end of this file).
//!
//! Not exported: `mallopt`. glibc's stays in place and tunes glibc's own heap, which is
//! empty under the preload: harmless, and none of its parameters has a Tessera meaning
//! (`TESSERA_*` settings and the `tessera` crate's functions are the tuning).

use core::ffi::{c_int, c_void};
use core::ptr;

use tessera_sys::c::FILE;
use tessera_sys::error::{EINVAL, ENOMEM, set_errno};
use tessera_sys::mem::page_size;

use crate::rules::{
    MALLOC_ALIGN, MAX_REQUEST, align_for, array_bytes, malloc_align, memalign_align,
    posix_align_ok, round_to_page,
};
use crate::stats::{self, CStats, MallInfo, MallInfo2};
use crate::text::{Fd, Stream, Text};

/// `tessera::alloc` with C's failure convention: null and `errno = ENOMEM`.
#[inline(always)]
fn alloc_or_enomem(size: usize, align: usize) -> *mut c_void {
    let p = if size <= MAX_REQUEST {
        tessera::alloc(size, align)
    } else {
        ptr::null_mut()
    };
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p.cast()
}

/// Allocates `size` bytes, 16-byte aligned (8 for sizes up to 8), uninitialised.
///
/// # Safety
/// None beyond C's: the result must be released with `free` (or `realloc`) of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // `malloc_fast` applies `malloc_align`'s rule itself, with one table load; a miss is a
    // tail call, so a hit needs no stack frame.
    let p = tessera::malloc_fast(size);
    if !p.is_null() {
        return p.cast();
    }
    malloc_miss(size)
}

/// `malloc` past its fast path: the refill or the large path, and `errno` on failure.
/// `extern "C"` (cannot unwind), so that `malloc` can tail-call it.
#[cold]
#[inline(never)]
extern "C" fn malloc_miss(size: usize) -> *mut c_void {
    let p = tessera::malloc_slow(size);
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p.cast()
}

/// Frees a block from this library; null is ignored. A pointer this library never handed
/// out is reported and aborts.
///
/// # Safety
/// `ptr` must be null or a live block from this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the caller's contract is `tessera::free`'s; it handles null and reports
    // pointers it does not own. Inlined here: this exported function is the entry point.
    unsafe { tessera::free_inlined(ptr.cast()) }
}

/// `free` under its pre-C89 name, which glibc still exports for old binaries.
///
/// # Safety
/// As `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free(ptr) }
}

/// Allocates `n * size` zeroed bytes; null with `ENOMEM` if the product overflows.
///
/// # Safety
/// As `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = array_bytes(n, size).filter(|&b| b <= MAX_REQUEST) else {
        set_errno(ENOMEM);
        return ptr::null_mut();
    };
    let p = tessera::alloc_zeroed(bytes, malloc_align(bytes));
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p.cast()
}

/// Resizes a block, keeping its contents up to the smaller size. `realloc(NULL, n)` is
/// `malloc(n)`; `realloc(p, 0)` frees `p` and returns null (glibc's choice, see the top of
/// this file). On failure the old block is left intact.
///
/// # Safety
/// `ptr` must be null or a live block from this library; on success it must not be used
/// afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return alloc_or_enomem(size, malloc_align(size));
    }
    if size == 0 {
        // SAFETY: the caller gives the live block up.
        unsafe { tessera::free(ptr.cast()) };
        return ptr::null_mut();
    }
    // C does not tell us the old size; the block's usable size is as good for copying, and
    // asking for it first is what makes a foreign pointer a clear report and abort instead
    // of a copy from memory we do not own.
    let Some(old) = tessera::block_size(ptr.cast()) else {
        tessera::report_bad_pointer(
            "realloc of a pointer tessera did not hand out (foreign, or into a block)",
            ptr.cast(),
        );
    };
    if size > MAX_REQUEST {
        set_errno(ENOMEM);
        return ptr::null_mut();
    }
    // `tessera::realloc` uses `align` both for the new block and to find the old one's
    // class on the sized free: 8 only when both sizes stay in malloc's 8-byte range, so a
    // grown block still gets glibc's 16. A class guess that misses just takes the unsized
    // free path.
    let align = if size <= 8 && old <= 8 {
        8
    } else {
        MALLOC_ALIGN
    };
    // SAFETY: `ptr` is a live block of ours with `old` usable bytes; on success the caller
    // gives it up.
    let p = unsafe { tessera::realloc(ptr.cast(), old, align, size) };
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p.cast()
}

/// `realloc(ptr, n * size)`, failing with `ENOMEM` (and leaving `ptr` intact) if the
/// product overflows.
///
/// # Safety
/// As `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match array_bytes(n, size) {
        // SAFETY: forwarded contract.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => {
            set_errno(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// Allocates `size` bytes aligned to `align` into `*memptr`. Returns 0, `EINVAL` (bad
/// alignment) or `ENOMEM`; on failure `*memptr` is not written.
///
/// # Safety
/// `memptr` must be valid for a pointer-sized write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !posix_align_ok(align) {
        return EINVAL;
    }
    if size > MAX_REQUEST {
        return ENOMEM;
    }
    let p = tessera::alloc(size, align_for(size, align));
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller gives a writable `memptr`.
    unsafe { memptr.write(p.cast()) };
    0
}

/// C11's aligned allocation: `align` must be a power of two (`EINVAL` otherwise).
///
/// # Safety
/// As `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return ptr::null_mut();
    }
    alloc_or_enomem(size, align_for(size, align))
}

/// `memalign` with glibc's reading of the alignment (see the top of this file).
fn memalign_impl(align: usize, size: usize) -> *mut c_void {
    match memalign_align(align) {
        Some(align) => alloc_or_enomem(size, align_for(size, align)),
        None => {
            set_errno(EINVAL);
            ptr::null_mut()
        }
    }
}

/// The obsolete aligned allocation: a non-power-of-two alignment is rounded up.
///
/// # Safety
/// As `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    memalign_impl(align, size)
}

/// `size` bytes aligned to the page size.
///
/// # Safety
/// As `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign_impl(page_size(), size)
}

/// `size` rounded up to whole pages (at least one), page aligned.
///
/// # Safety
/// As `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match round_to_page(size, page) {
        Some(bytes) => memalign_impl(page, bytes),
        None => {
            set_errno(ENOMEM);
            ptr::null_mut()
        }
    }
}

/// The bytes usable in a block (at least what was asked for); 0 for null. A pointer this
/// library does not own is reported and aborts.
///
/// # Safety
/// `ptr` must be null or a live block from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: forwarded contract; `usable_size` handles null and reports foreign pointers.
    unsafe { tessera::usable_size(ptr.cast()) }
}

// ---- statistics ------------------------------------------------------------------------

/// Fills `*out` with Tessera's figures (`struct tessera_stats` in `tessera.h`): at most
/// `size` bytes of it, so a caller compiled against an older, shorter struct gets the fields
/// it knows. Returns the size of the library's struct; `out` may be null to ask for it.
///
/// # Safety
/// `out` must be null or valid for writing `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_stats(out: *mut CStats, size: usize) -> usize {
    let full = core::mem::size_of::<CStats>();
    if !out.is_null() {
        let figures = CStats::from_stats(&tessera::stats());
        // SAFETY: `figures` is a plain `repr(C)` value of `full` bytes; the caller gives
        // `size` writable bytes at `out`, and we copy no more than either.
        unsafe {
            ptr::copy_nonoverlapping(
                (&raw const figures).cast::<u8>(),
                out.cast::<u8>(),
                size.min(full),
            )
        };
    }
    full
}

// ---- heap profile ----------------------------------------------------------------------

/// Writes the heap profile (gzipped pprof) to the file `path`, replacing it; 0 or an errno
/// value (`EINVAL` for a null path). See `tessera.h`.
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_heap_profile_write(path: *const core::ffi::c_char) -> i32 {
    if path.is_null() {
        return EINVAL;
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let path = unsafe { core::ffi::CStr::from_ptr(path) };
    match tessera::profile::write_heap_to_file(path) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(ENOMEM),
    }
}

/// Sets the heap profile's mean sampling interval in bytes (0: off); returns the previous.
#[unsafe(no_mangle)]
pub extern "C" fn tessera_heap_profile_rate(bytes: usize) -> usize {
    let previous = tessera::profile::rate();
    tessera::profile::set_rate(bytes);
    previous
}

/// Prints Tessera's figures on stderr (glibc's `malloc_stats` prints its arenas there):
/// where the memory is, per node, per size class. Written with `write(2)`.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    let figures = tessera::stats();
    stats::print_text(&figures, &mut Text::<_, 1024>::new(Fd(2)));
}

/// Tessera's figures in glibc's `struct mallinfo2` (what each field holds: `MallInfo2` in
/// `stats.rs`). Takes the allocator's locks for a moment, as `malloc_stats` does.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    MallInfo2::from_stats(&tessera::stats())
}

/// `mallinfo2` in glibc's older `struct mallinfo` of `int`s, each saturated at `INT_MAX`.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> MallInfo {
    mallinfo2().into()
}

/// Returns free memory to the OS now (`tessera::trim`: the calling thread's and idle
/// threads' caches flushed, every dirty free page purged, whatever the decay curve says).
/// Returns 1 if any bytes went back, else 0, as glibc's. `pad` (glibc: bytes to leave at
/// the heap's top) has no counterpart: Tessera's heap has no top to leave them at.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    let _ = pad;
    c_int::from(tessera::trim() > 0)
}

/// Writes Tessera's figures as XML to `fp` (glibc's `malloc_info`), see `stats.rs`.
/// Returns 0; -1 with `errno = EINVAL` when `options` is not 0 (no options are defined) or
/// `fp` is null. That is the documented contract (malloc_info(3)); glibc 2.36 itself returns
/// `EINVAL` as the value, which a caller testing for non-zero reads the same way.
///
/// # Safety
/// `fp` must be null or a valid stream open for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut FILE) -> c_int {
    if options != 0 || fp.is_null() {
        set_errno(EINVAL);
        return -1;
    }
    let figures = tessera::stats();
    // SAFETY: `fp` is a valid stream open for writing (the caller's contract; not null,
    // checked above), and the sink lives only for this call.
    let stream = unsafe { Stream::new(fp) };
    stats::print_xml(&figures, &mut Text::<_, 1024>::new(stream));
    0
}
