//! The remote-free word of a small span: how a thread that does not own a span gives an
//! object back without a lock (ARCHITECTURE.md#remote-free).
//!
//! One 64-bit atomic per span packs three things, so a single CAS both pushes the object
//! and observes the span's state:
//!
//! ```text
//!  63          47 46                     3 2   0
//! +--------------+------------------------+-----+
//! | count (17 b) | list head (8-aligned)  |state|
//! +--------------+------------------------+-----+
//! ```
//!
//! - `count` is the length of the list, so the owner learns how many objects came back
//!   without walking it;
//! - `state` is `NORMAL` or `FULL`. The owner sets `FULL` when it has nothing left to hand
//!   out from the span and moves it off its working lists; the first remote free after that
//!   flips the state back to `NORMAL` and, because it won that transition, is the one thread
//!   that pushes the span onto its owner's notification stack (mimalloc's "delayed free").
//!   The owner drains that stack on its next refill. A span is thus on the stack at most
//!   once per `FULL` period, and a full span nobody frees into costs nothing.
//!
//! - `SUSPECT` (bit 1, beside the state) says that a free onto this list found the block
//!   already carrying the freed-block marker (`freelist.rs`): a double free that the freeing
//!   thread cannot confirm, since only the owner may walk the span's lists. The owner checks
//!   the span for a block listed twice when it takes the list (`take` returns the bit and
//!   clears it) or before it counts the span empty.
//!
//! Links inside the list are stored encoded, like every free-list link (`freelist.rs`).
//!
//! User-space addresses on x86_64 and aarch64 (48-bit) fit below bit 47, and Tessera never
//! maps above that.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use tessera_span::Span;

const STATE_MASK: u64 = 0b111;
const COUNT_SHIFT: u32 = 47;
const HEAD_MASK: u64 = ((1 << COUNT_SHIFT) - 1) & !STATE_MASK;

/// Remote frees go straight onto the list.
pub(crate) const NORMAL: u64 = 0;
/// The owner parked the span; the next remote free must notify it.
pub(crate) const FULL: u64 = 1;
/// A free onto the list saw the freed-block marker; see the module comment.
pub(crate) const SUSPECT: u64 = 0b10;

/// The atomic operations the protocol needs, so loom can model it on its own atomics
/// (`--cfg tessera_loom`) while the allocator runs it on the span's `AtomicU64`.
pub(crate) trait Word {
    fn load(&self, order: Ordering) -> u64;
    fn fetch_and(&self, value: u64, order: Ordering) -> u64;
    fn compare_exchange(&self, old: u64, new: u64, ok: Ordering, err: Ordering)
    -> Result<u64, u64>;
    fn compare_exchange_weak(
        &self,
        old: u64,
        new: u64,
        ok: Ordering,
        err: Ordering,
    ) -> Result<u64, u64>;
}

macro_rules! impl_word {
    ($atomic:ty) => {
        impl Word for $atomic {
            #[inline(always)]
            fn load(&self, order: Ordering) -> u64 {
                <$atomic>::load(self, order)
            }
            #[inline(always)]
            fn fetch_and(&self, value: u64, order: Ordering) -> u64 {
                <$atomic>::fetch_and(self, value, order)
            }
            #[inline(always)]
            fn compare_exchange(
                &self,
                old: u64,
                new: u64,
                ok: Ordering,
                err: Ordering,
            ) -> Result<u64, u64> {
                <$atomic>::compare_exchange(self, old, new, ok, err)
            }
            #[inline(always)]
            fn compare_exchange_weak(
                &self,
                old: u64,
                new: u64,
                ok: Ordering,
                err: Ordering,
            ) -> Result<u64, u64> {
                <$atomic>::compare_exchange_weak(self, old, new, ok, err)
            }
        }
    };
}

impl_word!(AtomicU64);
#[cfg(tessera_loom)]
impl_word!(loom::sync::atomic::AtomicU64);

#[inline]
fn pack(head: *mut u8, count: u64, state: u64) -> u64 {
    debug_assert!(head as u64 & !HEAD_MASK == 0);
    (count << COUNT_SHIFT) | head as u64 | state
}

/// Number of objects on the remote list.
#[inline]
pub(crate) fn count(span: &Span) -> u32 {
    (span.remote.load(Ordering::Acquire) >> COUNT_SHIFT) as u32
}

/// Whether every object carved from `span` is free: on its local list or its remote list.
/// A double free may inflate the count; callers that act on the answer check `SUSPECT`
/// first (`is_suspect`, or the owner's `check_suspect`).
#[inline]
pub(crate) fn all_free(span: &Span) -> bool {
    all_free_with(span, count(span))
}

/// `all_free` with the remote list's length known (`Pushed::listed`).
#[inline]
pub(crate) fn all_free_with(span: &Span, listed: u32) -> bool {
    span.local_count.load(Ordering::Relaxed) + listed == span.carved.load(Ordering::Relaxed)
}

/// What a push onto a remote list found and left.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pushed {
    /// The span was `FULL`: the pusher won the `FULL` -> `NORMAL` transition and owes the
    /// owner a notification.
    pub(crate) notify: bool,
    /// The list's length right after the push, read off the word the push replaced, for the
    /// pusher's test of whether the span is all free now (`central::remote_pushed`) without
    /// loading the word again.
    pub(crate) listed: u32,
}

/// Pushes `block` onto the span's remote list.
///
/// # Safety
/// `block` must be a free object of `span`, unreachable by anyone else.
#[inline]
pub(crate) unsafe fn push(span: &Span, block: *mut u8, suspect: bool) -> Pushed {
    // SAFETY: forwarded contract.
    unsafe {
        push_chain_word(
            &span.remote,
            crate::freelist::key(),
            block,
            block,
            1,
            suspect,
        )
    }
}

/// `push` on any word.
///
/// # Safety
/// `block` must be 8-aligned, at least 8 bytes, writable and reachable by nobody else.
#[cfg(all(test, tessera_loom))]
#[inline]
pub(crate) unsafe fn push_word(word: &impl Word, block: *mut u8) -> bool {
    // SAFETY: a one-block chain; forwarded contract.
    unsafe { push_chain_word(word, crate::freelist::key(), block, block, 1, false).notify }
}

/// Pushes a chain of `count` blocks, `head` to `tail`, with one CAS, and sets `SUSPECT` if
/// `suspect`. The chain's links are written already except the tail's, which the push
/// writes (encoded under `key`, the process's key) to the list's head it replaces: a chain
/// of one block is written once.
///
/// # Safety
/// The chain must be free objects of `span`, linked head to tail through their first words
/// (the tail's word is overwritten), and reachable by nobody else; `key` must be the
/// process's free-list key.
#[inline]
pub(crate) unsafe fn push_chain(
    span: &Span,
    key: usize,
    head: *mut u8,
    tail: *mut u8,
    count: u32,
    suspect: bool,
) -> Pushed {
    // SAFETY: forwarded contract.
    unsafe { push_chain_word(&span.remote, key, head, tail, count, suspect) }
}

/// `push_chain` on any word.
///
/// # Safety
/// As `push_chain`.
#[inline]
pub(crate) unsafe fn push_chain_word(
    word: &impl Word,
    key: usize,
    head: *mut u8,
    tail: *mut u8,
    count: u32,
    suspect: bool,
) -> Pushed {
    let flag = if suspect { SUSPECT } else { 0 };
    let mut old = word.load(Ordering::Relaxed);
    loop {
        // SAFETY: the chain is ours until the CAS publishes it.
        unsafe { crate::freelist::write_link_with(key, tail, (old & HEAD_MASK) as *mut u8) };
        let listed = (old >> COUNT_SHIFT) + count as u64;
        let new = pack(head, listed, NORMAL) | (old & SUSPECT) | flag;
        match word.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => {
                return Pushed {
                    notify: old & STATE_MASK == FULL,
                    listed: listed as u32,
                };
            }
            Err(seen) => old = seen,
        }
    }
}

/// Takes the whole remote list (head, length, whether `SUSPECT` was set), leaving the
/// `FULL`/`NORMAL` state untouched and clearing `SUSPECT`.
#[inline]
pub(crate) fn take(span: &Span) -> (*mut u8, u32, bool) {
    take_word(&span.remote)
}

#[inline]
pub(crate) fn take_word(word: &impl Word) -> (*mut u8, u32, bool) {
    if word.load(Ordering::Relaxed) & !STATE_MASK == 0 {
        return (ptr::null_mut(), 0, false);
    }
    let old = word.fetch_and(FULL, Ordering::Acquire);
    (
        (old & HEAD_MASK) as *mut u8,
        (old >> COUNT_SHIFT) as u32,
        old & SUSPECT != 0,
    )
}

/// Whether a free onto the span's remote list saw the freed-block marker since the owner
/// last took it.
#[inline]
pub(crate) fn is_suspect(span: &Span) -> bool {
    span.remote.load(Ordering::Relaxed) & SUSPECT != 0
}

/// The list's head, for the owner's walk in place (see `suspect`).
#[inline]
pub(crate) fn head(span: &Span) -> *mut u8 {
    (span.remote.load(Ordering::Acquire) & HEAD_MASK) as *mut u8
}

/// Parks an empty-listed span: `NORMAL` with no remote objects becomes `FULL`. Fails when a
/// remote free slipped in; the caller takes the list and retries.
#[inline]
pub(crate) fn try_park(span: &Span) -> bool {
    try_park_word(&span.remote)
}

#[inline]
pub(crate) fn try_park_word(word: &impl Word) -> bool {
    word.compare_exchange(
        pack(ptr::null_mut(), 0, NORMAL),
        pack(ptr::null_mut(), 0, FULL),
        Ordering::AcqRel,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// Owner side of "a local free un-parks the span": `FULL` → `NORMAL`. Fails when a remote
/// freer already did it (and so owes, or paid, the notification).
#[inline]
pub(crate) fn try_unpark(span: &Span) -> bool {
    try_unpark_word(&span.remote)
}

#[inline]
pub(crate) fn try_unpark_word(word: &impl Word) -> bool {
    let mut old = word.load(Ordering::Relaxed);
    loop {
        if old & STATE_MASK != FULL {
            return false;
        }
        match word.compare_exchange_weak(
            old,
            old & !STATE_MASK,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => old = seen,
        }
    }
}

/// Resets the word of a span the owner has just taken from the page heap.
#[inline]
pub(crate) fn reset(span: &Span) {
    span.remote
        .store(pack(ptr::null_mut(), 0, NORMAL), Ordering::Relaxed);
}

/// Loom models of the protocol: `RUSTFLAGS="--cfg tessera_loom" cargo test -p tessera
/// --release --lib loom`.
#[cfg(all(test, tessera_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64 as LoomU64;

    /// Heap blocks with stable 8-aligned addresses for the list to link.
    fn blocks(n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| Box::into_raw(Box::new(0u64)) as usize)
            .collect()
    }

    /// Blocks on the list that starts at `at`.
    ///
    /// # Safety
    /// `at` must be null or the head of a list taken off a word (`take_word`), whose blocks
    /// are live boxes of `blocks` linked through their first words.
    unsafe fn list_len(mut at: *mut u8) -> u32 {
        let mut n = 0;
        while !at.is_null() {
            n += 1;
            // SAFETY: list members are our boxed blocks holding their successor.
            at = unsafe { crate::freelist::read_link(at) };
        }
        n
    }

    /// The owner parks while a remote thread frees: the remote free owes a notification
    /// exactly when the park happened first, and no block is ever lost.
    #[test]
    fn park_versus_remote_free() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(pack(ptr::null_mut(), 0, NORMAL)));
            let b = blocks(1);
            let remote = {
                let word = Arc::clone(&word);
                let block = b[0];
                loom::thread::spawn(move || {
                    // SAFETY: the block is this thread's until pushed.
                    unsafe { push_word(&*word, block as *mut u8) }
                })
            };
            let parked = try_park_word(&*word);
            let notified = remote.join().unwrap();
            let (head, n, _) = take_word(&*word);
            assert_eq!(n, 1, "the freed block is on the list");
            // SAFETY: a list taken off the word, of blocks from `blocks`.
            assert_eq!(unsafe { list_len(head) }, 1);
            if notified {
                assert!(parked, "only a parked span notifies");
            }
            if parked {
                assert!(notified, "a free after the park must notify");
            }
            assert_eq!(word.load(Ordering::Relaxed) & STATE_MASK, NORMAL);
        });
    }

    /// A cache gives up its span (`Cache::give_up_current`: the central's tag, then the
    /// park) while a remote thread frees into it: the free that un-parks it owes the filing,
    /// and must then see the central's tag (`notify_owner` files the span by it), through
    /// the park's release and its fence; a free before the park owes nothing.
    #[test]
    fn a_given_up_span_is_filed_by_its_unparking_free() {
        use loom::sync::atomic::AtomicUsize;
        const CACHE: usize = 1;
        const CENTRAL: usize = 2;
        loom::model(|| {
            let word = Arc::new(LoomU64::new(pack(ptr::null_mut(), 0, NORMAL)));
            let owner = Arc::new(AtomicUsize::new(CACHE));
            let b = blocks(1);
            let remote = {
                let (word, owner) = (Arc::clone(&word), Arc::clone(&owner));
                let block = b[0];
                loom::thread::spawn(move || {
                    // SAFETY: the block is this thread's until pushed.
                    if unsafe { push_word(&*word, block as *mut u8) } {
                        loom::sync::atomic::fence(Ordering::Acquire);
                        Some(owner.load(Ordering::Relaxed))
                    } else {
                        None
                    }
                })
            };
            owner.store(CENTRAL, Ordering::Release);
            let parked = try_park_word(&*word);
            if !parked {
                owner.store(CACHE, Ordering::Relaxed);
            }
            let seen = remote.join().unwrap();
            if parked {
                assert_eq!(
                    seen,
                    Some(CENTRAL),
                    "the un-parking free files it centrally"
                );
            } else {
                assert_eq!(seen, None, "a free before the park owes nothing");
            }
        });
    }

    /// The owner's local un-park races a remote free's un-park: exactly one of them wins,
    /// so the span is moved back exactly once (by the owner, or through the notification).
    #[test]
    fn unpark_exactly_once() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(pack(ptr::null_mut(), 0, FULL)));
            let b = blocks(1);
            let remote = {
                let word = Arc::clone(&word);
                let block = b[0];
                // SAFETY: as above.
                loom::thread::spawn(move || unsafe { push_word(&*word, block as *mut u8) })
            };
            let owner_won = try_unpark_word(&*word);
            let remote_won = remote.join().unwrap();
            assert!(
                owner_won ^ remote_won,
                "owner {owner_won} remote {remote_won}"
            );
        });
    }

    /// A batched chain and a single push race a take: all three blocks arrive, counted.
    #[test]
    fn chains_keep_count_and_links() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(pack(ptr::null_mut(), 0, NORMAL)));
            let b = blocks(3);
            // SAFETY: b[0] -> b[1] is a chain owned by this thread until pushed.
            unsafe { crate::freelist::write_link(b[0] as *mut u8, b[1] as *mut u8) };
            let chain = {
                let word = Arc::clone(&word);
                let (h, t) = (b[0], b[1]);
                // SAFETY: the chain is pushed once, by this thread.
                loom::thread::spawn(move || unsafe {
                    push_chain_word(
                        &*word,
                        crate::freelist::key(),
                        h as *mut u8,
                        t as *mut u8,
                        2,
                        false,
                    )
                })
            };
            // SAFETY: b[2] is pushed once, by this thread.
            unsafe { push_word(&*word, b[2] as *mut u8) };
            let (first, n1, _) = take_word(&*word);
            // SAFETY: a list taken off the word, of blocks from `blocks`.
            assert_eq!(unsafe { list_len(first) }, n1);
            chain.join().unwrap();
            let (second, n2, _) = take_word(&*word);
            // SAFETY: as above.
            assert_eq!(unsafe { list_len(second) }, n2);
            assert_eq!(n1 + n2, 3);
        });
    }

    /// Two remote freers and a collecting owner: every block is taken exactly once.
    #[test]
    fn concurrent_pushes_and_take_lose_nothing() {
        loom::model(|| {
            let word = Arc::new(LoomU64::new(pack(ptr::null_mut(), 0, NORMAL)));
            let b = blocks(2);
            let pushers: Vec<_> = b
                .iter()
                .map(|&block| {
                    let word = Arc::clone(&word);
                    // SAFETY: each block is pushed by exactly one thread.
                    loom::thread::spawn(move || unsafe { push_word(&*word, block as *mut u8) })
                })
                .collect();
            let (first, n1, _) = take_word(&*word);
            // SAFETY: a list taken off the word, of blocks from `blocks`.
            assert_eq!(unsafe { list_len(first) }, n1);
            for p in pushers {
                p.join().unwrap();
            }
            let (second, n2, _) = take_word(&*word);
            // SAFETY: as above.
            assert_eq!(unsafe { list_len(second) }, n2);
            assert_eq!(n1 + n2, 2);
        });
    }
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    fn blocks() -> Vec<[u64; 2]> {
        vec![[0u64; 2]; 4]
    }

    #[test]
    fn push_take_counts() {
        let heap = tessera_span::PageHeap::new(tessera_numa::NodeId::ZERO);
        let s = heap.alloc(1, tessera_span::SpanKind::Small).unwrap();
        // SAFETY: a fresh span record of ours.
        let span = unsafe { s.span.as_ref() };
        reset(span);
        let mut b = blocks();
        // SAFETY: the blocks are ours and unreachable by others.
        unsafe {
            let first = push(span, b[0].as_mut_ptr().cast(), false);
            assert!(!first.notify);
            assert_eq!(first.listed, 1);
            let second = push(span, b[1].as_mut_ptr().cast(), false);
            assert!(!second.notify);
            assert_eq!(second.listed, 2, "the length the push left");
        }
        assert_eq!(count(span), 2);
        let (head, n, suspect) = take(span);
        assert_eq!(n, 2);
        assert!(!suspect);
        assert_eq!(head, b[1].as_mut_ptr().cast());
        assert_eq!(count(span), 0);
        assert!(try_park(span));
        // SAFETY: as above.
        let pushed = unsafe { push(span, b[2].as_mut_ptr().cast(), false) };
        assert!(pushed.notify, "first free after park notifies");
        assert_eq!(pushed.listed, 1);
        // SAFETY: as above.
        let pushed = unsafe { push(span, b[3].as_mut_ptr().cast(), true) };
        assert!(!pushed.notify);
        assert_eq!(pushed.listed, 2);
        assert!(is_suspect(span));
        assert!(!try_unpark(span));
        assert!(!try_park(span), "list not empty");
        let (_, n, suspect_taken) = take(span);
        assert_eq!(n, 2);
        assert!(suspect_taken, "take reports SUSPECT");
        assert!(!is_suspect(span), "and clears it");
        assert!(try_park(span));
        assert!(try_unpark(span));
        // SAFETY: the span holds nothing live.
        unsafe { heap.free(s.span) };
    }
}
