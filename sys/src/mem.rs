//! Memory mapping and advice: every `mmap`, `madvise`, `mprotect`, `mremap` and `mincore`
//! Tessera makes goes through this file, so the page heap above it reads as plain Rust and
//! the stacks crate gets its memory from the same place (ARCHITECTURE.md#layers).
//!
//! Linux commits anonymous memory on first touch. `reserve` therefore maps address space
//! readable and writable with `MAP_NORESERVE`: nothing is charged or resident until a page
//! is written, which is what "commit lazily" means here. `purge` gives pages back
//! (`MADV_DONTNEED` drops them at once and they read as zero afterwards; `MADV_FREE` lets the
//! kernel take them lazily and keeps old contents until it does).
//!
//! Errors: every fallible call returns the kernel's `errno` as an [`OsError`]. The one that
//! matters to callers is `ENOMEM` ([`OsError::is_out_of_memory`]): no memory, or no more
//! mappings (`vm.max_map_count`), which the allocator turns into a null return. `EINVAL`
//! means a bad range or a kernel without the advice asked for; the wrappers document which.
//!
//! Nothing here allocates, formats or panics: the allocator's slow path calls it.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::OsError;

/// How `purge` hands pages back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeAdvice {
    /// `MADV_DONTNEED`: RSS drops at once; the pages read as zero afterwards.
    DontNeed,
    /// `MADV_FREE`: the kernel reclaims under pressure; contents are undefined until rewritten.
    Free,
}

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The OS page size, read once at run time with `sysconf` (which, for `_SC_PAGESIZE`,
/// returns the value the kernel passed in the auxiliary vector, without allocating). Never
/// fails: a value that is not a positive power of two (which no Linux reports) reads as 4096.
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    read_page_size()
}

/// The first [`page_size`] call: out of line, so the callers inline only the cached read.
#[cold]
#[inline(never)]
fn read_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let read = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if read > 0 && (read as usize).is_power_of_two() {
        read as usize
    } else {
        4096
    };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Reserves `len` bytes aligned to `align` (a power of two, at least the OS page size).
/// The range is readable and writable and committed by the kernel on first touch.
///
/// Errors: `ENOMEM` when the address space or the mapping count (`vm.max_map_count`) is
/// exhausted, or when `len + align` overflows.
pub fn reserve(len: usize, align: usize) -> Result<NonNull<u8>, OsError> {
    debug_assert!(align.is_power_of_two() && align >= page_size());
    debug_assert!(len.is_multiple_of(page_size()));
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    if align <= page_size() {
        return map(len, prot, flags);
    }
    // Over-reserve by the alignment, then give back the unaligned head and the tail.
    let total = len
        .checked_add(align)
        .ok_or(OsError(crate::error::ENOMEM))?;
    let raw = map(total, prot, flags)?.as_ptr() as usize;
    let start = (raw + align - 1) & !(align - 1);
    let head = start - raw;
    let tail = total - head - len;
    // SAFETY: both trimmed pieces lie inside the mapping made just above and nobody else
    // knows of them yet.
    unsafe {
        if head > 0 {
            release(raw as *mut u8, head);
        }
        if tail > 0 {
            release((start + len) as *mut u8, tail);
        }
    }
    // SAFETY: `start` lies inside a successful mapping, so it is not null.
    Ok(unsafe { NonNull::new_unchecked(start as *mut u8) })
}

fn map(len: usize, prot: i32, flags: i32) -> Result<NonNull<u8>, OsError> {
    // SAFETY: an anonymous mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(OsError::last());
    }
    // SAFETY: mmap never returns null on success without MAP_FIXED.
    Ok(unsafe { NonNull::new_unchecked(p.cast()) })
}

/// Unmaps a range. Cannot fail on a range `reserve` returned (`munmap`'s only errors are a
/// bad range, ruled out by the contract, and `ENOMEM` for splitting a mapping past the
/// mapping limit, which leaves the range mapped: it is ignored, the memory stays reserved).
///
/// # Safety
/// The range must have come from `reserve`/`remap` and no live object may remain in it.
pub unsafe fn release(ptr: *mut u8, len: usize) {
    // SAFETY: the caller owns the whole range and nothing refers into it any more.
    unsafe { libc::munmap(ptr.cast(), len) };
}

/// Returns the physical pages behind a range to the OS; the address space stays reserved.
///
/// Errors: `EINVAL` when `MADV_FREE` is unknown to the kernel (before Linux 4.5) or the range
/// is not page-aligned; `ENOMEM` when part of it is not mapped. The pages stay resident then.
///
/// # Safety
/// The range must lie inside a mapping of ours and hold no live data.
pub unsafe fn purge(ptr: *mut u8, len: usize, advice: PurgeAdvice) -> Result<(), OsError> {
    let advice = match advice {
        PurgeAdvice::DontNeed => libc::MADV_DONTNEED,
        PurgeAdvice::Free => libc::MADV_FREE,
    };
    // SAFETY: the caller guarantees the range is ours and dead.
    let rc = unsafe { libc::madvise(ptr.cast(), len, advice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// Asks for transparent huge pages on a range (`MADV_HUGEPAGE`), or for none
/// (`MADV_NOHUGEPAGE`, which also overrides a system-wide `always`).
///
/// Errors: `EINVAL` on a kernel built without transparent huge pages; the advice is only a
/// hint, so callers may ignore it.
///
/// # Safety
/// The range must lie inside a mapping of ours.
pub unsafe fn advise_huge_pages(ptr: *mut u8, len: usize, huge: bool) -> Result<(), OsError> {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: the caller guarantees the range is ours; the advice changes no contents.
    if unsafe { libc::madvise(ptr.cast(), len, advice) } == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// Asks the kernel to back `ptr..ptr+len` with huge pages now (`MADV_COLLAPSE`, Linux 6.1):
/// the resident 4 KiB pages of each 2 MiB-aligned part are copied into a huge page, the
/// missing ones zero-filled. Synchronous (a copy per huge page), whatever the system's THP
/// mode says short of `never`.
///
/// Errors: `EINVAL` where the kernel has no `MADV_COLLAPSE`, `EAGAIN`/`ENOMEM` where no huge
/// page could be had; the range keeps its contents either way.
///
/// # Safety
/// The range must be mapped memory of ours.
pub unsafe fn collapse_huge_pages(ptr: *mut u8, len: usize) -> Result<(), OsError> {
    // SAFETY: the caller guarantees the range is ours; a collapse keeps every byte.
    if unsafe { libc::madvise(ptr.cast(), len, libc::MADV_COLLAPSE) } == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// Grows or shrinks a dedicated mapping, letting the kernel move it (no copy of the pages).
///
/// Errors: `ENOMEM` when no room or no mapping is left (the old mapping is then untouched);
/// `EFAULT`/`EINVAL` for a range that is not one whole mapping (ruled out by the contract).
///
/// # Safety
/// `ptr..ptr+old_len` must be a whole mapping of ours; on success the old range is gone.
pub unsafe fn remap(ptr: *mut u8, old_len: usize, new_len: usize) -> Result<NonNull<u8>, OsError> {
    // SAFETY: the caller owns the mapping; MREMAP_MAYMOVE never clobbers other mappings.
    let p = unsafe { libc::mremap(ptr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        return Err(OsError::last());
    }
    // SAFETY: a successful mremap never returns null.
    Ok(unsafe { NonNull::new_unchecked(p.cast()) })
}

/// As [`remap`], but a grown mapping that has to move goes to an `align`-aligned address
/// (the kernel's own choice would be page aligned only: a huge-page block moved there
/// keeps no 2 MiB page whole and takes its new tail in 4 KiB faults).
///
/// Errors: as [`remap`] and [`reserve`]; on any error the old mapping is untouched.
///
/// # Safety
/// As [`remap`].
pub unsafe fn remap_aligned(
    ptr: *mut u8,
    old_len: usize,
    new_len: usize,
    align: usize,
) -> Result<NonNull<u8>, OsError> {
    if new_len <= old_len || align <= page_size() {
        // SAFETY: forwarded contract.
        return unsafe { remap(ptr, old_len, new_len) };
    }
    // In place first: the start (and so its alignment) stays.
    // SAFETY: the caller owns the mapping; without MREMAP_MAYMOVE nothing else is touched.
    let p = unsafe { libc::mremap(ptr.cast(), old_len, new_len, 0) };
    if p != libc::MAP_FAILED {
        // SAFETY: a successful mremap never returns null.
        return Ok(unsafe { NonNull::new_unchecked(p.cast()) });
    }
    let dest = reserve(new_len, align)?;
    // SAFETY: the caller owns the source; `dest..dest+new_len` is a fresh mapping of ours,
    // which MREMAP_FIXED replaces.
    let p = unsafe {
        libc::mremap(
            ptr.cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dest.as_ptr(),
        )
    };
    if p == libc::MAP_FAILED {
        let err = OsError::last();
        // SAFETY: the fresh destination is still ours and unused.
        unsafe { release(dest.as_ptr(), new_len) };
        return Err(err);
    }
    Ok(dest)
}

/// Page protection for `protect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// No access: a guard.
    None,
    /// Ordinary data.
    ReadWrite,
}

/// Changes the protection of a range (splits the VMA: each distinct run costs one).
///
/// Errors: `ENOMEM` when the split would pass `vm.max_map_count` (or part of the range is
/// not mapped); the protection is unchanged then.
///
/// # Safety
/// The range must lie inside a mapping of ours; with `Protection::None` nothing may use it.
pub unsafe fn protect(ptr: *mut u8, len: usize, prot: Protection) -> Result<(), OsError> {
    let prot = match prot {
        Protection::None => libc::PROT_NONE,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    // SAFETY: the caller owns the range.
    let rc = unsafe { libc::mprotect(ptr.cast(), len, prot) };
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

// Linux 6.13 added lightweight guard regions: the page table itself faults on access, so no
// extra VMA is created. The constants are not in every libc release yet.
const MADV_GUARD_INSTALL: i32 = 102;
const MADV_GUARD_REMOVE: i32 = 103;

const GUARD_UNKNOWN: u8 = 0;
const GUARD_YES: u8 = 1;
const GUARD_NO: u8 = 2;
static GUARD_SUPPORT: AtomicU8 = AtomicU8::new(GUARD_UNKNOWN);

/// Whether the kernel supports `MADV_GUARD_INSTALL`; probed once on a scratch mapping. Any
/// failure of the probe (`EINVAL` before Linux 6.13, no memory for the scratch page) reads as
/// "no".
pub fn has_guard_regions() -> bool {
    match GUARD_SUPPORT.load(Ordering::Relaxed) {
        GUARD_YES => true,
        GUARD_NO => false,
        _ => {
            let page = page_size();
            let supported = match reserve(page, page) {
                Ok(p) => {
                    // SAFETY: the scratch page is ours alone and released right after.
                    let rc = unsafe { libc::madvise(p.as_ptr().cast(), page, MADV_GUARD_INSTALL) };
                    // SAFETY: as above.
                    unsafe { release(p.as_ptr(), page) };
                    rc == 0
                }
                Err(_) => false,
            };
            GUARD_SUPPORT.store(
                if supported { GUARD_YES } else { GUARD_NO },
                Ordering::Relaxed,
            );
            supported
        }
    }
}

/// Installs a guard region (`MADV_GUARD_INSTALL`): any access faults, no VMA is added.
///
/// Errors: `EINVAL` before Linux 6.13 (see [`has_guard_regions`]) or on a mapping that is not
/// private and anonymous; `ENOMEM` when the page tables cannot be allocated.
///
/// # Safety
/// The range must be page-aligned, inside a private anonymous mapping of ours, and unused.
pub unsafe fn guard_install(ptr: *mut u8, len: usize) -> Result<(), OsError> {
    // SAFETY: the caller owns the range.
    let rc = unsafe { libc::madvise(ptr.cast(), len, MADV_GUARD_INSTALL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// Removes a guard region installed by `guard_install`.
///
/// Errors: as [`guard_install`].
///
/// # Safety
/// The range must be one `guard_install` was called on.
pub unsafe fn guard_remove(ptr: *mut u8, len: usize) -> Result<(), OsError> {
    // SAFETY: the caller owns the range.
    let rc = unsafe { libc::madvise(ptr.cast(), len, MADV_GUARD_REMOVE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// Counts the resident OS pages of a range with `mincore`, using a small stack buffer so that
/// it never allocates.
///
/// Errors: `ENOMEM` when part of the range is not mapped, `EINVAL` when `ptr` is not
/// page-aligned.
///
/// # Safety
/// The range must be page-aligned and mapped.
pub unsafe fn resident_pages(ptr: *mut u8, len: usize) -> Result<usize, OsError> {
    const CHUNK: usize = 512;
    let page = page_size();
    let mut vec = [0u8; CHUNK];
    let mut resident = 0;
    let mut at = ptr as usize;
    let end = at + len;
    while at < end {
        let pages = ((end - at).div_ceil(page)).min(CHUNK);
        // SAFETY: `vec` holds at least `pages` bytes; the range is mapped per the caller.
        let rc = unsafe { libc::mincore(at as *mut _, pages * page, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(OsError::last());
        }
        resident += vec[..pages].iter().filter(|&&b| b & 1 != 0).count();
        at += pages * page;
    }
    Ok(resident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_aligned_and_lazy() {
        let align = 4 << 20;
        let len = 8 << 20;
        let p = reserve(len, align).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0);
        // SAFETY: the range was just reserved.
        unsafe {
            assert_eq!(resident_pages(p.as_ptr(), len).unwrap(), 0);
            p.as_ptr().write(7);
            p.as_ptr().add(len - 1).write(9);
            assert_eq!(resident_pages(p.as_ptr(), len).unwrap(), 2);
            purge(p.as_ptr(), len, PurgeAdvice::DontNeed).unwrap();
            assert_eq!(resident_pages(p.as_ptr(), len).unwrap(), 0);
            assert_eq!(p.as_ptr().read(), 0, "DONTNEED pages read back as zero");
            release(p.as_ptr(), len);
        }
    }

    #[test]
    fn remap_keeps_contents() {
        let page = page_size();
        let p = reserve(4 * page, page).unwrap();
        // SAFETY: the mapping is ours; remap consumes it and we use only the result.
        unsafe {
            p.as_ptr().add(3 * page).write(42);
            let q = remap(p.as_ptr(), 4 * page, 64 * page).unwrap();
            assert_eq!(q.as_ptr().add(3 * page).read(), 42);
            release(q.as_ptr(), 64 * page);
        }
    }

    #[test]
    fn guard_probe_is_stable() {
        assert_eq!(has_guard_regions(), has_guard_regions());
    }

    #[test]
    fn page_size_is_power_of_two() {
        assert!(page_size().is_power_of_two());
    }
}
