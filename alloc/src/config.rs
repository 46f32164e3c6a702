//! Configuration from the environment, read in place from `environ`.
//!
//! `std::env::var` returns a `String`, which would allocate from inside the allocator; this
//! reads the process's environment block directly (`tessera_sys::env`) and parses numbers
//! by hand.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TESSERA_PURGE_DELAY_MS` | the decay time: free pages go back to the OS over this long (a smoothstep curve, `tessera_span::heap`); `0` at once, `-1` never | 1000 |
//! | `TESSERA_PURGE` | `dontneed` (RSS drops at once) or `free` (`MADV_FREE`, lazy) | `dontneed` |
//! | `TESSERA_PURGER` | `on`: a background thread returns memory while the program is idle (`purger.rs`); `off`: only the allocator's own calls do | `on` |
//! | `TESSERA_MEMORY_LIMIT` | hard limit on committed memory (bytes, `k`/`m`/`g`): allocations that would cross it return null (`limit.rs`) | none |
//! | `TESSERA_MEMORY_SOFT_LIMIT` | soft limit: over it, free memory goes back at once | 90% of the hard limit, else 90% of the cgroup's memory limit |
//! | `TESSERA_THP` | transparent huge pages for arenas: `auto` (beyond a heap's lean part, `TESSERA_THP_LEAN`: 2 MiB, 16 MiB in libtessera.so; where the kernel's `defrag` mode cannot stall a fault; else no advice), `always`, `never` | `auto` |
//! | `TESSERA_THP_LEAN` | under `auto`, how much of a heap's first arena stays in 4 KiB pages (bytes, `k`/`m`/`g`; whole 2 MiB pages, at most 32 MiB) | `2m`, `16m` in libtessera.so |
//! | `TESSERA_HUGE_THRESHOLD` | size from which a block gets its own mapping (bytes, `k`/`m` suffix) | `32m` |
//! | `TESSERA_GUARDED_SAMPLE_RATE` | about one small allocation in N on its own guarded page, kept inaccessible for a while after its free; overflows and uses after free are reported with stacks (`guarded/`) | off |
//! | `TESSERA_PROF_RATE` | heap profiling: one sample per this many bytes allocated on average (bytes, `k`/`m`/`g`); `0` off (`profile/`) | `512k` |
//! | `TESSERA_PROF_OUT` | write the heap profile (gzipped pprof) to this file at exit, `%p` replaced by the process id | none |
//! | `TESSERA_PROF_SIGNAL` | also write it when this signal arrives (`SIGUSR2`, `USR1`, or a number), from the background thread; needs `TESSERA_PROF_OUT` | none |
//! | `TESSERA_CACHE` | `thread`: a cache per thread; `percpu`: threads outside a scheduler share a cache per CPU (rseq, `percpu/`); `auto`: per-CPU for threads beyond 4 per CPU. Without rseq, `thread` | `auto` |
//! | `TESSERA_RSEQ` | `glibc`: use glibc's rseq registration only, never register our own (for programs that register rseq themselves); `any` | `any` |
//! | `TESSERA_NUMA` | `auto` (local on a machine with several memory nodes, else off), `local`, `interleave`, `off` | `auto` |

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tessera_numa::{NodeId, Topology};
use tessera_span::placement::{self, Placement};
use tessera_span::thp::{self, Thp};
use tessera_sys::mem::PurgeAdvice;
use tessera_sys::{env, fs};

use crate::MAX_NODES;

/// Blocks below this come from the page heap, whose free pages are reused without a page
/// fault until the purge delay passes; blocks above get a mapping of their own, which costs
/// a fresh zero-filled page per page touched but can be resized by `mremap`. At 4 MiB a
/// program that repeatedly grows a buffer to a few MiB paid an `mmap`, a `munmap` and a
/// fault per page every round (the `growth` workload ran at 0.1x of mimalloc); at 32 MiB
/// such buffers stay in the arenas, and only blocks big enough for a copy to dominate get
/// the mapping. It stays below the 64 MiB arena so a large span always fits in one.
const DEFAULT_HUGE_THRESHOLD: usize = 32 << 20;

static HUGE_THRESHOLD: AtomicUsize = AtomicUsize::new(DEFAULT_HUGE_THRESHOLD);

/// Requests of at least this many bytes get a dedicated mapping.
#[inline]
pub(crate) fn huge_threshold() -> usize {
    HUGE_THRESHOLD.load(Ordering::Relaxed)
}

/// Whether allocations follow the calling thread's node (`TESSERA_NUMA=local`, or `auto` on
/// a multi-node machine). Off, every thread uses node 0's heap and nothing reads the CPU.
static LOCAL_NODES: AtomicU8 = AtomicU8::new(0);

/// For each node id, the node whose heap serves it: itself, or for a node without memory
/// the nearest node with memory.
static HOME: [AtomicU8; MAX_NODES] = [const { AtomicU8::new(0) }; MAX_NODES];

/// The heap index for the calling thread: its node's home when NUMA is on, else 0. Cheap
/// (an rseq field read) and called on refills and large allocations, never per object.
#[inline]
pub(crate) fn current_node() -> NodeId {
    if LOCAL_NODES.load(Ordering::Relaxed) == 0 {
        return NodeId::ZERO;
    }
    let node = tessera_numa::current_node().index().min(MAX_NODES - 1);
    NodeId::new(HOME[node].load(Ordering::Relaxed) as u16)
}

fn load_numa() {
    let topology_is_numa = || Topology::get().is_numa();
    let placement = match env::var(b"TESSERA_NUMA") {
        Some(b"off") => Placement::Kernel,
        Some(b"interleave") => Placement::Interleave,
        Some(b"local") => Placement::Local,
        _ if topology_is_numa() => Placement::Local,
        _ => Placement::Kernel,
    };
    if placement == Placement::Local {
        let topology = Topology::get();
        for (id, home) in HOME.iter().enumerate() {
            let node = NodeId::new(id as u16);
            let target = topology.nearest_memory_node(node).unwrap_or(NodeId::ZERO);
            home.store(target.index().min(MAX_NODES - 1) as u8, Ordering::Relaxed);
        }
        LOCAL_NODES.store(1, Ordering::Release);
    }
    placement::configure(placement);
}

/// Parses a decimal number with an optional `k`, `m` or `g` suffix (powers of 1024).
pub(crate) fn parse_size(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    value.checked_mul(1 << shift)
}

/// Reads every variable and applies it. Called once, early in the first allocation.
pub(crate) fn load() {
    let default_decay = tessera_span::heap::DEFAULT_DECAY_MS;
    let decay = match env::var(b"TESSERA_PURGE_DELAY_MS") {
        Some(b"-1") | Some(b"never") => u64::MAX,
        Some(text) => parse_size(text).unwrap_or(default_decay),
        None => default_decay,
    };
    let advice = match env::var(b"TESSERA_PURGE") {
        Some(b"free") => PurgeAdvice::Free,
        _ => PurgeAdvice::DontNeed,
    };
    tessera_span::heap::configure_purge(decay, advice);
    if !matches!(env::var(b"TESSERA_PURGER"), Some(b"off") | Some(b"0")) {
        crate::purger::enable();
    }
    load_thp();
    load_limits();
    load_cache_mode();
    load_numa();
    match env::var(b"TESSERA_GUARDED_SAMPLE_RATE").and_then(parse_size) {
        Some(rate) if rate > 0 => {
            crate::guarded::enable(usize::try_from(rate).unwrap_or(usize::MAX))
        }
        _ => {}
    }
    if let Some(text) = env::var(b"TESSERA_PROF_RATE") {
        // A value that does not parse leaves the default rather than turning profiling off.
        if let Some(rate) = parse_size(text) {
            crate::profile::set_rate(usize::try_from(rate).unwrap_or(usize::MAX));
        }
    }
    crate::profile::configure_output(
        env::var(b"TESSERA_PROF_OUT"),
        env::var(b"TESSERA_PROF_SIGNAL"),
    );
    if let Some(size) = env::var(b"TESSERA_HUGE_THRESHOLD").and_then(parse_size) {
        // Below the largest small class the threshold would be meaningless.
        let size = (size as usize).max(crate::size_class::MAX_SMALL + 1);
        HUGE_THRESHOLD.store(size, Ordering::Relaxed);
    }
}

fn load_cache_mode() {
    use crate::percpu::Mode;
    let mode = match env::var(b"TESSERA_CACHE") {
        Some(b"percpu") => Mode::PerCpu,
        Some(b"thread") => Mode::Thread,
        _ => Mode::Auto,
    };
    let allow_own = !matches!(env::var(b"TESSERA_RSEQ"), Some(b"glibc"));
    crate::percpu::configure(mode, allow_own);
}

fn load_thp() {
    let thp = match env::var(b"TESSERA_THP") {
        Some(b"always") => Thp::Always,
        Some(b"never") => Thp::Never,
        _ => Thp::Auto,
    };
    // "always [madvise] never": the bracketed word is the mode in force.
    let mut buf = [0u8; 128];
    let text = fs::read_small_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut buf);
    let system_always = text.starts_with(b"[always]");
    // "always defer defer+madvise [madvise] never": with `defer` or `never`, a fault in
    // advised memory takes a huge page only if one is free, and never compacts.
    let text = fs::read_small_file(c"/sys/kernel/mm/transparent_hugepage/defrag", &mut buf);
    let stall_free = contains(text, b"[defer]") || contains(text, b"[never]");
    // The lean part: the product's default (see `thp::C_LIBRARY_LEAN_BYTES`), or the size
    // the variable gives.
    let default_lean = if cfg!(feature = "c-library") {
        thp::C_LIBRARY_LEAN_BYTES
    } else {
        thp::DEFAULT_LEAN_BYTES
    };
    let lean = env::var(b"TESSERA_THP_LEAN")
        .and_then(parse_size)
        .map_or(default_lean, |v| usize::try_from(v).unwrap_or(usize::MAX));
    thp::configure_thp(thp, system_always, !stall_free, lean);
}

fn load_limits() {
    let hard = env::var(b"TESSERA_MEMORY_LIMIT").and_then(parse_size);
    let soft = env::var(b"TESSERA_MEMORY_SOFT_LIMIT").and_then(parse_size);
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    if let Some(hard) = hard {
        crate::limit::set_memory_limit(Some(size(hard)));
    }
    if let Some(soft) = soft {
        crate::limit::set_soft_memory_limit(Some(size(soft)));
    } else if hard.is_none() {
        // In a container: return memory eagerly before the cgroup's limit is near, so the
        // kernel's reclaim (or its OOM killer) does not find our free pages first.
        if let Some(limit) = tessera_numa::cgroup::Limits::read().memory_limit() {
            let soft = size(limit) / 100 * crate::limit::SOFT_SHARE_PERCENT;
            crate::limit::set_soft_memory_limit(Some(soft));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(all(test, not(tessera_loom)))]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size(b"100"), Some(100));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"m"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
    }
}
