//! The idle protocol (Go's `sched.pidle`/`sched.midle`, `nmspinning`, `stopm`, `startm`,
//! `wakep`, `handoffp`): how an M with nothing to do gives its P back and sleeps, and how
//! work made runnable anywhere finds an M to run it, without a wake-up being lost.
//!
//! Spinning (Go's `nmspinning`): an M looking for work to steal is "spinning". `wakep`
//! starts an M only when nobody spins, and an M may start spinning only while
//! `2 * spinning < busy Ps`, which bounds the CPU burnt looking for work. A spinning M that
//! finds work wakes another if it was the last spinner, so a burst of work fans out.
//! Work queued by a running G wakes an idle M only if it is worth moving (`queue`; the
//! crate documentation, "Wake-ups").
//!
//! The protocol is written against `Sched`, the runtime as the protocol sees it, and the
//! shim's atomics, lock and fence (shim.rs), with the Ms sleeping on their `Parker`s: under
//! `--cfg tessera_loom` those are loom's, and loom runs these very functions on a stand-in
//! runtime (idle_loom.rs). `Shared` is the real runtime, and in a normal build each trait
//! call inlines to the field access or call it stands for.

use core::sync::atomic::Ordering;
use std::sync::Arc;

use super::m_loop::m_main;
use super::{MCtx, MShared, NO_P};
use crate::processor::P_IDLE;
use crate::runtime::Shared;
use crate::shim::{AtomicBool, AtomicUsize, Mutex, fence};

/// Idle Ps and Ms (Go's `sched.pidle`, `sched.midle` under `sched.lock`). An M on `ms`
/// sleeps on its parker (or is about to); the poller takes itself off the list while it
/// blocks in epoll.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    pub(crate) ps: Vec<usize>,
    pub(crate) ms: Vec<Arc<MShared>>,
}

/// The runtime as the idle protocol sees it (Go's `schedt`): the idle lists with the counts
/// beside them, and the few things of the rest of the runtime the protocol looks at — the
/// run queues, starting a thread, and the netpoller and timers an idle M blocks on.
/// Implemented by `Shared`, and by loom's stand-in (idle_loom.rs).
pub(crate) trait Sched {
    /// What a poll hands back for each G an event woke (a claimed wait token).
    type Woken;

    /// The idle lists.
    fn idle(&self) -> &Mutex<Idle>;
    /// The length of `idle().ps`, read without the lock (Go's `sched.npidle`).
    fn npidle(&self) -> &AtomicUsize;
    /// Ms looking for work to steal (Go's `sched.nmspinning`).
    fn nmspinning(&self) -> &AtomicUsize;
    /// Set once, when the runtime is dropped.
    fn shutdown(&self) -> &AtomicBool;
    /// Marks P `p` idle in its status word (which sysmon reads).
    fn set_p_idle(&self, p: usize);
    /// Whether a G waits where an idle M would find it: the global queue, `m`'s mailbox, a
    /// P's run queue.
    fn any_work(&self, m: &MShared) -> bool;
    /// Starts a new M thread holding P `p` (`spinning`: counted in `nmspinning`). False if
    /// none started: the runtime is shutting down, or the OS gave no thread.
    ///
    /// # Safety
    /// The caller holds P `p`, and gives it up if this returns true.
    unsafe fn new_m(&self, p: usize, spinning: bool) -> bool;

    /// Whether an idle M should block in the netpoller rather than on its futex: something
    /// waits on a socket or a timer.
    fn needs_poller(&self) -> bool;
    /// Takes the right to block in the netpoller (one thread at a time; a non-blocking look
    /// by a busy M does not hold it: netpoll.rs `try_peek`).
    fn poll_acquire(&self) -> bool;
    /// Gives the right to poll back.
    fn poll_release(&self);
    /// Breaks a blocked poller out of its wait.
    fn poll_wake(&self);
    /// While a poller is blocked: when its wait ends (ns on the runtime's clock, `u64::MAX`
    /// for none); 0 when nobody is blocked.
    fn blocked_until(&self) -> u64;
    fn set_blocked_until(&self, ns: u64);
    /// When the earliest timer is due (`u64::MAX`: none).
    fn next_timer_ns(&self) -> u64;
    /// Blocks in the netpoller until an event, the earliest timer or a break (not at all if
    /// a timer is due), and appends what the events woke to `woken`. The caller holds the
    /// right to poll.
    fn poll_until_timer(&self, woken: &mut Vec<Self::Woken>);
    /// Whether a timer is due.
    fn timers_due(&self) -> bool;
    /// Readies the Gs a poll woke and fires the due timers: what they make runnable goes on
    /// the calling M's P if it holds one, else on the global queue.
    ///
    /// # Safety
    /// `woken` was filled by `poll_until_timer`, and none of it was delivered before.
    unsafe fn deliver(&self, woken: Vec<Self::Woken>);
}

/// Gives the M's P back: to an idle M that has a locked G waiting in its mailbox, else to
/// the idle list, with this M beside it in the same critical section (so a `wakep` that
/// sees the idle P also finds an idle M, and does not start a thread for nothing).
pub(super) fn release_p<S: Sched>(m: &MCtx<S>) {
    let p = m.p.replace(NO_P);
    // SAFETY: `p` was this M's P (`m.p`), given up just above.
    unsafe { put_idle_p_with(&*m.shared, p, Some(&m.ms)) };
}

/// Gives P `p` to an idle M with a locked G waiting, or to the idle list.
///
/// # Safety
/// The caller holds P `p` and gives it up.
pub(crate) unsafe fn put_idle_p<S: Sched>(sh: &S, p: usize) {
    // SAFETY: the same contract.
    unsafe { put_idle_p_with(sh, p, None) };
}

/// `put_idle_p`, listing `idle_m` as idle in the same critical section.
///
/// # Safety
/// As for `put_idle_p`.
unsafe fn put_idle_p_with<S: Sched>(sh: &S, p: usize, idle_m: Option<&Arc<MShared>>) {
    sh.set_p_idle(p);
    let mut idle = sh.idle().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = idle_m {
        idle.ms.push(m.clone());
    }
    if let Some(i) = idle
        .ms
        .iter()
        .position(|x| x.mailbox_len.load(Ordering::SeqCst) > 0)
    {
        let mm = idle.ms.swap_remove(i);
        drop(idle);
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { mm.hand_p(p, false) };
        return;
    }
    idle.ps.push(p);
    sh.npidle().fetch_add(1, Ordering::SeqCst);
}

/// Takes an idle P for the calling M if it is on the idle list (a waker that already took
/// it off is handing it a P: `None`, and the M will find it in `nextp`).
fn take_p_if_idle<S: Sched>(m: &MCtx<S>) -> Option<usize> {
    let sh = &*m.shared;
    let mut idle = sh.idle().lock().unwrap_or_else(|e| e.into_inner());
    let i = idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms))?;
    let p = idle.ps.pop()?;
    idle.ms.swap_remove(i);
    sh.npidle().fetch_sub(1, Ordering::SeqCst);
    Some(p)
}

/// Called with no P: re-checks for work, then polls the network or sleeps until handed a
/// P. `None` on shutdown.
pub(super) fn stop_m<S: Sched>(m: &MCtx<S>) -> Option<usize> {
    let sh = &*m.shared;
    let was_spinning = m.spinning.replace(false);
    if was_spinning {
        sh.nmspinning().fetch_sub(1, Ordering::SeqCst);
    }
    // The M is on the idle list already (`release_p`, or `run_blocking` without a P).
    // Pairs with the fence in `wakep`: either the pusher sees our P idle and us on the
    // list, or we see its work (or its timer) here.
    fence(Ordering::SeqCst);
    if sh.any_work(&m.ms)
        && let Some(p) = take_p_if_idle(m)
    {
        if was_spinning {
            m.spinning.set(true);
            sh.nmspinning().fetch_add(1, Ordering::SeqCst);
        }
        return Some(p);
    }
    loop {
        let p = crate::shim::take(&m.ms.nextp, NO_P);
        if p != NO_P {
            // `wakep` counted us as spinning (a mailbox hand-off did not).
            m.spinning.set(m.ms.next_spinning.load(Ordering::Acquire));
            return Some(p);
        }
        if sh.shutdown().load(Ordering::SeqCst) {
            return None;
        }
        if m.ms.mailbox_len.load(Ordering::SeqCst) > 0
            && let Some(p) = take_p_if_idle(m)
        {
            return Some(p);
        }
        if sh.needs_poller() && sh.poll_acquire() {
            if let Some(p) = poll_blocking(m) {
                return Some(p);
            }
            continue;
        }
        m.ms.parker.park();
    }
}

/// The idle M as the netpoller: blocks in epoll until an event, the next timer or a break,
/// then takes an idle P for what became runnable. The caller holds the right to poll.
/// `Some(p)` with the woken Gs queued on `p`, or `None` to go round the idle loop again.
fn poll_blocking<S: Sched>(m: &MCtx<S>) -> Option<usize> {
    let sh = &*m.shared;
    {
        let mut idle = sh.idle().lock().unwrap_or_else(|e| e.into_inner());
        match idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms)) {
            Some(i) => {
                idle.ms.swap_remove(i);
            }
            None => {
                // A waker took us off the list and is handing us a P: its `hand_p` unparks
                // us (a permit if it comes first), so sleep rather than spin until then.
                drop(idle);
                sh.poll_release();
                m.ms.parker.park();
                return None;
            }
        }
    }
    // Publish how long we block before the last look at the timers and queues, so that a
    // timer added or work pushed from here on breaks us out (`timer_added`, `wakep`).
    sh.set_blocked_until(u64::MAX);
    let mut woken = Vec::new();
    // Queued work is a reason not to block only if there is an idle P to run it on; if
    // every P is busy, their Ms run it, and spinning here would only burn a CPU (there can
    // be more Ms than Ps once blocking sections have started extra Ms).
    let can_run_work = sh.any_work(&m.ms) && sh.npidle().load(Ordering::SeqCst) > 0;
    if !can_run_work && !sh.shutdown().load(Ordering::SeqCst) {
        let next = sh.next_timer_ns();
        sh.set_blocked_until(next);
        // A timer added between `next_ns` and the store above saw no blocked poller and
        // woke an M instead, or sees our deadline and breaks us: either way nothing waits.
        sh.poll_until_timer(&mut woken);
    }
    sh.set_blocked_until(0);
    sh.poll_release();
    let due = sh.timers_due();
    let p = if woken.is_empty() && !due && !sh.any_work(&m.ms) {
        None
    } else {
        let mut idle = sh.idle().lock().unwrap_or_else(|e| e.into_inner());
        let p = idle.ps.pop();
        if p.is_some() {
            sh.npidle().fetch_sub(1, Ordering::SeqCst);
        }
        p
    };
    if p.is_none() {
        sh.idle()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ms
            .push(m.ms.clone());
    }
    // With a P, the woken Gs go on it (`ready` sees `m.p`); without one, to the
    // global queue for the busy Ps.
    m.p.set(p.unwrap_or(NO_P));
    // SAFETY: `woken` is what the poll above filled, delivered once, here.
    unsafe { sh.deliver(woken) };
    m.p.set(NO_P);
    p
}

/// A timer that is now the runtime's earliest was added: make sure some M will fire it in
/// time (Go's `wakeNetPoller`).
pub(crate) fn timer_added(sh: &Shared, when_ns: u64) {
    let until = sh.poll.blocked_until.load(Ordering::SeqCst);
    if until != 0 {
        if when_ns < until {
            sh.poll.wake();
        }
    } else {
        wakep(sh);
    }
}

/// Starts an M for `p` (Go's `startm`): an idle one if there is one, else a new thread.
/// `spinning`: the M was counted in `nmspinning` by the caller.
///
/// # Safety
/// The caller holds P `p` and gives it up.
pub(crate) unsafe fn start_m<S: Sched>(sh: &S, p: usize, spinning: bool) {
    let mm = sh.idle().lock().unwrap_or_else(|e| e.into_inner()).ms.pop();
    if let Some(mm) = mm {
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { mm.hand_p(p, spinning) };
        return;
    }
    // SAFETY: per the contract we hold `p`; a new M gets it if one starts.
    if unsafe { sh.new_m(p, spinning) } {
        return;
    }
    // No thread: the P goes back idle; a busy M or sysmon will find the work later.
    if spinning {
        sh.nmspinning().fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: per the contract we hold `p`, and no M was given it.
    unsafe { put_idle_p(sh, p) };
}

/// Starts an idle M on an idle P if there is work nobody is looking for (Go's `wakep`).
pub(crate) fn wakep<S: Sched>(sh: &S) {
    fence(Ordering::SeqCst);
    wakep_unfenced(sh);
}

/// `wakep` without the fence that orders the caller's push before the idle check.
pub(super) fn wakep_unfenced<S: Sched>(sh: &S) {
    if sh.npidle().load(Ordering::SeqCst) == 0 || sh.nmspinning().load(Ordering::SeqCst) != 0 {
        return;
    }
    if sh
        .nmspinning()
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    let mut idle = sh.idle().lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = idle.ps.pop() else {
        // Give the spinning count back under the lock (as Go does): a pusher that saw our
        // count and left its G to "the spinner" is then ordered before the next M that
        // lists itself idle, whose re-check finds the G. Decrementing after the unlock lost
        // that G under loom (idle_loom.rs, `loom_idle_spinning_fans_out_deep`).
        sh.nmspinning().fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        return;
    };
    sh.npidle().fetch_sub(1, Ordering::SeqCst);
    if let Some(mm) = idle.ms.pop() {
        drop(idle);
        // SAFETY: we took `p` off the idle list above, so it is ours to hand over.
        unsafe { mm.hand_p(p, true) };
        return;
    }
    if sh.blocked_until() != 0 {
        // The only idle M is blocked in epoll: break it out; it takes the P itself.
        idle.ps.push(p);
        sh.npidle().fetch_add(1, Ordering::SeqCst);
        sh.nmspinning().fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        sh.poll_wake();
        return;
    }
    drop(idle);
    // SAFETY: we took `p` off the idle list above, so it is ours to hand over.
    unsafe { start_m(sh, p, true) };
}

/// Wakes every M (shutdown).
pub(crate) fn wake_all(sh: &Shared) {
    for m in sh.all_ms.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        m.parker.unpark();
    }
}

/// Whether `m` may look for work to steal from the other Ps of `nprocs`: it spins already,
/// or it starts to, which it may only while fewer Ms spin than half the busy Ps (proc.go
/// findRunnable).
#[inline]
pub(super) fn try_spin<S: Sched>(m: &MCtx<S>, nprocs: usize) -> bool {
    if !m.spinning.get() {
        let sh = &*m.shared;
        let busy = nprocs.saturating_sub(sh.npidle().load(Ordering::SeqCst));
        if 2 * sh.nmspinning().load(Ordering::SeqCst) >= busy {
            return false;
        }
        m.spinning.set(true);
        sh.nmspinning().fetch_add(1, Ordering::SeqCst);
    }
    true
}

/// The M found work and stops spinning; the last spinner to stop wakes another M for what
/// may be left (Go's `resetspinning`).
pub(super) fn reset_spinning<S: Sched>(m: &MCtx<S>) {
    m.spinning.set(false);
    let sh = &*m.shared;
    if sh.nmspinning().fetch_sub(1, Ordering::SeqCst) == 1 {
        wakep(sh);
    }
}

impl Sched for Shared {
    type Woken = Arc<crate::wait::Token>;

    #[inline(always)]
    fn idle(&self) -> &Mutex<Idle> {
        &self.idle
    }

    #[inline(always)]
    fn npidle(&self) -> &AtomicUsize {
        &self.npidle
    }

    #[inline(always)]
    fn nmspinning(&self) -> &AtomicUsize {
        &self.nmspinning
    }

    #[inline(always)]
    fn shutdown(&self) -> &AtomicBool {
        &self.shutdown
    }

    #[inline(always)]
    fn set_p_idle(&self, p: usize) {
        self.ps[p].status.store(P_IDLE, Ordering::SeqCst);
    }

    #[inline]
    fn any_work(&self, m: &MShared) -> bool {
        self.global.len() > 0
            || m.mailbox_len.load(Ordering::SeqCst) > 0
            || self.ps.iter().any(|p| !p.runq.is_empty())
    }

    #[inline]
    unsafe fn new_m(&self, p: usize, spinning: bool) -> bool {
        // Under the list's lock, so that `Runtime::drop`, which sets `shutdown` and then
        // empties the list, joins every M started before and none is started after.
        let mut extra = self.extra_ms.lock().unwrap_or_else(|e| e.into_inner());
        if !self.shutdown.load(Ordering::SeqCst)
            && let Some(rt) = self.self_arc()
        {
            let ms = Arc::new(MShared::new());
            let n = {
                let mut all = self.all_ms.lock().unwrap_or_else(|e| e.into_inner());
                all.push(ms.clone());
                all.len() - 1
            };
            let spawned = std::thread::Builder::new()
                .name(format!("tessera-m{n}"))
                .spawn(move || {
                    // SAFETY: per the contract we hold `p`, and the new M gets it (if the
                    // thread does not start, we return false and the caller keeps it).
                    unsafe { m_main(rt, ms, p, spinning) }
                });
            if let Ok(t) = spawned {
                extra.push(t);
                return true;
            }
        }
        false
    }

    #[inline(always)]
    fn needs_poller(&self) -> bool {
        self.poll.has_waiters() || crate::timer::armed(self)
    }

    #[inline(always)]
    fn poll_acquire(&self) -> bool {
        self.poll.try_acquire()
    }

    #[inline(always)]
    fn poll_release(&self) {
        self.poll.release(self.now_ns());
    }

    #[inline(always)]
    fn poll_wake(&self) {
        self.poll.wake();
    }

    #[inline(always)]
    fn blocked_until(&self) -> u64 {
        self.poll.blocked_until.load(Ordering::SeqCst)
    }

    #[inline(always)]
    fn set_blocked_until(&self, ns: u64) {
        self.poll.blocked_until.store(ns, Ordering::SeqCst);
    }

    #[inline(always)]
    fn next_timer_ns(&self) -> u64 {
        crate::timer::next_ns(self)
    }

    #[inline(always)]
    fn poll_until_timer(&self, woken: &mut Vec<Self::Woken>) {
        let timeout = crate::timer::until_next(self);
        if timeout != Some(core::time::Duration::ZERO) {
            self.poll.poll(timeout, woken);
        }
    }

    #[inline(always)]
    fn timers_due(&self) -> bool {
        crate::timer::next_ns(self) <= self.now_ns()
    }

    #[inline(always)]
    unsafe fn deliver(&self, woken: Vec<Self::Woken>) {
        let n = woken.len();
        let p = super::current::current_p(self);
        // SAFETY: `poll` claimed every token it returned (per the contract, these); each is
        // notified once, here; the P is what `current_p` gives.
        unsafe { super::ready::ready_batch(p, woken) };
        // The batch stays on the P unless the OS keeps preempting this M.
        if let Some(p) = p {
            super::ready::spread_batch(self, p, n);
        }
        crate::timer::run_all_due(self, 0);
    }
}
