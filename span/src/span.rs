//! The span record (Go's `mspan`): one per run of pages, free or in use.
//!
//! Records live in the arena header, found through the page map, never beside the
//! objects they describe (ARCHITECTURE.md#metadata): a user overflow cannot reach them and
//! object pages stay pure data. Each record is two cache lines (see `Span`): the owner's
//! free touches the first alone.
//!
//! Which fields belong to whom:
//! - the page heap (under its lock) owns `prev`/`next` while the span is free, and
//!   `start`, `npages`, `kind`, `flags`, `freed_at_ms` always;
//! - the small-object layer (the `tessera` crate) owns `remote`, `notify_next`, `owner`,
//!   `class`, `obj_size`, `capacity`, `obj_bytes`, `div_test`, `local_free`, `local_count`,
//!   `carved`, `user_flags`,
//!   and `prev`/`next` while the span is in use;
//! - both bump `generation` (atomically), and anyone reads it.
//!
//! `prev`/`next` are only ever touched through a [`SpanList`](crate::list::SpanList), whose
//! contract says who holds them when.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use tessera_numa::NodeId;

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
    /// A free run the page heap is returning to the OS outside its lock: on no free list,
    /// and no neighbour merges with it until the purge completes.
    Purging = 4,
}

impl SpanKind {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => SpanKind::Free,
            2 => SpanKind::Small,
            3 => SpanKind::Large,
            4 => SpanKind::Purging,
            _ => SpanKind::None,
        }
    }
}

/// Free-run flag: every page of the run is known to read as zero.
pub(crate) const FLAG_ZEROED: u8 = 1;
/// Free-run flag: some page of the run may still be resident. The page heap keeps dirty and
/// purged runs on separate lists and merges a run only with neighbours of the same kind.
pub(crate) const FLAG_DIRTY: u8 = 2;

/// A run of pages. See the module comment for who owns which field.
///
/// Two cache lines. The first holds everything the owner's free reads and writes (the
/// owner, the geometry that places a pointer at an object, the small-object layer's flags,
/// the local free list and its count, the carved count): a local free touches this line
/// alone. The second holds what remote freers CAS (the remote word, the notification link)
/// and the page heap's list links, so that a remote freer's CAS does not take the line the
/// owner frees into away from it. A remote freer still reads the first line (the owner and
/// the geometry, to validate its pointer), which the owner's next local free must take
/// back; a local free is the commoner case by far (serde_json, regex, syn: all local; rayon
/// one free in five remote), and it used to touch both lines.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Span {
    // ---- line 1: the owner's free ----
    /// The small-object layer's owner of this span (a cache or a central list).
    pub owner: AtomicPtr<()>,
    /// The class's divisibility constant (`tessera`'s `ClassInfo::div_test`), so a free can
    /// validate an object start from this line alone.
    pub div_test: u64,
    /// First byte of a small span's objects (`base()`, kept for the free path).
    pub obj_base: usize,
    /// Head of the owner's local free list (small spans).
    pub local_free: AtomicPtr<u8>,
    /// The bytes of a small span's carved objects (`carved * obj_size`): those that may have
    /// been handed out. An address past them is no block, whatever its alignment: a free,
    /// a list link or a `realloc` naming one is bad input (a double free of a block whose
    /// memory a new span now covers would otherwise put an uncarved object on a list, and
    /// the carving would hand it out a second time). Written by the owner as it carves;
    /// other threads read it for blocks they were handed, which were carved before.
    pub obj_bytes: AtomicU32,
    /// Objects on `local_free`.
    pub local_count: AtomicU32,
    /// Objects carved out of the span so far (small spans are formatted lazily).
    pub carved: AtomicU32,
    /// Object size of a small span.
    pub obj_size: u32,
    /// Objects a small span holds.
    pub capacity: u32,
    pub(crate) start: u32,
    pub(crate) npages: u32,
    kind: AtomicU8,
    /// Size class of a small span: the byte of the small-object layer's `SizeClass` (this
    /// crate knows no classes; `tessera::size_class::SizeClass::of` reads it back).
    pub class: u8,
    /// Small-object layer flags (which list the span is on).
    pub user_flags: u8,
    pub(crate) flags: u8,
    // ---- line 2: remote freers and the lists ----
    /// The small-object layer's remote-free word (packed list head, count and state).
    pub remote: AtomicU64,
    /// Link on the owner's lock-free notification stack.
    pub notify_next: AtomicPtr<Span>,
    /// List link (page heap free list, or the owner's span lists while in use), written
    /// only by [`SpanList`](crate::list::SpanList).
    pub(crate) prev: *mut Span,
    /// List link, as `prev`.
    pub(crate) next: *mut Span,
    pub(crate) freed_at_ms: u64,
    /// Bumped whenever the record's span stops being what it was: each time a run goes
    /// among the free ones (`insert_free`, under the page heap's lock: every in-use span
    /// given back passes there), and by the small-object layer each time it formats a span
    /// for a class. A copy of a small span's geometry taken with the generation (the
    /// `tessera` crate's per-thread span memo, `percpu/memo.rs`) is still true while the
    /// generation reads the same: a span freed and its pages reused, or reformatted for
    /// another class, never matches a copy taken before. 64 bits: it never wraps. In the
    /// second line (the first is full), which the memo's test reads for nothing else.
    pub generation: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Span>() == 128);
const _: () = assert!(core::mem::offset_of!(Span, flags) < 64);
const _: () = assert!(core::mem::offset_of!(Span, remote) == 64);
const _: () = assert!(core::mem::offset_of!(Span, generation) >= 64);

impl Span {
    /// What this record describes.
    #[inline]
    pub fn kind(&self) -> SpanKind {
        SpanKind::from_u8(self.kind.load(Ordering::Acquire))
    }

    /// Marks the record's span changed (see `generation`). Release: a reader that sees the
    /// new value sees what the changer wrote before.
    #[inline]
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Release);
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

    /// The NUMA node of the page heap that owns this span's arena.
    #[inline]
    pub fn node(&self) -> NodeId {
        let arena = ((self as *const Span as usize) & !ARENA_MASK) as *const crate::arena::Arena;
        // SAFETY: span records live inside mapped arena headers, which are never unmapped.
        unsafe { (*arena).node }
    }

    /// Whether `addr` lies inside the span's pages.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base() as usize) < self.bytes()
    }

    /// Whether this free run may still hold resident pages: freed and not purged since.
    /// A free run that is not dirty was purged, or never touched since its arena was
    /// reserved. Meaningful for `SpanKind::Free` records read under the page heap's lock
    /// (`PageHeap::for_each_span`), as `tessera::stats()` reads them.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        self.flags & FLAG_DIRTY != 0
    }
}
