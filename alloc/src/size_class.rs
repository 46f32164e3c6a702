//! The size-class table: which object sizes exist, how many pages a span of each holds,
//! and the size → class lookup the fast path uses (a table load, no division, no loop).
//!
//! The table is computed at compile time from three rules rather than typed in:
//! 1. up to 128 B the step is 8 B (the smallest alignment Tessera hands out);
//! 2. above that, every doubling is cut into 8 equal steps, so a class is at most 1/8
//!    larger than the one below it: internal waste (the bytes a request leaves unused in
//!    its object) is below 12.5% for every class from 64 B up. Below 64 B the 8-byte step
//!    itself is the floor: at most 7 B are wasted, which is a larger fraction of a 16 B
//!    object but is the alignment any allocator pays (see `waste_is_bounded`);
//! 3. a span of a class is the fewest 8 KiB pages that make at least 64 KiB and 8 objects
//!    (so a span serves many refills: mimalloc's small pages are 64 KiB for the same
//!    reason) and leave at most 1/8 of the span unused at its tail. Spans are carved
//!    lazily (`cache.rs`), so an untouched part of a span costs address space, not RSS.
//!    For objects above half a page, up to twice that many pages are tried and the span
//!    with the smallest tail is taken (see [`full_span_pages`]).
//!
//! One class breaks rule 2: 4,384 B, between 4,096 and 4,608, for "a 4 KiB page and a
//! header" (see [`PAGE_PLUS_HEADER`]).
//!
//! Every power of two up to `MAX_SMALL` is a class, so an alignment request can always be
//! met by a class whose size it divides (objects sit at `span base + colour + i * size`,
//! span bases are page aligned, and the colour is a multiple of every power of two the size
//! is: see [`colour`]).

use tessera_span::{PAGE_SHIFT, PAGE_SIZE, Span};

/// Largest size served from size-classed spans; larger requests get whole spans.
pub const MAX_SMALL: usize = 32 << 10;
/// Largest size the fast path's 8-byte-granular table covers.
pub const MAX_FAST: usize = 1024;

/// The smallest span worth making.
const MIN_SPAN_BYTES: usize = 64 << 10;

/// The class after 4 KiB: a 4 KiB page plus a header of up to 288 B. Programs that cache
/// 4 KiB pages keep each with a header of their own in one block: sqlite3's page cache
/// holds its pages as 4,368 B blocks (4,096 and 272; its runner workload holds 2,127 of
/// them at its peak), and the 4,608 B class they would take otherwise, with its 14-object
/// spans, costs 4,681 B a block. A 4,480 B class (a header of up to 384 B) with 20-object
/// spans cost 4,506 B; this one, with 28-object spans of 15 pages, costs 4,389 B (glibc:
/// 4,384 B), 243 KiB less over sqlite3's 2,127 blocks. A header of 289 to 512 B takes the
/// 4,608 B class. A multiple of 32, as every class above `MAX_FAST` is (the coarse
/// lookup's step, [`COARSE_STEP`]).
pub const PAGE_PLUS_HEADER: usize = 4096 + 288;

/// The step of the size lookup above `MAX_FAST`: every class there is a multiple of it.
/// 32 B, so that [`PAGE_PLUS_HEADER`] can fit sqlite3's blocks; the table is 993 bytes
/// (249 at a 128 B step), and the lookup is the same shift and load at any step.
const COARSE_STEP: usize = 32;

/// The class after `size`.
const fn next_size(size: usize) -> usize {
    if size == 4096 {
        PAGE_PLUS_HEADER
    } else if size == PAGE_PLUS_HEADER {
        4096 + step(4096)
    } else {
        size + step(size)
    }
}

const fn count_classes() -> usize {
    let mut n = 0;
    let mut size = 8;
    while size <= MAX_SMALL {
        n += 1;
        size = next_size(size);
    }
    n
}

/// The step from class `size` to the next one.
const fn step(size: usize) -> usize {
    if size < 128 {
        8
    } else {
        // 8 steps per doubling: the step is 1/8 of the power of two at or below `size`.
        (1 << (usize::BITS - 1 - size.leading_zeros())) / 8
    }
}

/// Number of size classes.
pub const NUM_CLASSES: usize = count_classes();

/// A size class: an index into [`CLASSES`], below [`NUM_CLASSES`]; `class.size()` is its
/// object size. Every class travels as one, from the size lookups through a cache's refill
/// to the span it formats, so a class cannot be mixed up with a page count or a node. A
/// span record keeps it as a byte (`Span::class`, the span crate knows no classes):
/// [`SizeClass::of`] reads it back.
///
/// Register-wide, as the bare `usize` it replaces: a byte would cost a zero extension at
/// every call that passes one (the refill, `alloc_small`), so the tables and the span
/// record keep bytes and the class is widened once, where it is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeClass(usize);

impl SizeClass {
    /// The class with index `index`; panics unless `index < NUM_CLASSES`.
    pub const fn new(index: usize) -> SizeClass {
        assert!(index < NUM_CLASSES);
        SizeClass(index)
    }

    /// Every class, smallest first.
    pub fn all() -> impl Iterator<Item = SizeClass> {
        (0..NUM_CLASSES).map(SizeClass)
    }

    /// The class a small span was formatted with.
    #[inline(always)]
    pub fn of(span: &Span) -> SizeClass {
        SizeClass(span.class as usize)
    }

    /// The class as an index into the per-class tables ([`CLASSES`], a cache's bins).
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0
    }

    /// The class as the byte a span record keeps (`Span::class`).
    #[inline(always)]
    pub const fn byte(self) -> u8 {
        self.0 as u8
    }

    /// The class's row of the table.
    #[inline(always)]
    pub fn info(self) -> &'static ClassInfo {
        &CLASSES[self.index()]
    }

    /// Object size in bytes.
    #[inline(always)]
    pub fn size(self) -> usize {
        self.info().size as usize
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct ClassInfo {
    /// Object size in bytes.
    pub size: u32,
    /// Pages per span.
    pub pages: u32,
    /// Objects per span.
    pub objects: u32,
    /// `u64::MAX / size + 1`: an offset below 2^32 is a multiple of `size` exactly when
    /// `offset * div_test` (wrapping) is below `div_test` (Lemire, Kaser and Kurz, "Faster
    /// remainder by direct computation", 2019). One multiply and one compare tell an object's
    /// first byte from an interior pointer; see `divides`.
    pub div_test: u64,
}

/// Whether `offset` is a multiple of the size whose `ClassInfo::div_test` is `div_test`.
/// Exact for offsets below 2^32 (spans are far smaller); `every_divisibility_test_is_exact`
/// checks every offset of every class's span.
#[inline(always)]
pub fn divides(offset: usize, div_test: u64) -> bool {
    (offset as u64).wrapping_mul(div_test) < div_test
}

/// The fewest pages that make at least `min_bytes` and `min_objects` objects of `size`
/// and leave at most 1/8 of the span unused at its tail.
const fn pages_for(size: usize, min_bytes: usize, min_objects: usize) -> usize {
    let mut pages = 1;
    loop {
        let bytes = pages * PAGE_SIZE;
        let objects = bytes / size;
        let tail = bytes - objects * size;
        if bytes >= min_bytes && objects >= min_objects && tail * 8 <= bytes {
            return pages;
        }
        pages += 1;
    }
}

/// Pages of a class's full span: the fewest that make `MIN_SPAN_BYTES` and 8 objects
/// (`pages_for`), except for objects above half a page: their tail is a large share of each
/// object's cost (8 pages of 5,120 B objects hold 12 and leave 4 KiB, 6.7%), so from the
/// fewest pages up to twice as many, the span leaving the smallest share unused is taken
/// (10 pages hold 16 and leave nothing). Such a span has little or no tail to colour with
/// (`colour`), which matters little for objects that span several cache lines' worth of
/// sets anyway. From 8 KiB up, the fewest pages leave no tail already.
const fn full_span_pages(size: usize) -> usize {
    let fewest = pages_for(size, MIN_SPAN_BYTES, 8);
    if size <= PAGE_SIZE / 2 {
        return fewest;
    }
    let mut best = fewest;
    let mut pages = fewest + 1;
    while pages < 2 * fewest {
        // This span's share unused is below the best's (tail / pages, without division).
        if (pages * PAGE_SIZE % size) * best < (best * PAGE_SIZE % size) * pages {
            best = pages;
        }
        pages += 1;
    }
    best
}

/// Fresh spans of a class start small and double: a thread's `n`th fresh span of a class
/// (from 0) has `ramp_pages(class, n)` pages, the class's full span (`ClassInfo::pages`)
/// from the `RAMP_STEPS`th on. A class a program uses for a handful of objects then holds
/// one 8 KiB span instead of 64 KiB, whose free room a huge page would make resident and
/// whose objects, scattered over more pages, keep more of them from emptying (a git run's
/// thread cache held 3.8 MiB of free room for 1.3 MiB live); a class in heavy use reaches
/// full spans after three refills from the page heap.
pub const RAMP_STEPS: usize = 4;

/// Whether a cache gives up a span of `class` once it has used it up, for the node's
/// central list to hand to whichever cache next needs one (`Cache::give_up_current`),
/// rather than keep it for its own reuse: the classes above [`MAX_FAST`], whose spans hold
/// 64 objects or fewer (8 from 8 KiB up). A cache that keeps such spans holds them mostly
/// free when other threads free its objects: the threaded stress program's caches held 21
/// MiB of free room for 27 MiB live, 8 spans of 8 objects of one 18-32 KiB class with 20 to
/// 28 in use. Its peak RSS fell from 66 to 48 MiB with these shared, to 46 MiB with every
/// class shared, and to 56 MiB with those from 4 KiB (medians of 5 runs at a load of 9,
/// before central spans emptied by remote frees went back to the page heap); but a cache's
/// frees into a span it gave up are remote ones (a CAS per span's run instead of a plain
/// push), which the small classes, freed by the million by single-threaded programs, should
/// not pay. The per-CPU caches draw the same line (`percpu::slab::PERCPU_CLASSES`).
#[inline]
pub fn shared(class: SizeClass) -> bool {
    class.size() > MAX_FAST
}

/// Pages of each class's fresh span at each ramp step (see [`RAMP_STEPS`]).
static RAMP_PAGES: [[u32; RAMP_STEPS]; NUM_CLASSES] = build_ramp();

const fn build_ramp() -> [[u32; RAMP_STEPS]; NUM_CLASSES] {
    let mut table = [[0; RAMP_STEPS]; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let size = CLASSES[i].size as usize;
        let mut step = 0;
        while step < RAMP_STEPS {
            // 8, 16, 32 KiB with 1, 2, 4 objects at least, then the full span.
            let min_bytes = (MIN_SPAN_BYTES >> (RAMP_STEPS - 1)) << step;
            let pages = pages_for(size, min_bytes, 1 << step);
            let full = CLASSES[i].pages as usize;
            table[i][step] = if step == RAMP_STEPS - 1 || pages > full {
                full as u32
            } else {
                pages as u32
            };
            step += 1;
        }
        i += 1;
    }
    table
}

/// Where the first object of a fresh span of `size`-byte objects, `pages` pages long and
/// based at `base`, starts: this many bytes into the span (slab colouring, as in Bonwick's
/// slab allocator). Without it, the objects at the same index of every span of a class, and
/// the first objects of all classes, sit at the same offset in their pages, so a program's
/// long-lived objects (those it allocates first) crowd the same L1 sets: an L1 data cache
/// picks a line's set by the address bits below 4 KiB. The bytes a span leaves at its tail
/// (`pages_for` keeps them under 1/8 of it) move its objects instead, so colouring costs no
/// memory: the colour is a multiple of a cache line, and of the largest power of two
/// dividing `size` (so every alignment the class serves holds, `class_for`), picked by the
/// span's page number. Under callgrind's cache model the regex workload of the Rust programs
/// took 8.4% fewer L1 read misses with it (43.8M against 40.1M; mimalloc 39.5M).
pub fn colour(size: usize, pages: usize, base: usize) -> usize {
    let tail = pages * PAGE_SIZE % size;
    let unit = (size & size.wrapping_neg()).max(64);
    let colours = tail / unit + 1;
    (base >> PAGE_SHIFT) % colours * unit
}

/// Pages of a thread's fresh span of `class` at ramp step `step` (clamped to the last).
#[inline]
pub fn ramp_pages(class: SizeClass, step: usize) -> usize {
    RAMP_PAGES[class.index()][step.min(RAMP_STEPS - 1)] as usize
}

const fn build_classes() -> [ClassInfo; NUM_CLASSES] {
    let mut table = [ClassInfo {
        size: 0,
        pages: 0,
        objects: 0,
        div_test: 0,
    }; NUM_CLASSES];
    let mut i = 0;
    let mut size = 8;
    while i < NUM_CLASSES {
        let pages = full_span_pages(size);
        table[i] = ClassInfo {
            size: size as u32,
            pages: pages as u32,
            objects: (pages * PAGE_SIZE / size) as u32,
            div_test: u64::MAX / size as u64 + 1,
        };
        size = next_size(size);
        i += 1;
    }
    table
}

/// The table, smallest class first.
pub static CLASSES: [ClassInfo; NUM_CLASSES] = build_classes();

/// Covers `MAX_FAST + 15`: the fast path rounds a size up to its alignment (at most 16)
/// before the lookup, and a bounds check there would cost a compare on every allocation.
const SMALL_LOOKUP_LEN: usize = (MAX_FAST + 16) / 8 + 1;
const LARGE_LOOKUP_LEN: usize = (MAX_SMALL - MAX_FAST) / COARSE_STEP + 1;

const fn class_for_slow(size: usize) -> u8 {
    let table = build_classes();
    let mut i = 0;
    while (table[i].size as usize) < size {
        i += 1;
    }
    i as u8
}

const fn build_small_lookup() -> [u8; SMALL_LOOKUP_LEN] {
    let mut t = [0u8; SMALL_LOOKUP_LEN];
    let mut i = 0;
    while i < SMALL_LOOKUP_LEN {
        // Index 0 is a zero-byte request, which may come with an alignment of 16: give it
        // the 16-byte class, the smallest that suits every alignment the fast path takes.
        t[i] = class_for_slow(if i == 0 { 16 } else { i * 8 });
        i += 1;
    }
    t
}

const fn build_large_lookup() -> [u8; LARGE_LOOKUP_LEN] {
    let mut t = [0u8; LARGE_LOOKUP_LEN];
    let mut i = 0;
    while i < LARGE_LOOKUP_LEN {
        t[i] = class_for_slow(MAX_FAST + i * COARSE_STEP);
        i += 1;
    }
    t
}

/// C's `malloc` rule (glibc's `MALLOC_ALIGNMENT`): blocks above 8 bytes are 16-byte
/// aligned, so a request of 24 bytes takes the 32-byte class, not the 24-byte one.
const fn build_malloc_lookup() -> [u8; MALLOC_LOOKUP_LEN] {
    let mut t = [0u8; MALLOC_LOOKUP_LEN];
    let mut i = 0;
    while i < MALLOC_LOOKUP_LEN {
        let size = i * 8;
        t[i] = class_for_slow(if size <= 8 {
            8
        } else {
            size.next_multiple_of(16)
        });
        i += 1;
    }
    t
}

const MALLOC_LOOKUP_LEN: usize = MAX_FAST / 8 + 1;

/// Class by `(size + 7) / 8` under C's alignment rule, for sizes up to `MAX_FAST`.
static MALLOC_LOOKUP: [u8; MALLOC_LOOKUP_LEN] = build_malloc_lookup();

/// Class by `(size + 7) / 8` for sizes up to `MAX_FAST` (Go's `size_to_class8`).
static SMALL_LOOKUP: [u8; SMALL_LOOKUP_LEN] = build_small_lookup();
/// Class by `(size - MAX_FAST + 31) / 32` above that (Go's `size_to_class128`, at a finer
/// step); every class above `MAX_FAST` is a multiple of [`COARSE_STEP`], so the coarser
/// index is exact.
static LARGE_LOOKUP: [u8; LARGE_LOOKUP_LEN] = build_large_lookup();

/// The class of a request of `size <= MAX_FAST + 15` bytes: one table load, unchecked in
/// release builds (it sits on the fast paths).
///
/// # Safety
/// `size` must be at most `MAX_FAST + 15` (a size up to `MAX_FAST` rounded up to an
/// alignment of at most 16).
#[inline(always)]
pub unsafe fn class_of_fast(size: usize) -> SizeClass {
    let index = (size + 7) >> 3;
    assert!(index < SMALL_LOOKUP_LEN || cfg!(not(debug_assertions)));
    // SAFETY: `size <= MAX_FAST + 15` (the contract), whose index the table covers.
    SizeClass(unsafe { *SMALL_LOOKUP.get_unchecked(index) as usize })
}

/// The class C's `malloc(size)` takes for `size <= MAX_FAST`: blocks of at most 8 bytes are
/// 8-byte aligned, larger ones 16-byte aligned (as `libtessera.so` has always promised), in
/// one table load with no rounding arithmetic, unchecked in release builds.
///
/// # Safety
/// `size` must be at most `MAX_FAST`.
#[inline(always)]
pub unsafe fn class_of_malloc(size: usize) -> SizeClass {
    let index = (size + 7) >> 3;
    debug_assert!(index < MALLOC_LOOKUP_LEN);
    // SAFETY: `size <= MAX_FAST` (the contract), whose index the table covers.
    SizeClass(unsafe { *MALLOC_LOOKUP.get_unchecked(index) as usize })
}

/// The class of a request of `size <= MAX_SMALL` bytes.
#[inline]
pub fn class_of(size: usize) -> SizeClass {
    debug_assert!(size <= MAX_SMALL);
    if size <= MAX_FAST {
        // SAFETY: `size <= MAX_FAST`.
        unsafe { class_of_fast(size) }
    } else {
        const SHIFT: u32 = COARSE_STEP.trailing_zeros();
        SizeClass(LARGE_LOOKUP[(size - MAX_FAST + COARSE_STEP - 1) >> SHIFT] as usize)
    }
}

/// The class for `size` bytes at `align` (a power of two up to the page size), or `None`
/// when the request is not small.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<SizeClass> {
    if size > MAX_SMALL || align > PAGE_SIZE {
        return None;
    }
    // Up to 16 B of alignment, rounding the size up is enough: every class that is a
    // multiple of 16 is 16-aligned, and classes are 8-aligned at worst.
    let rounded = (size + align - 1) & !(align - 1);
    if rounded > MAX_SMALL {
        return None;
    }
    let mut class = class_of(rounded);
    while !class.size().is_multiple_of(align) {
        // Terminates: every power of two up to MAX_SMALL is a class.
        class = SizeClass(class.0 + 1);
    }
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_increase_and_end_at_max() {
        for w in CLASSES.windows(2) {
            assert!(w[0].size < w[1].size);
        }
        assert_eq!(CLASSES[0].size, 8);
        assert_eq!(CLASSES[NUM_CLASSES - 1].size as usize, MAX_SMALL);
        assert!(NUM_CLASSES <= u8::MAX as usize);
    }

    #[test]
    fn powers_of_two_are_classes() {
        let mut p = 8;
        while p <= MAX_SMALL {
            assert!(CLASSES.iter().any(|c| c.size as usize == p), "{p} missing");
            p *= 2;
        }
    }

    #[test]
    fn waste_is_bounded() {
        let mut prev = 0usize;
        for c in CLASSES.iter() {
            let size = c.size as usize;
            let worst = size - (prev + 1);
            if size >= 64 {
                assert!(
                    worst * 8 <= size,
                    "class {size}: internal waste {worst} B > 12.5%"
                );
            } else {
                assert!(worst <= 7, "class {size}: internal waste {worst} B");
            }
            let span = c.pages as usize * PAGE_SIZE;
            assert!(c.objects >= 8);
            assert!(
                (span - c.objects as usize * size) * 8 <= span,
                "class {size}: tail waste"
            );
            assert!(
                c.objects <= u16::MAX as u32,
                "the remote count field is 16 bits"
            );
            prev = size;
        }
    }

    /// What a block of `size` bytes costs in its class, its share of the span's tail
    /// included; panics with both when that is above `limit`.
    fn assert_block_costs_at_most(size: usize, limit: usize) {
        let info = class_of(size).info();
        let per_object = info.pages as usize * PAGE_SIZE / info.objects as usize;
        assert!(
            per_object <= limit,
            "{size} B: {per_object} B a block in class {}",
            info.size
        );
    }

    /// A 4 KiB page with a header of up to 288 B costs within 4% of its size, span tail
    /// included; the 4,608 B class with 14-object spans cost 7.2% (4,681 B).
    #[test]
    fn a_page_and_its_header_cost_little() {
        for size in [4097, 4104, 4368, PAGE_PLUS_HEADER] {
            assert_block_costs_at_most(size, PAGE_PLUS_HEADER * 104 / 100);
        }
    }

    /// sqlite3's page-cache blocks (a 4 KiB page and a 272 B header) cost within 1% of
    /// their size, span tail included, as glibc's (16 B a block). The 4,480 B class cost
    /// 4,505 B a block (3.1%).
    #[test]
    fn sqlite_page_blocks_cost_within_one_percent() {
        let size = 4096 + 272;
        assert_block_costs_at_most(size, size * 101 / 100);
    }

    /// Above half a page, an object is a large share of its span, and so is the tail a span
    /// leaves: every such class leaves at most 1/64 of its span unused (8 pages of 5,120 B
    /// objects left 1/16).
    #[test]
    fn spans_of_big_objects_leave_little_tail() {
        for c in CLASSES.iter().filter(|c| c.size as usize > PAGE_SIZE / 2) {
            let span = c.pages as usize * PAGE_SIZE;
            let tail = span - c.objects as usize * c.size as usize;
            assert!(
                tail * 64 <= span,
                "class {}: {tail} B of {span} unused",
                c.size
            );
        }
    }

    #[test]
    fn fresh_spans_ramp_up_to_the_full_span() {
        for class in SizeClass::all() {
            let info = class.info();
            let size = class.size();
            let mut last = 0;
            for step in 0..RAMP_STEPS + 2 {
                let pages = ramp_pages(class, step);
                let bytes = pages * PAGE_SIZE;
                assert!(pages >= last, "{class:?}: the ramp shrinks at step {step}");
                assert!(bytes / size >= 1, "{class:?}: no object at step {step}");
                assert!(
                    (bytes % size) * 8 <= bytes,
                    "{class:?}: more than 1/8 of the span unused at step {step}"
                );
                last = pages;
            }
            assert_eq!(
                ramp_pages(class, 0),
                pages_for(size, 8 << 10, 1),
                "{class:?}"
            );
            assert_eq!(last, info.pages as usize, "{class:?} ends at its full span");
        }
        // An 8-byte class starts at one page, not at 64 KiB.
        assert_eq!(ramp_pages(SizeClass::new(0), 0), 1);
        assert_eq!(CLASSES[0].pages, 8);
    }

    #[test]
    fn every_divisibility_test_is_exact() {
        for c in CLASSES.iter() {
            let size = c.size as usize;
            // A little past the span, so the check also holds beyond the last object.
            let span = c.pages as usize * PAGE_SIZE + 4 * size;
            for offset in 0..span {
                assert_eq!(
                    divides(offset, c.div_test),
                    offset.is_multiple_of(size),
                    "class {size} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn malloc_classes_keep_glibc_alignment_and_fit() {
        for size in 0..=MAX_FAST {
            // SAFETY: `size <= MAX_FAST`.
            let malloc_class = unsafe { class_of_malloc(size) };
            let class = malloc_class.size();
            assert!(class >= size.max(1), "size {size} in class {class}");
            let align = if size <= 8 { 8 } else { 16 };
            assert!(class.is_multiple_of(align), "size {size} in class {class}");
            // The smallest class that does both.
            assert_eq!(
                malloc_class,
                class_for(size.max(1), align).unwrap(),
                "size {size}"
            );
        }
    }

    #[test]
    fn lookup_matches_linear_search() {
        assert_eq!(
            class_of(0).size(),
            16,
            "zero bytes may ask for 16-byte alignment"
        );
        for size in 1..=MAX_SMALL {
            let class = class_of(size);
            assert!(class.size() >= size);
            if class.index() > 0 {
                assert!(
                    SizeClass::new(class.index() - 1).size() < size,
                    "size {size} not in its smallest class"
                );
            }
        }
    }

    #[test]
    fn alignment_is_honoured() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 8192] {
            for size in [0, 1, 7, 8, 9, 24, 33, 100, 1000, 5000, 20000, MAX_SMALL] {
                if let Some(class) = class_for(size, align) {
                    let s = class.size();
                    assert!(
                        s >= size && s.is_multiple_of(align),
                        "size {size} align {align} -> {s}"
                    );
                }
            }
        }
        assert!(class_for(MAX_SMALL + 1, 8).is_none());
        assert!(class_for(64, 2 * PAGE_SIZE).is_none());
    }

    /// Every span of every class at every ramp step: its objects still fit after the colour,
    /// every alignment the class serves (`class_for`) still holds for each of them, colours
    /// are whole cache lines, and a class whose tail has room for several colours uses them
    /// all over consecutive spans.
    #[test]
    fn colours_fit_keep_alignment_and_vary() {
        let mut coloured = 0;
        for class in SizeClass::all() {
            let size = class.size();
            for step in 0..RAMP_STEPS {
                let pages = ramp_pages(class, step);
                let bytes = pages * PAGE_SIZE;
                let objects = bytes / size;
                let mut seen = Vec::new();
                for page in 0..64 {
                    let base = (1 << 30) + page * PAGE_SIZE;
                    let c = colour(size, pages, base);
                    assert!(c + objects * size <= bytes, "{class:?} step {step}: {c}");
                    assert_eq!(c % 64, 0, "{class:?}: colour {c} is no whole line");
                    let mut align = 1;
                    while align <= PAGE_SIZE {
                        if class_for(size, align) == Some(class) {
                            assert_eq!(c % align, 0, "{class:?}: colour {c} breaks align {align}");
                        }
                        align *= 2;
                    }
                    if !seen.contains(&c) {
                        seen.push(c);
                    }
                }
                let unit = (size & size.wrapping_neg()).max(64);
                let room = (bytes - objects * size) / unit + 1;
                assert_eq!(seen.len(), room.min(64), "{class:?} step {step}");
                coloured += usize::from(room > 1);
            }
        }
        // Most classes' spans have room for more than one colour (the point of colouring).
        assert!(coloured > NUM_CLASSES, "only {coloured} spans have colours");
    }
}
