//! Taking samples: the byte countdown on the allocation path, and what happens when it runs
//! out.
//!
//! Every cache keeps `prof_left`, the bytes its thread (or processor) may still allocate
//! before the next sample. The allocation fast paths subtract the request's size and take
//! the slow path when the result is negative (one `sub` on memory and a `js`); the slow path
//! subtracts the requests the fast paths never saw (large, over-aligned, zeroed ones). When
//! the countdown runs out, the allocation is served by [`take`]: the block gets a span of
//! its own from the page heap (tcmalloc samples the same way), flagged `PROFILED` in the
//! span record, so that a free of any other block pays nothing and a free of a sampled one
//! finds its record from the span's flag (`free_large`). The stack is unwound then (up to
//! 64 frames, `unwind.rs`), and the next countdown is drawn from an exponential
//! distribution of mean `TESSERA_PROF_RATE` bytes (Go's and tcmalloc's scheme: every byte
//! allocated has the same chance of being the sampled one, so an allocation of `s` bytes is
//! sampled with probability `1 - exp(-s / rate)`, which the writer's scaling undoes).

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use tessera_span::{PAGE_SIZE, Span, SpanKind, arena};
use tessera_sys::{clock, thread};

use super::table::{self, MAX_FRAMES, SampleInfo};
use crate::cache::Cache;
use crate::size_class;
use crate::unwind;

/// `TESSERA_PROF_RATE`'s default: Go's `MemProfileRate`.
pub const DEFAULT_RATE: usize = 512 * 1024;

/// The mean sampling interval in bytes; 0 turns sampling off.
static RATE: AtomicUsize = AtomicUsize::new(DEFAULT_RATE);

/// `Span::user_flags` of a large span: its block is a live sample. Large spans use no
/// other flag (the small-object layer's flags mean nothing on them), and `large::alloc`
/// clears the byte.
pub(crate) const PROFILED: u8 = 0b1000_0000;
/// `Span::user_flags` of a large span: its block was a sample and is free, the span kept in
/// the reserve for the next sample. A free, `realloc` or `malloc_usable_size` of its block
/// is of a freed pointer (`is_reserved`): had the span gone back to the page heap, as any
/// other freed large span, the same calls would find a free run and report it.
const RESERVED: u8 = 0b0100_0000;

/// The countdown of a cache that must never sample (sampling off, or the profiler's own
/// allocations): far beyond any amount a program allocates between two resets.
const NEVER: isize = isize::MAX;

/// Sets the sampling rate (`TESSERA_PROF_RATE`, [`crate::profile::set_rate`]). Caches pick
/// the new rate up at their next sample (or at once when sampling was off: see
/// [`first_interval`]).
pub(crate) fn set_rate(rate: usize) {
    RATE.store(rate, Ordering::Relaxed);
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
    // Uniform in (0, 1]: the top 53 bits, plus one.
    let u = ((r >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let interval = -super::math::ln_unit(u) * rate as f64;
    // `as` saturates; the cap keeps a countdown far from overflow.
    (interval as isize).min(NEVER / 2)
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

/// Serves an allocation whose countdown ran out: a block with a span of its own, recorded
/// with its stack. Null when the sample cannot be taken (sampling was turned off, the
/// profiler is already busy on this cache, or the page heap refused): the caller then
/// allocates as usual. Resets the countdown in every case.
#[cold]
#[inline(never)]
pub(crate) fn take(cache: &mut Cache, size: usize, align: usize, zero: bool) -> *mut u8 {
    cache.prof_left = next_interval(&mut cache.prof_rng);
    if rate() == 0 || cache.prof_busy {
        return core::ptr::null_mut();
    }
    cache.prof_busy = true;
    let block = match reserved(size, align) {
        Some(block) => {
            if zero {
                crate::sanitizer::open_block(block, size);
                // SAFETY: the reserved span's page is ours (taken from the reserve) and
                // holds `size <= PAGE_SIZE` bytes.
                unsafe { core::ptr::write_bytes(block, 0, size) };
            }
            block
        }
        None => crate::large::alloc(size, align, zero),
    };
    if !block.is_null() {
        record(cache, block, size, align);
    }
    cache.prof_busy = false;
    super::writer::write_if_pending();
    block
}

/// Flags `block`'s span and records the sample.
fn record(cache: &Cache, block: *mut u8, size: usize, align: usize) {
    let addr = block as usize;
    match arena::span_of(addr) {
        // SAFETY: `large::alloc` just made this large span for `block`; nobody else knows
        // the block yet, so its record's flags are ours to set.
        Some(span) => unsafe { (*span.as_ptr()).user_flags |= PROFILED },
        // A huge block: counted before it is recorded, so that its free looks it up.
        None => {
            LIVE_HUGE.fetch_add(1, Ordering::Relaxed);
        }
    }
    // The size the block would have had without the sample: its class's, or the request's
    // for a large one.
    let charged = size_class::class_for(size, align).map_or(size, |class| class.size());
    let mut frames = [core::mem::MaybeUninit::uninit(); MAX_FRAMES + SKIP_MAX];
    let frames = unwind::capture_into(&mut frames);
    // In `libtessera.so` the allocator's own frames are known by module; linked into a
    // program they stay, and the profile names them for the reader to drop
    // (`drop_frames`, `writer.rs`).
    let first = unwind::first_outside_own_library(frames).unwrap_or(0);
    let frames = &frames[first..];
    table::record(
        &frames[..frames.len().min(MAX_FRAMES)],
        SampleInfo {
            addr,
            size: charged as u64,
            requested: size as u64,
            labels: cache.prof_labels,
            thread: thread_id(),
            at_ms: clock::coarse_now_ms(),
        },
    );
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
/// forgets the sample, and keeps a one-page span in the reserve for the next sample (or
/// gives it back to the page heap).
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
    if s.npages() == 1 {
        // Marked before `keep` publishes it: the next owner clears the mark.
        s.user_flags |= RESERVED;
        if keep(span) {
            return;
        }
        s.user_flags &= !RESERVED;
    }
    // SAFETY: the caller's contract: an in-use large span whose block is not used again.
    unsafe { crate::large::free(s) };
}

/// One-page large spans of freed samples, kept for the next samples: a span from the page
/// heap and its return cost ~500 instructions a sample (the heap's lock, its free lists,
/// the coalescing), a slot here a swap. Global, so that samples freed on another thread
/// than the one that took them feed it too; each slot holds a span or null and changes
/// hands by one atomic operation (no ABA: nothing is read from a span before it is owned).
/// At most `RESERVE.len()` pages (32 KiB) stay in use this way; `tessera::stats` counts
/// them as cached.
static RESERVE: [AtomicPtr<Span>; 4] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 4];

/// Whether the large span `s` is kept in the reserve, its block freed (see `RESERVED`);
/// `tessera::stats` counts such a span as cached (a racy snapshot, as the other parts).
#[inline]
pub(crate) fn is_reserved(s: &Span) -> bool {
    s.user_flags & RESERVED != 0
}

/// A reserved span's block for a sample of `size` at `align`, if one is kept and fits.
fn reserved(size: usize, align: usize) -> Option<*mut u8> {
    if size > PAGE_SIZE || align > PAGE_SIZE {
        return None;
    }
    for slot in &RESERVE {
        if slot.load(Ordering::Relaxed).is_null() {
            continue;
        }
        let span = slot.swap(core::ptr::null_mut(), Ordering::Acquire);
        if !span.is_null() {
            // SAFETY: `keep` put an in-use one-page large span here, whose block nobody
            // uses; the swap made it ours alone.
            unsafe {
                (*span).user_flags &= !RESERVED;
                return Some((*span).base());
            }
        }
    }
    None
}

/// Puts `span` (an in-use one-page large span whose block is free) in an empty reserve
/// slot; false when all are taken.
fn keep(span: *mut Span) -> bool {
    RESERVE.iter().any(|slot| {
        slot.load(Ordering::Relaxed).is_null()
            && slot
                .compare_exchange(
                    core::ptr::null_mut(),
                    span,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
    })
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
