//! Growable memory for the profile writer that never touches the global allocator.
//!
//! The profile is written while the process runs on Tessera, often from inside it (at exit,
//! on a signal, with the sampler's state held), so its buffers come straight from the OS:
//! one anonymous mapping each, grown with `mremap` (the kernel moves the page tables, not
//! the bytes) and unmapped on drop. A fresh buffer maps nothing; the first write does.
//!
//! Every operation that may need memory returns `Result<_, OsError>` instead of panicking:
//! running out of mappings while writing a profile must cost the profile, not the process.

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use tessera_sys::error::{ENOMEM, OsError};
use tessera_sys::mem;

/// The first mapping a buffer makes, in bytes (rounded up to the page size).
const MIN_BYTES: usize = 16 << 10;

/// Raw growable memory: `cap` bytes at `ptr`, or nothing (`cap == 0`).
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    cap: usize,
}

impl Mapping {
    const fn empty() -> Self {
        Self {
            ptr: NonNull::dangling(),
            cap: 0,
        }
    }

    /// Makes room for at least `need` bytes, keeping the first `cap` bytes' contents.
    fn grow_to(&mut self, need: usize) -> Result<(), OsError> {
        if need <= self.cap {
            return Ok(());
        }
        let page = mem::page_size();
        let doubled = self.cap.saturating_mul(2).max(MIN_BYTES).max(need);
        let new_cap = doubled.checked_add(page - 1).ok_or(OsError(ENOMEM))? & !(page - 1);
        let ptr = if self.cap == 0 {
            mem::reserve(new_cap, page)?
        } else {
            // SAFETY: `ptr..ptr+cap` is a whole mapping made by `reserve`/`remap` below and
            // owned by this value; on success the old range is gone and only the result is
            // used.
            unsafe { mem::remap(self.ptr.as_ptr(), self.cap, new_cap)? }
        };
        self.ptr = ptr;
        self.cap = new_cap;
        Ok(())
    }
}

// SAFETY: a `Mapping` owns its memory outright (nothing else holds its pointer), so moving
// it to another thread moves the only access with it.
unsafe impl Send for Mapping {}
// SAFETY: through `&Mapping` the memory is only read (writes need `&mut`), so shared
// references on several threads race on nothing.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.cap != 0 {
            // SAFETY: the mapping is ours alone and nothing borrows it once we are dropped.
            unsafe { mem::release(self.ptr.as_ptr(), self.cap) };
        }
    }
}

/// A growable byte buffer in its own anonymous mapping (the encoder's output and scratch).
pub type OsBuf = OsVec<u8>;

/// A growable array of `Copy` values in its own anonymous mapping: the profile writer's
/// tables (interned strings, locations, mappings, hash indexes).
///
/// Page alignment covers any `T` the writer stores; `new` checks that at compile time.
#[derive(Debug)]
pub struct OsVec<T: Copy> {
    mem: Mapping,
    len: usize,
    _marker: PhantomData<T>,
}

impl<T: Copy> Default for OsVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> OsVec<T> {
    /// An empty table; maps nothing until the first push.
    pub const fn new() -> Self {
        const { assert!(size_of::<T>() != 0 && align_of::<T>() <= 4096) };
        Self {
            mem: Mapping::empty(),
            len: 0,
            _marker: PhantomData,
        }
    }

    /// A table of `len` copies of `value`.
    pub fn filled(value: T, len: usize) -> Result<Self, OsError> {
        let mut v = Self::new();
        v.extend_fill(value, len)?;
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the elements, keeping the mapping.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the table to `len` elements; longer lengths leave it unchanged.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `additional` more elements.
    pub fn reserve(&mut self, additional: usize) -> Result<(), OsError> {
        let need = self
            .len
            .checked_add(additional)
            .and_then(|n| n.checked_mul(size_of::<T>()))
            .ok_or(OsError(ENOMEM))?;
        self.mem.grow_to(need)
    }

    /// Appends a value.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), OsError> {
        if (self.len + 1) * size_of::<T>() > self.mem.cap {
            self.reserve(1)?;
        }
        // SAFETY: the check above leaves room for element `len`; the mapping is page aligned,
        // hence aligned for `T` (`new` asserts `T`'s alignment is at most 4 KiB).
        unsafe { self.mem.ptr.as_ptr().cast::<T>().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Appends a run of values.
    pub fn extend(&mut self, values: &[T]) -> Result<(), OsError> {
        self.reserve(values.len())?;
        // SAFETY: `reserve` made room for `len + values.len()` elements in our mapping,
        // aligned for `T`; `values` cannot overlap our spare capacity, which no one else can
        // reference.
        unsafe {
            core::ptr::copy_nonoverlapping(
                values.as_ptr(),
                self.mem.ptr.as_ptr().cast::<T>().add(self.len),
                values.len(),
            );
        }
        self.len += values.len();
        Ok(())
    }

    /// Appends `count` copies of `value`.
    pub fn extend_fill(&mut self, value: T, count: usize) -> Result<(), OsError> {
        self.reserve(count)?;
        for _ in 0..count {
            // Cannot fail: the room is reserved.
            self.push(value)?;
        }
        Ok(())
    }

    /// Removes and returns the last value.
    pub fn pop(&mut self) -> Option<T> {
        let last = *self.as_slice().last()?;
        self.len -= 1;
        Some(last)
    }

    /// The element at `index`, if any.
    #[inline]
    pub fn get(&self, index: usize) -> Option<T> {
        self.as_slice().get(index).copied()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the first `len` elements were written by `push`, the mapping is aligned for
        // `T`, and it lives as long as `self`.
        unsafe { core::slice::from_raw_parts(self.mem.ptr.as_ptr().cast::<T>(), self.len) }
    }

    /// The elements, writable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { core::slice::from_raw_parts_mut(self.mem.ptr.as_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_buffer_maps_nothing() {
        let b = OsBuf::new();
        assert!(b.is_empty());
        assert_eq!(b.as_slice(), &[] as &[u8]);
        assert_eq!(b.mem.cap, 0);
    }

    #[test]
    fn buffer_grows_and_keeps_contents() {
        let mut b = OsBuf::new();
        for i in 0..100_000u32 {
            b.push(i as u8).unwrap();
        }
        b.extend(b"tail").unwrap();
        b.extend_fill(7, 3).unwrap();
        assert_eq!(b.len(), 100_007);
        assert!(
            b.as_slice()[..100_000]
                .iter()
                .enumerate()
                .all(|(i, &x)| x == i as u8)
        );
        assert_eq!(&b.as_slice()[100_000..], b"tail\x07\x07\x07");
        b.as_mut_slice()[0] = 9;
        assert_eq!(b.as_slice()[0], 9);
        b.truncate(2);
        assert_eq!(b.as_slice(), &[9, 1]);
        b.clear();
        assert!(b.is_empty());
        b.extend(&[]).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn table_grows_keeps_contents_and_pops() {
        let mut v: OsVec<(u64, u32)> = OsVec::new();
        assert_eq!(v.pop(), None);
        for i in 0..50_000u64 {
            v.push((i, i as u32 * 3)).unwrap();
        }
        assert_eq!(v.len(), 50_000);
        assert_eq!(v.get(49_999), Some((49_999, 149_997)));
        assert_eq!(v.get(50_000), None);
        v.as_mut_slice()[1].1 = 5;
        assert_eq!(v.as_slice()[1], (1, 5));
        assert_eq!(v.pop(), Some((49_999, 149_997)));
        assert_eq!(v.len(), 49_999);
        let z = OsVec::filled(0u32, 1000).unwrap();
        assert_eq!(z.len(), 1000);
        assert!(z.as_slice().iter().all(|&x| x == 0));
    }

    #[test]
    fn buffers_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<OsBuf>();
        send_sync::<OsVec<u64>>();
        let mut b = OsBuf::new();
        b.extend(b"moved").unwrap();
        let b = std::thread::spawn(move || b).join().unwrap();
        assert_eq!(b.as_slice(), b"moved");
    }

    #[test]
    fn absurd_reservations_fail_without_panicking() {
        let mut b = OsBuf::new();
        b.push(1).unwrap();
        assert!(b.reserve(usize::MAX).is_err());
        let mut v: OsVec<u64> = OsVec::new();
        assert!(v.reserve(usize::MAX / 4).is_err());
        assert_eq!(b.as_slice(), &[1]);
    }
}
