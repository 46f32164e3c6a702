//! Hardened free lists (issue #15, items 1 and 2): how a free block stores its link, how a
//! link is checked when it is read back, and how a block that is already free is recognised
//! when it is freed again.
//!
//! Every free list that lives in freed memory (a cache's bin, a span's local list, a remote
//! list and the batches that feed it) keeps its link in the block's first word. With the
//! `hardened` feature (default) that word is not the pointer but
//!
//! ```text
//! stored = next ^ (slot ^ KEY)        next = stored ^ (slot ^ KEY)
//! ```
//!
//! where `slot` is the block's own address and `KEY` a random per-process value taken from
//! the kernel (`getrandom`, else `AT_RANDOM`) when the first cache is made, before any list
//! exists. This is glibc's safe-linking (the link mixed with its own address) with a real
//! secret instead of the address's ASLR bits. Xor both ways, with `slot ^ KEY` computed
//! while the link is still being loaded, puts one instruction on the dependency chain a
//! malloc/free loop runs along (the link loaded, decoded, stored as the new head); an add
//! (`(next ^ KEY) + slot`, closer to mimalloc's rotate-and-add) put two each way and cost
//! the Rust fast path about 10%. A partial overwrite flips decoded bits one for one, but
//! which bits it sets is hidden by the key, and the checks below bound where they can
//! point: into the same span, at a block boundary.
//!
//! **Checks on decode.** Every list holds blocks of one span, and whoever pops knows that
//! span's geometry: a bin keeps its current span's `start`, `len` and `div_test` beside its
//! head, on the line the pop reads anyway. So each pop checks that the decoded successor is
//! null or the first byte of a block of that span (a subtraction, a compare, one multiply:
//! `size_class::divides`), and a failure is a report naming the block, its span and class
//! (`corrupt`). An address an overflow wrote into a freed neighbour therefore never comes
//! out of `malloc`. Walks (counting a list, looking for a block) check every link alike.
//!
//! **The freed-block marker.** A block handed out has its first word cleared by the pop
//! (mimalloc's secure mode does the same, so no link leaks to the user), and a free block's
//! first word always decodes to null or into its own span. So at free, a block whose first
//! word decodes into its span is very likely free already: that is the double-free test,
//! made on every path that takes a block back (`free`, sized `dealloc`, `realloc`,
//! `malloc_usable_size`), local or remote, at any depth of the list (glibc's tcache key does
//! the same with a second word, which 8-byte blocks do not have).
//!
//! Why the marker cannot fire on ordinary data: `KEY` has bit 63 set and bit 62 clear, so
//! for a word whose top bits are all zero or all one (small integers, negative ones, any
//! user-space pointer) `word ^ slot ^ KEY` has bit 62 or 63 set and lies far above every
//! span. Other words match with a probability of about `len / 2^62`. That is small but not
//! nothing over billions of frees, so a match is confirmed before it is reported, as glibc
//! confirms its key by walking the tcache bin:
//! - the span's owner walks every list of the span it can see (its bin, the span's local
//!   list, the span's remote list, which only the owner ever takes) and reports the block if
//!   it is on one (`Cache::confirm_double_free`); no match is a coincidence and the free goes
//!   on;
//! - any other thread cannot walk the owner's lists, so it pushes the block with the remote
//!   word's `SUSPECT` bit (`remote.rs`), and the owner, when it next takes that remote list
//!   or is about to count the span empty, checks the span's lists for a block that is on
//!   them twice with a bitmap of one bit per object (`check_duplicates`).
//!
//! Every access to a link word goes through `sanitizer::with_word`, so that memcheck and
//! ASan, which see a free block as inaccessible (`sanitizer/`), do not report the
//! allocator's own reads and writes; with neither tool built in it is the bare access.
//!
//! Without `hardened` the links are plain pointers and none of this runs (the constant
//! `HARDENED` folds every check away); `--cfg tessera_unhardened` does the same for a build
//! that cannot change features (the benchmarks' side-by-side measurement).

use core::sync::atomic::{AtomicU64, Ordering};

use tessera_span::Span;
use tessera_sys::{random, thread};

use crate::report::{self, Who};
use crate::sanitizer;
use crate::size_class::{CLASSES, NUM_CLASSES, divides};

/// Whether free lists are encoded and checked (the `hardened` feature).
pub(crate) const HARDENED: bool = cfg!(all(feature = "hardened", not(tessera_unhardened)));

/// The per-process key; 0 until the first cache is made (`init_key`).
static KEY: AtomicU64 = AtomicU64::new(0);

/// Bit 63 set and bit 62 clear: see the module comment, "Why the marker cannot fire".
const KEY_TOP_MASK: u64 = 0b11 << 62;
const _: () = assert!(KEY_TOP_MASK >> USER_BITS != 0);
const KEY_TOP: u64 = 0b10 << 62;

/// Sets the key if it is not set yet. Called when a cache is made: every link is written by
/// a cache's owner (or a thread freeing into someone's span, which that cache's creation
/// happened before), so no list exists under another key. Racing creators agree on the
/// first key stored (the CAS), and each then reads it back.
pub(crate) fn init_key() {
    if !HARDENED || KEY.load(Ordering::Relaxed) != 0 {
        return;
    }
    let key = (random::random_u64() & !KEY_TOP_MASK) | KEY_TOP;
    let _ = KEY.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed);
}

/// The key. A cache keeps a copy (`Cache::key`, set when it is made), so that the fast
/// paths read it at a fixed offset from the cache pointer they hold anyway instead of
/// through the GOT; the `*_with` functions below take that copy.
#[inline(always)]
pub(crate) fn key() -> usize {
    KEY.load(Ordering::Relaxed) as usize
}

/// [`key`] for the per-CPU fast paths, which have no cache to hold a copy: a rip-relative
/// load of the static, one instruction less than the GOT load and the load that a Rust
/// static of an rlib costs in `libtessera.so`.
#[inline(always)]
pub(crate) fn key_direct() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let key: usize;
        // SAFETY: an aligned 8-byte load of `KEY` (atomic on x86_64, as `key`'s relaxed
        // load); `sym` resolves to the static itself, which `libtessera.so` does not export.
        unsafe {
            core::arch::asm!(
                "mov {k}, qword ptr [rip + {key}]",
                k = out(reg) key,
                key = sym KEY,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        key
    }
    #[cfg(not(target_arch = "x86_64"))]
    key()
}

/// [`key_top`] of the key for the per-CPU free paths, loaded from the static's top two bytes
/// (rip-relative, as [`key_direct`]): one `movzx`, where `key_top(key_direct())` copied the
/// key they load anyway for the marker and shifted the copy (count.py on pair.c: the per-CPU
/// free 45 -> 44 instructions).
#[inline(always)]
pub(crate) fn key_top_direct() -> u16 {
    #[cfg(target_arch = "x86_64")]
    {
        let top: u32;
        // SAFETY: an aligned 2-byte load of the top two bytes of `KEY` (little-endian:
        // `TOP_BYTES`), which is set once, before any block is freed; as `key_direct`.
        unsafe {
            core::arch::asm!(
                "movzx {t:e}, word ptr [rip + {key} + {top}]",
                t = out(reg) top,
                key = sym KEY,
                top = const TOP_BYTES,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        top as u16
    }
    #[cfg(not(target_arch = "x86_64"))]
    key_top(key())
}

/// The word a free block at `slot` stores for a link to `next`, under `key`.
#[inline(always)]
pub(crate) fn encode_with(key: usize, slot: *mut u8, next: *mut u8) -> usize {
    if HARDENED {
        (next as usize) ^ (slot as usize ^ key)
    } else {
        next as usize
    }
}

/// The link a free block at `slot` stores as `stored`, under `key`.
#[inline(always)]
pub(crate) fn decode_with(key: usize, slot: *mut u8, stored: usize) -> *mut u8 {
    if HARDENED {
        (stored ^ (slot as usize ^ key)) as *mut u8
    } else {
        stored as *mut u8
    }
}

/// The decoded link in `block`'s first word (unchecked), under `key`.
///
/// # Safety
/// `block` must be an object of a small span (at least 8 bytes, 8-aligned): its first word
/// is then readable.
#[inline(always)]
pub(crate) unsafe fn read_link_with(key: usize, block: *mut u8) -> *mut u8 {
    // SAFETY: the caller's contract.
    let stored = sanitizer::with_word(block, || unsafe { block.cast::<usize>().read() });
    decode_with(key, block, stored)
}

/// `read_link_with` under the process's key.
///
/// # Safety
/// As `read_link_with`.
#[inline(always)]
pub(crate) unsafe fn read_link(block: *mut u8) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { read_link_with(key(), block) }
}

/// Stores the link to `next` in `block`'s first word, under `key`.
///
/// # Safety
/// `block` must be an object (at least 8 bytes, 8-aligned) that the calling thread holds
/// alone: one being freed, or one carved and not yet handed out.
#[inline(always)]
pub(crate) unsafe fn write_link_with(key: usize, block: *mut u8, next: *mut u8) {
    let stored = encode_with(key, block, next);
    // SAFETY: the caller's contract.
    sanitizer::with_word(block, || unsafe { block.cast::<usize>().write(stored) })
}

/// `write_link_with` under the process's key.
///
/// # Safety
/// As `write_link_with`.
#[inline(always)]
pub(crate) unsafe fn write_link(block: *mut u8, next: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe { write_link_with(key(), block, next) }
}

/// Clears the first word of a block being handed out, so that it carries no freed-block
/// marker (and no link leaks to the user).
///
/// # Safety
/// As `write_link`.
#[inline(always)]
pub(crate) unsafe fn clear_link(block: *mut u8) {
    if HARDENED {
        // SAFETY: the caller's contract.
        sanitizer::with_word(block, || unsafe { block.cast::<usize>().write(0) })
    }
}

/// Whether `next` may follow on a list of the span whose objects are the `len` bytes from
/// `start` with divisibility constant `div_test`: null, or the first byte of one of them.
#[inline(always)]
pub(crate) fn link_ok(next: *mut u8, start: usize, len: usize, div_test: u64) -> bool {
    let offset = (next as usize).wrapping_sub(start);
    next.is_null() || (offset < len && divides(offset, div_test))
}

/// The freed-block marker: whether `block`'s first word decodes (under `key`) to null or
/// into the `len` bytes of objects from `start` (its span's), as a free block's link always
/// does. `may_be_freed` goes first: the whole word is loaded only when its top bytes match,
/// so a remote free or a `realloc` does not stall on a narrow store the program just made
/// into the block's first word (see `may_be_freed`).
///
/// # Safety
/// As `read_link`.
#[inline(always)]
pub(crate) unsafe fn looks_freed_with(
    key: usize,
    block: *mut u8,
    start: usize,
    len: usize,
) -> bool {
    // SAFETY: forwarded contract.
    if !unsafe { may_be_freed(key, block) } {
        return false;
    }
    // SAFETY: forwarded contract.
    let next = unsafe { read_link_with(key, block) } as usize;
    next == 0 || next.wrapping_sub(start) < len
}

/// The fast paths' cheaper form of the marker: whether the top two bytes of `block`'s
/// first word equal the key's (`key >> 48`). A free block's word is `next ^ slot ^ KEY`
/// with `next` and `slot` user-space addresses (below 2^47), so its top 17 bits are the
/// key's; ordinary data matches about as rarely as the precise test (module comment: only
/// words whose 16 top bits equal the key's, never a small integer or a pointer), and a
/// match sends the free down its slow path, which tests `looks_freed_in` before it walks
/// anything.
///
/// Why two bytes and not the word: a program often writes a narrow field at the start of a
/// block just before freeing it (a byte, a 32-bit length). A load of the whole word would
/// overlap that store without being contained in it, which the store buffer cannot forward:
/// the load waits for the store to reach the cache, on every free of that shape. On the C
/// mode's fast-path loop, which writes each block's first byte, the hardened pair took 1.5x
/// the unhardened one's time with the word load and takes 1.07x with this one
/// (`benches/fastpath/pair.c`, which writes nothing, 1.2x either way). A two-byte load at
/// the word's top overlaps only stores that reach those bytes, and is contained in (so
/// forwarded from) any full-word store.
///
/// # Safety
/// As `read_link`.
#[inline(always)]
pub(crate) unsafe fn may_be_freed(key: usize, block: *mut u8) -> bool {
    // SAFETY: forwarded contract.
    unsafe { may_be_freed_top(key_top(key), block) }
}

/// `may_be_freed` with the key's top two bytes (`key_top`) given: a cache keeps them beside
/// its copy of the key, so its free compares them with a load instead of a copy and a shift.
///
/// # Safety
/// As `read_link`.
#[inline(always)]
pub(crate) unsafe fn may_be_freed_top(key_top: u16, block: *mut u8) -> bool {
    if !HARDENED {
        return false;
    }
    // SAFETY: `block` is an object of a small span (the contract), at least 8 bytes and
    // 8-aligned, so its first word's top two bytes are readable and 2-aligned.
    let top = sanitizer::with_word(block, || unsafe {
        block.add(TOP_BYTES).cast::<u16>().read()
    });
    top == key_top
}

/// The top two bytes of `key`: those of every free block's first word.
#[inline(always)]
pub(crate) fn key_top(key: usize) -> u16 {
    (key >> 48) as u16
}

/// Where the top two bytes of a block's first word are.
const TOP_BYTES: usize = if cfg!(target_endian = "little") { 6 } else { 0 };

/// Address bits of user space (x86_64 and aarch64 with 4-level page tables; `remote.rs`
/// relies on the same bound).
const USER_BITS: u32 = 47;

/// `looks_freed_with` under the process's key, for a block of the small span `s`.
///
/// # Safety
/// `block` must be an object of `s`.
#[inline(always)]
pub(crate) unsafe fn looks_freed_in(s: &Span, block: *mut u8) -> bool {
    // SAFETY: forwarded contract.
    unsafe { looks_freed_in_with(key(), s, block) }
}

/// `looks_freed_in` under `key`, a cache's copy (`Cache::key`): a load beside the cache's
/// other fields instead of the static's through the GOT, and one load for a whole batch
/// (`publish_batch_now`).
///
/// # Safety
/// As `looks_freed_in`; `key` must be the process's key.
#[inline(always)]
pub(crate) unsafe fn looks_freed_in_with(key: usize, s: &Span, block: *mut u8) -> bool {
    // SAFETY: forwarded contract (`block` is an object of `s`).
    unsafe {
        looks_freed_with(
            key,
            block,
            s.obj_base,
            s.obj_bytes.load(Ordering::Relaxed) as usize,
        )
    }
}

/// Walks the list from `head`, whose blocks must all be objects of `s`, calling `f` on
/// each; `f` returning true stops the walk. Every link is checked as a pop checks it, and a
/// list longer than the span has objects (a loop) is reported too.
///
/// # Safety
/// The list must be one the calling thread may read: its own bin or local list, or a
/// remote list of a span it owns (only the owner takes those, so the blocks below a head it
/// loaded stay put).
pub(crate) unsafe fn walk(s: &Span, head: *mut u8, mut f: impl FnMut(*mut u8) -> bool) {
    let mut at = head;
    let mut steps = 0u32;
    while !at.is_null() {
        if f(at) {
            return;
        }
        steps += 1;
        if steps > s.capacity {
            report::fatal_block(
                "corrupted free list: it loops (a block freed twice)",
                at as usize,
                s,
                Who::Nobody,
            );
        }
        // SAFETY: `at` passed the check below (or is the head the caller vouches for), so
        // it is an object of `s`.
        let next = unsafe { read_link(at) };
        if !link_ok(
            next,
            s.obj_base,
            s.obj_bytes.load(Ordering::Relaxed) as usize,
            s.div_test,
        ) {
            corrupt(s, at);
        }
        at = next;
    }
}

/// Reports a block whose stored link decodes outside its span or between two blocks, and
/// aborts.
#[cold]
#[inline(never)]
pub(crate) fn corrupt(s: &Span, block: *mut u8) -> ! {
    report::fatal_block(
        "corrupted free list: a free block's link does not point to a block of its span \
         (a write into freed memory: overflow or use after free)",
        block as usize,
        s,
        Who::Nobody,
    )
}

/// Reports a double free of `ptr`, a block of `s`, made by the calling thread.
#[cold]
#[inline(never)]
pub(crate) fn double_free(s: &Span, ptr: *mut u8, what: &str) -> ! {
    report::fatal_block(what, ptr as usize, s, Who::FreedBy(thread::gettid() as u32))
}

/// The most objects any span holds (the bitmap of `check_duplicates`).
const MAX_OBJECTS: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < NUM_CLASSES {
        if CLASSES[i].objects as usize > max {
            max = CLASSES[i].objects as usize;
        }
        i += 1;
    }
    max
};

/// Reports a block that is on the lists `heads` of `s` more than once: a double free that a
/// thread other than the owner made (the span's remote word carried `SUSPECT`). One bit
/// per object, on the stack (1 KiB); a link that does not decode into the span is reported
/// as a double free too, since a block freed twice and handed out once has its first word
/// cleared (or overwritten by its user) while still on the other list.
///
/// # Safety
/// As `walk`, for each list.
#[cold]
#[inline(never)]
pub(crate) unsafe fn check_duplicates(s: &Span, heads: &[*mut u8]) {
    let mut seen = [0u64; MAX_OBJECTS.div_ceil(64)];
    let (base, bytes, size) = (
        s.obj_base,
        s.obj_bytes.load(Ordering::Relaxed) as usize,
        s.obj_size as usize,
    );
    for &head in heads {
        let mut at = head;
        while !at.is_null() {
            let index = (at as usize - base) / size;
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if seen[word] & bit != 0 {
                report::fatal_block(
                    "double free: a block on its span's free lists twice",
                    at as usize,
                    s,
                    Who::RemoteFree,
                );
            }
            seen[word] |= bit;
            // SAFETY: `at` is the head the caller vouches for or passed the check below.
            let next = unsafe { read_link(at) };
            if !link_ok(next, base, bytes, s.div_test) {
                report::fatal_block(
                    "double free: a block freed by another thread was free already or \
                     handed out again (its link is gone)",
                    at as usize,
                    s,
                    Who::RemoteFree,
                );
            }
            at = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use core::ptr;

    use super::*;

    /// Eight words, 64-aligned, standing in for a span's objects (the marker tests read only
    /// the block and compare with the span's bounds).
    #[repr(C, align(64))]
    struct Objects([u64; 8]);

    /// A free block's word passes both marker tests, whatever its link; the words a program
    /// keeps in a live block's first word (small and negative integers, pointers) pass
    /// neither; and a word that has the key's top bytes but decodes outside the span passes
    /// only the fast test, which is why the slow path tests again before it walks a list.
    #[test]
    fn the_marker_tells_free_blocks_from_data() {
        if !HARDENED {
            return;
        }
        init_key();
        let key = key();
        let mut objects = Objects([0; 8]);
        let start = objects.0.as_mut_ptr().cast::<u8>();
        let len = size_of::<Objects>();
        let block = start;
        let freed = |word: u64| -> (bool, bool) {
            // SAFETY: `block` is the first of the eight words, ours alone.
            unsafe {
                block.cast::<u64>().write(word);
                (
                    may_be_freed(key, block),
                    looks_freed_with(key, block, start as usize, len),
                )
            }
        };
        for next in [
            ptr::null_mut(),
            start.wrapping_add(8),
            start.wrapping_add(56),
        ] {
            let word = encode_with(key, block, next) as u64;
            assert_eq!(
                freed(word),
                (true, true),
                "a free block linking to {next:?}"
            );
        }
        let data = [
            0,
            1,
            4096,
            u64::MAX,
            -1000i64 as u64,
            start as u64,
            0x7fff_ffff_f000,
            0xffff_8000_0000_0000,
        ];
        for word in data {
            assert_eq!(freed(word), (false, false), "data word {word:#x}");
        }
        let far = encode_with(key, block, start.wrapping_add(1 << 40)) as u64;
        assert_eq!(freed(far), (true, false), "a lookalike outside the span");
    }

    /// A live block whose first word looks like a free block's link to its fast test (the
    /// key's top bytes) is freed and handed out again without a report: the slow path's
    /// precise test, and the walk behind it, clear it.
    #[test]
    fn a_live_block_that_looks_freed_is_freed_quietly() {
        if !HARDENED {
            return;
        }
        let p = crate::alloc(48, 8);
        assert!(!p.is_null());
        init_key();
        let lookalike = encode_with(key(), p, p.wrapping_add(1 << 40));
        // SAFETY: `p` is a live 48-byte block of ours.
        unsafe {
            p.cast::<usize>().write(lookalike);
            assert!(may_be_freed(key(), p));
            crate::free(p);
        }
        let q = crate::alloc(48, 8);
        assert!(!q.is_null());
        // SAFETY: `q` is a live block of ours.
        unsafe { crate::free(q) };
    }
}
