//! The P: a run queue and the per-processor memory an M gets while it holds it.
//!
//! As in Go (`p.mcache`, `p.stackcache`), each P owns a Tessera allocator cache and a stack
//! cache. An M that takes a P installs the P's allocator cache on its thread for as long as
//! it holds the P, so every coroutine allocation on that M goes to the P's cache, and the
//! number of caches follows `procs`, not the number of threads. The owner-only parts are in
//! `UnsafeCell`s: only the M holding the P (and the coroutine it is running, on that same
//! thread) touches them.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use tessera_stacks::StackCache;

use crate::coroutine::G;
use crate::runqueue::RunQueue;

/// Buckets of the scheduling-latency histogram: bucket `i` counts latencies in
/// `[2^i, 2^(i+1))` nanoseconds (bucket 0 also takes 0 ns).
pub(crate) const LATENCY_BUCKETS: usize = 40;

/// `P::status`: no M holds it (on the idle list, or being handed over).
pub(crate) const P_IDLE: u8 = 0;
/// An M holds it and runs its Gs.
pub(crate) const P_RUNNING: u8 = 1;
/// Its M is inside `blocking(..)`: sysmon may take it away (Go's `_Psyscall`).
pub(crate) const P_SYSCALL: u8 = 2;

pub(crate) struct P {
    pub(crate) id: usize,
    /// `P_IDLE`, `P_RUNNING` or `P_SYSCALL`; the switch out of `P_SYSCALL` is a CAS that
    /// either the returning M or sysmon wins.
    pub(crate) status: AtomicU8,
    /// When its M entered `blocking(..)` (runtime clock, ns).
    pub(crate) syscall_since: AtomicU64,
    /// The id of the G running on it, 0 between Gs (sysmon's long-run check).
    pub(crate) curg_id: AtomicU64,
    /// The profiler labels its allocator cache carries now (`labels.rs`). Owner only.
    pub(crate) labels: core::cell::Cell<tessera::profile::LabelSet>,
    pub(crate) runq: RunQueue<G>,
    /// This P's timers (timer.rs): added by the coroutines it runs, fired by any M.
    pub(crate) timers: crate::timer::TimerHeap,
    /// Owner only.
    pub(crate) alloc: UnsafeCell<tessera::ProcessorCache>,
    /// Owner only.
    pub(crate) stacks: UnsafeCell<StackCache>,
    /// Owner only: dead Gs, with their stacks or bare, for reuse (gfree.rs).
    pub(crate) free_gs: UnsafeCell<crate::gfree::FreeGs>,
    /// Schedule ticks (written by the owner, read by sysmon): the 61-tick global-queue
    /// check, and sysmon's "has this P scheduled lately".
    pub(crate) tick: AtomicU32,
    /// Time slices started (written by the owner, read by sysmon): bumped when a G is
    /// scheduled other than from `runnext`, where it would inherit the running slice
    /// (machine/find_work.rs, "Time slices"; Go's `schedtick` with `inheritTime`).
    pub(crate) slice: AtomicU32,
    /// Set by sysmon when one slice has lasted `FORCE_PREEMPT_NS` while Gs wait in the
    /// ring; the owner clears it and ends the slice at its next schedule.
    pub(crate) preempt: AtomicBool,
    /// Gs were queued here without waking an idle M (machine/ready.rs `queue`):
    /// `PENDING_RUNNEXT` when only `runnext` held work, `PENDING_SHORT` when the ring did
    /// but coroutines run too briefly to be worth moving or came in a netpoll batch; 0
    /// when none. Cleared when the P schedules with at most one G queued, or by sysmon,
    /// which then wakes an M if those Gs wait too long (sysmon.rs).
    pub(crate) wake_pending: AtomicU8,
    /// Set while the P's M readies a batch of coroutines the netpoller woke
    /// (machine/ready.rs `ready_batch`): `queue` then wakes no idle M for them and marks
    /// the wake-up pending (`PENDING_SHORT`) for sysmon. Owner only.
    pub(crate) delivering: AtomicBool,
    /// When the run being timed for the run-length estimate started (machine/find_work.rs
    /// `time_run`; `sys::monotonic_ns`), or 0. Owner only.
    pub(crate) run_started: AtomicU64,
    pub(crate) spawned: AtomicU64,
    /// Owner only: coroutine ids taken from the runtime's counter and not yet handed out,
    /// `next..end` (Go's `p.goidcache`).
    goids: UnsafeCell<(u64, u64)>,
    pub(crate) steals: AtomicU64,
    pub(crate) latency: [AtomicU64; LATENCY_BUCKETS],
}

/// Coroutine ids a P takes from its runtime's counter at a time (`P::next_goid`).
const GOID_BATCH: u64 = 16;

/// `P::wake_pending`: only `runnext` held the work.
pub(crate) const PENDING_RUNNEXT: u8 = 1;
/// `P::wake_pending`: the ring held work too, of coroutines that run short or that a
/// netpoll batch woke.
pub(crate) const PENDING_SHORT: u8 = 2;

impl core::fmt::Debug for P {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("P")
            .field("id", &self.id)
            .field("runq", &self.runq)
            .finish()
    }
}

// SAFETY: the `UnsafeCell` fields are only touched by the M that holds the P (the
// idle list's lock hands a P to one M at a time); the rest is atomics and the lock-free
// run queue, which is built for sharing.
unsafe impl Sync for P {}
// SAFETY: as above; a `ProcessorCache` is Send and a `StackCache` is plain data.
unsafe impl Send for P {}

impl P {
    /// P number `id` of a runtime whose clock starts at `epoch`; `alone` if it is the
    /// runtime's only P (nobody steals from its run queue).
    pub(crate) fn new(id: usize, epoch: std::time::Instant, alone: bool) -> Self {
        Self {
            id,
            timers: crate::timer::TimerHeap::new(epoch),
            status: AtomicU8::new(P_RUNNING),
            syscall_since: AtomicU64::new(0),
            curg_id: AtomicU64::new(0),
            labels: core::cell::Cell::new(tessera::profile::LabelSet::NONE),
            runq: RunQueue::with_thieves(!alone),
            alloc: UnsafeCell::new(
                tessera::ProcessorCache::new().expect("out of memory for a processor cache"),
            ),
            stacks: UnsafeCell::new(StackCache::new()),
            free_gs: UnsafeCell::new(crate::gfree::FreeGs::default()),
            tick: AtomicU32::new(0),
            slice: AtomicU32::new(0),
            preempt: AtomicBool::new(false),
            wake_pending: AtomicU8::new(0),
            delivering: AtomicBool::new(false),
            run_started: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            goids: UnsafeCell::new((0, 0)),
            steals: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// A coroutine id for a spawn on this P. Ids come from `counter` in batches of
    /// `GOID_BATCH`, so spawns on different Ps do not bounce the counter's cache line
    /// between them (Go's `_GoidCacheBatch`); ids stay unique, and grow on each P.
    ///
    /// # Safety
    /// The calling thread holds this P.
    pub(crate) unsafe fn next_goid(&self, counter: &AtomicU64) -> u64 {
        // SAFETY: per the contract, the owner's cell is ours.
        let (next, end) = unsafe { &mut *self.goids.get() };
        if *next == *end {
            *next = counter.fetch_add(GOID_BATCH, Ordering::Relaxed);
            *end = *next + GOID_BATCH;
        }
        let id = *next;
        *next += 1;
        id
    }

    pub(crate) fn record_latency(&self, ns: u64) {
        let b = (63 - ns.max(1).leading_zeros()) as usize;
        self.latency[b.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }
}
