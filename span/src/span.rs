//! The span record (Go's `mspan`): one per run of pages, free or in use.
//!
//! Records live in the arena header, keyed by the span's first page, never beside the
//! objects they describe (DESIGN.md, "Metadata"): a user overflow cannot reach them and
//! object pages stay pure data. Each record is one cache line, because a span that its
//! owner allocates from is also hit by remote freers.
//!
//! Which fields belong to whom:
//! - the page heap (under its lock) owns `prev`/`next` while the span is free, and
//!   `start`, `npages`, `kind`, `flags`, `freed_at_ms` always;
//! - the small-object layer (the `tessera` crate) owns `remote`, `notify_next`, `class`,
//!   `obj_size`, `capacity`, `bump`, and `prev`/`next` while the span is in use.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering};

use crate::arena::{ARENA_MASK, PAGE_SHIFT};

/// What a span record currently describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// The record does not start a span (interior page, or absorbed by a merge).
    None = 0,
    /// A free run in the page heap.
    Free = 1,
    /// Small objects of one size class.
    Small = 2,
    /// One large object.
    Large = 3,
}

impl SpanKind {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => SpanKind::Free,
            2 => SpanKind::Small,
            3 => SpanKind::Large,
            _ => SpanKind::None,
        }
    }
}

/// Free-run flag: every page of the run is known to read as zero.
pub(crate) const FLAG_ZEROED: u8 = 1;
/// Free-run flag: some page of the run may still be resident.
pub(crate) const FLAG_DIRTY: u8 = 2;

/// A run of pages. See the module comment for who owns which field.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Span {
    /// The small-object layer's remote-free word (packed list head, count and state).
    pub remote: AtomicU64,
    /// Link on the small-object layer's lock-free notification stack.
    pub notify_next: AtomicPtr<Span>,
    /// List link (page heap free list, or a central list while in use).
    pub prev: *mut Span,
    /// List link, as `prev`.
    pub next: *mut Span,
    pub(crate) start: u32,
    pub(crate) npages: u32,
    kind: AtomicU8,
    /// Size-class index of a small span.
    pub class: u8,
    pub(crate) flags: u8,
    /// Small-object layer flags (e.g. "on a central list").
    pub user_flags: u8,
    /// Object size of a small span; requested size class bytes.
    pub obj_size: u32,
    /// Objects a small span holds.
    pub capacity: u32,
    /// Bytes of a small span already carved into objects.
    pub bump: u32,
    pub(crate) freed_at_ms: u64,
}

const _: () = assert!(core::mem::size_of::<Span>() == 64);

impl Span {
    /// What this record describes.
    #[inline]
    pub fn kind(&self) -> SpanKind {
        SpanKind::from_u8(self.kind.load(Ordering::Acquire))
    }

    pub(crate) fn set_kind(&self, kind: SpanKind) {
        self.kind.store(kind as u8, Ordering::Release);
    }

    /// Pages in the span.
    #[inline]
    pub fn npages(&self) -> usize {
        self.npages as usize
    }

    /// Bytes in the span.
    #[inline]
    pub fn bytes(&self) -> usize {
        (self.npages as usize) << PAGE_SHIFT
    }

    /// First byte of the span's memory.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        let arena = (self as *const Span as usize) & !ARENA_MASK;
        (arena + ((self.start as usize) << PAGE_SHIFT)) as *mut u8
    }

    /// Whether `addr` lies inside the span's pages.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base() as usize) < self.bytes()
    }
}
