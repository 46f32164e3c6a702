//! The goroutine profile (Go's `pprof.Lookup("goroutine")`): the stack of every live
//! coroutine, grouped by identical stack and labels, in pprof's format.
//!
//! # Which stacks, and how they are held still
//!
//! A parked coroutine's stack is plain memory with its frames intact, and its registers
//! at the switch are in its G (`saved_pc`, `saved_sp`, `saved_bp`, stored by
//! `machine::m_loop::switch_out` just before corosensei's `switch_yield` pushes its resume
//! address, rbx and rbp *below* that frame). The walk starts there, with the same cached
//! CFI rules as the heap profiler's unwinder (`tessera::profile::walk_suspended_stack`),
//! and stops at the root of the coroutine's stack (corosensei's `stack_init_trampoline`,
//! whose CFI leads into the stack that last resumed it: not followed).
//!
//! Reading a stack while the coroutine runs would be a data race, and the wrong frames.
//! Go sets the `_Gscan` bit on a goroutine's status so that nobody resumes it while its
//! stack is scanned. Here, the same with a state of its own: `begin_scan` moves a G from
//! PARKED to SCANNING with a CAS, and only PARKED and RUNNABLE Gs are ever resumed (or
//! cancelled by a runtime's drop). A waker that comes meanwhile (`machine::ready`) marks it
//! SCAN_READIED and returns, and `end_scan` then queues it in the waker's stead: the waker
//! never waits for the profiler, nor the profiler for the waker. The G record cannot be
//! freed during the walk: the `allgs` shard lock is held (records leave `allgs` under it
//! before they are freed), and a PARKED G does not finish anyway.
//!
//! Coroutines that are not parked are not walked: a running one's stack is live on
//! another thread, and a runnable one may start running at any moment (holding it back
//! would take a CAS on every switch, which the scheduler's hot path does not pay). Each is
//! counted under a stand-in frame that says why (`running_coroutine_not_walked`,
//! `runnable_coroutine_not_walked`, `coroutine_walked_by_another_profile`), so the
//! profile's total is every live coroutine. The coroutine that takes the profile is
//! walked the same way, from its own registers.
//!
//! Labels: a walked coroutine's label set (its G's, read while it is held still) goes on its
//! sample as pprof labels, as Go attaches pprof labels to goroutine profile samples.
//!
//! Nothing between `begin_scan` and `end_scan` allocates through the allocator: the walk
//! uses a stack array and the unwinder's static cache, the groups live in OS mappings.
//! `end_scan` may queue a readied G, which may take the global queue's lock or start an
//! M; by then the stack is released.

use core::hint::black_box;
use core::sync::atomic::Ordering;

use tessera::profile::buf::OsBuf;
use tessera::profile::pprof::{MAX_FRAMES, ProfileBuilder};
use tessera::profile::{FrameRegisters, LabelSet};
use tessera_sys::error::OsError;

use super::groups::StackGroups;
use crate::coroutine::{G, GRef, RUNNABLE, SCAN_READIED, SCANNING};
use crate::machine;

/// What one profile saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineCounts {
    /// Parked coroutines whose stacks were walked.
    pub walked: usize,
    /// The caller itself, walked in place (0 or 1).
    pub caller: usize,
    /// Running (on another thread, or switching) coroutines, not walked.
    pub running: usize,
    /// Runnable coroutines, not walked.
    pub runnable: usize,
    /// Parked coroutines a concurrent goroutine profile was walking, not walked again.
    pub busy: usize,
    /// Distinct (stack, labels) samples written.
    pub samples: usize,
}

/// Stand-in frame of a coroutine that was running on another thread (or in the middle of a
/// switch) when the profile was taken: its stack was not walked.
#[inline(never)]
fn running_coroutine_not_walked() -> usize {
    black_box(1)
}

/// Stand-in frame of a coroutine that was runnable (queued) when the profile was taken:
/// its stack was not walked.
#[inline(never)]
fn runnable_coroutine_not_walked() -> usize {
    black_box(2)
}

/// Stand-in frame of a parked coroutine whose stack another goroutine profile was walking.
#[inline(never)]
fn coroutine_walked_by_another_profile() -> usize {
    black_box(3)
}

/// The stand-in stack of a coroutine that was not walked: one exact address, the entry of
/// the function that names the reason.
fn stand_in(f: fn() -> usize) -> [usize; 1] {
    [f as usize]
}

/// Walks every live coroutine of every live runtime into `groups`.
fn collect(groups: &mut StackGroups, counts: &mut GoroutineCounts) -> Result<(), OsError> {
    let me = machine::current_g();
    if !me.is_null() {
        // SAFETY: the running G is live while it runs; its stack and labels are its own.
        let (stack_top, labels) =
            unsafe { ((*me).stack_base.load(Ordering::Relaxed), (*me).labels.get()) };
        // Walked like the parked ones, so that it too ends at its coroutine's root.
        let start = FrameRegisters::here();
        let mut frames = [0usize; MAX_FRAMES];
        frames[0] = start.pc;
        // SAFETY: `start` was read in this frame, which stays live and unchanged while the
        // walk, called from it, runs below it; this G's stack is mapped up to its base.
        let n =
            unsafe { tessera::profile::walk_suspended_stack(start, stack_top, &mut frames[1..]) };
        groups.add(&frames[..=n], true, labels)?;
        counts.caller = 1;
    }
    let mut result = Ok(());
    for rt in crate::dump::live_runtimes() {
        rt.allgs.for_each(&mut |g| {
            if result.is_err() || core::ptr::eq(g, me) {
                return;
            }
            result = add_one(groups, counts, g);
        });
    }
    result
}

/// Adds `g` (live, its `allgs` shard locked by the caller) to `groups`: walked if parked,
/// else under its stand-in frame.
fn add_one(groups: &mut StackGroups, counts: &mut GoroutineCounts, g: &G) -> Result<(), OsError> {
    if machine::begin_scan(g) {
        counts.walked += 1;
        let result = walk_parked(groups, g);
        // SAFETY: `begin_scan` took it; the shard lock keeps the record alive.
        unsafe { machine::end_scan(core::ptr::from_ref(g).cast_mut() as GRef) };
        return result;
    }
    let why: fn() -> usize = match g.state.load(Ordering::Relaxed) {
        RUNNABLE | SCAN_READIED => {
            counts.runnable += 1;
            runnable_coroutine_not_walked
        }
        SCANNING => {
            counts.busy += 1;
            coroutine_walked_by_another_profile
        }
        _ => {
            counts.running += 1;
            running_coroutine_not_walked
        }
    };
    groups.add(&stand_in(why), true, LabelSet::NONE)
}

/// Walks the stack of `g`, held still by `begin_scan`, into `groups`.
fn walk_parked(groups: &mut StackGroups, g: &G) -> Result<(), OsError> {
    let start = FrameRegisters {
        pc: g.saved_pc.load(Ordering::Relaxed),
        sp: g.saved_sp.load(Ordering::Relaxed),
        bp: g.saved_bp.load(Ordering::Relaxed),
    };
    let top = g.stack_base.load(Ordering::Relaxed);
    let mut frames = [0usize; MAX_FRAMES];
    frames[0] = start.pc;
    // SAFETY: a PARKED G switched out through `switch_out`, which stored these registers
    // (a PARKED G has run: a new one is RUNNABLE), and its stack holds them unchanged:
    // `begin_scan` keeps anybody from resuming it until `end_scan`. Its stack is mapped
    // from its saved rsp up to `stack_base`, the top of the stack its coroutine was built
    // on (the G keeps that stack until it is dead: only a G that has not run yet may be
    // without one); `top` is that `stack_base`.
    let n = unsafe { tessera::profile::walk_suspended_stack(start, top, &mut frames[1..]) };
    // Read while it is held still: only the G writes them, and only while it runs.
    let labels = g.labels.get();
    groups.add(&frames[..=n], true, labels)
}

/// Builds the goroutine profile (gzipped if `gzip`) into `out`.
pub(super) fn build(out: &mut OsBuf, gzip: bool) -> Result<GoroutineCounts, OsError> {
    let mut counts = GoroutineCounts::default();
    let mut groups = StackGroups::new();
    collect(&mut groups, &mut counts)?;
    counts.samples = groups.len();
    let mut b = ProfileBuilder::new(&[("goroutine", "count")], ("goroutine", "count"), 1)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    b.set_time_nanos(now);
    b.add_process_mappings()?;
    groups.emit(&mut b)?;
    if gzip {
        b.finish_gzip(out)?;
    } else {
        b.finish(out)?;
    }
    Ok(counts)
}
