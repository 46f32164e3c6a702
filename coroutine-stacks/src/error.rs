//! What can go wrong when asking for a stack, and the message that says what to do about it.
//!
//! The interesting case is running out of memory mappings: every `mprotect` guard costs two
//! VMAs, and at `vm.max_map_count` the kernel answers `ENOMEM`. That error must name the
//! limit, the count in use and the sysctl to raise, so the user can act without a debugger.

use std::fmt;
use std::io::Read;

use tessera_sys::error::OsError;

use crate::class::MAX_STACK_SIZE;

/// Why a stack could not be handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The requested usable size is above the largest class.
    TooLarge {
        /// Bytes asked for.
        requested: usize,
    },
    /// The kernel refused a mapping or a guard while the process is at its VMA limit.
    OutOfMappings {
        /// Lines of `/proc/self/maps` when the refusal happened.
        in_use: usize,
        /// `vm.max_map_count`.
        limit: usize,
    },
    /// `TESSERA_STACK_GUARD=madvise` was asked for, but the kernel lacks `MADV_GUARD_INSTALL`.
    GuardUnsupported,
    /// Every slot of the lock-free slab registry is taken (see `registry.rs`).
    RegistryFull,
    /// Any other OS failure, with its errno.
    Os(OsError),
}

/// How close to `vm.max_map_count` an `ENOMEM` must come to be blamed on the map count: a
/// guard split needs up to two VMAs, and other threads may be mapping at the same time.
const MAP_COUNT_SLACK: usize = 64;

impl StackError {
    /// Classifies a failed OS call made while creating a stack.
    pub(crate) fn from_os(err: OsError) -> Self {
        if err.is_out_of_memory()
            && let (Some(in_use), Some(limit)) = (process_vma_count(), max_map_count())
            && in_use + MAP_COUNT_SLACK >= limit
        {
            return Self::OutOfMappings { in_use, limit };
        }
        Self::Os(err)
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { requested } => write!(
                f,
                "stack of {requested} bytes requested; the largest stack is {} KiB \
                 (use tessera_stacks::maybe_grow for deeper recursion)",
                MAX_STACK_SIZE >> 10
            ),
            Self::OutOfMappings { in_use, limit } => write!(
                f,
                "out of memory mappings: the process uses {in_use} of vm.max_map_count = {limit}; \
                 raise the limit (sysctl -w vm.max_map_count={}) or use a kernel with \
                 MADV_GUARD_INSTALL (Linux 6.13+) and TESSERA_STACK_GUARD=auto, \
                 whose guards cost no mapping",
                (limit * 4).max(262_144)
            ),
            Self::GuardUnsupported => f.write_str(
                "TESSERA_STACK_GUARD=madvise, but this kernel has no MADV_GUARD_INSTALL \
                 (Linux 6.13+); use auto or mprotect",
            ),
            Self::RegistryFull => {
                f.write_str("too many stack slabs: the overflow handler's slab registry is full")
            }
            Self::Os(e) => write!(f, "could not create a stack: {e}"),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// Number of memory mappings (VMAs) of this process: the lines of `/proc/self/maps`.
/// Reads through a fixed buffer, so it works even when the process cannot map more memory.
pub fn process_vma_count() -> Option<usize> {
    let mut file = std::fs::File::open("/proc/self/maps").ok()?;
    let mut buf = [0u8; 16 << 10];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// This process's resident set in KiB (`VmRSS` of `/proc/self/status`), for the examples
/// and benches that report memory per stack or per coroutine.
pub fn process_rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `vm.max_map_count`, the kernel's cap on a process's mappings.
pub fn max_map_count() -> Option<usize> {
    let mut file = std::fs::File::open("/proc/sys/vm/max_map_count").ok()?;
    let mut buf = [0u8; 32];
    let n = file.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sys::error::{EINVAL, ENOMEM, EPERM};

    #[test]
    fn map_limit_message_names_limit_count_and_sysctl() {
        let msg = StackError::OutOfMappings {
            in_use: 65_530,
            limit: 65_530,
        }
        .to_string();
        assert!(msg.contains("65530 of vm.max_map_count = 65530"), "{msg}");
        assert!(msg.contains("sysctl -w vm.max_map_count=262144"), "{msg}");
    }

    #[test]
    fn an_os_failure_is_the_source_of_a_stack_error() {
        use std::error::Error;
        let e = StackError::Os(OsError(EPERM));
        let source = e.source().expect("an OS failure has a source");
        assert_eq!(source.downcast_ref::<OsError>(), Some(&OsError(EPERM)));
        assert!(
            StackError::TooLarge { requested: 1 << 30 }
                .source()
                .is_none()
        );
        assert!(StackError::RegistryFull.source().is_none());
    }

    #[test]
    fn plain_enomem_far_from_the_limit_stays_an_os_error() {
        // This test process is nowhere near its map count.
        let e = StackError::from_os(OsError(ENOMEM));
        assert_eq!(e, StackError::Os(OsError(ENOMEM)));
        assert_eq!(
            StackError::from_os(OsError(EINVAL)),
            StackError::Os(OsError(EINVAL))
        );
    }

    #[test]
    fn counts_are_readable() {
        let n = process_vma_count().unwrap();
        assert!(
            n > 5,
            "a running process has more than a handful of mappings, got {n}"
        );
        assert!(max_map_count().unwrap() > 1000);
    }
}
