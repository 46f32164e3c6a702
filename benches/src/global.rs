//! The runner's global allocator, chosen once per process (see `main.rs`).

use core::sync::atomic::{AtomicU8, Ordering};
use std::alloc::{GlobalAlloc, Layout, System};

/// Set in the environment of a child process that must allocate through Tessera.
pub const ENV: &str = "TESSERA_BENCH_GLOBAL";

const UNKNOWN: u8 = 0;
const SYSTEM: u8 = 1;
const TESSERA: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// `System`, or `tessera::Tessera` when the process started with `TESSERA_BENCH_GLOBAL=tessera`.
#[derive(Debug, Clone, Copy)]
pub struct Chosen;

fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNKNOWN => {
            // The first allocation of the process (the runtime's start-up, single-threaded):
            // getenv allocates nothing.
            // SAFETY: a NUL-terminated name; the result is only read.
            let v = unsafe { libc::getenv(c"TESSERA_BENCH_GLOBAL".as_ptr()) };
            // SAFETY: getenv returned a NUL-terminated string or null.
            let tessera = !v.is_null() && unsafe { core::ffi::CStr::from_ptr(v) } == c"tessera";
            let c = if tessera { TESSERA } else { SYSTEM };
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// Whether this process allocates through Tessera.
pub fn is_tessera() -> bool {
    choice() == TESSERA
}

// SAFETY: forwards every call to one allocator, the same for the life of the process.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if choice() == TESSERA {
                tessera::Tessera.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from the same allocator.
        unsafe {
            if choice() == TESSERA {
                tessera::Tessera.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if choice() == TESSERA {
                tessera::Tessera.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if choice() == TESSERA {
                tessera::Tessera.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}
