//! The inner loop of the false-sharing workloads: allocate a small object, write it hard,
//! check it, free it.

use super::block::checked;
use std::alloc::{GlobalAlloc, Layout};

/// Object size of the false-sharing workloads: small enough that several share a line.
pub(super) const OBJECT: usize = 8;
/// Writes per object; the writes, not the allocator calls, are what false sharing slows.
pub(super) const WRITES: u64 = 100;

fn layout() -> Layout {
    Layout::new::<u64>()
}

/// Allocates one object, panicking on null or misalignment.
pub(super) fn alloc_object<A: GlobalAlloc>(a: &A) -> *mut u8 {
    // SAFETY: the layout of a u64 has a non-zero size.
    checked(unsafe { a.alloc(layout()) }, OBJECT).as_ptr()
}

/// Frees one object.
///
/// # Safety
/// `p` must come from `alloc_object(a)` and not have been freed.
pub(super) unsafe fn free_object<A: GlobalAlloc>(a: &A, p: *mut u8) {
    // SAFETY: per the contract, `p` is a live object of `layout()` from `a`.
    unsafe { a.dealloc(p, layout()) }
}

/// Allocates an object, writes it `WRITES` times, verifies the last write and frees it.
#[inline]
pub(super) fn one_object<A: GlobalAlloc>(a: &A, seed: u64) {
    let p = alloc_object(a).cast::<u64>();
    // SAFETY: `p` is a live, 8-aligned, 8-byte object we own until the dealloc below. The
    // writes are volatile so each one reaches memory (the point of the workload).
    unsafe {
        for w in 0..WRITES {
            p.write_volatile(seed.wrapping_add(w));
        }
        let last = p.read_volatile();
        assert!(
            last == seed.wrapping_add(WRITES - 1),
            "allocator corrupted an object at {p:p}: found {last:#x}, expected {:#x}",
            seed.wrapping_add(WRITES - 1)
        );
        free_object(a, p.cast());
    }
}
