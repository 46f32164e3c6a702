//! The thread-local words of the allocator (the current cache, the thread's own cache, and
//! the heap-profile countdown and span memo of a thread on the per-CPU caches, which has no
//! cache to keep them in), reached the cheapest way the platform allows.
//!
//! On x86_64 Linux the words are defined in assembly in `.tdata` and read with the
//! initial-exec TLS model: one `mov` of the word's offset from the GOT and one
//! `fs`-relative load. When the final link is an executable the linker relaxes that to a
//! constant offset (local-exec). Rust's `thread_local!` in an rlib uses the general-dynamic
//! model instead, which costs a call to `__tls_get_addr` per access in `libtessera.so`
//! and, without LTO, a call (and the register spills around it) in every executable. The
//! initial-exec model is what glibc's malloc, jemalloc and mimalloc use for the same
//! reason; a `dlopen`ed `libtessera.so` takes its 48 bytes from glibc's static TLS surplus (the
//! span memo itself is a block of its own, `percpu/memo.rs`: words here point to it and
//! count the frees it stays off for).
//!
//! The countdown starts at -1 and is set only for threads on the per-CPU caches
//! (`percpu::adopt`, the per-CPU slow path), so it is negative on every other thread: C's
//! `malloc`, on a thread without a current cache, takes the countdown's `sub`/`js` as the
//! per-CPU test too (`prof_take_at`), instead of comparing `OWN` first.
//!
//! The `asm!` blocks are not `pure`: a coroutine that yields may resume on another thread,
//! so the compiler must never reuse a value read before a call (ARCHITECTURE.md#migration).
//! Other platforms fall back to `thread_local!`.

use crate::cache::Cache;
use crate::percpu::Memo;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::{Cache, Memo};
    use core::arch::{asm, global_asm};

    // In `.tdata`, in this order, one after the other: the countdown starts at -1 (see
    // `prof_take_at`), and `current_at`'s callers reach it and `OWN` at fixed distances from
    // `CURRENT`.
    global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".globl tessera_tls_current",
        ".hidden tessera_tls_current",
        ".type tessera_tls_current, @tls_object",
        ".size tessera_tls_current, 8",
        "tessera_tls_current:",
        ".zero 8",
        ".globl tessera_tls_own",
        ".hidden tessera_tls_own",
        ".type tessera_tls_own, @tls_object",
        ".size tessera_tls_own, 8",
        "tessera_tls_own:",
        ".zero 8",
        ".globl tessera_tls_prof",
        ".hidden tessera_tls_prof",
        ".type tessera_tls_prof, @tls_object",
        ".size tessera_tls_prof, 8",
        "tessera_tls_prof:",
        ".quad -1",
        ".globl tessera_tls_memo",
        ".hidden tessera_tls_memo",
        ".type tessera_tls_memo, @tls_object",
        ".size tessera_tls_memo, 8",
        "tessera_tls_memo:",
        ".zero 8",
        ".globl tessera_tls_memo_left",
        ".hidden tessera_tls_memo_left",
        ".type tessera_tls_memo_left, @tls_object",
        ".size tessera_tls_memo_left, 8",
        "tessera_tls_memo_left:",
        ".zero 8",
        ".globl tessera_tls_memo_saved",
        ".hidden tessera_tls_memo_saved",
        ".type tessera_tls_memo_saved, @tls_object",
        ".size tessera_tls_memo_saved, 8",
        "tessera_tls_memo_saved:",
        ".zero 8",
        ".popsection",
    );

    /// `PROF`'s distance from `CURRENT` (the layout above).
    const PROF_FROM_CURRENT: usize = 16;

    /// `current()`, and the offset from the thread pointer it was read at, for
    /// [`prof_take_at`]: one GOT load for both words.
    #[inline(always)]
    pub(crate) fn current_at() -> (*mut Cache, usize) {
        let value: *mut Cache;
        let at: usize;
        // SAFETY: as `current` (the `word!` below).
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + tessera_tls_current@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{t}]",
                t = out(reg) at,
                v = out(reg) value,
                options(nostack, readonly, preserves_flags),
            );
        }
        (value, at)
    }

    /// [`prof_take`], with `at` from [`current_at`] on this thread: the countdown's word is
    /// found from it without a GOT load.
    #[inline(always)]
    pub(crate) fn prof_take_at(at: usize, size: usize) -> bool {
        // SAFETY: `at + PROF_FROM_CURRENT` is this thread's own `PROF` slot (the layout
        // above; `at` is `CURRENT`'s offset, the same on every thread); as `prof_sub`.
        unsafe {
            asm!(
                "sub qword ptr fs:[{t} + {d}], {s}",
                "js {out}",
                t = in(reg) at,
                d = const PROF_FROM_CURRENT,
                s = in(reg) size,
                out = label { return false; },
                options(nostack),
            );
        }
        true
    }

    /// Subtracts `size` from this thread's heap-profile countdown and returns what is left.
    #[inline(always)]
    pub(crate) fn prof_sub(size: isize) -> isize {
        let left: isize;
        // SAFETY: reads and writes this thread's own 8-byte slot (see `word!`); nothing
        // else aliases it.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + tessera_tls_prof@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{t}]",
                "sub {v}, {s}",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = out(reg) left,
                s = in(reg) size,
                options(nostack),
            );
        }
        left
    }

    /// `OWN`'s distance from `CURRENT` (the layout above).
    const OWN_FROM_CURRENT: usize = 8;

    /// `MEMO`'s distance from `CURRENT` (the layout above).
    const MEMO_FROM_CURRENT: usize = 24;

    /// This thread's span memo (`percpu/memo.rs`; null on a thread without one), with `at`
    /// from [`current_at`] on this thread: found without a GOT load (the free path's).
    #[inline(always)]
    pub(crate) fn memo_at(at: usize) -> *mut Memo {
        let value: *mut Memo;
        // SAFETY: `at + MEMO_FROM_CURRENT` is this thread's own `MEMO` slot (the layout
        // above; `at` is `CURRENT`'s offset, the same on every thread).
        unsafe {
            asm!(
                "mov {v}, qword ptr fs:[{t} + {d}]",
                t = in(reg) at,
                d = const MEMO_FROM_CURRENT,
                v = out(reg) value,
                options(nostack, readonly, preserves_flags),
            );
        }
        value
    }

    /// `MEMO_LEFT`'s and `MEMO_SAVED`'s distances from `CURRENT` (the layout above).
    const MEMO_LEFT_FROM_CURRENT: usize = 32;
    const MEMO_SAVED_FROM_CURRENT: usize = 40;

    /// Counts one free made while this thread's memo is off (`MEMO_LEFT`, with `at` from
    /// [`current_at`]): true when that was the last of the frees it stays off for. On a
    /// thread whose memo never went off the word just goes on down from 0, never reaching
    /// 0 again (in 2^64 frees).
    #[inline(always)]
    pub(crate) fn memo_off_tick_at(at: usize) -> bool {
        // SAFETY: `at + MEMO_LEFT_FROM_CURRENT` is this thread's own `MEMO_LEFT` slot (the
        // layout above); nothing else aliases it.
        unsafe {
            asm!(
                "sub qword ptr fs:[{t} + {d}], 1",
                "jz {zero}",
                t = in(reg) at,
                d = const MEMO_LEFT_FROM_CURRENT,
                zero = label { return true; },
                options(nostack),
            );
        }
        false
    }

    /// Takes this thread's memo out of use for `frees` frees: `MEMO` null, the memo kept in
    /// `MEMO_SAVED` (see [`memo_off_tick_at`]).
    ///
    /// # Safety
    /// `MEMO` holds this thread's memo (not null).
    #[inline]
    pub(crate) unsafe fn memo_off(frees: u64) {
        let at = current_at().1;
        // SAFETY: this thread's own slots (the layout above).
        unsafe {
            asm!(
                "mov {m}, qword ptr fs:[{t} + {d}]",
                "mov qword ptr fs:[{t} + {s}], {m}",
                "mov qword ptr fs:[{t} + {d}], 0",
                "mov qword ptr fs:[{t} + {l}], {n}",
                t = in(reg) at,
                m = out(reg) _,
                n = in(reg) frees,
                d = const MEMO_FROM_CURRENT,
                s = const MEMO_SAVED_FROM_CURRENT,
                l = const MEMO_LEFT_FROM_CURRENT,
                options(nostack, preserves_flags),
            );
        }
    }

    /// The memo [`memo_off`] kept aside (null if none).
    #[inline]
    pub(crate) fn memo_saved() -> *mut Memo {
        read_word(MEMO_SAVED_FROM_CURRENT) as *mut Memo
    }

    /// Clears `MEMO_SAVED`.
    #[inline]
    pub(crate) fn clear_memo_saved() {
        write_word(MEMO_SAVED_FROM_CURRENT, 0);
    }

    /// The word `offset` bytes past `CURRENT` in this thread's block (the layout above), for
    /// the words off the fast paths (those compute the address with a displacement of their
    /// own, sparing the add).
    #[inline]
    fn read_word(offset: usize) -> usize {
        let value: usize;
        // SAFETY: callers pass the distance of one of the words laid out above, so the
        // address is this thread's own slot.
        unsafe {
            asm!(
                "mov {v}, qword ptr fs:[{t}]",
                t = in(reg) current_at().1 + offset,
                v = lateout(reg) value,
                options(nostack, readonly, preserves_flags),
            );
        }
        value
    }

    /// Writes the word `offset` bytes past `CURRENT` (see [`read_word`]).
    #[inline]
    fn write_word(offset: usize, value: usize) {
        // SAFETY: as `read_word`: this thread's own slot, which nothing else aliases.
        unsafe {
            asm!(
                "mov qword ptr fs:[{t}], {v}",
                t = in(reg) current_at().1 + offset,
                v = in(reg) value,
                options(nostack, preserves_flags),
            );
        }
    }

    /// This thread's span memo.
    #[inline]
    pub(crate) fn memo() -> *mut Memo {
        memo_at(current_at().1)
    }

    /// Sets this thread's span memo.
    ///
    /// # Safety
    /// `value` must be null or a memo (`percpu::memo`) that no other thread uses: the free
    /// path dereferences it unchecked.
    #[inline]
    pub(crate) unsafe fn set_memo(value: *mut Memo) {
        // The slot `memo_at` reads; the caller's contract covers what goes in it.
        write_word(MEMO_FROM_CURRENT, value as usize);
    }

    /// [`own_is_percpu`], with `at` from [`current_at`] on this thread: `OWN` is found from
    /// it without a GOT load (the free path's per-CPU test).
    #[inline(always)]
    pub(crate) fn own_is_percpu_at(at: usize) -> bool {
        // SAFETY: `at + OWN_FROM_CURRENT` is this thread's own `OWN` slot (the layout above;
        // `at` is `CURRENT`'s offset, the same on every thread); as `own_is_percpu`.
        unsafe {
            asm!(
                "cmp qword ptr fs:[{t} + {d}], {m}",
                "jne {no}",
                t = in(reg) at,
                d = const OWN_FROM_CURRENT,
                m = const super::PERCPU_MARK,
                no = label { return false; },
                options(nostack, readonly),
            );
        }
        true
    }

    /// Whether this thread's `OWN` word is [`super::PERCPU_MARK`] (`thread::uses_percpu`): a
    /// compare with memory and a jump (asm goto), one instruction less than a load and a
    /// compare.
    #[inline(always)]
    pub(crate) fn own_is_percpu() -> bool {
        // SAFETY: reads this thread's own slot, as `own`.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + tessera_tls_own@GOTTPOFF]",
                "cmp qword ptr fs:[{t}], {m}",
                "jne {no}",
                t = out(reg) _,
                m = const super::PERCPU_MARK,
                no = label { return false; },
                options(nostack, readonly),
            );
        }
        true
    }

    /// Subtracts `size` from this thread's heap-profile countdown; false when it went below
    /// zero. `prof_sub(size) >= 0` in three instructions (asm goto on the sign flag).
    #[inline(always)]
    pub(crate) fn prof_take(size: usize) -> bool {
        // SAFETY: as `prof_sub`.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + tessera_tls_prof@GOTTPOFF]",
                "sub qword ptr fs:[{t}], {s}",
                "js {out}",
                t = out(reg) _,
                s = in(reg) size,
                out = label { return false; },
                options(nostack),
            );
        }
        true
    }

    /// Sets this thread's heap-profile countdown.
    #[inline]
    pub(crate) fn set_prof(left: isize) {
        // SAFETY: as `prof_sub`.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + tessera_tls_prof@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) left,
                options(nostack, preserves_flags),
            );
        }
    }

    macro_rules! word {
        ($get:ident, $set:ident, $sym:literal, $safety:literal) => {
            #[inline(always)]
            pub(crate) fn $get() -> *mut Cache {
                let value: *mut Cache;
                // SAFETY: reads this thread's 8-byte slot: the GOT entry holds the slot's offset
                // from the thread pointer (`fs`), which the dynamic linker fixed at load time.
                unsafe {
                    asm!(
                        concat!("mov {v}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov {v}, qword ptr fs:[{v}]",
                        v = out(reg) value,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                value
            }

            /// Sets this thread's word.
            ///
            /// # Safety
            #[doc = $safety]
            #[inline(always)]
            pub(crate) unsafe fn $set(value: *mut Cache) {
                // SAFETY: writes this thread's own slot, as above; nothing else aliases it.
                unsafe {
                    asm!(
                        concat!("mov {t}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov qword ptr fs:[{t}], {v}",
                        t = out(reg) _,
                        v = in(reg) value,
                        options(nostack, preserves_flags),
                    );
                }
            }
        };
    }

    word!(
        current,
        set_current,
        "tessera_tls_current",
        "`value` must be null or a valid cache that no other thread uses while it is current on this one: the allocation and free fast paths dereference it unchecked."
    );
    word!(
        own,
        set_own,
        "tessera_tls_own",
        "`value` must be null, `thread::EXITED`, `thread::PERCPU`, or a valid cache this thread made for itself and no other thread uses: `thread::flush_own` flushes it."
    );
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::{Cache, Memo};
    use core::cell::Cell;
    use core::ptr;

    thread_local! {
        static CURRENT: Cell<*mut Cache> = const { Cell::new(ptr::null_mut()) };
        static OWN: Cell<*mut Cache> = const { Cell::new(ptr::null_mut()) };
        static PROF: Cell<isize> = const { Cell::new(-1) };
        static MEMO: Cell<*mut Memo> = const { Cell::new(ptr::null_mut()) };
        static MEMO_LEFT: Cell<u64> = const { Cell::new(0) };
        static MEMO_SAVED: Cell<*mut Memo> = const { Cell::new(ptr::null_mut()) };
    }

    #[inline(always)]
    pub(crate) fn memo_at(_at: usize) -> *mut Memo {
        memo()
    }
    #[inline(always)]
    pub(crate) fn memo_off_tick_at(_at: usize) -> bool {
        MEMO_LEFT.with(|c| {
            let left = c.get().wrapping_sub(1);
            c.set(left);
            left == 0
        })
    }
    /// # Safety
    /// `MEMO` holds this thread's memo (not null).
    #[inline]
    pub(crate) unsafe fn memo_off(frees: u64) {
        MEMO_SAVED.with(|c| c.set(memo()));
        MEMO.with(|c| c.set(ptr::null_mut()));
        MEMO_LEFT.with(|c| c.set(frees));
    }
    #[inline]
    pub(crate) fn memo_saved() -> *mut Memo {
        MEMO_SAVED.with(Cell::get)
    }
    #[inline]
    pub(crate) fn clear_memo_saved() {
        MEMO_SAVED.with(|c| c.set(ptr::null_mut()))
    }
    #[inline(always)]
    pub(crate) fn memo() -> *mut Memo {
        MEMO.with(Cell::get)
    }
    /// # Safety
    /// `value` must be null or a memo (`percpu::memo`) that no other thread uses.
    #[inline(always)]
    pub(crate) unsafe fn set_memo(value: *mut Memo) {
        MEMO.with(|c| c.set(value))
    }

    #[inline(always)]
    pub(crate) fn current_at() -> (*mut Cache, usize) {
        (current(), 0)
    }
    #[inline(always)]
    pub(crate) fn prof_take_at(_at: usize, size: usize) -> bool {
        prof_take(size)
    }

    #[inline(always)]
    pub(crate) fn prof_sub(size: isize) -> isize {
        PROF.with(|p| {
            let left = p.get().wrapping_sub(size);
            p.set(left);
            left
        })
    }
    #[inline(always)]
    pub(crate) fn prof_take(size: usize) -> bool {
        prof_sub(size as isize) >= 0
    }
    #[inline(always)]
    pub(crate) fn own_is_percpu() -> bool {
        own().addr() == super::PERCPU_MARK
    }
    #[inline(always)]
    pub(crate) fn own_is_percpu_at(_at: usize) -> bool {
        own_is_percpu()
    }
    #[inline]
    pub(crate) fn set_prof(left: isize) {
        PROF.with(|p| p.set(left))
    }

    #[inline(always)]
    pub(crate) fn current() -> *mut Cache {
        CURRENT.with(Cell::get)
    }
    /// # Safety
    /// `value` must be null or a valid cache that no other thread uses while it is current
    /// on this one: the allocation and free fast paths dereference it unchecked.
    #[inline(always)]
    pub(crate) unsafe fn set_current(value: *mut Cache) {
        CURRENT.with(|c| c.set(value))
    }
    #[inline(always)]
    pub(crate) fn own() -> *mut Cache {
        OWN.with(Cell::get)
    }
    /// # Safety
    /// `value` must be null, `thread::EXITED`, `thread::PERCPU`, or a valid cache this thread made for itself
    /// and no other thread uses: `thread::flush_own` flushes it.
    #[inline(always)]
    pub(crate) unsafe fn set_own(value: *mut Cache) {
        OWN.with(|c| c.set(value))
    }
}

pub(crate) use imp::{
    clear_memo_saved, current, current_at, memo, memo_at, memo_off, memo_off_tick_at, memo_saved,
    own, own_is_percpu, own_is_percpu_at, prof_sub, prof_take, prof_take_at, set_current, set_memo,
    set_own, set_prof,
};

/// The `OWN` word of a thread on the per-CPU caches (`thread::PERCPU`).
pub(crate) const PERCPU_MARK: usize = 2;

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    #[test]
    fn words_are_per_thread() {
        let mine = 0x1000 as *mut Cache;
        let before = (current(), own());
        // SAFETY: fake values, never dereferenced: this unit-test binary runs on the system
        // allocator, and nothing in this test calls into Tessera before they are restored.
        unsafe {
            set_current(mine);
            set_own(mine.wrapping_add(1));
        }
        std::thread::spawn(|| {
            // A fresh thread has its own zeroed words (its allocations may have set them to a
            // real cache, but never to ours).
            assert_ne!(current(), 0x1000 as *mut Cache);
            // SAFETY: as above, on this thread.
            unsafe { set_current(0x2000 as *mut Cache) };
            assert_eq!(current(), 0x2000 as *mut Cache);
            // SAFETY: null is always allowed.
            unsafe { set_current(core::ptr::null_mut()) };
        })
        .join()
        .unwrap();
        assert_eq!(current(), mine);
        assert_eq!(own(), mine.wrapping_add(1));
        // SAFETY: the values this thread's words held before the test.
        unsafe {
            set_current(before.0);
            set_own(before.1);
        }
    }
}
