//! `JoinHandle`: waiting for a coroutine's result.
//!
//! A join state has one completer (the coroutine, or the runtime's shutdown) and one
//! handle (`join` takes it by value), and both own it: one state word says how far each
//! side has got, so neither a lock nor a reference count is needed.
//!
//! - `DONE`: the result is written (published by the transition).
//! - `WAITING`: the joiner wrote who it is into `waiter` and waits to be woken.
//! - `TASK_GONE`: the completer is done with the state; `HANDLE_GONE`: the handle is.
//!   Whoever sets the second of the two frees the state.
//!
//! In the common case the completer finds no joiner waiting and sets `DONE | TASK_GONE`
//! in one compare-and-swap; the joiner then sees both, takes the result and frees the
//! state with no atomic read-modify-write at all. (An `Arc` and two flags took six.) With
//! a joiner waiting, the completer publishes `DONE`, wakes it and only then sets
//! `TASK_GONE`, so a thread joiner woken early cannot free the state under it.
//!
//! A joining G waits on its wait `Token` (wait.rs) like any other waiter, though only the
//! completer can wake it: the token it claims is what keeps anybody from touching the G
//! once the runtime that is being dropped has claimed it first (teardown.rs). The token is
//! the G's cached one, so a join that parks allocates nothing. A joining thread is
//! unparked directly.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};
use std::any::Any;

use std::sync::Arc;

use crate::coroutine::WaitReason;
use crate::wait::Token;

const DONE: u8 = 1;
const WAITING: u8 = 2;
const TASK_GONE: u8 = 4;
const HANDLE_GONE: u8 = 8;

/// Why `JoinHandle::join` has no value.
pub enum JoinError {
    /// The coroutine panicked; the payload is inside.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The runtime shut down before the coroutine finished.
    Cancelled,
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("<non-string payload>");
                write!(f, "Panicked({msg:?})")
            }
            JoinError::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f.write_str("coroutine panicked"),
            JoinError::Cancelled => f.write_str("runtime shut down before the coroutine finished"),
        }
    }
}

impl std::error::Error for JoinError {}

impl JoinError {
    /// Whether the coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }
}

/// Lets the runtime fail a join without knowing `T`: the join state and a function that
/// completes it with `JoinError::Cancelled`. Raw pointers, not `&dyn Trait`, because the
/// call may free the state it points to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CancelHook {
    state: *const (),
    run: unsafe fn(*const ()),
}

impl CancelHook {
    /// Completes the join with `JoinError::Cancelled` on behalf of a completer that will
    /// never run again.
    ///
    /// # Safety
    /// The completer's coroutine has not completed the join and never will (the runtime
    /// shut down with it parked, and leaks it): this call takes over its share.
    pub(crate) unsafe fn cancel(self) {
        // SAFETY: per the contract.
        unsafe { (self.run)(self.state) }
    }

    /// Where the join state is: the line its completer writes (a prefetch hint's address).
    pub(crate) fn state_addr(self) -> usize {
        self.state as usize
    }
}

/// Who waits in `join`.
enum Joiner {
    None,
    G(Arc<Token>),
    Thread(std::thread::Thread),
}

struct JoinState<T> {
    state: AtomicU8,
    /// Written once by the completer before it publishes DONE.
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    /// Written by the joiner before it publishes WAITING.
    waiter: UnsafeCell<Joiner>,
}

// SAFETY: the cells are handed over by the state transitions (see the file comment); T
// crosses threads once, so T: Send suffices. The joiner's token is only used by the
// completer to wake that G, which cannot leave its park before.
unsafe impl<T: Send> Sync for JoinState<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for JoinState<T> {}

/// A new join state: the coroutine's side, the handle, and the shutdown hook (valid while
/// the completer has not completed).
pub(crate) fn pair<T: Send + 'static>(id: u64) -> (Completer<T>, JoinHandle<T>, CancelHook) {
    // From Tessera's per-P cache, whatever the program's global allocator (palloc.rs).
    let state = crate::palloc::new(JoinState::<T> {
        state: AtomicU8::new(0),
        result: UnsafeCell::new(None),
        waiter: UnsafeCell::new(Joiner::None),
    });
    /// # Safety
    /// As `CancelHook::cancel`; `p` is the state of a `JoinState<T>`.
    unsafe fn cancel<T>(p: *const ()) {
        // SAFETY: per the contract we hold the completer's share of a live state.
        unsafe {
            JoinState::complete(
                NonNull::new_unchecked(p.cast::<JoinState<T>>().cast_mut()),
                Err(JoinError::Cancelled),
            )
        };
    }
    let hook = CancelHook {
        state: state.as_ptr().cast_const().cast(),
        run: cancel::<T>,
    };
    (
        Completer {
            state,
            _owns: PhantomData,
        },
        JoinHandle {
            state,
            id,
            _owns: PhantomData,
        },
        hook,
    )
}

impl<T> JoinState<T> {
    /// Publishes `r` and gives up the completer's share.
    ///
    /// # Safety
    /// `this` is live and the caller holds the completer's share (once per state).
    unsafe fn complete(this: NonNull<Self>, r: Result<T, JoinError>) {
        // SAFETY: per the contract the completer's share keeps it alive.
        let st = unsafe { this.as_ref() };
        let mut s = st.state.load(Ordering::Acquire);
        debug_assert_eq!(s & (DONE | TASK_GONE), 0, "a join completed twice");
        // SAFETY: only the completer writes `result`, and the handle reads it only after
        // seeing DONE, published below (release).
        unsafe { *st.result.get() = Some(r) };
        while s & WAITING == 0 {
            match st.state.compare_exchange_weak(
                s,
                s | DONE | TASK_GONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if s & HANDLE_GONE != 0 {
                        // SAFETY: the handle is gone and so are we: the last share.
                        unsafe { Self::free(this) };
                    }
                    return;
                }
                Err(now) => s = now,
            }
        }
        // A joiner waits: it wrote the cell before publishing WAITING (release), which our
        // load acquired; it does not touch the cell again.
        // SAFETY: as said; the state stays alive until we set TASK_GONE.
        let waiter = unsafe { core::mem::replace(&mut *st.waiter.get(), Joiner::None) };
        st.state.fetch_or(DONE, Ordering::AcqRel);
        match waiter {
            // The G stays parked until this wake-up, so it is alive; a runtime being
            // dropped may have claimed the token first, and then it is not ours to wake.
            Joiner::G(token) => {
                if token.try_claim(0) {
                    // SAFETY: claimed just above; notified once, here.
                    unsafe { token.notify() };
                }
            }
            Joiner::Thread(t) => t.unpark(),
            Joiner::None => unreachable!("a waiting joiner says who it is"),
        }
        if st.state.fetch_or(TASK_GONE, Ordering::AcqRel) & HANDLE_GONE != 0 {
            // SAFETY: the handle is gone and so are we.
            unsafe { Self::free(this) };
        }
    }

    /// # Safety
    /// Both shares are given up, so the caller is the only one left.
    unsafe fn free(this: NonNull<Self>) {
        // SAFETY: allocated by `pair` with `palloc::new`; nobody else refers to it.
        unsafe { crate::palloc::free(this) };
    }
}

/// The coroutine's side of a join: completing it consumes it.
pub(crate) struct Completer<T> {
    state: NonNull<JoinState<T>>,
    _owns: PhantomData<JoinState<T>>,
}

// SAFETY: it hands a `T` to the handle's thread once; JoinState<T> is Send for T: Send.
unsafe impl<T: Send> Send for Completer<T> {}

impl<T> Completer<T> {
    pub(crate) fn complete(self, r: Result<T, JoinError>) {
        let this = ManuallyDrop::new(self);
        // SAFETY: the completer's share, given up once (`self` is consumed).
        unsafe { JoinState::complete(this.state, r) };
    }
}

impl<T> Drop for Completer<T> {
    /// A coroutine dropped before it completed (it never ran): its joiner hears of it.
    fn drop(&mut self) {
        // SAFETY: the completer's share, given up once.
        unsafe { JoinState::complete(self.state, Err(JoinError::Cancelled)) };
    }
}

/// Owns the right to wait for a coroutine's result. Dropping it detaches the coroutine.
pub struct JoinHandle<T> {
    state: NonNull<JoinState<T>>,
    id: u64,
    _owns: PhantomData<JoinState<T>>,
}

// SAFETY: the handle receives a `T` from the coroutine's thread: T: Send suffices, as for
// std's JoinHandle. It gives no shared access to the `T`.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only reads the state word and the id.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.id).finish()
    }
}

impl<T> JoinHandle<T> {
    fn st(&self) -> &JoinState<T> {
        // SAFETY: the handle's share keeps the state alive.
        unsafe { self.state.as_ref() }
    }

    /// Takes the result (after DONE was seen) and gives up the handle's share.
    fn finish(self) -> Result<T, JoinError> {
        let this = ManuallyDrop::new(self);
        // SAFETY: DONE was observed (acquire), so the completer's write is visible and it
        // will not write again; the handle is consumed, so nobody else reads.
        let r = unsafe { (*this.st().result.get()).take() }
            .expect("a finished coroutine left a result");
        // SAFETY: the handle's share, given up once.
        unsafe { release_handle(this.state) };
        r
    }

    /// Waits for the coroutine (parking the calling coroutine, or blocking the calling
    /// thread outside the runtime). `Err` if it panicked or the runtime shut down first.
    pub fn join(self) -> Result<T, JoinError> {
        let st = self.st();
        if st.state.load(Ordering::Acquire) & DONE != 0 {
            return self.finish();
        }
        let g = crate::machine::current_g();
        if !g.is_null() {
            // Yield once before parking: in the common fan-out/fan-in shape (spawn many,
            // join each) the target is usually still queued behind us, and one trip through
            // the run queue lets it and its siblings finish, so the joins that follow find
            // them done instead of each paying a park and a wake-up.
            crate::machine::yield_now();
            if st.state.load(Ordering::Acquire) & DONE != 0 {
                return self.finish();
            }
        }
        let token = (!g.is_null()).then(Token::for_current);
        let me = match &token {
            None => Joiner::Thread(std::thread::current()),
            Some(t) => Joiner::G(t.clone()),
        };
        // SAFETY: until we publish WAITING, the completer does not read the cell.
        unsafe { *st.waiter.get() = me };
        if st
            .state
            .compare_exchange(0, WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Finished meanwhile (the only other change the word can see while we hold
            // the handle): nobody will read the cell.
            // SAFETY: the completer saw no WAITING, so it does not touch the cell.
            unsafe { *st.waiter.get() = Joiner::None };
            return self.finish();
        }
        match token {
            None => {
                // `park` may return spuriously; DONE (acquire) is the completer's word.
                while st.state.load(Ordering::Acquire) & DONE == 0 {
                    std::thread::park();
                }
            }
            // Only the completer claims the token, after publishing DONE.
            Some(t) => {
                // SAFETY: `for_current` made the token for this coroutine, above.
                unsafe { t.wait(WaitReason::Join) };
            }
        }
        self.finish()
    }

    /// Whether the coroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.st().state.load(Ordering::Acquire) & DONE != 0
    }

    /// The coroutine's id (as in `dump()`).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Drop for JoinHandle<T> {
    /// Detaches the coroutine: its result is dropped when it completes.
    fn drop(&mut self) {
        // SAFETY: the handle's share, given up once (`finish` skips this drop).
        unsafe { release_handle(self.state) };
    }
}

/// Gives up the handle's share of a join state, freeing it if the completer is gone too.
///
/// # Safety
/// The caller holds the handle's share and does not use `state` afterwards.
unsafe fn release_handle<T>(state: NonNull<JoinState<T>>) {
    // SAFETY: the handle's share keeps it alive until given up below.
    let st = unsafe { state.as_ref() };
    // The completer sets TASK_GONE last and never looks again, so if it is set (acquire)
    // nobody else can touch the state: free it without a read-modify-write.
    if st.state.load(Ordering::Acquire) & TASK_GONE != 0
        || st.state.fetch_or(HANDLE_GONE, Ordering::AcqRel) & TASK_GONE != 0
    {
        // SAFETY: both shares are given up.
        unsafe { JoinState::free(state) };
    }
}
