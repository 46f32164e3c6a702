//! The G: one coroutine, its stack and what the scheduler and `dump()` know about it.
//!
//! A G is a corosensei coroutine on a tessera stack taken from the spawning P's
//! `StackCache`. Its record is heap-allocated and registered in `allgs` once; when its
//! coroutine returns, the M that saw it return keeps the record, with its stack, on its P's
//! free list (gfree.rs, Go's `gfput`), and a later spawn on that P reuses both (`gfget`).
//! Everything else refers to it by raw pointer (`GRef`): run queues while it is runnable, a
//! wait `Token` while it is parked; the protocol of `wait.rs` makes sure nobody touches a G
//! after it may have finished.
//!
//! State machine (`state`):
//! ```text
//!   RUNNABLE --M picks it--> RUNNING --yield--> RUNNABLE
//!                            RUNNING --park, M after switch--> PARKED --ready--> RUNNABLE
//!   RUNNING --ready--> NOTIFIED: the M resumes it as soon as the park under way switches out
//!   RUNNING --returns--> DEAD (on a free list) --spawn reuses it--> RUNNABLE
//!   RUNNABLE/PARKED --the runtime is dropped--> CANCELLED: unwound and freed (teardown.rs)
//!   PARKED --a goroutine profile--> SCANNING --done--> PARKED
//!   SCANNING --ready--> SCAN_READIED --the profiler, done--> RUNNABLE (queued by it)
//! ```
//! As Go's "gopark runs the unlock function on g0": a G is not PARKED until its M has
//! switched away from its stack, so a waker can never resume it twice; until then a parking
//! G is RUNNING (machine/ready.rs `park_current`).
//!
//! Because a record outlives its coroutine, what `dump()` and `stats()` read from it while
//! it may be reused on another thread (`id`, `born`, `spawn_site`) is atomic, and `name`
//! never changes: a named G is freed instead of reused (gfree.rs).

use core::cell::{Cell, UnsafeCell};
use core::panic::Location;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::any::Any;
use std::sync::Arc;

use corosensei::{Coroutine, Yielder};
use tessera_stacks::PooledStack;

use crate::runtime::Shared;

pub(crate) const RUNNABLE: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
// 2 was PARKING: a parking G is RUNNING until its M has switched it out.
pub(crate) const PARKED: u8 = 3;
pub(crate) const NOTIFIED: u8 = 4;
/// Finished; the record waits on a free list for the next spawn (gfree.rs).
pub(crate) const DEAD: u8 = 5;
/// Being unwound by a runtime's drop (teardown.rs): its coroutine completes the join with
/// `JoinError::Cancelled` and lets the unwinding go on.
pub(crate) const CANCELLED: u8 = 6;
/// Parked, and its stack being walked by a goroutine profile (profile/goroutine.rs, Go's
/// `_Gscan` bit): nobody may resume it until the profiler puts it back.
pub(crate) const SCANNING: u8 = 7;
/// SCANNING, and readied meanwhile: the profiler makes it RUNNABLE and queues it when its
/// walk is over, in the waker's stead (`machine::ready`).
pub(crate) const SCAN_READIED: u8 = 8;

/// What a G hands its M when it switches out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// Still runnable: back on the queue.
    Yield,
    /// Waiting for a `Token` (wait.rs).
    Park,
    /// Run `G::blocking` on the M's own stack, off the P (machine/m_loop.rs `run_blocking`).
    Blocking,
}

pub(crate) type Co = Coroutine<(), Switch, (), StackRef>;

/// The bounds of the stack a G owns (`G::stack`), as the coroutine on it sees them: the G
/// keeps its `PooledStack` for its whole life, dead or alive, and each coroutine borrows it
/// through this handle, so nothing moves the stack between incarnations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackRef {
    base: usize,
    limit: usize,
}

impl StackRef {
    /// # Safety
    /// The coroutine built on the handle must be dropped before `stack` is.
    pub(crate) unsafe fn of(stack: &PooledStack) -> Self {
        Self {
            base: stack.base(),
            limit: stack.limit(),
        }
    }
}

// SAFETY: the bounds are a `PooledStack`'s (page-aligned, guard page at the low end, at
// least 16 KiB usable), and `StackRef::of`'s contract keeps that stack alive and unused by
// anything else for as long as the coroutine on it exists.
unsafe impl corosensei::stack::Stack for StackRef {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.base).expect("stack base is not null")
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.limit).expect("stack limit is not null")
    }
}

/// Why a coroutine is parked (shown by `dump()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum WaitReason {
    /// Not waiting.
    None = 0,
    /// `chan` send.
    ChanSend,
    /// `chan` receive.
    ChanRecv,
    /// `select!`.
    Select,
    /// `sleep` or a timer.
    Sleep,
    /// `sync::Mutex`.
    Mutex,
    /// `sync::WaitGroup`.
    WaitGroup,
    /// `sync::Once`.
    Once,
    /// `sync::Semaphore`.
    Semaphore,
    /// `JoinHandle::join`.
    Join,
    /// Waiting for a socket to become readable.
    IoRead,
    /// Waiting for a socket to become writable.
    IoWrite,
    /// Inside `blocking(..)` (running, but off its P).
    Blocking,
}

impl WaitReason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::ChanSend,
            2 => Self::ChanRecv,
            3 => Self::Select,
            4 => Self::Sleep,
            5 => Self::Mutex,
            6 => Self::WaitGroup,
            7 => Self::Once,
            8 => Self::Semaphore,
            9 => Self::Join,
            10 => Self::IoRead,
            11 => Self::IoWrite,
            12 => Self::Blocking,
            _ => Self::None,
        }
    }

    /// Go's wording, for dumps.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::ChanSend => "chan send",
            Self::ChanRecv => "chan receive",
            Self::Select => "select",
            Self::Sleep => "sleep",
            Self::Mutex => "sync.Mutex.Lock",
            Self::WaitGroup => "sync.WaitGroup.Wait",
            Self::Once => "sync.Once.Do",
            Self::Semaphore => "semacquire",
            Self::Join => "join",
            Self::IoRead => "IO wait (read)",
            Self::IoWrite => "IO wait (write)",
            Self::Blocking => "blocking call",
        }
    }
}

/// A raw pointer to a G.
///
/// Gs (and the `!Send` corosensei coroutine inside) move between M threads as raw pointers.
/// That is sound for the scheduler's own state: the coroutine's stack is plain memory that
/// moves with it, its registers are saved in it, and the scheduler re-reads every
/// thread-local after a switch (machine/current.rs). What user code keeps on that stack across a
/// switch is the user's contract, documented on the crate: a reference into a
/// `thread_local!` (which belongs to the M, not the coroutine) must not be held across a
/// yield, park or channel operation.
pub(crate) type GRef = *mut G;

/// Makes the pending coroutine of a G (`run`), or drops its closure unrun: spawn.rs `start`.
pub(crate) type Start = unsafe fn(GRef, bool);

/// Bytes a spawn's closure and its join completer may take to wait in a G for its first
/// run (`G::pending`); a larger closure goes onto its stack at the spawn.
pub(crate) const PENDING_BYTES: usize = 48;

/// Room for a spawn's closure in the G record (`G::pending`).
#[repr(C, align(16))]
pub(crate) struct Pending(pub(crate) core::mem::MaybeUninit<[u8; PENDING_BYTES]>);

/// The coroutine record. Fields in `Cell`/`UnsafeCell` are touched only by the thread that
/// runs the G (or by whoever holds the lock named beside them).
///
/// The fields are laid out by who touches them on the way from a spawn to the coroutine's
/// return, in 64-byte lines (`repr(C)`, and 384 bytes: a size class whose blocks sit at
/// multiples of 384 from a page-aligned span base, so a record starts on a line):
///
/// - line 0, the **birth line**, and line 1 (`pending` and what the first run reads with
///   it): all a spawn of a reused G writes (`G::begin`, `spawn::set_coroutine`);
/// - lines 2 and 3: what the M that runs and retires the G touches besides (the
///   coroutine, its stack, its locals; `gfree::put` resets `saved_sp` and `locked_m` for
///   the next incarnation, so that the spawn need not);
/// - lines 4 and 5: what an empty coroutine's life never touches (the name, the sampled
///   profile registers, `allgs` bookkeeping, blocking sections, the wait token).
///
/// With 10^5 coroutines alive a record has left the cache between its spawn and its run,
/// and between its retirement and its next spawn; when the spawner and the runner are on
/// two Ps, each line the two share crosses between their cores twice per spawn. Spread
/// over six lines as the compiler ordered them, a spawn wrote all six (issue #17). The
/// offsets are checked at compile time below the struct.
#[repr(C)]
pub(crate) struct G {
    // Line 0: the birth line.
    pub(crate) state: AtomicU8,
    pub(crate) wait_reason: AtomicU8,
    /// The record was made for a named spawn (`name` is `Some`): never reused (gfree.rs).
    /// Here so that a retirement need not read `name`'s line.
    pub(crate) named: bool,
    /// Its profiler labels (`labels.rs`), its spawner's at birth. Written by the G itself
    /// (`labels::with`), read by the M that switches to it.
    pub(crate) labels: Cell<tessera::profile::LabelSet>,
    /// This incarnation's id (a reused record gets a new one).
    pub(crate) id: AtomicU64,
    /// Coarse monotonic nanoseconds at spawn (sys::coarse_now_ns, as of sysmon's last
    /// look: `Shared::coarse_ns`).
    pub(crate) born: AtomicU64,
    /// A `&'static Location<'static>`, atomic because a reuse rewrites it (see `spawn_site`).
    pub(crate) site: AtomicPtr<Location<'static>>,
    /// Tells the joiner the runtime gave up on this G (shutdown). Points into the join
    /// state that the coroutine's closure owns, so it is valid until the coroutine returns
    /// (and forever for a G leaked at shutdown); cleared when the G dies. Written by the M
    /// that spawns or finishes the G, read only by the runtime's drop after its Ms stopped.
    pub(crate) cancel: Cell<Option<crate::join::CancelHook>>,
    /// Set by a spawn whose closure waits in `pending`: makes the coroutine (`run`) or
    /// drops the closure unrun (spawn.rs `set_coroutine`). Taken by whoever does either.
    pub(crate) start: Cell<Option<Start>>,
    /// Times sysmon saw it run for more than 10 ms without yielding.
    pub(crate) long_runs: AtomicU32,
    /// Times it became runnable (to sample one in eight for the latency histogram).
    pub(crate) sched_count: AtomicU32,
    // Line 1.
    /// A spawn's closure and join completer until the G first runs (`start`).
    pub(crate) pending: UnsafeCell<Pending>,
    /// The top of the stack the G owns now, 0 while it has none (a record spawned without
    /// one waits for its first run to be given one, gfree.rs `bind_stack`). Atomic because
    /// `dump()` reads it while the record may be reused; only the G's owner writes it.
    pub(crate) stack_base: AtomicUsize,
    /// When it last became runnable, if that was sampled (`sys::monotonic_ns`), or 0.
    pub(crate) runnable_at: AtomicU64,
    // Line 2.
    /// The coroutine; `None` before its first run if the spawn left it `pending`, and once
    /// it returned. Touched by the M that runs the G.
    pub(crate) co: UnsafeCell<Option<Co>>,
    /// Set by the coroutine on entry; valid while it has not returned.
    pub(crate) yielder: Cell<*const Yielder<(), Switch>>,
    /// The stack pointer when it last switched out (dump's "stack in use"), with the pc
    /// and rbp read at the same instruction (`machine::m_loop::switch_out`): where a
    /// goroutine profile starts the walk of its suspended stack. Written by the G itself,
    /// read by others once it is PARKED (its state's Release/Acquire orders them).
    pub(crate) saved_sp: AtomicUsize,
    /// The M this G is locked to (`lock_to_thread`), or null.
    pub(crate) locked_m: Cell<*const crate::machine::MShared>,
    // Line 3.
    /// The stack (`co` borrows it through a `StackRef`), from the G's spawn or its first
    /// run until its record is freed or a first run on its P takes it over (gfree.rs
    /// `bind_stack`); a dead G on a free list keeps it for the next coroutine. Touched by
    /// the M that spawns, runs or retires the G.
    pub(crate) stack: UnsafeCell<Option<PooledStack>>,
    /// Coroutine-local storage (local.rs), touched only by the G itself.
    pub(crate) locals: UnsafeCell<Vec<Option<Box<dyn Any>>>>,
    // Line 4.
    /// Never changes: named Gs are not reused.
    pub(crate) name: Option<Box<str>>,
    pub(crate) rt: *const Shared,
    /// Usable bytes of its stack, or of the one it will be given (the runtime's default
    /// class: only a record of that class goes without one).
    pub(crate) stack_size: usize,
    pub(crate) saved_pc: AtomicUsize,
    pub(crate) saved_bp: AtomicUsize,
    /// Which `allgs` shard holds it and at what index (guarded by that shard's lock).
    pub(crate) shard: usize,
    pub(crate) shard_index: Cell<usize>,
    // Line 5.
    /// The section `blocking(..)` asked the M to run (set just before `Switch::Blocking`).
    pub(crate) blocking: Cell<Option<*mut (dyn FnMut() + 'static)>>,
    /// The last wait token of this G, reused by `Token::for_current` when nobody else holds
    /// it any more (wait.rs). Touched only by the G itself.
    pub(crate) token: UnsafeCell<Option<Arc<crate::wait::Token>>>,
    _pad: [u64; 5],
}

/// Bytes of a cache line, for the record's layout.
const LINE: usize = 64;

// The line plan of `G` (its doc comment). A field that outgrows its line (a new corosensei
// with a larger `Coroutine`, say) fails here rather than silently spreading a spawn's
// writes again.
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<G>() == 6 * LINE);
    assert!(offset_of!(G, sched_count) + 4 <= LINE);
    assert!(offset_of!(G, pending) == LINE);
    assert!(offset_of!(G, runnable_at) + 8 <= 2 * LINE);
    assert!(offset_of!(G, co) == 2 * LINE);
    assert!(offset_of!(G, locked_m) + 8 <= 3 * LINE);
    assert!(offset_of!(G, stack) == 3 * LINE);
    assert!(offset_of!(G, locals) + size_of::<Vec<Option<Box<dyn Any>>>>() <= 4 * LINE);
    assert!(offset_of!(G, name) == 4 * LINE);
};

/// Lines of a record a spawn of a reused G writes: the birth line and `pending`'s.
pub(crate) const SPAWN_LINES: usize = 2;
/// Lines of a record the M that runs and retires a short coroutine touches.
pub(crate) const RUN_LINES: usize = 4;

/// What a spawn gives a G record for one incarnation, whether the record is new (`G::new`)
/// or a dead one reused (`G::reuse`).
pub(crate) struct Birth {
    pub(crate) id: u64,
    /// `G::born`.
    pub(crate) born: u64,
    pub(crate) site: &'static Location<'static>,
    /// `G::cancel`: the join state's hook, valid while the coroutine lives.
    pub(crate) cancel: crate::join::CancelHook,
    /// `G::labels`: the spawner's.
    pub(crate) labels: tessera::profile::LabelSet,
}

impl G {
    /// A new record owning `stack` (or none yet: then `stack_size` is the runtime's default
    /// class, which `bind_stack` gives it at its first run), RUNNABLE for its first
    /// incarnation (the spawn puts its coroutine in `co`). The literal gives only what is
    /// fixed for the record's life and the blank state of the rest; what an incarnation
    /// starts with is `begin`'s, which a reuse runs too, so the two cannot drift apart.
    #[inline]
    pub(crate) fn new(
        rt: *const Shared,
        name: Option<String>,
        stack: Option<PooledStack>,
        stack_size: usize,
        birth: Birth,
    ) -> G {
        let base = stack.as_ref().map_or(0, PooledStack::base);
        debug_assert!(stack.as_ref().is_none_or(|s| s.usable_size() == stack_size));
        let g = G {
            state: AtomicU8::new(DEAD),
            wait_reason: AtomicU8::new(WaitReason::None as u8),
            named: name.is_some(),
            labels: Cell::new(tessera::profile::LabelSet::NONE),
            id: AtomicU64::new(0),
            born: AtomicU64::new(0),
            site: AtomicPtr::new(ptr::from_ref(birth.site).cast_mut()),
            cancel: Cell::new(None),
            start: Cell::new(None),
            long_runs: AtomicU32::new(0),
            sched_count: AtomicU32::new(0),
            pending: UnsafeCell::new(Pending(core::mem::MaybeUninit::uninit())),
            stack_base: AtomicUsize::new(base),
            runnable_at: AtomicU64::new(0),
            co: UnsafeCell::new(None),
            yielder: Cell::new(ptr::null()),
            saved_sp: AtomicUsize::new(base),
            locked_m: Cell::new(ptr::null()),
            stack_size,
            stack: UnsafeCell::new(stack),
            locals: UnsafeCell::new(Vec::new()),
            name: name.map(String::into_boxed_str),
            rt,
            saved_pc: AtomicUsize::new(0),
            saved_bp: AtomicUsize::new(0),
            shard: birth.id as usize % AllGs::SHARDS,
            shard_index: Cell::new(0),
            blocking: Cell::new(None),
            token: UnsafeCell::new(None),
            _pad: [0; 5],
        };
        g.begin(birth);
        g
    }

    /// Starts another incarnation of a dead record taken off a free list (gfree.rs),
    /// which keeps its stack, name (none: named Gs are not reused), shard and wait token.
    #[inline]
    pub(crate) fn reuse(&self, birth: Birth) {
        debug_assert_eq!(self.state(), DEAD);
        self.begin(birth);
    }

    /// What every incarnation starts with, all on the birth line. The fields not set here
    /// are fixed for the record's life (`rt`, `name`, the shard), kept on purpose (the
    /// stack or its absence, `token`, `sched_count`), or left blank by the incarnation
    /// before, as `new` makes them: `co` and `blocking` are taken when used, `locals`
    /// emptied (`local::drop_all`), `runnable_at` cleared when the G runs, `yielder` set
    /// when the coroutine starts, and `saved_sp` and `locked_m` reset by the retirement
    /// (`retire`). `state` goes last, with `Release`: `dump()` may read the atomics
    /// meanwhile.
    #[inline]
    fn begin(&self, birth: Birth) {
        self.id.store(birth.id, Ordering::Relaxed);
        self.born.store(birth.born, Ordering::Relaxed);
        self.set_site(birth.site);
        self.wait_reason
            .store(WaitReason::None as u8, Ordering::Relaxed);
        self.long_runs.store(0, Ordering::Relaxed);
        self.cancel.set(Some(birth.cancel));
        self.labels.set(birth.labels);
        self.state.store(RUNNABLE, Ordering::Release);
    }

    /// Blanks what the incarnation that just ended may have left on lines 2 and 3 for the
    /// next one (`begin` keeps to the birth line): the M that retires the G has those lines
    /// at hand, the next spawner would not. Call before the record is marked DEAD.
    #[inline]
    pub(crate) fn retire(&self) {
        self.saved_sp
            .store(self.stack_base.load(Ordering::Relaxed), Ordering::Relaxed);
        self.locked_m.set(ptr::null());
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn wait_reason(&self) -> WaitReason {
        WaitReason::from_u8(self.wait_reason.load(Ordering::Relaxed))
    }

    pub(crate) fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    pub(crate) fn born(&self) -> u64 {
        self.born.load(Ordering::Relaxed)
    }

    pub(crate) fn spawn_site(&self) -> &'static Location<'static> {
        // SAFETY: `site` only ever holds a `&'static Location` (stored by `set_site`).
        unsafe { &*self.site.load(Ordering::Relaxed) }
    }

    pub(crate) fn set_site(&self, site: &'static Location<'static>) {
        self.site
            .store(core::ptr::from_ref(site).cast_mut(), Ordering::Relaxed);
    }
}

/// `allgs` (Go's `allgs`): every G record of a runtime, live or dead on a free list, for
/// `dump()` and shutdown. A record enters once when it is made and leaves when it is freed,
/// so a spawn that reuses a dead G takes no lock. Sharded so the Ps do not share one lock
/// when they do make or free records.
#[derive(Debug, Default)]
pub(crate) struct AllGs {
    shards: [std::sync::Mutex<Vec<usize>>; 8],
}

impl AllGs {
    pub(crate) const SHARDS: usize = 8;

    /// Registers a new record.
    ///
    /// # Safety
    /// `g` is a live G in no shard, not yet visible to anybody else, and stays live until
    /// it is `remove`d (`for_each` and `remove` dereference every G here).
    pub(crate) unsafe fn insert(&self, g: GRef) {
        // SAFETY: per the contract; its shard fields are written under the shard lock from
        // here on.
        let gr = unsafe { &*g };
        let mut s = self.shards[gr.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        gr.shard_index.set(s.len());
        s.push(g as usize);
    }

    /// # Safety
    /// `g` is a live G that was `insert`ed here, and stays live until this returns.
    pub(crate) unsafe fn remove(&self, g: GRef) {
        // SAFETY: per the contract.
        let gr = unsafe { &*g };
        let mut s = self.shards[gr.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let i = gr.shard_index.get();
        debug_assert_eq!(s[i], g as usize);
        s.swap_remove(i);
        if let Some(&moved) = s.get(i) {
            // SAFETY: every pointer in a shard is a live G (removed before it is freed); its
            // index is ours to update under the shard lock.
            unsafe { (*(moved as GRef)).shard_index.set(i) };
        }
    }

    /// Calls `f` on the live G with this id, if there is one (every shard is searched: a
    /// reused record stays in the shard of its first id).
    pub(crate) fn with_id(&self, id: u64, f: &mut dyn FnMut(&G)) {
        let mut found = false;
        self.for_each(&mut |g| {
            if !found && g.id.load(Ordering::Relaxed) == id {
                found = true;
                f(g);
            }
        });
    }

    /// Dead Gs kept on free lists for reuse, one shard lock at a time.
    pub(crate) fn count_dead(&self) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: as in `for_each`: live while we hold the shard's lock.
            n += s
                .iter()
                .filter(|&&g| unsafe { &*(g as GRef) }.state() == DEAD)
                .count();
        }
        n
    }

    /// Calls `f` on every live G (not the dead ones on free lists), one shard lock at a
    /// time. `f` must not free Gs.
    pub(crate) fn for_each(&self, f: &mut dyn FnMut(&G)) {
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            for &g in s.iter() {
                // SAFETY: G records are removed from their shard (under this lock) before
                // being freed, so every pointer here is live while we hold the lock.
                let g = unsafe { &*(g as GRef) };
                if g.state() != DEAD {
                    f(g);
                }
            }
        }
    }
}
