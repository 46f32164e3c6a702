//! `JoinHandle`: waiting for a coroutine's result.
//!
//! A join has one completer (the coroutine, or the runtime's shutdown) and at most one
//! joiner (`join` takes the handle by value), so a three-state word replaces a lock:
//! EMPTY → DONE when the coroutine finishes first, EMPTY → WAITING → DONE when the joiner
//! parks first. The result and the joiner's identity live in cells whose hand-over is
//! ordered by those transitions.
//!
//! With one possible waker, a join needs no wait `Token` (wait.rs): nobody competes for the
//! wake-up, so the completer readies the joining G (or unparks the joining thread) directly.
//! The joining G parks until that wake-up, as a token waiter does, so the completer is done
//! with the G before it can run on.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::any::Any;
use std::sync::Arc;

use crate::coroutine::{GRef, WaitReason};

const EMPTY: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;

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

/// Lets the runtime fail a join without knowing `T`.
pub(crate) trait Cancel: Send + Sync {
    fn cancel(&self);
}

/// Who waits in `join`.
enum Joiner {
    None,
    G(GRef),
    Thread(std::thread::Thread),
}

pub(crate) struct JoinState<T> {
    state: AtomicU8,
    completing: AtomicBool,
    /// Written once by the completer before it publishes DONE.
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    /// Written by the joiner before it publishes WAITING.
    waiter: UnsafeCell<Joiner>,
}

// SAFETY: the cells are handed over by the state transitions (see the file comment); T
// crosses threads once, so T: Send suffices. The joiner's `GRef` is only used by the
// completer to ready that G, which cannot leave its park before.
unsafe impl<T: Send> Sync for JoinState<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for JoinState<T> {}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            completing: AtomicBool::new(false),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(Joiner::None),
        }
    }

    pub(crate) fn complete(&self, r: Result<T, JoinError>) {
        if self.completing.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: only the one completer (guarded by `completing`) writes `result`, and the
        // joiner reads it only after seeing DONE, published below.
        unsafe { *self.result.get() = Some(r) };
        if self.state.swap(DONE, Ordering::AcqRel) == WAITING {
            // SAFETY: the joiner wrote the cell before publishing WAITING (release), which
            // our swap acquired; it does not touch the cell again.
            match unsafe { core::mem::replace(&mut *self.waiter.get(), Joiner::None) } {
                // The G stays parked until this wake-up, so it is alive.
                Joiner::G(g) => crate::machine::ready(g),
                // Our own handle: the joiner may be gone as soon as it sees DONE.
                Joiner::Thread(t) => t.unpark(),
                Joiner::None => unreachable!("a waiting joiner says who it is"),
            }
        }
    }
}

impl<T: Send> Cancel for JoinState<T> {
    fn cancel(&self) {
        self.complete(Err(JoinError::Cancelled));
    }
}

/// Owns the right to wait for a coroutine's result. Dropping it detaches the coroutine.
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
    id: u64,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.id).finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(state: Arc<JoinState<T>>, id: u64) -> Self {
        Self { state, id }
    }

    fn take(&self) -> Result<T, JoinError> {
        // SAFETY: called after observing DONE (acquire), so the completer's write is visible
        // and it will not write again; the handle is consumed, so nobody else reads.
        unsafe { (*self.state.result.get()).take() }.expect("a finished coroutine left a result")
    }

    /// Waits for the coroutine (parking the calling coroutine, or blocking the calling
    /// thread outside the runtime). `Err` if it panicked or the runtime shut down first.
    pub fn join(self) -> Result<T, JoinError> {
        let st = &self.state;
        if st.state.load(Ordering::Acquire) == DONE {
            return self.take();
        }
        let g = crate::machine::current_g();
        if !g.is_null() {
            // Yield once before parking: in the common fan-out/fan-in shape (spawn many,
            // join each) the target is usually still queued behind us, and one trip through
            // the run queue lets it and its siblings finish, so the joins that follow find
            // them done instead of each paying a park and a wake-up.
            crate::machine::yield_now();
            if st.state.load(Ordering::Acquire) == DONE {
                return self.take();
            }
        }
        let me = if g.is_null() {
            Joiner::Thread(std::thread::current())
        } else {
            Joiner::G(g)
        };
        // SAFETY: until we publish WAITING, the completer does not read the cell.
        unsafe { *st.waiter.get() = me };
        if st
            .state
            .compare_exchange(EMPTY, WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Finished meanwhile: nobody will read the cell.
            // SAFETY: the completer saw EMPTY, so it does not touch the cell.
            unsafe { *st.waiter.get() = Joiner::None };
            return self.take();
        }
        if g.is_null() {
            // `park` may return spuriously; DONE (acquire) is the completer's word.
            while st.state.load(Ordering::Acquire) != DONE {
                std::thread::park();
            }
        } else {
            // Only the completer readies this park, after publishing DONE (Go's gopark
            // returns only on goready, too); loop all the same, as `Token::wait` does.
            loop {
                crate::machine::park_current(WaitReason::Join);
                if st.state.load(Ordering::Acquire) == DONE {
                    break;
                }
            }
        }
        self.take()
    }

    /// Whether the coroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.state.state.load(Ordering::Acquire) == DONE
    }

    /// The coroutine's id (as in `dump()`).
    pub fn id(&self) -> u64 {
        self.id
    }
}
