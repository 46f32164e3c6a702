//! Draining an id's slab from another thread, without stopping whoever holds that id
//! (tcmalloc's approach; issue #19 item 3): the purger empties slabs that have been idle for
//! half a decay time (`percpu::drain_idle`), `tessera::collect()` and a crossed soft limit
//! empty them all.
//!
//! The protocol, for the slab of id `i`:
//! 1. swap `SLABS[i]` from the slab to `PARKED`, a static slab whose every header is zero, on
//!    which both sequences refuse (a count equal to both begin and end): from now on a
//!    sequence that *starts* sees `PARKED` and takes the slow path, which works through the
//!    back end alone;
//! 2. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`: when it returns, every sequence of
//!    this process that was running on some CPU has been aborted (and will restart, reading
//!    `PARKED`), and one whose thread was preempted restarts when it runs again, since the
//!    kernel aborts a preempted sequence on the way back to user space. So no sequence can
//!    still commit a store to the slab: it is ours, with every store made before visible;
//! 3. take every pointer off its stacks with plain loads and stores, clear their markers,
//!    free them into the back end of `i`;
//! 4. store the slab back into `SLABS[i]` (release), where the next sequence finds it empty.
//!
//! Without membarrier's rseq command (a kernel before 5.10, or membarrier disabled) step 2 is
//! impossible, and only the calling thread's own id can be emptied, by popping.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tessera_sys::rseq;

use super::slab::{self, PERCPU_CLASSES, TABLE_LEN};
use super::{IDS, MAX_BATCH, flush_backend, give_back_to};
use crate::size_class::NUM_CLASSES;

/// A slab whose stacks are all empty and full at once (every header zero): where `SLABS[i]`
/// points while `i`'s own slab is being drained. Its slots are never touched.
static PARKED: [AtomicU32; rseq::HEADER_BYTES / 4 * NUM_CLASSES] =
    [const { AtomicU32::new(0) }; rseq::HEADER_BYTES / 4 * NUM_CLASSES];

/// Whether membarrier's rseq command is registered for this process (`enable`).
static REMOTE: AtomicBool = AtomicBool::new(false);

/// Per id, a fingerprint of its stacks' counts at the purger's last look, and since when it
/// has not changed (coarse ms): what "idle" means here.
static SEEN: [AtomicU64; TABLE_LEN] = [const { AtomicU64::new(0) }; TABLE_LEN];
static SINCE: [AtomicU64; TABLE_LEN] = [const { AtomicU64::new(0) }; TABLE_LEN];

/// Registers the process for membarrier's rseq command; called once when the per-CPU caches
/// are turned on.
pub(super) fn enable() {
    REMOTE.store(rseq::membarrier_register_rseq().is_ok(), Ordering::Release);
}

/// The parked slab, as the table holds it.
fn parked() -> *mut u8 {
    PARKED.as_ptr().cast_mut().cast()
}

/// Whether `slab` is the parked one (callers that read a slab's stacks skip it).
pub(super) fn is_parked(slab: *mut u8) -> bool {
    slab == parked()
}

/// Empties the slab of `id` into its back end, by the protocol of the module comment.
/// Returns the bytes of objects it took; 0 when there was no slab (`rseq::UNMADE`), another drain had it, or
/// remote draining is unavailable.
pub(super) fn drain(id: usize) -> usize {
    if !REMOTE.load(Ordering::Acquire) {
        return 0;
    }
    let entry = &rseq::SLABS[id];
    let slab = entry.load(Ordering::Acquire);
    if slab == rseq::unmade()
        || is_parked(slab)
        || entry
            .compare_exchange(slab, parked(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return 0;
    }
    if rseq::membarrier_rseq(None).is_err() {
        // Registered, yet refused: the slab cannot be taken safely. Put it back as it was.
        entry.store(slab, Ordering::Release);
        return 0;
    }
    let mut bytes = 0;
    let mut out = [ptr::null_mut::<u8>(); MAX_BATCH];
    for c in 0..PERCPU_CLASSES {
        let class = crate::size_class::SizeClass::new(c);
        loop {
            // SAFETY: the slab is ours alone until it goes back into the table (step 2).
            let n = unsafe { slab::take(slab, class, &mut out) };
            if n == 0 {
                break;
            }
            bytes += n * class.size();
            // SAFETY: the blocks left the stack: ours, live, markers cleared by `take`.
            unsafe { give_back_to(id as u32, &out[..n]) };
        }
    }
    entry.store(slab, Ordering::Release);
    bytes
}

/// The purger's pass: drains every slab whose counts have not changed for `idle_ms` (all of
/// them when `all`). Returns the bytes still on the stacks afterwards, so the purger knows
/// whether to look again.
pub(crate) fn drain_idle(now_ms: u64, idle_ms: u64, all: bool) -> usize {
    let mut held = 0;
    for id in 0..IDS.load(Ordering::Relaxed) {
        let s = rseq::SLABS[id].load(Ordering::Acquire);
        if s == rseq::unmade() || is_parked(s) {
            continue;
        }
        let (fingerprint, bytes) = slab::fingerprint(s);
        if bytes == 0 {
            continue;
        }
        let idle = if SEEN[id].swap(fingerprint, Ordering::Relaxed) != fingerprint {
            SINCE[id].store(now_ms, Ordering::Relaxed);
            false
        } else {
            now_ms.saturating_sub(SINCE[id].load(Ordering::Relaxed)) >= idle_ms
        };
        if all || idle {
            held += bytes.saturating_sub(drain(id));
            // An idle id's back end gives its spans back too (partly used ones to the
            // central lists, empty ones to the page heap, whose decay returns them).
            flush_backend(id);
        } else {
            held += bytes;
        }
    }
    held
}
