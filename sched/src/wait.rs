//! Wait tokens: how anything that blocks (channels, `select!`, sync primitives, joins,
//! timers) parks a coroutine — or a plain thread — and how exactly one party wakes it.
//!
//! A blocked waiter publishes an `Arc<Token>` in one or more wait queues (several for a
//! `select!`) and, for a deadline, in the timer heap. A waker must first *claim* the token
//! with one CAS on `selected` (Go's `selectDone` in select.go); only the winner writes its
//! result and calls `notify`, so a select is completed by exactly one arm and losers never
//! touch the waiter. The waiter leaves its wait only after a notification (`wait` never
//! returns just because it saw `selected` set), so the winner's `notify` is always done with
//! the G before the G can run on, finish and be freed.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::Arc;
use std::time::Instant;

use crate::coroutine::{GRef, WaitReason};
use crate::machine;

/// `selected` before anybody claimed the token.
pub(crate) const NONE: usize = usize::MAX;
/// The arm a deadline claims.
pub(crate) const TIMEOUT: usize = usize::MAX - 1;
/// The arm a runtime's drop claims for the coroutines it unwinds (teardown.rs): nobody
/// else may wake them from then on.
pub(crate) const CANCELLED: usize = usize::MAX - 2;

enum Who {
    G(GRef),
    Thread {
        thread: std::thread::Thread,
        notified: AtomicBool,
    },
}

/// One wait of one coroutine or thread.
pub(crate) struct Token {
    selected: AtomicUsize,
    who: Who,
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Token")
            .field("selected", &self.selected.load(Ordering::Relaxed))
            .finish()
    }
}

// SAFETY: the `GRef` is only dereferenced by `notify`, which only the claimant calls, while
// the G is guaranteed alive (it cannot leave `wait` before the notification); everything
// else is atomics and a `Thread` handle, which are Send + Sync.
unsafe impl Send for Token {}
// SAFETY: as above; shared access is through atomics only.
unsafe impl Sync for Token {}

impl Token {
    /// A token for the calling coroutine, or for the calling thread outside a runtime.
    ///
    /// A coroutine reuses its previous token when nobody else holds it any more (Go keeps
    /// `sudog`s on a per-P cache for the same reason): a channel hand-off would otherwise
    /// allocate and free one per wait. A token still held elsewhere — by a timer whose
    /// deadline has not passed, or by a claimant between its `notify` and its drop — may
    /// still be looked at, so it is left alone and a fresh one is made.
    pub(crate) fn for_current() -> Arc<Token> {
        match Token::for_current_wait() {
            WaitToken::Cached(t) => {
                // SAFETY: just returned by `for_current_wait`, with no wait in between.
                unsafe { (*t).clone() }
            }
            WaitToken::Own(t) => t,
        }
    }

    /// `for_current` for a wait that holds its token only in its own frame (channels,
    /// `select!`): a coroutine's token is lent from its cache instead of cloned, which
    /// saves the reference count's increment and decrement on every wait.
    #[inline]
    pub(crate) fn for_current_wait() -> WaitToken {
        let g = machine::current_g();
        if g.is_null() {
            return Token::for_thread();
        }
        // SAFETY: the running G is live, and only the G itself touches its token cache.
        let cache = unsafe { &mut *(*g).token.get() };
        match cache {
            Some(t) if !Token::shared_elsewhere(t) => {
                // The cache holds the only reference, and nobody can make another.
                t.selected.store(NONE, Ordering::Relaxed);
            }
            _ => Token::refill(cache, g),
        }
        let t: *const Arc<Token> = cache.as_ref().expect("filled just above");
        WaitToken::Cached(t)
    }

    /// A fresh token for the calling plain thread (`for_current_wait` off a coroutine).
    #[cold]
    #[inline(never)]
    fn for_thread() -> WaitToken {
        WaitToken::Own(Arc::new(Token {
            selected: AtomicUsize::new(NONE),
            who: Who::Thread {
                thread: std::thread::current(),
                notified: AtomicBool::new(false),
            },
        }))
    }

    /// Puts a fresh token for `g` in its cache, whose token (if any) is still held
    /// elsewhere (`for_current_wait`).
    #[cold]
    #[inline(never)]
    fn refill(cache: &mut Option<Arc<Token>>, g: GRef) {
        *cache = Some(Arc::new(Token {
            selected: AtomicUsize::new(NONE),
            who: Who::G(g),
        }));
    }

    /// Claims the token for `arm`; true if this caller won and must `notify`.
    #[inline]
    pub(crate) fn try_claim(&self, arm: usize) -> bool {
        self.selected
            .compare_exchange(NONE, arm, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether anybody but the holder of `this` may still use the token: a claimant between
    /// its claim and the end of its `notify`, or a wait queue or timer it is still on.
    #[inline]
    pub(crate) fn shared_elsewhere(this: &Arc<Token>) -> bool {
        // No `Weak` is ever made of a token, so a strong count of one means `this` is the
        // only reference, and nobody can make another. The acquire fence pairs with the
        // release decrement of the last other holder, so its uses of the token happen
        // before whatever the caller does next.
        let others = Arc::strong_count(this) > 1;
        fence(Ordering::Acquire);
        others
    }

    #[inline]
    pub(crate) fn selected(&self) -> usize {
        self.selected.load(Ordering::Acquire)
    }

    /// The runtime of the coroutine waiting on this token; `None` for a plain thread.
    ///
    /// # Safety
    /// A waiting G stays alive until this returns: the caller is the token's waiter, or the
    /// waiter cannot finish meanwhile (it is in its wait and the token unclaimed, or it must
    /// first take a lock the caller holds).
    #[inline]
    pub(crate) unsafe fn runtime(&self) -> Option<&'static crate::runtime::Shared> {
        match &self.who {
            // SAFETY: the G is alive (contract), and a runtime outlives its Gs (runtime.rs
            // leaks the shared state when Gs are left at shutdown).
            Who::G(g) => Some(unsafe { &*(**g).rt }),
            Who::Thread { .. } => None,
        }
    }

    /// Wakes the waiter, after the caller wrote whatever result the waiter will read (the
    /// wake-up is a release).
    ///
    /// # Safety
    /// The caller won `try_claim` on this token and has not notified it yet: only the
    /// winner may wake the waiter, once (a second wake-up could reach a G that has left its
    /// wait, finished and been freed).
    pub(crate) unsafe fn notify(&self) {
        debug_assert_ne!(self.selected(), NONE);
        match &self.who {
            // SAFETY: per the contract we won the token the G waits on, once.
            Who::G(g) => unsafe { machine::ready(*g) },
            // `self` may be freed by the waiter once notified; `wake_thread` uses its own
            // handle.
            Who::Thread { thread, notified } => wake_thread(thread, notified),
        }
    }

    /// Blocks until claimed and notified; returns the winning arm. Call only when some
    /// other party (not this waiter itself) claimed or may claim the token.
    ///
    /// # Safety
    /// The calling coroutine or thread is the token's waiter (`for_current` made it here).
    #[inline]
    pub(crate) unsafe fn wait(&self, reason: WaitReason) -> usize {
        match &self.who {
            Who::G(g) => loop {
                // SAFETY: per the contract, `g` is the coroutine running here.
                unsafe { machine::park_current(*g, reason) };
                let s = self.selected();
                if s != NONE {
                    return s;
                }
            },
            Who::Thread { notified, .. } => Token::wait_thread(notified, &self.selected),
        }
    }

    /// `wait` for a plain thread: parks it until `notified`; returns the winning arm.
    #[cold]
    #[inline(never)]
    fn wait_thread(notified: &AtomicBool, selected: &AtomicUsize) -> usize {
        while !notified.load(Ordering::Acquire) {
            std::thread::park();
        }
        selected.load(Ordering::Acquire)
    }

    /// `wait` with a deadline: a timer (timer.rs) claims `TIMEOUT` when it passes.
    ///
    /// # Safety
    /// The calling coroutine or thread is the token's waiter (`for_current` made it here).
    #[inline]
    pub(crate) unsafe fn wait_until(
        self: &Arc<Self>,
        reason: WaitReason,
        deadline: Option<Instant>,
    ) -> usize {
        if let Some(d) = deadline {
            // SAFETY: per the contract the caller is the waiter.
            unsafe { crate::timer::add_wake(d, self.clone()) };
        }
        // SAFETY: per the contract.
        unsafe { self.wait(reason) }
    }
}

/// The token of one wait (`Token::for_current_wait`): a coroutine's is lent from the
/// coroutine's cache, a plain thread's is its own.
///
/// A lent token stays valid until the same coroutine asks for a token again (the only
/// writer of its cache), which it cannot do while it holds this: keep it within the frame
/// of the one wait it was made for (it is neither `Send` nor `Clone`).
pub(crate) enum WaitToken {
    Cached(*const Arc<Token>),
    Own(Arc<Token>),
}

impl core::fmt::Debug for WaitToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&**self, f)
    }
}

impl core::ops::Deref for WaitToken {
    type Target = Arc<Token>;

    fn deref(&self) -> &Arc<Token> {
        match self {
            // SAFETY: the cache slot outlives this handle and is not written meanwhile
            // (the type's comment): only `for_current_wait` of its coroutine writes it.
            WaitToken::Cached(t) => unsafe { &**t },
            WaitToken::Own(t) => t,
        }
    }
}

/// A token its claimant won (`try_claim`) while taking a waiter off a channel queue under
/// the channel's lock, to notify once that lock is released.
///
/// Usually a plain pointer: the waiter holds the token's `Arc` for the whole wait, and a
/// won wait does not end before the claimant's notification, so the claimant needs no
/// reference count of its own (two atomic read-modify-writes fewer per hand-off). The
/// exception is a claimant that is not an M of the waiter's runtime (a plain thread, or a
/// coroutine of another runtime): that runtime's teardown may look at the G while the
/// claimant is still in `ready`, and it leaves alone a G whose token is `shared_elsewhere`,
/// so such a claimant holds a count until its `notify` is over, as before. An M of the same
/// runtime needs none: teardown starts only after every M has stopped.
pub(crate) struct Claimed {
    token: core::ptr::NonNull<Token>,
    /// Whether this claimant holds a strong count of the token's `Arc`.
    counted: bool,
    /// For a coroutine's token, the P the claimant's M holds in the waiter's runtime
    /// (`current_p`): looked up once, by `new`, for the wake-up too.
    here: Option<&'static crate::processor::P>,
}

impl core::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Claimed")
            .field("counted", &self.counted)
            .finish()
    }
}

impl Claimed {
    /// # Safety
    /// The caller just won `try_claim` on `token`, which lives in an `Arc` (every token
    /// does: `for_current`) that its waiter holds until it is notified; the caller notifies
    /// the result exactly once, on this thread and before it waits, yields or blocks (the
    /// P looked up here is the one the wake-up queues on).
    #[inline]
    pub(crate) unsafe fn new(token: &Token) -> Self {
        // SAFETY: the waiter is in its wait and cannot leave it before our notification
        // (contract), so its G is alive.
        let (here, same_runtime) = match unsafe { token.runtime() } {
            Some(rt) => {
                let here = machine::current_p(rt);
                (here, here.is_some())
            }
            None => (None, true),
        };
        if !same_runtime {
            // SAFETY: `token` points into an `Arc` that is alive (its waiter holds it).
            unsafe { Arc::increment_strong_count(token) };
        }
        Claimed {
            token: core::ptr::NonNull::from(token),
            counted: !same_runtime,
            here,
        }
    }

    /// Wakes the waiter (after the caller wrote the result the waiter will read).
    ///
    /// # Safety
    /// Called once per `Claimed` (`new`'s contract), which `self` by value enforces; the
    /// unsafety is `new`'s promise that the waiter still holds the token.
    #[inline]
    pub(crate) unsafe fn notify(self) {
        let t = self.token.as_ptr().cast_const();
        if self.counted {
            // SAFETY: our own count keeps the token alive through `notify`, and we won it;
            // the count is the one `new` took, given back once.
            unsafe {
                (*t).notify();
                Arc::decrement_strong_count(t);
            }
            return;
        }
        // SAFETY: the waiter holds the token until woken (`new`), and we have not woken it.
        debug_assert_ne!(unsafe { (*t).selected() }, NONE);
        // The waiter may free the token as soon as it is woken, so nothing here may refer
        // to it once the wake-up is sent: copy out what the wake-up needs first.
        // SAFETY: as above, alive until the wake-up below.
        match unsafe { &(*t).who } {
            Who::G(g) => {
                let g = *g;
                // SAFETY: we won the token this G waits on, and wake it once; not counted,
                // so `here` is `current_p` of its runtime (`new`), and this thread has not
                // switched since (a claimant notifies before it waits again).
                unsafe { machine::ready_from(g, Some(self.here)) };
            }
            Who::Thread { thread, notified } => wake_thread(thread, notified),
        }
    }
}

/// Wakes a plain thread waiting on a token it can free as soon as `notified` is set: the
/// handle is cloned first.
#[cold]
#[inline(never)]
fn wake_thread(thread: &std::thread::Thread, notified: &AtomicBool) {
    let thread = thread.clone();
    notified.store(true, Ordering::Release);
    thread.unpark();
}

/// A FIFO of waiters for the sync primitives: a plain deque guarded by the primitive's own
/// lock. Stale tokens (claimed by a deadline) are skipped by `wake_one`.
#[derive(Debug)]
pub(crate) struct WaitList {
    q: std::collections::VecDeque<Arc<Token>>,
}

impl WaitList {
    pub(crate) const fn new() -> Self {
        Self {
            q: std::collections::VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, t: Arc<Token>) {
        self.q.push_back(t);
    }

    /// Claims the first waiter still waiting and returns it for the caller to `notify`
    /// after dropping its lock.
    pub(crate) fn claim_one(&mut self) -> Option<Arc<Token>> {
        while let Some(t) = self.q.pop_front() {
            if t.try_claim(0) {
                return Some(t);
            }
        }
        None
    }

    /// Claims every waiter.
    pub(crate) fn claim_all(&mut self) -> Vec<Arc<Token>> {
        self.q.drain(..).filter(|t| t.try_claim(0)).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

impl Default for WaitList {
    fn default() -> Self {
        Self::new()
    }
}
