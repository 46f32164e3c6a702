//! The CPU and node the calling thread is running on, for picking a per-CPU cache or the
//! local node's central lists on refill (ARCHITECTURE.md#numa and #per-processor-caches).
//!
//! Fast path: glibc's rseq registration, which the kernel keeps current on every preemption
//! and migration; reading it is a thread-pointer read plus one or two loads, no syscall.
//! `struct rseq::node_id` is only maintained from Linux 6.3, which announces it through
//! `AT_RSEQ_FEATURE_SIZE`; on older kernels the field stays 0, so there the node comes from
//! the topology's CPU→node map instead. Without a registration (glibc < 2.35 behaviour,
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`, a thread glibc did not create) we make the
//! `getcpu` syscall.
//!
//! The answer can be stale as soon as it is returned (the thread may migrate); callers use
//! it as a hint for locality, never for correctness.

use core::sync::atomic::{AtomicU8, Ordering};

use tessera_sys::numa as sys;

use crate::bitset::{CpuSet, MAX_NODES};
use crate::ids::{CpuId, NodeId};
use crate::topology::Topology;

/// How [`current_cpu`] and [`current_node`] get their answer in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// rseq `cpu_id` and `node_id` (Linux 6.3+, glibc 2.35+).
    RseqCpuAndNode,
    /// rseq `cpu_id`; the node from the topology's CPU→node map.
    RseqCpu,
    /// The `getcpu` syscall.
    Syscall,
}

const UNKNOWN: u8 = 0;
const RSEQ_NODE: u8 = 1;
const RSEQ_CPU: u8 = 2;
const SYSCALL: u8 = 3;

/// The [`CpuSource`] of this process, decided on first use: glibc's registration and the
/// kernel's feature size are fixed for the life of the process.
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

#[inline(always)]
fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != UNKNOWN { m } else { decide_mode() }
}

#[cold]
fn decide_mode() -> u8 {
    let m = mode_for(sys::rseq_registered_size(), sys::rseq_kernel_feature_size());
    // Racing threads compute the same value, so a plain store is enough.
    MODE.store(m, Ordering::Relaxed);
    m
}

/// The `struct rseq` size glibc 2.35–2.39 report in `__rseq_size` (up to `flags`), although
/// they register the original 32-byte area with the kernel (`strace -e rseq` shows 0x20).
const GLIBC_LEGACY_RSEQ_SIZE: u32 = 20;
/// The size of that original area.
const ORIG_RSEQ_AREA: u32 = 32;

/// Picks the source from glibc's `__rseq_size` and the kernel's `AT_RSEQ_FEATURE_SIZE`
/// (0 when the kernel predates 6.3 and does not announce one).
///
/// The fields the kernel maintains are those within both the registered area and the
/// kernel's feature size. glibc before 2.40 reports 20 but registers 32 bytes, so there the
/// area is 32 (the same reading librseq makes of a legacy glibc).
fn mode_for(libc_rseq_size: u32, kernel_feature_size: u32) -> u8 {
    if libc_rseq_size == 0 {
        return SYSCALL;
    }
    let area = if libc_rseq_size == GLIBC_LEGACY_RSEQ_SIZE {
        ORIG_RSEQ_AREA
    } else {
        libc_rseq_size
    };
    if area.min(kernel_feature_size) >= sys::RSEQ_NODE_ID_END {
        RSEQ_NODE
    } else {
        RSEQ_CPU
    }
}

/// Where this process reads the current CPU and node from.
pub fn cpu_source() -> CpuSource {
    match mode() {
        RSEQ_NODE => CpuSource::RseqCpuAndNode,
        RSEQ_CPU => CpuSource::RseqCpu,
        _ => CpuSource::Syscall,
    }
}

/// The CPU the calling thread is running on.
#[inline]
pub fn current_cpu() -> CpuId {
    if mode() != SYSCALL
        && let Some(cpu) = sys::rseq_cpu()
    {
        return CpuId::new(cpu);
    }
    getcpu_or_zero().0
}

/// The NUMA node the calling thread is running on. Always below [`MAX_NODES`] (a larger
/// kernel node number is reported as node 0). It may be a memory-less node: take memory
/// from [`Topology::nearest_memory_node`] of it.
#[inline]
pub fn current_node() -> NodeId {
    current_cpu_and_node().1
}

/// The CPU and node the calling thread is running on, read together.
#[inline]
pub fn current_cpu_and_node() -> (CpuId, NodeId) {
    match mode() {
        RSEQ_NODE => {
            if let Some((cpu, node)) = sys::rseq_cpu_node() {
                return (CpuId::new(cpu), node_id(node));
            }
        }
        RSEQ_CPU => {
            if let Some(cpu) = sys::rseq_cpu() {
                let cpu = CpuId::new(cpu);
                if let Some(node) = Topology::get().node_of_cpu(cpu) {
                    return (cpu, node);
                }
            }
        }
        _ => {}
    }
    getcpu_or_zero()
}

/// The `getcpu` syscall, bypassing rseq: the reference the fast paths are tested against.
pub fn getcpu() -> Result<(CpuId, NodeId), crate::NumaError> {
    sys::getcpu()
        .map(|(c, n)| (CpuId::new(c), node_id(n)))
        .map_err(|errno| crate::NumaError::os(crate::Call::Getcpu, errno))
}

/// The CPUs the calling thread may run on (`sched_getaffinity`; a cgroup cpuset shows up
/// here too). `None` when the kernel has more CPUs than [`MAX_CPUS`](crate::MAX_CPUS) (it
/// then refuses a smaller buffer) or the call fails.
pub fn affinity() -> Option<CpuSet> {
    let mut set = CpuSet::EMPTY;
    sys::sched_getaffinity(set.words_mut()).ok()?;
    Some(set)
}

/// A kernel node number as a [`NodeId`], keeping the promise that every id this crate hands
/// out is below [`MAX_NODES`]: a node past it (a machine with more nodes than we represent,
/// see [`Topology::truncated`]) is reported as node 0, so callers may index arrays with it.
#[inline(always)]
fn node_id(node: u32) -> NodeId {
    if (node as usize) < MAX_NODES {
        NodeId::new(node as u16)
    } else {
        NodeId::ZERO
    }
}

/// `getcpu`, or CPU 0 on node 0 if even that fails (it cannot on Linux 2.6.19+; but this is
/// called from an allocator, which must not panic).
#[cold]
fn getcpu_or_zero() -> (CpuId, NodeId) {
    getcpu().unwrap_or((CpuId::new(0), NodeId::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_only_when_both_glibc_and_the_kernel_cover_it() {
        // No registration (rseq disabled by tunable, or glibc < 2.35).
        assert_eq!(mode_for(0, 28), SYSCALL);
        // glibc 2.35-2.39 (reports 20, registers 32) on Linux 6.3+ and on older kernels.
        assert_eq!(mode_for(20, 28), RSEQ_NODE);
        assert_eq!(mode_for(20, 0), RSEQ_CPU);
        assert_eq!(mode_for(20, 20), RSEQ_CPU);
        // glibc 2.40+ reports what it registered.
        assert_eq!(mode_for(32, 28), RSEQ_NODE);
        assert_eq!(mode_for(24, 32), RSEQ_NODE);
        assert_eq!(mode_for(32, 0), RSEQ_CPU);
    }

    #[test]
    fn node_ids_past_the_limit_become_node_zero() {
        assert_eq!(node_id(3), NodeId::new(3));
        assert_eq!(node_id(MAX_NODES as u32 - 1).index(), MAX_NODES - 1);
        assert_eq!(node_id(MAX_NODES as u32), NodeId::ZERO);
        assert_eq!(node_id(u32::MAX), NodeId::ZERO);
    }
}
