//! Spawning a coroutine (Go's `go f()`, `newproc`): `spawn`, `try_spawn`, the `Spawn`
//! builder and `Runtime::spawn`'s path, and how a spawn gets its G — a dead one reused with
//! its stack (gfree.rs) or a new record — puts the coroutine on it and queues it.

use core::panic::Location;
use core::sync::atomic::Ordering;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use corosensei::{Coroutine, Yielder};
use tessera_stacks::{PooledStack, StackError};

use crate::coroutine::{Birth, G, GRef, StackRef, Switch};
use crate::join::{Completer, JoinError, JoinHandle};
use crate::machine;
use crate::processor::P;
use crate::runtime::{Runtime, Shared};

/// Spawns `f` as a coroutine on the current runtime (Go's `go f()`).
///
/// # Panics
/// Outside a runtime's coroutine or M thread (use `Runtime::spawn` there), and if no stack
/// can be had ([`try_spawn`] returns the error instead).
#[track_caller]
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let site = Location::caller();
    with_current(move |sh| spawn_in(sh, f, None, None, site))
}

/// Spawns `f` as a coroutine on the current runtime, or says why no stack could be had
/// for it (`StackError::OutOfMappings` at `vm.max_map_count`, say).
///
/// # Panics
/// Outside a runtime's coroutine or M thread (use `Runtime::try_spawn` there).
#[track_caller]
pub fn try_spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StackError> {
    let site = Location::caller();
    with_current(move |sh| try_spawn_in(sh, f, None, None, site))
}

/// Calls `f` with the runtime of the calling coroutine or M thread, borrowed from the M
/// (an `Arc` clone and drop per spawn were two atomic read-modify-writes on a line the
/// other Ms touch too: a fifth of spawn-all's time on 2 Ps, by perf).
#[track_caller]
fn with_current<R>(f: impl FnOnce(&Arc<Shared>) -> R) -> R {
    machine::with_current_runtime(
        |sh| f(sh.expect("tessera_sched::spawn called outside a runtime")),
    )
}

/// Spawns with a name and a stack size: `Spawn::new().name("x").stack_size(16 << 10).spawn(f)`.
#[derive(Debug, Default, Clone)]
pub struct Spawn {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Spawn {
    /// Defaults: no name, the runtime's stack size.
    pub fn new() -> Self {
        Self::default()
    }

    /// A name shown by `dump()`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Usable stack bytes (rounded up to a power of two, 16 KiB to 8 MiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns on the current runtime. Panics outside one, and if no stack can be had.
    #[track_caller]
    pub fn spawn<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let site = Location::caller();
        with_current(move |sh| spawn_in(sh, f, self.name, self.stack_size, site))
    }

    /// Spawns on `rt`, from any thread. Panics if no stack can be had.
    #[track_caller]
    pub fn spawn_on<T: Send + 'static>(
        self,
        rt: &Runtime,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        spawn_in(
            &rt.shared,
            f,
            self.name,
            self.stack_size,
            Location::caller(),
        )
    }

    /// Spawns on the current runtime, or says why no stack could be had (a `stack_size`
    /// above the largest, `StackError::TooLarge`; `StackError::OutOfMappings`). Panics
    /// outside a runtime.
    #[track_caller]
    pub fn try_spawn<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, StackError> {
        let site = Location::caller();
        with_current(move |sh| try_spawn_in(sh, f, self.name, self.stack_size, site))
    }

    /// Spawns on `rt`, from any thread, or says why no stack could be had.
    #[track_caller]
    pub fn try_spawn_on<T: Send + 'static>(
        self,
        rt: &Runtime,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, StackError> {
        try_spawn_in(
            &rt.shared,
            f,
            self.name,
            self.stack_size,
            Location::caller(),
        )
    }
}

/// `try_spawn_in`, panicking without a stack.
#[track_caller]
pub(crate) fn spawn_in<T: Send + 'static>(
    sh: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
    name: Option<String>,
    stack_size: Option<usize>,
    site: &'static Location<'static>,
) -> JoinHandle<T> {
    try_spawn_in(sh, f, name, stack_size, site)
        .unwrap_or_else(|e| panic!("tessera_sched::spawn: no stack: {e}"))
}

/// Makes a G around `f` and queues it (Go's `newproc`).
pub(crate) fn try_spawn_in<T: Send + 'static>(
    sh: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
    name: Option<String>,
    stack_size: Option<usize>,
    site: &'static Location<'static>,
) -> Result<JoinHandle<T>, StackError> {
    let size = stack_size.unwrap_or(sh.stack_size);
    let p = machine::current_p(Arc::as_ptr(sh));
    let reused = match p {
        // SAFETY: `current_p` returned the P this thread holds.
        Some(p) if size == sh.stack_size && name.is_none() => unsafe { crate::gfree::get(sh, p) },
        _ => None,
    };
    // A new G's stack, taken before anything else so that a failure leaves nothing to undo.
    let stack = match reused {
        Some(_) => None,
        // SAFETY: `p` is `current_p`.
        None => Some(unsafe { new_stack(sh, p, size) }?),
    };
    let id = match p {
        // SAFETY: `current_p` returned the P this thread holds.
        Some(p) => unsafe { p.next_goid(&sh.next_id) },
        None => sh.next_id.fetch_add(1, Ordering::Relaxed),
    };
    let born = match sh.coarse_ns.load(Ordering::Relaxed) {
        0 => crate::sys::coarse_now_ns(),
        t => t,
    };
    // The handle's side, and the coroutine closure's, which completes it. The G points at
    // it (`cancel`) only while the closure lives.
    let (done, handle, cancel) = crate::join::pair(id);
    // Made in each arm: one value for both would be built in memory on every spawn for
    // the out-of-line `new_record`.
    let birth = || Birth {
        id,
        born,
        site,
        cancel,
        labels: crate::labels::current(),
    };
    let g = match reused {
        Some(g) => {
            // SAFETY: a G from a free list is dead and ours alone; only `state`, `id`,
            // `born`, `site` and `saved_sp` may be read meanwhile by `dump()`, and they
            // are atomics.
            unsafe { (*g).reuse(birth()) };
            g
        }
        None => {
            let stack = stack.expect("a new G has a stack");
            // SAFETY: a stack just taken from the pool or the P's cache: ours, and nothing
            // runs on it yet.
            unsafe { new_record(sh, stack, name, birth()) }
        }
    };
    // SAFETY: the G is ours until queued below: it owns a stack and has no coroutine (a
    // new record, or a dead one whose coroutine `gfree::put` dropped).
    unsafe { set_coroutine(g, f, done) };
    if let Some(p) = p {
        p.spawned
            .store(p.spawned.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    } else {
        sh.spawned_outside.fetch_add(1, Ordering::Relaxed);
    }
    // A new G goes in `runnext` like Go's newproc, so spawn-then-join runs it at once.
    // SAFETY: the G is RUNNABLE, not started and on no queue, locked to no M, and we do
    // not touch it again; `p` is `current_p`.
    unsafe { machine::queue(sh, p, g) };
    Ok(handle)
}

/// A stack of `size` for a new G, from `p`'s cache or, without a P, the calling thread's.
///
/// # Safety
/// The calling thread holds `p`, if given (`current_p`).
#[inline(always)]
unsafe fn new_stack(sh: &Shared, p: Option<&P>, size: usize) -> Result<PooledStack, StackError> {
    let acquire = || match p {
        // SAFETY: per the contract this thread holds `p`, so its cache is ours.
        Some(p) => tessera_stacks::acquire_in(unsafe { &mut *p.stacks.get() }, size),
        None => tessera_stacks::acquire(size),
    };
    match acquire() {
        Ok(s) => Ok(s),
        // The runtime's dead Gs may hold every stack there is (gfree.rs keeps up to a
        // million): free some, and try again.
        // SAFETY: per the contract this thread holds `p`, if any.
        Err(e) if unsafe { crate::gfree::release_shared(sh, p) } => acquire().map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// A new G record on `stack`, registered in `allgs`. Out of line: the common spawn reuses
/// a dead G.
///
/// # Safety
/// `stack` was just taken from the pool or a P's cache: it is ours, and nothing runs on it.
#[inline(never)]
unsafe fn new_record(
    sh: &Arc<Shared>,
    stack: PooledStack,
    name: Option<String>,
    birth: Birth,
) -> GRef {
    // SAFETY: per the contract.
    unsafe { crate::gfree::arm(&stack) };
    // From Tessera's per-P cache, whatever the program's global allocator (palloc.rs).
    let g = crate::palloc::new(G::new(Arc::as_ptr(sh), name, stack, birth)).as_ptr();
    // SAFETY: a record just made: live, in no shard, and freed only through `gfree`, which
    // removes it first.
    unsafe { sh.allgs.insert(g) };
    g
}

/// Puts a coroutine running `f` on G `g`'s stack; `done` completes the join when it
/// returns.
///
/// # Safety
/// `g` is a live G that nobody else touches yet (not queued): it owns a stack and has no
/// coroutine.
#[inline]
unsafe fn set_coroutine<T: Send + 'static>(
    g: GRef,
    f: impl FnOnce() -> T + Send + 'static,
    done: Completer<T>,
) {
    let gaddr = g as usize;
    // SAFETY: the G is ours until queued below; it keeps its stack until `gfree::put`,
    // which drops the coroutine first.
    let stack = unsafe {
        StackRef::of(
            (*(*g).stack.get())
                .as_ref()
                .expect("a G owns a stack while it lives"),
        )
    };
    let co = Coroutine::with_stack(stack, move |y: &Yielder<(), Switch>, ()| {
        let g = gaddr as GRef;
        // SAFETY: the G outlives its coroutine (it is retired after the coroutine returns).
        unsafe { (*g).yielder.set(y) };
        let r = catch_unwind(AssertUnwindSafe(f));
        // Coroutine-locals are dropped here, on the coroutine, where they may still wait.
        // SAFETY: `g` is this coroutine's G, running here.
        unsafe { crate::local::drop_all(g) };
        // SAFETY: as above.
        let cancelled = unsafe { (*g).state() } == crate::coroutine::CANCELLED;
        match r {
            // Unwound by the runtime's drop (teardown.rs): the joiner hears `Cancelled`
            // (from `done`'s drop), and the unwinding goes on to the coroutine's root,
            // where corosensei expects it.
            Err(unwinding) if cancelled => {
                drop(done);
                std::panic::resume_unwind(unwinding);
            }
            r => done.complete(r.map_err(JoinError::Panicked)),
        }
    });
    // SAFETY: the G is not yet visible to any other M (a new record sits in `allgs`, where
    // nobody reads `co`).
    unsafe { *(*g).co.get() = Some(co) };
}
