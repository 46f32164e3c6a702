//! Checks the promise this module exists for: building and writing a profile takes nothing
//! from the global allocator. The lib's test binary runs on the system allocator; this
//! wrapper around it counts the allocations made by threads that ask to be watched.

use super::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Watching;

thread_local! {
    // `const` and without a destructor: reading it allocates nothing.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if WATCHED.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` unchanged; counting touches thread-locals
// only.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static WATCHING: Watching = Watching;

#[test]
fn building_and_writing_a_profile_allocates_nothing() {
    let pcs: [usize; 80] = core::array::from_fn(|i| 0x40_0000 + i * 24 + 1);
    let mut out = OsBuf::new();
    let mut gz = OsBuf::new();
    WATCHED.with(|w| w.set(true));
    let result = (|| -> Result<(), OsError> {
        for gzipped in [false, true] {
            let mut b = ProfileBuilder::new(
                &[("inuse_objects", "count"), ("inuse_space", "bytes")],
                ("space", "bytes"),
                524_288,
            )?;
            b.set_drop_frames("tessera::.*")?;
            b.add_process_mappings()?;
            for i in 0..5000usize {
                let labels = [
                    Label::Str {
                        key: "coroutine",
                        value: if i % 2 == 0 { "even" } else { "odd" },
                    },
                    Label::Num {
                        key: "bytes",
                        value: i as i64,
                        unit: "bytes",
                    },
                ];
                let stack = &pcs[i % 16..];
                b.add_sample(Stack::ReturnAddresses(stack), &[1, i as i64], &labels)?;
            }
            if gzipped {
                b.finish_gzip(&mut gz)?;
            } else {
                b.finish(&mut out)?;
            }
        }
        Ok(())
    })();
    WATCHED.with(|w| w.set(false));
    result.unwrap();
    assert_eq!(
        COUNT.with(Cell::get),
        0,
        "global allocations while profiling"
    );
    assert!(out.len() > 10_000 && gz.len() < out.len());
}
