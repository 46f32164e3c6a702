//! The NUMA calls of `tessera-numa`: the memory-policy syscalls (mempolicy(7)) through
//! `syscall`, `getcpu` and `sched_getaffinity`, and the reads of glibc's rseq area that give
//! the current CPU and node without a syscall. `tessera-numa` is plain Rust over these.
//!
//! Errors: the syscalls return the kernel's `errno` as an [`OsError`]. The ones callers see:
//! `EINVAL` (a mode, flag or mask the kernel rejects, e.g. a node it does not have),
//! `EFAULT` (an address range with no mapping), `EPERM` (`MPOL_MF_MOVE_ALL` without
//! `CAP_SYS_NICE`), `EIO` (`MPOL_MF_STRICT` and pages that could not be moved), `ENOMEM`,
//! `ENOSYS` (a kernel without NUMA support).

use core::ffi::{c_int, c_long, c_ulong, c_void};

use crate::error::{OsError, check};

// Memory-policy constants from the kernel's `include/uapi/linux/mempolicy.h`. `libc` has
// only some of them, so all are spelled out here in one place.
pub const MPOL_DEFAULT: c_int = 0;
pub const MPOL_PREFERRED: c_int = 1;
pub const MPOL_BIND: c_int = 2;
pub const MPOL_INTERLEAVE: c_int = 3;
pub const MPOL_LOCAL: c_int = 4;
pub const MPOL_PREFERRED_MANY: c_int = 5;
pub const MPOL_WEIGHTED_INTERLEAVE: c_int = 6;
/// Mode flags the kernel may OR into a reported mode (`MPOL_MODE_FLAGS`).
pub const MPOL_MODE_FLAGS: c_int = (1 << 15) | (1 << 14) | (1 << 13);

/// `get_mempolicy` flags.
pub const MPOL_F_NODE: c_ulong = 1 << 0;
pub const MPOL_F_ADDR: c_ulong = 1 << 1;
pub const MPOL_F_MEMS_ALLOWED: c_ulong = 1 << 2;

/// `mbind` flags.
pub const MPOL_MF_STRICT: u32 = 1 << 0;
pub const MPOL_MF_MOVE: u32 = 1 << 1;
pub const MPOL_MF_MOVE_ALL: u32 = 1 << 2;

/// `getauxval` key for the size of the rseq features the kernel maintains (Linux 6.3+).
const AT_RSEQ_FEATURE_SIZE: c_ulong = 27;

// ---------------------------------------------------------------------------------------
// CPUs
// ---------------------------------------------------------------------------------------

/// `sched_getaffinity(0, ...)` into `words`; returns the number of bytes the kernel wrote.
///
/// Errors: `EINVAL` when `words` is smaller than the kernel's CPU mask (more CPUs than
/// `tessera-numa`'s `MAX_CPUS`).
pub fn sched_getaffinity(words: &mut [u64]) -> Result<usize, OsError> {
    let bytes = core::mem::size_of_val(words);
    // SAFETY: `words` is valid for writes of `bytes` bytes and the kernel writes at most
    // `bytes`; pid 0 means the calling thread.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            bytes,
            words.as_mut_ptr().cast::<c_void>(),
        )
    };
    check(n).map(|n| n as usize)
}

/// The `getcpu` syscall: `(cpu, node)` of the calling thread at the time of the call.
/// Cannot fail in practice (`EFAULT` is ruled out by the out-pointers on our stack).
pub fn getcpu() -> Result<(u32, u32), OsError> {
    let mut cpu: u32 = 0;
    let mut node: u32 = 0;
    // SAFETY: both out-pointers are valid `u32`s on our stack; the third (cache) argument
    // has been unused since Linux 2.6.24 and may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            core::ptr::null_mut::<c_void>(),
        )
    };
    check(r).map(|_| (cpu, node))
}

// ---------------------------------------------------------------------------------------
// Restartable sequences: glibc's registration (ARCHITECTURE.md#per-processor-caches)
// ---------------------------------------------------------------------------------------

/// Byte offsets in the kernel's `struct rseq` (`include/uapi/linux/rseq.h`).
const RSEQ_CPU_ID: usize = 4;
const RSEQ_NODE_ID: usize = 20;
/// The `struct rseq` size up to and including `node_id`.
pub const RSEQ_NODE_ID_END: u32 = RSEQ_NODE_ID as u32 + 4;

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod rseq_imp {
    // glibc 2.35+ exports where it put each thread's `struct rseq`: at the thread pointer
    // plus `__rseq_offset`, registered with length `__rseq_size` (0 when it did not register,
    // e.g. with `GLIBC_TUNABLES=glibc.pthread.rseq=0`). Both are written once before `main`.
    unsafe extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }

    /// The registered `struct rseq` length, 0 when glibc did not register one.
    pub fn registered_size() -> u32 {
        // SAFETY: glibc initializes `__rseq_size` during startup, before any Rust code runs,
        // and never writes it again, so this read does not race.
        unsafe { __rseq_size }
    }

    /// The thread pointer of the thread running this code *now*.
    ///
    /// The `asm!` is deliberately not `pure`: a coroutine may yield on one thread and resume
    /// on another, and a pure asm could be hoisted or merged across that switch
    /// (llvm-project#98479), handing back another thread's rseq area.
    #[inline(always)]
    pub(crate) fn thread_pointer() -> *const u8 {
        let tp: *const u8;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: on x86_64 Linux `fs:0` holds the TCB's self pointer (the thread pointer);
        // the load has no side effects and touches neither the stack nor the flags.
        unsafe {
            core::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) tp,
                options(nostack, readonly, preserves_flags)
            );
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: reading `tpidr_el0` is always allowed at EL0 and has no side effects.
        unsafe {
            core::arch::asm!(
                "mrs {}, tpidr_el0",
                out(reg) tp,
                options(nomem, nostack, preserves_flags)
            );
        }
        tp
    }

    /// The calling thread's `struct rseq`, when glibc registered one.
    #[inline(always)]
    pub(super) fn area() -> Option<*const u8> {
        if registered_size() == 0 {
            return None;
        }
        // SAFETY: like `__rseq_size`, `__rseq_offset` is written once before `main`.
        let off = unsafe { __rseq_offset };
        Some(thread_pointer().wrapping_offset(off))
    }
}

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod rseq_imp {
    pub fn registered_size() -> u32 {
        0
    }

    pub(super) fn area() -> Option<*const u8> {
        None
    }
}

pub use rseq_imp::registered_size as rseq_registered_size;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) use rseq_imp::thread_pointer;

/// Reads the `u32` at byte `off` of the calling thread's rseq area.
///
/// # Safety
/// `area` is the calling thread's registered `struct rseq` (`rseq_imp::area()`), and
/// `off + 4 <= 24`, a multiple of 4 (`RSEQ_CPU_ID`, `RSEQ_NODE_ID`).
#[inline(always)]
unsafe fn rseq_field(area: *const u8, off: usize) -> u32 {
    // SAFETY: per the contract `area` is this thread's registered `struct rseq`: glibc
    // places it in the thread's TCB, 32-byte aligned, and every glibc that registers one
    // (2.35+) reserves at least the original 32 bytes, so `off + 4 <= 24` is in bounds and
    // 4-aligned. The kernel rewrites the field when the thread is preempted or migrated, so
    // the read is volatile: it must not be cached across calls.
    unsafe { area.add(off).cast::<u32>().read_volatile() }
}

/// The CPU from rseq, or `None` when glibc has no registration for this thread.
#[inline(always)]
pub fn rseq_cpu() -> Option<u32> {
    let area = rseq_imp::area()?;
    // A negative `cpu_id` is RSEQ_CPU_ID_UNINITIALIZED (-1) or REGISTRATION_FAILED (-2).
    // SAFETY: `area` is this thread's rseq area; `cpu_id` is at 4.
    let cpu = unsafe { rseq_field(area, RSEQ_CPU_ID) } as i32;
    if cpu < 0 { None } else { Some(cpu as u32) }
}

/// `(cpu, node)` from rseq. Only meaningful when the registered area and the kernel's
/// feature size both cover `node_id` (see `cpu::mode_for`); otherwise `node_id` reads 0.
#[inline(always)]
pub fn rseq_cpu_node() -> Option<(u32, u32)> {
    let area = rseq_imp::area()?;
    // SAFETY: `area` is this thread's rseq area; `cpu_id` is at 4, `node_id` at 20.
    let (cpu, node) = unsafe {
        (
            rseq_field(area, RSEQ_CPU_ID),
            rseq_field(area, RSEQ_NODE_ID),
        )
    };
    if (cpu as i32) < 0 {
        return None;
    }
    Some((cpu, node))
}

/// The size of `struct rseq` the kernel keeps up to date (`AT_RSEQ_FEATURE_SIZE`, Linux
/// 6.3+; 0 on older kernels, which maintain only the fields up to `flags`).
pub fn rseq_kernel_feature_size() -> u32 {
    // SAFETY: `getauxval` reads the aux vector that the kernel gave the process; it has no
    // preconditions and does not allocate.
    unsafe { libc::getauxval(AT_RSEQ_FEATURE_SIZE) as u32 }
}

// ---------------------------------------------------------------------------------------
// Memory policy (mempolicy(7))
// ---------------------------------------------------------------------------------------

/// The kernel reads `maxnode - 1` bits of a node mask (a historical off-by-one that libnuma
/// also compensates for), so we pass our bit count plus one.
pub fn maxnode_for(words: usize) -> c_ulong {
    (words * 64 + 1) as c_ulong
}

/// `mbind(2)`. Errors: as in the module comment (`EINVAL`, `EFAULT`, `EPERM`, `EIO`).
///
/// # Safety
///
/// `mask` must be null or point to `words` readable `u64`s. `addr` is not dereferenced by us;
/// the kernel checks it and fails with `EFAULT`/`EINVAL` when no mapping is there.
pub unsafe fn mbind(
    addr: *mut c_void,
    len: usize,
    mode: c_int,
    mask: *const u64,
    words: usize,
    flags: u32,
) -> Result<(), OsError> {
    let maxnode = if mask.is_null() {
        0
    } else {
        maxnode_for(words)
    };
    // SAFETY: the caller guarantees `mask`; the kernel validates the address range itself.
    let r = unsafe { libc::syscall(libc::SYS_mbind, addr, len, mode, mask, maxnode, flags) };
    check(r).map(|_| ())
}

/// `set_mempolicy(2)` for the calling thread. Errors: `EINVAL` for a mode or mask the
/// kernel rejects (an empty mask with a mode that needs nodes, a node not allowed).
///
/// # Safety
///
/// `mask` must be null or point to `words` readable `u64`s.
pub unsafe fn set_mempolicy(mode: c_int, mask: *const u64, words: usize) -> Result<(), OsError> {
    let maxnode = if mask.is_null() {
        0
    } else {
        maxnode_for(words)
    };
    // SAFETY: the caller guarantees `mask`.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask, maxnode) };
    check(r).map(|_| ())
}

/// `get_mempolicy(2)`; returns the mode word the kernel wrote. Errors: `EINVAL` (a mask
/// too small for the kernel's node count, bad flags), `EFAULT` (with `MPOL_F_ADDR`, an
/// address with no mapping).
///
/// # Safety
///
/// `mask` must be null or point to `words` writable `u64`s. With `MPOL_F_ADDR`, `addr` is
/// looked up by the kernel (never dereferenced by us).
pub unsafe fn get_mempolicy(
    mask: *mut u64,
    words: usize,
    addr: *const c_void,
    flags: c_ulong,
) -> Result<c_int, OsError> {
    let mut mode: c_int = 0;
    let maxnode = if mask.is_null() {
        0
    } else {
        maxnode_for(words)
    };
    // SAFETY: `mode` is a valid out-pointer on our stack; the caller guarantees `mask`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut c_int,
            mask,
            maxnode,
            addr,
            flags,
        )
    };
    check(r).map(|_| mode)
}

/// `move_pages(2)` on the calling process. With `nodes` null it only reports, in `status`,
/// the node of each page (or a negative errno such as `-ENOENT` for a page not present).
/// Errors of the call as a whole: `EINVAL`, `EPERM`, `ESRCH`, `E2BIG`, `ENOMEM`.
///
/// # Safety
///
/// `pages` and `status` must each point to `count` elements (`status` writable), and
/// `nodes` must be null or point to `count` readable `c_int`s. The page addresses themselves
/// are looked up by the kernel, not dereferenced.
pub unsafe fn move_pages(
    count: usize,
    pages: *const *const c_void,
    nodes: *const c_int,
    status: *mut c_int,
    flags: c_int,
) -> Result<c_long, OsError> {
    // SAFETY: the caller guarantees the three arrays; pid 0 is the calling process.
    let r = unsafe { libc::syscall(libc::SYS_move_pages, 0, count, pages, nodes, status, flags) };
    check(r)
}
