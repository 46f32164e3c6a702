//! Sysmon: a thread without a P that watches the Ps (Go's `sysmon` and `retake` in
//! proc.go). Each look:
//!
//! - **Hand-off.** A P whose M has been inside `blocking(..)` for more than 20 µs is taken
//!   away (`P_SYSCALL` → `P_IDLE` by CAS, racing the M's return) when other work waits for
//!   it: its own queue is not empty, or no M is idle or spinning to pick up the rest. The P
//!   then goes to another M, started if need be (Go's `handoffp`). After 10 ms it is taken
//!   regardless, so a long blocking call never pins a P.
//! - **Pending wake-ups.** Gs queued on a running P without waking an idle M (machine/ready.rs,
//!   `queue`: only `runnext` held work, or the runtime's coroutines run too briefly to be
//!   worth moving) must not wait behind a coroutine that keeps running: a P that still
//!   has a pending wake-up, work queued and no schedule since the last look gets it
//!   delivered (`wakep`), and the woken M may steal.
//! - **Backlog.** Nor may they wait long behind a P that keeps scheduling but does not get
//!   through its queue: if Gs that were queued on a P with a pending wake-up, or on the
//!   global queue, at one look are still there `BACKLOG_NS` later, an idle M is woken.
//!   Work conservation is thus given up for one to two milliseconds (`BACKLOG_NS`, then
//!   up to one look at the busy pace, `Pace`), and only for work that the busy P is
//!   draining on its own.
//! - **Time slices.** A P whose time slice (machine/find_work.rs, "Time slices") has lasted
//!   `FORCE_PREEMPT_NS` while Gs wait in its ring is told to end it (`P::preempt`), so a
//!   pair of coroutines handing `runnext` to each other cannot starve the rest.
//! - **Netpoll.** If nobody has polled the network for 10 ms (every M busy), sysmon polls
//!   it without blocking and queues what became ready.
//! - **Timers** overdue because every P is busy are fired here.
//! - **Long runs.** A coroutine that has run for more than 10 ms without yielding is
//!   counted (Go would preempt it; Rust gives no safe asynchronous preemption) and marked
//!   for `dump()`.
//!
//! Its sleep is 20 µs while a P is in a blocking section or after it woke an M for work
//! stuck behind a P that stopped scheduling, and doubles after 50 looks without either, up
//! to 1 ms while Ps are scheduling and 10 ms when all are idle, like Go's (`Pace`). An M
//! entering a blocking section wakes it from any longer sleep.
//!
//! It runs under `SCHED_BATCH` (`run`): its wake-ups never preempt a running thread, so on
//! a machine whose CPUs are all busy a look waits for the end of the running thread's time
//! slice (a few milliseconds at most), and on one with an idle CPU it runs at once.

use core::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::machine;
use crate::processor::{P, P_IDLE, P_RUNNING, P_SYSCALL, PENDING_RUNNEXT, PENDING_SHORT};
use crate::runtime::Shared;

pub(crate) const MIN_DELAY_US: u64 = 20;
const BUSY_DELAY_US: u64 = 1_000;
const MAX_DELAY_US: u64 = 10_000;
/// A blocking section shorter than this keeps its P (Go: one sysmon tick, at least 20 µs).
const RETAKE_AFTER_NS: u64 = 20_000;
/// After this, a blocking section loses its P even when nothing else seems to wait.
const RETAKE_ANYWAY_NS: u64 = 10_000_000;
const FORCE_POLL_NS: u64 = 10_000_000;
const LONG_RUN_NS: u64 = 10_000_000;
/// A time slice (Go's `forcePreemptNS`).
pub(crate) const FORCE_PREEMPT_NS: u64 = 10_000_000;
/// Queued work that has waited this long gets an idle M even from a P that is scheduling.
const BACKLOG_NS: u64 = 1_000_000;

/// What sysmon remembers of a P between looks.
#[derive(Clone, Copy, Default)]
struct Seen {
    tick: u32,
    /// When sysmon first saw `tick` (runtime clock).
    since: u64,
    /// The long run at `tick` is already recorded.
    reported: bool,
    /// The P's time slice (`P::slice`) at the last look, and when sysmon first saw it.
    slice: u32,
    slice_since: u64,
}

/// Watches a queue for work that stays queued (see "Backlog" above): remembers how many
/// Gs had entered it when it last held work, and since when.
#[derive(Clone, Copy, Default)]
struct Backlog {
    mark: u32,
    since: u64,
    waiting: bool,
}

impl Backlog {
    /// `taken`, `added`: how many Gs have ever left and entered the queue (wrapping).
    /// True when Gs that were queued `BACKLOG_NS` ago or earlier are still queued.
    fn stale(&mut self, taken: u32, added: u32, now: u64) -> bool {
        // Were all the Gs seen last time taken since? (Differences stay far below 2^31.)
        let left = self.mark.wrapping_sub(taken) as i32 > 0;
        if self.waiting && left {
            if now.saturating_sub(self.since) < BACKLOG_NS {
                return false;
            }
            self.waiting = false;
            return true;
        }
        *self = Self {
            mark: added,
            since: now,
            waiting: added != taken,
        };
        false
    }
}

pub(crate) fn run(sh: Arc<Shared>) {
    // Sysmon's timed wake-ups (up to a thousand a second while Ps are busy, `Pace`) must not
    // preempt the Ms they watch. As a normal thread each one did, on a machine whose CPUs
    // the Ms and their clients keep busy: echo with 2 client threads on the 2-CPU machine,
    // 8 interleaved rounds, 176k req/s and 41k server context switches in a round, against
    // 202k and 11k with sysmon looking every 10 ms instead (but p99 4.20 -> 4.72 ms: stuck
    // work rescued later). Under `SCHED_BATCH` sysmon keeps its pace and its share of the
    // CPU, and a wake-up on a busy CPU waits for the running thread's slice to end instead:
    // in another 8 rounds 161k -> 183k req/s, 35k -> 7k switches, p99 4.29 -> 4.41 ms (Go
    // 4.51 ms in the runner's comparison). Where the kernel refuses the policy, sysmon runs
    // as before.
    let _ = tessera_sys::thread::no_wakeup_preemption();
    let mut seen = vec![Seen::default(); sh.ps.len()];
    let mut backlogs = vec![Backlog::default(); sh.ps.len()];
    let mut global_backlog = Backlog::default();
    let mut pace = Pace::START;
    let mut trim = crate::gfree::IdleTrim::default();
    loop {
        sh.sysmon_delay_us.store(pace.delay_us, Ordering::Relaxed);
        sh.sysmon
            .park_timeout(Some(Duration::from_micros(pace.delay_us)));
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = sh.now_ns();
        sh.coarse_ns
            .store(crate::sys::coarse_now_ns(), Ordering::Relaxed);
        let mut urgent = false;
        let mut scheduled = false;
        for ((p, seen), backlog) in sh.ps.iter().zip(seen.iter_mut()).zip(backlogs.iter_mut()) {
            let (w, s) = look_at(&sh, p, seen, backlog, now);
            urgent |= w;
            scheduled |= s;
        }
        let (taken, added) = sh.global.counts();
        if global_backlog.stale(taken, added, now) && sh.npidle.load(Ordering::SeqCst) > 0 {
            machine::wakep(&*sh);
        }
        let last = sh.poll.last_poll.load(Ordering::Relaxed);
        if sh.poll.has_waiters() && now.saturating_sub(last) > FORCE_POLL_NS && sh.poll.try_peek() {
            let mut woken = Vec::new();
            sh.poll.poll(Some(Duration::ZERO), &mut woken);
            sh.poll.end_peek(now);
            // No P here: they go to the global queue and `wakep` finds them an M.
            for t in woken {
                // SAFETY: `poll` claimed every token it returned; each is notified once,
                // here.
                unsafe { t.notify() };
            }
        }
        // Timers a millisecond overdue: their Ps' Ms are busy.
        crate::timer::run_all_due(&sh, 1_000_000);
        // Dead coroutines kept for reuse that went unused for a second.
        trim.step(&sh, now);
        pace.step(urgent, scheduled);
    }
}

/// How long sysmon sleeps between looks (Go's rule in `sysmon`): 20 µs after an urgent
/// look (a P in a blocking section, whose hand-off is due 20 µs in, or a wake-up delivered
/// for work stuck behind a P that stopped scheduling, `pending_due`), doubling after 50
/// looks without one, up to 1 ms while Ps are scheduling (a pending wake-up is delivered
/// within about that) and 10 ms when the runtime is idle.
///
/// What sysmon does for Ps that keep scheduling (a pending wake-up delivered to a P that is
/// slow to get through its queue, a preemption asked for, the network polled, timers
/// fired) does not bring the 20 µs back, as it does not in Go (only a retake resets `idle`
/// there): none of it has a follow-up due sooner than a millisecond (`BACKLOG_NS`,
/// `FORCE_PREEMPT_NS`, `FORCE_POLL_NS`, the timers' millisecond), so looking every 20 µs
/// after it only costs the busy machine a timed wake-up each time. The echo server with 2
/// client threads on a loaded machine used to have its sysmon wake ~1,700 times a second,
/// each delivery buying 50 more looks at 20 µs, and spend ~10% of the server's CPU samples
/// on it (perf, cpu-clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    delay_us: u64,
    /// Looks in a row that were not urgent.
    quiet: u32,
}

impl Pace {
    const START: Pace = Pace {
        delay_us: MIN_DELAY_US,
        quiet: 0,
    };

    /// Sets the next sleep after a look: `urgent`, sysmon must look again within 20 µs
    /// (`look_at`); `scheduled`, some P scheduled since the look before.
    fn step(&mut self, urgent: bool, scheduled: bool) {
        if urgent {
            *self = Pace::START;
            return;
        }
        self.quiet = self.quiet.saturating_add(1);
        if self.quiet > 50 {
            self.delay_us *= 2;
        }
        let cap = if scheduled {
            BUSY_DELAY_US
        } else {
            MAX_DELAY_US
        };
        self.delay_us = self.delay_us.min(cap);
    }
}

/// Looks at one P. Returns (sysmon must look again within 20 µs: the P is in a blocking
/// section, or sysmon just delivered a wake-up stuck behind it, `pending_due`; the P
/// scheduled since the last look).
fn look_at(sh: &Shared, p: &P, seen: &mut Seen, backlog: &mut Backlog, now: u64) -> (bool, bool) {
    let tick = p.tick.load(Ordering::Relaxed);
    let scheduled = tick != seen.tick;
    if scheduled {
        seen.tick = tick;
        seen.since = now;
        seen.reported = false;
    }
    let slice = p.slice.load(Ordering::Relaxed);
    if slice != seen.slice {
        seen.slice = slice;
        seen.slice_since = now;
    }
    let mut urgent = false;
    match p.status.load(Ordering::SeqCst) {
        P_SYSCALL => {
            // Its M may block for long: keep looking every 20 µs until it is retaken.
            urgent = true;
            let since = p.syscall_since.load(Ordering::Relaxed);
            let blocked_for = now.saturating_sub(since);
            let others_wait = !p.runq.is_empty()
                || sh.nmspinning.load(Ordering::SeqCst) + sh.npidle.load(Ordering::SeqCst) == 0;
            if blocked_for > RETAKE_AFTER_NS
                && (others_wait || blocked_for > RETAKE_ANYWAY_NS)
                && p.status
                    .compare_exchange(P_SYSCALL, P_IDLE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                // SAFETY: our CAS out of P_SYSCALL took the P from its blocked M: it is
                // ours, and its M finds it gone when it returns (`run_blocking`).
                unsafe { hand_off(sh, p) };
            }
        }
        P_RUNNING => {
            let (head, tail) = p.runq.positions();
            let stale = backlog.stale(head, tail, now);
            // The G running now has run for at least this long.
            let running_for = if scheduled {
                0
            } else {
                now.saturating_sub(seen.since)
            };
            let due = pending_due(
                p.wake_pending.load(Ordering::Relaxed),
                scheduled,
                running_for,
                stale,
            );
            if let Some(stuck) = due
                && !p.runq.is_empty()
                && p.wake_pending.swap(0, Ordering::Relaxed) != 0
            {
                machine::wakep(sh);
                urgent |= stuck;
            }
            if now.saturating_sub(seen.slice_since) >= FORCE_PREEMPT_NS
                && head != tail
                && !p.preempt.load(Ordering::Relaxed)
            {
                // One slice per preemption: the next look measures from here, in case the
                // P does not schedule again soon (a G running long).
                seen.slice_since = now;
                p.preempt.store(true, Ordering::Relaxed);
            }
            let gid = p.curg_id.load(Ordering::Relaxed);
            if !scheduled
                && !seen.reported
                && gid != 0
                && now.saturating_sub(seen.since) > LONG_RUN_NS
            {
                seen.reported = true;
                sh.long_runs.fetch_add(1, Ordering::Relaxed);
                sh.allgs.with_id(gid, &mut |g| {
                    g.long_runs.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        _ => {}
    }
    (urgent, scheduled)
}

/// Whether a P's pending wake-up (`P::wake_pending`) is due for delivery at this look:
/// `None` if not; `Some(stuck)` if so, `stuck` when the P has not scheduled since the last
/// look. Work stuck behind an M that stopped scheduling (a coroutine that keeps running,
/// or the OS took the M's CPU away on a busy machine) is a reason to look again within
/// 20 µs (`Pace`), since more tends to follow it; a P that schedules but is slow to get
/// through its queue is not. Echo with one client thread on a loaded machine: without the
/// quick looks after a stuck P, p99 was 7-35% above the old sysmon's in five of six
/// interleaved runs (the next stall was rescued up to 2 ms after it began, not ~1 ms).
fn pending_due(pending: u8, scheduled: bool, running_for: u64, stale: bool) -> Option<bool> {
    let due = match pending {
        // A woken partner behind a G that did not block as expected.
        PENDING_RUNNEXT => !scheduled,
        // Short work: only once it has waited long (a spawner's burst is short).
        PENDING_SHORT => running_for >= BACKLOG_NS || stale,
        _ => false,
    };
    due.then_some(!scheduled)
}

/// Gives a P taken from a blocked M to another M if it has work, or to the idle list
/// (Go's `handoffp`).
///
/// # Safety
/// The caller holds `p` (retook it) and gives it up.
unsafe fn hand_off(sh: &Shared, p: &P) {
    let work = !p.runq.is_empty() || sh.global.len() > 0;
    // With no spinning and no idle M, work elsewhere may need this P too (Go starts a
    // spinning M in that case).
    let spin = !work
        && sh.nmspinning.load(Ordering::SeqCst) + sh.npidle.load(Ordering::SeqCst) == 0
        && sh
            .nmspinning
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    if work || spin {
        // SAFETY: per the contract we hold `p`, and give it up here.
        unsafe { machine::start_m(sh, p.id, spin) };
    } else {
        // SAFETY: as above.
        unsafe { machine::put_idle_p(sh, p.id) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps `pace` through `n` looks with no P in a blocking section.
    fn quiet_looks(pace: &mut Pace, n: usize, scheduled: bool) {
        for _ in 0..n {
            pace.step(false, scheduled);
        }
    }

    /// `pending_due`'s rule: a delivery is urgent only for a P that stopped scheduling.
    #[test]
    fn only_work_stuck_behind_a_p_makes_the_next_look_urgent() {
        // A runnext partner behind a G that kept running: due, and stuck.
        assert_eq!(pending_due(PENDING_RUNNEXT, false, 0, false), Some(true));
        assert_eq!(pending_due(PENDING_RUNNEXT, true, 0, false), None);
        // Short work behind a P that stopped scheduling a millisecond ago: stuck.
        assert_eq!(
            pending_due(PENDING_SHORT, false, BACKLOG_NS, false),
            Some(true)
        );
        assert_eq!(
            pending_due(PENDING_SHORT, false, BACKLOG_NS - 1, false),
            None
        );
        // A P that schedules but leaves work queued for a millisecond: due, not urgent.
        assert_eq!(pending_due(PENDING_SHORT, true, 0, true), Some(false));
        assert_eq!(pending_due(PENDING_SHORT, true, 0, false), None);
        assert_eq!(pending_due(0, false, BACKLOG_NS, true), None);
    }

    #[test]
    fn an_urgent_look_brings_the_short_sleep_back() {
        let mut pace = Pace::START;
        quiet_looks(&mut pace, 200, true);
        assert_eq!(pace.delay_us, BUSY_DELAY_US);
        pace.step(true, true);
        assert_eq!(pace, Pace::START);
        // And it stays short while the section lasts.
        quiet_looks(&mut pace, 50, true);
        assert_eq!(pace.delay_us, MIN_DELAY_US);
    }

    /// The rule of `Pace`: what sysmon does for Ps that keep scheduling (a wake-up
    /// delivered to a slow P, a preemption, a poll) is not a reason to look every 20 µs
    /// again (a non-urgent look). Before it, each such look reset the sleep to 20 µs for
    /// 50 more looks.
    #[test]
    fn busy_ps_back_sysmon_off_to_a_millisecond() {
        let mut pace = Pace::START;
        quiet_looks(&mut pace, 50, true);
        assert_eq!(pace.delay_us, MIN_DELAY_US, "Go's 50 looks at 20 µs first");
        quiet_looks(&mut pace, 1, true);
        assert_eq!(pace.delay_us, 2 * MIN_DELAY_US);
        quiet_looks(&mut pace, 100, true);
        assert_eq!(
            pace.delay_us, BUSY_DELAY_US,
            "capped at 1 ms while Ps schedule"
        );
        quiet_looks(&mut pace, 100, false);
        assert_eq!(pace.delay_us, MAX_DELAY_US, "10 ms once nothing schedules");
        // Scheduling again brings the cap back to 1 ms at the next look.
        pace.step(false, true);
        assert_eq!(pace.delay_us, BUSY_DELAY_US);
    }
}
