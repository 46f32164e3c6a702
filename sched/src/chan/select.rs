//! `select!` over send and receive arms (Go's selectgo, in crossbeam-channel's syntax).
//!
//! 1. Lock every channel of the select once, in address order (no deadlock between two
//!    selects over the same channels; Go's `sellock`).
//! 2. Visit the arms in a random order and complete the first that can go now: this picks
//!    uniformly among the ready arms. A closed channel is ready (its receive yields `Err`).
//! 3. Nothing ready: with `default`, unlock and take it. Otherwise enqueue one waiter per
//!    arm, all sharing one token, unlock, and wait (with the deadline, if any). Because all
//!    the locks were held while enqueuing, nobody could claim the token half-way.
//! 4. Whoever claims the token completes that arm; the select then dequeues its other
//!    waiters.
//!
//! The macro builds a tuple of arm objects and indexes it with literal indices, so every
//! channel and value expression is evaluated exactly once, in order.

use core::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use super::{Receiver, RecvError, RecvTry, SendError, SendTry, Sender, Waiter};
use crate::coroutine::WaitReason;
use crate::wait::{TIMEOUT, Token};

/// Tokens to notify once the select's locks are released.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Wakeups(Vec<Arc<Token>>);

/// The select's shared wait token.
#[doc(hidden)]
#[derive(Debug)]
pub struct SelectToken(Arc<Token>);

/// One arm of a `select!`. Implementation detail of the macro.
#[doc(hidden)]
pub trait Arm {
    fn chan_addr(&self) -> usize;
    fn lock(&self);
    fn unlock(&self);
    /// With the lock held: completes the arm if it can go now.
    fn try_locked(&mut self, wake: &mut Wakeups) -> bool;
    /// With the lock held: enqueues a waiter for `token`.
    fn register_locked(&mut self, token: &SelectToken, arm: usize);
    /// Dequeues the waiter (takes the lock itself).
    fn unregister(&mut self);
    /// After the token was claimed for this arm: collects the result.
    fn complete(&mut self);
}

/// A receive arm. While registered, its channel's queue points at `slot` and `closed`
/// (`Waiter`); `run` keeps the arms borrowed, so they stay put until it has unregistered
/// them or a claimant has popped them.
#[doc(hidden)]
pub struct RecvArm<'a, T> {
    rx: &'a Receiver<T>,
    slot: Option<T>,
    closed: Cell<bool>,
    registered: bool,
    result: Option<Result<T, RecvError>>,
}

/// A send arm; while registered, its channel's queue points at `value` and `closed`.
#[doc(hidden)]
pub struct SendArm<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
    closed: Cell<bool>,
    registered: bool,
    result: Option<Result<(), SendError<T>>>,
}

impl<T> core::fmt::Debug for RecvArm<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RecvArm")
    }
}

impl<T> core::fmt::Debug for SendArm<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SendArm")
    }
}

#[doc(hidden)]
pub fn recv_arm<T>(rx: &Receiver<T>) -> RecvArm<'_, T> {
    RecvArm {
        rx,
        slot: None,
        closed: Cell::new(false),
        registered: false,
        result: None,
    }
}

#[doc(hidden)]
pub fn send_arm<T>(tx: &Sender<T>, v: T) -> SendArm<'_, T> {
    SendArm {
        tx,
        value: Some(v),
        closed: Cell::new(false),
        registered: false,
        result: None,
    }
}

impl<T> RecvArm<'_, T> {
    #[doc(hidden)]
    pub fn take(&mut self) -> Result<T, RecvError> {
        self.result.take().expect("the selected arm has a result")
    }
}

impl<T> SendArm<'_, T> {
    #[doc(hidden)]
    pub fn take(&mut self) -> Result<(), SendError<T>> {
        self.result.take().expect("the selected arm has a result")
    }
}

impl<T> Arm for RecvArm<'_, T> {
    fn chan_addr(&self) -> usize {
        Arc::as_ptr(&self.rx.chan) as usize
    }
    fn lock(&self) {
        self.rx.chan.lock();
    }
    fn unlock(&self) {
        self.rx.chan.unlock();
    }
    fn try_locked(&mut self, wake: &mut Wakeups) -> bool {
        // SAFETY: `select` holds this channel's lock while calling us.
        match unsafe { self.rx.chan.try_recv_locked() } {
            RecvTry::Done(v, n) => {
                wake.0.extend(n);
                self.result = Some(Ok(v));
                true
            }
            RecvTry::Closed => {
                self.result = Some(Err(RecvError));
                true
            }
            RecvTry::Empty => false,
        }
    }
    fn register_locked(&mut self, token: &SelectToken, arm: usize) {
        // SAFETY: `select` holds this channel's lock while calling us; the arm stays put
        // and is unregistered or popped before `run` returns (see `RecvArm`).
        unsafe {
            self.rx.chan.push_waiter(
                Waiter::new(token.0.clone(), arm, &mut self.slot, &self.closed),
                false,
            )
        };
        self.registered = true;
    }
    fn unregister(&mut self) {
        if core::mem::take(&mut self.registered) {
            self.rx.chan.remove_waiter(&mut self.slot, false);
        }
    }
    fn complete(&mut self) {
        // The claimant popped our waiter.
        self.registered = false;
        if self.closed.get() {
            self.result = Some(Err(RecvError));
        } else {
            let v = self.slot.take().expect("a selected receive has a value");
            self.result = Some(Ok(v));
        }
    }
}

impl<T> Arm for SendArm<'_, T> {
    fn chan_addr(&self) -> usize {
        Arc::as_ptr(&self.tx.chan) as usize
    }
    fn lock(&self) {
        self.tx.chan.lock();
    }
    fn unlock(&self) {
        self.tx.chan.unlock();
    }
    fn try_locked(&mut self, wake: &mut Wakeups) -> bool {
        let v = self.value.take().expect("a send arm has its value");
        // SAFETY: `select` holds this channel's lock while calling us.
        match unsafe { self.tx.chan.try_send_locked(v) } {
            SendTry::Done(n) => {
                wake.0.extend(n);
                self.result = Some(Ok(()));
                true
            }
            SendTry::Closed(v) => {
                self.result = Some(Err(SendError(v)));
                true
            }
            SendTry::Full(v) => {
                self.value = Some(v);
                false
            }
        }
    }
    fn register_locked(&mut self, token: &SelectToken, arm: usize) {
        // SAFETY: as for `RecvArm::register_locked`; the value waits in `self.value`.
        unsafe {
            self.tx.chan.push_waiter(
                Waiter::new(token.0.clone(), arm, &mut self.value, &self.closed),
                true,
            )
        };
        self.registered = true;
    }
    fn unregister(&mut self) {
        // Our token went to another arm: the value stays with us.
        if core::mem::take(&mut self.registered) {
            self.tx.chan.remove_waiter(&mut self.value, true);
        }
    }
    fn complete(&mut self) {
        self.registered = false;
        if self.closed.get() {
            let v = self
                .value
                .take()
                .expect("value still in a send woken by close");
            self.result = Some(Err(SendError(v)));
        } else {
            self.result = Some(Ok(()));
        }
    }
}

/// How a select may end without an arm.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Wait for an arm.
    Block,
    /// `default =>`: take it if no arm is ready.
    Default,
    /// `default(timeout) =>`: wait until the deadline.
    Deadline(Instant),
}

/// The arm index chosen, or `usize::MAX` for `default`.
#[doc(hidden)]
pub fn run(arms: &mut [&mut dyn Arm], mode: Mode) -> usize {
    let n = arms.len();
    // Lock order: by channel address, each channel once.
    let mut by_addr: Vec<usize> = (0..n).collect();
    by_addr.sort_by_key(|&i| arms[i].chan_addr());
    by_addr.dedup_by_key(|i| arms[*i].chan_addr());
    let lock_all = |arms: &mut [&mut dyn Arm]| {
        for &i in &by_addr {
            arms[i].lock();
        }
    };
    let unlock_all = |arms: &mut [&mut dyn Arm]| {
        for &i in by_addr.iter().rev() {
            arms[i].unlock();
        }
    };
    // A random permutation (Fisher-Yates): the first ready arm in it is uniform among the
    // ready ones (Go's pollorder).
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (crate::machine::fastrand() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut wake = Wakeups::default();
    lock_all(arms);
    for &i in &order {
        if arms[i].try_locked(&mut wake) {
            unlock_all(arms);
            for t in wake.0 {
                t.notify();
            }
            return i;
        }
    }
    let deadline = match mode {
        Mode::Default => {
            unlock_all(arms);
            return usize::MAX;
        }
        Mode::Deadline(d) if Instant::now() >= d => {
            unlock_all(arms);
            return usize::MAX;
        }
        Mode::Deadline(d) => Some(d),
        Mode::Block => None,
    };
    let token = SelectToken(Token::for_current());
    for &i in &order {
        arms[i].register_locked(&token, i);
    }
    let token = token.0;
    unlock_all(arms);
    let sel = token.wait_until(WaitReason::Select, deadline);
    for (i, arm) in arms.iter_mut().enumerate() {
        if i != sel {
            arm.unregister();
        }
    }
    if sel == TIMEOUT {
        return usize::MAX;
    }
    arms[sel].complete();
    sel
}

/// Waits on several channel operations and runs the one that completes, chosen uniformly at
/// random among those ready. crossbeam-channel's syntax:
///
/// ```
/// # use tessera_sched::{chan, select};
/// # use std::time::Duration;
/// let (s1, r1) = chan::bounded::<i32>(1);
/// let (s2, r2) = chan::bounded::<i32>(1);
/// s1.send(1).unwrap();
/// select! {
///     recv(r1) -> msg => assert_eq!(msg, Ok(1)),
///     send(s2, 2) -> res => res.unwrap(),
///     default(Duration::from_millis(10)) => {}
/// }
/// ```
///
/// Arms: `recv(r) -> pat => body`, `send(s, v) -> pat => body`, and at most one of
/// `default => body` (run if nothing is ready now) or `default(timeout) => body`.
#[macro_export]
macro_rules! select {
    ($($t:tt)*) => {
        $crate::__select_parse!(
            [] [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
            () $($t)*
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // recv arms
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) recv($r:expr) -> $p:pat => $b:block $(,)? $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)* ($i recv ($r) $p => $b)] [$($is)*] ($($def)*) $($rest)*)
    };
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) recv($r:expr) -> $p:pat => $b:expr, $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)* ($i recv ($r) $p => { $b })] [$($is)*] ($($def)*) $($rest)*)
    };
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) recv($r:expr) -> $p:pat => $b:expr) => {
        $crate::__select_parse!([$($arms)* ($i recv ($r) $p => { $b })] [$($is)*] ($($def)*))
    };
    // send arms
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) send($s:expr, $v:expr) -> $p:pat => $b:block $(,)? $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)* ($i send ($s, $v) $p => $b)] [$($is)*] ($($def)*) $($rest)*)
    };
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) send($s:expr, $v:expr) -> $p:pat => $b:expr, $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)* ($i send ($s, $v) $p => { $b })] [$($is)*] ($($def)*) $($rest)*)
    };
    ([$($arms:tt)*] [$i:tt $($is:tt)*] ($($def:tt)*) send($s:expr, $v:expr) -> $p:pat => $b:expr) => {
        $crate::__select_parse!([$($arms)* ($i send ($s, $v) $p => { $b })] [$($is)*] ($($def)*))
    };
    // default with a timeout
    ([$($arms:tt)*] [$($is:tt)*] () default($d:expr) => $b:block $(,)? $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)*] [$($is)*] (deadline ($d) $b) $($rest)*)
    };
    ([$($arms:tt)*] [$($is:tt)*] () default($d:expr) => $b:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!([$($arms)*] [$($is)*] (deadline ($d) { $b }) $($($rest)*)?)
    };
    // plain default
    ([$($arms:tt)*] [$($is:tt)*] () default => $b:block $(,)? $($rest:tt)*) => {
        $crate::__select_parse!([$($arms)*] [$($is)*] (now $b) $($rest)*)
    };
    ([$($arms:tt)*] [$($is:tt)*] () default => $b:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!([$($arms)*] [$($is)*] (now { $b }) $($($rest)*)?)
    };
    // done
    ([$(($i:tt $kind:ident ($($args:tt)*) $p:pat => $b:block))*] [$($is:tt)*] ($($def:tt)*)) => {{
        #[allow(unused_mut)]
        let mut __arms = ($($crate::__select_arm!($kind ($($args)*)),)*);
        let __mode = $crate::__select_mode!($($def)*);
        let __sel = $crate::chan::select::run(
            &mut [$(&mut __arms.$i as &mut dyn $crate::chan::select::Arm),*],
            __mode,
        );
        match __sel {
            $( $i => { let $p = __arms.$i.take(); $b } )*
            _ => $crate::__select_default!($($def)*),
        }
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_arm {
    (recv ($r:expr)) => {
        $crate::chan::select::recv_arm(&$r)
    };
    (send ($s:expr, $v:expr)) => {
        $crate::chan::select::send_arm(&$s, $v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_mode {
    () => {
        $crate::chan::select::Mode::Block
    };
    (now $b:block) => {
        $crate::chan::select::Mode::Default
    };
    (deadline ($d:expr) $b:block) => {
        $crate::chan::select::Mode::Deadline(::std::time::Instant::now() + $d)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_default {
    () => {
        unreachable!("a blocking select returns an arm")
    };
    (now $b:block) => {
        $b
    };
    (deadline ($d:expr) $b:block) => {
        $b
    };
}
