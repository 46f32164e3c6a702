//! `Limits::read` against this machine's own cgroup, checked with an independent reading
//! through `std::fs` (v1, v2 or hybrid; limited or not), and, where the cgroup filesystem is
//! writable (root on a v1 memory hierarchy), a child process in a fresh memory cgroup with a
//! limit this test set.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_numa::{CpuQuota, Limits};

/// The process's cgroup directory for `controller`, found the documented way with plain
/// strings: a v1 hierarchy with the controller wins over the v2 one; the mount whose root
/// is an ancestor of the path gives the directory. `(is_v1, directory, mount point)`.
fn cgroup_dir(controller: &str) -> Option<(bool, PathBuf, PathBuf)> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut v2 = None;
    let mut v1 = None;
    for line in cgroup.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        if let [id, ctrls, path] = parts[..] {
            if id == "0" && ctrls.is_empty() {
                v2 = Some(path.to_string());
            } else if ctrls.split(',').any(|c| c == controller) {
                v1 = Some(path.to_string());
            }
        }
    }
    let (is_v1, path) = match (v1, v2) {
        (Some(p), _) => (true, p),
        (None, Some(p)) => (false, p),
        _ => return None,
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (root, mount) = (unescape(left[3]), unescape(left[4]));
        let wanted = if is_v1 {
            right[0] == "cgroup" && right[2].split(',').any(|o| o == controller)
        } else {
            right[0] == "cgroup2"
        };
        if !wanted {
            continue;
        }
        let rel = match Path::new(&path).strip_prefix(&root) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => continue,
        };
        if rel.components().any(|c| c.as_os_str() == "..") {
            return None;
        }
        return Some((is_v1, Path::new(&mount).join(rel), PathBuf::from(mount)));
    }
    None
}

/// Undoes mountinfo's `\ooo` escapes.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A number from a limit file: `None` for missing files, `max`, `-1` and garbage.
fn number(dir: &Path, file: &str) -> Option<u64> {
    fs::read_to_string(dir.join(file)).ok()?.trim().parse().ok()
}

/// `dir` and its parents down to `mount`, leaf first.
fn levels(dir: &Path, mount: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(mount))
        .map(Path::to_path_buf)
        .collect()
}

/// The limits as this test reads them.
fn expected() -> Limits {
    let mut l = Limits::NONE;
    if let Some((is_v1, dir, mount)) = cgroup_dir("memory") {
        let mut max = Vec::new();
        let mut high = Vec::new();
        for d in levels(&dir, &mount) {
            if is_v1 {
                max.extend(number(&d, "memory.limit_in_bytes").filter(|&v| v < 1 << 62));
            } else {
                max.extend(number(&d, "memory.max"));
                high.extend(number(&d, "memory.high"));
            }
        }
        l.memory_max = max.into_iter().min();
        l.memory_high = high.into_iter().min();
    }
    if let Some((is_v1, dir, mount)) = cgroup_dir("cpu") {
        let mut quotas = Vec::new();
        for d in levels(&dir, &mount) {
            let q = if is_v1 {
                number(&d, "cpu.cfs_quota_us").zip(number(&d, "cpu.cfs_period_us"))
            } else {
                fs::read_to_string(d.join("cpu.max")).ok().and_then(|s| {
                    let (q, p) = s.trim().split_once(' ')?;
                    Some((q.parse().ok()?, p.parse().ok()?))
                })
            };
            quotas.extend(q.and_then(|(q, p)| CpuQuota::new(q, p)));
        }
        l.cpu_quota = quotas
            .into_iter()
            .min_by(|a, b| (a.cpus()).total_cmp(&b.cpus()));
    }
    l
}

#[test]
fn this_machines_cgroup_reads_the_same_through_std() {
    let got = Limits::read();
    println!("memory: {:?}", cgroup_dir("memory"));
    println!("cpu: {:?}", cgroup_dir("cpu"));
    println!(
        "{got:?}; memory_limit {:?}, cpu_limit {:?}",
        got.memory_limit(),
        got.cpu_limit()
    );
    assert_eq!(got, expected());
}

const PROBE_ENV: &str = "TESSERA_CGROUP_PROBE";

/// Not a test on its own: the child process of the next test, which prints what it reads.
#[test]
fn cgroup_probe_child() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    let l = Limits::read();
    println!("PROBE memory_max={:?}", l.memory_max);
}

/// Removes the cgroup directory when the test ends, passing or not.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The child has been reaped, so the cgroup is empty; the kernel may take a moment
        // to notice its last task gone.
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

#[test]
fn a_child_in_a_fresh_memory_cgroup_sees_its_limit() {
    const LIMIT: u64 = 64 << 20;
    let Some((is_v1, dir, _)) = cgroup_dir("memory") else {
        println!("skipped: no memory cgroup found");
        return;
    };
    let child = dir.join(format!("tessera-test-{}", std::process::id()));
    if let Err(e) = fs::create_dir(&child) {
        println!("skipped: cannot create {}: {e}", child.display());
        return;
    }
    let cg = Cgroup(child);
    let file = if is_v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    if let Err(e) = fs::write(cg.0.join(file), LIMIT.to_string()) {
        // v2 without the memory controller enabled for our cgroup's children has no file.
        println!("skipped: cannot set {file} in {}: {e}", cg.0.display());
        return;
    }
    // The shell moves itself into the cgroup and then becomes the test binary, so the
    // child reads its limits from inside from its first instruction.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1" || exit 97; exec "$2" --exact cgroup_probe_child --nocapture"#)
        .arg("sh")
        .arg(cg.0.join("cgroup.procs"))
        .arg(std::env::current_exe().unwrap())
        .env(PROBE_ENV, "1")
        .output()
        .unwrap();
    if out.status.code() == Some(97) {
        // v2's "no internal processes" rule, for one, refuses this.
        println!(
            "skipped: cannot join {}: {}",
            cg.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE memory_max="))
        .unwrap_or_else(|| panic!("no probe line in {stdout}"));
    let want = Some(expected().memory_max.map_or(LIMIT, |m| m.min(LIMIT)));
    assert_eq!(line, format!("{want:?}"));
}
