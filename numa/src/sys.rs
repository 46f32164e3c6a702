//! The kernel interface of this crate, and nothing else: file reads for sysfs, the
//! memory-policy and CPU syscalls through `libc::syscall`, and the rseq/thread-pointer reads.
//! Everything above this module is plain Rust over these few functions (CONVENTIONS.md,
//! "Syscalls and `asm!` live in `sys`/`os` modules"). No function here allocates.

use core::ffi::{c_int, c_long, c_ulong, c_void};

// Memory-policy constants from the kernel's `include/uapi/linux/mempolicy.h`. `libc` has
// only some of them, so all are spelled out here in one place.
pub(crate) const MPOL_DEFAULT: c_int = 0;
pub(crate) const MPOL_PREFERRED: c_int = 1;
pub(crate) const MPOL_BIND: c_int = 2;
pub(crate) const MPOL_INTERLEAVE: c_int = 3;
pub(crate) const MPOL_LOCAL: c_int = 4;
pub(crate) const MPOL_PREFERRED_MANY: c_int = 5;
pub(crate) const MPOL_WEIGHTED_INTERLEAVE: c_int = 6;
/// Mode flags the kernel may OR into a reported mode (`MPOL_MODE_FLAGS`).
pub(crate) const MPOL_MODE_FLAGS: c_int = (1 << 15) | (1 << 14) | (1 << 13);

/// `get_mempolicy` flags.
pub(crate) const MPOL_F_NODE: c_ulong = 1 << 0;
pub(crate) const MPOL_F_ADDR: c_ulong = 1 << 1;
pub(crate) const MPOL_F_MEMS_ALLOWED: c_ulong = 1 << 2;

/// `mbind` flags.
pub(crate) const MPOL_MF_STRICT: u32 = 1 << 0;
pub(crate) const MPOL_MF_MOVE: u32 = 1 << 1;
pub(crate) const MPOL_MF_MOVE_ALL: u32 = 1 << 2;

/// `getauxval` key for the size of the rseq features the kernel maintains (Linux 6.3+).
const AT_RSEQ_FEATURE_SIZE: c_ulong = 27;

/// The current thread's `errno`.
pub(crate) fn errno() -> i32 {
    // SAFETY: `__errno_location` has no preconditions and returns a valid pointer to this
    // thread's errno for the life of the thread.
    unsafe { *libc::__errno_location() }
}

/// Turns a raw syscall return into `Ok(value)` or `Err(errno)`.
fn check(ret: c_long) -> Result<c_long, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub(crate) struct Fd(c_int);

impl Fd {
    /// Opens `path` read-only; `flags` may add `O_DIRECTORY`.
    pub(crate) fn open(path: &core::ffi::CStr, flags: c_int) -> Option<Fd> {
        loop {
            // SAFETY: `path` is a valid NUL-terminated string for the duration of the call;
            // `open` with these flags does not touch caller memory otherwise.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | flags) };
            if fd >= 0 {
                return Some(Fd(fd));
            }
            if errno() != libc::EINTR {
                return None;
            }
        }
    }

    /// Reads into `buf`; `Ok(0)` at end of file. Retries on `EINTR`.
    pub(crate) fn read(&self, buf: &mut [u8]) -> Result<usize, i32> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and the kernel writes at
            // most that many.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast::<c_void>(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(e);
            }
        }
    }

    /// Reads directory entries (`struct linux_dirent64` records) into `buf`; `Ok(0)` at end.
    pub(crate) fn getdents64(&self, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the kernel writes whole
        // records and at most that many bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                self.0,
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
            )
        };
        check(n).map(|n| n as usize)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and nothing else refers to it after this point.
        unsafe { libc::close(self.0) };
    }
}

// ---------------------------------------------------------------------------------------
// CPUs
// ---------------------------------------------------------------------------------------

/// `sched_getaffinity(0, ...)` into `words`; returns the number of bytes the kernel wrote.
pub(crate) fn sched_getaffinity(words: &mut [u64]) -> Result<usize, i32> {
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
pub(crate) fn getcpu() -> Result<(u32, u32), i32> {
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
// Restartable sequences: glibc's registration (DESIGN.md, "Per-processor caches", 3)
// ---------------------------------------------------------------------------------------

/// Byte offsets in the kernel's `struct rseq` (`include/uapi/linux/rseq.h`).
const RSEQ_CPU_ID: usize = 4;
const RSEQ_NODE_ID: usize = 20;
/// The `struct rseq` size up to and including `node_id`.
pub(crate) const RSEQ_NODE_ID_END: u32 = RSEQ_NODE_ID as u32 + 4;

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
    pub(crate) fn registered_size() -> u32 {
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
    fn thread_pointer() -> *const u8 {
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
    pub(crate) fn area() -> Option<*const u8> {
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
    pub(crate) fn registered_size() -> u32 {
        0
    }

    pub(crate) fn area() -> Option<*const u8> {
        None
    }
}

pub(crate) use rseq_imp::registered_size as rseq_registered_size;

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
pub(crate) fn rseq_cpu() -> Option<u32> {
    let area = rseq_imp::area()?;
    // A negative `cpu_id` is RSEQ_CPU_ID_UNINITIALIZED (-1) or REGISTRATION_FAILED (-2).
    // SAFETY: `area` is this thread's rseq area; `cpu_id` is at 4.
    let cpu = unsafe { rseq_field(area, RSEQ_CPU_ID) } as i32;
    if cpu < 0 { None } else { Some(cpu as u32) }
}

/// `(cpu, node)` from rseq. Only meaningful when the registered area and the kernel's
/// feature size both cover `node_id` (see `cpu::mode_for`); otherwise `node_id` reads 0.
#[inline(always)]
pub(crate) fn rseq_cpu_node() -> Option<(u32, u32)> {
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
pub(crate) fn rseq_kernel_feature_size() -> u32 {
    // SAFETY: `getauxval` reads the aux vector that the kernel gave the process; it has no
    // preconditions and does not allocate.
    unsafe { libc::getauxval(AT_RSEQ_FEATURE_SIZE) as u32 }
}

// ---------------------------------------------------------------------------------------
// Memory policy (mempolicy(7))
// ---------------------------------------------------------------------------------------

/// The kernel reads `maxnode - 1` bits of a node mask (a historical off-by-one that libnuma
/// also compensates for), so we pass our bit count plus one.
pub(crate) fn maxnode_for(words: usize) -> c_ulong {
    (words * 64 + 1) as c_ulong
}

/// `mbind(2)`.
///
/// # Safety
///
/// `mask` must be null or point to `words` readable `u64`s. `addr` is not dereferenced by us;
/// the kernel checks it and fails with `EFAULT`/`EINVAL` when no mapping is there.
pub(crate) unsafe fn mbind(
    addr: *mut c_void,
    len: usize,
    mode: c_int,
    mask: *const u64,
    words: usize,
    flags: u32,
) -> Result<(), i32> {
    let maxnode = if mask.is_null() {
        0
    } else {
        maxnode_for(words)
    };
    // SAFETY: the caller guarantees `mask`; the kernel validates the address range itself.
    let r = unsafe { libc::syscall(libc::SYS_mbind, addr, len, mode, mask, maxnode, flags) };
    check(r).map(|_| ())
}

/// `set_mempolicy(2)` for the calling thread.
///
/// # Safety
///
/// `mask` must be null or point to `words` readable `u64`s.
pub(crate) unsafe fn set_mempolicy(mode: c_int, mask: *const u64, words: usize) -> Result<(), i32> {
    let maxnode = if mask.is_null() {
        0
    } else {
        maxnode_for(words)
    };
    // SAFETY: the caller guarantees `mask`.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask, maxnode) };
    check(r).map(|_| ())
}

/// `get_mempolicy(2)`; returns the mode word the kernel wrote.
///
/// # Safety
///
/// `mask` must be null or point to `words` writable `u64`s. With `MPOL_F_ADDR`, `addr` is
/// looked up by the kernel (never dereferenced by us).
pub(crate) unsafe fn get_mempolicy(
    mask: *mut u64,
    words: usize,
    addr: *const c_void,
    flags: c_ulong,
) -> Result<c_int, i32> {
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
///
/// # Safety
///
/// `pages` and `status` must each point to `count` elements (`status` writable), and
/// `nodes` must be null or point to `count` readable `c_int`s. The page addresses themselves
/// are looked up by the kernel, not dereferenced.
pub(crate) unsafe fn move_pages(
    count: usize,
    pages: *const *const c_void,
    nodes: *const c_int,
    status: *mut c_int,
    flags: c_int,
) -> Result<c_long, i32> {
    // SAFETY: the caller guarantees the three arrays; pid 0 is the calling process.
    let r = unsafe { libc::syscall(libc::SYS_move_pages, 0, count, pages, nodes, status, flags) };
    check(r)
}

/// The calling thread's id (`gettid(2)`), always positive.
pub(crate) fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Whether thread `tid` exists in this process: `tgkill(getpid(), tid, 0)` sends no signal
/// and fails with `ESRCH` only when there is no such thread in our thread group.
pub(crate) fn thread_alive(tid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    r == 0 || errno() != libc::ESRCH
}

/// `sched_yield(2)`, for the brief wait while another thread initializes the topology.
pub(crate) fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}
