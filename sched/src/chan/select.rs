//! `select!` over send and receive arms (Go's selectgo, in crossbeam-channel's syntax).
//!
//! 1. Lock every channel of the select once, in address order (no deadlock between two
//!    selects over the same channels; Go's `sellock`).
//! 2. Visit the arms in a random order and complete the first that can go now: this picks
//!    uniformly among the ready arms. A closed channel is ready (its receive yields `Err`).
//! 3. Nothing ready: with `default`, unlock and take it. Otherwise enqueue one waiter per
//!    arm, all sharing one token, unlock, and wait (with the deadline, if any). Because all
//!    the locks were held while enqueuing, nobody could claim the token half-way.
//! 4. Whoever claims the token completes that arm; the select then takes its other waiters
//!    off their queues, each in O(1) (waitq.rs), so a select costs O(arms) whatever the
//!    length of the queues.
//!
//! The macro builds a tuple of arm objects and indexes it with literal indices, so every
//! channel and value expression is evaluated exactly once, in order.
//!
//! The arms reach `run` as `&dyn Arm`, so `Arm` is public; but its methods take a
//! `sealed::Internal` that only this module can make, so no code outside the crate can call
//! them (or implement `Arm`), and the ones that assume a channel lock held are `unsafe`
//! as well. `run` itself is safe for any list of arms.

use core::cell::Cell;
use std::time::Instant;

use super::waitq::Node;
use super::{Chan, Receiver, RecvError, RecvTry, SendError, SendTry, Sender, Waiter};
use crate::coroutine::WaitReason;
use crate::wait::{Claimed, TIMEOUT, Token};
use sealed::{Internal, SelectToken};

mod sealed {
    /// Proof that a call to an `Arm` method comes from this module: it cannot be made,
    /// nor named, outside it.
    #[derive(Debug, Clone, Copy)]
    pub struct Internal(pub(super) ());

    /// The select's shared wait token, as the arms see it.
    #[derive(Debug)]
    pub struct SelectToken(pub(super) crate::wait::WaitToken);
}

/// The token to notify once the select's locks are released: the arm that completes at
/// once wakes at most one waiter, so there is no list to allocate. Only `run` makes one.
#[doc(hidden)]
#[derive(Debug)]
pub struct Wakeups(Option<Claimed>);

/// The most arms one select takes (the macro's index list).
pub const MAX_ARMS: usize = 32;

/// One arm of a `select!`. Implementation detail of the macro: outside this module its
/// methods cannot be called (they take an `Internal`).
#[doc(hidden)]
pub trait Arm {
    /// The channel's address: the lock order.
    fn chan_addr(&self, _: Internal) -> usize;
    /// Panics unless the arm can take part in a select (a send arm that has sent is spent).
    fn check(&self, _: Internal);
    fn lock(&self, _: Internal);
    /// # Safety
    /// This thread holds the channel's lock (`lock`).
    unsafe fn unlock(&self, _: Internal);
    /// Completes the arm if it can go now.
    ///
    /// # Safety
    /// This thread holds the channel's lock.
    unsafe fn try_locked(&self, wake: &mut Wakeups, _: Internal) -> bool;
    /// Enqueues the arm's waiter for `token`'s arm `arm`.
    ///
    /// # Safety
    /// This thread holds the channel's lock; the arm is not registered, and stays in place
    /// until `complete` or `unregister` (or its drop) takes it off again.
    unsafe fn register_locked(&self, token: &SelectToken, arm: usize, _: Internal);
    /// Takes the waiter off its queue if it is registered (takes the lock itself).
    fn unregister(&self, _: Internal);
    /// Collects the result, after the token was claimed for this arm and notified.
    ///
    /// # Safety
    /// As said: the waiter was popped by the claimant of this arm, whose wake-up we saw.
    unsafe fn complete(&self, _: Internal);
}

/// What both kinds of arm share: the channel, the waiter its queue points at while the
/// arm is registered, and the owner's view of whether it is. `run` keeps the arms borrowed,
/// so they stay put until it has unregistered them or a claimant has popped them; a drop
/// while registered (on unwinding) unregisters.
struct Registration<'a, T> {
    chan: &'a Chan<T>,
    /// On the send queue (else the receive queue).
    send: bool,
    waiter: Waiter<T>,
    registered: Cell<bool>,
}

impl<'a, T> Registration<'a, T> {
    fn new(chan: &'a Chan<T>, send: bool, slot: Option<T>) -> Self {
        Self {
            chan,
            send,
            waiter: Waiter::new(slot),
            registered: Cell::new(false),
        }
    }

    fn chan_addr(&self) -> usize {
        core::ptr::from_ref(self.chan) as usize
    }

    /// # Safety
    /// As for `Arm::register_locked`.
    unsafe fn register_locked(&self, token: &SelectToken, arm: usize) {
        // SAFETY: we hold the lock; the waiter is on no queue (not registered) and stays
        // put until `unregister` or `completed` (contract, and `Drop`).
        unsafe { self.chan.enqueue(&self.waiter, &token.0, arm, self.send) };
        self.registered.set(true);
    }

    fn unregister(&self) {
        if self.registered.replace(false) {
            // SAFETY: the waiter is only ever enqueued on this channel, on this side.
            unsafe { self.chan.dequeue(&self.waiter, self.send) };
        }
    }

    /// The waiter's state, once a claimant popped it for this arm.
    ///
    /// # Safety
    /// As for `Arm::complete`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn completed(&self) -> &mut Node<T> {
        self.registered.set(false);
        // SAFETY: popped by our claimant, whose wake-up we saw: the waiter is ours alone.
        unsafe { self.waiter.node() }
    }
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// A receive arm.
#[doc(hidden)]
pub struct RecvArm<'a, T> {
    reg: Registration<'a, T>,
    result: Cell<Option<Result<T, RecvError>>>,
}

/// A send arm; the value waits in the waiter's slot.
#[doc(hidden)]
pub struct SendArm<'a, T> {
    reg: Registration<'a, T>,
    result: Cell<Option<Result<(), SendError<T>>>>,
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
        reg: Registration::new(&rx.chan, false, None),
        result: Cell::new(None),
    }
}

#[doc(hidden)]
pub fn send_arm<T>(tx: &Sender<T>, v: T) -> SendArm<'_, T> {
    SendArm {
        reg: Registration::new(&tx.chan, true, Some(v)),
        result: Cell::new(None),
    }
}

impl<T> RecvArm<'_, T> {
    /// The selected arm's result.
    #[doc(hidden)]
    pub fn take(&self) -> Result<T, RecvError> {
        self.result.take().expect("the selected arm has a result")
    }
}

impl<T> SendArm<'_, T> {
    /// The selected arm's result.
    #[doc(hidden)]
    pub fn take(&self) -> Result<(), SendError<T>> {
        self.result.take().expect("the selected arm has a result")
    }
}

/// The `Arm` methods both kinds forward to their `Registration`.
macro_rules! forward_to_registration {
    () => {
        fn chan_addr(&self, _: Internal) -> usize {
            self.reg.chan_addr()
        }
        fn lock(&self, _: Internal) {
            self.reg.chan.lock();
        }
        unsafe fn unlock(&self, _: Internal) {
            // SAFETY: per the contract, this thread holds the lock.
            unsafe { self.reg.chan.unlock() };
        }
        unsafe fn register_locked(&self, token: &SelectToken, arm: usize, _: Internal) {
            // SAFETY: the same contract.
            unsafe { self.reg.register_locked(token, arm) };
        }
        fn unregister(&self, _: Internal) {
            self.reg.unregister();
        }
    };
}

impl<T> Arm for RecvArm<'_, T> {
    forward_to_registration!();
    fn check(&self, _: Internal) {}
    unsafe fn try_locked(&self, wake: &mut Wakeups, _: Internal) -> bool {
        // SAFETY: per the contract, this thread holds the lock.
        let r = match unsafe { self.reg.chan.try_recv_locked() } {
            RecvTry::Done(v, n) => {
                debug_assert!(wake.0.is_none(), "one arm completes per select");
                wake.0 = n;
                Ok(v)
            }
            RecvTry::Closed => Err(RecvError),
            RecvTry::Empty => return false,
        };
        self.result.set(Some(r));
        true
    }
    unsafe fn complete(&self, _: Internal) {
        // SAFETY: the same contract.
        let n = unsafe { self.reg.completed() };
        let r = if n.closed {
            Err(RecvError)
        } else {
            Ok(n.slot.take().expect("a selected receive has a value"))
        };
        self.result.set(Some(r));
    }
}

impl<T> Arm for SendArm<'_, T> {
    forward_to_registration!();
    fn check(&self, _: Internal) {
        // SAFETY: an arm that is not registered is its owner's (ours) alone.
        let spent = !self.reg.registered.get() && unsafe { self.reg.waiter.node() }.slot.is_none();
        assert!(
            !spent,
            "a send arm whose value was sent cannot select again"
        );
    }
    unsafe fn try_locked(&self, wake: &mut Wakeups, _: Internal) -> bool {
        // SAFETY: not registered (`run` registers only after trying), so ours alone.
        let slot = &mut unsafe { self.reg.waiter.node() }.slot;
        let v = slot.take().expect("a send arm has its value (`check`)");
        // SAFETY: per the contract, this thread holds the lock.
        let r = match unsafe { self.reg.chan.try_send_locked(v) } {
            SendTry::Done(n) => {
                debug_assert!(wake.0.is_none(), "one arm completes per select");
                wake.0 = n;
                Ok(())
            }
            SendTry::Closed(v) => Err(SendError(v)),
            SendTry::Full(v) => {
                *slot = Some(v);
                return false;
            }
        };
        self.result.set(Some(r));
        true
    }
    unsafe fn complete(&self, _: Internal) {
        // SAFETY: the same contract.
        let n = unsafe { self.reg.completed() };
        let r = if n.closed {
            Err(SendError(
                n.slot.take().expect("value still in a send woken by close"),
            ))
        } else {
            Ok(())
        };
        self.result.set(Some(r));
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

/// Runs a select over `arms` (at most `MAX_ARMS`, each at most once): the index of the arm
/// chosen, or `usize::MAX` for `default`. Every arm is off its queue when this returns.
#[doc(hidden)]
pub fn run(arms: &[&dyn Arm], mode: Mode) -> usize {
    let n = arms.len();
    assert!(n <= MAX_ARMS, "a select takes at most {MAX_ARMS} arms");
    // The scratch arrays of `run_sized` are sized for `CAP` arms and filled at every
    // select: for `MAX_ARMS` that is 1 KiB of stores, most of it for arms that are not
    // there. Most selects have a few arms (callgrind, benches/sched-user `select 8`: 2,845
    // -> 2,720 instructions per message, `memset` 103 -> 21 of them).
    if n <= SMALL_ARMS {
        run_sized::<SMALL_ARMS>(arms, mode)
    } else {
        run_sized::<MAX_ARMS>(arms, mode)
    }
}

/// Arms a select's scratch arrays hold without the full `MAX_ARMS` (`run`).
const SMALL_ARMS: usize = 8;

/// `run` with scratch arrays for `CAP` arms (`arms.len() <= CAP <= MAX_ARMS`).
#[inline(always)]
fn run_sized<const CAP: usize>(arms: &[&dyn Arm], mode: Mode) -> usize {
    let n = arms.len();
    let key = Internal(());
    for arm in arms {
        arm.check(key);
    }
    // Lock order: by channel address, each channel once. An arm listed twice would be
    // queued twice: refuse it before locking anything. The keys are read once, so the sort
    // compares plain integers instead of calling through `dyn Arm` at every comparison.
    let mut sorted = [(0usize, 0usize, 0usize); CAP];
    let sorted = &mut sorted[..n];
    for (i, k) in sorted.iter_mut().enumerate() {
        *k = (arms[i].chan_addr(key), arm_addr(arms[i]), i);
    }
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert!(w[0].1 != w[1].1, "an arm is listed twice in one select");
    }
    let mut by_addr = [0usize; CAP];
    let mut locks = 0;
    for (j, &(chan, _, i)) in sorted.iter().enumerate() {
        if j == 0 || sorted[j - 1].0 != chan {
            by_addr[locks] = i;
            locks += 1;
        }
    }
    let lock_order = &by_addr[..locks];
    let lock_all = || {
        for &i in lock_order {
            arms[i].lock(key);
        }
    };
    // SAFETY (for each call): after `lock_all`, which took every lock of `lock_order`.
    let unlock_all = || {
        for &i in lock_order.iter().rev() {
            // SAFETY: see above.
            unsafe { arms[i].unlock(key) };
        }
    };
    // A random permutation (Fisher-Yates): the first ready arm in it is uniform among the
    // ready ones (Go's pollorder). One draw from the M's generator seeds a local xorshift
    // for the swaps, and each index comes from a multiply-shift (Lemire's reduction)
    // instead of a division.
    let mut order: [usize; CAP] = core::array::from_fn(|i| i);
    let order = &mut order[..n];
    let mut r = crate::machine::fastrand() | 1;
    for i in (1..n).rev() {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let j = ((u128::from(r) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    let mut wake = Wakeups(None);
    lock_all();
    for &i in order.iter() {
        // SAFETY: every arm's channel is locked.
        if unsafe { arms[i].try_locked(&mut wake, key) } {
            unlock_all();
            if let Some(t) = wake.0 {
                // SAFETY: `try_locked` keeps only a token it claimed; notified once, here.
                unsafe { t.notify() };
            }
            return i;
        }
    }
    let deadline = match mode {
        Mode::Block => None,
        Mode::Deadline(d) if Instant::now() < d => Some(d),
        Mode::Default | Mode::Deadline(_) => {
            unlock_all();
            return usize::MAX;
        }
    };
    let token = SelectToken(Token::for_current_wait());
    for &i in order.iter() {
        // SAFETY: every arm's channel is locked; no arm is registered (each is listed once
        // and a fresh `run` finds them off their queues); `arms` stays borrowed, so in
        // place, until we have unregistered them or a claimant has popped one.
        unsafe { arms[i].register_locked(&token, i, key) };
    }
    unlock_all();
    // SAFETY: made for this coroutine or thread just above.
    let sel = unsafe { token.0.wait_until(WaitReason::Select, deadline) };
    for (i, arm) in arms.iter().enumerate() {
        if i != sel {
            arm.unregister(key);
        }
    }
    if sel == TIMEOUT {
        return usize::MAX;
    }
    // SAFETY: the token was claimed for `sel` and its claimant's wake-up is what ended
    // our wait.
    unsafe { arms[sel].complete(key) };
    sel
}

/// An arm's identity (its data address).
fn arm_addr(arm: &dyn Arm) -> usize {
    (arm as *const dyn Arm).cast::<()>() as usize
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
/// Cases: `recv(r) -> pat => body`, `send(s, v) -> pat => body`, and at most one of
/// `default => body` (run if nothing is ready now) or `default(timeout) => body`, in any
/// order, up to 32 `recv` and `send` cases. A body is an expression followed by a comma
/// (optional after the last case) or a block, with or without a comma after it. No case
/// and no `default` blocks forever.
#[macro_export]
macro_rules! select {
    ($($case:tt)*) => {
        $crate::__select_cases!(() ($($case)*))
    };
}

/// `select!`, step 1: splits the cases, each into `[kind (args) (pattern) { body }]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_cases {
    (($($done:tt)*) ()) => {
        $crate::__select_arms!(
            [] () [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
            $($done)*
        )
    };
    ($done:tt (default => $($rest:tt)*)) => {
        $crate::__select_cases!($done (default() => $($rest)*))
    };
    // A block and a comma (tried first: a block followed by more cases is no expression).
    (($($done:tt)*) ($kind:ident $args:tt $(-> $p:pat)? => { $($b:tt)* }, $($rest:tt)*)) => {
        $crate::__select_cases!(($($done)* [$kind $args ($($p)?) { $($b)* }]) ($($rest)*))
    };
    // An expression and a comma.
    (($($done:tt)*) ($kind:ident $args:tt $(-> $p:pat)? => $b:expr, $($rest:tt)*)) => {
        $crate::__select_cases!(($($done)* [$kind $args ($($p)?) { $b }]) ($($rest)*))
    };
    // A block without a comma.
    (($($done:tt)*) ($kind:ident $args:tt $(-> $p:pat)? => { $($b:tt)* } $($rest:tt)*)) => {
        $crate::__select_cases!(($($done)* [$kind $args ($($p)?) { $($b)* }]) ($($rest)*))
    };
    // The last case, an expression without a comma.
    (($($done:tt)*) ($kind:ident $args:tt $(-> $p:pat)? => $b:expr)) => {
        $crate::__select_cases!(($($done)* [$kind $args ($($p)?) { $b }]) ())
    };
    ($done:tt ($($rest:tt)*)) => {
        compile_error!(concat!(
            "expected a `select!` case (`recv(r) -> pat => body`, `send(s, v) -> pat => body`, ",
            "`default => body` or `default(timeout) => body`), found `",
            stringify!($($rest)*),
            "`"
        ))
    };
}

/// `select!`, step 2: checks each case and numbers the `recv` and `send` arms.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_arms {
    ([$($arms:tt)*] $def:tt [$i:tt $($is:tt)*] [recv ($r:expr $(,)?) ($p:pat) $b:block] $($rest:tt)*) => {
        $crate::__select_arms!([$($arms)* ($i recv ($r) $p => $b)] $def [$($is)*] $($rest)*)
    };
    ([$($arms:tt)*] $def:tt [$i:tt $($is:tt)*] [send ($s:expr, $v:expr $(,)?) ($p:pat) $b:block] $($rest:tt)*) => {
        $crate::__select_arms!([$($arms)* ($i send ($s, $v) $p => $b)] $def [$($is)*] $($rest)*)
    };
    ($arms:tt () $is:tt [default () () $b:block] $($rest:tt)*) => {
        $crate::__select_arms!($arms (now $b) $is $($rest)*)
    };
    ($arms:tt () $is:tt [default ($d:expr $(,)?) () $b:block] $($rest:tt)*) => {
        $crate::__select_arms!($arms (deadline ($d) $b) $is $($rest)*)
    };
    ($arms:tt ($($def:tt)+) $is:tt [default $($case:tt)*] $($rest:tt)*) => {
        compile_error!("a `select!` takes one `default` case at most")
    };
    ($arms:tt $def:tt $is:tt [default $args:tt ($($p:tt)+) $($case:tt)*] $($rest:tt)*) => {
        compile_error!("a `default` case takes no `-> pattern`")
    };
    ($arms:tt $def:tt [] [$kind:ident $($case:tt)*] $($rest:tt)*) => {
        compile_error!("a `select!` takes 32 `recv` and `send` cases at most")
    };
    ($arms:tt $def:tt $is:tt [$kind:ident $args:tt () $($case:tt)*] $($rest:tt)*) => {
        compile_error!(concat!("expected `-> pattern` after `", stringify!($kind $args), "`"))
    };
    ($arms:tt $def:tt $is:tt [$kind:ident $args:tt $($case:tt)*] $($rest:tt)*) => {
        compile_error!(concat!(
            "expected `recv(receiver)`, `send(sender, value)`, `default` or `default(timeout)`, found `",
            stringify!($kind $args),
            "`"
        ))
    };
    ([$(($i:tt $kind:ident ($($args:tt)*) $p:pat => $b:block))*] ($($def:tt)*) $is:tt) => {{
        let __arms = ($($crate::__select_arm!($kind ($($args)*)),)*);
        let __sel = $crate::chan::select::run(
            &[$(&__arms.$i as &dyn $crate::chan::select::Arm),*],
            $crate::__select_mode!($($def)*),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chan::bounded;
    use std::time::Duration;

    fn queues_empty<T>(rx: &Receiver<T>) -> bool {
        rx.chan
            .with(|st| st.recvq.is_empty() && st.sendq.is_empty())
    }

    /// The same arm twice would be queued twice; `run` refuses it before taking a lock.
    #[test]
    fn an_arm_listed_twice_is_refused_before_locking() {
        let (tx, rx) = bounded::<i32>(1);
        let a = recv_arm(&rx);
        let twice = std::panic::AssertUnwindSafe(|| run(&[&a, &a], Mode::Default));
        let r = std::panic::catch_unwind(twice);
        assert!(r.is_err());
        tx.send(1).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(queues_empty(&rx));
    }

    /// Selects of both sizes of `run`'s scratch arrays (up to `SMALL_ARMS` arms, and up to
    /// `MAX_ARMS`) find the ready arm wherever it is listed, and a blocked one is woken by
    /// any of its channels; every queue is empty afterwards. (A wide select run with the
    /// small arrays would index past them.)
    #[test]
    fn selects_of_every_width_find_the_ready_arm() {
        for n in [1, SMALL_ARMS, SMALL_ARMS + 1, MAX_ARMS] {
            let chans: Vec<_> = (0..n).map(|_| bounded::<usize>(1)).collect();
            for ready in [0, n / 2, n - 1] {
                chans[ready].0.send(ready).unwrap();
                let arms: Vec<_> = chans.iter().map(|(_, rx)| recv_arm(rx)).collect();
                let refs: Vec<&dyn Arm> = arms.iter().map(|a| a as &dyn Arm).collect();
                let sel = run(&refs, Mode::Default);
                assert_eq!((n, sel), (n, ready));
                assert_eq!(arms[sel].take(), Ok(ready));
            }
            let rendezvous: Vec<_> = (0..n).map(|_| bounded::<usize>(0)).collect();
            let last = rendezvous[n - 1].0.clone();
            let sender = std::thread::spawn(move || last.send(n).unwrap());
            let arms: Vec<_> = rendezvous.iter().map(|(_, rx)| recv_arm(rx)).collect();
            let refs: Vec<&dyn Arm> = arms.iter().map(|a| a as &dyn Arm).collect();
            let sel = run(&refs, Mode::Block);
            sender.join().unwrap();
            assert_eq!((n, sel), (n, n - 1));
            assert_eq!(arms[sel].take(), Ok(n));
            drop(arms);
            for (_, rx) in chans.iter().chain(&rendezvous) {
                assert!(queues_empty(rx));
            }
        }
    }

    /// Arms that time out, and arms that lose to another arm (two of them on one channel,
    /// one a send), all leave their queues; the losing send keeps its value.
    #[test]
    fn losing_and_timed_out_arms_leave_every_queue() {
        let (tx1, rx1) = bounded::<i32>(0);
        let (tx2, rx2) = bounded::<i32>(0);
        {
            let (a, b, c) = (recv_arm(&rx1), recv_arm(&rx1), send_arm(&tx2, 5));
            let d = Instant::now() + Duration::from_millis(1);
            assert_eq!(run(&[&a, &b, &c], Mode::Deadline(d)), usize::MAX);
        }
        assert!(queues_empty(&rx1) && queues_empty(&rx2));
        let sender = std::thread::spawn(move || tx1.send(7).unwrap());
        let (a, b, c) = (recv_arm(&rx1), recv_arm(&rx1), send_arm(&tx2, 5));
        let sel = run(&[&a, &b, &c], Mode::Block);
        sender.join().unwrap();
        let got = match sel {
            0 => a.take(),
            1 => b.take(),
            other => panic!("arm {other} won"),
        };
        assert_eq!(got, Ok(7));
        assert!(queues_empty(&rx1) && queues_empty(&rx2));
        drop(c);
        assert_eq!(rx2.try_recv(), Err(crate::chan::TryRecvError::Empty));
    }
}
