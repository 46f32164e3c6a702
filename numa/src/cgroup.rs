//! The memory and CPU limits of the cgroup this process runs in, read at start-up without
//! allocating (ARCHITECTURE.md#numa: this crate is where the allocator learns about the machine,
//! and a container's limits are part of the machine it sees). The allocator derives its
//! default soft memory limit from [`Limits::memory_limit`]; the scheduler caps its default
//! number of Ps with [`Limits::cpu_limit`], as Go 1.25 does for `GOMAXPROCS`.
//!
//! Finding the files takes three steps, each of which may fail and then means "no limit":
//!
//! 1. `/proc/self/cgroup` names the process's cgroup per hierarchy, one line each as
//!    `id:controllers:path`. A cgroup v1 hierarchy whose controller list has the controller
//!    (`memory`, `cpu`) wins over the v2 line `0::path`, as in Go: on a hybrid machine
//!    (systemd's legacy layout, with an empty v2 hierarchy under `/sys/fs/cgroup/unified`)
//!    the limits live in v1.
//! 2. `/proc/self/mountinfo` gives where that hierarchy is mounted: a `cgroup2` mount, or a
//!    `cgroup` mount with the controller among its super options. The path from step 1 is
//!    relative to the hierarchy's root, but a mount may show only a subtree (field 4, the
//!    mount's root): a v1 container without a cgroup namespace sees `/docker/<id>` both as its
//!    path and as the mount's root, and its cgroup is the mount point itself. So the mount's
//!    root is stripped from the path, and a mount whose root is not an ancestor of the path is
//!    skipped. Inside a cgroup namespace the path is `/` and so is the mount's root.
//! 3. From that directory up to the mount point, each level's limit files are read and the
//!    tightest value kept: a parent's limit binds the whole subtree. (Go 1.25 reads only the
//!    leaf, trusting container runtimes to hide the parents; walking costs a few more reads
//!    once at start-up and is right for a service nested in a limited systemd slice too.)
//!
//! The files: v2 `memory.max` and `memory.high` (`max` = none), `cpu.max` (`quota period` or
//! `max period`); v1 `memory.limit_in_bytes` (a value near 2^63, `PAGE_COUNTER_MAX` pages, =
//! none) and `cpu.cfs_quota_us` (-1 = none) over `cpu.cfs_period_us`. A file that is missing,
//! unreadable or malformed counts as "no limit at this level".
//!
//! Paths are built in [`SysPath`]s, so a cgroup path that with its mount point does not fit
//! 512 bytes also reads as "no limit"; real ones (Kubernetes' are the longest) are under 250.

use core::ops::ControlFlow;

use crate::parse;
use crate::sysfs::{SysPath, for_each_line, read_file};

/// v1 `memory.limit_in_bytes` values at or above this mean "no limit": the kernel shows an
/// unlimited counter as `PAGE_COUNTER_MAX` pages in bytes, just under 2^63 (9223372036854771712
/// with 4 KiB pages, a little less with larger pages). 2^62 bytes is no real limit either.
const V1_UNLIMITED: u64 = 1 << 62;

/// Longest `/proc/self/cgroup` or `mountinfo` line we look at. Longer ones (overlay mounts
/// with many layers) are never cgroup mounts we need and are skipped whole.
const LINE_CAP: usize = 1024;

/// A CPU bandwidth limit: the cgroup may use `quota_us` of CPU time per `period_us` of wall
/// time, so `quota_us / period_us` CPUs' worth on average. Both are non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    quota_us: u64,
    period_us: u64,
}

impl CpuQuota {
    /// A quota, or `None` when either figure is 0 (the kernel accepts neither).
    pub const fn new(quota_us: u64, period_us: u64) -> Option<CpuQuota> {
        if quota_us == 0 || period_us == 0 {
            None
        } else {
            Some(CpuQuota {
                quota_us,
                period_us,
            })
        }
    }

    /// CPU time allowed per period, in microseconds.
    pub const fn quota_us(self) -> u64 {
        self.quota_us
    }

    /// The period, in microseconds.
    pub const fn period_us(self) -> u64 {
        self.period_us
    }

    /// The average number of CPUs the quota allows (may be fractional).
    pub fn cpus(self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }

    /// [`cpus`](Self::cpus) rounded up: 1.5 CPUs' worth can keep 2 threads busy.
    pub const fn whole_cpus(self) -> u64 {
        self.quota_us.div_ceil(self.period_us)
    }

    /// The tighter of two quotas (fewer CPUs), compared exactly: `a/b < c/d` as `a·d < c·b`.
    pub fn min(self, other: CpuQuota) -> CpuQuota {
        let this = u128::from(self.quota_us) * u128::from(other.period_us);
        let that = u128::from(other.quota_us) * u128::from(self.period_us);
        if that < this { other } else { self }
    }
}

/// The limits of this process's cgroup and its ancestors, the tightest along the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The hard memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`): past
    /// it the kernel reclaims and then kills.
    pub memory_max: Option<u64>,
    /// The v2 throttling threshold in bytes (`memory.high`): past it the kernel reclaims
    /// hard and slows the cgroup down. v1 has no equivalent.
    pub memory_high: Option<u64>,
    /// The CPU bandwidth limit (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
    pub cpu_quota: Option<CpuQuota>,
}

impl Limits {
    /// No limits: what a machine without cgroups, or with unreadable ones, reports.
    pub const NONE: Limits = Limits {
        memory_max: None,
        memory_high: None,
        cpu_quota: None,
    };

    /// The limits of this process's cgroup. Never allocates, never panics; anything missing
    /// or malformed is "no limit". Reads a handful of small files, so call it once at
    /// start-up rather than on a hot path. Uses about 5 KiB of stack.
    pub fn read() -> Limits {
        Limits::read_from(b"/proc/self", b"")
    }

    /// Like [`read`](Self::read), with `proc_self` standing for `/proc/self` (where
    /// `cgroup` and `mountinfo` are) and `fs_root` put in front of every mount point found in
    /// `mountinfo` (`b""` for the machine; a fixture tree in tests).
    pub fn read_from(proc_self: &[u8], fs_root: &[u8]) -> Limits {
        let mut limits = Limits::NONE;
        if let Some(mut dir) = CgroupDir::find(proc_self, fs_root, Controller::Memory) {
            dir.walk_up(|path, version| {
                let (max, high) = match version {
                    Version::V1 => (read_v1_memory(path), None),
                    Version::V2 => (
                        read_v2_bytes(path, b"/memory.max"),
                        read_v2_bytes(path, b"/memory.high"),
                    ),
                };
                limits.memory_max = tighter(limits.memory_max, max, u64::min);
                limits.memory_high = tighter(limits.memory_high, high, u64::min);
            });
        }
        if let Some(mut dir) = CgroupDir::find(proc_self, fs_root, Controller::Cpu) {
            dir.walk_up(|path, version| {
                let quota = match version {
                    Version::V1 => read_v1_cpu(path),
                    Version::V2 => read_v2_cpu(path),
                };
                limits.cpu_quota = tighter(limits.cpu_quota, quota, CpuQuota::min);
            });
        }
        limits
    }

    /// The memory the cgroup lets this process use without being throttled or killed:
    /// the smaller of `memory.max` and `memory.high`, `None` when neither is set.
    ///
    /// This is the figure to derive a default soft memory limit from when the user sets
    /// none; how far below it to aim (e.g. 90%, leaving room for memory the allocator does
    /// not manage: thread stacks, page tables, the page cache the cgroup is charged for) is
    /// the allocator's policy, not this crate's.
    pub fn memory_limit(&self) -> Option<u64> {
        tighter(self.memory_max, self.memory_high, u64::min)
    }

    /// The CPU quota as a thread count, by Go 1.25's rule for the default `GOMAXPROCS`:
    /// rounded up to whole CPUs and at least 2, `None` without a quota. Callers take the
    /// minimum of this and the CPUs they may run on, so a one-CPU affinity still gives 1.
    ///
    /// Why at least 2 (Go's reasoning): a quota is an average over the period, not a cap on
    /// parallelism, and with a single thread one blocked or long-running task stalls all
    /// the others even though the cgroup has time to spare.
    pub fn cpu_limit(&self) -> Option<usize> {
        let q = self.cpu_quota?;
        Some(usize::try_from(q.whole_cpus()).unwrap_or(usize::MAX).max(2))
    }
}

/// The smaller of two optional limits, where `None` is "unlimited".
fn tighter<T: Copy>(a: Option<T>, b: Option<T>, min: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(min(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

// ---------------------------------------------------------------------------------------
// Finding the cgroup directory
// ---------------------------------------------------------------------------------------

/// The controllers we read limits of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
}

impl Controller {
    /// The name in `/proc/self/cgroup` and in a v1 mount's super options.
    fn name(self) -> &'static [u8] {
        match self {
            Controller::Memory => b"memory",
            Controller::Cpu => b"cpu",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The process's cgroup directory for one controller, and where its hierarchy is mounted.
struct CgroupDir {
    /// `fs_root` + mount point + the cgroup's path below the mount's root.
    path: SysPath,
    /// The mark of the mount point in `path`: the walk up stops there.
    mount: (usize, bool),
    version: Version,
}

impl CgroupDir {
    /// Steps 1 and 2 of the module comment.
    fn find(proc_self: &[u8], fs_root: &[u8], controller: Controller) -> Option<CgroupDir> {
        let mut line = [0u8; LINE_CAP];
        let (version, cgroup) = cgroup_path(proc_self, controller, &mut line)?;
        let cgroup = cgroup.as_bytes()?;

        let mut file = SysPath::new(proc_self);
        file.push(b"/mountinfo");
        let mut found = None;
        for_each_line(&mut file, &mut line, |l, complete| {
            if !complete {
                return ControlFlow::Continue(());
            }
            match mount_of(l, version, controller, cgroup, fs_root) {
                Some(dir) => {
                    found = Some(dir);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        });
        found
    }

    /// Calls `f` with the cgroup's directory, then each parent up to the mount point.
    fn walk_up(&mut self, mut f: impl FnMut(&mut SysPath, Version)) {
        loop {
            let here = self.path.mark();
            f(&mut self.path, self.version);
            self.path.truncate(here);
            if !self.path.pop(self.mount) {
                break;
            }
        }
    }
}

/// The process's cgroup path for `controller` from `/proc/self/cgroup`: the v1 hierarchy
/// that has the controller if there is one, else the v2 hierarchy.
fn cgroup_path(
    proc_self: &[u8],
    controller: Controller,
    line: &mut [u8],
) -> Option<(Version, SysPath)> {
    let mut file = SysPath::new(proc_self);
    file.push(b"/cgroup");
    let mut v2: Option<SysPath> = None;
    let mut v1: Option<SysPath> = None;
    for_each_line(&mut file, line, |l, complete| {
        if !complete {
            return ControlFlow::Continue(());
        }
        let mut fields = l.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return ControlFlow::Continue(());
        };
        let mut p = SysPath::new(b"");
        p.push(path);
        if id == b"0" && controllers.is_empty() {
            v2 = Some(p);
        } else if has_item(controllers, controller.name()) {
            v1 = Some(p);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    match (v1, v2) {
        (Some(p), _) => Some((Version::V1, p)),
        (None, Some(p)) => Some((Version::V2, p)),
        (None, None) => None,
    }
}

/// Whether the comma-separated `list` has `item` (`cpu` is in `cpu,cpuacct`, not in
/// `cpuacct` or `cpuset`).
fn has_item(list: &[u8], item: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|x| x == item)
}

/// The cgroup directory for `cgroup` if the `mountinfo` line `l` mounts the hierarchy we
/// want with a root that is an ancestor of (or is) `cgroup`.
///
/// A line is `id parent major:minor root mount-point options [optional...] - fstype source
/// super-options`, with the paths' spaces, tabs, newlines and backslashes octal-escaped.
fn mount_of(
    l: &[u8],
    version: Version,
    controller: Controller,
    cgroup: &[u8],
    fs_root: &[u8],
) -> Option<CgroupDir> {
    let mut fields = l.split(|&b| b == b' ');
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    fields.find(|&f| f == b"-")?;
    let fstype = fields.next()?;
    let _source = fields.next()?;
    let super_options = fields.next()?;
    let wanted = match version {
        Version::V2 => fstype == b"cgroup2",
        Version::V1 => fstype == b"cgroup" && has_item(super_options, controller.name()),
    };
    if !wanted {
        return None;
    }

    let root = unescaped(root)?;
    let below = below_root(cgroup, root.as_bytes()?)?;
    let mount_point = unescaped(mount_point)?;
    let mount_point = mount_point.as_bytes()?;
    // A mount point of `/` adds nothing: the walk up must stop at `fs_root`, not below a `/`.
    let mut path = SysPath::new(fs_root);
    path.push(mount_point.strip_suffix(b"/").unwrap_or(mount_point));
    let mount = path.mark();
    path.push(below);
    path.as_cstr()?;
    Some(CgroupDir {
        path,
        mount,
        version,
    })
}

/// A path from `mountinfo` with its escapes undone.
fn unescaped(s: &[u8]) -> Option<SysPath> {
    let mut p = SysPath::new(b"");
    parse::unescape_octal(s, |b| {
        p.push(&[b]);
    })
    .ok()?;
    Some(p)
}

/// `path` relative to the mount's `root` (`""` when they are the same, else starting with
/// `/`, without a trailing slash), or `None` when `root` is not an ancestor of `path` or
/// `path` steps out with `..` (a process outside its cgroup namespace's root sees those).
fn below_root<'p>(path: &'p [u8], root: &[u8]) -> Option<&'p [u8]> {
    if !path.starts_with(b"/") || path.split(|&b| b == b'/').any(|c| c == b"..") {
        return None;
    }
    let root = root.strip_suffix(b"/").unwrap_or(root);
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with(b"/") {
        return None;
    }
    Some(rest.strip_suffix(b"/").unwrap_or(rest))
}

// ---------------------------------------------------------------------------------------
// Reading the limit files
// ---------------------------------------------------------------------------------------

/// Reads `dir` + `name`, trimmed of surrounding whitespace, into `buf`. The files we read
/// hold one or two numbers, well under 64 bytes.
fn read_value<'b>(dir: &mut SysPath, name: &[u8], buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    let here = dir.mark();
    dir.push(name);
    let v = read_file(dir, buf);
    dir.truncate(here);
    Some(v?.trim_ascii())
}

/// A v2 byte limit (`memory.max`, `memory.high`): a number, or `max` for none.
fn read_v2_bytes(dir: &mut SysPath, name: &[u8]) -> Option<u64> {
    parse::decimal(read_value(dir, name, &mut [0; 64])?)
}

/// v1 `memory.limit_in_bytes`, with the "unlimited" value as none.
fn read_v1_memory(dir: &mut SysPath) -> Option<u64> {
    let v = parse::decimal(read_value(dir, b"/memory.limit_in_bytes", &mut [0; 64])?)?;
    (v < V1_UNLIMITED).then_some(v)
}

/// v2 `cpu.max`: `quota period`, or `max period` for none.
fn read_v2_cpu(dir: &mut SysPath) -> Option<CpuQuota> {
    let mut buf = [0; 64];
    let v = read_value(dir, b"/cpu.max", &mut buf)?;
    let mut words = v.split(|b| b.is_ascii_whitespace());
    let quota = parse::decimal(words.next()?)?;
    let period = parse::decimal(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    CpuQuota::new(quota, period)
}

/// v1 `cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`.
fn read_v1_cpu(dir: &mut SysPath) -> Option<CpuQuota> {
    // "-1" fails to parse as an unsigned number, which is exactly "no quota".
    let quota = parse::decimal(read_value(dir, b"/cpu.cfs_quota_us", &mut [0; 64])?)?;
    let period = parse::decimal(read_value(dir, b"/cpu.cfs_period_us", &mut [0; 64])?)?;
    CpuQuota::new(quota, period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_compare_exactly_and_round_up() {
        let q = |a, b| CpuQuota::new(a, b).unwrap();
        assert_eq!(q(150_000, 100_000).whole_cpus(), 2);
        assert_eq!(q(200_000, 100_000).whole_cpus(), 2);
        assert_eq!(q(1, 100_000).whole_cpus(), 1);
        assert_eq!(q(1, 3).min(q(1, 2)), q(1, 3));
        assert_eq!(
            q(50_000, 100_000).min(q(100_000, 100_000)),
            q(50_000, 100_000)
        );
        assert_eq!(q(u64::MAX, 1).min(q(u64::MAX, 2)), q(u64::MAX, 2));
        assert_eq!(CpuQuota::new(0, 100_000), None);
        assert_eq!(CpuQuota::new(100_000, 0), None);
        assert!((q(250_000, 100_000).cpus() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn cpu_limit_is_go_rounding_with_a_floor_of_two() {
        let with = |quota, period| Limits {
            cpu_quota: CpuQuota::new(quota, period),
            ..Limits::NONE
        };
        assert_eq!(Limits::NONE.cpu_limit(), None);
        assert_eq!(with(10_000, 100_000).cpu_limit(), Some(2));
        assert_eq!(with(100_000, 100_000).cpu_limit(), Some(2));
        assert_eq!(with(250_000, 100_000).cpu_limit(), Some(3));
        assert_eq!(with(400_000, 100_000).cpu_limit(), Some(4));
        assert_eq!(with(u64::MAX, 1).cpu_limit(), Some(usize::MAX));
    }

    #[test]
    fn memory_limit_is_the_lower_of_max_and_high() {
        let m = |max, high| Limits {
            memory_max: max,
            memory_high: high,
            ..Limits::NONE
        };
        assert_eq!(m(None, None).memory_limit(), None);
        assert_eq!(m(Some(8), None).memory_limit(), Some(8));
        assert_eq!(m(None, Some(6)).memory_limit(), Some(6));
        assert_eq!(m(Some(8), Some(6)).memory_limit(), Some(6));
        assert_eq!(m(Some(5), Some(6)).memory_limit(), Some(5));
    }

    #[test]
    fn paths_below_a_mount_root() {
        assert_eq!(below_root(b"/a/b", b"/"), Some(&b"/a/b"[..]));
        assert_eq!(below_root(b"/", b"/"), Some(&b""[..]));
        assert_eq!(below_root(b"/docker/x", b"/docker/x"), Some(&b""[..]));
        assert_eq!(below_root(b"/docker/x/y/", b"/docker/x"), Some(&b"/y"[..]));
        assert_eq!(below_root(b"/docker/x/y", b"/docker/x/"), Some(&b"/y"[..]));
        assert_eq!(below_root(b"/docker/xy", b"/docker/x"), None);
        assert_eq!(below_root(b"/other", b"/docker/x"), None);
        assert_eq!(below_root(b"/../../user.slice", b"/"), None);
        assert_eq!(below_root(b"relative", b"/"), None);
    }

    #[test]
    fn controller_lists() {
        assert!(has_item(b"cpu,cpuacct", b"cpu"));
        assert!(has_item(b"rw,cpuacct,cpu", b"cpu"));
        assert!(!has_item(b"cpuacct", b"cpu"));
        assert!(!has_item(b"rw,cpuset", b"cpu"));
        assert!(!has_item(b"", b"cpu"));
    }

    #[test]
    fn mountinfo_lines() {
        let line =
            b"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory";
        let dir = mount_of(line, Version::V1, Controller::Memory, b"/a", b"/fx").unwrap();
        assert_eq!(dir.path.as_bytes().unwrap(), b"/fx/sys/fs/cgroup/memory/a");
        assert_eq!(dir.mount.0, b"/fx/sys/fs/cgroup/memory".len());
        assert!(mount_of(line, Version::V1, Controller::Cpu, b"/a", b"").is_none());
        assert!(mount_of(line, Version::V2, Controller::Memory, b"/a", b"").is_none());

        let escaped = b"41 31 0:38 /a\\040b /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw";
        let dir = mount_of(escaped, Version::V2, Controller::Cpu, b"/a b/c", b"").unwrap();
        assert_eq!(dir.path.as_bytes().unwrap(), b"/mnt/cg v2/c");

        let root_mount = b"1 0 0:1 / / rw - cgroup2 none rw";
        let dir = mount_of(root_mount, Version::V2, Controller::Cpu, b"/x", b"").unwrap();
        assert_eq!(dir.path.as_bytes().unwrap(), b"/x");
        assert_eq!(dir.mount.0, 0);

        for bad in [
            &b"41 31 0:38 / /sys/fs/cgroup rw cgroup2 cgroup2 rw"[..],
            b"41 31 0:38 /",
            b"41 31 0:38 /\\04x /sys rw - cgroup2 cgroup2 rw",
            b"",
        ] {
            assert!(mount_of(bad, Version::V2, Controller::Cpu, b"/", b"").is_none());
        }
    }
}
