//! The per-CPU slabs: one per concurrency id (`mm_cid`, or CPU number), all in one region
//! reserved when the per-CPU caches are turned on, the slab of id `i` at `base + (i <<
//! rseq::SLAB_SHIFT)` (so the sequences compute it from the id: no table to load). Each holds
//! for each per-CPU size class a stack of pointers to free objects, in the layout
//! `tessera_sys::rseq::slab_pop`/`slab_push` work on:
//!
//! ```text
//! 0                                              8 * NUM_CLASSES   8 * BEGIN[0]
//! | header of class 0 | ... | header of class n-1 | pad            | slots of class 0 | ...
//! header: count (u32, the next free slot, BEGIN[c]..=END[c]), begin (u16), end (u16)
//! ```
//!
//! Every class has a header, so that the fast paths need no test of the class: those above
//! `PERCPU_CLASSES` have no slots (begin = end = count), and both sequences refuse them. A
//! slab not made yet is memory never written: zero headers, on which both refuse too (and
//! which cost no memory until the id's first slow path makes the slab, `make`).
//!
//! A slab's counts and slots are written only by the restartable sequences, which run
//! for the slab of the id the thread holds at that instant, so no two writers ever overlap
//! (`tessera_sys::rseq`'s contract), and by a drain from another thread once it has locked
//! the headers (`drain.rs`). Other code only reads them, racily (`stats`).
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
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

/// Ids the region has room for: both `cpu_id` and `mm_cid` are below the number of possible
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
// Begin and end are 16-bit fields, and the sequences compare a count's low 16 bits.
const _: () = assert!(END[NUM_CLASSES - 1] <= u16::MAX as u32);

/// Bytes of a slab that can be written (committed as it is made).
pub(crate) const SLAB_BYTES: usize = (END[NUM_CLASSES - 1] as usize * 8).next_multiple_of(4096);
/// Bytes between two slabs in the region.
const STRIDE: usize = 1 << rseq::SLAB_SHIFT;
const _: () = assert!(SLAB_BYTES <= STRIDE, "a slab overlaps the next");
/// Bytes of the region: a slab for every id the kernel could hand out.
const REGION_BYTES: usize = TABLE_LEN * STRIDE;

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

/// Per id, whether its slab is made (`MADE`: its headers written) or being made.
static STATE: [AtomicU8; TABLE_LEN] = [const { AtomicU8::new(UNMADE) }; TABLE_LEN];
const UNMADE: u8 = 0;
const MAKING: u8 = 1;
const MADE: u8 = 2;
/// Bytes of slabs made.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Reserves the region (virtual memory: a slab's pages cost nothing until written) and
/// hands its base to the sequences; false when the OS refuses. Once per process, before any
/// thread uses the per-CPU caches (`percpu::configure`); the region is never unmapped.
pub(crate) fn reserve_region() -> bool {
    if !rseq::slab_of(0).is_null() {
        return true;
    }
    let Ok(base) = mem::reserve(REGION_BYTES, mem::page_size()) else {
        return false;
    };
    // No transparent huge pages: under THP `always`, the first header written would bring a
    // 2 MiB page for 8 slabs, most of it never used (a slab's stacks fill from their bottom).
    // A hint: a kernel without THP refuses it, and then there is nothing to refuse.
    // SAFETY: the region just mapped, ours.
    let _ = unsafe { mem::advise_huge_pages(base.as_ptr(), REGION_BYTES, false) };
    rseq::set_slab_base(base.as_ptr());
    true
}

/// The slab of `id` if it is made, else null (its headers may still be zero: the sequences
/// refuse on them, but a reader of the stacks must skip it).
pub(crate) fn made(id: usize) -> *mut u8 {
    if id < TABLE_LEN && STATE[id].load(Ordering::Acquire) == MADE {
        rseq::slab_of(id)
    } else {
        ptr::null_mut()
    }
}

/// The slabs made.
fn each_made() -> impl Iterator<Item = *mut u8> {
    (0..TABLE_LEN).map(made).filter(|s| !s.is_null())
}

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

/// A header as one word: `count` (the stack empty), `begin`, `end`.
const fn header(c: usize) -> u64 {
    BEGIN[c] as u64 | (BEGIN[c] as u64) << 32 | (END[c] as u64) << 48
}

/// Makes the slab of `id` (writes its headers) unless it is made or being made; the
/// sequences refuse on it until then. Nothing when `id` is out of range or the region is
/// not reserved, nor when its memory would cross the hard memory limit: unlike the
/// metadata the allocator cannot work without (`commit::commit`), a slab is counted with
/// `try_commit`, and until one is made the id's threads are served by its back end (a
/// thread first scheduled on a new CPU while the heap is at the limit would otherwise take
/// committed memory over it, which the limit promises never happens).
pub(crate) fn make(id: u32) {
    let id = id as usize;
    let slab = rseq::slab_of(id);
    if id >= TABLE_LEN
        || slab.is_null()
        || STATE[id].load(Ordering::Acquire) != UNMADE
        || STATE[id]
            .compare_exchange(UNMADE, MAKING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if !tessera_span::commit::try_commit(SLAB_BYTES) {
        STATE[id].store(UNMADE, Ordering::Release);
        return;
    }
    for c in 0..NUM_CLASSES {
        // SAFETY: the header lies in the slab, inside the region, 8-aligned. One store per
        // header: a sequence running on the id meanwhile reads zeros (and refuses) or the
        // whole header, and no sequence commits to a zero header, so nothing else writes it
        // (the `MAKING` state keeps other makers and the drains out).
        unsafe {
            (*slab.add(c * HEADER_BYTES).cast::<AtomicU64>()).store(header(c), Ordering::Release)
        };
    }
    MAPPED.fetch_add(SLAB_BYTES, Ordering::Relaxed);
    STATE[id].store(MADE, Ordering::Release);
}

/// Bytes mapped for slabs (metadata in the statistics).
pub(crate) fn mapped() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Calls `f(block, class)` for every object the slabs hold at this instant, read racily:
/// sequences on other CPUs may be moving them meanwhile, so a block may be missed, or
/// reported after it left (the statistics clamp what they take from this).
pub(crate) fn for_each_cached(mut f: impl FnMut(*mut u8, SizeClass)) {
    for slab in each_made() {
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
/// No sequence can commit to `slab` meanwhile (`drain.rs`: its headers are locked and
/// fenced), and its stacks hold live blocks nobody else holds.
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
    // Before the drain's second fence (`drain.rs`, step 4), which restarts any sequence that
    // read the count from before this store.
    header.store(count - n as u32, Ordering::Release);
    n
}

/// Locks (`lock` true: bounds `rseq::LOCKED_BOUNDS`, on which both sequences refuse) or
/// unlocks (the class's own bounds) every per-CPU stack's header in `slab`. A lock takes
/// effect for the sequences that start after it; `drain.rs` fences the others.
///
/// # Safety
/// `slab` is made (`made`), and the caller is its only locker (`drain.rs`'s `DRAINING`).
pub(crate) unsafe fn set_locked(slab: *mut u8, lock: bool) {
    for c in 0..PERCPU_CLASSES {
        let bounds = if lock {
            rseq::LOCKED_BOUNDS
        } else {
            (header(c) >> 32) as u32
        };
        // SAFETY: the bounds half of a header inside the made slab, 4-aligned; the
        // sequences never store to it (their commits store the count half).
        unsafe {
            (*slab.add(c * HEADER_BYTES + 4).cast::<AtomicU32>()).store(bounds, Ordering::Release)
        };
    }
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
    each_made().any(|slab| {
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
        for c in 0..NUM_CLASSES {
            // What `make` writes reads as the sequences read it.
            let h = header(c);
            assert_eq!(h as u32, BEGIN[c]);
            assert_eq!((h >> 32) as u16 as u32, BEGIN[c]);
            assert_eq!((h >> 48) as u16 as u32, END[c]);
        }
    }
}
