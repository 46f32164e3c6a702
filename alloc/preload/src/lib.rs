//! `libtessera.so`: the C allocation interface backed by Tessera (ARCHITECTURE.md#preload), for
//! `LD_PRELOAD=libtessera.so program` or for `dlopen`.
//!
//! - `c_api.rs`: `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
//!   `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`, `cfree`.
//! - `cxx.rs`: every replaceable C++ `operator new`/`operator delete`, by mangled name.
//! - `stats.rs`: `tessera_stats` (declared in `include/tessera.h`), and the reports of
//!   `malloc_stats` and `malloc_info`, which replace glibc's (those describe glibc's own
//!   heap, empty under the preload).
//! - `rules.rs`: the size and alignment arithmetic, unit-tested; `sys.rs`: `errno`, page
//!   size, reports, `dlsym`; `text.rs`: allocation-free text for reports.
//!
//! The exported symbols exist only outside `cfg(test)`: a unit-test binary that exported
//! `malloc` would run its own harness on it.
//!
//! ## Thread-local storage
//!
//! Tessera keeps the calling thread's cache pointers in two words it defines itself in
//! `.tbss` and reads with the initial-exec model (`alloc/src/tls.rs`): an `fs`-relative load
//! whose offset sits in the GOT. Checked on the release build: `readelf -d libtessera.so`
//! shows the `STATIC_TLS` flag and `readelf -r` two `R_X86_64_TPOFF64` relocations for those
//! words; `tessera::alloc`, `dealloc` and `free` make no `__tls_get_addr` call. (The
//! remaining `R_X86_64_DTPMOD64` relocations belong to std's and other crates' thread-locals,
//! none on the malloc path.) What follows from that:
//! - `dlopen` works while glibc's static TLS surplus has room for 16 bytes, which it has by
//!   default (`tests/c/dlopen.c`); it is the same bargain glibc's own malloc, jemalloc and
//!   mimalloc make.
//! - `__tls_get_addr` is never called for our words, so the DTV growth that a `dlopen` or
//!   `dlclose` causes (which calls `malloc`/`free`, that is, us) cannot re-enter a
//!   half-updated lookup of them (`tests/c/tls_churn.c`: 40 TLS modules opened and closed
//!   while threads allocate).
//! - Threads that exit: tessera flushes the cache from a `pthread_key_create` destructor;
//!   glibc's later frees during thread teardown still read our words, which stay valid until
//!   the thread's static TLS is released (`tests/c/exports.c`, thread churn; `dlopen.c`).
//! - `fork`: tessera's `pthread_atfork` handlers; `exports.c` forks while threads allocate.
//!
//! The library is linked with `-z nodelete` (`build.rs`): a `dlclose` must not unmap code that
//! the pthread key destructor, the fork handlers and every live block still depend on.

// The unit-test build leaves out the exports, so the helpers only they call look unused.
#![cfg_attr(test, allow(dead_code))]

mod rules;
pub mod stats;
mod text;

#[cfg(not(test))]
pub mod c_api;
#[cfg(not(test))]
pub mod cxx;
