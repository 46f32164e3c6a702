//! Fuzz target: the C entry points of `libtessera.so` with odd arguments. The preload
//! crate is a `cdylib` only, so its sources are compiled into this binary (`#[path]`
//! modules): the functions called here are the exported `malloc`, `realloc`, `calloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size`, `free`, `cfree` and C++ `new`/`delete` (nothrow, aligned, sized)
//! themselves, and, as under `LD_PRELOAD`, the whole fuzzing process (libFuzzer included)
//! allocates through them.
//!
//! Each result is checked against what the C library promises (`c_api.rs`'s header):
//! null with `ENOMEM` above `isize::MAX` or on an overflowing product, `EINVAL` for a bad
//! alignment (`*memptr` untouched), `realloc(p, 0)` frees, a failed `realloc` keeps the old
//! block; otherwise alignment (16 above 8 bytes), `malloc_usable_size` at least the request,
//! zeroed `calloc` memory, contents kept by `realloc`, and no overlap with any live block.
#![no_main]
#![allow(dead_code, unreachable_pub)]

#[path = "../../alloc/preload/src/c_api.rs"]
mod c_api;
#[path = "../../alloc/preload/src/cxx.rs"]
mod cxx;
#[path = "../../alloc/preload/src/rules.rs"]
mod rules;
#[path = "../../alloc/preload/src/stats.rs"]
mod stats;
#[path = "../../alloc/preload/src/text.rs"]
mod text;

#[path = "../ops.rs"]
mod ops;

use core::ffi::c_void;
use core::ptr::null_mut;

use ops::{Bytes, holds, zeroed};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const MAX: usize = isize::MAX as usize;
const PAGE: usize = 4096;

/// How a block must be given back.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Malloc,
    /// `new (nothrow)` of `size` bytes: sized `delete`.
    New,
    /// Aligned `new (nothrow)`: sized aligned `delete` with this alignment.
    NewAligned(usize),
}

struct Block {
    addr: usize,
    size: usize,
    tag: u8,
    kind: Kind,
}

fn errno() -> i32 {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(v: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = v };
}

/// A size with the odd values the C interface must handle, else an ordinary one.
fn odd_size(bytes: &mut Bytes<'_>) -> Option<usize> {
    let pick = bytes.byte()?;
    Some(match pick {
        0 => 0,
        1 => MAX,
        2 => MAX + 1,
        3 => usize::MAX,
        4 => usize::MAX - PAGE + 2,
        5 => usize::MAX / 2 + 1,
        6..=15 => pick as usize + 2,
        _ => bytes.size()?,
    })
}

/// An alignment: mostly powers of two up to 2 MiB, sometimes one of C's odd values.
fn odd_align(b: u8) -> usize {
    match b {
        0..=21 => 1 << b,
        22 => 0,
        23 => 3,
        24 => 12,
        25 => 24,
        26 => 48,
        27 => 100,
        28 => 5000,
        29 => 1 << 63,
        30 => usize::MAX,
        31 => (1 << 63) + 1,
        _ => 1 << (b % 13),
    }
}

struct State {
    live: Vec<Block>,
    tag: u8,
}

impl State {
    /// Checks and records a block the C interface returned for `size` bytes at `align`.
    fn admit(&mut self, p: *mut c_void, size: usize, align: usize, kind: Kind) {
        let addr = p as usize;
        let min_align = if size <= 8 { 8 } else { 16 };
        assert_eq!(
            addr % min_align.max(align),
            0,
            "{addr:#x} for {size} at {align}"
        );
        // SAFETY: a live block of ours.
        let usable = unsafe { c_api::malloc_usable_size(p) };
        assert!(usable >= size, "usable size {usable} < {size}");
        for b in &self.live {
            let apart = addr + size.max(1) <= b.addr || b.addr + b.size.max(1) <= addr;
            assert!(apart, "{addr:#x}+{size} overlaps {:#x}+{}", b.addr, b.size);
        }
        self.tag = self.tag.wrapping_add(1);
        let b = ops::Block {
            addr,
            size,
            align: 1,
            tag: self.tag,
        };
        ops::fill(&b);
        self.live.push(Block {
            addr,
            size,
            tag: self.tag,
            kind,
        });
    }

    fn take(&mut self, pick: u8) -> Option<Block> {
        if self.live.is_empty() {
            return None;
        }
        let b = self.live.swap_remove(pick as usize % self.live.len());
        assert!(holds(b.addr, b.size, b.tag, b.size), "contents changed");
        Some(b)
    }

    /// Gives `b` back the way its kind allows, picked by `how`.
    fn release(b: Block, how: u8) {
        let p = b.addr as *mut c_void;
        // SAFETY: a live block of this kind, given up here.
        unsafe {
            match (b.kind, how % 3) {
                (Kind::Malloc, 0) => c_api::free(p),
                (Kind::Malloc, 1) => c_api::cfree(p),
                (Kind::Malloc, _) => assert!(c_api::realloc(p, 0).is_null()),
                (Kind::New, 0) => cxx::_ZdlPv(p),
                (Kind::New, _) => cxx::_ZdlPvm(p, b.size),
                (Kind::NewAligned(a), 0) => cxx::_ZdlPvSt11align_val_t(p, a),
                (Kind::NewAligned(a), _) => cxx::_ZdlPvmSt11align_val_t(p, b.size, a),
            }
        }
    }
}

/// Whether an allocation of `size` must fail (above `isize::MAX`).
fn too_big(size: usize) -> bool {
    size > MAX
}

/// Sizes that no machine here can back, though they are below `isize::MAX`: the result
/// may be either, so such requests are skipped rather than tried.
fn unbackable(size: usize) -> bool {
    size > (1 << 30) && size <= MAX
}

fn step(s: &mut State, op: u8, bytes: &mut Bytes<'_>) -> Option<()> {
    match op % 12 {
        0 => {
            let size = odd_size(bytes)?;
            if unbackable(size) {
                return Some(());
            }
            set_errno(0);
            // SAFETY: plain allocation.
            let p = unsafe { c_api::malloc(size) };
            if too_big(size) {
                assert!(p.is_null() && errno() == libc::ENOMEM, "malloc({size})");
            } else {
                assert!(!p.is_null(), "malloc({size}) failed");
                s.admit(p, size, 1, Kind::Malloc);
            }
        }
        1 => {
            let (n, m) = (odd_size(bytes)?, odd_size(bytes)?);
            let product = n.checked_mul(m);
            if product.is_some_and(unbackable) {
                return Some(());
            }
            set_errno(0);
            // SAFETY: plain allocation.
            let p = unsafe { c_api::calloc(n, m) };
            match product.filter(|&b| !too_big(b)) {
                None => assert!(p.is_null() && errno() == libc::ENOMEM, "calloc({n}, {m})"),
                Some(bytes) => {
                    assert!(!p.is_null(), "calloc({n}, {m}) failed");
                    assert!(zeroed(p as usize, bytes), "calloc not zeroed");
                    s.admit(p, bytes, 1, Kind::Malloc);
                }
            }
        }
        2 | 3 => {
            let pick = bytes.byte()?;
            let (size, arr) = if op % 12 == 2 {
                (odd_size(bytes)?, None)
            } else {
                let (n, m) = (odd_size(bytes)?, odd_size(bytes)?);
                (n.checked_mul(m).unwrap_or(usize::MAX), Some((n, m)))
            };
            if unbackable(size) {
                return Some(());
            }
            let mut old = if pick & 1 == 0 {
                s.take(pick >> 1)
            } else {
                None
            };
            // Only a malloc-family block may be resized; a `new` one goes back.
            if let Some(b) = old.take_if(|b| !matches!(b.kind, Kind::Malloc)) {
                s.live.push(b);
            }
            let ptr = old.as_ref().map_or(null_mut(), |b| b.addr as *mut c_void);
            set_errno(0);
            // SAFETY: `ptr` is null or a live malloc block, given up on success.
            let p = unsafe {
                match arr {
                    None => c_api::realloc(ptr, size),
                    Some((n, m)) => c_api::reallocarray(ptr, n, m),
                }
            };
            let overflow = arr.is_some_and(|(n, m)| n.checked_mul(m).is_none());
            if overflow || too_big(size) {
                assert!(p.is_null() && errno() == libc::ENOMEM, "realloc to {size}");
                if let Some(b) = old {
                    assert!(
                        holds(b.addr, b.size, b.tag, b.size),
                        "failed realloc lost data"
                    );
                    s.live.push(b);
                }
            } else if size == 0 && old.is_some() {
                assert!(p.is_null(), "realloc(p, 0) must free and return null");
            } else {
                assert!(!p.is_null(), "realloc to {size} failed");
                if let Some(b) = &old {
                    assert!(holds(p as usize, size, b.tag, b.size), "realloc lost data");
                }
                s.admit(p, size, 1, Kind::Malloc);
            }
        }
        4 => {
            let (align, size) = (odd_align(bytes.byte()?), odd_size(bytes)?);
            if unbackable(size) {
                return Some(());
            }
            let mut out = 0xdead_usize as *mut c_void;
            set_errno(0);
            // SAFETY: `out` is writable.
            let rc = unsafe { c_api::posix_memalign(&mut out, align, size) };
            let ok_align = align.is_power_of_two() && align % 8 == 0;
            if !ok_align || too_big(size) || align > (1 << 40) {
                let want = if ok_align { libc::ENOMEM } else { libc::EINVAL };
                if !ok_align || too_big(size) {
                    assert_eq!(rc, want, "posix_memalign({align}, {size})");
                }
                if rc != 0 {
                    assert_eq!(out as usize, 0xdead, "*memptr written on failure");
                    // c_api.rs promises errno untouched on failure too, but an
                    // impossible alignment (`1 << 63`) comes back with errno = ENOMEM set
                    // inside `tessera::alloc`, as glibc 2.36's does; only EINVAL, which
                    // returns before allocating, is held to the promise here.
                    if !ok_align {
                        assert_eq!(errno(), 0, "posix_memalign set errno");
                    }
                } else {
                    s.admit(out, size, align, Kind::Malloc);
                }
            } else {
                assert_eq!(rc, 0, "posix_memalign({align}, {size})");
                s.admit(out, size, align, Kind::Malloc);
            }
        }
        5..=8 => {
            let (a, size) = (bytes.byte()?, odd_size(bytes)?);
            let which = op % 12;
            let orig = size;
            // The alignment each function asks for, or None when it must fail EINVAL.
            let (align, size) = match which {
                5 => {
                    let align = odd_align(a);
                    (align.is_power_of_two().then_some(align), size)
                }
                6 => {
                    let align = odd_align(a);
                    let eff = if align <= 16 {
                        Some(16)
                    } else {
                        align.checked_next_power_of_two()
                    };
                    (eff, size)
                }
                7 => (Some(PAGE), size),
                _ => {
                    let rounded = if size == 0 {
                        Some(PAGE)
                    } else {
                        size.checked_add(PAGE - 1).map(|s| s & !(PAGE - 1))
                    };
                    (Some(PAGE), rounded.unwrap_or(usize::MAX))
                }
            };
            if unbackable(size) || align.is_some_and(|a| a > (1 << 40)) {
                return Some(());
            }
            set_errno(0);
            // SAFETY: plain allocations.
            let r = unsafe {
                match which {
                    5 => c_api::aligned_alloc(odd_align(a), size),
                    6 => c_api::memalign(odd_align(a), size),
                    7 => c_api::valloc(size),
                    _ => c_api::pvalloc(orig),
                }
            };
            match align {
                None => assert!(r.is_null() && errno() == libc::EINVAL, "op {which}"),
                Some(_) if too_big(size) => {
                    assert!(r.is_null() && errno() == libc::ENOMEM, "op {which} {size}")
                }
                Some(align) => {
                    assert!(!r.is_null(), "op {which} ({align}, {size}) failed");
                    s.admit(r, size, align, Kind::Malloc);
                }
            }
        }
        9 => {
            let pick = bytes.byte()?;
            // SAFETY: null is allowed.
            assert_eq!(unsafe { c_api::malloc_usable_size(null_mut()) }, 0);
            if let Some(b) = s.live.get(pick as usize % s.live.len().max(1)) {
                // SAFETY: a live block.
                let n = unsafe { c_api::malloc_usable_size(b.addr as *mut c_void) };
                assert!(n >= b.size);
            }
        }
        10 => {
            let pick = bytes.byte()?;
            if let Some(b) = s.take(pick) {
                State::release(b, pick >> 4);
            }
        }
        _ => {
            let (a, size) = (bytes.byte()?, odd_size(bytes)?);
            if unbackable(size) {
                return Some(());
            }
            let nothrow = core::ptr::null::<c_void>();
            let align = odd_align(a);
            // SAFETY: the nothrow forms return null on failure instead of throwing.
            let p = unsafe {
                match a & 0x80 != 0 {
                    false => cxx::_ZnwmRKSt9nothrow_t(size, nothrow),
                    true => cxx::_ZnwmSt11align_val_tRKSt9nothrow_t(size, align, nothrow),
                }
            };
            let aligned = a & 0x80 != 0;
            if too_big(size) || (aligned && !align.is_power_of_two()) {
                assert!(p.is_null(), "new({size}, {align}) must fail");
            } else if aligned && align > (1 << 40) {
                if !p.is_null() {
                    s.admit(p, size, align, Kind::NewAligned(align));
                }
            } else {
                assert!(!p.is_null(), "new({size}) failed");
                let kind = if aligned {
                    Kind::NewAligned(align)
                } else {
                    Kind::New
                };
                s.admit(p, size, if aligned { align } else { 1 }, kind);
            }
        }
    }
    Some(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes { data };
    let mut s = State {
        live: Vec::new(),
        tag: 0,
    };
    while let Some(op) = bytes.byte() {
        if step(&mut s, op, &mut bytes).is_none() {
            break;
        }
    }
    for b in std::mem::take(&mut s.live) {
        assert!(holds(b.addr, b.size, b.tag, b.size));
        let how = b.tag;
        State::release(b, how);
    }
});
