//! `libtessera.so`: the C allocation interface backed by Tessera (DESIGN.md, product 1), for
//! `LD_PRELOAD=libtessera.so program` or for `dlopen`.
//!
//! - `c_api.rs`: `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
//!   `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`, `cfree`.
//! - `cxx.rs`: every replaceable C++ `operator new`/`operator delete`, by mangled name.
//! - `rules.rs`: the size and alignment arithmetic, unit-tested; `sys.rs`: `errno`, page
//!   size, reports, `dlsym`.
//!
//! The exported symbols exist only outside `cfg(test)`: a unit-test binary that exported
//! `malloc` would run its own harness on it.
//!
//! TLS_NOTES_PLACEHOLDER

// The unit-test build leaves out the exports, so the helpers only they call look unused.
#![cfg_attr(test, allow(dead_code))]

mod rules;
mod sys;

#[cfg(not(test))]
pub mod c_api;
#[cfg(not(test))]
pub mod cxx;
