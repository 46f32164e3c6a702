//! Restartable sequences (rseq(2)) and membarrier(2): what per-CPU caches ask of the kernel
//! (ARCHITECTURE.md#per-cpu-caches).
//!
//! # The contract with the kernel
//!
//! A thread registers a `struct rseq` (32 bytes, 32-aligned, `include/uapi/linux/rseq.h`)
//! with a signature. From then on, on every return to user space after a preemption, a
//! migration or a signal delivery, the kernel
//! 1. rewrites the area's `cpu_id`, `node_id` and `mm_cid` (the *concurrency id*: dense,
//!    below the number of CPUs the process may run on, and held by at most one running
//!    thread of the process at any instant), and
//! 2. if the area's `rseq_cs` field points at a descriptor whose range
//!    `[start_ip, start_ip + post_commit_offset)` holds the interrupted instruction, clears
//!    `rseq_cs` and resumes the thread at the descriptor's `abort_ip` instead, after checking
//!    that the four bytes before `abort_ip` are the registration's signature ([`RSEQ_SIG`];
//!    a mismatch kills the thread with `SIGSEGV`).
//!
//! So a sequence that (a) stores its descriptor's address into `rseq_cs`, as the last
//! instruction before `start_ip`, (b) reads `mm_cid` (or `cpu_id`), (c) does any amount of
//! reading and speculative writing of memory that only that id's sequences write, and (d)
//! commits with one instruction that stores (a `mov`, or an `inc`/`dec` of the count in
//! memory: an interrupt lands before an instruction or after it, never inside), the last
//! instruction of the range, either runs whole without
//! anything else of the process running on that id in between, or is restarted from (a)
//! before its commit. Its descriptors live in section `__rseq_cs` (writable, so that a
//! shared object's dynamic relocations can fill the absolute addresses in), its abort
//! handlers in `__rseq_failure`, out of the hot path, each preceded by the signature encoded
//! as the operand of a `ud1` (so disassemblers and a stray jump both see an invalid
//! instruction rather than arbitrary code).
//!
//! # Registration
//!
//! glibc 2.35+ registers an area for every thread before it runs any user code, and exports
//! where it is (`__rseq_offset` from the thread pointer) and its size (`__rseq_size`, 0 when
//! it did not register, e.g. `GLIBC_TUNABLES=glibc.pthread.rseq=0`). A thread may register
//! one area only, so where glibc registered we use its area; where it did not, [`init`]
//! registers our own area (an initial-exec thread-local, so it too sits at a fixed offset
//! from the thread pointer) for each thread that asks ([`register_current_thread`]), unless
//! the caller forbids it (a program that registers rseq itself would then get `EBUSY`).
//! A thread whose registration failed (seccomp, an old kernel: `ENOSYS`) must not run the
//! sequences: [`register_current_thread`] says so, and its caller falls back.
//!
//! Only x86_64 carries the sequences; elsewhere [`init`] reports rseq unavailable.

use core::sync::atomic::{AtomicIsize, AtomicU8, AtomicUsize, Ordering};

use crate::error::{OsError, check};

/// The signature every abort handler is preceded by; glibc registers with this value on
/// x86_64, and so do we.
pub const RSEQ_SIG: u32 = 0x5305_3053;

/// Byte offsets in `struct rseq`.
const CPU_ID: isize = 4;
const RSEQ_CS: isize = 8;
const MM_CID: isize = 24;
/// The kernel's feature size from which it maintains `mm_cid` (Linux 6.3+).
const MM_CID_END: u32 = 28;
/// The length of the original `struct rseq`, the one we register.
const ORIG_RSEQ_SIZE: u32 = 32;

/// Whose registration the process's threads use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// glibc's (`__rseq_offset`).
    Glibc,
    /// Ours, made per thread by [`register_current_thread`].
    Own,
}

/// Which field of `struct rseq` indexes per-CPU data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexField {
    /// `mm_cid`: dense ids, as many as the CPUs the process actually runs on at once.
    MmCid,
    /// `cpu_id`: the CPU number (kernels before 6.3).
    CpuId,
}

/// What [`init`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Whose area the threads use.
    pub registration: Registration,
    /// The field the sequences read.
    pub index: IndexField,
}

const UNINIT: u8 = 0;
const GLIBC: u8 = 1;
const OWN: u8 = 2;
const UNAVAILABLE: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Offsets from the thread pointer of the area's `rseq_cs` and of its index field, and the
/// base of the slab region ([`set_slab_base`]).
///
/// Read by every pop and push on every CPU, so on a cache line of their own: a neighbouring
/// static that some CPU writes (a counter) would otherwise take the line from the others.
#[repr(C, align(64))]
struct TpOffsets {
    /// `rseq_cs`'s offset; the sequences read it at `TPOFF + 0`.
    cs: AtomicIsize,
    /// The index field's offset; the sequences read it at `TPOFF + 8`.
    index: AtomicIsize,
    /// The slab of index `i` is at `base + (i << SLAB_SHIFT)`; the sequences read it at
    /// `TPOFF + 16`. Its load depends on nothing, so it runs beside the chain of the offset's
    /// and the index's loads instead of after it (a table of slabs, indexed by the id, was
    /// one more load on that chain).
    base: AtomicUsize,
    /// The tag of [`slab_pop_tagged`] ([`set_slab_tag`]), which compares with it in memory
    /// at `TPOFF + 24`: a tag passed in a register took its caller a load of its own (C's
    /// `malloc` loaded the free-list key for it), on a line the sequence reads anyway.
    tag: AtomicUsize,
}
static TPOFF: TpOffsets = TpOffsets {
    cs: AtomicIsize::new(0),
    index: AtomicIsize::new(0),
    base: AtomicUsize::new(0),
    tag: AtomicUsize::new(0),
};

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod imp {
    use core::arch::{asm, global_asm};

    // Our own `struct rseq`, for threads of a process where glibc registered none. In
    // `.tdata`, not `.tbss`: `cpu_id` and `mm_cid` start as -1 (RSEQ_CPU_ID_UNINITIALIZED),
    // so an unregistered thread's area never reads as a valid id.
    global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 5",
        ".globl tessera_tls_rseq",
        ".hidden tessera_tls_rseq",
        ".type tessera_tls_rseq, @tls_object",
        ".size tessera_tls_rseq, 32",
        "tessera_tls_rseq:",
        ".long 0, 0xffffffff",
        ".quad 0",
        ".long 0, 0, 0xffffffff, 0",
        ".popsection",
    );

    unsafe extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }

    /// glibc's registration: `(offset from the thread pointer, registered size)`.
    pub(super) fn glibc() -> (isize, u32) {
        // SAFETY: glibc writes both once during start-up, before any Rust code runs.
        unsafe { (__rseq_offset, __rseq_size) }
    }

    /// The offset of our own area from the thread pointer (the same for every thread).
    pub(super) fn own_offset() -> isize {
        let off: isize;
        // SAFETY: loads the GOT entry holding the TLS symbol's offset from the thread
        // pointer, which the dynamic linker filled at load time.
        unsafe {
            asm!(
                "mov {o}, qword ptr [rip + tessera_tls_rseq@GOTTPOFF]",
                o = out(reg) off,
                options(nostack, readonly, preserves_flags),
            );
        }
        off
    }

    /// The calling thread's thread pointer (`numa.rs`'s read of `fs:0`).
    pub(super) fn thread_pointer() -> *mut u8 {
        crate::numa::thread_pointer().cast_mut()
    }

    /// Reads the `u32` at `fs:[off]`: a field of the calling thread's area.
    #[inline(always)]
    pub(super) fn read_field(off: isize) -> u32 {
        let v: u32;
        // SAFETY: `off` is the offset of a field of this thread's area (static TLS), which
        // the kernel rewrites between instructions: the load is not `pure`.
        unsafe {
            asm!(
                "mov {v:e}, dword ptr fs:[{o}]",
                o = in(reg) off,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags),
            );
        }
        v
    }

    /// The start of both sequences: stores the descriptor (29) into `rseq_cs` (20, where an
    /// abort restarts), then from `start_ip` (21) reads the index, finds its slab at
    /// `base + (index << SLAB_SHIFT)` (into `slab`; `test_header` goes on). The offsets of
    /// the area's fields and the region's base are read from their static (`sym`),
    /// rip-relative, so the sequence needs few registers and no GOT load; the base's load
    /// (folded into the `add`) depends on nothing, so the chain before the header is the
    /// offset's load and the index's. The index of a registered thread is below
    /// [`super::SLAB_TABLE_LEN`] (the callers' contract: the kernel keeps `cpu_id` and
    /// `mm_cid` below the possible CPUs, which the caller checked against it), and the slab
    /// of every index in the region is readable and writable (headers that refuse until it
    /// is made), so there is no test for either. The header is addressed as
    /// `slab + 8 * stack`: the caller's stack index needs no scaling of its own.
    macro_rules! enter_slab {
        () => {
            concat!(
                "20:\n",
                "mov {idx}, qword ptr [rip + {tpoff}]\n",
                "lea {slab}, [rip + 29f]\n",
                "mov qword ptr fs:[{idx}], {slab}\n",
                "21:\n",
                "mov {slab}, qword ptr [rip + {tpoff} + 8]\n",
                "mov {slab:e}, dword ptr fs:[{slab}]\n",
                "shl {slab}, {shift}\n",
                "add {slab}, qword ptr [rip + {tpoff} + 16]\n",
            )
        };
    }

    /// The header's test of both sequences, after `enter_slab`: loads the count into `cur`
    /// and refuses (jumps to 27) when `$refuse` against the bound at `$bound` (4: `begin`,
    /// `jbe`: the count at or below it; 6: `end`, `jae`: at or above it). The count is
    /// loaded before the bound: a sequence may read a count from before a whole drain and
    /// the bounds from after its unlock only if it ran across the drain's second
    /// `membarrier_rseq`, which restarts it ([`super::LOCKED_BOUNDS`]).
    macro_rules! test_header {
        ($bound:literal, $refuse:literal) => {
            concat!(
                "mov {cur:e}, dword ptr [{slab} + {stack} * 8]\n",
                "cmp {cur:x}, word ptr [{slab} + {stack} * 8 + ",
                $bound,
                "]\n",
                $refuse,
                " 27f\n",
            )
        };
    }

    /// The end of both sequences, out of line: the abort handler (23), preceded by the
    /// signature as `ud1`'s operand, restarting from 20; the refusal (27: `$refuse`, which
    /// leaves the asm block); the descriptor (29: version 0, flags 0, `start_ip` 21,
    /// `post_commit_offset` up to 22, `abort_ip` 23).
    macro_rules! leave_slab {
        ($refuse:literal) => {
            concat!(
                ".pushsection __rseq_failure, \"ax\"\n",
                ".byte 0x0f, 0xb9, 0x3d\n",
                ".long 0x53053053\n",
                "23:\n",
                "jmp 20b\n",
                "27:\n",
                $refuse,
                "\n",
                ".popsection\n",
                ".pushsection __rseq_cs, \"aw\"\n",
                ".balign 32\n",
                "29:\n",
                ".long 0, 0\n",
                ".quad 21b, 22b - 21b, 23b\n",
                ".popsection\n",
            )
        };
    }

    /// The pop sequence, `$check` (asm text that may refuse, jumping to 27, once the item is
    /// in `out`; it may use `idx`, whose index the sequence no longer needs by then) run
    /// before the commit; `$operand`s are its extra inputs. Evaluates to the item, or null.
    macro_rules! pop_sequence {
        ($stack:expr, $check:expr $(, $operand:ident = in(reg) $value:expr)*) => {{
            let out: *mut u8;
            asm!(
                enter_slab!(),
                test_header!("4", "jbe"),
                "mov {out}, qword ptr [{slab} + {cur} * 8 - 8]",
                $check,
                "dec dword ptr [{slab} + {stack} * 8]",
                "22:",
                leave_slab!("xor {out:e}, {out:e}\njmp 22b"),
                idx = out(reg) _,
                slab = out(reg) _,
                cur = out(reg) _,
                out = out(reg) out,
                stack = in(reg) $stack,
                $($operand = in(reg) $value,)*
                tpoff = sym super::TPOFF,
                shift = const super::SLAB_SHIFT,
                options(nostack),
            );
            out
        }};
    }

    /// Pops the top of stack `stack` in the slab of the calling thread's index; null when
    /// the stack is empty (or refuses).
    ///
    /// # Safety
    /// As [`super::slab_pop`].
    #[inline(always)]
    pub(super) unsafe fn pop(stack: usize) -> *mut u8 {
        // SAFETY: the caller's contract (the slab layout, the registration); the sequence
        // follows the kernel contract in the module comment: the store to `rseq_cs` is the
        // last instruction before `start_ip` (21), the commit (the `dec` of the count in
        // memory: one instruction, one fewer than a `dec` of `cur` and its store; nothing
        // else writes the count while the sequence can commit, so it stores what that store
        // did) the last of the range, the abort handler (23) is preceded by the signature and
        // restarts from the store to `rseq_cs` (20), which the kernel cleared. Every
        // output is an `out` (not `lateout`) register, so no input is overwritten before a
        // restart reads it again.
        unsafe { pop_sequence!(stack, "") }
    }

    /// `pop`, refusing also when the top item's first word is not `item ^ tag`, the tag at
    /// `TPOFF + 24`.
    ///
    /// # Safety
    /// As [`super::slab_pop_tagged`].
    #[inline(always)]
    pub(super) unsafe fn pop_tagged(stack: usize) -> *mut u8 {
        // SAFETY: as `pop`; the item's first word is read before the commit (the caller's
        // contract makes every stacked item readable).
        unsafe {
            pop_sequence!(
                stack,
                "mov {idx}, qword ptr [{out}]\nxor {idx}, {out}\n\
                 cmp {idx}, qword ptr [rip + {tpoff} + 24]\njne 27f"
            )
        }
    }

    /// Pushes `item` onto stack `stack` in the slab of the calling thread's index; false
    /// when the stack is full (or refuses).
    ///
    /// # Safety
    /// As [`super::slab_push`].
    #[inline(always)]
    pub(super) unsafe fn push(stack: usize, item: *mut u8) -> bool {
        // SAFETY: as `pop`. The slot store before the commit is speculative: a slot above
        // the committed count belongs to no one, so an aborted push leaves nothing behind.
        // A refusal jumps straight to the `full` label (asm goto): no flag to return and
        // test on the path that pushed.
        unsafe {
            asm!(
                enter_slab!(),
                test_header!("6", "jae"),
                "mov qword ptr [{slab} + {cur} * 8], {item}",
                "inc dword ptr [{slab} + {stack} * 8]",
                "22:",
                leave_slab!("jmp {full}"),
                idx = out(reg) _,
                slab = out(reg) _,
                cur = out(reg) _,
                stack = in(reg) stack,
                item = in(reg) item,
                tpoff = sym super::TPOFF,
                shift = const super::SLAB_SHIFT,
                full = label { return false; },
                options(nostack),
            );
        }
        true
    }

    /// The batched sequences, after `enter_slab`: `$measure` loads the count into `cur`
    /// (first, before the bound, as `test_header` does: the drain's second fence covers a
    /// sequence that reads them across a drain) and puts into `n` how many items the stack
    /// can take or give, refusing (27) when none; `n` is cut to `len`; `$before` sets `cur`
    /// to the first slot the copy touches; the copy moves `n` pointers from `[$from + 8 j]` to
    /// `[$to + 8 j]` (`idx` is the slot's address, `buf` the caller's array); `$after` sets
    /// `cur` to the new count, whose store is the commit, the last instruction of the range.
    /// A preemption, migration or signal anywhere in the copy restarts the whole sequence
    /// from the store to `rseq_cs` (the abort handler), which reads the id, the count and
    /// the items again. Every output is an `out` register, so no input (`stack`, `buf`,
    /// `len`) is overwritten before a restart reads it again; the copy's label (30) lies
    /// inside the range. Evaluates to `n` (0 on a refusal).
    macro_rules! batch_sequence {
        ($stack:expr, $buf:expr, $len:expr, $measure:expr, $before:expr, $from:literal,
         $to:literal, $after:expr) => {{
            let n: usize;
            asm!(
                enter_slab!(),
                $measure,
                "jbe 27f",
                "cmp {n}, {len}",
                "cmova {n}, {len}",
                $before,
                "lea {idx}, [{slab} + {cur} * 8]",
                "xor {j:e}, {j:e}",
                "30:",
                concat!("mov {tmp}, qword ptr [", $from, " + {j} * 8]"),
                concat!("mov qword ptr [", $to, " + {j} * 8], {tmp}"),
                "inc {j}",
                "cmp {j}, {n}",
                "jb 30b",
                $after,
                "mov dword ptr [{slab} + {stack} * 8], {cur:e}",
                "22:",
                leave_slab!("xor {n:e}, {n:e}\njmp 22b"),
                idx = out(reg) _,
                slab = out(reg) _,
                cur = out(reg) _,
                j = out(reg) _,
                tmp = out(reg) _,
                n = out(reg) n,
                stack = in(reg) $stack,
                buf = in(reg) $buf,
                len = in(reg) $len,
                tpoff = sym super::TPOFF,
                shift = const super::SLAB_SHIFT,
                options(nostack),
            );
            n
        }};
    }

    /// Pushes `items[..n]` onto stack `stack` in one sequence (`batch_sequence`), `n` the
    /// room left below `end` or `len`, whichever is less; 0 when the stack refuses (full,
    /// locked, not made). The items are copied into the slots above the count: speculative
    /// stores, since slots above the committed count belong to no one, so an aborted copy
    /// leaves nothing that counts.
    ///
    /// # Safety
    /// As [`super::slab_push_batch`]; `len` is at least 1 and `items` points at `len`
    /// readable pointers.
    #[inline(always)]
    pub(super) unsafe fn push_batch(stack: usize, items: *const *mut u8, len: usize) -> usize {
        // SAFETY: the caller's contract (the slab layout, the registration, `items`); the
        // sequence keeps the kernel contract of the module comment as `push` does: the store
        // to `rseq_cs` is the last instruction before `start_ip` (21), the commit the last of
        // the range (before 22), the abort handler (23, after the signature) restarts from
        // 20; `batch_sequence` says why a restart finds its inputs intact.
        unsafe {
            batch_sequence!(
                stack,
                items,
                len,
                // Room: `end - count`; none (or a locked `end` of 0, or a zero header)
                // refuses.
                "mov {cur:e}, dword ptr [{slab} + {stack} * 8]\n\
                 movzx {n:e}, word ptr [{slab} + {stack} * 8 + 6]\n\
                 sub {n:e}, {cur:e}",
                "",
                "{buf}",
                "{idx}",
                "add {cur:e}, {n:e}"
            )
        }
    }

    /// Pops `n` items off stack `stack` in one sequence (`batch_sequence`) into `out[..n]`
    /// (the old top last), `n` the items above `begin` or `len`, whichever is less; 0 when
    /// the stack refuses (empty, locked, not made). The copy writes only the caller's
    /// buffer, so an aborted one leaves nothing that counts (the restart writes it again).
    ///
    /// # Safety
    /// As [`super::slab_pop_batch`]; `len` is at least 1 and `out` points at `len` writable
    /// pointers that no other thread reads or writes meanwhile.
    #[inline(always)]
    pub(super) unsafe fn pop_batch(stack: usize, out: *mut *mut u8, len: usize) -> usize {
        // SAFETY: as `push_batch`, the kernel contract as there.
        unsafe {
            batch_sequence!(
                stack,
                out,
                len,
                // Held: `count - begin`; none (or a locked `begin` of 65,535, or a zero
                // header) refuses.
                "mov {cur:e}, dword ptr [{slab} + {stack} * 8]\n\
                 movzx {tmp:e}, word ptr [{slab} + {stack} * 8 + 4]\n\
                 mov {n:e}, {cur:e}\n\
                 sub {n:e}, {tmp:e}",
                "sub {cur:e}, {n:e}",
                "{idx}",
                "{buf}",
                ""
            )
        }
    }

    /// Registers the area at `area` for the calling thread.
    pub(super) fn register(area: *mut u8) -> Result<(), super::OsError> {
        // SAFETY: `area` is this thread's own 32-byte, 32-aligned static TLS area, which
        // lives as long as the thread; the kernel writes it only while the thread runs.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rseq,
                area,
                super::ORIG_RSEQ_SIZE,
                0,
                super::RSEQ_SIG,
            )
        };
        super::check(r).map(|_| ())
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn glibc() -> (isize, u32) {
        (0, 0)
    }
    pub(super) fn own_offset() -> isize {
        0
    }
    pub(super) fn thread_pointer() -> *mut u8 {
        core::ptr::null_mut()
    }
    pub(super) fn read_field(_off: isize) -> u32 {
        u32::MAX
    }
    pub(super) unsafe fn pop(_: usize) -> *mut u8 {
        core::ptr::null_mut()
    }
    pub(super) unsafe fn pop_tagged(_: usize) -> *mut u8 {
        core::ptr::null_mut()
    }
    pub(super) unsafe fn push(_: usize, _: *mut u8) -> bool {
        false
    }
    pub(super) unsafe fn push_batch(_: usize, _: *const *mut u8, _: usize) -> usize {
        0
    }
    pub(super) unsafe fn pop_batch(_: usize, _: *mut *mut u8, _: usize) -> usize {
        0
    }
    pub(super) fn register(_: *mut u8) -> Result<(), super::OsError> {
        Err(super::OsError(libc::ENOSYS))
    }
}

const SUPPORTED: bool = cfg!(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
));

/// Decides, once per process, whose registration the threads use and which field indexes
/// per-CPU data; `None` when rseq is unavailable: not x86_64 glibc, or glibc did not
/// register and either `allow_own` is false or registering the calling thread failed.
/// Later calls return the first call's answer (the registration choice is per process).
pub fn init(allow_own: bool) -> Option<Setup> {
    if let Some(setup) = setup() {
        return Some(setup);
    }
    if STATE.load(Ordering::Acquire) == UNAVAILABLE || !SUPPORTED {
        return None;
    }
    let (glibc_off, glibc_size) = imp::glibc();
    // glibc reports the size of the features it uses (20 up to 2.39), but every glibc that
    // registers (2.35+) registers the original 32 bytes at least, so `mm_cid` (bytes
    // 24..28) is in its area, and the kernel writes it into every registered area.
    let (state, base) = if glibc_size != 0 {
        (GLIBC, glibc_off)
    } else if glibc_size == 0 && allow_own {
        let base = imp::own_offset();
        if imp::register(imp::thread_pointer().wrapping_offset(base)).is_err() {
            STATE.store(UNAVAILABLE, Ordering::Release);
            return None;
        }
        (OWN, base)
    } else {
        // glibc did not register and we may not: no area.
        STATE.store(UNAVAILABLE, Ordering::Release);
        return None;
    };
    let field = if crate::numa::rseq_kernel_feature_size() >= MM_CID_END {
        MM_CID
    } else {
        CPU_ID
    };
    TPOFF.cs.store(base + RSEQ_CS, Ordering::Relaxed);
    TPOFF.index.store(base + field, Ordering::Relaxed);
    // Racing first calls compute the same values; the first store of the state wins.
    let _ = STATE.compare_exchange(UNINIT, state, Ordering::Release, Ordering::Relaxed);
    setup()
}

/// [`init`]'s answer, if it gave one.
pub fn setup() -> Option<Setup> {
    let registration = match STATE.load(Ordering::Acquire) {
        GLIBC => Registration::Glibc,
        OWN => Registration::Own,
        _ => return None,
    };
    let index = if TPOFF.index.load(Ordering::Relaxed) - TPOFF.cs.load(Ordering::Relaxed)
        == MM_CID - RSEQ_CS
    {
        IndexField::MmCid
    } else {
        IndexField::CpuId
    };
    Some(Setup {
        registration,
        index,
    })
}

/// Makes sure the calling thread has a registered area (registering ours if [`init`] chose
/// [`Registration::Own`]), and says whether it has one: only then may it run
/// [`slab_pop`] and [`slab_push`]. Cheap after the first call on a thread (one field read).
pub fn register_current_thread() -> bool {
    let Some(setup) = setup() else {
        return false;
    };
    let cpu_off = TPOFF.cs.load(Ordering::Relaxed) - RSEQ_CS + CPU_ID;
    // A negative `cpu_id`: -1 not registered yet, -2 registration failed.
    match imp::read_field(cpu_off) as i32 {
        id if id >= 0 => true,
        -1 if setup.registration == Registration::Own => {
            let area = imp::thread_pointer().wrapping_offset(cpu_off - CPU_ID);
            imp::register(area).is_ok()
        }
        _ => false,
    }
}

/// The calling thread's index (`mm_cid` or `cpu_id`, as [`init`] chose) at this instant;
/// `None` when rseq is not set up. It may change right after the read: a hint only.
#[inline]
pub fn current_index() -> Option<u32> {
    setup()?;
    let v = imp::read_field(TPOFF.index.load(Ordering::Relaxed));
    if (v as i32) < 0 { None } else { Some(v) }
}

/// The calling thread's index without checks, for threads [`register_current_thread`]
/// accepted (for others the value means nothing; reading it is harmless). A hint only, as
/// [`current_index`].
#[inline(always)]
pub fn index_now() -> u32 {
    imp::read_field(TPOFF.index.load(Ordering::Relaxed))
}

/// Indexes the slab region has room for: ids (`cpu_id`, `mm_cid`) are below the number of
/// possible CPUs, which a user of the region checks against this ([`possible_cpus`]).
pub const SLAB_TABLE_LEN: usize = 1024;

/// The slab of index `i` starts `i << SLAB_SHIFT` bytes into the region ([`set_slab_base`]):
/// 256 KiB apart.
pub const SLAB_SHIFT: u32 = 18;

/// Bytes of a stack's header ([`slab_pop`]).
pub const HEADER_BYTES: usize = 8;

/// A header's bounds (`begin` and `end`, the `u32` at `h + 4`) while the stack is locked
/// ([`slab_pop`]): `begin` 65,535 and `end` 0, on which both sequences refuse whatever the
/// count. The sequences' commits store only the count (the `u32` at `h`), so a lock stored
/// while a sequence runs is never overwritten by it: once a
/// [`membarrier_rseq`] has restarted every sequence that read the header before, nothing
/// commits to the stack until its bounds are stored back. The sequences load the count
/// before the bounds, so one could read a count from before the locker's stores and the
/// bounds from after its unlock: a locker that changed the counts calls
/// [`membarrier_rseq`] again between its last store of a count and the unlock, which
/// restarts any sequence that read a count before (one that read the bounds before the
/// unlock found them locked).
pub const LOCKED_BOUNDS: u32 = 0xffff;

/// Sets the base of the slab region the sequences work on: index `i`'s slab starts at
/// `base + (i << SLAB_SHIFT)`. Call it before any thread runs [`slab_pop`] or [`slab_push`],
/// with a region of [`SLAB_TABLE_LEN`] slabs laid out as [`slab_pop`] says (memory never
/// written reads as zero headers, on which both sequences refuse), which stays mapped while
/// any sequence may run.
pub fn set_slab_base(base: *mut u8) {
    TPOFF.base.store(base as usize, Ordering::Release);
}

/// The slab of index `index` ([`set_slab_base`]); null before a base is set.
#[inline]
pub fn slab_of(index: usize) -> *mut u8 {
    let base = TPOFF.base.load(Ordering::Acquire);
    if base == 0 {
        return core::ptr::null_mut();
    }
    (base + (index << SLAB_SHIFT)) as *mut u8
}

/// Pops from a per-CPU slab, as one restartable sequence: with `slab` the slab of the calling
/// thread's index `i` (`mm_cid` or `cpu_id`; `base + (i << SLAB_SHIFT)`, [`set_slab_base`])
/// and `h = slab + 8 * stack` the stack's header (`count: u32` at `h`, `begin: u16` at
/// `h + 4`, `end: u16` at `h + 6`), if `count` (its low 16 bits) is above `begin`, returns
/// the pointer in slot `count - 1` (slot `k` is the `u64` at `slab + 8 * k`) and stores
/// `count - 1`; otherwise returns null and changes nothing. A header whose bounds are
/// [`LOCKED_BOUNDS`], and an all-zero one, refuse both sequences.
///
/// # Safety
/// [`register_current_thread`] returned true on this thread, and its index (`cpu_id` or
/// `mm_cid`, below the possible CPUs) is below [`SLAB_TABLE_LEN`] (the sequences do not
/// test it); a base is set ([`set_slab_base`]); in the slab of every index, the header of
/// `stack` (8 bytes, 8-aligned, a count below 65,536) and, while it does not refuse, slots
/// `begin..end` are readable and writable, and nothing but these sequences (and the batched
/// ones, [`slab_push_batch`] and [`slab_pop_batch`]) writes the count or the slots (from any
/// thread) while the header's bounds are not locked, unless no sequence can commit meanwhile
/// (the bounds locked, then [`membarrier_rseq`]).
#[inline(always)]
pub unsafe fn slab_pop(stack: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { imp::pop(stack) }
}

/// [`slab_pop`], which also refuses (returns null, changes nothing) when the first word of
/// the item it would pop is not `item ^ tag`, `tag` being the process's ([`set_slab_tag`]; 0
/// before it is set): a check of a mark its pusher left there, made before the item leaves
/// the stack, so that a caller whose check fails takes a slower path that pops the item
/// (with [`slab_pop`]) and reports it.
///
/// # Safety
/// As [`slab_pop`], and every item on every slab's stacks is the address of 8 readable,
/// 8-aligned bytes.
#[inline(always)]
pub unsafe fn slab_pop_tagged(stack: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { imp::pop_tagged(stack) }
}

/// Sets the tag [`slab_pop_tagged`] checks marks against, for every thread.
pub fn set_slab_tag(tag: usize) {
    TPOFF.tag.store(tag, Ordering::Relaxed);
}

/// The tag [`set_slab_tag`] set (0 before).
pub fn slab_tag() -> usize {
    TPOFF.tag.load(Ordering::Relaxed)
}

/// Pushes onto a per-CPU slab, as one restartable sequence: with the slab and header as in
/// [`slab_pop`], if the count is below `end`, stores `item` in slot `count`, stores
/// `count + 1` and returns true; otherwise returns false and changes nothing.
///
/// # Safety
/// As [`slab_pop`].
#[inline(always)]
pub unsafe fn slab_push(stack: usize, item: *mut u8) -> bool {
    // SAFETY: the caller's contract.
    unsafe { imp::push(stack, item) }
}

/// Pushes `items` onto a per-CPU slab in one restartable sequence (a refill's batch): with
/// the slab and header as in [`slab_pop`], `n` the smaller of `items.len()` and `end -
/// count`, stores `items[..n]` in slots `count..count + n` (so `items[n - 1]` ends on top)
/// and `count + n`, and returns `n`; 0, changing nothing, when the stack refuses (full,
/// locked, a zero header). The caller keeps `items[n..]`.
///
/// # Safety
/// As [`slab_pop`].
#[inline]
pub unsafe fn slab_push_batch(stack: usize, items: &[*mut u8]) -> usize {
    if items.is_empty() {
        return 0;
    }
    // SAFETY: the caller's contract; `items` holds `len` pointers, at least one.
    unsafe { imp::push_batch(stack, items.as_ptr(), items.len()) }
}

/// Pops up to `out.len()` items off a per-CPU slab in one restartable sequence (a flush's
/// batch): with the slab and header as in [`slab_pop`], `n` the smaller of `out.len()` and
/// `count - begin`, copies slots `count - n..count` into `out[..n]` (the old top into
/// `out[n - 1]`), stores `count - n` and returns `n`; 0, changing nothing on the stack, when
/// it refuses (empty, locked, a zero header). `out[..len]` may be written even then (an
/// aborted copy): only `out[..n]` means anything.
///
/// # Safety
/// As [`slab_pop`].
#[inline]
pub unsafe fn slab_pop_batch(stack: usize, out: &mut [*mut u8]) -> usize {
    if out.is_empty() {
        return 0;
    }
    // SAFETY: the caller's contract; `out` is ours, `len` pointers, at least one.
    unsafe { imp::pop_batch(stack, out.as_mut_ptr(), out.len()) }
}

/// The number of CPUs the kernel may ever bring up (`_SC_NPROCESSORS_CONF`): both `cpu_id`
/// and `mm_cid` stay below it. At least 1.
pub fn possible_cpus() -> usize {
    // SAFETY: `sysconf` has no preconditions; glibc reads sysfs without allocating from the
    // heap for this name.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n < 1 { 1 } else { n as usize }
}

// ---------------------------------------------------------------------------------------
// membarrier(2)
// ---------------------------------------------------------------------------------------

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ`: restart every rseq critical section of this
/// process running on the targeted CPUs (and fence them).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ`: the registration the above needs.
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
/// `MEMBARRIER_CMD_FLAG_CPU`: target one CPU.
const MEMBARRIER_CMD_FLAG_CPU: u32 = 1;

fn membarrier(cmd: i32, flags: u32, cpu: i32) -> Result<(), OsError> {
    // SAFETY: membarrier takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu) };
    check(r).map(|_| ())
}

/// Registers the process for [`membarrier_rseq`] (once per process; idempotent).
///
/// Errors: `EINVAL` (a kernel before 5.10, or membarrier disabled), `ENOSYS`.
pub fn membarrier_register_rseq() -> Result<(), OsError> {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0)
}

/// Aborts every rseq critical section of this process that is running on CPU `cpu` (or on
/// every CPU running one of its threads, for `None`) when the call returns: afterwards, a
/// sequence there that had started before the call restarts, and sees every store made
/// before the call. The way another CPU takes over a per-CPU slab without stopping it.
///
/// Errors: `EPERM` (not registered: [`membarrier_register_rseq`]), `EINVAL` (bad CPU).
pub fn membarrier_rseq(cpu: Option<u32>) -> Result<(), OsError> {
    match cpu {
        Some(cpu) => membarrier(
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
            MEMBARRIER_CMD_FLAG_CPU,
            cpu as i32,
        ),
        None => membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;
    use std::vec::Vec;

    #[test]
    fn index_is_below_possible_cpus() {
        let Some(setup) = init(true) else {
            return;
        };
        // This machine's glibc registers: the tests below then use its area.
        if imp::glibc().1 != 0 {
            assert_eq!(setup.registration, Registration::Glibc);
        }
        assert!(register_current_thread());
        let index = current_index().expect("a registered thread has an index");
        assert!((index as usize) < possible_cpus());
    }

    /// A region of slabs laid out as the sequences expect (stack 0's header at 0, zero: it
    /// refuses; stack 1's at 8: count, begin, end; its slots 2..10), set as the base for
    /// every test of the sequences in this binary (this one alone runs them), then locked
    /// stack by stack.
    #[test]
    fn slab_push_and_pop_follow_the_layout() {
        if init(true).is_none() || !register_current_thread() {
            return;
        }
        let cpus = possible_cpus().min(SLAB_TABLE_LEN);
        let len = SLAB_TABLE_LEN << SLAB_SHIFT;
        let region = crate::mem::reserve(len, crate::mem::page_size())
            .expect("a region")
            .as_ptr();
        let slab = |i: usize| region.wrapping_add(i << SLAB_SHIFT).cast::<u64>();
        let header = |i: usize| slab(i).wrapping_add(1).cast::<u32>();
        for i in 0..cpus {
            // SAFETY: stack 1's header (count, begin, end) lies in word 1 of the slab, inside
            // the fresh region.
            unsafe {
                header(i).write(2);
                header(i).add(1).cast::<u16>().write(2);
                header(i).add(1).cast::<u16>().add(1).write(10);
            }
        }
        set_slab_base(region);
        let count = |i: usize| {
            // SAFETY: inside the region; only this thread writes it.
            unsafe { header(i).read_volatile() }
        };
        let items: Vec<*mut u8> = (1..=8usize).map(|i| (i * 16) as *mut u8).collect();
        // SAFETY: the region's slabs follow the layout; only this test uses it.
        unsafe {
            assert!(slab_pop(1).is_null(), "starts empty");
            for &item in &items {
                // The thread may move between CPUs: each push lands on the slab of the
                // CPU it ran on, and never more than 8 on one.
                assert!(slab_push(1, item));
                assert!(!slab_push(0, item), "stack 0 refuses");
            }
            assert!(slab_pop(0).is_null(), "stack 0 refuses");
            let total: u32 = (0..cpus).map(|i| count(i) - 2).sum();
            assert_eq!(total, 8);
            // Pop until the slab of the CPU the thread is on is empty, then read what the
            // others hold directly.
            let mut popped = Vec::new();
            loop {
                let p = slab_pop(1);
                if p.is_null() {
                    break;
                }
                popped.push(p);
            }
            for i in 0..cpus {
                popped.extend((2..count(i) as usize).map(|k| slab(i).add(k).read() as *mut u8));
            }
            popped.sort();
            assert_eq!(popped, items);
            // Full stacks refuse a push; the slots above `end` stay untouched.
            for i in 0..cpus {
                header(i).write(10);
                slab(i).add(10).write(0);
            }
            assert!(!slab_push(1, items[0]), "a full stack refuses");
            assert!((0..cpus).all(|i| count(i) == 10 && slab(i).add(10).read() == 0));
            // Locked bounds refuse both sequences, whatever the count; unlocked, the stacks
            // work again.
            for i in 0..cpus {
                header(i).write(5);
                header(i).add(1).write(LOCKED_BOUNDS);
            }
            assert!(slab_pop(1).is_null(), "a locked stack refuses a pop");
            assert!(!slab_push(1, items[0]), "a locked stack refuses a push");
            assert!((0..cpus).all(|i| count(i) == 5));
            for i in 0..cpus {
                header(i).add(1).cast::<u16>().write(2);
                header(i).add(1).cast::<u16>().add(1).write(10);
            }
            assert!(slab_push(1, items[0]), "unlocked");
            assert!(!slab_pop(1).is_null(), "unlocked");
        }
        batches_follow_the_layout(cpus, &slab, &header, &items);
        tagged_pops_check_the_mark(cpus, &slab, &header);
        restarts_start_over(cpus, slab, header);
        // Never-written slabs (zero headers) refuse: move the base to a fresh region.
        let fresh = crate::mem::reserve(len, crate::mem::page_size())
            .expect("a region")
            .as_ptr();
        set_slab_base(fresh);
        // SAFETY: every slab of the fresh region reads as zero headers.
        unsafe {
            assert!(!slab_push(1, items[0]));
            assert!(slab_pop(1).is_null());
        }
        set_slab_base(core::ptr::null_mut());
        // SAFETY: ours, no sequence runs on them any more.
        unsafe {
            crate::mem::release(region, len);
            crate::mem::release(fresh, len);
        }
    }

    /// [`slab_push_batch`] and [`slab_pop_batch`] on stack 1 (every slab's header set to
    /// count 2, begin 2, end 10 here): a batch lands whole on one slab (the thread may move
    /// between sequences, not within one that commits), in order, as much of it as there is
    /// room for; a pop takes the top of one slab; locked and zero headers refuse both.
    fn batches_follow_the_layout(
        cpus: usize,
        slab: &impl Fn(usize) -> *mut u64,
        header: &impl Fn(usize) -> *mut u32,
        items: &[*mut u8],
    ) {
        let count = |i: usize| {
            // SAFETY: inside the caller's region; only this thread writes it.
            unsafe { header(i).read_volatile() }
        };
        let many: Vec<*mut u8> = (1..=12usize).map(|i| (i * 256) as *mut u8).collect();
        // SAFETY: the caller's region follows the layout; only this test uses it.
        unsafe {
            for i in 0..cpus {
                header(i).write(2);
            }
            assert_eq!(slab_push_batch(1, &[]), 0);
            // Room for 8 on every slab: the first 8 of 12 go onto one of them, in order.
            assert_eq!(slab_push_batch(1, &many), 8);
            let full: Vec<usize> = (0..cpus).filter(|&i| count(i) == 10).collect();
            assert_eq!(full.len(), 1, "one slab took the batch");
            assert!((0..cpus).all(|i| count(i) == 2 || count(i) == 10));
            let s = full[0];
            let held: Vec<*mut u8> = (2..10).map(|k| slab(s).add(k).read() as *mut u8).collect();
            assert_eq!(held, many[..8]);
            // A pop of up to 3 takes the top of whichever slab the thread is on now: the
            // full one (the last three, old top last) or an empty one (none).
            let mut out = [ptr::null_mut::<u8>(); 3];
            match slab_pop_batch(1, &mut out) {
                3 => {
                    assert_eq!(out[..], many[5..8]);
                    assert_eq!(count(s), 7);
                }
                0 => assert_eq!(count(s), 10),
                n => panic!("popped {n} of 8"),
            }
            // A pop larger than a stack takes what it holds: everything comes back.
            let mut back = Vec::new();
            for i in 0..cpus {
                header(i).write(6);
                for k in 2..6 {
                    slab(i).add(k).write(items[k - 2] as u64);
                }
            }
            let mut out = [ptr::null_mut::<u8>(); 12];
            let n = slab_pop_batch(1, &mut out);
            assert_eq!(n, 4, "every slab holds 4");
            back.extend_from_slice(&out[..n]);
            assert_eq!(back, items[..4]);
            assert_eq!((0..cpus).filter(|&i| count(i) == 2).count(), 1);
            // Locked headers refuse both, whatever the count; so do zero ones.
            for i in 0..cpus {
                header(i).write(5);
                header(i).add(1).write(LOCKED_BOUNDS);
            }
            assert_eq!(slab_push_batch(1, &many), 0, "a locked stack refuses");
            assert_eq!(slab_pop_batch(1, &mut out), 0, "a locked stack refuses");
            assert!((0..cpus).all(|i| count(i) == 5));
            for i in 0..cpus {
                header(i).cast::<u64>().write(0);
            }
            assert_eq!(slab_push_batch(1, &many), 0, "a zero header refuses");
            assert_eq!(slab_pop_batch(1, &mut out), 0, "a zero header refuses");
            for i in 0..cpus {
                header(i).write(2);
                header(i).add(1).cast::<u16>().write(2);
                header(i).add(1).cast::<u16>().add(1).write(10);
            }
        }
    }

    /// [`slab_pop_tagged`] on stack 1: every slab holds the same item in slot 2 (count 3,
    /// begin 2, end 10), so whichever slab the thread is on, a pop finds it. An item whose
    /// first word is `item ^ tag` is popped (one slab's count goes down); one whose first
    /// word is anything else is refused and stays on every slab, as it does under another
    /// tag; a locked header refuses whatever the mark.
    fn tagged_pops_check_the_mark(
        cpus: usize,
        slab: &impl Fn(usize) -> *mut u64,
        header: &impl Fn(usize) -> *mut u32,
    ) {
        let tag = 0x5a5a_0000_1234_5670usize;
        let mut word = [0usize; 1];
        let item = word.as_mut_ptr().cast::<u8>();
        let set = |count: u32, bounds: u32| {
            for i in 0..cpus {
                // SAFETY: stack 1's header and slot 2 in slab `i` of the caller's region; no
                // sequence runs meanwhile.
                unsafe {
                    header(i).write(count);
                    header(i).add(1).write(bounds);
                    slab(i).add(2).write(item as u64);
                }
            }
        };
        let total = || {
            (0..cpus)
                // SAFETY: inside the caller's region; only this thread writes it.
                .map(|i| unsafe { header(i).read_volatile() })
                .sum::<u32>()
        };
        let open = 2 | 10 << 16;
        for bad in [
            0,
            item as usize,
            tag,
            item as usize ^ tag ^ 1,
            !(item as usize ^ tag),
        ] {
            set(3, open);
            // SAFETY: `word` is the item's first word, this thread's; the slabs follow the
            // layout.
            unsafe {
                core::ptr::write_volatile(word.as_mut_ptr(), bad);
                set_slab_tag(tag);
                assert!(
                    slab_pop_tagged(1).is_null(),
                    "a bad mark {bad:#x} is refused"
                );
            }
            assert_eq!(total(), 3 * cpus as u32, "a refused item stays");
        }
        // SAFETY: as above.
        unsafe {
            core::ptr::write_volatile(word.as_mut_ptr(), item as usize ^ tag);
            set_slab_tag(tag ^ 8);
            assert!(slab_pop_tagged(1).is_null(), "another tag refuses");
            assert_eq!(total(), 3 * cpus as u32);
            set_slab_tag(tag);
            set(3, LOCKED_BOUNDS);
            assert!(slab_pop_tagged(1).is_null(), "a locked stack refuses");
            assert_eq!(total(), 3 * cpus as u32);
            set(3, open);
            assert_eq!(slab_pop_tagged(1), item, "the right mark pops");
        }
        assert_eq!(total(), 3 * cpus as u32 - 1, "one slab popped it");
        // Back to the layout the next part expects: count 2, begin 2, end 10.
        set(2, open);
    }

    /// Counts the signals [`restarts_start_over`] receives.
    static DELIVERED: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count_signal(_: libc::c_int) {
        DELIVERED.fetch_add(1, Ordering::Relaxed);
    }

    /// Pushes and pops of unique items on stack 1 (every slab's header set to count 2,
    /// begin 2, end 10), while another thread sends this one signals without pause: every
    /// delivery goes through the kernel's rseq fixup, so a sequence it interrupts inside its
    /// range goes to its abort handler, which must start it over. The bookkeeping reports
    /// an item popped that is not outstanding and, at the end, slabs that do not hold
    /// exactly the outstanding items. It runs until 10,000 signals have arrived, however
    /// long that takes (no time limit, nothing timed). Checked by breaking the abort
    /// handler: resuming past the sequence (`jmp 22b` for `jmp 20b`, so that a pop hands
    /// out an item it never committed) failed 3 runs of 3 here, while the layout test
    /// without this part passed 3 of 3. Its limit: a commit followed inside the range by a
    /// fast instruction is seldom interrupted right there (interrupts land mostly on
    /// instructions waiting for data), and a `nop` after the pop's commit went unnoticed in
    /// 4 runs.
    fn restarts_start_over(
        cpus: usize,
        slab: impl Fn(usize) -> *mut u64,
        header: impl Fn(usize) -> *mut u32,
    ) {
        use core::sync::atomic::AtomicBool;
        for i in 0..cpus {
            // SAFETY: stack 1's header in slab `i` of the test's region (the caller's
            // layout); no sequence runs meanwhile.
            unsafe { header(i).write(2) };
        }
        // The handler stays installed afterwards: a signal still in flight when the test
        // ends then only adds to the count (nothing else in this binary uses `SIGUSR2`,
        // whose default action would end the process).
        let sig = libc::SIGUSR2;
        // SAFETY: the handler only does an atomic add (async-signal-safe).
        unsafe { crate::signal::install_handler(sig, count_signal) }.expect("a handler");
        DELIVERED.store(0, Ordering::Relaxed);
        // SAFETY: no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = AtomicBool::new(false);
        let mut outstanding: Vec<usize> = Vec::new();
        /// Removes `got` (a popped item, 0 for none) from the outstanding ones; an item that
        /// is not outstanding was handed out twice or never pushed.
        fn take_back(outstanding: &mut Vec<usize>, got: usize) {
            if got != 0 {
                let at = outstanding.iter().position(|&x| x == got);
                assert!(at.is_some(), "popped {got:#x}, which is not outstanding");
                outstanding.swap_remove(at.unwrap_or(0));
            }
        }
        /// Stops the sender when the loop ends, by a failed assertion too (the scope
        /// would otherwise wait for the sender for ever).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: `target` is the scope's owner, alive until `stop`.
                    unsafe { libc::pthread_kill(target, sig) };
                }
            });
            let _stop = StopOnDrop(&stop);
            let mut n = 0usize;
            while DELIVERED.load(Ordering::Relaxed) < 10_000 {
                n += 1;
                let item = n * 16;
                // SAFETY: the caller's region follows the layout; items are never
                // dereferenced by the plain sequences.
                if unsafe { slab_push(1, item as *mut u8) } {
                    outstanding.push(item);
                }
                // SAFETY: as above.
                let got = unsafe { slab_pop(1) } as usize;
                take_back(&mut outstanding, got);
                // The batched sequences too: a batch of three unique items, then a pop of
                // up to four (a copy cut short must restart whole, or commit nothing).
                // (Apart from the single items: above bit 40, below the top of user space.)
                let batch = [1, 2, 3].map(|k| ((1 << 40) + (n << 2 | k) * 16) as *mut u8);
                // SAFETY: as above.
                let pushed = unsafe { slab_push_batch(1, &batch) };
                outstanding.extend(batch[..pushed].iter().map(|&p| p as usize));
                let mut out = [ptr::null_mut::<u8>(); 4];
                // SAFETY: as above.
                let popped = unsafe { slab_pop_batch(1, &mut out) };
                for &p in &out[..popped] {
                    take_back(&mut outstanding, p as usize);
                }
            }
        });
        let mut held: Vec<usize> = Vec::new();
        for i in 0..cpus {
            // SAFETY: as above.
            let count = unsafe { header(i).read_volatile() } as usize;
            // SAFETY: slots 2..count of slab `i`, inside the region, written by pushes.
            held.extend((2..count).map(|k| unsafe { slab(i).add(k).read() } as usize));
        }
        held.sort_unstable();
        outstanding.sort_unstable();
        assert_eq!(
            held, outstanding,
            "the slabs hold other items than the pushes left"
        );
    }

    #[test]
    fn membarrier_rseq_registers() {
        if membarrier_register_rseq().is_ok() {
            membarrier_rseq(None).expect("registered");
        }
    }
}
