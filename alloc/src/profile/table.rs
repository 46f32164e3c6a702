//! The profiler's records: one bucket per distinct (call stack, block size, label set), with
//! its cumulative allocation and free counts, and one entry per live sampled block (Go's
//! `mProf` buckets and specials, in tables of our own).
//!
//! Everything lives in memory mapped from the OS on first use (the tables are reserved once,
//! at their full size, and the kernel commits them page by page as they fill), and is
//! touched only under [`raw_lock`], a leaf lock: nothing else is locked while it is held.
//! Nothing here allocates through the global allocator, which is the allocator this
//! profiles.

use core::ptr::{self, NonNull};

use tessera_sys::lock::{Locked, RawLock};
use tessera_sys::mem;
use tessera_sys::random::mix64;

/// Frames kept per stack (the 64).
pub(crate) const MAX_FRAMES: usize = 64;

/// Buckets the table can hold; a sample with a new stack once it is full is counted in
/// [`Totals::dropped`] instead.
const MAX_BUCKETS: usize = 1 << 16;
/// Slots of the bucket index (open addressing, at most half full).
const INDEX_SLOTS: usize = MAX_BUCKETS * 2;
/// The index's first size: it doubles (rebuilt from the buckets into a fresh mapping) when
/// half full, up to `INDEX_SLOTS`, for the live map's reason (`LIVE_FIRST_SLOTS`).
const INDEX_FIRST_SLOTS: usize = 1 << 10;
/// Live sampled blocks the table can track (at the default rate, 512 GiB of live heap);
/// beyond that a sample is counted as allocated but not tracked (and in `dropped`).
const LIVE_SLOTS: usize = 1 << 20;
/// The live map's first size: it doubles (into a fresh mapping, the old one returned) when
/// it is 7/8 full, up to `LIVE_SLOTS`. Small, because every entry lands on a page chosen by
/// its address's hash: a map reserved at full size would make every live sample cost a page
/// of RSS. 256 entries are two pages; at 4,096 a small C program (git) held ~100 KiB of map
/// for its few dozen live samples.
const LIVE_FIRST_SLOTS: usize = 1 << 8;
/// The live map is kept at most this full (in 1/8ths) so that probes stay short.
const LIVE_MAX_EIGHTHS: usize = 7;
/// Entries of the memo of buckets by whole stack ([`Memo`]): 3 KiB, inside the table.
const MEMO_SLOTS: usize = 128;
/// 2^64 divided by the golden ratio: multiplicative (Fibonacci) hashing's factor.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

/// A bucket found for a stack that the unwinder gave as a whole (`unwind::capture_into`'s
/// number: the same number, the same return addresses), a size and a label set: a sample
/// from a place seen before finds its bucket without its frames, which need not even be
/// cut to the program's ([`record_known`]): ~100 instructions of a C sample's ~1,100 (the
/// frames' hash, the index's probe, the comparison, the cut).
#[derive(Clone, Copy)]
struct Memo {
    /// The stack's number plus one; 0 marks an empty entry.
    stack: u32,
    labels: u32,
    size: u64,
    bucket: u32,
}

const NO_MEMO: Memo = Memo {
    stack: 0,
    labels: 0,
    size: 0,
    bucket: 0,
};

/// One distinct allocation site.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Bucket {
    hash: u64,
    /// The block size the site allocates (its size class's, or the request's for a large
    /// block).
    pub(crate) size: u64,
    /// The label set active when the samples were taken (`labels.rs`; 0: none).
    pub(crate) labels: u32,
    depth: u32,
    frames: [usize; MAX_FRAMES],
    /// Sampled allocations and their bytes, since the start.
    pub(crate) allocs: u64,
    pub(crate) alloc_bytes: u64,
    /// Sampled blocks freed since the start, and their bytes.
    pub(crate) frees: u64,
    pub(crate) free_bytes: u64,
}

impl Bucket {
    /// The stack, innermost frame first (return addresses).
    pub(crate) fn frames(&self) -> &[usize] {
        &self.frames[..self.depth as usize]
    }
}

/// A live sampled block.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Live {
    /// The block's address; 0 marks an empty slot.
    pub(crate) addr: usize,
    /// Its bucket (index into the bucket array).
    pub(crate) bucket: u32,
    /// The thread that allocated it (the kernel's id).
    pub(crate) thread: u32,
    /// The size the caller asked for.
    pub(crate) requested: u64,
    /// When it was allocated (`CLOCK_MONOTONIC` milliseconds, the allocator's coarse clock).
    pub(crate) at_ms: u64,
}

/// What one sample records, besides the stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SampleInfo {
    pub(crate) addr: usize,
    pub(crate) size: u64,
    pub(crate) requested: u64,
    pub(crate) labels: u32,
    pub(crate) thread: u32,
    pub(crate) at_ms: u64,
}

/// Totals over the whole table.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    /// Samples taken.
    pub(crate) samples: u64,
    /// Sampled blocks live now.
    pub(crate) live: u64,
    /// Samples that found the bucket table or the live map full: counted nowhere else.
    pub(crate) dropped: u64,
}

/// Label sets the table can name (`intern_labels`); beyond that a new set is interned as
/// the empty set 0.
const MAX_LABEL_SETS: usize = 4096;
/// Bytes of label text (every distinct set once, as `key\0value\0...`).
const LABEL_BYTES: usize = 1 << 20;

struct Table {
    /// `MAX_BUCKETS` buckets, `len` of them used (null until the first sample).
    buckets: *mut Bucket,
    len: usize,
    /// `index_cap` bucket numbers plus one (0: empty), by hash (a power of two, at most
    /// `INDEX_SLOTS`, at most half full).
    index: *mut u32,
    index_cap: usize,
    /// `live_cap` entries (a power of two, at most `LIVE_SLOTS`), by address (linear
    /// probing, deletion by backward shift).
    live: *mut Live,
    live_cap: usize,
    nlive: usize,
    totals: Totals,
    /// `MAX_LABEL_SETS` (offset, length) pairs into `label_text`; set `n` is entry `n - 1`.
    label_sets: *mut (u32, u32),
    nlabel_sets: usize,
    /// `LABEL_BYTES` of label text, `label_len` used.
    label_text: *mut u8,
    label_len: usize,
    /// Buckets by whole stack, direct-mapped (buckets are never removed, so an entry stays
    /// right).
    memo: [Memo; MEMO_SLOTS],
}

// SAFETY: the pointers are process-lifetime OS mappings, touched only under the lock.
unsafe impl Send for Table {}

static TABLE: Locked<Table> = Locked::new(Table {
    buckets: ptr::null_mut(),
    len: 0,
    index: ptr::null_mut(),
    index_cap: 0,
    live: ptr::null_mut(),
    live_cap: 0,
    nlive: 0,
    totals: Totals {
        samples: 0,
        live: 0,
        dropped: 0,
    },
    label_sets: ptr::null_mut(),
    nlabel_sets: 0,
    label_text: ptr::null_mut(),
    label_len: 0,
    memo: [NO_MEMO; MEMO_SLOTS],
});

/// The table's lock, for the fork handlers (`fork.rs`).
pub(crate) fn raw_lock() -> &'static RawLock {
    TABLE.raw()
}

/// The bytes `reserve::<T>(n)` maps: `n` values rounded up to whole pages.
fn bytes_for<T>(n: usize) -> usize {
    let page = mem::page_size();
    (n * size_of::<T>()).div_ceil(page) * page
}

/// Reserves `n` values of `T`, zeroed (fresh anonymous memory), rounded up to whole pages.
fn reserve<T>(n: usize) -> Option<*mut T> {
    mem::reserve(bytes_for::<T>(n), mem::page_size())
        .ok()
        .map(|p: NonNull<u8>| p.as_ptr().cast())
}

impl Table {
    /// Maps the tables on first use; false when the OS refuses.
    fn ready(&mut self) -> bool {
        if !self.buckets.is_null() {
            return true;
        }
        let (Some(buckets), Some(index), Some(live)) = (
            reserve::<Bucket>(MAX_BUCKETS),
            reserve::<u32>(INDEX_FIRST_SLOTS),
            reserve::<Live>(LIVE_FIRST_SLOTS),
        ) else {
            // A partial success leaks a reservation of address space only (never touched);
            // the next sample tries again.
            return false;
        };
        self.buckets = buckets;
        self.index = index;
        self.index_cap = INDEX_FIRST_SLOTS;
        self.live = live;
        self.live_cap = LIVE_FIRST_SLOTS;
        true
    }

    /// The bucket of (`frames`, `size`, `labels`), made if new; `None` when the table is
    /// full.
    fn bucket(&mut self, frames: &[usize], size: u64, labels: u32) -> Option<u32> {
        let hash = stack_hash(frames, size, labels);
        let mask = self.index_cap - 1;
        let mut slot = hash as usize & mask;
        loop {
            // SAFETY: `slot <= mask`, inside the index mapping's `index_cap` entries.
            let entry = unsafe { *self.index.add(slot) };
            if entry == 0 {
                break;
            }
            let n = entry - 1;
            // SAFETY: index entries name buckets below `len`.
            let b = unsafe { &*self.buckets.add(n as usize) };
            if b.hash == hash && b.size == size && b.labels == labels && b.frames() == frames {
                return Some(n);
            }
            slot = (slot + 1) & mask;
        }
        if self.len == MAX_BUCKETS {
            return None;
        }
        if (self.len + 1) * 2 > self.index_cap {
            if !self.grow_index() {
                return None;
            }
            // The new index has room: find this hash's empty slot there.
            // SAFETY: the index's mapping holds `index_cap` entries, under half filled.
            slot = unsafe { empty_slot(self.index, self.index_cap, hash) };
        }
        let n = self.len as u32;
        let mut b = Bucket {
            hash,
            size,
            labels,
            depth: frames.len() as u32,
            frames: [0; MAX_FRAMES],
            allocs: 0,
            alloc_bytes: 0,
            frees: 0,
            free_bytes: 0,
        };
        b.frames[..frames.len()].copy_from_slice(frames);
        // SAFETY: `n < MAX_BUCKETS`, inside the bucket mapping; `slot` is an empty slot of
        // the index (kept at most half full).
        unsafe {
            self.buckets.add(n as usize).write(b);
            *self.index.add(slot) = n + 1;
        }
        self.len += 1;
        Some(n)
    }

    /// The memo's slot for (`stack`, `size`, `labels`): a multiplicative hash's top bits.
    fn memo_slot(stack: u32, size: u64, labels: u32) -> usize {
        let key = u64::from(stack) << 32 ^ u64::from(labels) << 40 ^ size;
        (key.wrapping_mul(FIBONACCI) >> (64 - MEMO_SLOTS.trailing_zeros())) as usize
    }

    /// The bucket the memo holds for (`stack`, `size`, `labels`), if it does.
    fn memo_get(&self, stack: u32, size: u64, labels: u32) -> Option<u32> {
        let m = self.memo[Self::memo_slot(stack, size, labels)];
        (m.stack == stack.wrapping_add(1) && m.size == size && m.labels == labels)
            .then_some(m.bucket)
    }

    /// Notes `bucket` as the bucket of (`stack`, `size`, `labels`).
    fn memo_put(&mut self, stack: u32, size: u64, labels: u32, bucket: u32) {
        self.memo[Self::memo_slot(stack, size, labels)] = Memo {
            stack: stack.wrapping_add(1),
            labels,
            size,
            bucket,
        };
    }

    /// Doubles the bucket index, rebuilt from the buckets' hashes into a fresh mapping;
    /// false at `INDEX_SLOTS` or when the OS refuses (the index stays as it was).
    fn grow_index(&mut self) -> bool {
        if self.index_cap >= INDEX_SLOTS {
            return false;
        }
        let cap = self.index_cap * 2;
        let Some(bigger) = reserve::<u32>(cap) else {
            return false;
        };
        for n in 0..self.len {
            // SAFETY: buckets below `len` are initialised.
            let hash = unsafe { (*self.buckets.add(n)).hash };
            // SAFETY: `bigger` holds `cap` entries, fewer than half of them filled; the slot
            // `empty_slot` returns is one of them.
            unsafe { *bigger.add(empty_slot(bigger, cap, hash)) = n as u32 + 1 };
        }
        // SAFETY: nothing refers to the old index, mapped by `reserve` at this size.
        unsafe { mem::release(self.index.cast(), bytes_for::<u32>(self.index_cap)) };
        self.index = bigger;
        self.index_cap = cap;
        true
    }

    /// The home slot of `addr` in the live map (mapped, `live_cap` a power of two): the top
    /// bits of a multiplicative hash of the address (blocks are 16-byte aligned), which every
    /// bit of it moves; a third of `mix64`'s instructions, and the map's probes and
    /// backward shifts hash at every step.
    #[inline]
    fn live_slot(&self, addr: usize) -> usize {
        let bits = self.live_cap.trailing_zeros();
        debug_assert!(self.live_cap.is_power_of_two() && bits > 0);
        ((addr as u64 >> 4).wrapping_mul(FIBONACCI) >> (64 - bits)) as usize
    }

    /// Adds a live entry; false when the map is full (and cannot grow).
    #[inline]
    fn insert_live(&mut self, entry: Live) -> bool {
        if self.nlive >= self.live_cap / 8 * LIVE_MAX_EIGHTHS && !self.grow_live() {
            return false;
        }
        let mut slot = self.live_slot(entry.addr);
        loop {
            let at = self.live_at(slot);
            if at.addr == 0 || at.addr == entry.addr {
                // An address already present is a block freed behind the profiler's back
                // (cannot happen: every free of a sampled block removes it) or reused after
                // such a free: the new sample replaces it.
                let fresh = at.addr == 0;
                *at = entry;
                if fresh {
                    self.nlive += 1;
                }
                return true;
            }
            slot = (slot + 1) & (self.live_cap - 1);
        }
    }

    /// Doubles the live map into a fresh mapping and returns the old one; false at
    /// `LIVE_SLOTS` or when the OS refuses (the map stays as it was). Out of line: every
    /// sample's insertion would otherwise save and restore the registers it uses.
    #[cold]
    #[inline(never)]
    fn grow_live(&mut self) -> bool {
        if self.live_cap >= LIVE_SLOTS {
            return false;
        }
        let Some(bigger) = reserve::<Live>(self.live_cap * 2) else {
            return false;
        };
        let (old, old_cap) = (self.live, self.live_cap);
        self.live = bigger;
        self.live_cap = old_cap * 2;
        self.nlive = 0;
        for slot in 0..old_cap {
            // SAFETY: `slot < old_cap`, inside the old mapping, which nobody else uses.
            let e = unsafe { *old.add(slot) };
            if e.addr != 0 {
                let inserted = self.insert_live(e);
                debug_assert!(inserted, "a doubled map holds what the old one did");
            }
        }
        // SAFETY: the old map's entries are copied; nothing refers to its memory, which
        // `reserve` mapped at this size (rounded to pages, as `reserve` rounds).
        unsafe { mem::release(old.cast(), bytes_for::<Live>(old_cap)) };
        true
    }

    /// The live map's slot `slot` (masked into the map).
    fn live_at(&mut self, slot: usize) -> &mut Live {
        // SAFETY: the mask keeps the slot inside the `live_cap` entries of the live
        // mapping, which only the lock's holder (`&mut self`) touches.
        unsafe { &mut *self.live.add(slot & (self.live_cap - 1)) }
    }

    /// Removes and returns the live entry of `addr`.
    fn remove_live(&mut self, addr: usize) -> Option<Live> {
        if self.live.is_null() || addr == 0 {
            return None;
        }
        let mask = self.live_cap - 1;
        let mut slot = self.live_slot(addr);
        loop {
            let at = *self.live_at(slot);
            if at.addr == 0 {
                return None;
            }
            if at.addr == addr {
                break;
            }
            slot = (slot + 1) & mask;
        }
        let found = *self.live_at(slot);
        // Backward-shift deletion: pull later entries of the probe run into the hole when
        // their home slot does not lie strictly between the hole and them.
        let mut hole = slot;
        let mut next = (hole + 1) & mask;
        loop {
            let e = *self.live_at(next);
            if e.addr == 0 {
                break;
            }
            let home = self.live_slot(e.addr);
            let dist_from_home = next.wrapping_sub(home) & mask;
            let dist_to_hole = next.wrapping_sub(hole) & mask;
            if dist_from_home >= dist_to_hole {
                *self.live_at(hole) = e;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.live_at(hole).addr = 0;
        self.nlive -= 1;
        Some(found)
    }
}

/// Records a sample: the block `info.addr` allocated from `frames`, which the unwinder
/// numbered `stack` if it could (the same number, the same frames: see
/// `unwind::capture_into`). Returns whether the block is now a live sample (false when the
/// tables were full or not set up: the sample is dropped, counted as allocated and freed
/// at once if it got a bucket).
pub(crate) fn record(frames: &[usize], stack: Option<u32>, info: SampleInfo) -> bool {
    let frames = &frames[..frames.len().min(MAX_FRAMES)];
    let mut t = TABLE.lock();
    t.totals.samples += 1;
    if !t.ready() {
        t.totals.dropped += 1;
        return false;
    }
    let Some(n) = t.bucket(frames, info.size, info.labels) else {
        t.totals.dropped += 1;
        return false;
    };
    if let Some(stack) = stack {
        t.memo_put(stack, info.size, info.labels, n);
    }
    // SAFETY: `bucket` returned a bucket below `len`.
    unsafe { t.add(n, &info) }
}

/// Records a sample as [`record`] does, if the stack numbered `stack` (by
/// `unwind::capture_into`) met the table before with this size and label set: its bucket is
/// then known without the frames, which the caller need not prepare. `None` (nothing
/// recorded) when it is not known: the caller then calls [`record`].
pub(crate) fn record_known(stack: u32, info: &SampleInfo) -> Option<bool> {
    let mut t = TABLE.lock();
    // A memo entry names a bucket, so the tables are mapped.
    let n = t.memo_get(stack, info.size, info.labels)?;
    t.totals.samples += 1;
    // SAFETY: a memo entry holds a bucket `bucket` returned (`record`), below `len` then,
    // and buckets are never removed.
    Some(unsafe { t.add(n, info) })
}

impl Table {
    /// The sample `info` of bucket `n`: counted, and tracked as live if the live map takes
    /// it.
    ///
    /// # Safety
    /// `n` must be a bucket of the table: below `len`.
    unsafe fn add(&mut self, n: u32, info: &SampleInfo) -> bool {
        debug_assert!((n as usize) < self.len);
        // SAFETY: the caller's contract: `n` is below `len`.
        let b = unsafe { &mut *self.buckets.add(n as usize) };
        b.allocs += 1;
        b.alloc_bytes += info.size;
        let live = Live {
            addr: info.addr,
            bucket: n,
            thread: info.thread,
            requested: info.requested,
            at_ms: info.at_ms,
        };
        if self.insert_live(live) {
            self.totals.live += 1;
            true
        } else {
            // Counted as allocated and, so that in-use stays right, as freed at once.
            // SAFETY: as above (`insert_live` does not touch the buckets).
            let b = unsafe { &mut *self.buckets.add(n as usize) };
            b.frees += 1;
            b.free_bytes += info.size;
            self.totals.dropped += 1;
            false
        }
    }
}

/// Forgets the sampled block at `addr` (it is being freed); false if it was not one.
pub(crate) fn forget(addr: usize) -> bool {
    let mut t = TABLE.lock();
    let Some(live) = t.remove_live(addr) else {
        return false;
    };
    t.totals.live -= 1;
    // SAFETY: live entries name buckets below `len`.
    let b = unsafe { &mut *t.buckets.add(live.bucket as usize) };
    b.frees += 1;
    b.free_bytes += b.size;
    true
}

/// The live sampled block at `old` now lives at `new` (a remapped huge block): same sample.
pub(crate) fn rekey(old: usize, new: usize) {
    let mut t = TABLE.lock();
    if let Some(mut live) = t.remove_live(old) {
        live.addr = new;
        let back = t.insert_live(live);
        debug_assert!(back, "the entry just removed left room for itself");
    }
}

/// Whether `addr` is a live sampled block.
pub(crate) fn is_live(addr: usize) -> bool {
    let t = TABLE.lock();
    if t.live.is_null() {
        return false;
    }
    let mut slot = t.live_slot(addr);
    loop {
        // SAFETY: slots are masked into the live mapping's `live_cap` entries.
        let at = unsafe { *t.live.add(slot) };
        if at.addr == 0 {
            return false;
        }
        if at.addr == addr {
            return true;
        }
        slot = (slot + 1) & (t.live_cap - 1);
    }
}

/// Calls `f` on every bucket with its labels, under the table's lock: `f` must not allocate
/// through the global allocator (or take the lock again).
pub(crate) fn visit_buckets(mut f: impl FnMut(&Bucket, LabelPairs<'_>)) -> Totals {
    let t = TABLE.lock();
    for n in 0..t.len {
        // SAFETY: buckets below `len` are initialised.
        let b = unsafe { &*t.buckets.add(n) };
        f(b, t.labels(b.labels));
    }
    t.totals
}

/// Calls `f` on every live sampled block and its bucket, under the table's lock (as
/// [`visit_buckets`]).
pub(crate) fn visit_live(mut f: impl FnMut(&Live, &Bucket)) {
    let t = TABLE.lock();
    if t.live.is_null() {
        return;
    }
    for slot in 0..t.live_cap {
        // SAFETY: inside the live mapping.
        let e = unsafe { &*t.live.add(slot) };
        if e.addr != 0 {
            // SAFETY: live entries name buckets below `len`.
            f(e, unsafe { &*t.buckets.add(e.bucket as usize) });
        }
    }
}

/// The (key, value) pairs of label set `set` (none for 0 or an unknown set). Read under the
/// table's lock, used after it: the label text is mapped once at its full size, only ever
/// appended to, and never released, so a published set's bytes stay as they are for the
/// life of the process.
pub(crate) fn label_pairs(set: u32) -> LabelPairs<'static> {
    let t = TABLE.lock();
    let text = t.labels(set).rest;
    // SAFETY: as said above: `text` is published label text (or empty), which is neither
    // written again, moved nor unmapped.
    let rest = unsafe { core::slice::from_raw_parts(text.as_ptr(), text.len()) };
    LabelPairs { rest }
}

/// Totals only.
pub(crate) fn totals() -> Totals {
    TABLE.lock().totals
}

/// The label set of `pairs` (key, value), made if new: a number for `Cache::prof_labels`
/// (0 for no labels, and when the label tables are full or cannot be mapped).
pub(crate) fn intern_labels(pairs: &[(&str, &str)]) -> u32 {
    if pairs.is_empty() {
        return 0;
    }
    let mut t = TABLE.lock();
    if t.label_sets.is_null() {
        let (Some(sets), Some(text)) = (
            reserve::<(u32, u32)>(MAX_LABEL_SETS),
            reserve::<u8>(LABEL_BYTES),
        ) else {
            return 0;
        };
        t.label_sets = sets;
        t.label_text = text;
    }
    let encoded_len: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    // The same set already interned? (Sets are few; a linear scan keeps this simple.)
    for n in 0..t.nlabel_sets {
        // SAFETY: entries below `nlabel_sets` are written.
        let (off, len) = unsafe { *t.label_sets.add(n) };
        if len as usize == encoded_len && same_pairs(t.text(off, len), pairs) {
            return n as u32 + 1;
        }
    }
    if t.nlabel_sets == MAX_LABEL_SETS || t.label_len + encoded_len > LABEL_BYTES {
        return 0;
    }
    let off = t.label_len;
    for (k, v) in pairs {
        for part in [k.as_bytes(), v.as_bytes()] {
            // SAFETY: `off + encoded_len <= LABEL_BYTES`, checked above.
            unsafe {
                ptr::copy_nonoverlapping(part.as_ptr(), t.label_text.add(t.label_len), part.len());
                *t.label_text.add(t.label_len + part.len()) = 0;
            }
            t.label_len += part.len() + 1;
        }
    }
    let n = t.nlabel_sets;
    // SAFETY: `n < MAX_LABEL_SETS`.
    unsafe { *t.label_sets.add(n) = (off as u32, encoded_len as u32) };
    t.nlabel_sets += 1;
    n as u32 + 1
}

impl Table {
    fn text(&self, off: u32, len: u32) -> &[u8] {
        // SAFETY: (off, len) pairs name written label text.
        unsafe { core::slice::from_raw_parts(self.label_text.add(off as usize), len as usize) }
    }

    /// The (key, value) pairs of label set `set` (none for 0 or an unknown set).
    fn labels(&self, set: u32) -> LabelPairs<'_> {
        let text: &[u8] = if set == 0 || set as usize > self.nlabel_sets {
            &[]
        } else {
            // SAFETY: entries below `nlabel_sets` are written.
            let (off, len) = unsafe { *self.label_sets.add(set as usize - 1) };
            self.text(off, len)
        };
        LabelPairs { rest: text }
    }
}

/// Whether the encoded set `text` holds exactly `pairs`, in order.
fn same_pairs(text: &[u8], pairs: &[(&str, &str)]) -> bool {
    let mut it = LabelPairs { rest: text };
    pairs
        .iter()
        .all(|(k, v)| it.next() == Some((k.as_bytes(), v.as_bytes())))
        && it.next().is_none()
}

/// The (key, value) pairs of an interned label set, as bytes (valid UTF-8: they were `str`s).
pub(crate) struct LabelPairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LabelPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut parts = self.rest.splitn(3, |&b| b == 0);
        let (k, v) = (parts.next()?, parts.next()?);
        self.rest = parts.next().unwrap_or(&[]);
        Some((k, v))
    }
}

/// The first empty slot of the open-addressed index `index` of `cap` entries (a power of
/// two) probing from `hash`'s home.
///
/// # Safety
/// `index` must point to `cap` readable entries, not all of them filled.
unsafe fn empty_slot(index: *const u32, cap: usize, hash: u64) -> usize {
    let mut slot = hash as usize & (cap - 1);
    // SAFETY: the mask keeps `slot` below `cap` (the caller's contract covers the rest).
    while unsafe { *index.add(slot) } != 0 {
        slot = (slot + 1) & (cap - 1);
    }
    slot
}

/// A bucket's hash. Each frame is folded in with a rotate, an xor and a multiply (FxHash's
/// step: order matters), and the whole finalised once: a finaliser per frame cost ~6
/// instructions more a frame, ~40 a C sample of 7 frames.
fn stack_hash(frames: &[usize], size: u64, labels: u32) -> u64 {
    let mut h = size ^ ((labels as u64) << 40);
    for &f in frames {
        h = (h.rotate_left(5) ^ f as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The table is process-wide; these tests use addresses no real block has (below the
    // first page) so that they cannot meet samples other tests take.

    #[test]
    fn records_and_forgets() {
        let frames = [0x1000usize, 0x2000, 0x3000];
        for i in 1..=100usize {
            record(
                &frames,
                None,
                SampleInfo {
                    addr: i * 16,
                    size: 48,
                    requested: 40,
                    labels: 0,
                    thread: 1,
                    at_ms: 0,
                },
            );
        }
        for i in 1..=100usize {
            assert!(is_live(i * 16), "block {i} missing");
        }
        for i in (1..=100usize).step_by(2) {
            assert!(forget(i * 16));
            assert!(!forget(i * 16), "forgotten twice");
        }
        for i in 1..=100usize {
            assert_eq!(is_live(i * 16), i % 2 == 0, "block {i}");
        }
        let mut seen = None;
        visit_buckets(|b, _| {
            if b.frames() == frames && b.size == 48 {
                seen = Some((b.allocs, b.frees, b.alloc_bytes, b.free_bytes));
            }
        });
        let (allocs, frees, bytes, freed) = seen.expect("bucket missing");
        assert!(allocs >= 100 && frees >= 50);
        assert_eq!(bytes, allocs * 48);
        assert_eq!(freed, frees * 48);
        for i in (2..=100usize).step_by(2) {
            assert!(forget(i * 16));
        }
    }

    #[test]
    fn backward_shift_keeps_every_probe_run_reachable() {
        // Many addresses, removed in an interleaved order: every remaining one must stay
        // findable after each removal.
        let base = 0x100_0000usize; // below any mapping the tests make (16 MiB)
        let n = 4000usize;
        let frames = [0xabcusize];
        for i in 0..n {
            record(
                &frames,
                None,
                SampleInfo {
                    addr: base + i * 16,
                    size: 16,
                    requested: 16,
                    labels: 7,
                    thread: 2,
                    at_ms: 0,
                },
            );
        }
        for i in (0..n).filter(|i| i % 3 == 0) {
            assert!(forget(base + i * 16));
        }
        for i in 0..n {
            assert_eq!(is_live(base + i * 16), i % 3 != 0, "address {i}");
        }
        for i in (0..n).filter(|i| i % 3 != 0) {
            assert!(forget(base + i * 16));
        }
        assert!(!is_live(base));
    }

    #[test]
    fn the_bucket_index_grows_and_finds_every_bucket() {
        // 3,000 distinct stacks: the index doubles from 1,024 slots twice at least.
        let base = 0x200_0000usize; // addresses no real block has (32 MiB)
        let site = |i: usize| [0x7700_0000usize + i, 0x7800_0000];
        for round in 0..2 {
            for i in 0..3000 {
                record(
                    &site(i),
                    None,
                    SampleInfo {
                        addr: base + (round * 3000 + i) * 16,
                        size: 24,
                        requested: 24,
                        labels: 0,
                        thread: 3,
                        at_ms: 0,
                    },
                );
            }
        }
        let mut found = 0;
        visit_buckets(|b, _| {
            if b.frames().len() == 2 && b.frames()[1] == 0x7800_0000 && b.size == 24 {
                // Each site's second sample found its first one's bucket.
                assert_eq!(b.allocs, 2, "{:x?}", b.frames());
                found += 1;
            }
        });
        assert_eq!(found, 3000);
        for a in 0..6000 {
            assert!(forget(base + a * 16), "sample {a} lost");
        }
    }

    #[test]
    fn a_numbered_stack_finds_its_bucket_without_frames() {
        // A number no capture gives (the unwinder's are below 2^16), addresses no real block
        // has (48 MiB).
        let (stack, base) = (0x7_0000u32, 0x300_0000usize);
        let frames = [0x7a00_0000usize, 0x7b00_0000];
        let info = |i: usize, size: u64, labels: u32| SampleInfo {
            addr: base + i * 16,
            size,
            requested: size,
            labels,
            thread: 4,
            at_ms: 0,
        };
        // Unknown until a sample with frames met the table.
        assert_eq!(record_known(stack, &info(0, 40, 0)), None);
        assert!(record(&frames, Some(stack), info(0, 40, 0)));
        assert_eq!(record_known(stack, &info(1, 40, 0)), Some(true));
        // Another size or label set is another bucket, which the frames must find.
        assert_eq!(record_known(stack, &info(2, 48, 0)), None);
        assert_eq!(record_known(stack, &info(2, 40, 3)), None);
        assert_eq!(record_known(stack + 1, &info(2, 40, 0)), None);
        assert!(record(&frames, Some(stack), info(2, 48, 0)));
        assert_eq!(record_known(stack, &info(3, 48, 0)), Some(true));
        let mut counts = Vec::new();
        visit_buckets(|b, _| {
            if b.frames() == frames {
                counts.push((b.size, b.allocs));
            }
        });
        counts.sort_unstable();
        assert_eq!(counts, [(40, 2), (48, 2)]);
        for i in 0..4 {
            assert!(forget(base + i * 16), "sample {i} not live");
        }
    }

    #[test]
    fn label_sets_are_interned_once() {
        assert_eq!(intern_labels(&[]), 0);
        let a = intern_labels(&[("handler", "upload"), ("tenant", "7")]);
        let b = intern_labels(&[("handler", "upload")]);
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(intern_labels(&[("handler", "upload"), ("tenant", "7")]), a);
        // A key/value split elsewhere is another set.
        assert_ne!(intern_labels(&[("handle", "rupload"), ("tenant", "7")]), a);
        let t = TABLE.lock();
        let pairs: Vec<_> = t.labels(a).collect();
        assert_eq!(
            pairs,
            vec![
                (&b"handler"[..], &b"upload"[..]),
                (&b"tenant"[..], &b"7"[..])
            ]
        );
        assert_eq!(t.labels(0).count(), 0);
    }

    #[test]
    fn stacks_differ_by_frames_size_and_labels() {
        let a = stack_hash(&[1, 2, 3], 16, 0);
        assert_ne!(a, stack_hash(&[1, 2, 4], 16, 0));
        assert_ne!(a, stack_hash(&[1, 2, 3], 32, 0));
        assert_ne!(a, stack_hash(&[1, 2, 3], 16, 1));
        assert_ne!(a, stack_hash(&[1, 2], 16, 0));
        assert_ne!(a, stack_hash(&[3, 2, 1], 16, 0));
        assert_ne!(a, stack_hash(&[2, 1, 3], 16, 0));
    }
}
