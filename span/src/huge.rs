//! Huge allocations: each one a dedicated mapping, so `realloc` can move it with `mremap`
//! instead of copying, and `free` gives the memory straight back to the OS.
//!
//! Dedicated mappings are not in any arena, so the page map cannot find them. A registry
//! (an open-addressing hash table keyed by address, in memory mapped for it, guarded by one
//! lock) records each mapping's length. Huge blocks are rare and each costs a syscall, so
//! the lock is never hot.

use core::ptr::{self, NonNull};

use tessera_numa::NodeId;

use crate::HUGE_PAGE_BYTES;
use crate::commit;
use crate::lock::Locked;
use crate::os;

#[derive(Clone, Copy)]
struct Entry {
    addr: usize,
    len: usize,
}

const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;

struct Table {
    entries: *mut Entry,
    capacity: usize,
    /// Live entries plus tombstones.
    used: usize,
    live: usize,
    live_bytes: usize,
}

// SAFETY: `entries` is memory mapped for the table alone; the registry lock guards it.
unsafe impl Send for Table {}

static REGISTRY: Locked<Table> = Locked::new(Table {
    entries: ptr::null_mut(),
    capacity: 0,
    used: 0,
    live: 0,
    live_bytes: 0,
});

fn slot_of(addr: usize, capacity: usize) -> usize {
    // Addresses are page aligned; a Fibonacci multiplier spreads the high bits.
    ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7) & (capacity - 1)
}

impl Table {
    fn find(&self, addr: usize) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let mut i = slot_of(addr, self.capacity);
        loop {
            // SAFETY: `i < capacity` and the table holds `capacity` entries.
            let e = unsafe { *self.entries.add(i) };
            if e.addr == addr {
                return Some(i);
            }
            if e.addr == EMPTY {
                return None;
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    fn insert(&mut self, addr: usize, len: usize) -> bool {
        if (self.used + 1) * 4 > self.capacity * 3 && !self.rehash() {
            return false;
        }
        let mut i = slot_of(addr, self.capacity);
        loop {
            // SAFETY: `i < capacity`.
            let e = unsafe { &mut *self.entries.add(i) };
            if e.addr == EMPTY || e.addr == TOMBSTONE {
                if e.addr == EMPTY {
                    self.used += 1;
                }
                *e = Entry { addr, len };
                self.live += 1;
                self.live_bytes += len;
                return true;
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    /// Replaces entry `i` with a tombstone and returns it.
    ///
    /// # Safety
    /// `i` must be below `capacity`: an index `find` returned.
    unsafe fn remove_at(&mut self, i: usize) -> Entry {
        // SAFETY: `i < capacity` (the contract), and the table holds `capacity` entries.
        let e = unsafe { &mut *self.entries.add(i) };
        let old = *e;
        e.addr = TOMBSTONE;
        self.live -= 1;
        self.live_bytes -= old.len;
        old
    }

    /// Moves every live entry into a table sized for twice the live count.
    fn rehash(&mut self) -> bool {
        let capacity = ((self.live + 1) * 2)
            .next_power_of_two()
            .max(os::page_size() / 16);
        let bytes = capacity * core::mem::size_of::<Entry>();
        let Ok(fresh) = os::reserve(bytes.next_multiple_of(os::page_size()), os::page_size())
        else {
            return false;
        };
        commit::commit(bytes.next_multiple_of(os::page_size()));
        let old = (self.entries, self.capacity);
        self.entries = fresh.as_ptr().cast();
        self.capacity = capacity;
        self.used = 0;
        self.live = 0;
        self.live_bytes = 0;
        for i in 0..old.1 {
            // SAFETY: `i` indexes the old table.
            let e = unsafe { *old.0.add(i) };
            if e.addr > TOMBSTONE {
                self.insert(e.addr, e.len);
            }
        }
        if !old.0.is_null() {
            let old_bytes = old.1 * core::mem::size_of::<Entry>();
            // SAFETY: the old table was mapped by a previous rehash and is no longer used.
            unsafe { os::release(old.0.cast(), old_bytes.next_multiple_of(os::page_size())) };
            commit::uncommit(old_bytes.next_multiple_of(os::page_size()));
        }
        true
    }
}

/// A block's mapping length for `size` bytes: whole pages, or whole 2 MiB pages for a
/// block in huge pages (`granule` from [`block_granule`]), whose last partial 2 MiB would
/// otherwise take up to 511 faults of 4 KiB (the extra is address space until touched).
fn round_len(size: usize, granule: usize) -> Option<usize> {
    size.checked_add(granule - 1).map(|s| s & !(granule - 1))
}

/// The alignment and length granule of a huge block: 2 MiB for an advised one, since a
/// huge page needs an aligned 2 MiB range (an unaligned start or end leaves the partial
/// range to 4 KiB faults); otherwise a page.
fn block_granule(advice: Option<bool>, size: usize) -> usize {
    match advice {
        Some(true) if size >= HUGE_PAGE_BYTES => HUGE_PAGE_BYTES,
        _ => os::page_size(),
    }
}

/// Maps a huge block of at least `size` bytes aligned to `align`, placed for NUMA `node`.
/// Fresh mappings read as zero.
/// `None` when the OS refuses, or the block would cross the hard memory limit.
pub fn alloc(size: usize, align: usize, node: NodeId) -> Option<NonNull<u8>> {
    let advice = crate::thp::huge_block_advice(node);
    let granule = block_granule(advice, size);
    let len = round_len(size, granule)?;
    if !commit::try_commit(len) {
        return None;
    }
    let Ok(p) = os::reserve(len, align.max(granule)) else {
        commit::uncommit(len);
        return None;
    };
    crate::placement::bind(p.as_ptr(), len, node);
    if let Some(huge) = advice {
        // SAFETY: a fresh mapping of ours; advice only (a refusal changes nothing).
        let _ = unsafe { os::advise_huge_pages(p.as_ptr(), len, huge) };
    }
    let mut table = REGISTRY.lock();
    if table.insert(p.as_ptr() as usize, len) {
        Some(p)
    } else {
        drop(table);
        // SAFETY: the mapping was made above and never handed out.
        unsafe { os::release(p.as_ptr(), len) };
        commit::uncommit(len);
        None
    }
}

/// The mapped length of the huge block at `ptr`, if `ptr` is one.
pub fn size_of(ptr: *mut u8) -> Option<usize> {
    let table = REGISTRY.lock();
    let i = table.find(ptr as usize)?;
    // SAFETY: `i` came from `find`.
    Some(unsafe { (*table.entries.add(i)).len })
}

/// Unmaps the huge block at `ptr`; false if `ptr` is not a huge block of ours.
///
/// # Safety
/// If `ptr` is a huge block, nothing may use it afterwards.
pub unsafe fn free(ptr: *mut u8) -> bool {
    let entry = {
        let mut table = REGISTRY.lock();
        let Some(i) = table.find(ptr as usize) else {
            return false;
        };
        // SAFETY: `i` came from `find`.
        unsafe { table.remove_at(i) }
    };
    // SAFETY: the entry described a whole mapping of ours, now unregistered.
    unsafe { os::release(entry.addr as *mut u8, entry.len) };
    commit::uncommit(entry.len);
    true
}

/// Resizes the huge block at `ptr` to at least `size` bytes with `mremap` (the kernel moves
/// page-table entries, not bytes). `None` when `ptr` is not a huge block or the OS refuses;
/// the block is then unchanged.
///
/// # Safety
/// `ptr` must not be used after a successful call; use the returned pointer instead.
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> Option<NonNull<u8>> {
    // A block that starts on a 2 MiB boundary was advised (or happens to be aligned): it
    // keeps whole 2 MiB pages, and moves to such a boundary if it has to move.
    let granule = if (ptr as usize).is_multiple_of(HUGE_PAGE_BYTES) && size >= HUGE_PAGE_BYTES {
        HUGE_PAGE_BYTES
    } else {
        os::page_size()
    };
    let new_len = round_len(size, granule)?;
    let mut table = REGISTRY.lock();
    let i = table.find(ptr as usize)?;
    // SAFETY: `i` came from `find`.
    let old_len = unsafe { (*table.entries.add(i)).len };
    if new_len == old_len {
        return NonNull::new(ptr);
    }
    if new_len > old_len && !commit::try_commit(new_len - old_len) {
        return None;
    }
    // SAFETY: the registry says `ptr..ptr+old_len` is one whole mapping of ours.
    let Ok(moved) = (unsafe { os::remap_aligned(ptr, old_len, new_len, granule) }) else {
        if new_len > old_len {
            commit::uncommit(new_len - old_len);
        }
        return None;
    };
    if new_len < old_len {
        commit::uncommit(old_len - new_len);
    }
    // SAFETY: `i` came from `find`, and the table has not changed since (we hold its lock).
    unsafe { table.remove_at(i) };
    if !table.insert(moved.as_ptr() as usize, new_len) {
        // Out of memory for the registry: hand the caller nothing and keep no orphan.
        drop(table);
        // SAFETY: the new mapping is ours and unregistered.
        unsafe { os::release(moved.as_ptr(), new_len) };
        commit::uncommit(new_len);
        return None;
    }
    Some(moved)
}

/// Live huge blocks and their mapped bytes.
pub fn stats() -> (usize, usize) {
    let table = REGISTRY.lock();
    (table.live, table.live_bytes)
}

/// Bytes mapped for the registry itself (bookkeeping, not blocks).
pub fn registry_bytes() -> usize {
    let table = REGISTRY.lock();
    (table.capacity * core::mem::size_of::<Entry>()).next_multiple_of(os::page_size())
}

/// Resident bytes of all huge blocks, measured with `mincore`.
pub fn resident() -> usize {
    let table = REGISTRY.lock();
    let mut bytes = 0;
    for i in 0..table.capacity {
        // SAFETY: `i` indexes the table.
        let e = unsafe { *table.entries.add(i) };
        if e.addr > TOMBSTONE {
            // SAFETY: a registered mapping, alive while we hold the lock.
            bytes += unsafe { os::resident_pages(e.addr as *mut u8, e.len) }.unwrap_or(0)
                * os::page_size();
        }
    }
    bytes
}

/// The registry lock, for the fork handlers.
pub fn raw_lock() -> &'static crate::lock::RawLock {
    REGISTRY.raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_realloc_free() {
        let p = alloc(5 << 20, 16, NodeId::ZERO).unwrap();
        // SAFETY: the block is ours until freed.
        unsafe {
            assert_eq!(*p.as_ptr(), 0);
            p.as_ptr().add((5 << 20) - 1).write(77);
            // Whole pages, or whole 2 MiB pages where the block has huge-page advice.
            let len = size_of(p.as_ptr()).unwrap();
            assert!(((5 << 20)..=(6 << 20)).contains(&len), "{len}");
            let q = realloc(p.as_ptr(), (40 << 20) + 1).unwrap();
            assert_eq!(q.as_ptr().add((5 << 20) - 1).read(), 77);
            let len = size_of(q.as_ptr()).unwrap();
            assert!(((40 << 20) + 4096..=(42 << 20)).contains(&len), "{len}");
            assert!(free(q.as_ptr()));
            assert!(!free(q.as_ptr()), "a second free finds nothing");
        }
    }

    #[test]
    fn many_blocks_survive_rehash() {
        let blocks: Vec<_> = (0..600)
            .map(|_| alloc(4096, 4096, NodeId::ZERO).unwrap())
            .collect();
        for b in &blocks {
            assert_eq!(size_of(b.as_ptr()), Some(4096));
        }
        for b in blocks {
            // SAFETY: each block is freed once.
            assert!(unsafe { free(b.as_ptr()) });
        }
    }
}
