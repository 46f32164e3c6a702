//! The sysfs parser on committed fixture trees (tests/fixtures/, described in its README):
//! ordinary 2/4/8-node machines and the odd shapes ARCHITECTURE.md#numa calls normal input.

use tessera_numa::{CpuId, CpuSet, NodeId, NodeMask, Source, Topology};

fn fixture(name: &str) -> Vec<u8> {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR")).into_bytes()
}

/// A wide affinity mask, so fixture results do not depend on this machine's CPUs.
fn all_cpus() -> CpuSet {
    let mut s = CpuSet::EMPTY;
    s.insert_range(0, tessera_numa::MAX_CPUS as u64 - 1);
    s
}

fn read(name: &str) -> Topology {
    Topology::read_with_affinity(&fixture(name), &all_cpus())
}

fn n(id: u16) -> NodeId {
    NodeId::new(id)
}

fn cpus(t: &Topology, id: u16) -> String {
    t.node(n(id)).unwrap().cpus().to_string()
}

fn ids(m: NodeMask) -> Vec<u16> {
    m.iter().map(NodeId::get).collect()
}

#[test]
fn two_nodes() {
    let t = read("two-nodes");
    assert_eq!(t.source(), Source::Sysfs);
    assert_eq!(t.node_count(), 2);
    assert!(t.is_numa());
    assert_eq!(cpus(&t, 0), "0-3");
    assert_eq!(cpus(&t, 1), "4-7");
    assert_eq!(t.distance(n(0), n(1)), 21);
    assert_eq!(t.distance(n(1), n(0)), 21);
    assert_eq!(t.distance(n(1), n(1)), 10);
    assert_eq!(t.node(n(1)).unwrap().mem_total_kib(), 8 * 1024 * 1024);
    for cpu in 0..8 {
        let want = if cpu < 4 { 0 } else { 1 };
        assert_eq!(t.node_of_cpu(CpuId::new(cpu)), Some(n(want)), "cpu {cpu}");
    }
    assert_eq!(t.node_of_cpu(CpuId::new(8)), None);
    assert_eq!(t.node_of_cpu(CpuId::new(u32::MAX)), None);
    assert!(!t.truncated());
}

#[test]
fn four_nodes_with_split_smt_ranges() {
    let t = read("four-nodes");
    assert_eq!(t.node_count(), 4);
    assert_eq!(cpus(&t, 2), "8-11,24-27");
    assert_eq!(t.node_of_cpu(CpuId::new(26)), Some(n(2)));
    assert_eq!(t.node_of_cpu(CpuId::new(31)), Some(n(3)));
    assert_eq!(t.distance(n(0), n(3)), 22);
    assert_eq!(t.distance(n(1), n(3)), 16);
    assert_eq!(ids(t.memory_nodes()), [0, 1, 2, 3]);
    assert_eq!(t.usable_cpus(n(3)).count(), 8);
}

#[test]
fn eight_nodes_distance_matrix() {
    let t = read("eight-nodes");
    assert_eq!(t.node_count(), 8);
    let row0: Vec<u8> = (0..8).map(|j| t.distance(n(0), n(j))).collect();
    assert_eq!(row0, [10, 16, 16, 22, 16, 22, 16, 22]);
    let row5: Vec<u8> = (0..8).map(|j| t.distance(n(5), n(j))).collect();
    assert_eq!(row5, [22, 16, 22, 16, 16, 10, 22, 16]);
    for node in t.nodes() {
        assert_eq!(node.cpus().count(), 2);
        assert!(node.has_memory());
    }
    assert_eq!(t.node_of_cpu(CpuId::new(15)), Some(n(7)));
}

#[test]
fn sparse_node_ids_map_distance_columns_to_online_nodes() {
    let t = read("sparse-ids");
    assert_eq!(t.node_count(), 2);
    assert_eq!(ids(t.node_ids()), [0, 2]);
    assert!(t.node(n(1)).is_none());
    // The row "10 32" has one column per online node: 0 then 2, not 0 then 1.
    assert_eq!(t.node(n(0)).unwrap().distance_to(n(2)), Some(32));
    assert_eq!(t.node(n(0)).unwrap().distance_to(n(1)), None);
    assert_eq!(t.distance(n(2), n(0)), 32);
    assert_eq!(t.node_of_cpu(CpuId::new(3)), Some(n(2)));
    assert!(t.usable_cpus(n(1)).is_empty());
}

#[test]
fn memoryless_node_borrows_from_the_nearest() {
    let t = read("memoryless-node");
    assert!(!t.node(n(1)).unwrap().has_memory());
    assert_eq!(ids(t.memory_nodes()), [0]);
    assert_eq!(ids(t.cpu_nodes()), [0, 1]);
    assert!(!t.is_numa(), "only one node has memory");
    assert_eq!(t.nearest_memory_node(n(1)), Some(n(0)));
    assert_eq!(t.nearest_memory_node(n(0)), Some(n(0)));
    assert_eq!(t.node_of_cpu(CpuId::new(2)), Some(n(1)));
}

#[test]
fn cpuless_node_has_memory_and_no_cpus() {
    let t = read("cpuless-node");
    let node1 = t.node(n(1)).unwrap();
    assert!(node1.cpus().is_empty());
    assert!(node1.has_memory());
    assert_eq!(node1.mem_total_kib(), 4 * 1024 * 1024);
    assert_eq!(ids(t.cpu_nodes()), [0]);
    assert_eq!(ids(t.memory_nodes()), [0, 1]);
    assert!(t.is_numa());
    assert_eq!(t.distance(n(0), n(1)), 255);
    for cpu in 0..4 {
        assert_eq!(t.node_of_cpu(CpuId::new(cpu)), Some(n(0)));
    }
}

#[test]
fn offline_cpus_are_listed_but_not_usable() {
    let t = read("offline-cpus");
    assert_eq!(t.online_cpus().to_string(), "0-2");
    assert_eq!(cpus(&t, 0), "0-3");
    assert_eq!(t.usable_cpus(n(0)).to_string(), "0-2");
    assert!(t.usable_cpus(n(1)).is_empty());
    // Node 1 keeps its memory but has no online CPU.
    assert_eq!(ids(t.cpu_nodes()), [0]);
    assert_eq!(ids(t.memory_nodes()), [0, 1]);
    // The map still answers for an offline CPU (it may come back online).
    assert_eq!(t.node_of_cpu(CpuId::new(4)), Some(n(1)));
}

#[test]
fn narrow_affinity_mask_restricts_usable_cpus() {
    let mut mask = CpuSet::EMPTY;
    mask.insert(CpuId::new(1));
    mask.insert(CpuId::new(5));
    let t = Topology::read_with_affinity(&fixture("two-nodes"), &mask);
    assert_eq!(t.allowed_cpus().to_string(), "1,5");
    assert_eq!(t.usable_cpus(n(0)).to_string(), "1");
    assert_eq!(t.usable_cpus(n(1)).to_string(), "5");
    // The node's own CPU list is the machine's, not the mask's.
    assert_eq!(cpus(&t, 1), "4-7");
}

#[test]
fn nodes_found_by_listing_directories_when_online_is_missing() {
    let t = read("no-online-file");
    assert_eq!(ids(t.node_ids()), [0, 1, 3]);
    // Without has_memory, MemTotal decides.
    assert_eq!(ids(t.memory_nodes()), [0, 3]);
    // Without cpu/online, every listed CPU counts as online.
    assert_eq!(t.online_cpus().to_string(), "0-5");
    assert_eq!(t.node_of_cpu(CpuId::new(5)), Some(n(3)));
    assert_eq!(t.distance(n(0), n(3)), 20);
}

#[test]
fn malformed_files_are_treated_as_missing() {
    let t = read("malformed");
    assert_eq!(t.node_count(), 2);
    assert_eq!(cpus(&t, 0), "0-1");
    assert!(
        t.node(n(1)).unwrap().cpus().is_empty(),
        "bad cpulist ignored"
    );
    assert_eq!(
        t.node(n(0)).unwrap().distance_to(n(1)),
        None,
        "bad row ignored"
    );
    assert_eq!(t.distance(n(0), n(1)), tessera_numa::REMOTE_DISTANCE);
    assert_eq!(t.node(n(1)).unwrap().mem_total_kib(), 0);
    assert!(
        t.node(n(1)).unwrap().has_memory(),
        "has_memory is still read"
    );
    // A bad cpu/online falls back to the union of the nodes' CPUs.
    assert_eq!(t.online_cpus().to_string(), "0-1");
}

#[test]
fn ids_past_the_limits_are_dropped_and_reported() {
    let t = read("too-large");
    assert!(t.truncated());
    assert_eq!(ids(t.node_ids()), [0]);
    assert_eq!(cpus(&t, 0), "0-1");
    assert_eq!(t.node_of_cpu(CpuId::new(2000)), None);
}

#[test]
fn missing_sys_is_one_node_with_every_cpu() {
    let mut mask = CpuSet::EMPTY;
    mask.insert_range(0, 5);
    let t = Topology::read_with_affinity(b"/nonexistent/tessera-numa-test", &mask);
    assert_eq!(t.source(), Source::SingleNodeFallback);
    assert_eq!(t.node_count(), 1);
    assert!(!t.is_numa());
    let node0 = t.node(NodeId::ZERO).unwrap();
    assert!(node0.has_memory());
    assert_eq!(node0.cpus().to_string(), "0-5");
    assert_eq!(t.node_of_cpu(CpuId::new(5)), Some(NodeId::ZERO));
    assert_eq!(t.distance(NodeId::ZERO, NodeId::ZERO), 10);
    assert_eq!(t.nearest_memory_node(NodeId::ZERO), Some(NodeId::ZERO));
}

#[test]
fn root_with_a_nul_or_overlong_is_a_missing_sys_not_a_panic() {
    let t = Topology::read_with_affinity(b"/sys\0junk", &all_cpus());
    assert_eq!(t.source(), Source::SingleNodeFallback);
    let long = vec![b'x'; 4096];
    let t = Topology::read_from(&long);
    assert_eq!(t.source(), Source::SingleNodeFallback);
}
