//! Taking samples: the byte countdown on the allocation path, and what happens when it runs
//! out.
//!
//! Every cache keeps `prof_left`, the bytes its thread (or processor) may still allocate
//! before the next sample. The allocation fast paths subtract the request's size and take
//! the slow path when the result is negative (one `sub` on memory and a `js`); the slow path
//! subtracts the requests the fast paths never saw (large, over-aligned, zeroed ones). When
//! the countdown runs out, the allocation is served by [`take`], the stack is unwound (up to
//! 64 frames, `unwind.rs`), and the next countdown is drawn from an exponential
//! distribution of mean `TESSERA_PROF_RATE` bytes (Go's and tcmalloc's scheme: every byte
//! allocated has the same chance of being the sampled one, so an allocation of `s` bytes is
//! sampled with probability `1 - exp(-s / rate)`, which the writer's scaling undoes).
//!
//! Where a sampled block lives, so that a free of any other block pays nothing and a free of
//! a sampled one finds its record:
//! - a small one (up to `MAX_SMALL - SAMPLE_OFFSET` bytes, alignment at most 16) in an
//!   ordinary object of its cache's span, one class up: the program gets the object's
//!   address plus [`SAMPLE_OFFSET`]. That address is no object start, and every free path
//!   tests for one before anything else (the recent-span slots, the owner's and the remote
//!   free, the per-CPU free: ARCHITECTURE.md, "The free path"), so the sample's free falls
//!   through all of them to `free_slow`, which asks the table ([`free_small`]) before it
//!   reports a pointer into a block. The mark costs the other blocks' frees nothing, and the
//!   sample's own free no span work: a table removal and the object's ordinary free;
//! - a larger or over-aligned one in a large span of its own, flagged `PROFILED` in the span
//!   record (`free_large`), as tcmalloc samples;
//! - a huge one in its mapping, counted in `LIVE_HUGE` so that huge frees look in the table
//!   only while there are such samples.

use core::sync::atomic::{AtomicUsize, Ordering};

use tessera_span::{Span, SpanKind, arena};
use tessera_sys::{clock, random, thread};

use super::table::{self, MAX_FRAMES, SampleInfo};
use crate::cache::Cache;
use crate::size_class::{self, MAX_SMALL, SizeClass};
use crate::unwind;

/// `TESSERA_PROF_RATE`'s default: Go's `MemProfileRate`.
pub const DEFAULT_RATE: usize = 512 * 1024;

/// The mean sampling interval in bytes; 0 turns sampling off.
static RATE: AtomicUsize = AtomicUsize::new(DEFAULT_RATE);

/// `Span::user_flags` of a large span: its block is a live sample. Large spans use no
/// other flag (the small-object layer's flags mean nothing on them), and `large::alloc`
/// clears the byte.
pub(crate) const PROFILED: u8 = 0b1000_0000;

/// Where a small sampled block starts in its object: 16 bytes in, so that it keeps the 16-byte
/// alignment `malloc` and the fast paths give, and is never an object start (the sampled
/// object's class is larger than 16 bytes, since it holds the offset and at least one byte).
pub(crate) const SAMPLE_OFFSET: usize = 16;

/// The countdown of a cache that must never sample (sampling off, or the profiler's own
/// allocations): far beyond any amount a program allocates between two resets.
const NEVER: isize = isize::MAX;

/// Sets the sampling rate (`TESSERA_PROF_RATE`, [`crate::profile::set_rate`]). Caches pick
/// the new rate up at their next sample (or at once when sampling was off: see
/// [`first_interval`]).
pub(crate) fn set_rate(rate: usize) {
    RATE.store(rate, Ordering::Relaxed);
}

/// Draws the calling thread's countdown again at the current rate (`profile::set_rate`), so
/// that a rate applies from the caller's next allocation on. Left as it was, a countdown
/// drawn at the old rate ran as long as that rate made it: after `set_rate(1)` a 64 KiB
/// block went unsampled about one time in 55 when the rate had been 16 KiB (the profile
/// tests did exactly that). Other threads take the new rate up at their next sample. A
/// thread with no cache yet draws its first countdown at the new rate anyway.
pub(crate) fn restart_own_countdown() {
    let cache = crate::thread::current();
    if !cache.is_null() {
        // SAFETY: the calling thread's current cache, which it alone uses while it is
        // current (a scheduler's processor cache included: this thread runs on it now).
        let cache = unsafe { &mut *cache };
        // Mid-sample (the profiler's own allocations) the countdown is the profiler's.
        if !cache.prof_busy {
            cache.prof_left = next_interval(&mut cache.prof_rng);
        }
    } else if crate::thread::uses_percpu() {
        // A per-CPU thread keeps its countdown in a thread-local word and no random state of
        // its own (its samples draw from the back end's): a fresh seed, as `adopt` draws.
        let mut rng = 0;
        crate::tls::set_prof(first_interval(&mut rng, random::random_u64()));
    }
}

/// The sampling rate in bytes; 0 when off.
pub(crate) fn rate() -> usize {
    RATE.load(Ordering::Relaxed)
}

/// The countdown a new cache starts with, its random state seeded from `seed`.
pub(crate) fn first_interval(rng: &mut u64, seed: u64) -> isize {
    *rng = seed | 1;
    next_interval(rng)
}

/// The next countdown: exponentially distributed with mean `rate()` bytes.
pub(crate) fn next_interval(rng: &mut u64) -> isize {
    interval(rng, rate())
}

/// A countdown exponentially distributed with mean `rate` bytes ([`NEVER`] for 0).
fn interval(rng: &mut u64, rate: usize) -> isize {
    if rate == 0 {
        return NEVER;
    }
    // xorshift64*: plenty for spacing samples.
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    // Uniform in (0, 1]: the top 53 bits, plus one. Converted as signed numbers, which x86-64
    // does in one instruction (an unsigned one takes a test and a branch), and the rate
    // capped to make it one: no rate comes near.
    let u = ((r >> 11) as i64 + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let rate = rate.min(isize::MAX as usize) as i64 as f64;
    // Finite and at least 0 (`ln_unit` of (0, 1] is finite and at most 0); the cap keeps a
    // countdown far from overflow.
    let interval = (-super::math::ln_unit(u) * rate).min((NEVER / 2) as f64);
    // `as` saturates: at `NEVER / 2` rounded up to a power of two at most, still far from
    // overflow.
    interval as isize
}

/// The slow path's share of the countdown: subtracts `size` unless a fast path already did
/// (`counted`), and says whether this allocation is to be sampled.
#[inline]
pub(crate) fn due(cache: &mut Cache, size: usize, counted: bool) -> bool {
    if !counted {
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        cache.prof_left = cache.prof_left.saturating_sub(size);
    }
    cache.prof_left < 0
}

/// Serves an allocation whose countdown ran out: a block placed as the module comment says,
/// recorded with its stack. Null when the sample cannot be taken (sampling was turned off,
/// the profiler is already busy on this cache, its tables are full, or there is no memory):
/// the caller then allocates as usual. Resets the countdown in every case.
#[cold]
#[inline(never)]
pub(crate) fn take(cache: &mut Cache, size: usize, align: usize, zero: bool) -> *mut u8 {
    cache.prof_left = next_interval(&mut cache.prof_rng);
    if rate() == 0 || cache.prof_busy {
        return core::ptr::null_mut();
    }
    cache.prof_busy = true;
    // The small route's object, whose block is `SAMPLE_OFFSET` bytes in (null on the other
    // routes).
    let mut object = core::ptr::null_mut();
    let small = small_classes(size, align);
    // The size the block would have had without the sample: its class's, or the request's
    // for a large one.
    let charged = match small {
        Some((class, _)) => class.size(),
        None => size_class::class_for(size, align).map_or(size, |class| class.size()),
    };
    let mut block = if let Some((_, object_class)) = small {
        // Never a guarded object: its free would not reach `free_small`.
        object = crate::alloc_small_unguarded(cache, object_class, size + SAMPLE_OFFSET, zero);
        if object.is_null() {
            object
        } else {
            // SAFETY: the object holds `object_class.size() > SAMPLE_OFFSET` bytes, and at
            // least `size + SAMPLE_OFFSET` (`small_classes`).
            unsafe { object.add(SAMPLE_OFFSET) }
        }
    } else {
        let block = crate::large::alloc(size, align, zero);
        if !block.is_null() {
            match arena::span_of(block as usize) {
                // SAFETY: `large::alloc` just made this large span for `block`; nobody else
                // knows the block yet, so its record's flags are ours to set.
                Some(span) => unsafe { (*span.as_ptr()).user_flags |= PROFILED },
                // A huge block: counted before it is recorded, so that its free looks it up.
                None => {
                    LIVE_HUGE.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        block
    };
    // A large or huge block the table drops is an ordinary one all the same: its free finds
    // no sample and frees it as any other. A small route's block would be a pointer into an
    // object that no table entry vouches for: its object goes back, and the caller allocates
    // as usual.
    if !block.is_null() && !record(cache, block, size, charged) && !object.is_null() {
        // SAFETY: the object was just handed out to us and nobody else knows it.
        unsafe { crate::free_slow(object) };
        block = core::ptr::null_mut();
    }
    cache.prof_busy = false;
    super::writer::write_if_pending();
    block
}

/// For a sample of `size` bytes at `align` that takes the small route, the class the request
/// would have had and the class of the object it lives in (`SAMPLE_OFFSET` bytes in); `None`
/// for the other routes.
///
/// Up to 16 bytes of alignment, a class is that of the size rounded up to the alignment
/// (`size_class::class_for`'s rule, without its search for an aligned class: below 128
/// bytes every multiple of 8 is a class, above it every class is a multiple of 16).
#[inline(always)]
fn small_classes(size: usize, align: usize) -> Option<(SizeClass, SizeClass)> {
    if align > SAMPLE_OFFSET || size > MAX_SMALL - SAMPLE_OFFSET {
        return None;
    }
    let class = size_class::class_of((size + align - 1) & !(align - 1));
    let object = size_class::class_of((size.max(1) + 2 * SAMPLE_OFFSET - 1) & !(SAMPLE_OFFSET - 1));
    debug_assert_eq!(Some(class), size_class::class_for(size, align));
    debug_assert!(object.size() > SAMPLE_OFFSET && object.size().is_multiple_of(SAMPLE_OFFSET));
    debug_assert!(object.size() >= size + SAMPLE_OFFSET);
    Some((class, object))
}

/// Records the sample at `block` (`size` bytes asked for, `charged` as the profile's block
/// size) with the calling stack; false when the table dropped it (full, or not set up).
#[inline(always)]
fn record(cache: &Cache, block: *mut u8, size: usize, charged: usize) -> bool {
    let mut frames = [core::mem::MaybeUninit::uninit(); MAX_FRAMES + SKIP_MAX];
    let (frames, stack) = unwind::capture_into(&mut frames);
    let info = SampleInfo {
        addr: block as usize,
        size: charged as u64,
        requested: size as u64,
        labels: cache.prof_labels,
        thread: thread_id(),
        at_ms: clock::coarse_now_ms(),
    };
    // A stack the unwinder numbered and the table has met: no frames needed.
    if let Some(live) = stack.and_then(|stack| table::record_known(stack, &info)) {
        return live;
    }
    // In `libtessera.so` the allocator's own frames are known by module; linked into a
    // program they stay, and the profile names them for the reader to drop
    // (`drop_frames`, `writer.rs`).
    let first = unwind::first_outside_own_library(frames).unwrap_or(0);
    let frames = &frames[first..];
    table::record(&frames[..frames.len().min(MAX_FRAMES)], stack, info)
}

std::thread_local! {
    /// The calling thread's kernel id, once asked (0: not yet): `gettid` is a system call,
    /// ~100 ns here, as much as the rest of a sample. `const`, without a destructor: reading
    /// it allocates nothing and registers nothing.
    static THREAD_ID: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// The calling thread's kernel id, cached.
fn thread_id() -> u32 {
    THREAD_ID.with(|id| {
        if id.get() == 0 {
            id.set(thread::gettid() as u32);
        }
        id.get()
    })
}

/// In a forked child, on its one thread: the cached id was the parent thread's.
pub(crate) fn after_fork_in_child() {
    THREAD_ID.with(|id| id.set(0));
}

/// Frames captured beyond `MAX_FRAMES`, so that the allocator's own frames (skipped in
/// `libtessera.so`) do not eat into the 64 the issue asks for.
const SKIP_MAX: usize = 8;

/// Called on the free of a large span flagged [`PROFILED`] instead of `large::free`:
/// forgets the sample, then frees the span.
///
/// # Safety
/// `span` must be the record of an in-use large span whose block is being freed by the
/// caller, who holds it alone and does not use it afterwards.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_large(span: *mut Span) {
    // SAFETY: the caller's contract.
    let s = unsafe { &mut *span };
    debug_assert!(s.kind() == SpanKind::Large);
    table::forget(s.base() as usize);
    s.user_flags &= !PROFILED;
    // SAFETY: the caller's contract: an in-use large span whose block is not used again.
    unsafe { crate::large::free(s) };
}

/// The object a small sample at `addr` would live in, if `addr` lies `SAMPLE_OFFSET` bytes
/// into an object of the small span `s` (a cheap test before the table's lock).
#[inline]
fn sample_object(s: &Span, addr: usize) -> Option<*mut u8> {
    let object = addr.wrapping_sub(SAMPLE_OFFSET);
    crate::is_object_start(s, object).then_some(object as *mut u8)
}

/// `free_slow`'s test for a pointer `addr` into the small span `span` that is no object
/// start: if it is a live small sample, forgets it, frees its object and returns true; false
/// (nothing done) for anything else, which the caller reports.
///
/// # Safety
/// `span` is the record of an in-use small span; the caller gives the block at `addr` up,
/// if it is one.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_small(span: *mut Span, addr: usize) -> bool {
    // SAFETY: the caller's contract.
    let Some(object) = sample_object(unsafe { &*span }, addr) else {
        return false;
    };
    // Only the free that removes the entry frees the object: a second free of the same
    // sample finds none.
    if !table::forget(addr) {
        return false;
    }
    // SAFETY: the sample was live, so its object is a live object of the span (which stays
    // in use while it is), given up by the caller (the sanitizers were told already, at the
    // sample's own address).
    unsafe { crate::free_object(span, object) };
    true
}

/// The usable size of `addr`, a pointer into the small span `s` that is no object start, if
/// it is a live small sample: the object's bytes from the sample on.
pub(crate) fn small_usable_size(s: &Span, addr: usize) -> Option<usize> {
    sample_object(s, addr)?;
    table::is_live(addr).then(|| s.obj_size as usize - SAMPLE_OFFSET)
}

/// Whether `addr`, a pointer into the small span `s` that is no object start and no live
/// sample, lies `SAMPLE_OFFSET` bytes into a freed object: most likely a sample freed
/// already, which the caller reports as a freed pointer rather than a pointer into a block.
pub(crate) fn is_freed_sample(s: &Span, addr: usize) -> bool {
    // SAFETY: `sample_object` returns an object of `s`.
    sample_object(s, addr)
        .is_some_and(|object| unsafe { crate::freelist::looks_freed_in(s, object) })
}

/// Sampled blocks that are huge (a mapping of their own, no span record) and live: while
/// there are none, a huge free does not look in the table.
static LIVE_HUGE: AtomicUsize = AtomicUsize::new(0);

/// Called on the free of a block that is in no arena (a huge block, or a bad pointer about
/// to be reported): forgets it if it is a sample.
pub(crate) fn forget_huge(addr: usize) {
    if LIVE_HUGE.load(Ordering::Relaxed) != 0 && table::forget(addr) {
        LIVE_HUGE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live sampled huge block moved from `old` to `new` (`realloc`'s `mremap`): its sample
/// follows it.
pub(crate) fn moved_huge(old: usize, new: usize) {
    if old != new {
        table::rekey(old, new);
    }
}

/// Whether `addr` is a live sampled huge block (whose sample must follow a `realloc` that
/// remaps it).
pub(crate) fn is_live_huge(addr: usize) -> bool {
    LIVE_HUGE.load(Ordering::Relaxed) != 0 && table::is_live(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_the_rate_as_mean() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let n = 200_000;
        let rate = DEFAULT_RATE as f64;
        let mut sum = 0.0;
        let mut below_mean = 0;
        for _ in 0..n {
            let i = interval(&mut rng, DEFAULT_RATE);
            assert!(i >= 0);
            sum += i as f64;
            if (i as f64) < rate {
                below_mean += 1;
            }
        }
        let mean = sum / n as f64;
        // The standard error of the mean of 200k exponential draws is rate/447: 1% is
        // more than 4 of them.
        assert!(
            (mean / rate - 1.0).abs() < 0.01,
            "mean {mean} for rate {rate}"
        );
        // An exponential distribution has 1 - 1/e = 63.2% of its mass below the mean.
        let share = below_mean as f64 / n as f64;
        assert!((share - 0.632).abs() < 0.01, "share below mean {share}");
    }
}
