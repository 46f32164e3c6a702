//! NUMA topology, the current CPU and node, the memory-policy syscalls and the cgroup's
//! limits, read and made without allocating (ARCHITECTURE.md#numa). This crate sits at the bottom
//! of the dependency graph (`numa ← span ← alloc`) and is called from inside the allocator, so it
//! is `no_std`: fixed-size arrays and bitsets, raw `open`/`read` into stack buffers, no panics on
//! bad input, errors as values. libnuma is not used (it calls `malloc`).
//!
//! - [`topology`]: [`Topology`] from `/sys/devices/system/node` (or a fixture tree).
//! - [`cpu`]: [`current_cpu`] / [`current_node`] from glibc's rseq area or `getcpu`;
//!   [`affinity`], the CPUs this thread may run on.
//! - [`policy`]: [`mbind`], [`set_mempolicy`], [`policy_of`], [`node_of_address`],
//!   [`nodes_of_pages`] over the memory-policy syscalls (`tessera_sys::numa`).
//! - [`cgroup`]: [`Limits`], the memory and CPU limits of this process's cgroup (v1 or v2)
//!   or of a fixture tree, for the allocator's default soft limit and the scheduler's Ps.
//! - [`bitset`]: [`CpuSet`] and [`NodeMask`]; [`ids`]: [`CpuId`] and [`NodeId`].
//!
//! Linux, 64-bit only (node masks are arrays of `u64` standing for the kernel's
//! `unsigned long`). The rseq fast path needs glibc 2.35+ on x86_64 or aarch64.

#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("tessera-numa supports 64-bit Linux only");

pub mod bitset;
pub mod cgroup;
pub mod cpu;
pub mod ids;
mod parse;
pub mod policy;
mod sysfs;
pub mod topology;

pub use bitset::{CpuSet, MAX_CPUS, MAX_NODES, NodeMask};
pub use cgroup::{CpuQuota, Limits};
pub use cpu::{
    CpuSource, affinity, cpu_source, current_cpu, current_cpu_and_node, current_node, getcpu,
};
pub use ids::{CpuId, NodeId};
pub use policy::{
    Call, MbindFlags, NumaError, Policy, mbind, mems_allowed, node_of_address, node_of_page,
    nodes_of_pages, policy_of, set_mempolicy, thread_policy,
};
pub use topology::{LOCAL_DISTANCE, Node, REMOTE_DISTANCE, Source, Topology};
