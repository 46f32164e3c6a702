//! Parking the running G and making a G runnable again (Go's `gopark`, `ready` and the
//! queueing half of `newproc`): the G state transitions of coroutine.rs, and where a
//! runnable G is queued and whether an idle M is woken for it.

use core::sync::atomic::Ordering;

use super::MShared;
use super::current::{current_g, current_p};
use super::idle::{wakep, wakep_unfenced};
use super::m_loop::switch_out;
use crate::coroutine::{
    GRef, NOTIFIED, PARKED, RUNNABLE, RUNNING, SCAN_READIED, SCANNING, Switch, WaitReason,
};
use crate::processor::{P, PENDING_RUNNEXT, PENDING_SHORT};
use crate::runtime::Shared;
use crate::wait::Token;
use std::sync::Arc;

/// Parks the running G, `g`, until `ready` (Go's `gopark`).
///
/// The G stays RUNNING until its M has switched away from its stack and made it PARKED
/// (m_loop.rs `execute_inner`), so this takes no read-modify-write of its own: a `ready`
/// that comes first finds it RUNNING and makes it NOTIFIED, and the M then resumes it at
/// once (a switch there and back, where the G used to return without one; rare, since a
/// waker needs the token the G has only just queued). One locked instruction fewer per
/// wait.
///
/// # Safety
/// `g` is the G running on the calling thread (its wait token names it: `Token::wait`),
/// which saves looking it up again.
#[inline]
pub(crate) unsafe fn park_current(g: GRef, reason: WaitReason) {
    debug_assert_eq!(g, current_g(), "park_current of another coroutine");
    // The global queue tells a woken G by its wait reason (global_queue.rs `woken`).
    debug_assert_ne!(
        reason as u8,
        WaitReason::None as u8,
        "a wait needs a reason"
    );
    // SAFETY: per the contract, the running G, live while it runs.
    let gr = unsafe { &*g };
    gr.wait_reason.store(reason as u8, Ordering::Relaxed);
    // SAFETY: `gr` is the G running here.
    unsafe { switch_out(gr, Switch::Park) };
    gr.wait_reason
        .store(WaitReason::None as u8, Ordering::Relaxed);
}

/// Makes a parked (or parking) G runnable (Go's `ready`). Called by a token's claimant.
///
/// # Safety
/// The caller won the token `g` waits on (wait.rs) and has not readied it yet, so the G is
/// alive, in its wait, and cannot leave it (or finish) before this returns.
#[inline]
pub(crate) unsafe fn ready(g: GRef) {
    // SAFETY: per the contract.
    unsafe { ready_from(g, None) };
}

/// `ready` by a claimant that has looked up already what `current_p` gives for `g`'s
/// runtime: `here` is `Some` of that (a channel's claimant, `Claimed`), or `None` to look
/// it up here.
///
/// # Safety
/// As for `ready`; and `here`, if `Some`, is what `current_p` of `g`'s runtime returns now.
#[inline]
pub(crate) unsafe fn ready_from(g: GRef, here: Option<Option<&P>>) {
    // SAFETY: per the contract.
    let gr = unsafe { &*g };
    loop {
        let s = gr.state.load(Ordering::Acquire);
        match s {
            RUNNING => {
                if gr
                    .state
                    .compare_exchange(s, NOTIFIED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
            }
            PARKED => {
                if gr
                    .state
                    .compare_exchange(PARKED, RUNNABLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
            // A goroutine profile is walking its stack: the profiler queues it when done
            // (`end_scan`), so neither side waits for the other.
            SCANNING => {
                if gr
                    .state
                    .compare_exchange(SCANNING, SCAN_READIED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
            }
            _ => unreachable!("ready on a G in state {s}"),
        }
    }
    // SAFETY: our CAS made the PARKED G RUNNABLE, so it is ours to queue; `here` per the
    // contract.
    unsafe { queue_readied(g, here) };
}

/// Takes a PARKED G out of the scheduler's hands for a goroutine profile's walk of its
/// stack (Go's `castogscanstatus`): false if it is not PARKED (then it may be running or
/// about to). Until `end_scan`, nobody resumes it: `ready` leaves it to `end_scan`, and
/// only a PARKED or RUNNABLE G is ever resumed or cancelled.
pub(crate) fn begin_scan(g: &crate::coroutine::G) -> bool {
    g.state
        .compare_exchange(PARKED, SCANNING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Gives a G back after its walk: PARKED again, or, if it was readied meanwhile, RUNNABLE
/// and queued, as `ready` would have done.
///
/// # Safety
/// `g` is a live G that `begin_scan` took, and has not been given back.
pub(crate) unsafe fn end_scan(g: GRef) {
    // SAFETY: per the contract it is live and ours.
    let gr = unsafe { &*g };
    if gr
        .state
        .compare_exchange(SCANNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SCAN_READIED: its waker won its token and left the rest to us. Nobody else can
        // change its state now.
        debug_assert_eq!(gr.state.load(Ordering::Relaxed), SCAN_READIED);
        gr.state.store(RUNNABLE, Ordering::Release);
        // SAFETY: RUNNABLE, switched out, on no queue, and ours.
        unsafe { queue_readied(g, None) };
    }
}

/// The second half of `ready`: queues a G that was PARKED and has just been made RUNNABLE.
/// Always inlined: out of line, `ready` stopped inlining `queue` (callgrind, a channel
/// ping-pong on one P: +14 instructions per round trip).
///
/// # Safety
/// `g` is RUNNABLE, switched out and on no run queue, and the caller gives it up; `here`
/// as for `ready_from`.
#[inline(always)]
unsafe fn queue_readied(g: GRef, here: Option<Option<&P>>) {
    // SAFETY: per the contract.
    let gr = unsafe { &*g };
    // SAFETY: G's runtime outlives its Gs (a runtime that shuts down with live Gs leaks
    // its shared state on purpose, see runtime.rs).
    let sh = unsafe { &*gr.rt };
    if sh.shutdown.load(Ordering::SeqCst) {
        // No M will run it again: it stays where it is, leaked with its runtime.
        return;
    }
    sh.stamp_runnable(gr);
    // Then it goes on the caller's P's `runnext` if the caller is an M of its runtime, on
    // its locked M, or on the global queue, and an M is made sure to look.
    let locked = gr.locked_m.get();
    if !locked.is_null() {
        // SAFETY: per the contract; `locked_m` is its own.
        unsafe { mail(g, locked) };
        return;
    }
    // Only one call of `queue` here, so that it stays inlined.
    let p = match here {
        Some(p) => p,
        None => current_p(sh),
    };
    // SAFETY: per the contract; `p` is `current_p(sh)` (`here`'s contract), and `g` is
    // locked to no M.
    unsafe { queue(sh, p, g) };
}

/// Hands a RUNNABLE G locked to an M (`lock_to_thread`) to that M's mailbox and wakes it.
///
/// # Safety
/// `g` is a live RUNNABLE G, switched out and on no run queue, which the caller gives up;
/// `locked` is its `locked_m`, an M of its runtime.
#[inline(never)]
unsafe fn mail(g: GRef, locked: *const MShared) {
    // SAFETY: a locked G's M lives as long as the runtime.
    let m = unsafe { &*locked };
    // SAFETY: per the contract, `g` is RUNNABLE, locked to `m` and ours to give up.
    unsafe { m.push_mail(g) };
    m.parker.unpark();
}

/// Queues a RUNNABLE G that is not locked to an M: on `p`, which must be `current_p(sh)`
/// (a spawn has it at hand), or globally if `None`; then makes sure an M will look.
///
/// # Safety
/// `g` is a live RUNNABLE G of `sh` locked to no M, switched out and on no run queue,
/// which the caller gives up (it must not touch `g` after this); `p` is `current_p(sh)`.
#[inline]
pub(crate) unsafe fn queue(sh: &Shared, p: Option<&P>, g: GRef) {
    match p {
        Some(p) => {
            // SAFETY: per the contract this thread holds `p`, and `g` is ours to queue.
            unsafe { push_local(sh, p, g, true) };
            let pending = if p.runq.ring_is_empty() {
                PENDING_RUNNEXT
            } else if sh.runs_short() || p.delivering.load(Ordering::Relaxed) {
                PENDING_SHORT
            } else {
                0
            };
            if pending != 0 {
                // No idle M is woken when
                // - only `runnext` holds work: the G running here will most likely block
                //   soon (it just woke a partner: a channel hand-off, a join) and let this
                //   M run it at once. Waking an idle M would cost a futex wake-up on this
                //   path and pull the pair apart onto two Ps (tokio skips the notification
                //   for its LIFO slot for the same reason);
                // - the runtime's coroutines run too briefly to be worth moving
                //   (`MOVE_WORTH_NS`): this P runs them sooner than another could take
                //   them over, and each one moved costs this P more than running it. Go
                //   wakes an M for every new G (golang/go#54622 discusses the cost; the
                //   crate documentation, "Wake-ups", has ours);
                // - the G is one of a batch the netpoller woke, which stays on the P that
                //   polled (`ready_batch`).
                // Either way the work is not lost, it is on a running P. If the G running
                // here keeps running, or the queue stops draining, sysmon delivers the
                // wake-up (sysmon.rs).
                if p.wake_pending.load(Ordering::Relaxed) < pending {
                    p.wake_pending.store(pending, Ordering::Relaxed);
                }
                return;
            }
            // A G on the queue of the P we hold cannot be stranded (this M runs it if no
            // one steals it), so this wake-up is for parallelism only and needs no fence
            // against an M going idle (`stop_m` pairs with the fence in `wakep`).
            wakep_unfenced(sh);
            return;
        }
        // SAFETY: per the contract, `g` is live, RUNNABLE, on no queue and ours to give up.
        // If it was readied from a wait (a timer sysmon fired, a plain thread's channel
        // send), it goes ahead of the global queue's backlog (global_queue.rs).
        None => unsafe { sh.global.push(g) },
    }
    wakep(sh);
}

/// Readies the coroutines one poll of the network woke (claimed wait tokens) onto `p`, the
/// P this M holds, or the global queue if `None`. On a P the batch wakes no idle M: `queue`
/// marks the wake-up pending instead (`P::delivering`), as for coroutines that run short.
///
/// The P that polled runs the batch and polls again once it has; sysmon wakes an M if the
/// batch waits too long there (sysmon.rs, "Backlog"). Waking one per batch, as `queue`
/// would, splits each batch between two Ps that then both go idle sooner, and the idle one
/// blocks in epoll and takes each later event with a wake-up of its own (a futex or
/// epoll wake-up costs the thread that makes it several µs on this project's VM): echo with
/// 100 connections on 2 Ps had one voluntary switch per ~6 requests that way, against one
/// per ~55 with the batch kept on its P, and a fifth to a quarter less server CPU per
/// request. The price: while the OS deschedules the M that holds a batch (a machine busy
/// with other processes), the batch waits for sysmon's rescue, a millisecond or more,
/// where a second M would already have taken half of it; on the shared 2-vCPU machine the
/// echo comparison's p99 was 2-4x Go's in rounds where other processes took most of a CPU.
/// The exception: an M the OS keeps preempting wakes an idle M for half the batch
/// (`spread_batch`, called by the deliverers after this).
///
/// # Safety
/// Every token was claimed by the poll that returned it and is notified once, here; `p` is
/// `current_p(sh)`.
pub(crate) unsafe fn ready_batch(p: Option<&P>, woken: Vec<Arc<Token>>) {
    if let Some(p) = p {
        p.delivering.store(true, Ordering::Relaxed);
    }
    for t in woken {
        // SAFETY: per the contract, claimed and notified once, here.
        unsafe { t.notify() };
    }
    if let Some(p) = p {
        p.delivering.store(false, Ordering::Relaxed);
    }
}

/// OS preemptions of the calling M's thread since it last delivered a netpoll batch that
/// make the next batch wake an idle M (`spread_batch`). One can be a housekeeping thread
/// (sysmon, a kworker) taking the CPU for a moment; two or more within one batch's run mean
/// a runnable thread keeps competing for this CPU.
pub(crate) const CONTENDED_PREEMPTS: u64 = 2;

thread_local! {
    /// The calling thread's involuntary switches when it last delivered a batch.
    static PREEMPTS_SEEN: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Whether a netpoll batch of `n` coroutines should wake an idle M to take half of it
/// (`spread_batch`): there is more than one to share, a P is idle (`idle_ps`) for the M to
/// take, and the OS preempted the delivering M at least `CONTENDED_PREEMPTS` times since
/// it last looked (`preempts`, a system call, made only when the first two hold).
#[inline]
pub(crate) fn spread_due(n: usize, idle_ps: usize, preempts: impl FnOnce() -> u64) -> bool {
    n >= 2 && idle_ps > 0 && preempts() >= CONTENDED_PREEMPTS
}

/// After `ready_batch` put `n` coroutines on `p`, the P this M holds: wakes an idle M to
/// steal half of them if the OS keeps preempting this M (`spread_due`), as tokio wakes a
/// parked worker after every poll that readied more than one task.
///
/// A batch otherwise stays on its P (see `ready_batch`), which is right while this M has a
/// CPU to itself: echo with one client thread on 2 Ps runs about ten times as many
/// wake-ups per request (0.019 -> 0.181 server switches a request) and ~0.7x the
/// requests/s with tokio's rule. But when more threads are runnable than there are CPUs
/// (echo with two client threads), the one M doing all the work uses more than its share
/// of its CPU, and the kernel (EEVDF) lets every client thread its replies wake preempt it:
/// each reply then costs the server a switch out and back and the client a sleep and a
/// wake-up, for about one request each (`perf sched`: the M preempted on every sendto).
/// Spread over two Ms, each uses less, is preempted less, and a client finds several
/// replies when it runs.
///
/// The wake-up is for parallelism only (the work is on the P we hold), so it needs no
/// fence (as in `queue`). If an M now spins for the work, the deferred wake-up the batch
/// left pending (`queue`, `P::delivering`) is served, and sysmon must not deliver it again.
pub(crate) fn spread_batch(sh: &Shared, p: &P, n: usize) {
    // With no idle P the wake-up would start nothing (`wakep`), so the preemptions are not
    // read either: `getrusage` was one system call per batch, 0.027 a request in echo with
    // two client threads, where both Ps are mostly busy (0.003-0.008 without). The next
    // batch that finds an idle P counts the preemptions since the last read, which may
    // span several batches: preemptions of an M while both Ps were busy, contention all
    // the same.
    let due = spread_due(n, sh.npidle.load(Ordering::Relaxed), || {
        let now = tessera_sys::thread::involuntary_switches();
        let before = PREEMPTS_SEEN.with(|c| c.replace(now));
        now.saturating_sub(before)
    });
    if !due {
        return;
    }
    wakep_unfenced(sh);
    if sh.nmspinning.load(Ordering::SeqCst) != 0 {
        p.wake_pending.store(0, Ordering::Relaxed);
    }
}

/// Queues `g` on `p` (in `runnext` if `next`); a full ring spills half to the global
/// queue.
///
/// # Safety
/// The calling thread's M holds `p` (only its owner pushes on a run queue), and `g` is a
/// live RUNNABLE G of `sh` on no run queue, which the caller gives up: whichever M takes it
/// off a queue runs it (`execute`).
#[inline]
pub(super) unsafe fn push_local(sh: &Shared, p: &P, g: GRef, next: bool) {
    // SAFETY: a run queue holds live RUNNABLE Gs (and `g` is one, per the contract), and
    // what it spills is ours to queue. Woken Gs among them go ahead of the global queue's
    // backlog: a P that fires a heap of timers at once overflows its ring with them.
    p.runq
        .push(g, next, &mut |batch| unsafe { sh.global.push_batch(batch) });
}

#[cfg(test)]
mod tests {
    use super::{CONTENDED_PREEMPTS, spread_due};

    /// The rule of `spread_batch`: a netpoll batch wakes an idle M only if there is more
    /// than one coroutine to share, a P is idle, and the OS preempted the delivering M at
    /// least `CONTENDED_PREEMPTS` times since its previous look; otherwise it stays on its
    /// P.
    #[test]
    fn only_a_preempted_m_spreads_its_batch() {
        for n in [0, 1] {
            for preempts in [0, 1, CONTENDED_PREEMPTS, 100] {
                assert!(
                    !spread_due(n, 1, || preempts),
                    "{n} coroutines, {preempts} preemptions"
                );
            }
        }
        for n in [2, 30, 128] {
            for preempts in 0..CONTENDED_PREEMPTS {
                assert!(
                    !spread_due(n, 1, || preempts),
                    "{n} coroutines, {preempts} preemptions"
                );
            }
            for preempts in [CONTENDED_PREEMPTS, CONTENDED_PREEMPTS + 1, 1_000] {
                assert!(
                    spread_due(n, 1, || preempts),
                    "{n} coroutines, {preempts} preemptions"
                );
            }
        }
    }

    /// With no idle P there is nobody to wake, and the preemptions (a `getrusage` system
    /// call) are not read at all: the count then carries over to the next batch that could
    /// spread.
    #[test]
    fn no_idle_p_no_spread_and_no_system_call() {
        for n in [0, 1, 2, 30, 128] {
            assert!(!spread_due(n, 0, || panic!(
                "preemptions read with no idle P ({n})"
            )));
        }
        let mut read = 0;
        assert!(spread_due(30, 1, || {
            read += 1;
            CONTENDED_PREEMPTS
        }));
        assert_eq!(read, 1);
    }
}
