//! Coroutine stacks grouped by identical stack: the goroutine profile's samples, one per
//! distinct (stack, labels) with the number of coroutines that share it.
//!
//! In anonymous OS memory (`tessera::profile::buf::OsVec`), like the pprof encoder's own
//! tables: the profile is taken while stacks of parked coroutines are held still, and
//! nothing here may wait on the allocator meanwhile. An open-addressing index over the
//! groups, linear probing, at most half full.

use core::hash::{Hash, Hasher};

use tessera::profile::LabelSet;
use tessera::profile::buf::OsVec;
use tessera::profile::pprof::{Label, ProfileBuilder, Stack};
use tessera_sys::error::{ENOMEM, OsError};

/// One distinct stack: `frames[start..start + len]`.
#[derive(Clone, Copy, Debug)]
struct Group {
    hash: u64,
    start: usize,
    len: usize,
    /// The first frame is an exact pc (pprof's `Stack::ExactLeaf`), not a return address.
    exact_leaf: bool,
    labels: LabelSet,
    count: u64,
}

/// The groups; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct StackGroups {
    groups: OsVec<Group>,
    frames: OsVec<usize>,
    /// Slot value `n + 1` names group `n`; 0 is empty. A power of two long.
    index: OsVec<u32>,
}

/// FNV-1a's step, a word at a time, with splitmix64's finaliser at the end so that the
/// index's low bits depend on every word.
struct Fnv(u64);

impl Fnv {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        tessera_sys::random::mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.word(u64::from(b));
        }
    }

    fn write_u64(&mut self, w: u64) {
        self.word(w);
    }

    fn write_usize(&mut self, w: usize) {
        self.word(w as u64);
    }
}

fn hash_of(frames: &[usize], exact_leaf: bool, labels: LabelSet) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    // Word by word: `<[usize]>::hash` would feed the bytes one at a time.
    for &f in frames {
        h.word(f as u64);
    }
    h.word(frames.len() as u64);
    exact_leaf.hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

impl StackGroups {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// The number of distinct groups.
    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Counts one coroutine with this stack (innermost first) and labels.
    pub(super) fn add(
        &mut self,
        frames: &[usize],
        exact_leaf: bool,
        labels: LabelSet,
    ) -> Result<(), OsError> {
        let hash = hash_of(frames, exact_leaf, labels);
        let mask = self.index.len().wrapping_sub(1);
        if !self.index.is_empty() {
            let mut i = hash as usize & mask;
            while let Some(slot) = self.index.get(i).filter(|&s| s != 0) {
                let n = slot as usize - 1;
                let g = self.groups.as_slice()[n];
                if g.hash == hash
                    && g.exact_leaf == exact_leaf
                    && g.labels == labels
                    && self.frames.as_slice()[g.start..g.start + g.len] == *frames
                {
                    self.groups.as_mut_slice()[n].count += 1;
                    return Ok(());
                }
                i = (i + 1) & mask;
            }
        }
        let n = self.groups.len();
        if n >= u32::MAX as usize - 1 {
            return Err(OsError(ENOMEM));
        }
        self.make_room(n + 1)?;
        let start = self.frames.len();
        self.frames.extend(frames)?;
        self.groups.push(Group {
            hash,
            start,
            len: frames.len(),
            exact_leaf,
            labels,
            count: 1,
        })?;
        self.insert(hash, n);
        Ok(())
    }

    /// Grows the index, if needed, so that `groups` entries keep it at most half full.
    fn make_room(&mut self, groups: usize) -> Result<(), OsError> {
        if groups * 2 <= self.index.len() {
            return Ok(());
        }
        let size = (self.index.len() * 2).max(1024);
        self.index = OsVec::filled(0, size)?;
        for n in 0..self.groups.len() {
            let hash = self.groups.as_slice()[n].hash;
            self.insert(hash, n);
        }
        Ok(())
    }

    fn insert(&mut self, hash: u64, n: usize) {
        let mask = self.index.len() - 1;
        let slots = self.index.as_mut_slice();
        let mut i = hash as usize & mask;
        // At most half full: a free slot exists.
        while slots[i] != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = n as u32 + 1;
    }

    /// Adds every group to `b` as a sample whose one value is its count, labelled with its
    /// label set's pairs.
    pub(super) fn emit(&self, b: &mut ProfileBuilder) -> Result<(), OsError> {
        for g in self.groups.as_slice() {
            let frames = &self.frames.as_slice()[g.start..g.start + g.len];
            let stack = if g.exact_leaf {
                Stack::ExactLeaf(frames)
            } else {
                Stack::ReturnAddresses(frames)
            };
            g.labels.with_pairs(|pairs| {
                let mut labels = [Label::Str { key: "", value: "" }; LabelSet::MAX_PAIRS];
                for (label, &(key, value)) in labels.iter_mut().zip(pairs) {
                    *label = Label::Str { key, value };
                }
                b.add_sample(stack, &[g.count as i64], &labels[..pairs.len()])
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_stacks_and_labels_share_a_group() {
        let mut g = StackGroups::new();
        let a = [0x1000, 0x2000, 0x3000];
        let b = [0x1000, 0x2000, 0x4000];
        for _ in 0..30 {
            g.add(&a, true, LabelSet::NONE).unwrap();
        }
        for _ in 0..10 {
            g.add(&b, true, LabelSet::NONE).unwrap();
        }
        g.add(&a, false, LabelSet::NONE).unwrap();
        g.add(&a[..2], true, LabelSet::NONE).unwrap();
        let labelled = LabelSet::new(&[("groups-test", "x")]);
        g.add(&a, true, labelled).unwrap();
        assert_eq!(g.len(), 5);
        let counts: Vec<u64> = g.groups.as_slice().iter().map(|g| g.count).collect();
        assert_eq!(counts, [30, 10, 1, 1, 1]);
    }

    #[test]
    fn the_index_grows_past_its_first_size() {
        let mut g = StackGroups::new();
        for round in 0..2 {
            for i in 0..5000usize {
                g.add(&[i * 16 + 1, 7], true, LabelSet::NONE).unwrap();
            }
            assert_eq!(g.len(), 5000, "round {round}");
        }
        assert!(g.groups.as_slice().iter().all(|g| g.count == 2));
    }
}
