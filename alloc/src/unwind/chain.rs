//! Remembered chains: the first frames of earlier walks from the same place, so that a walk
//! that retraces one checks each return address against the chain instead of looking its
//! rule up (~10 instructions a frame instead of ~45).
//!
//! A heap sample's walk starts at the same instruction every time and crosses the same
//! frames of the allocator (the walk, the capture, the sample, the slow path, the entry
//! point) before it reaches the program's: 7 of the 11 frames of a C program's
//! `malloc` sample. While every frame's CFA is rsp plus a constant, each frame's CFA and
//! the slots its return address and rbp are read from lie at constant offsets from the
//! starting rsp, fixed by the return addresses met on the way. A chain records them; a walk
//! follows it as long as it meets the same return addresses, which it reads from the slots
//! the chain gives:
//! - frame 0's key (the starting pc + 1) is compared first, and frame `i + 1`'s key is the
//!   return address read from frame `i`'s slot: each read is one the cache's walk would
//!   make, since a return address fixes its rule (the cache makes the same assumption);
//! - a frame whose CFA is rbp plus a constant (a frame pointer: Rust's standard library
//!   keeps them, so `lang_start_internal` and the frames above it have one) is followed
//!   only where rbp plus that constant is the CFA the chain holds, one comparison: the
//!   distance from the starting rsp to such a CFA may vary between walks (a frame that
//!   realigns its stack, a variable-sized one), and where it does, the chain stops there;
//! - the walk goes on from where the chain leaves it with the cache's rules.
//!
//! Chains are written once and never change ([`CHAINS`] of them, [`DEPTH`] frames each,
//! in static memory): an empty one is claimed with a CAS, filled, and published with a
//! release store; a reader only reads published ones, so a chain's offsets are never torn.
//! The first chains published stay: a walk that follows none of them to its end publishes
//! its own while a slot is free.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// Frames a chain holds.
pub(super) const DEPTH: usize = 16;
/// Chains kept.
const CHAINS: usize = 4;
/// `Chain::bp_slot` of a frame that leaves rbp as it is.
const NOT_SAVED: usize = usize::MAX;
/// Set in the key a chain stores for a frame whose CFA is on rbp: a return address never
/// has it (user space is the lower half), so the key test every frame makes fails for such
/// a frame, and only then is the CFA checked. Frames on rsp, most of them, pay nothing.
const ON_RBP: usize = 1 << 63;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const PUBLISHED: u8 = 2;

/// One frame of a chain, as offsets from the walk's starting rsp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Frame {
    /// The address the frame's rule is looked up by (the starting pc + 1, then the return
    /// address read from the frame below), with [`ON_RBP`] set if its CFA is on rbp.
    key: usize,
    /// The frame's CFA: the caller's rsp.
    cfa: usize,
    /// Where the return address into the caller is read.
    ra_slot: usize,
    /// Where the caller's rbp is read, or [`NOT_SAVED`].
    bp_slot: usize,
    /// For a frame whose CFA is rbp plus a constant, the constant; 0 otherwise.
    bp_cfa: usize,
}

impl Frame {
    /// A frame of key `key`; `bp_cfa` is the constant added to rbp for its CFA, if its CFA
    /// is on rbp.
    pub(super) fn new(
        key: usize,
        cfa: usize,
        ra_slot: usize,
        bp_slot: Option<usize>,
        bp_cfa: Option<usize>,
    ) -> Frame {
        Frame {
            key: if bp_cfa.is_some() { key | ON_RBP } else { key },
            cfa,
            ra_slot,
            bp_slot: bp_slot.unwrap_or(NOT_SAVED),
            bp_cfa: bp_cfa.unwrap_or(0),
        }
    }
}

struct Chain {
    state: AtomicU8,
    len: AtomicUsize,
    /// The last frame's CFA: the largest.
    top: AtomicUsize,
    frames: [[AtomicUsize; 5]; DEPTH],
}

#[allow(clippy::declare_interior_mutable_const)] // only to build the table below
const UNUSED: Chain = Chain {
    state: AtomicU8::new(EMPTY),
    len: AtomicUsize::new(0),
    top: AtomicUsize::new(0),
    frames: [const { [const { AtomicUsize::new(0) }; 5] }; DEPTH],
};

/// A table of chains: [`SAMPLES`] for the heap samples' captures; a test has its own.
pub(super) struct Chains {
    table: [Chain; CHAINS],
    /// Every slot of the table is taken: walks need not trace their frames.
    full: AtomicBool,
}

impl Chains {
    /// A table with no chain.
    pub(super) const fn new() -> Chains {
        Chains {
            table: [UNUSED; CHAINS],
            full: AtomicBool::new(false),
        }
    }
}

impl core::fmt::Debug for Chains {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Chains")
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

/// The chains of the captures of the calling thread (`capture`, the heap samples').
pub(super) static SAMPLES: Chains = Chains::new();

impl Chain {
    fn frame(&self, i: usize) -> Frame {
        let [key, cfa, ra_slot, bp_slot, bp_cfa] = &self.frames[i];
        Frame {
            key: key.load(Ordering::Relaxed),
            cfa: cfa.load(Ordering::Relaxed),
            ra_slot: ra_slot.load(Ordering::Relaxed),
            bp_slot: bp_slot.load(Ordering::Relaxed),
            bp_cfa: bp_cfa.load(Ordering::Relaxed),
        }
    }
}

/// The frames of a walk that a chain could hold: the first
/// `prefix` as chain `from` has them, then `len - prefix` in `frames`.
#[derive(Debug)]
pub(super) struct Trace<'a> {
    chains: &'a Chains,
    from: usize,
    prefix: usize,
    /// A buffer of the caller's: inside this struct, LLVM zeroed it with the fields around
    /// it (a 536-byte `memset` per walk).
    frames: &'a mut MaybeUninit<[Frame; DEPTH]>,
    len: usize,
    /// Whether frames are still recorded: a slot is free, and fewer than [`DEPTH`] so far.
    open: bool,
}

impl<'a> Trace<'a> {
    /// A trace that records frames into `frames` while a slot of `chains` is free.
    pub(super) fn new(
        chains: &'a Chains,
        frames: &'a mut MaybeUninit<[Frame; DEPTH]>,
    ) -> Trace<'a> {
        Trace {
            chains,
            from: 0,
            prefix: 0,
            frames,
            len: 0,
            open: !chains.full.load(Ordering::Relaxed),
        }
    }

    /// Records the walk's next frame; the trace closes when it holds [`DEPTH`].
    #[inline]
    pub(super) fn push(&mut self, frame: impl FnOnce() -> Frame) {
        if !self.open {
            return;
        }
        if self.len < DEPTH {
            // SAFETY: `len < DEPTH`: inside the array.
            unsafe {
                self.frames
                    .as_mut_ptr()
                    .cast::<Frame>()
                    .add(self.len)
                    .write(frame())
            };
            self.len += 1;
        } else {
            self.open = false;
        }
    }
}

/// Where following a chain left the walk: the next key, the registers, and the return
/// addresses written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resume {
    pub(super) key: usize,
    pub(super) sp: usize,
    pub(super) bp: usize,
    pub(super) len: usize,
    /// The walk ended inside the chain (a return address of 0).
    pub(super) done: bool,
}

/// Follows the published chain of `trace`'s table that matches the most frames of the walk starting with key
/// `key` at rsp `sp0` and rbp `bp0`, writing their return addresses into `out`, and notes
/// it in `trace`. With none matching, the walk resumes where it started.
///
/// # Safety
/// As `fast::walk`'s: `sp0` is the starting rsp of a live, unchanging stack mapped up to
/// `limit`, and `key` the starting pc + 1.
pub(super) unsafe fn follow(
    key: usize,
    sp0: usize,
    bp0: usize,
    limit: usize,
    out: &mut [MaybeUninit<usize>],
    trace: &mut Trace<'_>,
) -> Resume {
    let mut best = Resume {
        key,
        sp: sp0,
        bp: bp0,
        len: 0,
        done: false,
    };
    let mut best_frames = 0;
    for (n, chain) in trace.chains.table.iter().enumerate() {
        if chain.state.load(Ordering::Acquire) != PUBLISHED {
            continue;
        }
        let len = chain.len.load(Ordering::Relaxed);
        // The chain's CFAs grow (checked when it was published); the limit may differ per
        // walk.
        if chain.top.load(Ordering::Relaxed) > limit - sp0 {
            continue;
        }
        let (mut at_key, mut bp, mut written, mut i, mut done) = (key, bp0, 0, 0, false);
        while i < len && written < out.len() {
            let [f_key, f_cfa, f_ra, f_bp, f_bp_cfa] = &chain.frames[i];
            let chain_key = f_key.load(Ordering::Relaxed);
            if chain_key != at_key
                && (chain_key != at_key | ON_RBP
                    || bp.wrapping_add(f_bp_cfa.load(Ordering::Relaxed))
                        != sp0 + f_cfa.load(Ordering::Relaxed))
            {
                // Another frame, or a CFA on rbp that is not the chain's (the distance from
                // the starting rsp may vary: a frame that realigns its stack, or a variable
                // sized one).
                break;
            }
            // SAFETY: frame `i` has the key the chain's frame had, hence its rule; its CFA
            // is the chain's (on rsp, the frames below being the chain's; on rbp, checked
            // above), so this is the slot the cache's walk would read, in the live part of
            // the stack.
            let ra = unsafe { read(sp0 + f_ra.load(Ordering::Relaxed)) };
            let bp_slot = f_bp.load(Ordering::Relaxed);
            if bp_slot != NOT_SAVED {
                // SAFETY: as above.
                bp = unsafe { read(sp0 + bp_slot) };
            }
            i += 1;
            if ra == 0 {
                done = true;
                break;
            }
            out[written].write(ra);
            written += 1;
            at_key = ra;
        }
        if i > best_frames || done {
            best_frames = i;
            best = Resume {
                key: at_key,
                sp: if i == 0 {
                    sp0
                } else {
                    sp0 + chain.frames[i - 1][1].load(Ordering::Relaxed)
                },
                bp,
                len: written,
                done,
            };
            trace.from = n;
            trace.prefix = i;
            trace.len = i;
        }
        if done || i == len {
            break;
        }
    }
    best
}

/// Publishes `trace` as a chain of its table if it holds more frames than the chain it followed
/// (`Trace::prefix`) and a slot is free.
pub(super) fn publish(trace: &Trace<'_>) {
    let chains = trace.chains;
    if trace.len <= trace.prefix || chains.full.load(Ordering::Relaxed) {
        return;
    }
    let from = &chains.table[trace.from];
    let frame = |i: usize| {
        if i < trace.prefix {
            from.frame(i)
        } else {
            // SAFETY: `push` wrote the frames from `prefix` to `len`, inside the array.
            unsafe { trace.frames.as_ptr().cast::<Frame>().add(i).read() }
        }
    };
    for chain in &chains.table {
        if chain.state.load(Ordering::Relaxed) != EMPTY
            || chain
                .state
                .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        for (i, slot) in chain.frames.iter().enumerate().take(trace.len) {
            let f = frame(i);
            for (word, value) in slot
                .iter()
                .zip([f.key, f.cfa, f.ra_slot, f.bp_slot, f.bp_cfa])
            {
                word.store(value, Ordering::Relaxed);
            }
        }
        chain.len.store(trace.len, Ordering::Relaxed);
        chain.top.store(frame(trace.len - 1).cfa, Ordering::Relaxed);
        chain.state.store(PUBLISHED, Ordering::Release);
        return;
    }
    chains.full.store(true, Ordering::Relaxed);
}

/// # Safety
/// `at` must be a readable, aligned word.
unsafe fn read(at: usize) -> usize {
    // SAFETY: the caller's contract. Volatile: the word belongs to another frame.
    unsafe { core::ptr::read_volatile(at as *const usize) }
}
