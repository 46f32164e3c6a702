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

use core::sync::atomic::Ordering;
use std::sync::Arc;

use super::m_loop::m_main;
use super::{MCtx, MShared, NO_P};
use crate::processor::P_IDLE;
use crate::runtime::Shared;

/// Idle Ps and Ms (Go's `sched.pidle`, `sched.midle` under `sched.lock`). An M on `ms`
/// sleeps on its parker (or is about to); the poller takes itself off the list while it
/// blocks in epoll.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    pub(crate) ps: Vec<usize>,
    pub(crate) ms: Vec<Arc<MShared>>,
}

/// Gives the M's P back: to an idle M that has a locked G waiting in its mailbox, else to
/// the idle list, with this M beside it in the same critical section (so a `wakep` that
/// sees the idle P also finds an idle M, and does not start a thread for nothing).
pub(super) fn release_p(m: &MCtx) {
    let p = m.p.replace(NO_P);
    // An idle spell is not a run (`time_run`).
    m.shared.ps[p].run_started.store(0, Ordering::Relaxed);
    // SAFETY: `p` was this M's P (`m.p`), given up just above.
    unsafe { put_idle_p_with(&m.shared, p, Some(&m.ms)) };
}

/// Gives P `p` to an idle M with a locked G waiting, or to the idle list.
///
/// # Safety
/// The caller holds P `p` and gives it up.
pub(crate) unsafe fn put_idle_p(sh: &Shared, p: usize) {
    // SAFETY: the same contract.
    unsafe { put_idle_p_with(sh, p, None) };
}

/// `put_idle_p`, listing `idle_m` as idle in the same critical section.
///
/// # Safety
/// As for `put_idle_p`.
unsafe fn put_idle_p_with(sh: &Shared, p: usize, idle_m: Option<&Arc<MShared>>) {
    sh.ps[p].status.store(P_IDLE, Ordering::SeqCst);
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
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
    sh.npidle.fetch_add(1, Ordering::SeqCst);
}

/// Takes an idle P for the calling M if it is on the idle list (a waker that already took
/// it off is handing it a P: `None`, and the M will find it in `nextp`).
fn take_p_if_idle(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    let i = idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms))?;
    let p = idle.ps.pop()?;
    idle.ms.swap_remove(i);
    sh.npidle.fetch_sub(1, Ordering::SeqCst);
    Some(p)
}

/// Whether an idle M should block in the netpoller rather than on its futex: something
/// waits on a socket or a timer.
fn needs_poller(sh: &Shared) -> bool {
    sh.poll.has_waiters() || crate::timer::armed(sh)
}

/// Called with no P: re-checks for work, then polls the network or sleeps until handed a
/// P. `None` on shutdown.
pub(super) fn stop_m(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    let was_spinning = m.spinning.replace(false);
    if was_spinning {
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    // The M is on the idle list already (`release_p`, or `run_blocking` without a P).
    // Pairs with the fence in `wakep`: either the pusher sees our P idle and us on the
    // list, or we see its work (or its timer) here.
    core::sync::atomic::fence(Ordering::SeqCst);
    if any_work(m)
        && let Some(p) = take_p_if_idle(m)
    {
        if was_spinning {
            m.spinning.set(true);
            sh.nmspinning.fetch_add(1, Ordering::SeqCst);
        }
        return Some(p);
    }
    loop {
        let p = m.ms.nextp.swap(NO_P, Ordering::AcqRel);
        if p != NO_P {
            // `wakep` counted us as spinning (a mailbox hand-off did not).
            m.spinning.set(m.ms.next_spinning.load(Ordering::Acquire));
            return Some(p);
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        if m.ms.mailbox_len.load(Ordering::SeqCst) > 0
            && let Some(p) = take_p_if_idle(m)
        {
            return Some(p);
        }
        if needs_poller(sh) && sh.poll.try_acquire() {
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
fn poll_blocking(m: &MCtx) -> Option<usize> {
    let sh = &*m.shared;
    {
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.ms.iter().position(|x| Arc::ptr_eq(x, &m.ms)) {
            Some(i) => {
                idle.ms.swap_remove(i);
            }
            None => {
                // A waker took us off the list and is handing us a P: its `hand_p` unparks
                // us (a permit if it comes first), so sleep rather than spin until then.
                drop(idle);
                sh.poll.release(sh.now_ns());
                m.ms.parker.park();
                return None;
            }
        }
    }
    // Publish how long we block before the last look at the timers and queues, so that a
    // timer added or work pushed from here on breaks us out (`timer_added`, `wakep`).
    sh.poll.blocked_until.store(u64::MAX, Ordering::SeqCst);
    let mut woken = Vec::new();
    // Queued work is a reason not to block only if there is an idle P to run it on; if
    // every P is busy, their Ms run it, and spinning here would only burn a CPU (there can
    // be more Ms than Ps once blocking sections have started extra Ms).
    let can_run_work = any_work(m) && sh.npidle.load(Ordering::SeqCst) > 0;
    if !can_run_work && !sh.shutdown.load(Ordering::SeqCst) {
        let next = crate::timer::next_ns(sh);
        sh.poll.blocked_until.store(next, Ordering::SeqCst);
        // A timer added between `next_ns` and the store above saw no blocked poller and
        // woke an M instead, or sees our deadline and breaks us: either way nothing waits.
        let timeout = crate::timer::until_next(sh);
        if timeout != Some(core::time::Duration::ZERO) {
            sh.poll.poll(timeout, &mut woken);
        }
    }
    sh.poll.blocked_until.store(0, Ordering::SeqCst);
    sh.poll.release(sh.now_ns());
    let due = crate::timer::next_ns(sh) <= sh.now_ns();
    let p = if woken.is_empty() && !due && !any_work(m) {
        None
    } else {
        let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
        let p = idle.ps.pop();
        if p.is_some() {
            sh.npidle.fetch_sub(1, Ordering::SeqCst);
        }
        p
    };
    if p.is_none() {
        sh.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ms
            .push(m.ms.clone());
    }
    // With a P, the woken Gs go on it (`make_runnable` sees `m.p`); without one, to the
    // global queue for the busy Ps.
    m.p.set(p.unwrap_or(NO_P));
    for t in woken {
        // SAFETY: `poll` claimed every token it returned; each is notified once, here.
        unsafe { t.notify() };
    }
    crate::timer::run_all_due(sh, 0);
    m.p.set(NO_P);
    p
}

fn any_work(m: &MCtx) -> bool {
    let sh = &*m.shared;
    sh.global.len() > 0
        || m.ms.mailbox_len.load(Ordering::SeqCst) > 0
        || sh.ps.iter().any(|p| !p.runq.is_empty())
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
pub(crate) unsafe fn start_m(sh: &Shared, p: usize, spinning: bool) {
    let mm = sh.idle.lock().unwrap_or_else(|e| e.into_inner()).ms.pop();
    if let Some(mm) = mm {
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { mm.hand_p(p, spinning) };
        return;
    }
    // Under the list's lock, so that `Runtime::drop`, which sets `shutdown` and then empties
    // the list, joins every M started before and none is started after.
    let mut extra = sh.extra_ms.lock().unwrap_or_else(|e| e.into_inner());
    if !sh.shutdown.load(Ordering::SeqCst)
        && let Some(rt) = sh.self_arc()
    {
        let ms = Arc::new(MShared::new());
        let n = {
            let mut all = sh.all_ms.lock().unwrap_or_else(|e| e.into_inner());
            all.push(ms.clone());
            all.len() - 1
        };
        let spawned = std::thread::Builder::new()
            .name(format!("tessera-m{n}"))
            .spawn(move || {
                // SAFETY: per the contract we hold `p`, and the new M gets it (if the
                // thread does not start, the idle list gets it below instead).
                unsafe { m_main(rt, ms, p, spinning) }
            });
        if let Ok(t) = spawned {
            extra.push(t);
            return;
        }
    }
    drop(extra);
    // No thread: the P goes back idle; a busy M or sysmon will find the work later.
    if spinning {
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: per the contract we hold `p`, and no M was given it.
    unsafe { put_idle_p(sh, p) };
}

/// Starts an idle M on an idle P if there is work nobody is looking for (Go's `wakep`).
pub(crate) fn wakep(sh: &Shared) {
    core::sync::atomic::fence(Ordering::SeqCst);
    wakep_unfenced(sh);
}

/// `wakep` without the fence that orders the caller's push before the idle check.
pub(super) fn wakep_unfenced(sh: &Shared) {
    if sh.npidle.load(Ordering::SeqCst) == 0 || sh.nmspinning.load(Ordering::SeqCst) != 0 {
        return;
    }
    if sh
        .nmspinning
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    let mut idle = sh.idle.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = idle.ps.pop() else {
        // Give the spinning count back under the lock (as Go does): a pusher that saw our
        // count and left its G to "the spinner" is then ordered before the next M that
        // lists itself idle, whose re-check finds the G. Decrementing after the unlock lost
        // that G in the loom model (idle_model.rs).
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        return;
    };
    sh.npidle.fetch_sub(1, Ordering::SeqCst);
    if let Some(mm) = idle.ms.pop() {
        drop(idle);
        // SAFETY: we took `p` off the idle list above, so it is ours to hand over.
        unsafe { mm.hand_p(p, true) };
        return;
    }
    if sh.poll.blocked_until.load(Ordering::SeqCst) != 0 {
        // The only idle M is blocked in epoll: break it out; it takes the P itself.
        idle.ps.push(p);
        sh.npidle.fetch_add(1, Ordering::SeqCst);
        sh.nmspinning.fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        sh.poll.wake();
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

pub(super) fn reset_spinning(m: &MCtx) {
    m.spinning.set(false);
    let sh = &*m.shared;
    if sh.nmspinning.fetch_sub(1, Ordering::SeqCst) == 1 {
        wakep(sh);
    }
}
