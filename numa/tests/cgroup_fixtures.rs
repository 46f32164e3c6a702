//! The cgroup limit reader on committed fixture trees (tests/fixtures/cgroup/, described in
//! its README): v1, v2 and the hybrid layout, limits on the leaf or on a parent, containers
//! with and without a cgroup namespace, and garbage.

use tessera_numa::{CpuQuota, Limits};

const MIB: u64 = 1 << 20;

fn read(tree: &str) -> Limits {
    let root = format!(
        "{}/tests/fixtures/cgroup/{tree}",
        env!("CARGO_MANIFEST_DIR")
    );
    Limits::read_from(format!("{root}/proc/self").as_bytes(), root.as_bytes())
}

fn quota(quota_us: u64, period_us: u64) -> Option<CpuQuota> {
    Some(CpuQuota::new(quota_us, period_us).unwrap())
}

#[test]
fn v2_limits_on_the_leaf() {
    let l = read("v2-leaf");
    assert_eq!(l.memory_max, Some(512 * MIB));
    assert_eq!(l.memory_high, Some(384 * MIB));
    assert_eq!(l.cpu_quota, quota(150_000, 100_000));
    assert_eq!(l.memory_limit(), Some(384 * MIB));
    assert_eq!(l.cpu_limit(), Some(2));
}

#[test]
fn v2_a_parent_limit_binds_the_leaf() {
    let l = read("v2-parent-tighter");
    assert_eq!(l.memory_max, Some(1024 * MIB));
    assert_eq!(l.memory_high, Some(768 * MIB));
    // 2.5 CPUs over a 20 ms period on the top slice beats the leaf's 4 CPUs.
    assert_eq!(l.cpu_quota, quota(50_000, 20_000));
    assert_eq!(l.memory_limit(), Some(768 * MIB));
    assert_eq!(l.cpu_limit(), Some(3));
}

#[test]
fn v2_max_everywhere_is_no_limit() {
    let l = read("v2-unlimited");
    assert_eq!(l, Limits::NONE);
    assert_eq!(l.memory_limit(), None);
    assert_eq!(l.cpu_limit(), None);
}

#[test]
fn v2_in_a_cgroup_namespace_reads_the_mount_point() {
    let l = read("v2-container");
    assert_eq!(l.memory_max, Some(1024 * MIB));
    assert_eq!(l.memory_high, None);
    assert_eq!(l.cpu_quota, quota(200_000, 100_000));
    assert_eq!(l.cpu_limit(), Some(2));
}

#[test]
fn v1_limits_on_a_parent_and_the_leaf() {
    let l = read("v1-limited");
    assert_eq!(l.memory_max, Some(256 * MIB));
    assert_eq!(l.memory_high, None);
    assert_eq!(l.cpu_quota, quota(250_000, 100_000));
    assert_eq!(l.memory_limit(), Some(256 * MIB));
    assert_eq!(l.cpu_limit(), Some(3));
}

#[test]
fn v1_path_relative_to_the_mount_root() {
    let l = read("v1-docker");
    assert_eq!(l.memory_max, Some(512 * MIB));
    assert_eq!(l.cpu_quota, quota(50_000, 100_000));
    // Half a CPU still gets two threads (Go 1.25's floor).
    assert_eq!(l.cpu_limit(), Some(2));
}

#[test]
fn v1_unlimited_values_are_no_limit() {
    assert_eq!(read("v1-unlimited"), Limits::NONE);
}

#[test]
fn garbage_values_are_skipped_level_by_level() {
    let l = read("garbage-values");
    assert_eq!(
        l,
        Limits {
            memory_max: Some(1024 * MIB),
            ..Limits::NONE
        }
    );
}

#[test]
fn garbage_proc_files_find_nothing() {
    assert_eq!(read("garbage-proc"), Limits::NONE);
}

#[test]
fn missing_trees_are_no_limit() {
    assert_eq!(read("no-such-tree"), Limits::NONE);
    assert_eq!(
        Limits::read_from(b"/nonexistent/proc/self", b""),
        Limits::NONE
    );
    // The real /proc with a root where no cgroup fs is mounted.
    assert_eq!(
        Limits::read_from(b"/proc/self", b"/nonexistent-tessera"),
        Limits::NONE
    );
}
