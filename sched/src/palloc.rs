//! Memory for the scheduler's own per-spawn records — the G record and the join state, which
//! holds the result — taken from Tessera directly, not from the program's
//! `#[global_allocator]` (issue #17).
//!
//! While an M holds a P, the P's Tessera cache is installed on the M's thread
//! (machine/m_loop.rs `schedule`, Go's `p.mcache`), so `tessera::alloc` here is a pop from
//! the P's cache and `tessera::dealloc` of a block of this P a push back: a handful of
//! instructions, no lock, whatever allocator the program chose for itself. A program on the
//! system allocator otherwise paid glibc's `malloc`/`free` for both records on every spawn
//! (a third of the instructions of spawn-all at N = 100,000 under callgrind, most of it
//! `_int_malloc` and `malloc_consolidate` with 100,000 records alive). Off an M (a spawn
//! from a plain thread, a join state freed by a joining thread), the thread's own Tessera
//! cache serves, and a block freed away from its span's owner takes Tessera's remote-free
//! path.
//!
//! The coroutine's closure needs no allocation of its own: a small one waits in the G
//! record until the G first runs, a larger one moves onto the coroutine's stack
//! (spawn.rs `set_coroutine`).

use core::alloc::Layout;
use core::ptr::NonNull;

/// Moves `value` into a block of Tessera's current cache. Aborts through
/// `handle_alloc_error` when out of memory, as `Box::new` does.
#[inline]
pub(crate) fn new<T>(value: T) -> NonNull<T> {
    let layout = Layout::new::<T>();
    const { assert!(size_of::<T>() > 0, "records are never zero-sized") };
    let Some(ptr) = NonNull::new(tessera::alloc_layout(layout).cast::<T>()) else {
        std::alloc::handle_alloc_error(layout);
    };
    // SAFETY: a fresh block of `T`'s size and alignment, ours alone.
    unsafe { ptr.write(value) };
    ptr
}

/// Drops the value at `ptr` and gives its block back.
///
/// # Safety
/// `ptr` came from [`new`] with the same `T`, holds a live value, and nobody uses it
/// afterwards.
#[inline]
pub(crate) unsafe fn free<T>(ptr: NonNull<T>) {
    // SAFETY: per the contract the value is live and ours to drop.
    unsafe { ptr.drop_in_place() };
    let layout = Layout::new::<T>();
    // SAFETY: per the contract the block came from `tessera::alloc` with this layout, and
    // its value is dropped.
    unsafe { tessera::dealloc(ptr.as_ptr().cast(), layout.size(), layout.align()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn records_are_dropped_once_and_keep_their_contents() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Record([u64; 5]);
        impl Drop for Record {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ptrs: Vec<_> = (0..1000u64).map(|i| new(Record([i; 5]))).collect();
        for (i, p) in ptrs.iter().enumerate() {
            // SAFETY: live records from `new`.
            assert_eq!(unsafe { p.as_ref() }.0, [i as u64; 5]);
            assert_eq!(p.as_ptr() as usize % align_of::<Record>(), 0);
        }
        for p in ptrs {
            // SAFETY: each record is freed once and not used again.
            unsafe { free(p) };
        }
        assert_eq!(DROPS.load(Ordering::Relaxed), 1000);
    }
}
