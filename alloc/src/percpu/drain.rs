//! Draining an id's slab from another thread, without stopping whoever holds that id
//! (tcmalloc's approach; issue #19 item 3): the purger empties slabs that have been idle for
//! half a decay time (`percpu::drain_idle`), `tessera::collect()` and a crossed soft limit
//! empty them all.
//!
//! The protocol, for the slab of id `i` (tcmalloc's header locks):
//! 1. take `DRAINING[i]` (one drain of a slab at a time), then lock every stack's header:
//!    store bounds on which both sequences refuse (`rseq::LOCKED_BOUNDS`) into the half of
//!    the header the sequences never store to (their commits store the count half, so a
//!    sequence committing meanwhile cannot undo the lock): from now on a sequence that
//!    *starts* refuses and takes the slow path, which works through the back end alone;
//! 2. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`: when it returns, every sequence of
//!    this process that was running on some CPU has been aborted (and will restart, reading
//!    the locked header), and one whose thread was preempted restarts when it runs again,
//!    since the kernel aborts a preempted sequence on the way back to user space. So no
//!    sequence can still commit a store to the slab: its counts and slots are ours, with
//!    every store made before visible;
//! 3. take every pointer off its stacks with plain loads and stores, clear their markers,
//!    free them into the back end of `i`;
//! 4. `membarrier` again, then store the bounds back (release), where the next sequence
//!    finds the stacks empty. The sequences load a stack's count before its bounds (one
//!    load fewer than a separate load of the bound first, the order that would make the
//!    second fence unneeded), so a sequence could read a count from before step 3 and the
//!    bounds from after step 4; the second fence restarts any such sequence between the two.
//!
//! Without membarrier's rseq command (a kernel before 5.10, or membarrier disabled) step 2 is
//! impossible, and only the calling thread's own id can be emptied, by popping.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tessera_sys::rseq;

use super::slab::{self, PERCPU_CLASSES, TABLE_LEN};
use super::{IDS, MAX_BATCH, flush_backend, give_back_to};

/// Whether membarrier's rseq command is registered for this process (`enable`).
static REMOTE: AtomicBool = AtomicBool::new(false);

/// Per id, whether a drain has its slab (locked, or being emptied).
static DRAINING: [AtomicBool; TABLE_LEN] = [const { AtomicBool::new(false) }; TABLE_LEN];

/// Per id, a fingerprint of its stacks' counts at the purger's last look, and since when it
/// has not changed (coarse ms): what "idle" means here.
static SEEN: [AtomicU64; TABLE_LEN] = [const { AtomicU64::new(0) }; TABLE_LEN];
static SINCE: [AtomicU64; TABLE_LEN] = [const { AtomicU64::new(0) }; TABLE_LEN];

/// Registers the process for membarrier's rseq command; called once when the per-CPU caches
/// are turned on.
pub(super) fn enable() {
    REMOTE.store(rseq::membarrier_register_rseq().is_ok(), Ordering::Release);
}

/// Empties the slab of `id` into its back end, by the protocol of the module comment.
/// Returns the bytes of objects it took; 0 when there was no slab, another drain had it, or
/// remote draining is unavailable.
pub(super) fn drain(id: usize) -> usize {
    let slab = slab::made(id);
    if !REMOTE.load(Ordering::Acquire)
        || slab.is_null()
        || DRAINING[id].swap(true, Ordering::Acquire)
    {
        return 0;
    }
    // SAFETY: a made slab, and `DRAINING` makes us its only locker.
    unsafe { slab::set_locked(slab, true) };
    let mut bytes = 0;
    // A fence refused after a registration that worked would be a kernel's change of mind:
    // then nothing was taken (the first), or the slab stays locked (the second), its
    // stacks refusing and the id served by its back end alone, rather than risk a sequence
    // that read a stale count.
    if rseq::membarrier_rseq(None).is_ok() {
        let mut out = [ptr::null_mut::<u8>(); MAX_BATCH];
        for c in 0..PERCPU_CLASSES {
            let class = crate::size_class::SizeClass::new(c);
            loop {
                // SAFETY: locked and fenced: no sequence commits to the slab until it is
                // unlocked below (step 2).
                let n = unsafe { slab::take(slab, class, &mut out) };
                if n == 0 {
                    break;
                }
                bytes += n * class.size();
                // SAFETY: the blocks left the stack: ours, live, markers cleared by `take`.
                unsafe { give_back_to(id as u32, &out[..n]) };
            }
        }
        // Step 4 (no count changed when nothing was taken).
        if bytes > 0 && rseq::membarrier_rseq(None).is_err() {
            return bytes;
        }
    }
    // SAFETY: as above.
    unsafe { slab::set_locked(slab, false) };
    DRAINING[id].store(false, Ordering::Release);
    bytes
}

/// The purger's pass: drains every slab whose counts have not changed for `idle_ms` (all of
/// them when `all`). Returns the bytes still on the stacks afterwards, so the purger knows
/// whether to look again.
pub(crate) fn drain_idle(now_ms: u64, idle_ms: u64, all: bool) -> usize {
    let mut held = 0;
    for id in 0..IDS.load(Ordering::Relaxed) {
        let s = slab::made(id);
        if s.is_null() || DRAINING[id].load(Ordering::Relaxed) {
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
