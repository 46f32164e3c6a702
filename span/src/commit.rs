//! What Tessera holds from the OS, and the limits on it (issue #13, "A memory limit").
//!
//! "Committed" bytes are the memory the OS may have to back for us: spans in use, free runs
//! not yet purged (dirty), in-flight purges, huge blocks, arena headers and other metadata.
//! Address space reserved but never handed out, and free runs already returned to the OS,
//! are not committed. The count is kept where it changes, which is never on an object's
//! path: carving a span out of a purged or fresh run, a purge completing, a huge block
//! mapped or unmapped, metadata mapped.
//!
//! Two limits, in the spirit of tcmalloc's `SetMemoryLimit` (soft and hard) and Go's
//! `GOMEMLIMIT` (soft):
//! - over the **soft** limit, the background purger is woken to return every dirty page and
//!   to take back the empty spans caches keep ([`over_soft`], [`notify`]);
//! - the **hard** limit is never crossed: a commit that would cross it fails
//!   ([`try_commit`]), the caller reclaims what it can and tries once more, and the
//!   allocation returns null if that is not enough. Metadata the allocator cannot work
//!   without is the one exception (a few pages per arena or per 50 caches, [`commit`]), so
//!   that accounting never fails; metadata it can do without (a per-CPU slab) is counted
//!   with [`try_commit`] and not made at the limit.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use core::time::Duration;

use tessera_sys::futex;

/// No limit.
pub const UNLIMITED: usize = usize::MAX;

static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static HARD: AtomicUsize = AtomicUsize::new(UNLIMITED);
static SOFT: AtomicUsize = AtomicUsize::new(UNLIMITED);

/// Bytes committed now (see the module comment).
#[inline]
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

/// Sets the limits; [`UNLIMITED`] for none. A soft limit above the hard one is lowered to it.
pub fn set_limits(soft: usize, hard: usize) {
    HARD.store(hard, Ordering::Relaxed);
    SOFT.store(soft.min(hard), Ordering::Relaxed);
    if over_soft() {
        notify();
    }
}

/// The (soft, hard) limits.
pub fn limits() -> (usize, usize) {
    (SOFT.load(Ordering::Relaxed), HARD.load(Ordering::Relaxed))
}

/// Whether committed memory is over the soft limit.
#[inline]
pub fn over_soft() -> bool {
    committed() > SOFT.load(Ordering::Relaxed)
}

/// Counts `bytes` more unless that would cross the hard limit; false (and nothing counted)
/// if it would. Crossing the soft limit wakes the purger (which, once awake, returns memory
/// every epoch while committed memory stays over it).
pub fn try_commit(bytes: usize) -> bool {
    let hard = HARD.load(Ordering::Relaxed);
    let mut now = COMMITTED.load(Ordering::Relaxed);
    loop {
        let Some(next) = now.checked_add(bytes).filter(|&n| n <= hard) else {
            return false;
        };
        match COMMITTED.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                let soft = SOFT.load(Ordering::Relaxed);
                if now <= soft && next > soft {
                    notify();
                }
                return true;
            }
            Err(seen) => now = seen,
        }
    }
}

/// Counts `bytes` more whatever the limits say (metadata; see the module comment).
pub fn commit(bytes: usize) {
    COMMITTED.fetch_add(bytes, Ordering::Relaxed);
}

/// Counts `bytes` less (this crate only: a safe caller outside could drive the count below
/// what is really held, and the limits with it).
pub(crate) fn uncommit(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
}

// ---- waking the background purger ------------------------------------------------------------

/// Bumped by every [`notify`]; the purger sleeps on it.
static SIGNAL: AtomicU32 = AtomicU32::new(0);
/// Whether the purger is asleep without a timeout (nothing to purge when it went to sleep).
static DEEP_SLEEP: AtomicU32 = AtomicU32::new(0);

/// Tells the purger there is work: dirty pages appeared while it slept without a timeout,
/// committed memory crossed the soft limit, or a signal asked for a heap profile.
/// Async-signal-safe (an atomic add and a futex wake).
#[inline]
pub fn notify() {
    SIGNAL.fetch_add(1, Ordering::SeqCst);
    if DEEP_SLEEP.load(Ordering::SeqCst) != 0 {
        futex::wake(&SIGNAL, 1);
    }
}

/// Wakes a deep-sleeping purger because dirty pages appeared; one load when it is awake.
/// Called after the page heap's lock is released, so a purger that re-checked the heaps
/// after [`prepare_deep_sleep`] either saw the pages or is woken here.
#[inline]
pub(crate) fn note_dirty() {
    if DEEP_SLEEP.load(Ordering::SeqCst) != 0 {
        notify();
    }
}

/// The purger's wake-up counter, to pass to [`wait`].
pub fn signal() -> u32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// Announces a sleep without a timeout and returns the counter to pass to [`wait`]: the
/// purger then looks for work once more (under the heaps' locks) and sleeps only if it
/// found none; anyone making work after that look wakes it.
pub fn prepare_deep_sleep() -> u32 {
    DEEP_SLEEP.store(1, Ordering::SeqCst);
    signal()
}

/// The purger's sleep: returns after `timeout` (`None`: until [`notify`]), or at once when
/// notified since `seen` was read. Ends a deep sleep announced by [`prepare_deep_sleep`].
pub fn wait(seen: u32, timeout: Option<Duration>) {
    futex::wait(&SIGNAL, seen, timeout);
    DEEP_SLEEP.store(0, Ordering::SeqCst);
}
