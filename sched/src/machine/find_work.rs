//! Finding a runnable G for a P (Go's `findRunnable`): the P's own queue and mailbox, the
//! global queue, the netpoller without blocking, then stealing from other Ps (and firing
//! their due timers).
//!
//! Time slices (Go's `inheritTime` and `forcePreemptNS`): a G taken from `runnext` was
//! just made runnable by the G that ran before it (a woken receiver, a new coroutine) and
//! inherits that G's time slice; any other G starts a new slice (`P::slice`). Two
//! coroutines that hand the P to each other over a rendezvous channel therefore share one
//! slice, however many hand-offs they make. When a slice has lasted 10 ms while Gs wait in
//! the ring, sysmon sets `P::preempt`, and the P's next schedule moves the `runnext` G to
//! the back of the ring (`RunQueue::demote_runnext`): everything queued before it runs
//! first, and the pair gets a new slice when its turn comes. Nothing on the switch path
//! reads a clock; the cost is a relaxed load per schedule and a store per new slice.
//! (Go also preempts a G that merely runs long; Rust has no safe asynchronous preemption,
//! so such a G only shows up in sysmon's long-run count.)

use core::ptr;
use core::sync::atomic::Ordering;

use super::MCtx;
use super::current::fastrand;
use super::idle::try_spin;
use crate::coroutine::GRef;
use crate::processor::{P, PENDING_RUNNEXT, PENDING_SHORT};
use crate::runqueue::RING;
use crate::runtime::Shared;

/// Takes up to `max` Gs from the global queue: returns the first, the rest go on `p`'s
/// ring, which must be empty (the caller found nothing on it).
///
/// # Safety
/// The calling thread's M holds `p` (only its owner pushes on a run queue).
unsafe fn take_global(sh: &Shared, p: &P, max: usize) -> Option<GRef> {
    let mut batch = [ptr::null_mut(); RING / 2];
    let n = sh.global.pop_batch(sh.ps.len(), &mut batch[..max]);
    if n == 0 {
        return None;
    }
    // SAFETY: taken off the global queue, so ours until queued.
    unsafe { warm_batch(&batch[..n]) };
    p.runq.push_many(&batch[1..n]);
    Some(batch[0])
}

/// Asks for the records of a batch of Gs just taken from another queue, then for the
/// first lines of their stacks and, for a G that has not run yet, the line of the join
/// state its return completes (both read from the records, which the first pass has in
/// flight), all at once (prefetch.rs). The batch runs next, and the queue it came from was
/// long (it overflowed to the global queue), so its Gs have most likely left the cache,
/// and so has a new G's join state, written at its spawn and not since.
/// At most 128 Gs of 4 + 7 + 1 lines (the record lines a run touches, coroutine.rs; the
/// stack lines, gfree.rs `warm_stack`; the join state): 96 KiB, which an L2 holds until
/// they run (1 MiB on the measuring machine). Spawn-all at N = 100,000 on one P: 0.42 ->
/// 0.28 s of user time for its seven rounds (records and stacks).
///
/// # Safety
/// The Gs are live and ours (taken off a queue, not yet queued again).
unsafe fn warm_batch(batch: &[GRef]) {
    for &g in batch {
        crate::prefetch::record_lines(g, crate::coroutine::RUN_LINES);
    }
    for &g in batch {
        // SAFETY: per the contract the G is ours, so nobody changes its `stack_base` (0 for
        // a bare record, which `warm_stack` skips: its first run binds a warm stack).
        crate::gfree::warm_stack(unsafe { (*g).stack_base.load(Ordering::Relaxed) });
        // SAFETY: as above; the G is ours, so nobody changes `start` or `cancel` meanwhile.
        let (new, cancel) = unsafe { ((*g).start.get().is_some(), (*g).cancel.get()) };
        if new && let Some(hook) = cancel {
            crate::prefetch::line(hook.state_addr());
        }
    }
}

/// Schedule ticks per timed run (`time_run`): two clock reads every 64 schedules.
const RUN_SAMPLE: u32 = 64;

/// Times one run in RUN_SAMPLE for the runtime's run-length estimate (`Shared::note_run`):
/// from the schedule at a multiple of RUN_SAMPLE to the next one, which is the run of the
/// G picked in between plus one pass of the scheduler. Out of line, so the switch path
/// carries only the tick test; a P that went idle in between drops the sample
/// (`release_p`).
#[cold]
#[inline(never)]
fn time_run(sh: &Shared, p: &P, tick: u32) {
    if tick.is_multiple_of(RUN_SAMPLE) {
        p.run_started
            .store(crate::sys::monotonic_ns(), Ordering::Relaxed);
    } else {
        let start = p.run_started.swap(0, Ordering::Relaxed);
        if start != 0 {
            sh.note_run(crate::sys::monotonic_ns().saturating_sub(start));
        }
    }
}

/// Go's findRunnable, and the bookkeeping of time slices: a G that does not inherit the
/// running slice from `runnext` starts a new one.
///
/// # Safety
/// `p` is the P `m` holds (`m.p`).
#[inline]
pub(super) unsafe fn find_runnable(m: &MCtx, p: &P) -> Option<GRef> {
    let sh = &*m.shared;
    if sh.shutdown.load(Ordering::Relaxed) {
        // The runtime is being dropped: stop between coroutines even if some are still
        // runnable (one that yields in a loop would otherwise keep this M for ever).
        return None;
    }
    if p.preempt.load(Ordering::Relaxed) {
        p.preempt.store(false, Ordering::Relaxed);
        // SAFETY: a run queue holds live RUNNABLE Gs, and what it spills is ours to queue.
        p.runq
            .demote_runnext(&mut |batch| unsafe { sh.global.push_batch(batch) });
    }
    // SAFETY: per the contract.
    let (g, inherit) = unsafe { find_runnable_inner(m, p) }?;
    if !inherit {
        p.slice.store(
            p.slice.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
    Some(g)
}

/// Finds a G to run, and whether it inherits the running time slice: the P's own queue
/// here, inlined into the M loop; the rest out of line (`find_elsewhere`).
///
/// # Safety
/// `p` is the P `m` holds (`m.p`).
#[inline]
unsafe fn find_runnable_inner(m: &MCtx, p: &P) -> Option<(GRef, bool)> {
    let sh = &*m.shared;
    let tick = p.tick.load(Ordering::Relaxed).wrapping_add(1);
    p.tick.store(tick, Ordering::Relaxed);
    crate::timer::run_due(sh, p);
    if tick % RUN_SAMPLE < 2 {
        time_run(sh, p, tick);
    }
    let pending = p.wake_pending.load(Ordering::Relaxed);
    if pending == PENDING_RUNNEXT || (pending == PENDING_SHORT && p.runq.len() <= 1) {
        // We are scheduling now: the runnext G (or whatever is left) is about to run here.
        p.wake_pending.store(0, Ordering::Relaxed);
    }
    if tick.is_multiple_of(2)
        && let Some(g) = m.ms.pop_mail()
    {
        return Some((g, false));
    }
    // Fairness: without this, two Gs that keep waking each other in `runnext` would starve
    // the global queue (proc.go: "Check the global runnable queue once in a while").
    if tick.is_multiple_of(61)
        && sh.global.len() > 0
        // SAFETY: per the contract this M holds `p`.
        && let Some(g) = unsafe { take_global(sh, p, 1) }
    {
        return Some((g, false));
    }
    if let Some(found) = p.runq.pop_inheriting() {
        return Some(found);
    }
    // SAFETY: per the contract.
    unsafe { find_elsewhere(m, p) }
}

/// `find_runnable_inner` once the P's own queue is empty: the mailbox, the global queue,
/// the netpoller, stealing.
///
/// # Safety
/// `p` is the P `m` holds (`m.p`), and its run queue is empty.
#[inline(never)]
unsafe fn find_elsewhere(m: &MCtx, p: &P) -> Option<(GRef, bool)> {
    let sh = &*m.shared;
    if let Some(g) = m.ms.pop_mail() {
        return Some((g, false));
    }
    // SAFETY: as above; `p`'s queue is empty (we looked just above).
    if let Some(g) = unsafe { take_global(sh, p, RING / 2) } {
        return Some((g, false));
    }
    if sh.shutdown.load(Ordering::SeqCst) {
        return None;
    }
    // The network, without blocking, if anything waits on it and nobody else looks or is
    // blocked in it (netpoll.rs `try_peek`).
    if sh.poll.has_waiters() && sh.poll.try_peek() {
        let mut woken = Vec::new();
        sh.poll.poll(Some(core::time::Duration::ZERO), &mut woken);
        sh.poll.end_peek(sh.now_ns());
        if !woken.is_empty() {
            // Onto this P (we hold it): the last one lands in runnext. It stays here unless
            // the OS keeps preempting this M (`spread_batch`).
            let n = woken.len();
            // SAFETY: `poll` claimed every token it returned; each is notified once, here;
            // `p` is this M's P.
            unsafe { super::ready::ready_batch(Some(p), woken) };
            super::ready::spread_batch(sh, p, n);
            if let Some(g) = p.runq.pop() {
                return Some((g, false));
            }
        }
    }
    let nprocs = sh.ps.len();
    if nprocs == 1 {
        return None;
    }
    // Bound the spinners: at most half the busy Ps' worth (proc.go findRunnable).
    if !try_spin(m, nprocs) {
        return None;
    }
    const PASSES: usize = 4;
    for pass in 0..PASSES {
        // A random start and a stride coprime with nprocs visit every P once in a random
        // order (Go's randomOrder).
        let start = (fastrand() % nprocs as u64) as usize;
        let stride = coprime_stride(nprocs, fastrand());
        for k in 0..nprocs {
            let v = (start + k * stride) % nprocs;
            if v == p.id {
                continue;
            }
            // The victim's M may be held up by a coroutine that does not yield, or idle:
            // its timers are ours to fire too (Go's stealWork). What they wake lands here.
            if pass == PASSES - 1
                && crate::timer::run_due(sh, &sh.ps[v])
                && let Some(g) = p.runq.pop()
            {
                return Some((g, false));
            }
            if let Some(g) = p.runq.steal_from(&sh.ps[v].runq, pass == PASSES - 1) {
                p.steals
                    .store(p.steals.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                return Some((g, false));
            }
        }
        // SAFETY: as above; stealing found nothing, so `p`'s ring is still empty.
        if let Some(g) = unsafe { take_global(sh, p, RING / 2) } {
            return Some((g, false));
        }
    }
    None
}

fn coprime_stride(n: usize, r: u64) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut s = (r % n as u64) as usize + 1;
    while gcd(s, n) != 1 {
        s = s % n + 1;
    }
    s
}
