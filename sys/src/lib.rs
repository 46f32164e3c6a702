//! Every syscall and libc call of Tessera, behind one small interface (mimalloc's `prim/`):
//! the crates above read as plain Rust over these functions, and a CI check
//! (`.ci/boundary.sh`) keeps `libc::` out of their sources.
//!
//! - [`mem`]: reserve, purge, release, remap, protect, guard regions; the page size.
//! - [`futex`]: the wait/wake primitive under every lock and parker.
//! - [`lock`]: the futex lock every layer uses, since the allocator may not use std's.
//! - [`clock`]: the coarse monotonic clock; the wall clock.
//! - [`fs`]: small files and directories read into stack buffers, symbolic links, files
//!   written from a slice.
//! - [`io`]: writes that handle short writes and `EINTR`; report lines built on the stack.
//! - [`env`]: environment variables read in place.
//! - [`process`]: ending the process, forking, waiting for a child, fork and exit handlers.
//! - [`dl`]: symbols by name, code addresses by module, the loaded objects (segments, build
//!   IDs), FDEs and stacks from libgcc's unwinder.
//! - [`c`]: the C types of `extern "C"` signatures.
//! - [`net`]: sockets, epoll and eventfd for the scheduler's netpoller.
//! - [`numa`]: memory-policy syscalls, `getcpu`, affinity, glibc's rseq area.
//! - [`random`]: random bits from the kernel.
//! - [`rseq`]: restartable sequences (registration, the per-CPU slab sequences) and
//!   membarrier.
//! - [`thread`]: thread ids, liveness, yielding; a detached helper thread, thread-exit keys,
//!   a thread's stack bounds.
//! - [`signal`]: chained fault handlers, alternate signal stacks, a signal's self-pipe, plain
//!   handlers.
//! - [`error`]: [`OsError`](error::OsError), `errno` and the values callers test for.
//!
//! Rules for everything here: no allocation (this runs inside `malloc`, and in processes that
//! preload `libtessera.so` before anything is initialised), no panics, no formatting on the
//! way to a normal return; every wrapper says what it returns on failure and which `errno`
//! values matter. `no_std`, so that `tessera-numa` (`no_std` itself) can stand on it.
//! Linux, 64-bit only.

#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("tessera-sys supports 64-bit Linux only");

pub mod c;
pub mod clock;
pub mod dl;
pub mod env;
pub mod error;
pub mod fs;
pub mod futex;
pub mod io;
pub mod lock;
pub mod mem;
pub mod net;
pub mod numa;
pub mod process;
pub mod random;
pub mod rseq;
pub mod signal;
pub mod thread;
