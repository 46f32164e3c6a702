//! The machine's NUMA topology, read once from `/sys/devices/system/node` without allocating
//! (ARCHITECTURE.md#numa): which nodes exist, their CPUs, memory and distances, and the CPU→node
//! map the allocator uses to pick a node's page heap.
//!
//! Everything is fixed-size: nodes are indexed directly by their (possibly sparse) id in an
//! array of [`MAX_NODES`], CPUs by number in arrays of [`MAX_CPUS`]. Odd machines are normal
//! input, not errors:
//!
//! - sparse node ids (nodes 0 and 2): the `distance` row of each node lists the *online*
//!   nodes in increasing id order, so entry `k` belongs to the `k`-th online node, not node `k`;
//! - memory-less nodes (CPUs only) and CPU-less nodes (memory only, e.g. CXL or HBM);
//! - offline CPUs (`/sys/devices/system/cpu/online`) and an affinity mask narrower than the
//!   machine (`sched_getaffinity`, which is also how a cgroup cpuset shows up);
//! - no `/sys` at all (a container or chroot without it): one node 0 with every usable CPU.
//!
//! Anything malformed in a file is treated as if that file were missing.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicI32, Ordering};

use tessera_sys::thread;

use crate::bitset::{CpuSet, MAX_CPUS, MAX_NODES, NodeMask};
use crate::ids::{CpuId, NodeId};
use crate::parse;
use crate::sysfs::{SysFile, SysPath, for_each_dir_entry};

/// The distance the kernel reports from a node to itself (ACPI SLIT convention).
pub const LOCAL_DISTANCE: u8 = 10;
/// The distance assumed between two different nodes when sysfs does not say.
pub const REMOTE_DISTANCE: u8 = 20;

/// `cpu_node` value for a CPU that belongs to no node we know.
const NO_NODE: u16 = u16::MAX;

/// One NUMA node.
#[derive(Clone, Copy)]
pub struct Node {
    id: NodeId,
    /// The CPUs sysfs lists for the node (`nodeN/cpulist`), online or not.
    cpus: CpuSet,
    /// Distance to each node, indexed by node id; 0 where sysfs did not say.
    distance: [u8; MAX_NODES],
    /// `MemTotal` from `nodeN/meminfo` in KiB; 0 when unknown.
    mem_total_kib: u64,
    has_memory: bool,
}

impl Node {
    const EMPTY: Node = Node {
        id: NodeId::ZERO,
        cpus: CpuSet::EMPTY,
        distance: [0; MAX_NODES],
        mem_total_kib: 0,
        has_memory: false,
    };

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The CPUs sysfs lists for the node, including offline ones and ones outside this
    /// process's affinity mask; see [`Topology::usable_cpus`] for the ones we can run on.
    pub fn cpus(&self) -> &CpuSet {
        &self.cpus
    }

    /// Whether the node has memory (`has_memory`, or a non-zero `MemTotal` when that file is
    /// missing). Memory-less nodes exist: allocate from [`Topology::nearest_memory_node`].
    pub fn has_memory(&self) -> bool {
        self.has_memory
    }

    /// The node's `MemTotal` in KiB, 0 when unknown (e.g. without `/sys`).
    pub fn mem_total_kib(&self) -> u64 {
        self.mem_total_kib
    }

    /// The distance to `to` as sysfs reports it, or `None` when it did not.
    pub fn distance_to(&self, to: NodeId) -> Option<u8> {
        match self.distance.get(to.index()) {
            Some(&d) if d != 0 => Some(d),
            _ => None,
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("cpus", &self.cpus)
            .field("has_memory", &self.has_memory)
            .field("mem_total_kib", &self.mem_total_kib)
            .finish_non_exhaustive()
    }
}

/// Where a [`Topology`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read from `<root>/devices/system/node`.
    Sysfs,
    /// No node directory: one node 0 with all CPUs, as the kernel itself does without NUMA.
    SingleNodeFallback,
}

/// The NUMA topology of the machine (or of a sysfs fixture tree).
///
/// About 16 KiB of plain data; [`Topology::get`] keeps the process-wide one in a static.
#[derive(Clone)]
pub struct Topology {
    nodes: [Node; MAX_NODES],
    present: NodeMask,
    memory_nodes: NodeMask,
    cpu_nodes: NodeMask,
    online_cpus: CpuSet,
    allowed_cpus: CpuSet,
    cpu_node: [u16; MAX_CPUS],
    source: Source,
    truncated: bool,
}

impl Topology {
    const EMPTY: Topology = Topology {
        nodes: [Node::EMPTY; MAX_NODES],
        present: NodeMask::EMPTY,
        memory_nodes: NodeMask::EMPTY,
        cpu_nodes: NodeMask::EMPTY,
        online_cpus: CpuSet::EMPTY,
        allowed_cpus: CpuSet::EMPTY,
        cpu_node: [NO_NODE; MAX_CPUS],
        source: Source::SingleNodeFallback,
        truncated: false,
    };

    /// The process-wide topology of this machine, read from `/sys` on first use.
    ///
    /// Never allocates, never panics. Threads that race the first call wait (yielding) for
    /// the one that reads sysfs, which takes well under a millisecond; if that thread is gone
    /// (a `fork` child of a multi-threaded parent), a waiter reads sysfs itself. The CPU
    /// affinity mask is the one of the thread that read it.
    #[inline]
    pub fn get() -> &'static Topology {
        GLOBAL.get()
    }

    /// Reads the topology under `root` (`b"/sys"` for the machine, a fixture directory in
    /// tests), with this thread's real affinity mask. Returns ~16 KiB by value: call it on a
    /// thread with a normal stack, or use [`Topology::get`].
    pub fn read_from(root: &[u8]) -> Topology {
        let mut t = Topology::EMPTY;
        t.fill(root, None);
        t
    }

    /// Like [`read_from`](Self::read_from), with `allowed` standing in for the affinity mask
    /// (so fixture tests do not depend on the machine they run on).
    pub fn read_with_affinity(root: &[u8], allowed: &CpuSet) -> Topology {
        let mut t = Topology::EMPTY;
        t.fill(root, Some(allowed));
        t
    }

    /// Fills `self` (which must be `EMPTY`) in place.
    fn fill(&mut self, root: &[u8], allowed: Option<&CpuSet>) {
        let mut path = SysPath::new(root);
        path.push(b"/devices/system");
        let system = path.mark();

        // Online CPUs; `None` when the file is missing or malformed.
        path.push(b"/cpu/online");
        let online = self.read_cpu_list(&mut path);
        path.truncate(system);

        // Affinity: the caller's stand-in, or the kernel's mask for this thread.
        let allowed = match allowed {
            Some(a) => Some(*a),
            None => crate::cpu::affinity(),
        };

        path.push(b"/node");
        let node_dir = path.mark();
        self.find_nodes(&mut path);
        path.truncate(node_dir);

        if self.present.is_empty() {
            self.fill_single_node(online, allowed);
            return;
        }
        self.source = Source::Sysfs;

        // The online nodes in increasing order give the columns of every distance row.
        let present = self.present;
        let mut from_has_memory = NodeMask::EMPTY;
        path.push(b"/has_memory");
        let has_memory_known = read_node_list(&mut path, &mut from_has_memory, &mut self.truncated);
        path.truncate(node_dir);

        for id in present.iter() {
            path.push(b"/node").push_num(u32::from(id.get()));
            let dir = path.mark();
            let node = &mut self.nodes[id.index()];
            node.id = id;

            path.push(b"/cpulist");
            if let Some(f) = SysFile::open(&mut path) {
                let mut cpus = CpuSet::EMPTY;
                let mut cut = false;
                if parse::list(f, |lo, hi| cut |= !cpus.insert_range(lo, hi)).is_ok() {
                    node.cpus = cpus;
                    self.truncated |= cut;
                }
            }
            path.truncate(dir);

            path.push(b"/meminfo");
            if let Some(f) = SysFile::open(&mut path) {
                node.mem_total_kib = parse::field_after(f, b"MemTotal:").unwrap_or(0);
            }
            path.truncate(dir);

            path.push(b"/distance");
            if let Some(f) = SysFile::open(&mut path) {
                let mut row = [0u8; MAX_NODES];
                let mut cols = present.iter();
                let ok = parse::numbers(f, |d| {
                    if let Some(to) = cols.next() {
                        row[to.index()] = u8::try_from(d).unwrap_or(u8::MAX);
                    }
                });
                if ok.is_ok() {
                    node.distance = row;
                }
            }
            path.truncate(node_dir);

            node.has_memory = if has_memory_known {
                from_has_memory.contains(id)
            } else {
                node.mem_total_kib > 0
            };
        }

        // A node's CPUs in sysfs should be disjoint; if a broken tree lists a CPU twice, the
        // lower node id wins, deterministically.
        for i in (0..MAX_NODES).rev() {
            let id = NodeId::new(i as u16);
            if !present.contains(id) {
                continue;
            }
            for cpu in self.nodes[id.index()].cpus.iter() {
                self.cpu_node[cpu.index()] = id.get();
            }
        }

        let all_cpus = present.iter().fold(CpuSet::EMPTY, |acc, id| {
            acc.union(&self.nodes[id.index()].cpus)
        });
        self.online_cpus = online.unwrap_or(all_cpus);
        self.allowed_cpus = allowed.unwrap_or(self.online_cpus);
        for id in present.iter() {
            let node = &self.nodes[id.index()];
            if node.has_memory {
                self.memory_nodes.insert(id);
            }
            if !node.cpus.intersection(&self.online_cpus).is_empty() {
                self.cpu_nodes.insert(id);
            }
        }
    }

    /// Finds the node ids: `node/online` when readable, else the `nodeN` directories.
    fn find_nodes(&mut self, path: &mut SysPath) {
        let dir = path.mark();
        path.push(b"/online");
        let mut nodes = NodeMask::EMPTY;
        let listed = read_node_list(path, &mut nodes, &mut self.truncated);
        path.truncate(dir);
        if !listed || nodes.is_empty() {
            nodes = NodeMask::EMPTY;
            let truncated = &mut self.truncated;
            for_each_dir_entry(path, |name| {
                if let Some(id) = name.strip_prefix(b"node").and_then(parse::decimal) {
                    if id < MAX_NODES as u64 {
                        nodes.insert(NodeId::new(id as u16));
                    } else {
                        *truncated = true;
                    }
                }
            });
        }
        self.present = nodes;
    }

    /// Reads a CPU list file; `None` when missing or malformed.
    fn read_cpu_list(&mut self, path: &mut SysPath) -> Option<CpuSet> {
        let f = SysFile::open(path)?;
        let mut set = CpuSet::EMPTY;
        let mut cut = false;
        parse::list(f, |lo, hi| cut |= !set.insert_range(lo, hi)).ok()?;
        self.truncated |= cut;
        Some(set)
    }

    /// The topology of a machine without a node directory: node 0 has every CPU and all
    /// the memory.
    fn fill_single_node(&mut self, online: Option<CpuSet>, allowed: Option<CpuSet>) {
        self.source = Source::SingleNodeFallback;
        let online = match (online, allowed) {
            (Some(o), _) => o,
            (None, Some(a)) => a,
            (None, None) => {
                let mut s = CpuSet::EMPTY;
                s.insert(CpuId::new(0));
                s
            }
        };
        self.online_cpus = online;
        self.allowed_cpus = allowed.unwrap_or(online);
        let node = &mut self.nodes[0];
        node.id = NodeId::ZERO;
        node.cpus = online.union(&self.allowed_cpus);
        node.distance[0] = LOCAL_DISTANCE;
        node.has_memory = true;
        for cpu in node.cpus.iter() {
            self.cpu_node[cpu.index()] = 0;
        }
        self.present = NodeMask::single(NodeId::ZERO);
        self.memory_nodes = self.present;
        self.cpu_nodes = self.present;
    }

    // -----------------------------------------------------------------------------------
    // Queries
    // -----------------------------------------------------------------------------------

    /// Where this topology came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Whether sysfs mentioned nodes or CPUs past [`MAX_NODES`]/[`MAX_CPUS`] (they are left
    /// out; CPUs past the limit map to no node).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The number of nodes.
    pub fn node_count(&self) -> usize {
        self.present.count()
    }

    /// Whether there is more than one node with memory: the only case where binding memory
    /// to nodes changes anything (`TESSERA_NUMA=auto`, ARCHITECTURE.md#numa).
    pub fn is_numa(&self) -> bool {
        self.memory_nodes.count() > 1
    }

    /// The ids of all nodes.
    pub fn node_ids(&self) -> NodeMask {
        self.present
    }

    /// The nodes in increasing id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.present.iter().map(move |id| &self.nodes[id.index()])
    }

    /// The node with id `id`, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        if self.present.contains(id) {
            self.nodes.get(id.index())
        } else {
            None
        }
    }

    /// The nodes that have memory.
    pub fn memory_nodes(&self) -> NodeMask {
        self.memory_nodes
    }

    /// The nodes that have at least one online CPU.
    pub fn cpu_nodes(&self) -> NodeMask {
        self.cpu_nodes
    }

    /// The online CPUs.
    pub fn online_cpus(&self) -> &CpuSet {
        &self.online_cpus
    }

    /// The CPUs this process may run on (the affinity mask when the topology was read).
    pub fn allowed_cpus(&self) -> &CpuSet {
        &self.allowed_cpus
    }

    /// The node `cpu` belongs to, or `None` for a CPU no node lists.
    #[inline]
    pub fn node_of_cpu(&self, cpu: CpuId) -> Option<NodeId> {
        match self.cpu_node.get(cpu.index()) {
            Some(&n) if n != NO_NODE => Some(NodeId::new(n)),
            _ => None,
        }
    }

    /// The CPUs of `node` that are online and in the affinity mask: where a thread pinned
    /// to the node can actually run. Empty for an unknown node.
    pub fn usable_cpus(&self, node: NodeId) -> CpuSet {
        match self.node(node) {
            Some(n) => n
                .cpus
                .intersection(&self.online_cpus)
                .intersection(&self.allowed_cpus),
            None => CpuSet::EMPTY,
        }
    }

    /// The distance from `from` to `to`: sysfs's figure, else [`LOCAL_DISTANCE`] for a node
    /// to itself and [`REMOTE_DISTANCE`] between different nodes (the kernel's own default).
    pub fn distance(&self, from: NodeId, to: NodeId) -> u8 {
        match self.node(from).and_then(|n| n.distance_to(to)) {
            Some(d) => d,
            None if from == to => LOCAL_DISTANCE,
            None => REMOTE_DISTANCE,
        }
    }

    /// The node to take memory from for code running on `node`: the node itself when it has
    /// memory, else the closest node with memory (lowest id on a tie). `None` only when no
    /// node has memory.
    pub fn nearest_memory_node(&self, node: NodeId) -> Option<NodeId> {
        if self.memory_nodes.contains(node) {
            return Some(node);
        }
        self.memory_nodes
            .iter()
            .min_by_key(|&m| (self.distance(node, m), m.get()))
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("source", &self.source)
            .field("nodes", &DebugNodes(self))
            .field("online_cpus", &self.online_cpus)
            .field("allowed_cpus", &self.allowed_cpus)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Lists only the present nodes, not all [`MAX_NODES`] slots.
struct DebugNodes<'a>(&'a Topology);

impl fmt::Debug for DebugNodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.nodes()).finish()
    }
}

/// Reads a node list file into `out`; false when missing or malformed (`out` unchanged).
fn read_node_list(path: &mut SysPath, out: &mut NodeMask, truncated: &mut bool) -> bool {
    let Some(f) = SysFile::open(path) else {
        return false;
    };
    let mut m = NodeMask::EMPTY;
    let mut cut = false;
    if parse::list(f, |lo, hi| cut |= !m.insert_range(lo, hi)).is_err() {
        return false;
    }
    *out = m;
    *truncated |= cut;
    true
}

// ---------------------------------------------------------------------------------------
// The process-wide topology
// ---------------------------------------------------------------------------------------

/// `Global::state` before anyone started reading sysfs.
const UNINIT: i32 = 0;
/// `Global::state` once the topology is complete. Any positive value is the thread id of
/// the thread filling it in.
const READY: i32 = -1;
/// How many yields a waiting thread makes between checks that the filler is still alive.
const YIELDS_PER_CHECK: u32 = 64;

/// A topology read once, in place (it is too large to build on a small stack and copy).
///
/// The state holds the *thread id* of the filler rather than a plain "busy" flag, so a
/// waiter can tell a slow filler from a dead one: after `fork` in a multi-threaded process
/// only the forking thread exists in the child, and if another thread was halfway through
/// the fill, a waiter would otherwise spin forever. A waiter that finds the filler gone from
/// the thread group takes the fill over (one CAS from the dead id to its own).
struct Global {
    state: AtomicI32,
    root: &'static [u8],
    topology: UnsafeCell<Topology>,
}

// SAFETY: `topology` is written only by the thread whose id is in `state` (installed by a
// CAS from UNINIT or from a dead thread's id, so at most one live writer), and read only
// after `state` is READY (Release store / Acquire load), after which it is never written.
unsafe impl Sync for Global {}

static GLOBAL: Global = Global::new(b"/sys");

/// A cleared topology for a taken-over fill to start from: a named static, not a copy of
/// `Topology::EMPTY` in anonymous read-only data, so that the preload library's linker
/// script (alloc/preload/hot-text.ld) can keep these 16 KiB, read only on that rare path, out
/// of the read-only data every program reads at start-up.
static EMPTY: Topology = Topology::EMPTY;

impl Global {
    const fn new(root: &'static [u8]) -> Global {
        Global {
            state: AtomicI32::new(UNINIT),
            root,
            topology: UnsafeCell::new(Topology::EMPTY),
        }
    }

    #[inline]
    fn get(&'static self) -> &'static Topology {
        if self.state.load(Ordering::Acquire) != READY {
            self.init();
        }
        // SAFETY: `state` is READY (seen with Acquire above or in `init`), so the writer's
        // fill happened-before this point and nobody writes the topology again.
        unsafe { &*self.topology.get() }
    }

    #[cold]
    fn init(&self) {
        let me = thread::gettid();
        let mut expected = UNINIT;
        let mut spins = 0u32;
        loop {
            match self
                .state
                .compare_exchange(expected, me, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: our id is in `state`, installed by the CAS above from UNINIT or
                    // from a thread that no longer exists, so no other thread writes
                    // `topology` now, and readers wait for READY.
                    let t = unsafe { &mut *self.topology.get() };
                    if expected != UNINIT {
                        // Taking over a half-done fill (rare, so the 16 KiB temporary is fine).
                        t.clone_from(&EMPTY);
                    }
                    t.fill(self.root, None);
                    self.state.store(READY, Ordering::Release);
                    return;
                }
                Err(READY) => return,
                Err(filler) => {
                    thread::yield_now();
                    spins = spins.wrapping_add(1);
                    // Retry the CAS against the filler's id only once it is known dead;
                    // otherwise against UNINIT, which fails while the filler works.
                    expected = if spins.is_multiple_of(YIELDS_PER_CHECK)
                        && !thread::thread_alive(filler)
                    {
                        filler
                    } else {
                        UNINIT
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use tessera_sys::process::{self, Forked};

    fn leak(g: Global) -> &'static Global {
        Box::leak(Box::new(g))
    }

    #[test]
    fn racing_getters_share_one_fill() {
        let g = leak(Global::new(b"/sys"));
        let ptrs: std::vec::Vec<usize> = std::thread::scope(|s| {
            let hs: std::vec::Vec<_> = (0..4)
                .map(|_| s.spawn(|| g.get() as *const Topology as usize))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ptrs.iter().all(|&p| p == ptrs[0]));
        assert_eq!(g.state.load(Ordering::Relaxed), READY);
        assert!(g.get().node_count() >= 1);
    }

    /// The case the takeover exists for: `fork` in a process where another thread is
    /// mid-fill. Here the filler is this test's own thread, which stays alive in the parent
    /// throughout (it waits for the child), while the child, a new thread group, has no
    /// thread with that id. (A thread that was merely joined does not do: the kernel may
    /// still report its id for a moment after `join` returns.)
    #[test]
    fn a_fill_abandoned_across_fork_is_taken_over_by_the_child() {
        let g = leak(Global::new(b"/nonexistent-sys"));
        let filler = thread::gettid();
        g.state.store(filler, Ordering::Relaxed);
        // SAFETY: the child calls only `Global::get`, which neither allocates nor takes a
        // lock (so nothing another thread held at the fork can block it), and then `_exit`.
        let pid = match unsafe { process::fork() }.expect("fork failed") {
            Forked::Parent(pid) => pid,
            Forked::Child => {
                // A hang guard: a child that never takes over dies of SIGALRM instead of
                // leaving the parent waiting for ever.
                process::alarm(60);
                let ok = !thread::thread_alive(filler)
                    && g.get().source() == Source::SingleNodeFallback
                    && g.state.load(Ordering::Relaxed) == READY;
                // Ends the child at once, without unwinding or running the parent's exit
                // handlers.
                process::exit_now(if ok { 0 } else { 1 });
            }
        };
        let code = process::wait(pid).expect("waitpid failed");
        assert_eq!(code, Some(0), "the child did not take the fill over");
        // The same id answers in the parent, where that thread lives.
        assert!(thread::thread_alive(filler));
    }
}
