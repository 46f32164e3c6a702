//! Heap profiling (issue #18): sampled allocations with their call stacks, written in
//! pprof's format without allocating through the allocator being profiled.
//!
//! The sampling side:
//! - `sample.rs`: the byte countdown on the allocation path and the sampled allocation;
//! - `table.rs`: the buckets (stack, size, labels) and the live sampled blocks;
//! - `writer.rs`: the heap profile built from them, and where it goes.
//!
//! The encoder side (public, so that a runtime can write profiles of its own, such as a
//! scheduler's goroutine profile):
//! - [`buf`]: byte buffers and tables in anonymous OS memory ([`buf::OsBuf`], [`buf::OsVec`]).
//! - [`proto`]: the protobuf wire format, write side.
//! - [`pprof`]: [`pprof::ProfileBuilder`], which turns samples into `profile.proto`.
//! - [`mappings`]: the loaded objects and their build IDs, via `dl_iterate_phdr`.
//! - [`gzip`]: gzip and DEFLATE, since pprof files are gzipped.

pub mod buf;
pub mod gzip;
pub mod mappings;
mod math;
pub mod pprof;
pub mod proto;
pub(crate) mod sample;
pub(crate) mod table;
mod writer;

use crate::cache::Cache;
use crate::thread;

pub use sample::DEFAULT_RATE;

/// The fast paths' share of the sampling countdown: subtracts `size` from the cache's
/// countdown and says whether the allocation may go on without a sample (false: take the
/// slow path, which samples). One `sub` on memory and a sign test.
///
/// # Safety
/// `cache` must be the calling thread's current cache.
#[inline(always)]
pub(crate) unsafe fn count(cache: *mut Cache, size: usize) -> bool {
    // SAFETY: the caller's contract: the cache is ours alone.
    let left = unsafe { &mut (*cache).prof_left };
    // `size` is at most `MAX_FAST` here, and the countdown at most `isize::MAX / 2`.
    *left = left.wrapping_sub(size as isize);
    *left >= 0
}

/// Sets the mean sampling interval in bytes (`TESSERA_PROF_RATE`); 0 turns sampling off.
/// The calling thread's countdown starts again at the new rate; every other thread's picks
/// it up at its next sample.
pub fn set_rate(bytes: usize) {
    writer::note_rate(bytes);
    sample::set_rate(bytes);
    sample::restart_own_countdown();
}

/// Whether `TESSERA_PROF_SIGNAL` asked for a profile not written yet.
pub(crate) fn signal_pending() -> bool {
    writer::pending()
}

/// Writes the profile `TESSERA_PROF_SIGNAL` asked for, if it did; from the background
/// thread (`purger.rs`), which the signal handler wakes, never from the handler.
pub(crate) fn write_signalled() {
    writer::write_if_pending();
}

/// Whether `TESSERA_PROF_SIGNAL` asks for profiles, which the background thread writes (it
/// is started for them: `purger.rs`).
pub(crate) fn writes_on_signal() -> bool {
    writer::signal_installed()
}

/// Applies `TESSERA_PROF_OUT` and `TESSERA_PROF_SIGNAL` (configuration, once).
pub(crate) fn configure_output(out: Option<&'static [u8]>, signal: Option<&'static [u8]>) {
    writer::configure(out, signal);
}

/// The mean sampling interval in bytes; 0 when sampling is off.
pub fn rate() -> usize {
    sample::rate()
}

/// Writes the heap profile, gzipped `profile.proto` as `go tool pprof` reads it, to `out`:
/// per allocation site (stack, block size, label set), the sampled allocations since the
/// start and those still live, scaled for the sampling rate (`alloc_objects`,
/// `alloc_space`, `inuse_objects`, `inuse_space`), with the process's mappings and their
/// build IDs so that a reader symbolises against the binaries.
///
/// The profile is built in memory mapped from the OS, not through the allocator; only `out`
/// may allocate.
pub fn write_heap(out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = buf::OsBuf::new();
    writer::heap_profile(&mut buf, "inuse_space")
        .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
    out.write_all(buf.as_slice())
}

/// Writes the allocations profile: the heap profile of [`write_heap`] with `alloc_space`
/// as the sample type readers show by default, as Go's `/debug/pprof/allocs` does (every
/// sampled allocation since the start, live or freed).
pub fn write_allocs(out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = buf::OsBuf::new();
    writer::heap_profile(&mut buf, "alloc_space")
        .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
    out.write_all(buf.as_slice())
}

/// Writes the heap profile to the file `path` (a C string), replacing it: the C entry
/// point's body (`tessera_heap_profile_write`).
pub fn write_heap_to_file(path: &core::ffi::CStr) -> std::io::Result<()> {
    writer::write_file(path.to_bytes_with_nul()).map_err(|e| std::io::Error::from_raw_os_error(e.0))
}

/// An interned set of labels (key, value) that heap samples carry, pprof's sample labels
/// (Go's `pprof.Labels`); [`LabelSet::NONE`] is the empty set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(u32);

impl LabelSet {
    /// No labels.
    pub const NONE: LabelSet = LabelSet(0);

    /// The set of `pairs`, in this order. Sets are interned for the life of the process
    /// (at most 4,096 distinct ones and 1 MiB of text; beyond that a new set is
    /// [`LabelSet::NONE`]), so make them from a bounded vocabulary (handler names, tenants),
    /// not from request ids.
    pub fn new(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet(table::intern_labels(pairs))
    }
}

impl LabelSet {
    /// The most pairs [`LabelSet::with_pairs`] hands over.
    pub const MAX_PAIRS: usize = 16;

    /// Calls `f` with the set's (key, value) pairs (the first [`LabelSet::MAX_PAIRS`]; none
    /// for [`LabelSet::NONE`]). No lock is held while `f` runs, so it may allocate or make
    /// label sets; the pairs are gathered on the stack, so a profile writer can label
    /// samples without allocating.
    pub fn with_pairs<R>(self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        let mut out = [("", ""); Self::MAX_PAIRS];
        let mut n = 0;
        for (key, value) in table::label_pairs(self.0).take(Self::MAX_PAIRS) {
            // Interned from `&str`s: valid UTF-8.
            if let (Ok(key), Ok(value)) = (core::str::from_utf8(key), core::str::from_utf8(value)) {
                out[n] = (key, value);
                n += 1;
            }
        }
        f(&out[..n])
    }
}

// ---- stacks for a runtime's profiles --------------------------------------------------------

/// The registers a stack walk starts from, read at one instruction of a frame: its pc, rsp
/// and rbp. A coroutine scheduler reads them ([`FrameRegisters::here`]) just before it
/// switches a coroutine out, so that a profiler can later walk the suspended stack
/// ([`walk_suspended_stack`]) without resuming it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameRegisters {
    /// The instruction the registers were read at (an exact address, not a return
    /// address: pprof's `Stack::ExactLeaf`).
    pub pc: usize,
    /// The stack pointer there.
    pub sp: usize,
    /// rbp there (the frame pointer, or whatever the function keeps in it).
    pub bp: usize,
}

impl FrameRegisters {
    /// The registers at this point of the function this is inlined into.
    #[inline(always)]
    pub fn here() -> FrameRegisters {
        let r = crate::unwind::registers();
        FrameRegisters {
            pc: r.pc,
            sp: r.sp,
            bp: r.bp,
        }
    }
}

/// Writes the return addresses of the frames above the one `start` was read in (the
/// frame's own pc is not among them) into `out`, innermost first, and returns how many.
/// Follows the `.eh_frame` rules of each return address, cached (the heap profiler's fast
/// walk), and stops at the first frame whose rule it cannot follow: the root of a
/// corosensei coroutine's stack is one. Allocates nothing and takes no lock (a miss in the
/// rule cache asks libgcc's `_Unwind_Find_FDE`, which does not allocate either).
///
/// # Safety
/// `start` was read by [`FrameRegisters::here`] in a frame that is now suspended (its
/// coroutine switched out) and stays suspended and unchanged for the whole walk (nobody
/// resumes the coroutine meanwhile), or in the caller's own frame (or one of its callers'),
/// which stays live during the call; its stack is mapped from `start.sp` up to
/// `stack_top`, which no frame of it passes.
pub unsafe fn walk_suspended_stack(
    start: FrameRegisters,
    stack_top: usize,
    out: &mut [usize],
) -> usize {
    let regs = crate::unwind::Registers {
        pc: start.pc,
        sp: start.sp,
        bp: start.bp,
    };
    // SAFETY: the caller's contract is `walk_suspended`'s.
    unsafe { crate::unwind::walk_suspended(regs, stack_top, out) }
}

/// Sets the labels that heap samples taken on the calling thread's cache carry from now on,
/// and returns the previous set. A scheduler calls it when it switches coroutines (each P
/// has its own cache); without a cache yet, nothing is set and `NONE` is returned.
pub fn set_current_labels(set: LabelSet) -> LabelSet {
    let cache = thread::current();
    if cache.is_null() {
        return LabelSet::NONE;
    }
    // SAFETY: the current cache is valid and used by this thread alone.
    let labels = unsafe { &mut (*cache).prof_labels };
    LabelSet(core::mem::replace(labels, set.0))
}

/// The profiler's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileTotals {
    /// Samples taken since the start.
    pub samples: u64,
    /// Sampled blocks still live.
    pub live: u64,
    /// Samples that found the profiler's tables full (counted in neither of the above's
    /// stacks).
    pub dropped: u64,
}

/// The profiler's counters now.
pub fn totals() -> ProfileTotals {
    let t = table::totals();
    ProfileTotals {
        samples: t.samples,
        live: t.live,
        dropped: t.dropped,
    }
}

/// One live sampled block, as [`live_samples`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSample {
    /// The block.
    pub addr: usize,
    /// The size the caller asked for.
    pub requested: usize,
    /// The size it is charged at (its size class's).
    pub size: usize,
    /// The kernel's id of the thread that allocated it.
    pub thread: u32,
    /// When, in milliseconds of `CLOCK_MONOTONIC` (coarse).
    pub at_ms: u64,
    /// The label set it was taken under.
    pub labels: LabelSet,
}

/// Copies up to `out.len()` of the live sampled blocks into `out` (in no particular order)
/// and returns how many there are in all. Allocates nothing.
pub fn live_samples(out: &mut [LiveSample]) -> usize {
    let mut n = 0;
    table::visit_live(|live, bucket| {
        if let Some(slot) = out.get_mut(n) {
            *slot = LiveSample {
                addr: live.addr,
                requested: live.requested as usize,
                size: bucket.size as usize,
                thread: live.thread,
                at_ms: live.at_ms,
                labels: LabelSet(bucket.labels),
            };
        }
        n += 1;
    });
    n
}
