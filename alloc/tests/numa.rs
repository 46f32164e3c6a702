//! NUMA placement on this machine: with `TESSERA_NUMA=local` arena pages carry a preferred
//! policy for the allocating thread's node and sit on it (`get_mempolicy(MPOL_F_ADDR)` and
//! `move_pages`); with `interleave` they carry the interleave policy over every memory node;
//! with `auto` on a one-node machine nothing is bound at all. Each mode runs in a child
//! process, since the mode is read once at the first allocation.

use std::process::Command;

use tessera_numa::{NodeId, Policy, Topology};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

fn run_child(test: &str, numa: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("TESSERA_NUMA", numa)
        .env("TESSERA_NUMA_TEST_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child with TESSERA_NUMA={numa} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child must have run {test}: {stdout}"
    );
}

fn in_child() -> bool {
    std::env::var_os("TESSERA_NUMA_TEST_CHILD").is_some()
}

/// Touches a fresh small object, a large span and a huge block, returning their addresses.
fn fresh_blocks() -> Vec<(*mut u8, usize)> {
    [48usize, 200_000, 40 << 20]
        .into_iter()
        .map(|size| {
            let p = tessera::alloc(size, 8);
            assert!(!p.is_null());
            // SAFETY: a fresh block of `size` bytes.
            unsafe { std::ptr::write_bytes(p, 1, size) };
            (p, size)
        })
        .collect()
}

#[test]
fn local_binds_arenas_to_the_thread_node() {
    if !in_child() {
        return run_child("local_binds_arenas_to_the_thread_node", "local");
    }
    let node = tessera_numa::current_node();
    for (p, size) in fresh_blocks() {
        assert_eq!(
            tessera_numa::policy_of(p).unwrap(),
            Policy::Preferred(node),
            "block of {size}"
        );
        assert_eq!(
            tessera_numa::node_of_page(p).unwrap(),
            Some(node),
            "block of {size}"
        );
        // SAFETY: a live block.
        unsafe { tessera::free(p) };
    }
}

#[test]
fn interleave_binds_arenas_to_every_memory_node() {
    if !in_child() {
        return run_child("interleave_binds_arenas_to_every_memory_node", "interleave");
    }
    let nodes = Topology::get().memory_nodes();
    for (p, size) in fresh_blocks() {
        assert_eq!(
            tessera_numa::policy_of(p).unwrap(),
            Policy::Interleave(nodes),
            "block of {size}"
        );
        let on = tessera_numa::node_of_page(p).unwrap().unwrap();
        assert!(nodes.contains(on));
        // SAFETY: a live block.
        unsafe { tessera::free(p) };
    }
}

#[test]
fn auto_on_one_node_binds_nothing() {
    if Topology::get().is_numa() {
        eprintln!("SKIP: this machine has several memory nodes; auto means local here");
        return;
    }
    if !in_child() {
        return run_child("auto_on_one_node_binds_nothing", "auto");
    }
    for (p, _) in fresh_blocks() {
        assert_eq!(tessera_numa::policy_of(p).unwrap(), Policy::Default);
        assert_eq!(tessera_numa::node_of_page(p).unwrap(), Some(NodeId::ZERO));
        // SAFETY: a live block.
        unsafe { tessera::free(p) };
    }
    let stats = tessera::stats();
    assert_eq!(stats.node_count, 1);
    assert!(stats.nodes[0].allocated > 0 || stats.allocated > 0);
}
