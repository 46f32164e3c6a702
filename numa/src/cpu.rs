//! The CPU and node the calling thread is running on, for picking a per-CPU cache or the
//! local node's central lists on refill (DESIGN.md, "NUMA" and "Per-processor caches").
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

use crate::ids::{CpuId, NodeId};
use crate::sys;
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
    let registered = sys::rseq_registered_size();
    let m = if registered == 0 {
        SYSCALL
    } else if registered >= sys::RSEQ_NODE_ID_END
        && sys::rseq_kernel_feature_size() >= sys::RSEQ_NODE_ID_END
    {
        RSEQ_NODE
    } else {
        RSEQ_CPU
    };
    // Racing threads compute the same value, so a plain store is enough.
    MODE.store(m, Ordering::Relaxed);
    m
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

/// The NUMA node the calling thread is running on.
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
                return (CpuId::new(cpu), NodeId::new(node as u16));
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
        .map(|(c, n)| (CpuId::new(c), NodeId::new(n as u16)))
        .map_err(|errno| crate::NumaError::os(crate::Call::Getcpu, errno))
}

/// `getcpu`, or CPU 0 on node 0 if even that fails (it cannot on Linux 2.6.19+; but this is
/// called from an allocator, which must not panic).
#[cold]
fn getcpu_or_zero() -> (CpuId, NodeId) {
    getcpu().unwrap_or((CpuId::new(0), NodeId::ZERO))
}
