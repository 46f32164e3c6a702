//! The per-CPU slabs: one mapping per concurrency id (`mm_cid`, or CPU number), holding for
//! each per-CPU size class a stack of pointers to free objects, in the layout
//! `tessera_sys::rseq::slab_pop`/`slab_push` work on:
//!
//! ```text
//! 0                                              8 * NUM_CLASSES   8 * BEGIN[0]
//! | header of class 0 | ... | header of class n-1 | pad            | slots of class 0 | ...
//! header: count (u32, the next free slot, BEGIN[c]..=END[c]), begin (u16), end (u16)
//! ```
//!
//! Every class has a header, so that the fast paths need no test of the class: those above
//! `PERCPU_CLASSES` have no slots (begin = end = count), and both sequences refuse them.
//!
//! A slab's headers and slots are written only by the two restartable sequences, which run
//! for the slab of the id the thread holds at that instant, so no two writers ever overlap
//! (`tessera_sys::rseq`'s contract). Other code only reads them, racily (`stats`), or takes
//! them over from a thread that holds the id (`percpu::drain_current`).
//!
//! A stack holds at most 96 KiB of objects (32 to 2,048 objects), so a slab caches at most
//! `MAX_CACHED_BYTES` (about 3.5 MiB) and the whole front end at most that times the number
//! of ids in use: bounded by the CPUs the process runs on, however many threads it has. A
//! stack must hold more than a program takes from it between frees, or every round refills
//! and drains through the back end (block by block, under its lock). At 48 KiB the
//! 512-byte class had 96 slots and issue #19's program (1,000 blocks of 16–512 B live per
//! round, ~66 of that class) spent 19% of one thread's CPU samples in the refills and
//! drains; at 96 KiB (192 slots) none. The small classes reach 96 KiB too (they stopped at
//! 256 slots, 16 KiB of 64-byte objects): the same program with every block of 64 B took
//! 11.4 ns of CPU an operation per-CPU against 4.4 with thread caches, refilling and
//! draining each round.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tessera_sys::{mem, rseq};

use crate::size_class::{CLASSES, MAX_FAST, NUM_CLASSES, SizeClass};

/// Classes served by the slabs: those up to `MAX_FAST` (1 KiB), the fast paths' range.
pub(crate) const PERCPU_CLASSES: usize = count_percpu_classes();

const fn count_percpu_classes() -> usize {
    let mut n = 0;
    while n < CLASSES.len() && CLASSES[n].size as usize <= MAX_FAST {
        n += 1;
    }
    n
}

/// Ids the table has room for: both `cpu_id` and `mm_cid` are below the number of possible
/// CPUs, which `percpu::configure` checks against this.
pub(crate) const TABLE_LEN: usize = rseq::SLAB_TABLE_LEN;

/// Bytes of objects one class's stack holds at most.
const STACK_BYTES: usize = 96 << 10;
/// Slots per stack, at least and at most.
const MIN_SLOTS: usize = 32;
const MAX_SLOTS: usize = 2048;

/// Slots of class `c`'s stack (none above `PERCPU_CLASSES`).
const fn capacity(c: usize) -> usize {
    if c >= PERCPU_CLASSES {
        return 0;
    }
    let n = STACK_BYTES / CLASSES[c].size as usize;
    if n < MIN_SLOTS {
        MIN_SLOTS
    } else if n > MAX_SLOTS {
        MAX_SLOTS
    } else {
        n
    }
}

/// A header's bytes: 8, so that the sequences address it as `slab + 8 * class` (an index
/// scaled in the address, no shift of its own on the fast paths).
const HEADER_BYTES: usize = rseq::HEADER_BYTES;
/// The first slot of class 0, on a cache line of its own after the headers.
const FIRST_SLOT: usize = (HEADER_BYTES * NUM_CLASSES).next_multiple_of(64) / 8;

/// `BEGIN[c]..END[c]`: class `c`'s slots.
const BEGIN: [u32; NUM_CLASSES] = bounds().0;
const END: [u32; NUM_CLASSES] = bounds().1;

const fn bounds() -> ([u32; NUM_CLASSES], [u32; NUM_CLASSES]) {
    let mut begin = [0u32; NUM_CLASSES];
    let mut end = [0u32; NUM_CLASSES];
    let mut at = FIRST_SLOT;
    let mut c = 0;
    while c < NUM_CLASSES {
        begin[c] = at as u32;
        at += capacity(c);
        end[c] = at as u32;
        c += 1;
    }
    (begin, end)
}

const _: () = assert!(
    FIRST_SLOT * 8 >= HEADER_BYTES * NUM_CLASSES,
    "a header overlaps a slot"
);
// `rseq::UNMADE` and the parked slab (`drain.rs`) have a header for every class.
const _: () = assert!(NUM_CLASSES <= rseq::UNMADE_HEADERS);
// Begin and end are 16-bit fields, and the sequences compare a count's low 16 bits.
const _: () = assert!(END[NUM_CLASSES - 1] <= u16::MAX as u32);

/// Bytes mapped per slab.
pub(crate) const SLAB_BYTES: usize = (END[NUM_CLASSES - 1] as usize * 8).next_multiple_of(4096);

/// The most bytes of objects one slab can hold.
pub(crate) const MAX_CACHED_BYTES: usize = max_cached();

const fn max_cached() -> usize {
    let mut sum = 0;
    let mut c = 0;
    while c < PERCPU_CLASSES {
        sum += capacity(c) * CLASSES[c].size as usize;
        c += 1;
    }
    sum
}

// The bound the module comment promises.
const _: () = assert!(
    MAX_FAST * MIN_SLOTS <= STACK_BYTES,
    "a stack's floor exceeds its bytes"
);
const _: () = assert!(MAX_CACHED_BYTES <= PERCPU_CLASSES * STACK_BYTES);

/// The slabs, by id (`tessera_sys::rseq::SLABS`, where the sequences find them);
/// `rseq::UNMADE` until the id's first use. A slab is never unmapped.
static TABLE: &[AtomicPtr<u8>; TABLE_LEN] = &rseq::SLABS.0;
/// Bytes mapped for slabs.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// The sequences' stack index of class `class` (its header is at `HEADER_BYTES` times it).
#[inline(always)]
pub(crate) fn stack(class: SizeClass) -> usize {
    class.index()
}

/// Half a stack: what a refill brings and a drain takes.
#[inline]
pub(crate) fn batch(class: SizeClass) -> usize {
    capacity(class.index()) / 2
}

/// The slab of `id`, mapping it on first use; null when the OS refuses the memory or `id`
/// is out of range.
pub(crate) fn slab_or_make(id: u32) -> *mut u8 {
    let Some(entry) = TABLE.get(id as usize) else {
        return ptr::null_mut();
    };
    let slab = entry.load(Ordering::Acquire);
    if slab != rseq::unmade() {
        return slab;
    }
    let Ok(fresh) = mem::reserve(SLAB_BYTES, mem::page_size()) else {
        return ptr::null_mut();
    };
    let fresh = fresh.as_ptr();
    for c in 0..NUM_CLASSES {
        // SAFETY: fresh memory of `SLAB_BYTES`, which holds every header; nobody else sees
        // it until the exchange below publishes it (with release ordering).
        unsafe {
            let h = fresh.add(c * HEADER_BYTES).cast::<u32>();
            h.write(BEGIN[c]);
            let bounds = h.add(1).cast::<u16>();
            bounds.write(BEGIN[c] as u16);
            bounds.add(1).write(END[c] as u16);
        }
    }
    match entry.compare_exchange(rseq::unmade(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            MAPPED.fetch_add(SLAB_BYTES, Ordering::Relaxed);
            tessera_span::commit::commit(SLAB_BYTES);
            fresh
        }
        Err(theirs) => {
            // SAFETY: our mapping, never published.
            unsafe { mem::release(fresh, SLAB_BYTES) };
            theirs
        }
    }
}

/// Bytes mapped for slabs (metadata in the statistics).
pub(crate) fn mapped() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Calls `f(block, class)` for every object the slabs hold at this instant, read racily:
/// sequences on other CPUs may be moving them meanwhile, so a block may be missed, or
/// reported after it left (the statistics clamp what they take from this).
pub(crate) fn for_each_cached(mut f: impl FnMut(*mut u8, SizeClass)) {
    for entry in TABLE {
        let slab = entry.load(Ordering::Acquire);
        if slab == rseq::unmade() {
            continue;
        }
        for c in 0..PERCPU_CLASSES {
            // SAFETY: the header is inside the slab, 4-aligned; read atomically because the
            // sequences write it concurrently.
            let count = unsafe {
                (*slab.add(c * HEADER_BYTES).cast::<AtomicU32>()).load(Ordering::Relaxed)
            };
            let count = count.clamp(BEGIN[c], END[c]);
            for k in BEGIN[c]..count {
                // SAFETY: slot `k` is inside the slab, 8-aligned, read atomically as above.
                let block = unsafe {
                    (*slab.add(k as usize * 8).cast::<AtomicU64>()).load(Ordering::Relaxed)
                };
                f(block as *mut u8, SizeClass::new(c));
            }
        }
    }
}

/// Takes up to `out.len()` blocks off the top of `class`'s stack in `slab`, with plain
/// (atomic, relaxed) loads and stores rather than a sequence, clearing their markers; returns
/// how many.
///
/// # Safety
/// No sequence can commit to `slab` meanwhile (`drain.rs`: it is parked and fenced), and
/// its stacks hold live blocks nobody else holds.
pub(crate) unsafe fn take(slab: *mut u8, class: SizeClass, out: &mut [*mut u8]) -> usize {
    let c = class.index();
    // SAFETY: the header is inside the slab, 4-aligned.
    let header = unsafe { &*slab.add(c * HEADER_BYTES).cast::<AtomicU32>() };
    let count = header.load(Ordering::Acquire).clamp(BEGIN[c], END[c]);
    let n = ((count - BEGIN[c]) as usize).min(out.len());
    for (i, at) in out[..n].iter_mut().enumerate() {
        let k = count as usize - 1 - i;
        // SAFETY: slot `k` is inside the slab, 8-aligned.
        let block = unsafe { (*slab.add(k * 8).cast::<AtomicU64>()).load(Ordering::Relaxed) };
        let block = block as *mut u8;
        // SAFETY: a stacked block, ours now (the contract).
        unsafe { crate::freelist::clear_link(block) };
        *at = block;
    }
    header.store(count - n as u32, Ordering::Release);
    n
}

/// A fingerprint of `slab`'s stack counts (changes when any stack moves, almost surely) and
/// the bytes of objects on its stacks, read racily.
pub(crate) fn fingerprint(slab: *mut u8) -> (u64, usize) {
    let mut hash = 0u64;
    let mut bytes = 0;
    for c in 0..PERCPU_CLASSES {
        // SAFETY: as in `for_each_cached`.
        let count =
            unsafe { (*slab.add(c * HEADER_BYTES).cast::<AtomicU32>()).load(Ordering::Relaxed) };
        let count = count.clamp(BEGIN[c], END[c]);
        hash = (hash ^ count as u64).wrapping_mul(0x0100_0000_01b3);
        bytes += (count - BEGIN[c]) as usize * CLASSES[c].size as usize;
    }
    (hash, bytes)
}

/// Whether any slab's stack of `class` holds `block` (racy, as `for_each_cached`): the
/// double-free confirmation of a block carrying the freed-block marker.
pub(crate) fn holds(block: *mut u8, class: SizeClass) -> bool {
    let c = class.index();
    TABLE.iter().any(|entry| {
        let slab = entry.load(Ordering::Acquire);
        if slab == rseq::unmade() {
            return false;
        }
        // SAFETY: as in `for_each_cached`.
        let count =
            unsafe { (*slab.add(c * HEADER_BYTES).cast::<AtomicU32>()).load(Ordering::Relaxed) };
        (BEGIN[c]..count.clamp(BEGIN[c], END[c])).any(|k| {
            // SAFETY: as in `for_each_cached`.
            let at =
                unsafe { (*slab.add(k as usize * 8).cast::<AtomicU64>()).load(Ordering::Relaxed) };
            at as usize == block as usize
        })
    })
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_the_sequences() {
        assert!(PERCPU_CLASSES > 0 && CLASSES[PERCPU_CLASSES - 1].size as usize == MAX_FAST);
        for c in 0..PERCPU_CLASSES {
            assert!((MIN_SLOTS..=MAX_SLOTS).contains(&((END[c] - BEGIN[c]) as usize)));
            if c > 0 {
                assert_eq!(BEGIN[c], END[c - 1]);
            }
        }
        for c in PERCPU_CLASSES..NUM_CLASSES {
            assert_eq!(BEGIN[c], END[c], "class {c} has slots");
        }
        assert!(END[NUM_CLASSES - 1] as usize * 8 <= SLAB_BYTES);
    }
}
