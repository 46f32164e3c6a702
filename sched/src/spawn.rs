//! Spawning a coroutine (Go's `go f()`, `newproc`): `spawn`, `try_spawn`, the `Spawn`
//! builder and `Runtime::spawn`'s path, and how a spawn gets its G — a dead one reused with
//! its stack (gfree.rs) or a new record — puts the coroutine on it and queues it.

use core::panic::Location;
use core::sync::atomic::Ordering;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use corosensei::{Coroutine, Yielder};
use tessera_stacks::{PooledStack, StackError};

use crate::coroutine::{Birth, G, GRef, PENDING_BYTES, Pending, StackRef, Switch};
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

/// Makes a G around `f` and queues it, panicking without a stack. The stack of a plain
/// spawn whose closure waits in the record may be left to the G's first run (gfree.rs,
/// "Bare records").
#[track_caller]
pub(crate) fn spawn_in<T: Send + 'static>(
    sh: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
    name: Option<String>,
    stack_size: Option<usize>,
    site: &'static Location<'static>,
) -> JoinHandle<T> {
    make(sh, f, name, stack_size, site, true)
        .unwrap_or_else(|e| panic!("tessera_sched::spawn: no stack: {e}"))
}

/// Makes a G around `f` with its stack and queues it, or says why no stack could be had.
pub(crate) fn try_spawn_in<T: Send + 'static>(
    sh: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
    name: Option<String>,
    stack_size: Option<usize>,
    site: &'static Location<'static>,
) -> Result<JoinHandle<T>, StackError> {
    make(sh, f, name, stack_size, site, false)
}

/// Whether a spawn's closure, with its join completer, waits in the G record until the
/// first run (`G::pending`) rather than going onto the stack at the spawn.
const fn waits_in_record<T, F>() -> bool {
    size_of::<(F, Completer<T>)>() <= PENDING_BYTES
        && align_of::<(F, Completer<T>)>() <= align_of::<Pending>()
}

/// Makes a G around `f` and queues it (Go's `newproc`). `stack_later`: the G may go
/// without a stack until its first run, if its closure waits in the record, it asks for
/// nothing but the default stack, and stacks cost no VMA (`Shared::bare_records`).
#[inline(always)]
fn make<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    sh: &Arc<Shared>,
    f: F,
    name: Option<String>,
    stack_size: Option<usize>,
    site: &'static Location<'static>,
    stack_later: bool,
) -> Result<JoinHandle<T>, StackError> {
    let size = stack_size.unwrap_or(sh.stack_size);
    let p = machine::current_p(Arc::as_ptr(sh));
    let plain = size == sh.stack_size && name.is_none();
    let bare_ok = stack_later && sh.bare_records && plain && waits_in_record::<T, F>();
    let reused = match p {
        // SAFETY: `current_p` returned the P this thread holds.
        Some(p) if plain => unsafe { crate::gfree::get(sh, p, bare_ok) },
        _ => None,
    };
    // A new G's stack, taken before anything else so that a failure leaves nothing to undo;
    // none for a bare record.
    let stack = match reused {
        Some(_) => None,
        None if bare_ok => None,
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
        None => match stack {
            // SAFETY: a stack just taken from the pool or the P's cache: ours, and nothing
            // runs on it yet.
            Some(stack) => unsafe { new_record(sh, stack, name, birth()) },
            None => new_bare(sh, birth()),
        },
    };
    // SAFETY: the G is ours until queued below and has no coroutine (a new record, or a
    // dead one whose coroutine `gfree::put` dropped); it owns a stack unless `bare_ok`,
    // which the closure waits in the record for.
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
pub(crate) unsafe fn new_stack(
    sh: &Shared,
    p: Option<&P>,
    size: usize,
) -> Result<PooledStack, StackError> {
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
    let size = stack.usable_size();
    // From Tessera's per-P cache, whatever the program's global allocator (palloc.rs).
    let g = crate::palloc::new(G::new(Arc::as_ptr(sh), name, Some(stack), size, birth));
    // SAFETY: a record just made, not yet visible to anybody else.
    unsafe { register(sh, g.as_ptr()) }
}

/// A new record without a stack, registered in `allgs`: its first run gives it one of the
/// runtime's default size (gfree.rs `bind_stack`). Out of line, as `new_record`.
#[inline(never)]
fn new_bare(sh: &Arc<Shared>, birth: Birth) -> GRef {
    let g = crate::palloc::new(G::new(Arc::as_ptr(sh), None, None, sh.stack_class, birth));
    // SAFETY: a record just made, not yet visible to anybody else.
    unsafe { register(sh, g.as_ptr()) }
}

/// Puts a record just made into `allgs`, and returns it.
///
/// # Safety
/// `g` is a live record made by `palloc::new`, in no shard, not yet visible to anybody
/// else.
unsafe fn register(sh: &Shared, g: GRef) -> GRef {
    // SAFETY: per the contract: live, in no shard, and freed only through `gfree`, which
    // removes it first.
    unsafe { sh.allgs.insert(g) };
    g
}

/// Gives G `g` a coroutine running `f`; `done` completes the join when it returns.
///
/// A closure that fits waits in the G record (`G::pending`) and the coroutine is made on
/// the G's first run (`start`), so that a spawn does not touch the G's stack: with 10^5
/// coroutines alive, the stack's top line has left the cache again by the time the G runs,
/// and writing the coroutine's first frame there at the spawn cost a second miss on it
/// (issue #17). A larger closure goes onto the stack now, as corosensei puts it.
///
/// # Safety
/// `g` is a live G that nobody else touches yet (not queued) and has no coroutine, pending
/// or made; it owns a stack, unless the closure waits in the record (`waits_in_record`).
#[inline]
unsafe fn set_coroutine<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    g: GRef,
    f: F,
    done: Completer<T>,
) {
    if waits_in_record::<T, F>() {
        // SAFETY: the G is ours (per the contract) and its `pending` room is free (it has
        // no coroutine, so no `start` either); the pair fits it, size and alignment.
        unsafe {
            (*g).pending
                .get()
                .cast::<(F, Completer<T>)>()
                .write((f, done));
            (*g).start.set(Some(start::<T, F>));
        }
    } else {
        // SAFETY: per the contract.
        unsafe { make_coroutine(g, f, done) };
    }
}

/// `G::start` of a G whose closure waits in `pending` (`set_coroutine`): takes the closure
/// out and makes the coroutine on the G's stack if `run`, else drops it, which tells the
/// joiner `Cancelled` (the `Completer`'s drop), as dropping an unstarted coroutine does.
///
/// # Safety
/// `g` is live and touched by nobody else; its `start` was this function, with an
/// `(F, Completer<T>)` written to `pending`, and the caller has taken `start` (so this
/// runs once per spawn). If `run`, `g` owns a stack (a bare record was given one,
/// gfree.rs `bind_stack`).
unsafe fn start<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(g: GRef, run: bool) {
    // SAFETY: per the contract the pair is there, and read once.
    let (f, done) = unsafe { (*g).pending.get().cast::<(F, Completer<T>)>().read() };
    if run {
        // SAFETY: per the contract the G is ours, and has no coroutine yet.
        unsafe { make_coroutine(g, f, done) };
    }
}

/// Puts a coroutine running `f` on G `g`'s stack; `done` completes the join when it
/// returns.
///
/// # Safety
/// `g` is a live G that nobody else touches (not queued, or being started by the M that
/// took it off a queue): it owns a stack and has no coroutine.
#[inline(always)]
unsafe fn make_coroutine<T: Send + 'static>(
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
    // SAFETY: the G is not visible to any other M (a new record sits in `allgs`, where
    // nobody reads `co`; a started one was taken off a run queue by this M).
    unsafe { *(*g).co.get() = Some(co) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::JoinError;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops.
    struct Owned(Arc<AtomicUsize>);

    impl Drop for Owned {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes a G for `f` on the calling M's P as a spawn does, but queues it nowhere, and
    /// frees it unrun (what a runtime's drop does to a G that never ran, teardown.rs).
    /// Returns whether its closure waited in the record (`G::start`) and what its joiner
    /// heard.
    fn spawn_unrun<F: FnOnce() + Send + 'static>(f: F) -> (bool, Result<(), JoinError>) {
        with_current(move |sh| {
            let p = machine::current_p(Arc::as_ptr(sh)).expect("on an M of the runtime");
            // SAFETY: `p` is the P this thread holds.
            let stack = unsafe { new_stack(sh, Some(p), sh.stack_size) }.unwrap();
            let (done, handle, cancel) = crate::join::pair(u64::MAX);
            let birth = Birth {
                id: u64::MAX,
                born: 0,
                site: Location::caller(),
                cancel,
                labels: crate::labels::current(),
            };
            // SAFETY: a stack just taken from the P's cache.
            let g = unsafe { new_record(sh, stack, None, birth) };
            // SAFETY: a new record, queued nowhere: ours.
            unsafe { set_coroutine(g, f, done) };
            // SAFETY: as above.
            let pending = unsafe { (*g).start.get() }.is_some();
            // SAFETY: made by `new_record`, never queued or run; this thread holds `p`.
            unsafe { crate::gfree::free(sh, p, g) };
            (pending, handle.join())
        })
    }

    #[test]
    fn a_g_that_never_ran_drops_its_closure_once_and_cancels_its_join() {
        let rt = Runtime::builder().procs(1).build().unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let (small, large) = (Owned(drops.clone()), Owned(drops.clone()));
        let bulk = [7u64; 16];
        let (a, b) = rt.block_on(move || {
            let a = spawn_unrun(move || drop(small));
            let b = spawn_unrun(move || {
                std::hint::black_box(bulk);
                drop(large);
            });
            (a, b)
        });
        // The small closure waited in the record, the large one went onto the stack: both
        // ways, the closure is dropped once and the joiner hears `Cancelled`.
        assert!(a.0, "a closure of 8 bytes waits in the G record");
        assert!(!b.0, "a closure of 136 bytes goes onto the stack");
        assert!(matches!(a.1, Err(JoinError::Cancelled)));
        assert!(matches!(b.1, Err(JoinError::Cancelled)));
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn closures_in_the_record_and_on_the_stack_run_with_their_captures() {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let sums = rt.block_on(|| {
            // The record's room (`PENDING_BYTES`) is 48 bytes with the 8-byte completer:
            // captures of 8, 40 (just fits), 48 and 128 bytes, and one aligned to 16.
            let hs_small: Vec<_> = (0..100u64).map(|i| spawn(move || i)).collect();
            let hs_fit: Vec<_> = (0..100u64)
                .map(|i| spawn(move || [i; 5].iter().sum::<u64>()))
                .collect();
            let hs_over: Vec<_> = (0..100u64)
                .map(|i| spawn(move || [i; 6].iter().sum::<u64>()))
                .collect();
            let hs_big: Vec<_> = (0..100u64)
                .map(|i| spawn(move || [i; 16].iter().sum::<u64>()))
                .collect();
            let hs_wide: Vec<_> = (0..100u128)
                .map(|i| spawn(move || (i << 64 | i) as u64))
                .collect();
            let sum =
                |hs: Vec<JoinHandle<u64>>| hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
            [
                sum(hs_small),
                sum(hs_fit),
                sum(hs_over),
                sum(hs_big),
                sum(hs_wide),
            ]
        });
        let n = (0..100u64).sum::<u64>();
        assert_eq!(sums, [n, 5 * n, 6 * n, 16 * n, n]);
    }
}
