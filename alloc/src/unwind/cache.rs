//! The rule cache: return address → unwind rule, so that a steady-state sample pays a hash
//! and a few loads per frame instead of libgcc's FDE search and CFI interpretation.
//!
//! An open-addressing table in static memory (it fills on the allocator's path: nothing
//! here allocates), 4,096 entries probed linearly over four slots. Each entry is a seqlock
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

use super::cfi::{CfaBase, MAX_CFA_OFFSET, Rule, Step};

const ENTRIES: usize = 4096;
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

static TABLE: [Entry; ENTRIES] = [EMPTY; ENTRIES];

/// The first slot of `ra`'s probe sequence (Fibonacci hashing: the top bits of the
/// product mix every bit of the address).
fn home(ra: usize) -> usize {
    const _: () = assert!(ENTRIES.is_power_of_two());
    ((ra as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - ENTRIES.trailing_zeros())) as usize
}

fn slot(home: usize, probe: usize) -> &'static Entry {
    &TABLE[(home + probe) & (ENTRIES - 1)]
}

/// The cached rule of `ra`, if an entry holds it.
#[inline]
pub(super) fn get(ra: usize) -> Option<Rule> {
    let home = home(ra);
    for probe in 0..PROBES {
        let e = slot(home, probe);
        let seq = e.seq.load(Ordering::Acquire);
        let key = e.ra.load(Ordering::Relaxed);
        let rule = e.rule.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let stable = seq & 1 == 0 && e.seq.load(Ordering::Relaxed) == seq;
        if stable && key == 0 {
            return None; // the end of the probe sequence
        }
        if stable && key == ra {
            return Some(unpack(rule));
        }
    }
    None
}

/// Remembers `rule` for `ra`: in the first empty slot of its probe sequence, or in place of
/// another copy of it, or else over the first slot. Gives up if a writer holds the slot.
pub(super) fn put(ra: usize, rule: Rule) {
    debug_assert!(ra != 0);
    let home = home(ra);
    let mut victim = None;
    for probe in 0..PROBES {
        let e = slot(home, probe);
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
    e.rule.store(pack(rule), Ordering::Relaxed);
    e.ra.store(ra, Ordering::Relaxed);
    e.seq.store(seq.wrapping_add(2), Ordering::Release);
}

// A rule in 64 bits: the kind in bits 0–1, the CFA base in bit 2, whether rbp is saved in
// bit 3, the CFA offset in bits 4–31, the return address's offset in bits 32–47 and rbp's
// in bits 48–63.
const KIND_STEP: u64 = 0;
const KIND_END: u64 = 1;
const KIND_UNSUPPORTED: u64 = 2;
const BASE_RBP: u64 = 1 << 2;
const RBP_SAVED: u64 = 1 << 3;

fn pack(rule: Rule) -> u64 {
    match rule {
        Rule::End => KIND_END,
        Rule::Unsupported => KIND_UNSUPPORTED,
        Rule::Step(s) => {
            debug_assert!(s.cfa_offset <= MAX_CFA_OFFSET);
            let mut word = KIND_STEP | u64::from(s.cfa_offset) << 4;
            if s.base == CfaBase::Rbp {
                word |= BASE_RBP;
            }
            word |= u64::from(s.ra_offset as u16) << 32;
            if let Some(offset) = s.rbp_offset {
                word |= RBP_SAVED | u64::from(offset as u16) << 48;
            }
            word
        }
    }
}

fn unpack(word: u64) -> Rule {
    match word & 3 {
        KIND_END => Rule::End,
        KIND_STEP => Rule::Step(Step {
            base: if word & BASE_RBP != 0 {
                CfaBase::Rbp
            } else {
                CfaBase::Rsp
            },
            cfa_offset: (word >> 4) as u32 & MAX_CFA_OFFSET,
            ra_offset: (word >> 32) as u16 as i16,
            rbp_offset: (word & RBP_SAVED != 0).then_some((word >> 48) as u16 as i16),
        }),
        _ => Rule::Unsupported,
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
            assert_eq!(unpack(pack(rule)), rule);
        }
    }

    #[test]
    fn a_put_rule_is_found() {
        // Addresses no real frame has, so the other tests' entries are not disturbed.
        let rule = Rule::Step(Step {
            base: CfaBase::Rsp,
            cfa_offset: 24,
            ra_offset: -8,
            rbp_offset: None,
        });
        assert_eq!(get(40), None);
        for ra in 1..40usize {
            put(ra, rule);
        }
        for ra in 1..40usize {
            assert_eq!(get(ra), Some(rule));
        }
        put(5, Rule::End);
        assert_eq!(get(5), Some(Rule::End));
    }
}
