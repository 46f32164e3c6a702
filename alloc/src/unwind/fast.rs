//! The fast walk: the same frames as libgcc's `_Unwind_Backtrace`, with each return
//! address's rule taken from the cache (`cache.rs`) and computed (`cfi.rs`) only on a miss.
//! A capture of the calling thread first follows a remembered chain of earlier walks
//! (`chain.rs`) as far as it retraces one.
//!
//! A frame is three registers: the return address that brought us into it, its rsp and its
//! rbp. A rule turns them into the caller's: `CFA = rsp|rbp + n`, the return address at
//! `CFA + m` (CFA - 8 on x86-64), the caller's rbp at `CFA + k` or unchanged, and the
//! caller's rsp is the CFA. No other register is followed, so a rule that needs one (a CFA
//! on rbx, an expression) is `Unsupported` and the whole capture is left to libgcc.
//!
//! Where it stops is where libgcc's walk does: a return address of 0 (not reported), a
//! frame whose return address is undefined or that no FDE covers (reported, then the
//! walk ends), or a full buffer. Where it gives up: a rule it cannot follow, a signal
//! frame, a CFA that does not grow or runs more than [`MAX_STACK`] past the start (another
//! stack: a coroutine's, a signal stack), and reads are only made at CFAs in that range.
//!
//! What it does not know: a module unloaded (`dlclose`) and another loaded at the same
//! addresses leave the old module's rules in the cache. Asking the loader per capture
//! (`dl_iterate_phdr`'s `dlpi_subs`) takes the loader's lock, which a `fork` can leave held
//! in the child, and libgcc itself (on glibc 2.35 and later) no longer takes it; an
//! interposed `dlclose` that clears the cache would be the way.

use core::mem::MaybeUninit;

use super::cache::{self, Packed};
use super::cfi::{self, Rule};
use super::chain::{self, Trace};
use super::file;
use super::sys::{self, Registers};

/// How far above the starting rsp a CFA may be, on the calling thread's own stack.
pub(super) const MAX_STACK: usize = 256 << 20;

/// What a walk did: for the tests, and the chain that completed it for the profile's table.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    /// Return addresses whose rule was not in the cache.
    pub(super) misses: usize,
    /// Frames taken from a remembered chain (`chain.rs`).
    pub(super) chained: usize,
    /// The chain that completed the walk, if one did: it stands for the return addresses.
    pub(super) whole: Option<chain::Whole>,
}

/// The walk gave up (libgcc must take a capture of the calling thread); `frames` of `out`
/// were written before it did, every one a real return address of the stack.
#[derive(Debug)]
pub(super) struct GiveUp {
    pub(super) frames: usize,
}

/// Writes the return addresses of the frames above the one `start` was read in,
/// innermost first, into `out` (the first ones, which are then initialised), and returns
/// how many. No CFA may pass `limit`: the end of
/// the stack being walked (`start.sp + MAX_STACK` for the calling thread's own).
///
/// # Safety
/// `start` must be registers read by `registers()` in a frame that is still live and does
/// not change during the walk: an inlined `registers()` in a caller of this function, or
/// in a suspended coroutine's frame. The stack from `start.sp` up to `limit` must be
/// mapped and hold those frames.
pub(super) unsafe fn walk(
    start: Registers,
    limit: usize,
    out: &mut [MaybeUninit<usize>],
    stats: &mut Stats,
    chains: Option<&chain::Chains>,
) -> Result<usize, GiveUp> {
    // The first frame is looked up like the others, by "return address" - 1: `pc + 1`.
    let mut ra = start.pc + 1;
    let (mut sp, mut bp) = (start.sp, start.bp);
    let mut len = 0;
    let mut frames = MaybeUninit::uninit();
    let mut trace = chains.map(|chains| Trace::new(chains, &mut frames));
    if let Some(trace) = &mut trace {
        // SAFETY: the caller's contract is `follow`'s.
        let at = unsafe { chain::follow(ra, start.sp, start.bp, limit, out, trace) };
        stats.chained += at.len;
        if at.done {
            stats.whole = at.whole;
            return Ok(at.len);
        }
        (ra, sp, bp, len) = (at.key, at.sp, at.bp, at.len);
    }
    // The file of the last miss's module, kept open for the next miss (`file.rs`).
    let mut files = file::Files::new();
    while len < out.len() {
        let rule = match cache::get(ra) {
            Some(rule) => rule,
            None => {
                stats.misses += 1;
                // SAFETY: `ra` is the start pc, or a return address read from this stack
                // at a slot a real FDE named.
                let rule = Packed::new(unsafe { compute(&mut files, ra) });
                cache::put(ra, rule);
                rule
            }
        };
        if !rule.is_step() {
            if rule.is_end() {
                if let Some(trace) = &mut trace {
                    trace.ended_at(ra);
                }
                break;
            }
            return Err(GiveUp { frames: len });
        }
        let base = if rule.base_is_rbp() { bp } else { sp };
        let cfa = base.wrapping_add(rule.cfa_offset());
        // The CFA must grow (each caller's frame is above its callee's) and stay on this
        // stack, and the slots read must lie in this frame, between its rsp and its CFA
        // (`cfi.rs` takes no offset above the CFA).
        // With the CFA on rsp, the slots are in the frame whenever the offsets are (checked
        // once, by `Packed::new`).
        let ra_offset = rule.ra_offset();
        let rbp_offset = rule.rbp_offset();
        if cfa <= sp || cfa > limit {
            return Err(GiveUp { frames: len });
        }
        if rule.base_is_rbp() {
            let lowest = rbp_offset.map_or(ra_offset, |o| o.min(ra_offset));
            if cfa.wrapping_add_signed(isize::from(lowest)) < sp {
                return Err(GiveUp { frames: len });
            }
        }
        if let Some(trace) = &mut trace {
            trace.push(|| {
                // Offsets from the starting rsp, which every CFA and slot here is above.
                let slot = |offset: i16| cfa.wrapping_add_signed(isize::from(offset)) - start.sp;
                let bp_cfa = rule.base_is_rbp().then(|| rule.cfa_offset());
                chain::Frame::new(
                    ra,
                    cfa - start.sp,
                    slot(ra_offset),
                    rbp_offset.map(slot),
                    bp_cfa,
                )
            });
        }
        // SAFETY: the slot is in the live part of the stack being walked, in a frame that is
        // still active (between its rsp and its CFA), at the offset its FDE gives.
        ra = unsafe { read(cfa, ra_offset) };
        if let Some(offset) = rbp_offset {
            // SAFETY: as above.
            bp = unsafe { read(cfa, offset) };
        }
        sp = cfa;
        if ra == 0 {
            break;
        }
        out[len].write(ra);
        len += 1;
    }
    if let Some(trace) = &trace {
        chain::publish(trace);
    }
    Ok(len)
}

/// # Safety
/// `cfa + offset` must be a readable, aligned word.
unsafe fn read(cfa: usize, offset: i16) -> usize {
    let at = cfa.wrapping_add_signed(isize::from(offset));
    // SAFETY: the caller's contract. Volatile: the word belongs to another frame, which
    // the compiler knows nothing about.
    unsafe { core::ptr::read_volatile(at as *const usize) }
}

/// The rule of `ra`, from its FDE.
///
/// # Safety
/// `ra` must be a return address of this thread's stack (or the start pc + 1).
#[cold]
#[inline(never)]
unsafe fn compute(files: &mut file::Files, ra: usize) -> Rule {
    // The module's file first, which keeps its unwind tables out of the process's resident
    // memory (`file.rs`); libgcc's search in memory when the file cannot tell.
    match file::rule(files, ra) {
        file::Found::Rule(rule) => return rule,
        // SAFETY: the caller's contract.
        file::Found::NotCovered => return unsafe { not_covered(ra) },
        file::Found::Unknown => {}
    }
    match sys::find_fde(ra) {
        // SAFETY: the FDE and bases `_Unwind_Find_FDE` gave for `ra - 1`.
        Some((fde, bases)) => unsafe { cfi::rule_for(fde, &bases, ra) },
        // SAFETY: the caller's contract.
        None => unsafe { not_covered(ra) },
    }
}

/// The rule of a return address no FDE covers.
///
/// # Safety
/// As [`compute`]'s.
unsafe fn not_covered(ra: usize) -> Rule {
    // libgcc's x86-64 fallback recognises the signal trampoline without an FDE.
    // SAFETY: the caller's contract: `ra` is in code this thread is returning to.
    if unsafe { sys::is_sigreturn(ra) } {
        Rule::Unsupported
    } else {
        Rule::End
    }
}
