//! The allocator's half of the multi-node guest: Tessera's per-node heaps place memory on
//! the node of the thread that allocates it, `TESSERA_NUMA=interleave` spreads it, and a
//! side-by-side measurement of Tessera, mimalloc and glibc reports the share of pages each
//! places on the allocating thread's node, and the time it takes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Instant;

use tessera_numa::{NodeId, Topology};

use super::{CheckResult, Ctx, on_node, test_nodes};

/// Set in the environment of a re-executed copy that runs only the interleave census.
pub(crate) const INTERLEAVE_CHILD_ENV: &str = "NUMA_GUEST_INTERLEAVE_CHILD";

/// Sizes of one allocation round: small objects, large spans and a huge block, so every
/// path of the allocator gets memory from its node's heap.
const SIZES: &[(usize, usize)] = &[(64, 20_000), (1_000, 4_000), (100_000, 40), (40 << 20, 1)];

/// Allocates `SIZES` through `alloc`, writes every byte, and returns the blocks and the page
/// addresses they cover.
fn allocate_and_touch(alloc: &dyn GlobalAlloc) -> (Vec<(*mut u8, Layout)>, Vec<*const u8>) {
    let page = 4096;
    let mut blocks = Vec::new();
    let mut pages = Vec::new();
    for &(size, count) in SIZES {
        let layout = Layout::from_size_align(size, 16).unwrap();
        for _ in 0..count {
            // SAFETY: a non-zero layout.
            let p = unsafe { alloc.alloc(layout) };
            assert!(!p.is_null(), "allocation of {size} failed");
            // SAFETY: the block is `size` bytes and ours.
            unsafe { std::ptr::write_bytes(p, 0x5a, size) };
            let first = p as usize / page * page;
            let last = (p as usize + size - 1) / page * page;
            pages.extend((first..=last).step_by(page).map(|a| a as *const u8));
            blocks.push((p, layout));
        }
    }
    pages.sort_unstable();
    pages.dedup();
    (blocks, pages)
}

fn free_all(alloc: &dyn GlobalAlloc, blocks: Vec<(*mut u8, Layout)>) {
    for (p, layout) in blocks {
        // SAFETY: each block came from `alloc` with this layout and is freed once.
        unsafe { alloc.dealloc(p, layout) };
    }
}

/// Pages per node (index = node id) for `pages`.
fn census(pages: &[*const u8]) -> Result<Vec<usize>, String> {
    let mut status = vec![i32::MIN; pages.len()];
    tessera_numa::nodes_of_pages(pages, &mut status).map_err(|e| e.to_string())?;
    let mut counts = vec![0usize; tessera_numa::MAX_NODES];
    for &s in &status {
        if s >= 0 {
            counts[s as usize] += 1;
        }
    }
    Ok(counts)
}

/// One allocator on one node: (pages on that node, pages in all, milliseconds).
fn measure(
    alloc: &(dyn GlobalAlloc + Sync),
    t: &Topology,
    node: NodeId,
) -> Result<(usize, usize, f64), String> {
    on_node(t, node, || {
        let start = Instant::now();
        let (blocks, pages) = allocate_and_touch(alloc);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let counts = census(&pages)?;
        free_all(alloc, blocks);
        Ok((counts[node.index()], pages.len(), ms))
    })
}

/// With the default `TESSERA_NUMA=auto` on a multi-node machine, a thread pinned to each
/// node gets Tessera memory (small, large and huge) on that node.
pub(crate) fn check_tessera_local(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let mut detail = Vec::new();
    let mut ok = true;
    for node in test_nodes(t) {
        let (local, total, _) = measure(&tessera::Tessera, t, node)?;
        // Preferred placement may spill only under memory pressure, which this guest has not.
        ok &= local * 100 >= total * 99;
        detail.push(format!("node{node} {local}/{total} pages local"));
    }
    let stats = tessera::stats();
    detail.push(format!("heaps in use {}", stats.node_count));
    let detail = detail.join(", ");
    if ok && stats.node_count >= 2 {
        Ok(detail)
    } else {
        Err(detail)
    }
}

/// `TESSERA_NUMA=interleave` (read at the first allocation, so in a fresh copy of this
/// program) spreads Tessera's memory over both nodes.
pub(crate) fn check_tessera_interleave(ctx: &Ctx) -> CheckResult {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .env(INTERLEAVE_CHILD_ENV, "1")
        .env("TESSERA_NUMA", "interleave")
        .output()
        .map_err(|e| format!("re-exec: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INTERLEAVE "))
        .ok_or_else(|| format!("child printed no result: {stdout:?}"))?;
    let counts: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    let total: usize = counts.iter().sum();
    let nodes = test_nodes(ctx.topology).len();
    let fair = 100.0 / nodes as f64;
    // With transparent huge pages the kernel interleaves 2 MiB at a time, so allow a wide
    // band around the fair share; what matters is that every node gets a real part.
    let shares: Vec<f64> = counts
        .iter()
        .map(|&c| 100.0 * c as f64 / total.max(1) as f64)
        .collect();
    let ok = counts.len() == nodes && shares.iter().all(|s| (s - fair).abs() <= 20.0);
    let detail = shares
        .iter()
        .enumerate()
        .map(|(i, s)| format!("node{i} {s:.1}%"))
        .collect::<Vec<_>>()
        .join(" / ");
    let detail = format!("{detail} of {total} pages");
    if ok { Ok(detail) } else { Err(detail) }
}

/// The child side of [`check_tessera_interleave`]: allocate, touch, print the census.
pub(crate) fn interleave_child() {
    let t = Topology::get();
    let (blocks, pages) = allocate_and_touch(&tessera::Tessera);
    let counts = census(&pages).unwrap_or_default();
    let per_node: Vec<String> = test_nodes(t)
        .iter()
        .map(|n| counts[n.index()].to_string())
        .collect();
    println!("INTERLEAVE {}", per_node.join(" "));
    free_all(&tessera::Tessera, blocks);
}

/// The placement benchmark (issue: "threads on each node allocate and touch memory, with
/// Tessera, mimalloc and glibc in the same run"): prints, per allocator, the share of pages
/// on the allocating thread's node and the time, median of three rounds per node, with the
/// allocators interleaved round by round. Fails only if a run fails.
pub(crate) fn bench_placement(ctx: &Ctx) -> CheckResult {
    let t = ctx.topology;
    let allocators: [(&str, &(dyn GlobalAlloc + Sync)); 3] = [
        ("tessera", &tessera::Tessera),
        ("mimalloc", &mimalloc::MiMalloc),
        ("glibc", &System),
    ];
    let mut results: Vec<(usize, usize, Vec<f64>)> = vec![(0, 0, Vec::new()); allocators.len()];
    for _round in 0..3 {
        for node in test_nodes(t) {
            for (i, (_, alloc)) in allocators.iter().enumerate() {
                let (local, total, ms) = measure(*alloc, t, node)?;
                results[i].0 += local;
                results[i].1 += total;
                results[i].2.push(ms);
            }
        }
    }
    let mut lines = Vec::new();
    let tessera_ms = median(&mut results[0].2.clone());
    for ((name, _), (local, total, times)) in allocators.iter().zip(results.iter_mut()) {
        let ms = median(times);
        let line = format!(
            "{name}: {:.1}% local, {ms:.1} ms per node-round (x{:.2} of tessera's time)",
            100.0 * *local as f64 / (*total).max(1) as f64,
            ms / tessera_ms
        );
        println!("BENCH {line}");
        lines.push(line);
    }
    Ok(lines.join("; "))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
