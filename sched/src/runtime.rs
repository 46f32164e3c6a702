//! The runtime: its Ps and Ms (`Shared`), the builder, `block_on` and the drop; spawning a
//! coroutine is spawn.rs.
//!
//! `Runtime::builder().procs(n).build()` makes `n` Ps and one M thread per P. The default,
//! [`default_procs`], is Go 1.25's default `GOMAXPROCS`: `TESSERA_PROCS` if set, else the
//! CPUs the process may run on, capped by its cgroup's CPU quota (rounded up, at least 2),
//! so a container limited to 2 CPUs on a 64-CPU host gets 2 Ps, not 64 Ms fighting over
//! 2 CPUs' worth of time and being throttled.
//! Dropping the runtime stops the Ms once they are between coroutines and joins them, then
//! unwinds the coroutines still parked or queued, returns their stacks, and closes the
//! runtime's epoll and eventfd (teardown.rs has the details and the one exception).
//! Their `JoinHandle`s report `JoinError::Cancelled`. The unwinding runs their destructors
//! on the dropping thread, outside any runtime, as tokio drops the futures of its tasks: a
//! destructor there must not wait for another coroutine. A coroutine inside
//! `blocking(..)` cannot be interrupted: the drop waits for that section to return.

use core::fmt;
use core::panic::Location;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use tessera_numa::Limits;
use tessera_stacks::StackError;

use crate::coroutine::{AllGs, G};
pub use crate::join::{JoinError, JoinHandle};
use crate::machine::{self, Idle, MShared};
use crate::processor::P;

/// Default stack size for coroutines (usable bytes; rounded up to a power of two).
pub const DEFAULT_STACK_SIZE: usize = 64 << 10;

/// Coroutines that typically run shorter than this are not worth waking an idle M for.
/// Moving a G to another P costs the P that made it cache misses on the G record, its
/// stack and its join state when they come back (on this project's 2-vCPU VM, spawn-join
/// with the second P taking half the Gs cost ~100–150 ns more per stolen G than the
/// ~60 ns an empty G takes to run where it was made), and waking the M costs a futex call
/// and microseconds of latency. Below a few hundred nanoseconds of work a second P makes
/// the whole slower; 500 ns leaves margin. Work that waits too long anyway is covered by
/// sysmon (sysmon.rs, "Backlog").
pub(crate) const MOVE_WORTH_NS: u64 = 500;

/// `log2(ns)` in sixteenths of an octave: a cheap fixed-point log for `run_log`.
const fn log16(ns: u64) -> u32 {
    let ns = if ns == 0 { 1 } else { ns };
    let l = 63 - ns.leading_zeros();
    let frac = if l >= 4 {
        (ns >> (l - 4)) & 15
    } else {
        (ns << (4 - l)) & 15
    };
    l * 16 + frac as u32
}

/// The inverse of `log16` (to within a sixteenth of an octave).
fn exp16(l: u32) -> u64 {
    let (int, frac) = (l / 16, u64::from(l % 16));
    if int >= 4 {
        (16 + frac) << (int - 4)
    } else {
        (16 + frac) >> (4 - int)
    }
}

/// What every part of a runtime shares.
pub(crate) struct Shared {
    /// Itself, for starting Ms from code that only has `&Shared`.
    me: Weak<Shared>,
    pub(crate) ps: Box<[CachePadded<P>]>,
    pub(crate) global: crate::global_queue::GlobalQueue,
    /// The idle protocol's state (machine/idle.rs), on the shim's types.
    pub(crate) idle: crate::shim::Mutex<Idle>,
    pub(crate) npidle: CachePadded<crate::shim::AtomicUsize>,
    pub(crate) nmspinning: CachePadded<crate::shim::AtomicUsize>,
    pub(crate) shutdown: crate::shim::AtomicBool,
    pub(crate) allgs: AllGs,
    pub(crate) all_ms: Mutex<Vec<Arc<MShared>>>,
    /// Where sysmon sleeps between looks (unparked at shutdown).
    pub(crate) sysmon: crate::park::Parker,
    /// Sysmon's current sleep in microseconds; an M entering `blocking` wakes it when long.
    pub(crate) sysmon_delay_us: AtomicU64,
    /// The runtime's epoll (netpoll.rs).
    pub(crate) poll: crate::netpoll::Netpoll,
    /// Ms started after `build` (for hand-offs), joined at drop.
    pub(crate) extra_ms: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Runs of more than 10 ms without yielding that sysmon saw.
    pub(crate) long_runs: AtomicU64,
    /// Dead Gs, with their stacks or bare, shared between Ps (gfree.rs).
    pub(crate) free_gs: Mutex<crate::gfree::FreeGs>,
    /// The next coroutine id not yet handed out; Ps take them in batches
    /// (`P::next_goid`).
    pub(crate) next_id: CachePadded<AtomicU64>,
    epoch: Instant,
    pub(crate) stack_size: usize,
    /// Plain spawns may make bare records (gfree.rs): only where a stack costs no VMA
    /// (`MADV_GUARD_INSTALL` guards). Under `mprotect` guards the mappings can run out, and
    /// `spawn` must report that in the spawner (a panic naming the limit), not at a first
    /// run that has nowhere to report it to.
    pub(crate) bare_records: bool,
    /// Usable bytes of a default-size stack (the class `stack_size` rounds up to).
    pub(crate) stack_class: usize,
    pub(crate) spawned_outside: AtomicU64,
    /// How long a coroutine typically runs before it switches out: a moving average of
    /// sampled runs (`note_run`), on a log scale (`log16`) so that one long run among many
    /// short ones (a spawner's burst) barely moves it; `u32::MAX` until measured. It times
    /// the coroutines themselves, not the Ps, so it does not feed back on the policy it
    /// drives (a P slowed by cross-core traffic does not make its coroutines look long).
    run_log: CachePadded<AtomicU32>,
    /// `sys::coarse_now_ns()` as of sysmon's last look (0 before the first): what a spawn
    /// stamps as the G's birth, which `dump()` shows as its age. Stale by at most one
    /// sysmon sleep (10 ms when idle), and it saves a clock read per spawn.
    pub(crate) coarse_ns: AtomicU64,
}

// SAFETY: the raw G pointers in the queues and `allgs` are handed between threads by the
// scheduler's protocols (a G is owned by one M while it runs, by one queue or token while
// it waits); every other field is Sync already.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("procs", &self.ps.len())
            .finish()
    }
}

impl Shared {
    /// The runtime as an `Arc` (`None` once it is being dropped).
    pub(crate) fn self_arc(&self) -> Option<Arc<Shared>> {
        self.me.upgrade()
    }

    pub(crate) fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// The measured typical run length in ns, if any (`Stats::run_ns`).
    pub(crate) fn run_ns(&self) -> Option<u64> {
        let l = self.run_log.load(Ordering::Relaxed);
        (l != u32::MAX).then(|| exp16(l))
    }

    /// One sampled run of a coroutine, from one schedule to the next (machine/find_work.rs
    /// `time_run`).
    pub(crate) fn note_run(&self, ns: u64) {
        let x = i64::from(log16(ns));
        let old = self.run_log.load(Ordering::Relaxed);
        let new = if old == u32::MAX {
            x
        } else {
            let old = i64::from(old);
            old + (x - old) / 4
        };
        // Racy read-modify-write between Ps: a lost sample does not matter.
        self.run_log.store(new as u32, Ordering::Relaxed);
    }

    /// Whether coroutines typically run for less than `MOVE_WORTH_NS`, so that work
    /// queued on a running P is better left to it than handed to an idle one (machine/ready.rs
    /// `queue`).
    pub(crate) fn runs_short(&self) -> bool {
        self.run_log.load(Ordering::Relaxed) < log16(MOVE_WORTH_NS)
    }

    /// Stamps the time a G became runnable, for one transition in eight (Go samples its
    /// scheduling-latency metric the same way, `gTrackingPeriod`), so the clock read stays
    /// off most switches.
    #[inline]
    pub(crate) fn stamp_runnable(&self, g: &G) {
        let n = g.sched_count.load(Ordering::Relaxed).wrapping_add(1);
        g.sched_count.store(n, Ordering::Relaxed);
        if n.is_multiple_of(8) {
            self.stamp_now(g);
        }
    }

    /// The sampled half of `stamp_runnable`, out of line.
    #[inline(never)]
    fn stamp_now(&self, g: &G) {
        g.runnable_at
            .store(crate::sys::monotonic_ns(), Ordering::Relaxed);
    }
}

/// Live runtimes, for `dump()` from any thread.
pub(crate) static RUNTIMES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    procs: Option<usize>,
    stack_size: usize,
    dump_on_sigquit: bool,
}

impl Builder {
    /// Number of Ps (Go's GOMAXPROCS). Default: [`default_procs`].
    pub fn procs(mut self, n: usize) -> Self {
        self.procs = Some(n.max(1));
        self
    }

    /// Default stack size for coroutines spawned without one (64 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Print `dump()` to stderr on SIGQUIT (the handler only writes to a pipe; a thread
    /// prints). Replaces SIGQUIT's default action (core dump) for the whole process.
    pub fn dump_on_sigquit(mut self, on: bool) -> Self {
        self.dump_on_sigquit = on;
        self
    }

    /// Starts the Ms.
    ///
    /// # Errors
    /// Besides the OS's (threads, epoll), an `InvalidInput` error wrapping a
    /// [`StackError`] when no coroutine could get a stack: a `stack_size` above
    /// [`tessera_stacks::MAX_STACK_SIZE`] (`StackError::TooLarge`), or a guard mode the
    /// kernel lacks (`TESSERA_STACK_GUARD=madvise`, `StackError::GuardUnsupported`). Get it
    /// back with `err.get_ref()` and `downcast_ref::<StackError>()`.
    pub fn build(self) -> std::io::Result<Runtime> {
        let invalid = |e: StackError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        if tessera_stacks::SizeClass::for_size(self.stack_size).is_none() {
            return Err(invalid(StackError::TooLarge {
                requested: self.stack_size,
            }));
        }
        tessera_stacks::guard_mode().map_err(invalid)?;
        let procs = self.procs.unwrap_or_else(default_procs);
        let epoch = Instant::now();
        let poll = crate::netpoll::Netpoll::new()?;
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            // The runtime's own epoch for the P's timer heaps: their deadlines
            // (`TimerHeap::ns`) and `now_ns` are then on one clock, and sysmon and the
            // poller compare them directly.
            ps: (0..procs)
                .map(|i| CachePadded::new(P::new(i, epoch, procs == 1)))
                .collect(),
            global: Default::default(),
            idle: crate::shim::Mutex::new(Idle::default()),
            npidle: CachePadded::new(crate::shim::AtomicUsize::new(0)),
            nmspinning: CachePadded::new(crate::shim::AtomicUsize::new(0)),
            shutdown: crate::shim::AtomicBool::new(false),
            allgs: AllGs::default(),
            all_ms: Mutex::new(Vec::new()),
            sysmon: crate::park::Parker::new(),
            sysmon_delay_us: AtomicU64::new(0),
            poll,
            extra_ms: Mutex::new(Vec::new()),
            long_runs: AtomicU64::new(0),
            free_gs: Mutex::new(crate::gfree::FreeGs::default()),
            next_id: CachePadded::new(AtomicU64::new(1)),
            run_log: CachePadded::new(AtomicU32::new(u32::MAX)),
            coarse_ns: AtomicU64::new(0),
            epoch,
            stack_size: self.stack_size,
            bare_records: matches!(
                tessera_stacks::guard_mode(),
                Ok(tessera_stacks::GuardMode::Madvise)
            ),
            stack_class: self
                .stack_size
                .max(tessera_stacks::MIN_STACK_SIZE)
                .next_power_of_two(),
            spawned_outside: AtomicU64::new(0),
        });
        let mut threads = Vec::with_capacity(procs);
        for p in 0..procs {
            let ms = Arc::new(MShared::new());
            shared.all_ms.lock().unwrap().push(ms.clone());
            let sh = shared.clone();
            threads.push(thread::Builder::new().name(format!("tessera-m{p}")).spawn(
                move || {
                    // SAFETY: P `p` is new and this M's alone: each M started here gets
                    // its own, and none is on the idle list.
                    unsafe { machine::m_main(sh, ms, p, false) }
                },
            )?);
        }
        let sh = shared.clone();
        threads.push(
            thread::Builder::new()
                .name("tessera-sysmon".into())
                .spawn(move || crate::sysmon::run(sh))?,
        );
        RUNTIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&shared));
        if self.dump_on_sigquit {
            crate::dump::start_sigquit_thread()?;
        }
        Ok(Runtime { shared, threads })
    }
}

/// The number of Ps when the builder is not told, by Go 1.25's rule for `GOMAXPROCS`:
///
/// 1. `TESSERA_PROCS`, if set to a positive number, wins outright;
/// 2. else the CPUs this thread may run on (its affinity mask, where a cgroup cpuset also
///    shows), capped by
/// 3. the cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`, the tightest along the
///    path to the hierarchy's root) rounded up to whole CPUs and at least 2
///    ([`Limits::cpu_limit`]): 1.5 CPUs' worth gives 2 Ps, and so does half a CPU, unless
///    the affinity allows only one.
///
/// Not `std::thread::available_parallelism`: it applies the quota too, but rounded down
/// and to at least 1, so 1.5 CPUs would give 1 P where Go gives 2.
///
/// Read on each call (each `build` without `procs`). Unlike Go, which re-reads the quota
/// about once a second and adjusts `GOMAXPROCS`, a runtime keeps the count it started with.
pub fn default_procs() -> usize {
    let env = std::env::var("TESSERA_PROCS").ok();
    let cpus = tessera_numa::affinity()
        .map(|set| set.count())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    procs_from(env.as_deref(), cpus, &Limits::read())
}

/// [`default_procs`]' rule over its inputs: the `TESSERA_PROCS` value, the CPUs in the
/// affinity mask and the cgroup's limits.
fn procs_from(env: Option<&str>, cpus: usize, limits: &Limits) -> usize {
    if let Some(n) = env
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let cpus = cpus.max(1);
    limits.cpu_limit().map_or(cpus, |limit| cpus.min(limit))
}

/// An M:N scheduler: `procs` Ps, one M thread each.
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("procs", &self.shared.ps.len())
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder {
            procs: None,
            stack_size: DEFAULT_STACK_SIZE,
            dump_on_sigquit: false,
        }
    }

    /// A runtime with the defaults.
    pub fn new() -> std::io::Result<Runtime> {
        Self::builder().build()
    }

    /// Number of Ps.
    pub fn procs(&self) -> usize {
        self.shared.ps.len()
    }

    /// Runs `f` in a coroutine of this runtime and blocks the calling thread until it
    /// returns; a panic in `f` is resumed on the caller.
    #[track_caller]
    pub fn block_on<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let h = crate::spawn::spawn_in(&self.shared, f, None, None, Location::caller());
        match h.join() {
            Ok(v) => v,
            Err(JoinError::Panicked(p)) => std::panic::resume_unwind(p),
            Err(JoinError::Cancelled) => panic!("block_on: the runtime shut down"),
        }
    }

    /// Spawns a coroutine on this runtime from any thread.
    ///
    /// # Panics
    /// If no stack can be had ([`Runtime::try_spawn`] returns the error instead).
    #[track_caller]
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        crate::spawn::spawn_in(&self.shared, f, None, None, Location::caller())
    }

    /// Spawns a coroutine on this runtime from any thread, or says why no stack could be
    /// had for it (`StackError::OutOfMappings` at `vm.max_map_count`, say).
    #[track_caller]
    pub fn try_spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, StackError> {
        crate::spawn::try_spawn_in(&self.shared, f, None, None, Location::caller())
    }

    /// Counters and the scheduling-latency histogram.
    pub fn stats(&self) -> crate::stats::Stats {
        crate::stats::collect(&self.shared)
    }

    /// Every live coroutine of this runtime, one per line.
    pub fn dump(&self) -> String {
        crate::dump::dump_runtime(&self.shared)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        machine::wake_all(sh);
        sh.sysmon.unpark();
        sh.poll.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Ms started for hand-offs; none starts after `shutdown` is set.
        loop {
            let extra =
                core::mem::take(&mut *sh.extra_ms.lock().unwrap_or_else(|e| e.into_inner()));
            if extra.is_empty() {
                break;
            }
            for t in extra {
                let _ = t.join();
            }
        }
        // The queues only point at Gs that `allgs` has too.
        sh.global.drain();
        // SAFETY: the Ms are joined.
        let kept = unsafe { crate::teardown::release_live(sh) };
        if kept > 0 {
            // Gs left alone point at the shared state, and somebody may be waking one right
            // now: keep it alive for the life of the process.
            core::mem::forget(sh.clone());
        }
        // SAFETY: the Ms are joined, so no M holds any P now.
        unsafe { crate::gfree::free_all(sh) };
        for p in sh.ps.iter() {
            // SAFETY: no M holds any P now.
            unsafe { (*p.alloc.get()).flush() };
        }
        RUNTIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| w.strong_count() > 0 && !core::ptr::eq(w.as_ptr(), Arc::as_ptr(sh)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup fixture tree of tessera-numa (its tests/fixtures/cgroup/README.md).
    fn limits(tree: &str) -> Limits {
        let root = format!(
            "{}/../numa/tests/fixtures/cgroup/{tree}",
            env!("CARGO_MANIFEST_DIR")
        );
        Limits::read_from(format!("{root}/proc/self").as_bytes(), root.as_bytes())
    }

    #[test]
    fn default_procs_is_the_cpus_capped_by_the_cgroup_quota() {
        // No quota: the affinity mask decides.
        let none = limits("v2-unlimited");
        assert_eq!(procs_from(None, 64, &none), 64);
        assert_eq!(procs_from(None, 1, &none), 1);
        // 1.5 CPUs: rounded up to 2.
        let leaf = limits("v2-leaf");
        assert_eq!(procs_from(None, 64, &leaf), 2);
        // 2.5 CPUs on a parent slice: 3.
        let parent = limits("v2-parent-tighter");
        assert_eq!(procs_from(None, 64, &parent), 3);
        assert_eq!(procs_from(None, 2, &parent), 2);
        // Half a CPU (v1, relative to the mount's root): at least 2, unless fewer CPUs.
        let half = limits("v1-docker");
        assert_eq!(procs_from(None, 64, &half), 2);
        assert_eq!(procs_from(None, 1, &half), 1);
        // An affinity count of 0 (cannot happen, but must not give 0 Ps).
        assert_eq!(procs_from(None, 0, &none), 1);
    }

    #[test]
    fn tessera_procs_overrides_the_quota() {
        let half = limits("v1-docker");
        assert_eq!(procs_from(Some("8"), 64, &half), 8);
        assert_eq!(procs_from(Some(" 5\n"), 2, &half), 5);
        // Unset, zero or garbage fall back to the rule.
        for bad in ["0", "", "many", "-3"] {
            assert_eq!(procs_from(Some(bad), 64, &half), 2, "{bad:?}");
        }
    }
}
