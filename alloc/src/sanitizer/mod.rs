//! Sanitizer and valgrind awareness (issue #15, item 4): telling memcheck and
//! AddressSanitizer which bytes of tessera's memory a program may touch.
//!
//! Both tools know the blocks of the allocator they replace (glibc's `malloc`) and nothing
//! of ours: to them a tessera span is one mapped region, so a read of a freed block looks
//! fine. The entry points in `lib.rs` therefore say what happens to a block as it crosses
//! the line between allocator and program:
//! - `handed_out`: the block is the program's now (memcheck's `MALLOCLIKE_BLOCK`: addressable,
//!   undefined, or defined if zeroed; ASan: unpoisoned);
//! - `taking_back`: the program gave it up, before tessera touches it (`FREELIKE_BLOCK`: no
//!   access; ASan: the shadow of a freed heap block, so the report says
//!   `heap-use-after-free`). Before, not after: once the block is on a list another thread
//!   may hand it out again, and a late mark would poison a live block;
//! - `with_word`: tessera itself reads or writes the link word of a free block
//!   (`freelist.rs`); the word is opened for that access and given back the state it had,
//!   so the allocator's own accesses are not reported and a live block's first word (read
//!   by the freed-block marker test) keeps its state;
//! - `open_block`: tessera writes a block it is about to hand out (zeroing), which may
//!   still be marked free from an earlier life.
//!
//! With the `valgrind` feature, the requests are memcheck's client requests
//! (`valgrind.rs`: the magic instruction sequence, a few instructions when not under
//! valgrind). Under AddressSanitizer (`-Zsanitizer=address`, which `build.rs` turns into
//! `cfg(tessera_asan)` because `cfg(sanitize)` is unstable), they write ASan's shadow
//! (`asan.rs`). With neither, every function here is empty and `#[inline(always)]`: the
//! fast paths compile to the same code as without this module.
//!
//! A `realloc` under valgrind always moves (a new block, a copy, a free), as memcheck's own
//! `realloc` does: memcheck then checks the old block's accesses exactly, and no in-place
//! case needs `RESIZEINPLACE_BLOCK`'s old size (which C's `realloc` does not know; it passes
//! the usable size, and memcheck ignores a resize whose old size is not the one it recorded).

#[cfg(tessera_asan)]
mod asan;
#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
mod valgrind;

/// Whether `realloc` must move every block (see the module comment).
pub(crate) const REALLOC_MOVES: bool = cfg!(feature = "valgrind");

/// `block` (null ignored) is handed to the program with `size` bytes usable, zeroed or not.
#[inline(always)]
pub(crate) fn handed_out(block: *mut u8, size: usize, zeroed: bool) {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::malloclike(block, size, zeroed);
    #[cfg(tessera_asan)]
    asan::unpoison(block, size);
    let _ = (block, size, zeroed);
}

/// The program gives `block` back (before tessera looks at it). `size` is what the caller
/// knows of its size (a sized free), else `None`.
#[inline(always)]
pub(crate) fn taking_back(block: *mut u8, size: Option<usize>) {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::freelike(block);
    #[cfg(tessera_asan)]
    asan::poison_freed(block, size);
    let _ = (block, size);
}

/// A `realloc` kept `block` where it is, now `new_size` bytes (never under valgrind: see
/// `REALLOC_MOVES`).
#[inline(always)]
pub(crate) fn resized_in_place(block: *mut u8, new_size: usize) {
    #[cfg(tessera_asan)]
    asan::unpoison(block, new_size);
    let _ = (block, new_size);
}

/// Tessera is about to write the `size` bytes of `block` before handing it out.
#[inline(always)]
pub(crate) fn open_block(block: *mut u8, size: usize) {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::make_undefined(block, size);
    #[cfg(tessera_asan)]
    asan::unpoison(block, size);
    let _ = (block, size);
}

/// Runs `copy`, a moving `realloc`'s read of the `size` bytes of the old block `block`.
/// C's `realloc` knows only the usable size, which may reach past what the program asked
/// for (unaddressable to the tools): memcheck is told not to report addresses in the
/// block while it copies, and ASan finds it unpoisoned (it is freed right after).
#[inline(always)]
pub(crate) fn moving<R>(block: *mut u8, size: usize, copy: impl FnOnce() -> R) -> R {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::report_addresses(block, size, false);
    #[cfg(tessera_asan)]
    asan::unpoison(block, size);
    let result = copy();
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::report_addresses(block, size, true);
    let _ = (block, size);
    result
}

/// Runs `access`, tessera's own read or write of the first word of `block` (8-aligned),
/// with that word open to it, then gives the word back its state.
#[inline(always)]
pub(crate) fn with_word<R>(block: *mut u8, access: impl FnOnce() -> R) -> R {
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    let saved = valgrind::open_word(block);
    #[cfg(tessera_asan)]
    let shadow = asan::open_word(block);
    let result = access();
    #[cfg(tessera_asan)]
    asan::close_word(block, shadow);
    #[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
    valgrind::close_word(block, saved);
    let _ = block;
    result
}
