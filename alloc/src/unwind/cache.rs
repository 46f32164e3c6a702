//! The rule cache: return address → unwind rule, so that a steady-state sample pays a hash
//! and a few loads per frame instead of libgcc's FDE search and CFI interpretation.
//!
//! An open-addressing table in static memory (it fills on the allocator's path: nothing
//! here allocates), probed linearly over four slots: 512 entries (12 KiB) at first, and
//! once 384 of those are taken, a table of 4,096 (96 KiB) that starts empty and refills
//! from the misses that follow. A program that samples few call sites so touches three
//! pages rather than most of 24 (issue #13, item 6: hashed entries land on every page). Each entry is a seqlock
//! of its own (the scheme of Boehm, "Can seqlocks get along with programming language
//! memory models?", MSPC 2012): a writer claims an entry by moving its sequence from even
//! to odd with a CAS, stores, and publishes with the next even number; a reader takes the
//! entry only if it saw the same even sequence before and after. Nothing blocks, so a
//! capture in a signal handler that interrupts a writer just misses (and its own write
//! fails its CAS); nothing needs the fork handlers either: a fork in the middle of a write
//! leaves that one entry odd in the child, where it is skipped like a busy one forever.
//!
//! Entries are never invalidated: after a `dlclose`, and another module loaded at the same
//! addresses, a rule may be stale (see `fast.rs`).

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(test)]
use super::cfi::Step;
use super::cfi::{CfaBase, MAX_CFA_OFFSET, Rule};

const SMALL_ENTRIES: usize = 512;
const LARGE_ENTRIES: usize = 4096;
/// Entries the small table takes before the large one replaces it.
const SMALL_FILL: u32 = SMALL_ENTRIES as u32 / 4 * 3;
const PROBES: usize = 4;

struct Entry {
    seq: AtomicU32,
    /// The return address; 0 when the entry is empty.
    ra: AtomicUsize,
    rule: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only to build the table below
const EMPTY: Entry = Entry {
    seq: AtomicU32::new(0),
    ra: AtomicUsize::new(0),
    rule: AtomicU64::new(0),
};

static SMALL: [Entry; SMALL_ENTRIES] = [EMPTY; SMALL_ENTRIES];
static LARGE: [Entry; LARGE_ENTRIES] = [EMPTY; LARGE_ENTRIES];
/// Entries filled in `SMALL` (empty ones taken); `LARGE` is the table from `SMALL_FILL` on.
static SMALL_FILLED: AtomicU32 = AtomicU32::new(0);

/// The table in use. Readers and writers may briefly disagree after the switch; either
/// table's entries are valid rules (a rule never goes stale but by `dlclose`, see the top
/// of this file), and the small table's are simply forgotten.
#[inline(always)]
fn table() -> &'static [Entry] {
    if SMALL_FILLED.load(Ordering::Relaxed) < SMALL_FILL {
        &SMALL
    } else {
        &LARGE
    }
}

/// The first slot of `ra`'s probe sequence in a table of `len` entries (Fibonacci hashing:
/// the top bits of the product mix every bit of the address).
#[inline(always)]
fn home(ra: usize, len: usize) -> usize {
    const _: () = assert!(SMALL_ENTRIES.is_power_of_two() && LARGE_ENTRIES.is_power_of_two());
    ((ra as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - len.trailing_zeros())) as usize
}

#[inline(always)]
fn slot(table: &'static [Entry], home: usize, probe: usize) -> &'static Entry {
    &table[(home + probe) & (table.len() - 1)]
}

/// The cached rule of `ra`, if an entry holds it. A hit on the first probe is ~10
/// instructions: three loads, the key's test, and the sequence's test and reload.
#[inline(always)]
pub(super) fn get(ra: usize) -> Option<Packed> {
    let table = table();
    let home = home(ra, table.len());
    for probe in 0..PROBES {
        let e = slot(table, home, probe);
        let seq = e.seq.load(Ordering::Acquire);
        let key = e.ra.load(Ordering::Relaxed);
        let rule = e.rule.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if key == ra {
            // Ours if no writer held the entry or came by while it was read; a writer
            // there means a miss (the caller computes the rule).
            let stable = seq & 1 == 0 && e.seq.load(Ordering::Relaxed) == seq;
            return stable.then_some(Packed(rule));
        }
        if key == 0 {
            // The end of the probe sequence (or a torn read of an entry being written,
            // which is a miss as well).
            return None;
        }
    }
    None
}

/// Remembers `rule` for `ra`: in the first empty slot of its probe sequence, or in place of
/// another copy of it, or else over the first slot. Gives up if a writer holds the slot.
pub(super) fn put(ra: usize, rule: Packed) {
    debug_assert!(ra != 0);
    let table = table();
    let home = home(ra, table.len());
    let mut victim = None;
    for probe in 0..PROBES {
        let e = slot(table, home, probe);
        let seq = e.seq.load(Ordering::Acquire);
        if seq & 1 != 0 {
            continue;
        }
        let key = e.ra.load(Ordering::Relaxed);
        if key == 0 || key == ra {
            victim = Some((e, seq));
            break;
        }
        if victim.is_none() {
            victim = Some((e, seq));
        }
    }
    let Some((e, seq)) = victim else { return };
    let fresh = e.ra.load(Ordering::Relaxed) == 0;
    // The CAS fails if anyone wrote since `seq` was read, so what was checked still holds.
    if e.seq
        .compare_exchange(
            seq,
            seq.wrapping_add(1),
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return;
    }
    fence(Ordering::Release);
    e.rule.store(rule.0, Ordering::Relaxed);
    e.ra.store(ra, Ordering::Relaxed);
    e.seq.store(seq.wrapping_add(2), Ordering::Release);
    if fresh && core::ptr::eq(table, &SMALL[..]) {
        SMALL_FILLED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A rule in 64 bits, laid out so that the walk reads it with a mask or a shift per field:
/// the CFA offset in bits 0–27, the CFA base in bit 28 (set: rbp), whether rbp is saved in
/// bit 29, the kind in bits 30–31 (0: a step), the return address's offset in bits 32–47
/// and rbp's in bits 48–63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packed(u64);

const CFA_OFFSET: u64 = MAX_CFA_OFFSET as u64;
const BASE_RBP: u64 = 1 << 28;
const RBP_SAVED: u64 = 1 << 29;
const KIND: u64 = 3 << 30;
const KIND_END: u64 = 1 << 30;
const KIND_UNSUPPORTED: u64 = 2 << 30;
const _: () = assert!(CFA_OFFSET < BASE_RBP);

impl Packed {
    pub(super) fn new(rule: Rule) -> Packed {
        Packed(match rule {
            Rule::End => KIND_END,
            Rule::Unsupported => KIND_UNSUPPORTED,
            // On rsp, a step whose slots lie below the frame's rsp (the CFA minus the CFA
            // offset) cannot be followed, whatever the registers: the walk gives up there,
            // without checking it per frame.
            Rule::Step(s)
                if s.base == CfaBase::Rsp
                    && i64::from(s.cfa_offset)
                        + i64::from(s.rbp_offset.map_or(s.ra_offset, |o| o.min(s.ra_offset)))
                        < 0 =>
            {
                KIND_UNSUPPORTED
            }
            Rule::Step(s) => {
                debug_assert!(s.cfa_offset <= MAX_CFA_OFFSET);
                let mut word = u64::from(s.cfa_offset) & CFA_OFFSET;
                if s.base == CfaBase::Rbp {
                    word |= BASE_RBP;
                }
                word |= u64::from(s.ra_offset as u16) << 32;
                if let Some(offset) = s.rbp_offset {
                    word |= RBP_SAVED | u64::from(offset as u16) << 48;
                }
                word
            }
        })
    }

    /// A [`Rule::Step`].
    #[inline(always)]
    pub(super) fn is_step(self) -> bool {
        self.0 & KIND == 0
    }

    /// [`Rule::End`].
    #[inline(always)]
    pub(super) fn is_end(self) -> bool {
        self.0 & KIND == KIND_END
    }

    /// A step's CFA base is rbp (else rsp).
    #[inline(always)]
    pub(super) fn base_is_rbp(self) -> bool {
        self.0 & BASE_RBP != 0
    }

    /// A step's CFA offset.
    #[inline(always)]
    pub(super) fn cfa_offset(self) -> usize {
        (self.0 & CFA_OFFSET) as usize
    }

    /// A step's return-address offset from the CFA.
    #[inline(always)]
    pub(super) fn ra_offset(self) -> i16 {
        (self.0 >> 32) as u16 as i16
    }

    /// A step's offset of the saved rbp from the CFA, if saved.
    #[inline(always)]
    pub(super) fn rbp_offset(self) -> Option<i16> {
        (self.0 & RBP_SAVED != 0).then_some((self.0 >> 48) as u16 as i16)
    }

    /// The rule back.
    #[cfg(test)]
    fn rule(self) -> Rule {
        if self.is_end() {
            return Rule::End;
        }
        if !self.is_step() {
            return Rule::Unsupported;
        }
        Rule::Step(Step {
            base: if self.base_is_rbp() {
                CfaBase::Rbp
            } else {
                CfaBase::Rsp
            },
            cfa_offset: self.cfa_offset() as u32,
            ra_offset: self.ra_offset(),
            rbp_offset: self.rbp_offset(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_survive_packing() {
        let rules = [
            Rule::End,
            Rule::Unsupported,
            Rule::Step(Step {
                base: CfaBase::Rsp,
                cfa_offset: 8,
                ra_offset: -8,
                rbp_offset: None,
            }),
            Rule::Step(Step {
                base: CfaBase::Rbp,
                cfa_offset: MAX_CFA_OFFSET,
                ra_offset: i16::MIN,
                rbp_offset: Some(-16),
            }),
            Rule::Step(Step {
                base: CfaBase::Rsp,
                cfa_offset: 0,
                ra_offset: i16::MAX,
                rbp_offset: Some(i16::MAX),
            }),
        ];
        for rule in rules {
            assert_eq!(Packed::new(rule).rule(), rule);
        }
        // On rsp, a slot below the frame (CFA - 8 with a CFA offset of 0): never followed.
        let below = Rule::Step(Step {
            base: CfaBase::Rsp,
            cfa_offset: 0,
            ra_offset: -8,
            rbp_offset: None,
        });
        assert_eq!(Packed::new(below).rule(), Rule::Unsupported);
    }

    /// The two tests that fill the shared tables with made-up addresses run one at a time:
    /// one's thousand puts could evict the other's few between its put and its get.
    static MADE_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_put_rule_is_found() {
        let _one_at_a_time = MADE_UP.lock().unwrap_or_else(|e| e.into_inner());
        // Addresses no real frame has, so the other tests' entries are not disturbed.
        let rule = Rule::Step(Step {
            base: CfaBase::Rsp,
            cfa_offset: 24,
            ra_offset: -8,
            rbp_offset: None,
        });
        assert_eq!(get(40), None);
        // The tables switch once, perhaps meanwhile (other tests fill them): a second round
        // then runs on the large table alone.
        for round in 0..2 {
            let used = table().as_ptr();
            for ra in 1..40usize {
                put(ra, Packed::new(rule));
            }
            let all = (1..40usize).all(|ra| get(ra).map(Packed::rule) == Some(rule));
            if all {
                break;
            }
            assert!(
                round == 0 && table().as_ptr() != used,
                "a put rule was lost"
            );
        }
        put(5, Packed::new(Rule::End));
        assert_eq!(get(5).map(Packed::rule), Some(Rule::End));
    }

    #[test]
    fn the_large_table_takes_over_when_the_small_one_fills() {
        let _one_at_a_time = MADE_UP.lock().unwrap_or_else(|e| e.into_inner());
        // More addresses than the small table takes (these tests share the tables, so
        // enough to fill it whatever the others put): the large one is in use after, and
        // keeps what is put in it.
        let rule = Rule::Step(Step {
            base: CfaBase::Rbp,
            cfa_offset: 16,
            ra_offset: -8,
            rbp_offset: Some(-16),
        });
        let addresses = (1 << 20)..(1 << 20) + 2 * SMALL_ENTRIES;
        for ra in addresses.clone() {
            put(ra, Packed::new(rule));
        }
        assert!(SMALL_FILLED.load(Ordering::Relaxed) >= SMALL_FILL);
        assert_eq!(table().len(), LARGE_ENTRIES);
        for ra in addresses.clone() {
            put(ra, Packed::new(rule));
        }
        let found = addresses
            .filter(|&ra| get(ra) == Some(Packed::new(rule)))
            .count();
        // Four probes in a table of 4,096: at most a few of 1,024 evicted by each other.
        assert!(found > 2 * SMALL_ENTRIES * 9 / 10, "{found}");
    }
}
