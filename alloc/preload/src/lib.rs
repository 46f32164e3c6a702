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
//! ## Thread-local storage
//!
//! Tessera keeps the calling thread's cache pointer in two `thread_local!`s
//! (`alloc/src/thread.rs`). Stable Rust cannot choose a TLS model, and a cdylib is
//! position-independent code, so in this library they use the local-dynamic model. Checked
//! on the release build: `readelf -r libtessera.so` shows one `R_X86_64_DTPMOD64` relocation
//! and no `TPOFF` ones, `readelf -d` has no `STATIC_TLS` flag, and `objdump -d` shows a
//! `call __tls_get_addr@plt` in `tessera::alloc`, `dealloc`, `free` and the slow paths: every
//! `malloc` and `free` makes one call into ld.so to find the thread-local. (The workspace's
//! fat-LTO "one `fs`-relative load" holds where tessera is linked into an executable, not
//! here.) What follows from that:
//! - `dlopen` works: the library needs no static TLS, and ld.so gives each thread its block
//!   on first use, allocated by the process's `malloc` (glibc's: a `dlopen`ed library does not
//!   interpose). `tests/c/dlopen.c`.
//! - Under `LD_PRELOAD` the block sits in the static TLS area of every thread, so
//!   `__tls_get_addr` never allocates for it. It may still call `malloc`/`free` for other
//!   modules after a `dlopen`/`dlclose` (growing a thread's DTV, freeing a closed module's
//!   block), and those are ours and re-enter `__tls_get_addr` for our block. glibc 2.36
//!   (Debian 12) copes; `tests/c/tls_churn.c` drives exactly that (40 TLS modules, past the
//!   DTV's initial surplus, closed while threads allocate). glibc 2.40 added an explicit guard
//!   for interposed mallocs that use dynamic TLS.
//! - Threads that exit: tessera flushes the cache from a `pthread_key_create` destructor;
//!   glibc's later frees during thread teardown still read our thread-local, which stays
//!   valid until the thread's TLS is released (`tests/c/exports.c`, thread churn; `dlopen.c`).
//! - `fork`: tessera's `pthread_atfork` handlers; `exports.c` forks while threads allocate.
//!
//! The initial-exec model would drop the `__tls_get_addr` call from the fast path; it needs
//! either nightly's `-Z tls-model` or a thread-local defined in `asm!` in `alloc/src/thread.rs`.
//!
//! The library is linked with `-z nodelete` (`build.rs`): a `dlclose` must not unmap code that
//! the pthread key destructor, the fork handlers and every live block still depend on.

// The unit-test build leaves out the exports, so the helpers only they call look unused.
#![cfg_attr(test, allow(dead_code))]

mod rules;
mod sys;

#[cfg(not(test))]
pub mod c_api;
#[cfg(not(test))]
pub mod cxx;
