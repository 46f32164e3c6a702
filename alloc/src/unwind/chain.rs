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

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const PUBLISHED: u8 = 2;

/// One frame of a chain, as offsets from the walk's starting rsp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Frame {
    /// The address the frame's rule is looked up by: the starting pc + 1, then the return
    /// address read from the frame below.
    pub(super) key: usize,
    /// The frame's CFA: the caller's rsp.
    pub(super) cfa: usize,
    /// Where the return address into the caller is read.
    pub(super) ra_slot: usize,
    /// Where the caller's rbp is read, or [`NOT_SAVED`].
    pub(super) bp_slot: usize,
}

impl Frame {
    pub(super) fn new(key: usize, cfa: usize, ra_slot: usize, bp_slot: Option<usize>) -> Frame {
        Frame {
            key,
            cfa,
            ra_slot,
            bp_slot: bp_slot.unwrap_or(NOT_SAVED),
        }
    }
}

struct Chain {
    state: AtomicU8,
    len: AtomicUsize,
    /// The last frame's CFA: the largest.
    top: AtomicUsize,
    frames: [[AtomicUsize; 4]; DEPTH],
}

#[allow(clippy::declare_interior_mutable_const)] // only to build the table below
const UNUSED: Chain = Chain {
    state: AtomicU8::new(EMPTY),
    len: AtomicUsize::new(0),
    top: AtomicUsize::new(0),
    frames: [const { [const { AtomicUsize::new(0) }; 4] }; DEPTH],
};

static TABLE: [Chain; CHAINS] = [UNUSED; CHAINS];

/// Every slot of [`TABLE`] is taken: walks need not trace their frames.
static FULL: AtomicBool = AtomicBool::new(false);

impl Chain {
    fn frame(&self, i: usize) -> Frame {
        let [key, cfa, ra_slot, bp_slot] = &self.frames[i];
        Frame {
            key: key.load(Ordering::Relaxed),
            cfa: cfa.load(Ordering::Relaxed),
            ra_slot: ra_slot.load(Ordering::Relaxed),
            bp_slot: bp_slot.load(Ordering::Relaxed),
        }
    }
}

/// The frames of a walk that a chain could hold (every one a step on rsp): the first
/// `prefix` as chain `from` has them, then `len - prefix` in `frames`.
#[derive(Debug)]
pub(super) struct Trace<'a> {
    from: usize,
    prefix: usize,
    /// A buffer of the caller's: inside this struct, LLVM zeroed it with the fields around
    /// it (a 536-byte `memset` per walk).
    frames: &'a mut MaybeUninit<[Frame; DEPTH]>,
    len: usize,
    /// Whether frames are still recorded: a slot is free, and every frame so far was on rsp.
    open: bool,
}

impl<'a> Trace<'a> {
    /// A trace that records frames into `frames` while a slot is free.
    pub(super) fn new(frames: &'a mut MaybeUninit<[Frame; DEPTH]>) -> Trace<'a> {
        Trace {
            from: 0,
            prefix: 0,
            frames,
            len: 0,
            open: !FULL.load(Ordering::Relaxed),
        }
    }

    /// Records the walk's next frame, or closes the trace (`frame` is `None`: a frame a
    /// chain cannot hold).
    #[inline]
    pub(super) fn push(&mut self, frame: impl FnOnce() -> Option<Frame>) {
        if !self.open {
            return;
        }
        match frame() {
            Some(f) if self.len < DEPTH => {
                // SAFETY: `len < DEPTH`: inside the array.
                unsafe {
                    self.frames
                        .as_mut_ptr()
                        .cast::<Frame>()
                        .add(self.len)
                        .write(f)
                };
                self.len += 1;
            }
            _ => self.open = false,
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

/// Follows the published chain that matches the most frames of the walk starting with key
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
    for (n, chain) in TABLE.iter().enumerate() {
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
            let [f_key, _, f_ra, f_bp] = &chain.frames[i];
            if f_key.load(Ordering::Relaxed) != at_key {
                break;
            }
            // SAFETY: frame `i` has the key the chain's frame had, hence its rule; the CFAs
            // of the frames below are the chain's too (all on rsp), so this is the slot the
            // cache's walk would read, in the live part of the stack.
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

/// Publishes `trace` as a chain if it holds more frames than the chain it followed
/// (`Trace::prefix`) and a slot is free.
pub(super) fn publish(trace: &Trace<'_>) {
    if trace.len <= trace.prefix || FULL.load(Ordering::Relaxed) {
        return;
    }
    let from = &TABLE[trace.from];
    let frame = |i: usize| {
        if i < trace.prefix {
            from.frame(i)
        } else {
            // SAFETY: `push` wrote the frames from `prefix` to `len`, inside the array.
            unsafe { trace.frames.as_ptr().cast::<Frame>().add(i).read() }
        }
    };
    for chain in &TABLE {
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
            for (word, value) in slot.iter().zip([f.key, f.cfa, f.ra_slot, f.bp_slot]) {
                word.store(value, Ordering::Relaxed);
            }
        }
        chain.len.store(trace.len, Ordering::Relaxed);
        chain.top.store(frame(trace.len - 1).cfa, Ordering::Relaxed);
        chain.state.store(PUBLISHED, Ordering::Release);
        return;
    }
    FULL.store(true, Ordering::Relaxed);
}

/// # Safety
/// `at` must be a readable, aligned word.
unsafe fn read(at: usize) -> usize {
    // SAFETY: the caller's contract. Volatile: the word belongs to another frame.
    unsafe { core::ptr::read_volatile(at as *const usize) }
}
