//! Typed wrappers over the memory-policy syscalls (mempolicy(7)): bind a range to nodes
//! before first touch (`mbind`), set a thread's default (`set_mempolicy`), ask what a range's
//! policy is or which node a page is on (`get_mempolicy`, `move_pages`). Errors come back as
//! values carrying the errno; nothing allocates or panics.
//!
//! The pointer arguments are addresses the *kernel* looks up; this crate never dereferences
//! them, and these calls never change memory contents (a policy only decides where future
//! pages come from, and page migration preserves contents), so they are safe functions. An
//! address with no mapping is an `EFAULT`/`ENOMEM`/`EINVAL` error, not undefined behaviour.

use core::ffi::{c_int, c_void};
use core::fmt;

use tessera_sys::error::{EINVAL, ENOENT, OsError};
use tessera_sys::numa as sys;

use crate::bitset::NodeMask;
use crate::ids::NodeId;

/// Which kernel interface failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `mbind(2)`.
    Mbind,
    /// `set_mempolicy(2)`.
    SetMempolicy,
    /// `get_mempolicy(2)`.
    GetMempolicy,
    /// `move_pages(2)`.
    MovePages,
    /// `getcpu(2)`.
    Getcpu,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Mbind => "mbind",
            Call::SetMempolicy => "set_mempolicy",
            Call::GetMempolicy => "get_mempolicy",
            Call::MovePages => "move_pages",
            Call::Getcpu => "getcpu",
        }
    }
}

/// An error from this crate's kernel calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumaError {
    /// The syscall failed with `errno` (e.g. `ENOSYS` on a kernel without NUMA, `EINVAL`
    /// for a node that does not exist, `EFAULT` for an unmapped range).
    Os {
        /// The failing call.
        call: Call,
        /// Its errno.
        errno: i32,
    },
    /// The kernel reported a policy mode this crate does not know.
    UnknownMode(i32),
    /// An argument was rejected before any syscall (e.g. slices of different lengths).
    InvalidArgument,
}

impl NumaError {
    pub(crate) fn os(call: Call, e: OsError) -> NumaError {
        NumaError::Os { call, errno: e.0 }
    }

    /// The errno, for [`NumaError::Os`]; `EINVAL` for the other variants.
    pub fn errno(&self) -> i32 {
        match *self {
            NumaError::Os { errno, .. } => errno,
            NumaError::UnknownMode(_) | NumaError::InvalidArgument => EINVAL,
        }
    }
}

impl fmt::Display for NumaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NumaError::Os { call, errno } => write!(f, "{} failed: errno {errno}", call.name()),
            NumaError::UnknownMode(m) => write!(f, "unknown memory policy mode {m}"),
            NumaError::InvalidArgument => f.write_str("invalid argument"),
        }
    }
}

impl core::error::Error for NumaError {}

/// A memory policy (mempolicy(7)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Fall back to the next level: the thread's policy for a range, the system default
    /// (local allocation) for a thread.
    Default,
    /// Only from these nodes; fail (or reclaim/OOM) rather than go elsewhere.
    Bind(NodeMask),
    /// From this node first, others when it is full.
    Preferred(NodeId),
    /// From any of these nodes first (Linux 5.15+).
    PreferredMany(NodeMask),
    /// Round-robin page by page over these nodes.
    Interleave(NodeMask),
    /// Interleave weighted by `/sys/kernel/mm/mempolicy/weighted_interleave` (Linux 6.9+).
    WeightedInterleave(NodeMask),
    /// From the node of the CPU that first touches the page.
    Local,
}

impl Policy {
    /// Calls `f(mode, mask_ptr, mask_words)` with this policy's kernel arguments (a null
    /// mask for the modes that take none).
    fn with_raw<R>(&self, f: impl FnOnce(c_int, *const u64, usize) -> R) -> R {
        let single;
        let (mode, mask) = match self {
            Policy::Default => (sys::MPOL_DEFAULT, None),
            Policy::Bind(m) => (sys::MPOL_BIND, Some(m)),
            Policy::Preferred(n) => {
                single = NodeMask::single(*n);
                (sys::MPOL_PREFERRED, Some(&single))
            }
            Policy::PreferredMany(m) => (sys::MPOL_PREFERRED_MANY, Some(m)),
            Policy::Interleave(m) => (sys::MPOL_INTERLEAVE, Some(m)),
            Policy::WeightedInterleave(m) => (sys::MPOL_WEIGHTED_INTERLEAVE, Some(m)),
            Policy::Local => (sys::MPOL_LOCAL, None),
        };
        match mask {
            Some(m) => f(mode, m.as_words().as_ptr(), m.as_words().len()),
            None => f(mode, core::ptr::null(), 0),
        }
    }

    /// Builds a policy from what `get_mempolicy` reported.
    fn from_raw(mode: c_int, mask: NodeMask) -> Result<Policy, NumaError> {
        Ok(match mode & !sys::MPOL_MODE_FLAGS {
            sys::MPOL_DEFAULT => Policy::Default,
            sys::MPOL_BIND => Policy::Bind(mask),
            // An empty preferred mask is how older kernels express local allocation.
            sys::MPOL_PREFERRED => match mask.first() {
                Some(n) => Policy::Preferred(n),
                None => Policy::Local,
            },
            sys::MPOL_PREFERRED_MANY => Policy::PreferredMany(mask),
            sys::MPOL_INTERLEAVE => Policy::Interleave(mask),
            sys::MPOL_WEIGHTED_INTERLEAVE => Policy::WeightedInterleave(mask),
            sys::MPOL_LOCAL => Policy::Local,
            _ => return Err(NumaError::UnknownMode(mode)),
        })
    }
}

/// Flags for [`mbind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MbindFlags(u32);

impl MbindFlags {
    /// Only set the policy for pages not yet faulted in.
    pub const NONE: MbindFlags = MbindFlags(0);
    /// Fail with `EIO` if pages already present do not follow the policy (with `MOVE`: if
    /// they could not be moved).
    pub const STRICT: MbindFlags = MbindFlags(sys::MPOL_MF_STRICT);
    /// Migrate pages already present (only those used by this process alone).
    pub const MOVE: MbindFlags = MbindFlags(sys::MPOL_MF_MOVE);
    /// Migrate even shared pages (needs `CAP_SYS_NICE`).
    pub const MOVE_ALL: MbindFlags = MbindFlags(sys::MPOL_MF_MOVE_ALL);

    /// The raw flag bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl core::ops::BitOr for MbindFlags {
    type Output = MbindFlags;

    fn bitor(self, rhs: MbindFlags) -> MbindFlags {
        MbindFlags(self.0 | rhs.0)
    }
}

/// Sets the policy of the pages `addr..addr + len` (`mbind(2)`). `addr` must be page-aligned
/// and the range mapped; call it before the first touch, or pass [`MbindFlags::MOVE`].
pub fn mbind(
    addr: *mut u8,
    len: usize,
    policy: &Policy,
    flags: MbindFlags,
) -> Result<(), NumaError> {
    policy.with_raw(|mode, mask, words| {
        // SAFETY: `mask` is null or points into `policy`'s (or `with_raw`'s) `NodeMask`, which
        // outlives this call and has exactly `words` words. The kernel validates `addr`.
        unsafe { sys::mbind(addr.cast::<c_void>(), len, mode, mask, words, flags.bits()) }
            .map_err(|e| NumaError::os(Call::Mbind, e))
    })
}

/// Sets the calling thread's default policy (`set_mempolicy(2)`). [`Policy::Default`]
/// restores the system default.
pub fn set_mempolicy(policy: &Policy) -> Result<(), NumaError> {
    policy.with_raw(|mode, mask, words| {
        // SAFETY: as in `mbind`, `mask` is null or a live `NodeMask` of `words` words.
        unsafe { sys::set_mempolicy(mode, mask, words) }
            .map_err(|e| NumaError::os(Call::SetMempolicy, e))
    })
}

/// The calling thread's policy (`get_mempolicy(2)` without flags).
pub fn thread_policy() -> Result<Policy, NumaError> {
    let mut mask = NodeMask::EMPTY;
    let words = mask.as_words().len();
    // SAFETY: `mask` has `words` writable words; no address is passed.
    let mode =
        unsafe { sys::get_mempolicy(mask.words_mut().as_mut_ptr(), words, core::ptr::null(), 0) }
            .map_err(|e| NumaError::os(Call::GetMempolicy, e))?;
    Policy::from_raw(mode, mask)
}

/// The policy of the mapping that contains `addr` (`get_mempolicy(MPOL_F_ADDR)`):
/// [`Policy::Default`] when the range has none of its own.
pub fn policy_of(addr: *const u8) -> Result<Policy, NumaError> {
    let mut mask = NodeMask::EMPTY;
    let words = mask.as_words().len();
    // SAFETY: `mask` has `words` writable words; the kernel looks `addr` up itself.
    let mode = unsafe {
        sys::get_mempolicy(
            mask.words_mut().as_mut_ptr(),
            words,
            addr.cast::<c_void>(),
            sys::MPOL_F_ADDR,
        )
    }
    .map_err(|e| NumaError::os(Call::GetMempolicy, e))?;
    Policy::from_raw(mode, mask)
}

/// The node holding the page at `addr` (`get_mempolicy(MPOL_F_ADDR | MPOL_F_NODE)`).
/// **Faults the page in** if it is not present yet (so it answers for a page that will be
/// placed by the current policy); use [`nodes_of_pages`] to look without touching.
pub fn node_of_address(addr: *const u8) -> Result<NodeId, NumaError> {
    // SAFETY: no mask is passed; the kernel looks `addr` up itself.
    let node = unsafe {
        sys::get_mempolicy(
            core::ptr::null_mut(),
            0,
            addr.cast::<c_void>(),
            sys::MPOL_F_ADDR | sys::MPOL_F_NODE,
        )
    }
    .map_err(|e| NumaError::os(Call::GetMempolicy, e))?;
    Ok(NodeId::new(node as u16))
}

/// The nodes this thread may allocate from (`get_mempolicy(MPOL_F_MEMS_ALLOWED)`): the
/// cpuset's `mems`, which can be narrower than the machine.
pub fn mems_allowed() -> Result<NodeMask, NumaError> {
    let mut mask = NodeMask::EMPTY;
    let words = mask.as_words().len();
    // SAFETY: `mask` has `words` writable words; no address is passed.
    unsafe {
        sys::get_mempolicy(
            mask.words_mut().as_mut_ptr(),
            words,
            core::ptr::null(),
            sys::MPOL_F_MEMS_ALLOWED,
        )
    }
    .map_err(|e| NumaError::os(Call::GetMempolicy, e))?;
    Ok(mask)
}

/// Where each page of `pages` is, without moving or touching anything (`move_pages(2)` with
/// `nodes = NULL`). `status[i]` becomes the node of `pages[i]`, or a negative errno for it
/// (`-ENOENT`: not faulted in yet; `-EFAULT`: not mapped). `pages` and `status` must have
/// the same length.
pub fn nodes_of_pages(pages: &[*const u8], status: &mut [i32]) -> Result<(), NumaError> {
    if pages.len() != status.len() {
        return Err(NumaError::InvalidArgument);
    }
    if pages.is_empty() {
        return Ok(());
    }
    // SAFETY: `pages` and `status` both have `pages.len()` elements and `status` is writable;
    // `*const u8` has the layout of `void *`; `nodes` is null (query only).
    unsafe {
        sys::move_pages(
            pages.len(),
            pages.as_ptr().cast::<*const c_void>(),
            core::ptr::null(),
            status.as_mut_ptr(),
            0,
        )
    }
    .map_err(|e| NumaError::os(Call::MovePages, e))?;
    Ok(())
}

/// The node of one page, `Ok(None)` when it is not faulted in (see [`nodes_of_pages`]).
pub fn node_of_page(addr: *const u8) -> Result<Option<NodeId>, NumaError> {
    let mut status = [0i32; 1];
    nodes_of_pages(&[addr], &mut status)?;
    match status[0] {
        s if s >= 0 => Ok(Some(NodeId::new(s as u16))),
        s if s == -ENOENT => Ok(None),
        s => Err(NumaError::os(Call::MovePages, OsError(-s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_error_is_an_error_without_a_source() {
        // An errno is not an error value of its own: nothing to chain to.
        for e in [
            NumaError::os(Call::Mbind, OsError(EINVAL)),
            NumaError::UnknownMode(99),
            NumaError::InvalidArgument,
        ] {
            let e: &dyn core::error::Error = &e;
            assert!(e.source().is_none());
        }
    }

    #[test]
    fn mode_round_trip() {
        let mut m = NodeMask::single(NodeId::new(0));
        m.insert(NodeId::new(3));
        for p in [
            Policy::Default,
            Policy::Bind(m),
            Policy::Preferred(NodeId::new(3)),
            Policy::PreferredMany(m),
            Policy::Interleave(m),
            Policy::WeightedInterleave(m),
            Policy::Local,
        ] {
            let (mode, mask) = p.with_raw(|mode, ptr, words| {
                let mut out = NodeMask::EMPTY;
                if !ptr.is_null() {
                    // SAFETY: `with_raw` hands out a pointer to `words` live words.
                    let src = unsafe { core::slice::from_raw_parts(ptr, words) };
                    out.words_mut().copy_from_slice(src);
                }
                (mode, out)
            });
            assert_eq!(Policy::from_raw(mode, mask), Ok(p));
        }
    }

    #[test]
    fn kernel_mode_flags_are_ignored_and_unknown_modes_rejected() {
        let m = NodeMask::single(NodeId::new(1));
        assert_eq!(
            Policy::from_raw(sys::MPOL_BIND | (1 << 15), m),
            Ok(Policy::Bind(m))
        );
        assert_eq!(
            Policy::from_raw(sys::MPOL_PREFERRED, NodeMask::EMPTY),
            Ok(Policy::Local)
        );
        assert_eq!(Policy::from_raw(42, m), Err(NumaError::UnknownMode(42)));
    }

    #[test]
    fn errors_carry_errno_and_name_the_call() {
        let e = NumaError::os(Call::Mbind, OsError(EINVAL));
        assert_eq!(e.errno(), EINVAL);
        assert_eq!(std::format!("{e}"), "mbind failed: errno 22");
    }

    #[test]
    fn mismatched_slices_are_rejected_before_the_syscall() {
        let mut status = [0i32; 2];
        assert_eq!(
            nodes_of_pages(&[core::ptr::null()], &mut status),
            Err(NumaError::InvalidArgument)
        );
    }
}
