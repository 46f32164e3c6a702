//! A lock-free, append-only registry of slab address ranges.
//!
//! Two readers need to map an address to "which tessera stack is this": the SIGSEGV handler
//! (which may not allocate or take a lock: the faulting thread might hold it) and
//! `remaining_stack` (which runs on hot recursion paths, after every coroutine switch).
//!
//! Every slab fits in one `CHUNK`-aligned chunk of address space (64 MiB; `slab.rs` reserves
//! it so), so `addr >> CHUNK_SHIFT` names at most one slab. A fixed open-addressing table maps
//! that chunk number to the slab's entry: a lookup is a hash, usually one probe and one
//! compare, however many slabs there are (a million 16 KiB stacks take 1,222 slabs with the
//! default 64 KiB guards, 306 with one-page guards).
//!
//! Slabs are never unmapped, so the registry only grows. A writer (serialised by `REGISTER`,
//! taken only when a new slab is reserved) fills an entry, then publishes it with a `Release`
//! store: of `LEN` for iteration, and of its table bucket for lookups. Readers load those with
//! `Acquire` and then read the entry. No reader ever locks, allocates or waits.
//!
//! Capacity is fixed (static, zero-filled, so untouched entries cost no RSS): 8192 slabs of
//! 64 MiB cover 512 GiB of stacks and guards (6.7 million 16 KiB stacks with 64 KiB guards),
//! far more than any process here will reserve.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::class::SizeClass;

/// Most slabs a process can have.
pub(crate) const MAX_SLABS: usize = 8192;

/// log2 of the chunk every slab is aligned to and fits in.
pub(crate) const CHUNK_SHIFT: u32 = 26;
/// Alignment and maximum length of a slab.
pub(crate) const CHUNK: usize = 1 << CHUNK_SHIFT;

/// Buckets of the chunk → slab table: twice the slabs, so probes stay short.
const INDEX_BITS: u32 = 14;
const INDEX_SIZE: usize = 1 << INDEX_BITS;
const _: () = assert!(MAX_SLABS * 2 <= INDEX_SIZE);
/// Low bits of a bucket hold the slab index; the rest hold `chunk + 1` (0 = empty bucket).
const SLAB_BITS: u32 = 13;
const _: () = assert!(MAX_SLABS <= 1 << SLAB_BITS);

/// Index of a slab in the registry; also the high half of a stack id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabId(pub(crate) u32);

struct Entry {
    start: AtomicUsize,
    len: AtomicUsize,
    /// Bytes from one slot's low end to the next: guard plus usable size.
    slot_size: AtomicUsize,
    /// Guard bytes at the low end of each slot.
    guard: AtomicUsize,
    class: AtomicUsize,
    /// Address of the slab's label table: one `u64` per slot (see `slab.rs`).
    labels: AtomicUsize,
}

impl Entry {
    const fn new() -> Self {
        Self {
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            slot_size: AtomicUsize::new(0),
            guard: AtomicUsize::new(0),
            class: AtomicUsize::new(0),
            labels: AtomicUsize::new(0),
        }
    }
}

static ENTRIES: [Entry; MAX_SLABS] = [const { Entry::new() }; MAX_SLABS];
static LEN: AtomicUsize = AtomicUsize::new(0);
static REGISTER: Mutex<()> = Mutex::new(());
static INDEX: [AtomicUsize; INDEX_SIZE] = [const { AtomicUsize::new(0) }; INDEX_SIZE];

/// Home bucket of a chunk number (Fibonacci hashing: chunks of one process are clustered,
/// multiplying by 2^64/φ spreads them).
fn home(chunk: usize) -> usize {
    chunk.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (usize::BITS - INDEX_BITS)
}

fn bucket_value(chunk: usize, slab: usize) -> usize {
    ((chunk + 1) << SLAB_BITS) | slab
}

/// A slab as seen by a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabRange {
    pub(crate) id: SlabId,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) slot_size: usize,
    pub(crate) guard: usize,
    pub(crate) class: SizeClass,
    pub(crate) labels: usize,
}

/// Where an address falls inside a slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotHit {
    pub(crate) slab: SlabRange,
    /// Slot index inside the slab.
    pub(crate) index: usize,
    /// Low end of the slot (start of its guard).
    pub(crate) slot_lo: usize,
    /// Whether the address lies in the slot's guard.
    pub(crate) in_guard: bool,
}

impl SlotHit {
    /// Lowest usable address of the slot (just above the guard).
    pub(crate) fn usable_lo(&self) -> usize {
        self.slot_lo + self.slab.guard
    }

    /// Top of the slot: the initial stack pointer.
    pub(crate) fn top(&self) -> usize {
        self.slot_lo + self.slab.slot_size
    }

    /// The label the stack's owner set (0 if none). Signal-safe: one load from the slab's
    /// label table, which is mapped for as long as the slab (reads zero if never written).
    pub(crate) fn label(&self) -> u64 {
        if self.slab.labels == 0 {
            return 0;
        }
        let word = (self.slab.labels + self.index * 8) as *const u64;
        // SAFETY: the table holds one word per slot of the slab, mapped readable for the life
        // of the process (slabs are never unmapped); volatile, as the owner writes it through
        // another pointer.
        unsafe { word.read_volatile() }
    }
}

/// Publishes a new slab; returns `None` when the registry is full.
/// `start..start + len` is the slab's slot area, `labels` its label table (0 for none).
pub(crate) fn register(
    start: usize,
    len: usize,
    slot_size: usize,
    guard: usize,
    class: SizeClass,
    labels: usize,
) -> Option<SlabId> {
    debug_assert!(
        start >> CHUNK_SHIFT == (start + len - 1) >> CHUNK_SHIFT,
        "a slab lies within one chunk"
    );
    let _serialised = REGISTER.lock().unwrap_or_else(|p| p.into_inner());
    let i = LEN.load(Ordering::Relaxed);
    if i == MAX_SLABS {
        return None;
    }
    let e = &ENTRIES[i];
    e.start.store(start, Ordering::Relaxed);
    e.len.store(len, Ordering::Relaxed);
    e.slot_size.store(slot_size, Ordering::Relaxed);
    e.guard.store(guard, Ordering::Relaxed);
    e.class.store(class.index(), Ordering::Relaxed);
    e.labels.store(labels, Ordering::Relaxed);
    // Release: a reader that sees the new length, or the bucket, sees the fields written above.
    LEN.store(i + 1, Ordering::Release);
    let chunk = start >> CHUNK_SHIFT;
    let mut b = home(chunk);
    // Fewer slabs than half the buckets, so an empty bucket is always found.
    while INDEX[b].load(Ordering::Relaxed) != 0 {
        b = (b + 1) % INDEX_SIZE;
    }
    INDEX[b].store(bucket_value(chunk, i), Ordering::Release);
    Some(SlabId(i as u32))
}

fn read(i: usize) -> SlabRange {
    let e = &ENTRIES[i];
    SlabRange {
        id: SlabId(i as u32),
        start: e.start.load(Ordering::Relaxed),
        len: e.len.load(Ordering::Relaxed),
        slot_size: e.slot_size.load(Ordering::Relaxed),
        guard: e.guard.load(Ordering::Relaxed),
        class: SizeClass::from_index(e.class.load(Ordering::Relaxed)),
        labels: e.labels.load(Ordering::Relaxed),
    }
}

/// Every published slab. Lock-free and allocation-free: safe in a signal handler.
pub(crate) fn slabs() -> impl Iterator<Item = SlabRange> {
    (0..LEN.load(Ordering::Acquire)).map(read)
}

/// The slab whose chunk contains `addr`, if any. Signal-safe.
fn slab_of(addr: usize) -> Option<SlabRange> {
    let chunk = addr >> CHUNK_SHIFT;
    let mut b = home(chunk);
    for _ in 0..INDEX_SIZE {
        let v = INDEX[b].load(Ordering::Acquire);
        if v == 0 {
            return None;
        }
        if v >> SLAB_BITS == chunk + 1 {
            return Some(read(v & ((1 << SLAB_BITS) - 1)));
        }
        b = (b + 1) % INDEX_SIZE;
    }
    None
}

/// Finds the slot containing `addr`, if it lies in any slab. Signal-safe.
pub(crate) fn lookup(addr: usize) -> Option<SlotHit> {
    let slab = slab_of(addr).filter(|s| addr.wrapping_sub(s.start) < s.len)?;
    let index = (addr - slab.start) / slab.slot_size;
    let slot_lo = slab.start + index * slab.slot_size;
    Some(SlotHit {
        slab,
        index,
        slot_lo,
        in_guard: addr - slot_lo < slab.guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_maps_addresses_to_slots_and_guards() {
        // A fake range far from anything mapped: the registry only stores numbers.
        let start = 0x7000_0000_0000usize;
        let class = SizeClass::for_size(16 << 10).unwrap();
        let guard = 4096;
        let slot = guard + class.size();
        let id = register(start, 4 * slot, slot, guard, class, 0).unwrap();
        let hit = lookup(start + slot + 10).unwrap();
        assert_eq!(hit.slab.id, id);
        assert_eq!(hit.index, 1);
        assert!(hit.in_guard);
        let hit = lookup(start + 2 * slot - 1).unwrap();
        assert_eq!(hit.index, 1);
        assert!(!hit.in_guard);
        assert_eq!(hit.top(), start + 2 * slot);
        assert_eq!(hit.usable_lo(), start + slot + guard);
        assert_eq!(
            lookup(start + 4 * slot),
            None,
            "same chunk, past the slab's end"
        );
        assert_eq!(lookup(start - 1), None);
    }

    #[test]
    fn colliding_chunks_are_all_found() {
        // Many fake slabs, enough that some share a home bucket and probe past each other.
        let class = SizeClass::for_size(16 << 10).unwrap();
        let slot = 4096 + class.size();
        let base = 0x6000_0000_0000usize;
        let ids: Vec<SlabId> = (0..200)
            .map(|k| register(base + k * CHUNK, 2 * slot, slot, 4096, class, 0).unwrap())
            .collect();
        for (k, id) in ids.iter().enumerate() {
            let hit = lookup(base + k * CHUNK + slot + 4096).unwrap();
            assert_eq!(hit.slab.id, *id);
            assert_eq!(hit.index, 1);
        }
        assert_eq!(lookup(base + 200 * CHUNK), None);
    }
}
