//! Stack size classes: powers of two from 16 KiB to 8 MiB.
//!
//! Powers of two keep the number of free lists small (ten) and make a request round up by
//! less than 2×; since stacks are committed lazily, the rounding costs address space only,
//! never RSS.

/// Smallest usable stack size handed out.
pub const MIN_STACK_SIZE: usize = 16 << 10;
/// Largest usable stack size handed out; deeper needs go through `maybe_grow`.
pub const MAX_STACK_SIZE: usize = 8 << 20;
/// Number of size classes between the two bounds.
pub(crate) const NUM_CLASSES: usize =
    (MAX_STACK_SIZE.trailing_zeros() - MIN_STACK_SIZE.trailing_zeros()) as usize + 1;

/// A stack size class; its usable size is `MIN_STACK_SIZE << index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The smallest class whose usable size is at least `size`, or `None` above 8 MiB.
    pub fn for_size(size: usize) -> Option<Self> {
        if size > MAX_STACK_SIZE {
            return None;
        }
        let rounded = size.max(MIN_STACK_SIZE).next_power_of_two();
        Some(Self(
            (rounded.trailing_zeros() - MIN_STACK_SIZE.trailing_zeros()) as u8,
        ))
    }

    /// The class at `index` (0 is 16 KiB).
    pub(crate) fn from_index(index: usize) -> Self {
        debug_assert!(index < NUM_CLASSES);
        Self(index as u8)
    }

    /// Index into per-class arrays.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Usable bytes of a stack of this class (guard excluded).
    #[inline]
    pub fn size(self) -> usize {
        MIN_STACK_SIZE << self.0
    }

    /// Every class, smallest first.
    #[cfg(test)]
    pub(crate) fn all() -> impl Iterator<Item = Self> {
        (0..NUM_CLASSES).map(Self::from_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(NUM_CLASSES, 10);
        assert_eq!(SizeClass::for_size(0).unwrap().size(), 16 << 10);
        assert_eq!(SizeClass::for_size(1).unwrap().size(), 16 << 10);
        assert_eq!(SizeClass::for_size(16 << 10).unwrap().size(), 16 << 10);
        assert_eq!(
            SizeClass::for_size((16 << 10) + 1).unwrap().size(),
            32 << 10
        );
        assert_eq!(SizeClass::for_size(100_000).unwrap().size(), 128 << 10);
        assert_eq!(
            SizeClass::for_size(8 << 20).unwrap().index(),
            NUM_CLASSES - 1
        );
        assert_eq!(SizeClass::for_size((8 << 20) + 1), None);
        assert_eq!(SizeClass::for_size(usize::MAX), None);
    }

    #[test]
    fn classes_are_increasing() {
        let sizes: Vec<usize> = SizeClass::all().map(SizeClass::size).collect();
        assert!(sizes.windows(2).all(|w| w[1] == 2 * w[0]));
        assert_eq!(*sizes.last().unwrap(), MAX_STACK_SIZE);
    }
}
