//! Checked blocks: every block a workload allocates carries a pattern that is verified before
//! it is freed, so a broken allocator is caught instead of timed.
//!
//! Layout of the pattern in a block of `size` bytes (`size >= MIN_SIZE`):
//!
//! ```text
//! offset 0          size as u64            (the block describes itself: see `Block::from_raw`)
//! offset 8          tag (unique per allocation)
//! offset k*4096     tag ^ k, for every page boundary k >= 1 that leaves room before the end
//! offset size-8     !tag (unaligned), when size >= 24
//! ```
//!
//! The page stamps also make every page of a large block resident, as a real program's use
//! would, so peak RSS is honest. Two live blocks that overlap, a block handed out twice, or
//! memory scribbled on by the allocator break one of the stamps. Unique tags matter: the same
//! address handed out twice gets two different tags, and the first owner's check fails.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;

/// The smallest block a workload asks for: room for the size and the tag.
pub const MIN_SIZE: usize = 16;
/// The alignment workloads ask for (what C `malloc` guarantees on x86-64 is 16; Rust's
/// collections mostly ask for 8).
pub const ALIGN: usize = 8;
const PAGE: usize = 4096;

/// A live, stamped allocation. Not `Clone`: freeing consumes it.
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    tag: u64,
}

// SAFETY: a `Block` is the unique owner of its allocation (it is neither `Clone` nor `Copy`),
// and every allocator under test is `Sync` and lets any thread free what another allocated,
// which is exactly what the cross-thread workloads exercise.
unsafe impl Send for Block {}

/// The layout every workload block uses.
pub fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("workload sizes are small")
}

impl Block {
    /// Allocates `size` bytes (`size >= MIN_SIZE`) from `a` and stamps them with `tag`.
    /// Panics if the allocator returns null or a misaligned pointer.
    #[inline]
    pub fn alloc<A: GlobalAlloc>(a: &A, size: usize, tag: u64) -> Block {
        assert!(size >= MIN_SIZE);
        // SAFETY: the layout has a non-zero size (>= MIN_SIZE).
        let raw = unsafe { a.alloc(layout(size)) };
        let block = Block {
            ptr: checked(raw, size),
            size,
            tag,
        };
        block.stamp();
        block
    }

    /// Verifies the pattern and frees the block. Panics on a broken pattern.
    #[inline]
    pub fn free<A: GlobalAlloc>(self, a: &A) {
        self.verify();
        // SAFETY: `self` owns a live block of `layout(self.size)` from `a`: the workloads
        // free every block with the allocator that made it, and `self` is consumed here.
        unsafe { a.dealloc(self.ptr.as_ptr(), layout(self.size)) }
    }

    /// The block's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Gives up ownership as a raw pointer (the block describes itself; see [`Block::from_raw`]).
    pub fn into_raw(self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Takes back ownership of a pointer from [`Block::into_raw`], reading size and tag from
    /// the block's own header.
    ///
    /// # Safety
    /// `ptr` must come from `Block::into_raw` and not have been taken back before.
    pub unsafe fn from_raw(ptr: *mut u8) -> Block {
        let ptr = NonNull::new(ptr).expect("from_raw(null)");
        // SAFETY: per the contract `ptr` is a live block of at least MIN_SIZE bytes, aligned
        // to 8, whose first two words were written by `stamp`.
        let (size, tag) = unsafe {
            (
                ptr.as_ptr().cast::<u64>().read() as usize,
                ptr.as_ptr().add(8).cast::<u64>().read(),
            )
        };
        assert!(
            size >= MIN_SIZE,
            "block {ptr:p}: header size {size} was overwritten"
        );
        Block { ptr, size, tag }
    }

    fn stamp(&self) {
        let p = black_box(self.ptr.as_ptr());
        // SAFETY: `p` points to `self.size >= 16` writable bytes aligned to 8 (checked in
        // `checked`); every offset written below is 8 bytes before the end or earlier, and
        // the last one is written unaligned.
        unsafe {
            p.cast::<u64>().write(self.size as u64);
            p.add(8).cast::<u64>().write(self.tag);
            let mut k = 1;
            while k * PAGE + 16 <= self.size {
                p.add(k * PAGE).cast::<u64>().write(self.tag ^ k as u64);
                k += 1;
            }
            if self.size >= 24 {
                p.add(self.size - 8)
                    .cast::<u64>()
                    .write_unaligned(!self.tag);
            }
        }
    }

    /// Checks the pattern; panics with what was found if it is broken.
    pub fn verify(&self) {
        let p = black_box(self.ptr.as_ptr());
        let broken = |what: &str, found: u64, want: u64| -> ! {
            panic!(
                "allocator corrupted a block: {p:p} (size {}) {what}: found {found:#x}, expected {want:#x}",
                self.size
            )
        };
        // SAFETY: the same bytes `stamp` wrote; the block is still owned by `self`.
        unsafe {
            let size = p.cast::<u64>().read();
            if size != self.size as u64 {
                broken("header size", size, self.size as u64);
            }
            let tag = p.add(8).cast::<u64>().read();
            if tag != self.tag {
                broken("tag", tag, self.tag);
            }
            let mut k = 1;
            while k * PAGE + 16 <= self.size {
                let v = p.add(k * PAGE).cast::<u64>().read();
                if v != self.tag ^ k as u64 {
                    broken("page stamp", v, self.tag ^ k as u64);
                }
                k += 1;
            }
            if self.size >= 24 {
                let v = p.add(self.size - 8).cast::<u64>().read_unaligned();
                if v != !self.tag {
                    broken("end stamp", v, !self.tag);
                }
            }
        }
    }
}

/// Turns an allocator's return value into a pointer, panicking on null or misalignment.
#[inline]
pub fn checked(raw: *mut u8, size: usize) -> NonNull<u8> {
    let Some(ptr) = NonNull::new(raw) else {
        panic!("allocator returned null for {size} bytes");
    };
    assert!(
        (ptr.as_ptr() as usize).is_multiple_of(ALIGN),
        "allocator returned {ptr:p} for {size} bytes, not aligned to {ALIGN}"
    );
    ptr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn stamped_blocks_verify_and_round_trip() {
        for size in [16, 17, 24, 100, 4096, 4111, 4112, 4113, 20_000] {
            let block = Block::alloc(&System, size, 0xdead_beef ^ size as u64);
            block.verify();
            let raw = block.into_raw();
            // SAFETY: `raw` came from `into_raw` just above.
            let back = unsafe { Block::from_raw(raw) };
            assert_eq!(back.size(), size);
            back.free(&System);
        }
    }

    #[test]
    #[should_panic(expected = "allocator corrupted a block")]
    fn a_scribble_is_caught() {
        let block = Block::alloc(&System, 64, 7);
        // SAFETY: byte 60 is inside the 64-byte block we own; we overwrite the end stamp on
        // purpose, as a broken allocator handing the same memory to someone else would.
        unsafe { block.ptr.as_ptr().add(60).write(0x55) };
        block.verify();
    }
}
