//! Fixed-size bitsets for CPUs and nodes: plain `u64` words on the stack or in a static, so
//! the topology and the policy calls never allocate. [`NodeMask`]'s words are laid out as the
//! kernel's `unsigned long` node masks, so it is passed to `mbind` and friends as it is.

use core::fmt;

use crate::ids::{CpuId, NodeId};

/// The highest node id plus one this crate represents. Larger ids in sysfs are skipped (and
/// counted as truncation in [`Topology::truncated`](crate::Topology::truncated)).
pub const MAX_NODES: usize = 64;

/// The highest CPU number plus one this crate represents.
pub const MAX_CPUS: usize = 1024;

const NODE_WORDS: usize = MAX_NODES.div_ceil(64);
const CPU_WORDS: usize = MAX_CPUS.div_ceil(64);

/// `W` words of bits; the one implementation behind [`CpuSet`] and [`NodeMask`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Bits<const W: usize>([u64; W]);

impl<const W: usize> Bits<W> {
    const EMPTY: Self = Bits([0; W]);
    const CAPACITY: usize = W * 64;

    /// Sets bit `i`; returns false (and changes nothing) when `i` is past the capacity.
    fn insert(&mut self, i: usize) -> bool {
        if i >= Self::CAPACITY {
            return false;
        }
        self.0[i / 64] |= 1 << (i % 64);
        true
    }

    fn remove(&mut self, i: usize) {
        if i < Self::CAPACITY {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }

    fn contains(&self, i: usize) -> bool {
        i < Self::CAPACITY && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bits `lo..=hi`, clamped to the capacity; returns false when any were cut off.
    fn insert_range(&mut self, lo: u64, hi: u64) -> bool {
        let cap = Self::CAPACITY as u64;
        if lo >= cap {
            return lo > hi;
        }
        let top = if hi >= cap { cap - 1 } else { hi };
        let mut i = lo;
        while i <= top {
            self.insert(i as usize);
            i += 1;
        }
        hi < cap
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    fn and(&self, other: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a &= *b;
        }
        out
    }

    fn or(&self, other: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
        out
    }

    fn first(&self) -> Option<usize> {
        self.next_from(0)
    }

    /// The lowest set bit at or above `from`.
    fn next_from(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        if w >= W {
            return None;
        }
        let mut word = self.0[w] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            if w == W {
                return None;
            }
            word = self.0[w];
        }
    }
}

impl<const W: usize> Default for Bits<W> {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Iterates over the set bits of a [`Bits`] in increasing order.
#[derive(Clone)]
struct BitIter<'a, const W: usize> {
    bits: &'a Bits<W>,
    next: usize,
}

impl<const W: usize> Iterator for BitIter<'_, W> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let i = self.bits.next_from(self.next)?;
        self.next = i + 1;
        Some(i)
    }
}

/// Writes a set as a kernel-style list, e.g. `0-3,8`.
fn fmt_list<const W: usize>(bits: &Bits<W>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut first = true;
    let mut it = bits.first();
    while let Some(lo) = it {
        let mut hi = lo;
        while bits.contains(hi + 1) {
            hi += 1;
        }
        if !first {
            f.write_str(",")?;
        }
        first = false;
        if hi == lo {
            write!(f, "{lo}")?;
        } else {
            write!(f, "{lo}-{hi}")?;
        }
        it = bits.next_from(hi + 1);
    }
    if first {
        f.write_str("(none)")?;
    }
    Ok(())
}

/// Defines a set type over `Bits` whose members are an id newtype: CPU sets and node masks
/// share every operation and differ only in their id type, width and name.
macro_rules! id_set {
    (
        $(#[$doc:meta])*
        $name:ident, $words:expr, $id:ident, $raw:ty, $max:ident, $unit:literal
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name(Bits<$words>);

        impl $name {
            #[doc = concat!("The empty set of ", $unit, "s.")]
            pub const EMPTY: $name = $name(Bits::EMPTY);

            #[doc = concat!("Adds a ", $unit, "; returns false when it is at or past [`", stringify!($max), "`] (the set is unchanged).")]
            pub fn insert(&mut self, id: $id) -> bool {
                self.0.insert(id.index())
            }

            #[doc = concat!("Removes a ", $unit, ".")]
            pub fn remove(&mut self, id: $id) {
                self.0.remove(id.index())
            }

            #[doc = concat!("Whether the ", $unit, " is in the set.")]
            pub fn contains(&self, id: $id) -> bool {
                self.0.contains(id.index())
            }

            #[doc = concat!("Adds ", $unit, "s `lo..=hi`; returns false when some were past [`", stringify!($max), "`].")]
            pub fn insert_range(&mut self, lo: u64, hi: u64) -> bool {
                self.0.insert_range(lo, hi)
            }

            #[doc = concat!("The number of ", $unit, "s in the set.")]
            pub fn count(&self) -> usize {
                self.0.count()
            }

            /// Whether the set is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            #[doc = concat!("The ", $unit, "s in both sets.")]
            pub fn intersection(&self, other: &$name) -> $name {
                $name(self.0.and(&other.0))
            }

            #[doc = concat!("The ", $unit, "s in either set.")]
            pub fn union(&self, other: &$name) -> $name {
                $name(self.0.or(&other.0))
            }

            #[doc = concat!("The lowest ", $unit, " in the set.")]
            pub fn first(&self) -> Option<$id> {
                self.0.first().map(|i| $id::new(i as $raw))
            }

            #[doc = concat!("The ", $unit, "s in increasing order.")]
            pub fn iter(&self) -> impl Iterator<Item = $id> + '_ {
                BitIter { bits: &self.0, next: 0 }.map(|i| $id::new(i as $raw))
            }

            /// The set as the kernel's array of `unsigned long` (bit `i` of word `i / 64`),
            /// as `cpu_set_t` and `nodemask` lay it out.
            pub fn as_words(&self) -> &[u64] {
                &self.0.0
            }

            /// Mutable access to the words, for the kernel to fill (`sched_getaffinity`,
            /// `get_mempolicy`).
            pub(crate) fn words_mut(&mut self) -> &mut [u64] {
                &mut self.0.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                fmt_list(&self.0, f)?;
                f.write_str(")")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_list(&self.0, f)
            }
        }
    };
}

id_set!(
    /// A set of CPUs, up to [`MAX_CPUS`].
    CpuSet, CPU_WORDS, CpuId, u32, MAX_CPUS, "CPU"
);

id_set!(
    /// A set of NUMA nodes, up to [`MAX_NODES`], laid out as the kernel's `nodemask`.
    NodeMask, NODE_WORDS, NodeId, u16, MAX_NODES, "node"
);

impl NodeMask {
    /// The mask holding only `node`.
    pub fn single(node: NodeId) -> NodeMask {
        let mut m = NodeMask::EMPTY;
        m.insert(node);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_and_bounds() {
        let mut s = CpuSet::EMPTY;
        assert!(s.insert(CpuId::new(0)));
        assert!(s.insert(CpuId::new(63)));
        assert!(s.insert(CpuId::new(64)));
        assert!(s.insert(CpuId::new(MAX_CPUS as u32 - 1)));
        assert!(!s.insert(CpuId::new(MAX_CPUS as u32)));
        assert!(!s.contains(CpuId::new(MAX_CPUS as u32)));
        assert_eq!(s.count(), 4);
        let v: std::vec::Vec<u32> = s.iter().map(|c| c.get()).collect();
        assert_eq!(v, [0, 63, 64, MAX_CPUS as u32 - 1]);
        s.remove(CpuId::new(63));
        assert!(!s.contains(CpuId::new(63)));
        assert_eq!(s.first(), Some(CpuId::new(0)));
    }

    #[test]
    fn ranges_clamp_instead_of_looping_forever() {
        let mut s = CpuSet::EMPTY;
        assert!(!s.insert_range(1000, u64::MAX));
        assert_eq!(s.count(), MAX_CPUS - 1000);
        let mut m = NodeMask::EMPTY;
        assert!(!m.insert_range(70, 80));
        assert!(m.is_empty());
        assert!(m.insert_range(2, 4));
        assert_eq!(std::format!("{m}"), "2-4");
    }

    #[test]
    fn set_algebra_and_display() {
        let mut a = CpuSet::EMPTY;
        a.insert_range(0, 7);
        let mut b = CpuSet::EMPTY;
        b.insert_range(4, 11);
        assert_eq!(std::format!("{}", a.intersection(&b)), "4-7");
        assert_eq!(std::format!("{}", a.union(&b)), "0-11");
        let mut c = CpuSet::EMPTY;
        c.insert(CpuId::new(1));
        c.insert(CpuId::new(3));
        c.insert_range(5, 6);
        assert_eq!(std::format!("{c:?}"), "CpuSet(1,3,5-6)");
        assert_eq!(std::format!("{}", CpuSet::EMPTY), "(none)");
    }

    #[test]
    fn node_mask_matches_kernel_word_layout() {
        let mut m = NodeMask::single(NodeId::new(2));
        m.insert(NodeId::new(0));
        assert_eq!(m.as_words()[0], 0b101);
        assert_eq!(m.first(), Some(NodeId::new(0)));
        let v: std::vec::Vec<u16> = m.iter().map(|n| n.get()).collect();
        assert_eq!(v, [0, 2]);
    }
}
