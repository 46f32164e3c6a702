//! Dead Gs kept with their stacks for the next spawn (Go's `gfput`/`gfget` in proc.go,
//! which keep dead Gs with their stacks on a per-P free list and reuse the whole G).
//!
//! Reusing the whole record, not just the stack, is what makes a spawn cheap: no `Box<G>`
//! allocation (and no remote free when the G dies on another P), and no `allgs` shard lock
//! on spawn or exit, because a record stays in `allgs` for as long as it exists (marked
//! DEAD while it waits here).
//!
//! Why not simply give the stack back to the P's `StackCache`: that cache holds a handful of
//! stacks per class and passes the rest to the node pool, and a stack entering the node pool
//! is shrunk with `madvise` (about 0.6 µs). A program that keeps more coroutines alive than
//! the cache holds — spawn a thousand, join a thousand — would pay that syscall and a page
//! fault on every spawn. Here a P keeps up to `MAX_PER_P` Gs with stacks of the runtime's
//! default size; a full P list spills half to a runtime-wide list that empty Ps refill from
//! (Go's `sched.gFree`), and beyond that list's cap the records are freed.
//!
//! The runtime-wide cap is high (`MAX_SHARED`, a million Gs), because the shape that fills
//! it — spawn N, keep every handle, join them all (issue #17) — comes back: with a cap of
//! 4,096, every G beyond it was freed at the end of a round and made again in the next, and
//! its stack went through the node pool, which cost a `madvise` per spawn (771,547 calls in
//! seven rounds of N = 100,000 on one P) besides the record's allocation and two `allgs`
//! locks; spawn-all ran at 1.5 µs per coroutine against Go's 0.7–0.8 µs. Go keeps dead Gs
//! too, and frees their stacks at each GC; here sysmon halves the runtime-wide list each
//! second it goes unused, down to 4,096 (`IdleTrim`), so a burst's records and stacks go
//! back once the program stops spawning. While kept, a G costs about what the pool would
//! hold anyway: a stack that goes to the node pool keeps its top `TESSERA_STACK_HOT_KB`
//! resident (shrink.rs), and a stack kept here has one resident page (its coroutine stayed
//! there, see below), plus its record (a few hundred bytes).
//!
//! Only stacks whose coroutine stayed in its top page are kept, so the list never pins
//! deep-recursion memory: before a stack runs its first coroutine, `arm` writes canary words
//! near the bottom of its top page (away from the words tessera-stacks uses for its own
//! check); `stayed_on_top_page` reads them back when the coroutine is done. A coroutine that
//! went deeper overwrote them, and its stack goes back through the `StackCache`, which
//! purges the cold pages. Named Gs are not kept either, so a G's name never changes while
//! `dump()` may read it.
//!
//! <a id="bare"></a>**Bare records.** A spawn whose closure waits in the record (spawn.rs
//! `set_coroutine`) needs no stack until the G first runs, so when no dead G is at hand it
//! makes a record without one (`new_bare` in spawn.rs), and the first run gives it one
//! (`bind_stack`): the stack of the dead G on top of the running P's list, whose record
//! then waits as a bare one for a later spawn, or a stack from the P's `StackCache`. Two
//! things follow (issue #17, spawn-all):
//! - a coroutine that has not run yet holds no stack, so a spawner that runs ahead of the
//!   P running its children makes records (384 bytes, ten to a page) instead of stacks (a
//!   page fault on the top page and a guard `madvise` each, 5 µs or more on this
//!   project's VM): with N = 1,000,000 on two Ps the spawner ran over 100,000 coroutines
//!   ahead, and each round of the benchmark made another 25,000-30,000 stacks because the
//!   kept Gs had not yet caught up; on one P, where every coroutine waits until the
//!   spawner joins, the first round took a million stacks (4.5 GB resident at the peak,
//!   0.47 GB now);
//! - the P that runs the children starts each one on the stack the last one left, whose
//!   top lines are still in its cache, instead of on a stack last used a round before.
//!
//! Spawns that must report a stack failure (`try_spawn`) or want a stack of their own
//! (a name, another size, a closure too large for the record) take their stack at once, as
//! before, and so does every spawn where stacks cost VMAs (`mprotect` guards: the mappings
//! run out near 32K stacks, and `spawn` reports that in the spawner, `Shared::bare_records`).
//! With `MADV_GUARD_INSTALL` guards a first run that can get no stack at all (memory or
//! mappings exhausted all the same) aborts the process with a message naming what ran out,
//! as Go's runtime does when a stack cannot be allocated.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::sync::Mutex;

use tessera_stacks::PooledStack;

use crate::coroutine::{DEAD, GRef};
use crate::processor::P;
use crate::runtime::Shared;

/// Dead Gs kept for reuse (a P's, owner only, or the runtime's, under its lock): with
/// their stacks, and bare records whose stack a first run took over (file comment).
#[derive(Debug, Default)]
pub(crate) struct FreeGs {
    stacked: Vec<GRef>,
    bare: Vec<GRef>,
}

impl FreeGs {
    /// Dead Gs kept, with or without stacks.
    pub(crate) fn len(&self) -> usize {
        self.stacked.len() + self.bare.len()
    }

    fn list(&mut self, bare: bool) -> &mut Vec<GRef> {
        if bare {
            &mut self.bare
        } else {
            &mut self.stacked
        }
    }
}

/// Takes a dead G for a spawn on `p`, if the P or the runtime has one: one with its stack,
/// or if `bare_ok` (the spawn leaves its closure in the record and may go without a stack
/// until the first run, `bind_stack`) a bare record when there is none with a stack.
///
/// # Safety
/// The calling thread holds `p`.
pub(crate) unsafe fn get(sh: &Shared, p: &P, bare_ok: bool) -> Option<GRef> {
    // SAFETY: per the contract, the P's lists are ours.
    let free = unsafe { &mut *p.free_gs.get() };
    if free.stacked.is_empty() && (!bare_ok || free.bare.is_empty()) {
        refill(&sh.free_gs, free, false);
        if bare_ok && free.stacked.is_empty() {
            refill(&sh.free_gs, free, true);
        }
    }
    let g = match free.stacked.pop() {
        Some(g) => Some(g),
        None if bare_ok => free.bare.pop(),
        None => None,
    };
    // The lines of the next spawn's record that a spawn writes (prefetch.rs). Not its
    // stack: a spawn does not touch it (spawn.rs `set_coroutine`).
    if let Some(&next) = free.stacked.last().or(free.bare.last()) {
        crate::prefetch::record_lines(next, crate::coroutine::SPAWN_LINES);
    }
    g
}

/// Gives `g`, a bare record about to run for the first time on `p`, a stack: the one of
/// the dead G on top of `p`'s list (the stack the coroutine that last ran here left, most
/// likely still in this core's cache), whose record becomes a bare one; or a stack from
/// `p`'s stack cache. Aborts the process if no stack can be had at all (file comment).
///
/// # Safety
/// The calling thread holds `p`; `g` is a live G of `sh` without a stack whose coroutine
/// has not been made, and which nobody else touches (it was just taken off a run queue).
#[inline(never)]
pub(crate) unsafe fn bind_stack(sh: &Shared, p: &P, g: GRef) {
    // SAFETY: per the contract, the P's lists are ours.
    let free = unsafe { &mut *p.free_gs.get() };
    if free.stacked.is_empty() {
        refill(&sh.free_gs, free, false);
    }
    let (stack, base) = match free.stacked.pop() {
        Some(d) => {
            // SAFETY: a dead G on this P's list is ours alone; its stack, which its
            // coroutine (dropped by `put`) left on its top page with the canaries intact,
            // moves to `g`, and its `stack_base` with it (no call into tessera-stacks for
            // the base). `dump()` reads only the atomics of a dead G.
            let (s, base) = unsafe {
                let dr = &*d;
                let base = dr.stack_base.load(Ordering::Relaxed);
                dr.stack_base.store(0, Ordering::Relaxed);
                dr.saved_sp.store(0, Ordering::Relaxed);
                ((*dr.stack.get()).take(), base)
            };
            free.bare.push(d);
            if free.bare.len() > MAX_PER_P {
                // SAFETY: the P's bare list holds only dead bare Gs of this runtime.
                unsafe { spill(sh, p, free, true) };
            }
            (s.expect("a G on the stacked list has a stack"), base)
        }
        // SAFETY: per the contract this thread holds `p`.
        None => match unsafe { crate::spawn::new_stack(sh, Some(p), sh.stack_size) } {
            Ok(s) => {
                // SAFETY: a stack just taken from the pool or the P's cache: ours, and
                // nothing runs on it.
                unsafe { arm(&s) };
                let base = s.base();
                (s, base)
            }
            Err(e) => no_stack(e),
        },
    };
    // SAFETY: per the contract `g` is ours; it has no stack and no coroutine yet.
    let gr = unsafe { &*g };
    debug_assert_eq!(stack.usable_size(), gr.stack_size);
    debug_assert_eq!(stack.base(), base);
    gr.stack_base.store(base, Ordering::Relaxed);
    gr.saved_sp.store(base, Ordering::Relaxed);
    // SAFETY: as above; `g` has no stack, so there is nothing to drop where this one goes
    // (a plain write: no read of the slot's cold line first).
    unsafe { gr.stack.get().write(Some(stack)) };
}

/// A first run found no stack anywhere: nothing can run the coroutine, and its spawner
/// was told it was spawned. Go's runtime throws in this case too.
#[cold]
fn no_stack(e: tessera_stacks::StackError) -> ! {
    eprintln!("tessera-sched: no stack for a coroutine's first run: {e}");
    std::process::abort()
}

/// Asks for the lines of a kept stack that its next coroutine touches first: the top
/// `WARM_LINES` (the coroutine's first frames) and the canary line (`stayed_on_top_page`).
/// Nothing for a record without a stack (`base` 0).
pub(crate) fn warm_stack(base: usize) {
    if base == 0 {
        return;
    }
    for i in 1..=WARM_LINES {
        crate::prefetch::line(base - 64 * i);
    }
    crate::prefetch::line(word(base, 0) as usize);
}

/// Lines at the top of a stack that a short coroutine writes: in a release build the
/// closure of an empty spawn starts about 250 bytes below the top, and completing its join
/// goes a little deeper.
const WARM_LINES: usize = 6;

/// Retires a G whose coroutine returned: onto `p`'s free list with its stack, or freed.
///
/// # Safety
/// `g` is a finished G that nothing else refers to; the calling thread holds `p`.
// Kept out of line: inlined into the M's `execute`, it changed the register allocation of
// the yield/park switch loop there (callgrind: +2% instructions per yield).
#[inline(never)]
pub(crate) unsafe fn put(sh: &Shared, p: &P, g: GRef) {
    // SAFETY: per the contract, the record is ours until it is on a list or freed.
    let gr = unsafe { &*g };
    // The closure that owned the join state is gone with the coroutine.
    gr.cancel.set(None);
    // SAFETY: nobody else touches a finished G's coroutine; it goes before its stack.
    drop(unsafe { (*gr.co.get()).take() });
    // SAFETY: as above, the stack is the retiring M's to look at.
    let stack = unsafe { &mut *gr.stack.get() };
    match stack {
        Some(s)
            if !gr.named
                && s.usable_size() == sh.stack_class
                // SAFETY: the coroutine returned and is dropped, so nothing runs on its
                // stack, which was armed when the G was made (a reused G keeps it).
                && unsafe { stayed_on_top_page(s) } =>
        {
            gr.retire();
            gr.state.store(DEAD, Ordering::Release);
            // SAFETY: per the contract, the P's list is ours.
            let free = unsafe { &mut *p.free_gs.get() };
            if free.stacked.len() >= MAX_PER_P {
                // Spawns and exits are often on different Ps: rebalance through the
                // runtime's list instead of freeing Gs and shrinking stacks.
                // SAFETY: the P's list holds only dead Gs of this runtime.
                unsafe { spill(sh, p, free, false) };
            }
            free.stacked.push(g);
        }
        // SAFETY: per the contract.
        _ => unsafe { free(sh, p, g) },
    }
}

/// Frees a G record, its coroutine first, its stack (if it has one) going back to `p`'s
/// stack cache.
///
/// # Safety
/// `g` was made by `palloc::new`, its coroutine is finished, unwound or never started,
/// nothing else refers to it, and the calling thread holds `p` (or no M holds any P).
pub(crate) unsafe fn free(sh: &Shared, p: &P, g: GRef) {
    // SAFETY: per the contract, a G of this runtime that nothing else refers to; freed
    // below.
    unsafe { sh.allgs.remove(g) };
    // SAFETY: per the contract the record is ours alone.
    if let Some(start) = unsafe { (*g).start.take() } {
        // A G that never ran (a runtime's drop): its closure is dropped unrun.
        // SAFETY: the record is ours, `start` is its spawn's and taken just now.
        unsafe { start(g, false) };
    }
    // SAFETY: per the contract the record is ours alone; the coroutine goes before the
    // stack it runs on.
    let gr = unsafe { &mut *g };
    drop(gr.co.get_mut().take());
    if let Some(s) = gr.stack.get_mut().take() {
        // SAFETY: per the contract, the P's stack cache is ours.
        unsafe { (*p.stacks.get()).release(s) };
    }
    // SAFETY: made by `palloc::new`, referred to by nothing else, not used below.
    unsafe { crate::palloc::free(NonNull::new_unchecked(g)) };
}

/// Frees every dead G of a runtime whose Ms have stopped, their stacks going back to the
/// Ps' stack caches.
///
/// # Safety
/// No M holds any P of `sh` any more.
pub(crate) unsafe fn free_all(sh: &Shared) {
    let shared = core::mem::take(&mut *sh.free_gs.lock().unwrap_or_else(|e| e.into_inner()));
    for p in sh.ps.iter() {
        // SAFETY: per the contract, nobody else touches the Ps' lists and caches.
        let local = core::mem::take(unsafe { &mut *p.free_gs.get() });
        // The runtime-wide lists go to P 0's cache, as good as any.
        let extra = if p.id == 0 {
            &shared
        } else {
            &FreeGs::default()
        };
        let all = [&local.stacked, &local.bare, &extra.stacked, &extra.bare];
        for &g in all.into_iter().flatten() {
            // SAFETY: a dead G on a free list is referred to by nothing else, and was made
            // by `palloc::new`; no M holds `p`.
            unsafe { free(sh, p, g) };
        }
    }
}

/// Moves half of a full P list (the bare one if `bare`) to the runtime's; beyond its cap,
/// the Gs are freed and their stacks go back to `p`'s stack cache.
///
/// # Safety
/// `local` holds only dead Gs of `sh` (made by `palloc::new`, in `allgs`) that nothing
/// else refers to: `p`'s free lists; the calling thread holds `p`.
unsafe fn spill(sh: &Shared, p: &P, local: &mut FreeGs, bare: bool) {
    let local = local.list(bare);
    let mut half = local.split_off(local.len() / 2);
    let mut g = sh.free_gs.lock().unwrap_or_else(|e| e.into_inner());
    let room = MAX_SHARED.saturating_sub(g.len());
    let extra = half.len().saturating_sub(room);
    let rest = half.split_off(half.len() - extra);
    g.list(bare).extend(half);
    drop(g);
    for g in rest {
        // SAFETY: per the contract, a dead G of this runtime that nothing else refers to,
        // made by `palloc::new`; the calling thread holds `p`.
        unsafe { free(sh, p, g) };
    }
}

/// Frees up to `BATCH` dead Gs of the runtime-wide lists, those with stacks first, for a
/// spawn that could get no stack (the lists may hold every stack there is,
/// `vm.max_map_count` having run out) or for sysmon's trim: their stacks go to `p`'s stack
/// cache, or without a P to the calling thread's. Returns whether it freed any.
///
/// # Safety
/// The calling thread holds `p`, if given.
pub(crate) unsafe fn release_shared(sh: &Shared, p: Option<&P>) -> bool {
    let batch = {
        let mut g = sh.free_gs.lock().unwrap_or_else(|e| e.into_inner());
        let bare = g.stacked.is_empty();
        let list = g.list(bare);
        let at = list.len().saturating_sub(BATCH);
        list.split_off(at)
    };
    for &g in &batch {
        match p {
            // SAFETY: a dead G of the shared list is referred to by nothing else and was
            // made by `palloc::new`; per the contract this thread holds `p`.
            Some(p) => unsafe { free(sh, p, g) },
            None => {
                // SAFETY: as above.
                unsafe { sh.allgs.remove(g) };
                // SAFETY: as above (`put` dropped its coroutine); the stack, if any, goes
                // to this thread's cache as its `PooledStack` drops with the record.
                unsafe { crate::palloc::free(NonNull::new_unchecked(g)) };
            }
        }
    }
    !batch.is_empty()
}

/// Takes a batch from the runtime's list (the bare one if `bare`) into `local`.
fn refill(shared: &Mutex<FreeGs>, local: &mut FreeGs, bare: bool) {
    let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
    let from = g.list(bare);
    let n = from.len().min(BATCH);
    let at = from.len() - n;
    local.list(bare).extend(from.drain(at..));
}

/// Gs a P keeps on each list (a stack's 4 KiB resident top page each for those with
/// stacks): at most 4 MiB of stacks per P.
const MAX_PER_P: usize = 1024;
/// Gs the runtime-wide lists keep for Ps that run short (see the file comment: a stack's
/// top page and a record each, as much as a million coroutines alive at once left behind).
const MAX_SHARED: usize = 1 << 20;
/// Gs moved between a P and the shared list at a time.
const BATCH: usize = 64;
/// What the runtime-wide lists keep however long they go unused (the cap they had before
/// spawn-all rounds asked for more).
const KEEP_IDLE: usize = 4096;
/// How long the runtime-wide lists must go unchanged before sysmon halves them.
const IDLE_NS: u64 = 1_000_000_000;

/// Sysmon's watch over the runtime-wide lists: memory back while the program sleeps (issue
/// #13's rule for the allocator, applied to kept coroutines). Lists that have not changed
/// for `IDLE_NS` are halved, down to `KEEP_IDLE`, each `IDLE_NS` they stay unused; the
/// stacks go back through the stack cache and the node pool, which shrink them.
#[derive(Default)]
pub(crate) struct IdleTrim {
    len: usize,
    since: u64,
    /// When the lists were last looked at: sysmon may loop every 20 µs (a blocking section), and the
    /// lists' lock is the one spawning Ps take, so it looks at most every `LOOK_NS`.
    looked: u64,
}

/// How often sysmon looks at the runtime-wide lists.
const LOOK_NS: u64 = 100_000_000;

impl IdleTrim {
    /// One look at `now` (the runtime's clock, ns). Returns whether it freed any G.
    pub(crate) fn step(&mut self, sh: &Shared, now: u64) -> bool {
        if now.saturating_sub(self.looked) < LOOK_NS {
            return false;
        }
        self.looked = now;
        let len = sh.free_gs.lock().unwrap_or_else(|e| e.into_inner()).len();
        if len != self.len || len <= KEEP_IDLE {
            self.len = len;
            self.since = now;
            return false;
        }
        if now.saturating_sub(self.since) < IDLE_NS {
            return false;
        }
        let target = (len / 2).max(KEEP_IDLE);
        let mut left = len;
        // SAFETY: no P is passed (sysmon holds none); the stacks go to this thread's cache.
        while left > target && unsafe { release_shared(sh, None) } {
            left = sh.free_gs.lock().unwrap_or_else(|e| e.into_inner()).len();
        }
        self.len = left;
        self.since = now;
        true
    }
}

const WORDS: usize = 4;
/// Byte offset of the first canary above the bottom of the top page. tessera-stacks keeps
/// its band in the lowest 512 bytes; ours sits just above it.
const OFFSET: usize = 512 + 8;
/// Adjacent words, one cache line: the check reads one line per retired G instead of four
/// (with a thousand Gs alive, each line read is a cache miss: ~7 ns per spawn-join G for
/// four lines). A coroutine that went deeper than the top page wrote frames across this
/// line unless all it put there was an uninitialised buffer, which a 64-byte stride would
/// not catch either.
const STRIDE: usize = 8;
const SEED: usize = 0x5c4e_d7a1_e06f_3b29;

fn page() -> usize {
    4096
}

fn canary(base: usize, i: usize) -> usize {
    (base ^ SEED).rotate_left(11 * i as u32 + 3)
}

fn word(base: usize, i: usize) -> *mut usize {
    (base - page() + OFFSET + i * STRIDE) as *mut usize
}

/// Writes the canaries into a stack about to run a coroutine.
///
/// # Safety
/// Nothing runs on `stack` now (the caller owns it and has not started a coroutine on it).
pub(crate) unsafe fn arm(stack: &PooledStack) {
    debug_assert!(stack.usable_size() >= 4 * page());
    let base = stack.base();
    for i in 0..WORDS {
        // SAFETY: the word lies in the top page of the stack's usable range (at least 16 KiB
        // above the guard), which is mapped read-write; per the contract nothing runs on
        // the stack, so nobody else writes there.
        unsafe { word(base, i).write_volatile(canary(base, i)) };
    }
}

/// Whether the coroutine that just finished on `stack` left the canaries alone.
///
/// # Safety
/// Nothing runs on `stack` now (its coroutine has returned), and it was `arm`ed.
pub(crate) unsafe fn stayed_on_top_page(stack: &PooledStack) -> bool {
    let base = stack.base();
    (0..WORDS).all(|i| {
        // SAFETY: mapped as in `arm`; per the contract nobody runs on the stack, so nobody
        // writes there while we read.
        // Volatile: it was last written by code the compiler cannot see.
        unsafe { word(base, i).read_volatile() == canary(base, i) }
    })
}
