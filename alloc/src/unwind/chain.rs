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
//! - a chain whose walk ended at a frame no rule continues (the thread's first frame, or a
//!   return address no FDE covers) keeps that frame's key (`Chain::end`): a walk that
//!   retraces the whole chain and meets that key is complete without looking its rule up;
//! - the walk goes on from where the chain leaves it with the cache's rules.
//!
//! Chains are written once and never change ([`CHAINS`] of them, [`DEPTH`] frames each,
//! in static memory): an empty one is claimed with a CAS, filled, and published with a
//! release store; a reader only reads published ones, so a chain's offsets are never torn.
//! The first chains published stay: a walk that follows none of them to its end publishes
//! its own while a slot is free. A walk tries first the chain that completed the last
//! complete walk (`Chains::hint`), so that a program whose samples come from one place
//! does not retrace the allocator's frames along another chain first.
//!
//! A walk a chain completes is identified by the chain and its length ([`Whole`]): the same
//! pair is always the same return addresses, which lets the profile's table find the
//! sample's bucket without hashing and comparing the frames (`profile/table.rs`).
//!
//! A chain's arrays are laid out by field, the offsets as 32-bit words (every offset is
//! below `fast::MAX_STACK`), so that following one reads a few cache lines: the keys, the
//! return-address slots and the rbp slots of the frames, then one CFA.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// Frames a chain holds: a C program's sample is the allocator's 7 frames and the
/// program's; a Rust program's starts ~10 frames below `main`, and more below a thread's
/// closure.
pub(super) const DEPTH: usize = 32;
/// Chains kept.
const CHAINS: usize = 4;
/// `Chain::bp_slots` of a frame that leaves rbp as it is.
const NOT_SAVED: u32 = u32::MAX;
/// Set in the key a chain stores for a frame whose CFA is on rbp: a return address never
/// has it (user space is the lower half), so the key test every frame makes fails for such
/// a frame, and only then is the CFA checked. Frames on rsp, most of them, pay nothing.
const ON_RBP: usize = 1 << 63;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const PUBLISHED: u8 = 2;

/// One frame of a walk, as offsets from the walk's starting rsp (each below
/// `fast::MAX_STACK`, so 32 bits hold it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Frame {
    /// The address the frame's rule is looked up by (the starting pc + 1, then the return
    /// address read from the frame below), with [`ON_RBP`] set if its CFA is on rbp.
    key: usize,
    /// The frame's CFA: the caller's rsp.
    cfa: u32,
    /// Where the return address into the caller is read.
    ra_slot: u32,
    /// Where the caller's rbp is read, or [`NOT_SAVED`].
    bp_slot: u32,
    /// For a frame whose CFA is rbp plus a constant, the constant; 0 otherwise.
    bp_cfa: u32,
}

impl Frame {
    /// A frame of key `key`; `bp_cfa` is the constant added to rbp for its CFA, if its CFA
    /// is on rbp. The offsets are below `fast::MAX_STACK` (the walk checks every CFA
    /// against it, and the slots lie below their CFA), `bp_cfa` below `MAX_CFA_OFFSET`.
    pub(super) fn new(
        key: usize,
        cfa: usize,
        ra_slot: usize,
        bp_slot: Option<usize>,
        bp_cfa: Option<usize>,
    ) -> Frame {
        let word = |offset: usize| {
            debug_assert!(offset < NOT_SAVED as usize);
            offset as u32
        };
        Frame {
            key: if bp_cfa.is_some() { key | ON_RBP } else { key },
            cfa: word(cfa),
            ra_slot: word(ra_slot),
            bp_slot: bp_slot.map_or(NOT_SAVED, word),
            bp_cfa: bp_cfa.map_or(0, word),
        }
    }
}

/// A published chain: `len` frames, field by field.
struct Chain {
    state: AtomicU8,
    len: AtomicUsize,
    /// The last frame's CFA: the largest.
    top: AtomicUsize,
    /// The key after the last frame when the walk that made the chain ended there (a
    /// frame whose rule ends the walk: it is the last return address reported); 0 when
    /// it did not.
    end: AtomicUsize,
    keys: [AtomicUsize; DEPTH],
    ra_slots: [AtomicU32; DEPTH],
    bp_slots: [AtomicU32; DEPTH],
    cfas: [AtomicU32; DEPTH],
    bp_cfas: [AtomicU32; DEPTH],
}

#[allow(clippy::declare_interior_mutable_const)] // only to build the table below
const UNUSED: Chain = Chain {
    state: AtomicU8::new(EMPTY),
    len: AtomicUsize::new(0),
    top: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    keys: [const { AtomicUsize::new(0) }; DEPTH],
    ra_slots: [const { AtomicU32::new(0) }; DEPTH],
    bp_slots: [const { AtomicU32::new(0) }; DEPTH],
    cfas: [const { AtomicU32::new(0) }; DEPTH],
    bp_cfas: [const { AtomicU32::new(0) }; DEPTH],
};

/// A table of chains: [`SAMPLES`] for the heap samples' captures; a test has its own.
pub(super) struct Chains {
    table: [Chain; CHAINS],
    /// Every slot of the table is taken: walks need not trace their frames.
    full: AtomicBool,
    /// The chain that completed the last walk a chain completed: tried first. Stored only
    /// when it changes, so that threads sampling from one place share its cache line.
    hint: AtomicUsize,
}

impl Chains {
    /// A table with no chain.
    pub(super) const fn new() -> Chains {
        Chains {
            table: [UNUSED; CHAINS],
            full: AtomicBool::new(false),
            hint: AtomicUsize::new(0),
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
        Frame {
            key: self.keys[i].load(Ordering::Relaxed),
            cfa: self.cfas[i].load(Ordering::Relaxed),
            ra_slot: self.ra_slots[i].load(Ordering::Relaxed),
            bp_slot: self.bp_slots[i].load(Ordering::Relaxed),
            bp_cfa: self.bp_cfas[i].load(Ordering::Relaxed),
        }
    }
}

/// A walk that a chain of a table completed: the same value always stands for the same
/// return addresses (chains never change), its `len` first ones, if the table is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Whole {
    chain: u8,
    len: u8,
}

impl Whole {
    /// A number for the pair, unique below 256 chains of 256 frames: a table's key.
    pub(crate) fn id(self) -> u32 {
        u32::from(self.chain) << 8 | u32::from(self.len)
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
    /// The key whose rule ended the walk after the recorded frames, if one did.
    end: usize,
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
            end: 0,
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

    /// The walk ended after the recorded frames at `key`, whose rule continues no further
    /// (its return address was the last one reported).
    pub(super) fn ended_at(&mut self, key: usize) {
        if self.open {
            self.end = key;
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
    /// The walk ended inside the chain (a return address of 0), or just after it, at the
    /// key that ended the chain's own walk.
    pub(super) done: bool,
    /// The chain and length of a walk done, if `done`.
    pub(super) whole: Option<Whole>,
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
        whole: None,
    };
    let mut best_frames = 0;
    let chains = trace.chains;
    let hint = chains.hint.load(Ordering::Relaxed) % CHAINS;
    for step in 0..CHAINS {
        let n = (hint + step) % CHAINS;
        let chain = &chains.table[n];
        if chain.state.load(Ordering::Acquire) != PUBLISHED {
            continue;
        }
        let len = chain.len.load(Ordering::Relaxed);
        // The chain's CFAs grow (checked when it was published); the limit may differ per
        // walk.
        if chain.top.load(Ordering::Relaxed) > limit - sp0 {
            continue;
        }
        let last = len.min(out.len()).min(DEPTH);
        let to = out.as_mut_ptr();
        let (mut at_key, mut bp, mut i) = (key, bp0, 0);
        while i < last {
            let chain_key = chain.keys[i].load(Ordering::Relaxed);
            if chain_key != at_key
                && (chain_key != at_key | ON_RBP
                    || bp.wrapping_add(chain.bp_cfas[i].load(Ordering::Relaxed) as usize)
                        != sp0 + chain.cfas[i].load(Ordering::Relaxed) as usize)
            {
                // Another frame, or a CFA on rbp that is not the chain's (the distance from
                // the starting rsp may vary: a frame that realigns its stack, or a variable
                // sized one). A return address of 0 read in the frame before ends the loop
                // here too: no key is 0.
                break;
            }
            // SAFETY: frame `i` has the key the chain's frame had, hence its rule; its CFA
            // is the chain's (on rsp, the frames below being the chain's; on rbp, checked
            // above), so this is the slot the cache's walk would read, in the live part of
            // the stack.
            let ra = unsafe { read(sp0 + chain.ra_slots[i].load(Ordering::Relaxed) as usize) };
            let bp_slot = chain.bp_slots[i].load(Ordering::Relaxed);
            if bp_slot != NOT_SAVED {
                // SAFETY: as above.
                bp = unsafe { read(sp0 + bp_slot as usize) };
            }
            // SAFETY: `i < last <= out.len()`. A 0 is written too, and not counted below.
            unsafe { (*to.add(i)).write(ra) };
            at_key = ra;
            i += 1;
        }
        // A return address of 0 ends the walk: the frame that read it is the last one, and
        // the 0 is not reported.
        let mut done = i > 0 && at_key == 0;
        let written = if done { i - 1 } else { i };
        // The whole chain, then the key whose rule ended the chain's own walk: the cache's
        // walk would stop there too (a key fixes its rule), having reported it already.
        // (`end` is 0 when unknown, and `at_key` is no return address of 0 here.)
        if !done && i == len && at_key == chain.end.load(Ordering::Relaxed) {
            done = true;
        }
        if i > best_frames || done {
            best_frames = i;
            best = Resume {
                key: at_key,
                sp: if i == 0 {
                    sp0
                } else {
                    sp0 + chain.cfas[i - 1].load(Ordering::Relaxed) as usize
                },
                bp,
                len: written,
                done,
                whole: None,
            };
            trace.from = n;
            trace.prefix = i;
            trace.len = i;
        }
        if done {
            if n != hint {
                chains.hint.store(n, Ordering::Relaxed);
            }
            best.whole = Some(Whole {
                chain: n as u8,
                len: written as u8,
            });
            break;
        }
        if i == len {
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
        for i in 0..trace.len {
            let f = frame(i);
            chain.keys[i].store(f.key, Ordering::Relaxed);
            chain.cfas[i].store(f.cfa, Ordering::Relaxed);
            chain.ra_slots[i].store(f.ra_slot, Ordering::Relaxed);
            chain.bp_slots[i].store(f.bp_slot, Ordering::Relaxed);
            chain.bp_cfas[i].store(f.bp_cfa, Ordering::Relaxed);
        }
        chain.len.store(trace.len, Ordering::Relaxed);
        chain
            .top
            .store(frame(trace.len - 1).cfa as usize, Ordering::Relaxed);
        chain.end.store(trace.end, Ordering::Relaxed);
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
