//! Call stacks taken inside the allocator, for the guarded blocks' reports (`guarded/`) and
//! the heap profiler's samples (`profile/`).
//!
//! Why the unwinder: frame pointers are not kept in release builds (nor in most C
//! programs a distribution ships), and glibc's `backtrace()` loads libgcc_s with `dlopen` on
//! its first call, which allocates. `_Unwind_Backtrace` (libgcc's unwinder: libgcc_s, which
//! every Rust program links, or `libtessera.so`'s private copy, alloc/preload/build.rs)
//! walks the DWARF call-frame information it finds through `dl_iterate_phdr`, with no
//! allocation on that path. libgcc's entry points and the
//! loader's are `tessera_sys::dl`'s; `sys.rs` here is the machine's side (registers, the
//! signal trampoline's code).
//!
//! Why a walk of our own in front of it: libgcc pays ~1,700 instructions a frame (the FDE
//! search through `dl_iterate_phdr`, then the CIE's and FDE's CFI run from the start),
//! ~17,000 a sample, which made the default sampling rate cost 40–100% on a malloc/free
//! loop. The fast walk (`fast.rs`) follows the same frames with each return address's rule
//! cached (`cache.rs`): computed once from its FDE (`cfi.rs`), then a hash and a few loads;
//! the first frames of a capture, the allocator's own, usually retrace a chain an earlier
//! walk left (`chain.rs`): a compare and a load or two per frame.
//! What it cannot follow — CFA expressions, signal frames, other stacks — it leaves to
//! libgcc's walk, which then takes the whole capture: the output is libgcc's either way.

use core::mem::MaybeUninit;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicUsize, Ordering};

use tessera_sys::dl;

mod cache;
mod cfi;
mod chain;
mod fast;
mod file;
mod sys;

/// Writes the calling thread's return addresses into `out`, innermost first, and returns
/// how many: at most `out.len()`, fewer when the stack is shallower. The first is in this
/// function (the return address of the walk it calls), the second this function's caller's.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize]) -> usize {
    let mut stats = fast::Stats::default();
    walk(
        uninit(out),
        Walker::Fast,
        Walker::Libgcc,
        &mut stats,
        &chain::SAMPLES,
    )
    .unwrap_or(0)
}

/// As [`capture`] (the first return address is in this function), into a buffer nobody
/// had to zero first (a sample's 72 words were a 576-byte `memset`): returns the part
/// written, and a number that stands for exactly these return addresses when a
/// remembered chain of the samples' walks gave them all (`chain.rs`): two captures with
/// the same number have the same return addresses.
#[inline(never)]
pub(crate) fn capture_into(out: &mut [MaybeUninit<usize>]) -> (&[usize], Option<u32>) {
    let mut stats = fast::Stats::default();
    let len = walk(
        out,
        Walker::Fast,
        Walker::Libgcc,
        &mut stats,
        &chain::SAMPLES,
    )
    .unwrap_or(0);
    // SAFETY: the walks initialise the first `len` words.
    let frames = unsafe { core::slice::from_raw_parts(out.as_ptr().cast(), len) };
    (frames, stats.whole.map(chain::Whole::id))
}

/// `out` as a buffer the walks may write.
fn uninit(out: &mut [usize]) -> &mut [MaybeUninit<usize>] {
    // SAFETY: `MaybeUninit<usize>` has `usize`'s layout, and the walks write only
    // initialised words.
    unsafe { &mut *(core::ptr::from_mut(out) as *mut [MaybeUninit<usize>]) }
}

/// As [`capture`] (the first return address is in this function), with libgcc's walk
/// only: for a signal handler. It may run on a small alternate stack (8 KiB for Rust's
/// threads), where the fast walk's rule computation (in a debug build, several KiB of
/// frames) adds to the handler's and the signal frame's; and the fast walk would give up
/// at the signal frame anyway.
#[inline(never)]
pub(crate) fn capture_in_signal_handler(out: &mut [usize]) -> usize {
    let mut stats = fast::Stats::default();
    walk(
        uninit(out),
        Walker::Libgcc,
        Walker::Libgcc,
        &mut stats,
        &chain::SAMPLES,
    )
    .unwrap_or(0)
}

pub(crate) use sys::{Registers, registers};

/// Writes the return addresses of the frames above the suspended one `start` was read in
/// (by [`registers`]) into `out`, innermost first, and returns how many: the fast walk's,
/// up to the first frame it cannot follow (libgcc's walk reads only the calling thread's
/// registers, so there is no fallback). A coroutine's stack ends in such a frame
/// (corosensei's `stack_init_trampoline`, a signal frame with a CFA expression), so the
/// walk stops at the stack's root rather than running into the stack that last resumed it.
///
/// # Safety
/// `start` was read in a frame that is suspended (its stack switched away by a coroutine
/// switch) and stays so, unchanged, for the walk; its stack is mapped from `start.sp` up
/// to `stack_top`, which no CFA of it passes.
pub(crate) unsafe fn walk_suspended(
    start: Registers,
    stack_top: usize,
    out: &mut [usize],
) -> usize {
    let mut stats = fast::Stats::default();
    // SAFETY: the caller's contract is `fast::walk`'s, with `stack_top` as the limit.
    match unsafe { fast::walk(start, stack_top, uninit(out), &mut stats, None) } {
        Ok(len) => len,
        Err(fast::GiveUp { frames }) => frames,
    }
}

/// The two walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walker {
    /// `fast.rs`: cached rules, gives up on frames it cannot follow.
    Fast,
    /// libgcc's `_Unwind_Backtrace`: every frame, ~1,700 instructions each.
    Libgcc,
}

/// Fills `out` with the return addresses of the frames above this one (this function's
/// return address first), with `first` and, if it gives up, with `then`; returns how many,
/// `None` if both gave up. The fast walk follows and publishes the chains of `chains`.
///
/// Both walks must run in this same frame so that their first frame is the same: the fast
/// walk starts from the registers read here, and libgcc's first frame (the return address
/// of `_Unwind_Backtrace`, which is in this function) is skipped.
#[inline(never)]
fn walk(
    out: &mut [MaybeUninit<usize>],
    first: Walker,
    then: Walker,
    stats: &mut fast::Stats,
    chains: &chain::Chains,
) -> Option<usize> {
    for walker in [first, then] {
        match walker {
            Walker::Fast => {
                let here = sys::registers();
                let Some(limit) = here.sp.checked_add(fast::MAX_STACK) else {
                    continue;
                };
                // SAFETY: `here` was read in this frame, which is live during the walk, on
                // this thread's stack.
                if let Ok(len) = unsafe { fast::walk(here, limit, out, stats, Some(chains)) } {
                    #[cfg(feature = "expensive-checks")]
                    // SAFETY: the walk initialised the first `len` words.
                    check_against_libgcc(
                        unsafe { core::slice::from_raw_parts(out.as_ptr().cast(), len) },
                        out.len(),
                    );
                    return Some(len);
                }
            }
            Walker::Libgcc => {
                out.fill(MaybeUninit::new(0));
                // SAFETY: every word is initialised now, and `usize` has
                // `MaybeUninit<usize>`'s layout.
                let out = unsafe { &mut *(core::ptr::from_mut(out) as *mut [usize]) };
                // Inlined: `_Unwind_Backtrace` is called from this frame, and its own return
                // address, the first frame, is skipped.
                return Some(dl::backtrace(out, 1));
            }
        }
    }
    None
}

/// With `expensive-checks`: libgcc's walk, taken in the same frame as the fast walk's
/// `frames` (inlined into `walk`), must find the same return addresses.
#[cfg(feature = "expensive-checks")]
#[inline(always)]
fn check_against_libgcc(frames: &[usize], capacity: usize) {
    let mut theirs = [0usize; 128];
    if capacity > theirs.len() {
        return;
    }
    // As in `walk`.
    let len = dl::backtrace(&mut theirs[..capacity], 1);
    assert!(
        frames == &theirs[..len],
        "tessera: the fast unwinder and libgcc disagree"
    );
}

/// The load address of the module holding the code address `ip` (a return address: the
/// byte before it is looked up).
pub(crate) fn module_base(ip: usize) -> Option<usize> {
    // SAFETY: callers pass code addresses of this thread's stack, of this library or of the
    // program, whose modules stay loaded while they run; only the base is kept, not the names.
    unsafe { dl::addr_info(ip.saturating_sub(1)) }.map(|info| info.module_base)
}

/// The address range `[start, end)` of the module this code is in, if that module is not
/// the program itself (`libtessera.so`): `(0, 0)` until looked up, `(1, 1)` when linked
/// into the program.
static OWN_RANGE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The address range this library's segments occupy, if it is a shared library; looked up
/// once (`dladdr`, then the loader's program headers).
fn own_library_range() -> Option<(usize, usize)> {
    let start = OWN_RANGE[0].load(Ordering::Relaxed);
    if start != 0 {
        return (start != 1).then(|| (start, OWN_RANGE[1].load(Ordering::Relaxed)));
    }
    let own = module_base(own_library_range as *const () as usize + 1);
    let program = module_base(dl::program_headers() + 1);
    let range = own
        .filter(|&own| program != Some(own))
        .and_then(module_range);
    let (start, end) = range.unwrap_or((1, 1));
    OWN_RANGE[1].store(end, Ordering::Relaxed);
    OWN_RANGE[0].store(start, Ordering::Relaxed);
    range
}

/// The lowest and highest address of the loadable segments of the module loaded at `base`.
fn module_range(base: usize) -> Option<(usize, usize)> {
    let mut range = None;
    dl::for_each_object(&mut |object| {
        let mut lo = usize::MAX;
        let mut hi = 0;
        for segment in object.segments() {
            lo = lo.min(segment.start as usize);
            hi = hi.max((segment.start + segment.len) as usize);
        }
        if lo <= base && base < hi {
            range = Some((lo, hi));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    range
}

/// The index of the first frame outside this library when it is a shared library
/// (`libtessera.so`); `None` when linked into the program (whose frames cannot be told
/// from the allocator's by module) or when every frame is inside.
pub(crate) fn first_outside_own_library(frames: &[usize]) -> Option<usize> {
    let (start, end) = own_library_range()?;
    frames.iter().position(|&ip| !(start < ip && ip <= end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::{c_int, c_void};
    use core::hint::black_box;
    use std::sync::Mutex;

    const DEPTH: usize = 64;

    /// The two walks' captures, taken from one call site in one frame (so that even their
    /// first return addresses are the same), and the fast walk's cache misses.
    struct Pair {
        fast: Option<Vec<usize>>,
        libgcc: Vec<usize>,
        misses: usize,
        chained: usize,
        whole: Option<chain::Whole>,
    }

    std::thread_local! {
        /// The chains `both`'s fast walks use on this thread: the samples' unless a test
        /// needs a table of its own (one no other test fills).
        static TEST_CHAINS: core::cell::Cell<&'static chain::Chains> =
            const { core::cell::Cell::new(&chain::SAMPLES) };
    }

    #[inline(never)]
    fn both(depth: usize) -> Pair {
        let walkers = black_box([Walker::Fast, Walker::Libgcc]);
        let mut outs = [[0usize; DEPTH]; 2];
        let mut lens = [None; 2];
        let mut stats = fast::Stats::default();
        // One call of `walk` for both, in a loop the compiler cannot unroll.
        for i in 0..black_box(2) {
            let out = &mut outs[i][..depth];
            let chains = TEST_CHAINS.with(core::cell::Cell::get);
            lens[i] = walk(uninit(out), walkers[i], walkers[i], &mut stats, chains);
        }
        Pair {
            fast: lens[0].map(|n| outs[0][..n].to_vec()),
            libgcc: outs[1][..lens[1].unwrap()].to_vec(),
            misses: stats.misses,
            chained: stats.chained,
            whole: stats.whole,
        }
    }

    fn check(pair: &Pair) {
        let fast = pair.fast.as_ref().expect("the fast walk gave up");
        // The first entry is the return address into `both`: the same when both walks are
        // called from its one call site, but an optimised build may peel the two-turn loop
        // into two call sites a few bytes apart. Every caller above must be the same.
        assert_eq!(
            fast.len(),
            pair.libgcc.len(),
            "{fast:x?} vs {:x?}",
            pair.libgcc
        );
        if let (Some(&a), Some(&b)) = (fast.first(), pair.libgcc.first()) {
            assert!(
                a.abs_diff(b) < 512,
                "first frames {a:#x} and {b:#x} not both in `both`"
            );
        }
        assert_eq!(
            fast.get(1..),
            pair.libgcc.get(1..),
            "fast walk (left) differs from libgcc's (right)"
        );
    }

    /// Recursion through frames of different shapes, `depth` deep, then both walks with a
    /// buffer of `buffer` entries.
    #[inline(never)]
    fn recurse(depth: usize, buffer: usize) -> Pair {
        match depth % 4 {
            _ if depth == 0 => both(buffer),
            0 => small(depth, buffer),
            1 => large(depth, buffer),
            2 => huge(depth, buffer),
            _ => indirect(depth, buffer),
        }
    }

    #[inline(never)]
    fn small(depth: usize, buffer: usize) -> Pair {
        black_box(recurse(black_box(depth - 1), buffer))
    }

    #[inline(never)]
    fn large(depth: usize, buffer: usize) -> Pair {
        let mut locals = [0u8; 3000];
        black_box(&mut locals);
        let pair = recurse(depth - 1, buffer);
        black_box(&locals);
        pair
    }

    /// Past the stack probe's page size: the frame is set up in a loop (or a probe call).
    #[inline(never)]
    fn huge(depth: usize, buffer: usize) -> Pair {
        let mut locals = [0u64; 9000];
        locals[depth] = depth as u64;
        black_box(&mut locals);
        let pair = recurse(depth - 1, buffer);
        black_box(&locals);
        pair
    }

    #[inline(never)]
    fn indirect(depth: usize, buffer: usize) -> Pair {
        let next: fn(usize, usize) -> Pair = black_box(recurse);
        let pair = next(depth - 1, buffer);
        black_box(pair)
    }

    #[test]
    fn the_fast_walk_matches_libgcc_at_every_depth() {
        for depth in 0..50 {
            check(&recurse(depth, DEPTH));
        }
    }

    #[test]
    fn the_fast_walk_matches_libgcc_when_the_buffer_fills() {
        for buffer in [0, 1, 2, 3, 7, 20] {
            let pair = recurse(30, buffer);
            check(&pair);
            assert_eq!(pair.libgcc.len(), buffer);
        }
    }

    #[test]
    fn the_fast_walk_matches_libgcc_on_another_thread() {
        let pairs = std::thread::spawn(|| (1..20).map(|d| recurse(d, DEPTH)).collect::<Vec<_>>())
            .join()
            .unwrap();
        for pair in &pairs {
            check(pair);
            // The walk reaches the thread's first frame: the stack is not cut.
            assert!(pair.libgcc.len() < DEPTH);
        }
    }

    static IN_QSORT: Mutex<Vec<Pair>> = Mutex::new(Vec::new());

    unsafe extern "C" {
        /// The C library's sort, for its frames between ours: what the test needs is code
        /// compiled by somebody else, calling back. Declared here, for this test alone; the
        /// allocator's own calls into the C library are `tessera_sys`'s.
        fn qsort(
            base: *mut c_void,
            len: usize,
            size: usize,
            compare: extern "C" fn(*const c_void, *const c_void) -> c_int,
        );
    }

    extern "C" fn compare(a: *const c_void, b: *const c_void) -> c_int {
        let pair = recurse(black_box(5), DEPTH);
        IN_QSORT.lock().unwrap().push(pair);
        // SAFETY: qsort passes pointers to the elements of the array below.
        let (a, b) = unsafe { (*a.cast::<u32>(), *b.cast::<u32>()) };
        a.cmp(&b) as c_int
    }

    #[test]
    fn the_fast_walk_matches_libgcc_through_libc_frames() {
        let mut values = [5u32, 3, 9, 1, 7, 2, 8, 4, 6, 0];
        // SAFETY: `values` holds `len` elements of 4 bytes, and `compare` reads them as such.
        unsafe {
            qsort(values.as_mut_ptr().cast(), values.len(), 4, compare);
        }
        assert_eq!(values, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let pairs = IN_QSORT.lock().unwrap();
        assert!(!pairs.is_empty());
        for pair in pairs.iter() {
            check(pair);
        }
    }

    /// The rule libgcc's search in memory gives `ra`, as the walk computed it before the
    /// file came first.
    fn rule_from_memory(ra: usize) -> cfi::Rule {
        match sys::find_fde(ra) {
            // SAFETY: the FDE and bases `_Unwind_Find_FDE` gave for `ra - 1`.
            Some((fde, bases)) => unsafe { cfi::rule_for(fde, &bases, ra) },
            None => cfi::Rule::End,
        }
    }

    #[test]
    fn the_file_gives_the_rules_the_mapping_gives() {
        // Frames of this test program, of std and of libc (qsort calls back into ours): all
        // three have build IDs and files to read, so the file must answer for every frame.
        let mut values = [5u32, 3, 9, 1, 7, 2, 8, 4, 6, 0];
        // SAFETY: as in the test above.
        unsafe {
            qsort(values.as_mut_ptr().cast(), values.len(), 4, compare);
        }
        let pairs = IN_QSORT.lock().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for pair in pairs.iter() {
            seen.extend(pair.libgcc.iter().copied());
        }
        assert!(seen.len() > 10, "{seen:x?}");
        let libc_frames = seen
            .iter()
            .filter(|&&ra| {
                // SAFETY: `ra` is a return address of a live module.
                let info = unsafe { tessera_sys::dl::addr_info(ra - 1) };
                info.and_then(|i| i.module)
                    .is_some_and(|m| m.to_bytes().ends_with(b"libc.so.6"))
            })
            .count();
        assert!(libc_frames > 0, "no libc frame in {seen:x?}");
        // Each address with a file opened for it alone, then all of them through one
        // `Files`, as a walk asks (the same module's file kept, another's opened in its
        // place): in address order, which takes each module's addresses in a row, and
        // interleaved, which moves from module to module at every step.
        let interleaved: Vec<usize> = seen
            .iter()
            .step_by(2)
            .zip(seen.iter().rev().step_by(2))
            .flat_map(|(&a, &b)| [a, b])
            .collect();
        let mut shared = file::Files::new();
        for (ra, files) in seen
            .iter()
            .map(|&ra| (ra, None))
            .chain(seen.iter().chain(&interleaved).map(|&ra| (ra, Some(()))))
        {
            let theirs = rule_from_memory(ra);
            let found = match files {
                None => file::rule(&mut file::Files::new(), ra),
                Some(()) => file::rule(&mut shared, ra),
            };
            match found {
                file::Found::Rule(ours) => assert_eq!(ours, theirs, "at {ra:#x}"),
                file::Found::NotCovered => assert_eq!(theirs, cfi::Rule::End, "at {ra:#x}"),
                file::Found::Unknown => panic!("the file did not answer for {ra:#x}"),
            }
        }
    }

    #[test]
    fn the_second_walk_from_a_place_hits_the_cache() {
        // One call site in a loop of unknown length, so the return addresses repeat (an
        // optimised build may peel the first turn into a call site of its own: the last
        // turn is the loop body's second run at least).
        let pairs: Vec<Pair> = (0..black_box(3)).map(|_| recurse(12, DEPTH)).collect();
        for pair in &pairs {
            check(pair);
            assert!(pair.libgcc.len() > 12);
        }
        assert_eq!(pairs[2].misses, 0);
        // Every capture starts at the same instruction, so a chain published by an earlier
        // walk (this test's or another's) holds at least the first frame: the walk followed
        // it, and still found libgcc's frames (checked above).
        assert!(pairs[2].chained >= 1);
    }

    #[repr(align(64))]
    struct Aligned([u8; 64]);

    /// A frame that realigns its stack (its CFA is on rbp): the distance from the frames it
    /// calls to its CFA depends on where its caller's frame lies. Returns the walks and the
    /// distance from `outer` (an address in the caller's frame) to its aligned local.
    #[inline(never)]
    fn realigned(outer: usize) -> (Pair, usize) {
        let mut local = Aligned([0; 64]);
        black_box(&mut local);
        let pair = recurse(black_box(3), DEPTH);
        black_box(&local.0);
        (pair, outer - (&raw const local as usize))
    }

    /// `realigned` called `pad` frames of this function higher up the stack.
    #[inline(never)]
    fn padded(pad: usize) -> (Pair, usize) {
        let marker = black_box(0u8);
        if pad == 0 {
            let outer = &raw const marker as usize;
            black_box(realigned(outer))
        } else {
            black_box(padded(pad - 1))
        }
    }

    #[test]
    fn a_chain_is_followed_through_a_realigned_frame_only_where_its_cfa_is_the_same() {
        static OWN: chain::Chains = chain::Chains::new();
        TEST_CHAINS.with(|chains| chains.set(&OWN));
        let (mut gaps, mut chained) = (Vec::new(), 0);
        // The first round publishes chains (the realigned frame is the 10th frame); the
        // second follows them.
        for _ in 0..2 {
            for pad in 0..4 {
                let (pair, gap) = padded(black_box(pad));
                check(&pair);
                gaps.push(gap);
                chained = chained.max(pair.chained);
            }
        }
        TEST_CHAINS.with(|chains| chains.set(&chain::SAMPLES));
        gaps.sort_unstable();
        gaps.dedup();
        assert!(
            gaps.len() > 1,
            "the realigned frame's CFA lay as far from its local every time: nothing tested"
        );
        // A walk followed a chain past the realigned frame where its CFA was the same.
        assert!(chained > 10, "{chained} frames from a chain at most");
    }

    #[test]
    fn a_walk_a_chain_holds_whole_is_complete_and_numbered() {
        static OWN: chain::Chains = chain::Chains::new();
        // On a thread of its own: a shallow stack, which a chain holds whole.
        let (here, there) = std::thread::spawn(|| {
            TEST_CHAINS.with(|chains| chains.set(&OWN));
            // Two places, each walked three times, alternating: each place's chain is tried
            // first or second.
            let (mut here, mut there) = (Vec::new(), Vec::new());
            for _ in 0..black_box(3) {
                here.push(recurse(black_box(4), DEPTH));
                there.push(recurse(black_box(7), DEPTH));
            }
            (here, there)
        })
        .join()
        .unwrap();
        for pair in here.iter().chain(&there) {
            check(pair);
            assert!(pair.libgcc.len() < chain::DEPTH, "{:x?}", pair.libgcc);
        }
        // From the second walk of a place on, its chain gave every frame, the last one's
        // end included (no rule looked up after it), and named the walk.
        for walks in [&here, &there] {
            for pair in &walks[1..] {
                assert_eq!(pair.chained, pair.libgcc.len());
                assert!(pair.whole.is_some(), "a whole walk not numbered");
            }
            assert_eq!(walks[1].whole, walks[2].whole);
        }
        // Other return addresses, another number.
        assert_ne!(here[2].whole, there[2].whole);
    }

    #[test]
    fn capture_starts_in_capture_and_then_its_caller() {
        #[inline(never)]
        fn caller(out: &mut [usize]) -> (usize, usize) {
            let n = capture(out);
            (n, caller as *const () as usize)
        }
        let mut out = [0usize; 8];
        let (n, caller_start) = caller(&mut out);
        assert!(n >= 3);
        // Each return address a little past the start of the function it returns into.
        let within = |ip: usize, start: usize| start < ip && ip - start < 1024;
        assert!(within(out[0], capture as *const () as usize));
        assert!(within(out[1], caller_start));
    }
}
