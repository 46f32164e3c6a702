//! growth: buffers growing by `realloc`, as `Vec` and `String` do, and large reallocs (where
//! an allocator can move pages with `mremap` instead of copying).
//!
//! Each round, each thread:
//! 1. grows `VECS` vectors of u64 at once, pushing to them in turn (so a neighbour usually sits
//!    right after each buffer and in-place growth is not free), each to a random length of
//!    1–512 items, doubling the capacity from 2 items by `realloc`; then checks every item and
//!    frees the buffers;
//! 2. grows one buffer from 64 KiB to 4 MiB by doubling `realloc`s, writing one word per page
//!    of each new part and checking every page's word after each move.

use super::block::checked;
use super::harness::{Deadline, parallel};
use super::rng::Rng;
use super::{Outcome, Params};
use std::alloc::{GlobalAlloc, Layout};

const VECS: usize = 64;
const MAX_ITEMS: usize = 512;
const BIG_START: usize = 64 << 10;
const BIG_END: usize = 4 << 20;
const PAGE: usize = 4096;

pub(super) fn run<A: GlobalAlloc + Sync>(a: &A, params: &Params) -> Outcome {
    let deadline = Deadline::after(params.duration);
    parallel(params.threads, |thread| {
        let mut rng = Rng::new(0x6a0 ^ thread as u64);
        let mut ops = 0;
        for _round in deadline.rounds() {
            ops += small_vectors(a, &mut rng);
            ops += big_buffer(a, rng.next_u64());
        }
        ops
    })
}

/// A `Vec<u64>` reduced to what matters here: a buffer grown by `realloc`.
struct Growing {
    ptr: *mut u64,
    cap: usize,
    len: usize,
    target: usize,
}

fn layout(items: usize) -> Layout {
    Layout::array::<u64>(items).expect("small")
}

impl Growing {
    /// Appends one item; returns how many allocator calls that took (0 or 1).
    fn push<A: GlobalAlloc>(&mut self, a: &A, value: u64) -> u64 {
        let mut calls = 0;
        if self.len == self.cap {
            let new_cap = (self.cap * 2).max(2);
            let raw = if self.cap == 0 {
                // SAFETY: non-zero size (new_cap >= 2 items).
                unsafe { a.alloc(layout(new_cap)) }
            } else {
                // SAFETY: `ptr` is live with layout(cap) from `a`; the new size is non-zero and
                // small enough not to overflow when rounded to the alignment.
                unsafe { a.realloc(self.ptr.cast(), layout(self.cap), new_cap * 8) }
            };
            self.ptr = checked(raw, new_cap * 8).as_ptr().cast();
            self.cap = new_cap;
            calls = 1;
        }
        // SAFETY: len < cap, so the slot is inside the live buffer.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
        calls
    }
}

fn small_vectors<A: GlobalAlloc>(a: &A, rng: &mut Rng) -> u64 {
    let tag = rng.next_u64();
    let mut vecs: Vec<Growing> = (0..VECS)
        .map(|_| Growing {
            ptr: std::ptr::null_mut(),
            cap: 0,
            len: 0,
            target: rng.range(1, MAX_ITEMS),
        })
        .collect();
    let mut calls = 0;
    let mut growing = true;
    while growing {
        growing = false;
        for (v, vec) in vecs.iter_mut().enumerate() {
            if vec.len < vec.target {
                let value = tag ^ (v << 32 | vec.len) as u64;
                calls += vec.push(a, value);
                growing = true;
            }
        }
    }
    for (v, vec) in vecs.into_iter().enumerate() {
        for i in 0..vec.len {
            // SAFETY: i < len <= cap: an initialised item of the live buffer.
            let found = unsafe { vec.ptr.add(i).read() };
            let want = tag ^ (v << 32 | i) as u64;
            assert!(
                found == want,
                "realloc lost data at {:p}[{i}]: {found:#x} != {want:#x}",
                vec.ptr
            );
        }
        // SAFETY: a live buffer of layout(cap) from `a`, freed once.
        unsafe { a.dealloc(vec.ptr.cast(), layout(vec.cap)) };
    }
    calls
}

fn big_buffer<A: GlobalAlloc>(a: &A, tag: u64) -> u64 {
    let byte_layout = |size| Layout::from_size_align(size, 8).expect("small");
    // SAFETY: non-zero size.
    let mut ptr = checked(unsafe { a.alloc(byte_layout(BIG_START)) }, BIG_START).as_ptr();
    let mut size = BIG_START;
    stamp_pages(ptr, 0, size, tag);
    let mut calls = 1;
    while size < BIG_END {
        let new_size = size * 2;
        // SAFETY: `ptr` is live with byte_layout(size) from `a`; new_size is non-zero.
        ptr = checked(
            unsafe { a.realloc(ptr, byte_layout(size), new_size) },
            new_size,
        )
        .as_ptr();
        calls += 1;
        check_pages(ptr, size, tag);
        stamp_pages(ptr, size, new_size, tag);
        size = new_size;
    }
    check_pages(ptr, size, tag);
    // SAFETY: live with byte_layout(size) from `a`, freed once.
    unsafe { a.dealloc(ptr, byte_layout(size)) };
    calls
}

fn stamp_pages(ptr: *mut u8, from: usize, to: usize, tag: u64) {
    for page in (from..to).step_by(PAGE) {
        // SAFETY: `page` is a multiple of 4096 below `to`, the buffer's size, and the buffer
        // is 8-aligned.
        unsafe { ptr.add(page).cast::<u64>().write(tag ^ page as u64) };
    }
}

fn check_pages(ptr: *mut u8, to: usize, tag: u64) {
    for page in (0..to).step_by(PAGE) {
        // SAFETY: as in `stamp_pages`; every word read was stamped before.
        let found = unsafe { ptr.add(page).cast::<u64>().read() };
        assert!(
            found == tag ^ page as u64,
            "realloc lost data at {ptr:p}+{page}: {found:#x} != {:#x}",
            tag ^ page as u64
        );
    }
}
