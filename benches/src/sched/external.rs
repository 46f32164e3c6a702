//! The scheduler comparison's columns that come from programs of their own: Go's reference
//! programs (`benches/go/sched`, when `go` is installed) and tessera-sched as a user builds
//! it (`benches/sched-user`), each printing the median of its own repetitions. The
//! comparison runs them one group of workloads at a time, between its own rounds of the same
//! workloads (`compare.rs`), so that a ratio compares figures taken in the same minute.

use super::compare::SPAWN_ALL_COUNTS;
use std::process::Command;

/// Figures of the programs that run apart from the runner: Go's reference programs and
/// the user-build crate.
pub(super) struct External {
    /// (workload, ns/op) of each, or why it has none.
    pub(super) go: Result<Vec<(String, f64)>, String>,
    pub(super) user: Result<Vec<(String, f64)>, String>,
    /// Go's parked lines, as printed.
    pub(super) parked: Vec<String>,
}

/// Builds Go's reference programs into the report directory.
fn build_go() -> Result<std::path::PathBuf, String> {
    if Command::new("go").arg("version").output().is_err() {
        return Err("go not installed (Debian: apt-get install golang-go)".into());
    }
    let src = crate::paths::workspace_root().join("benches/go/sched");
    let dir = crate::paths::report_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bin = dir.join("go-sched");
    let build = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !build.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&build.stderr).trim()
        ));
    }
    Ok(bin)
}

/// The user-build crate (`benches/sched-user`, a workspace of its own).
pub(super) const USER_CRATE: &str = "benches/sched-user";

/// Builds the user-build crate with cargo's default release profile into
/// `<target>/sched-user/` (a no-op when it is up to date).
fn build_user() -> Result<std::path::PathBuf, String> {
    let target = crate::paths::target_dir().join("sched-user");
    let manifest = crate::paths::workspace_root()
        .join(USER_CRATE)
        .join("Cargo.toml");
    let cargo = crate::cargo::started_by().unwrap_or_else(|| "cargo".into());
    crate::cargo::build_release(
        &cargo,
        &manifest,
        &target,
        &[],
        "tessera-sched as a user builds it: default release profile, system allocator",
    )?;
    Ok(target.join("release").join("tessera-sched-user"))
}

/// Runs `bin ARGS` with `procs` processors (`GOMAXPROCS` for Go, `TESSERA_PROCS` for
/// tessera-sched) and returns its stdout.
fn run_program(bin: &std::path::Path, procs: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .env("GOMAXPROCS", procs)
        .env("TESSERA_PROCS", procs)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds the `name ns/op value` lines of `out` to `figures`.
fn parse_figures(out: &str, figures: &mut Vec<(String, f64)>) {
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, "ns/op", v] = f[..]
            && let Ok(v) = v.parse()
        {
            figures.push((name.to_string(), v));
        }
    }
}

/// One group of workloads as the external programs take them (Go's programs and the user
/// crate alike): run with `procs` processors and `args`; `rows`: the runner's rows it gives
/// figures for.
pub(super) struct Group {
    pub(super) procs: &'static str,
    pub(super) args: &'static [&'static str],
    pub(super) rows: &'static [&'static str],
}

/// `spawn-all` with every count, as the reference programs take it.
const SPAWN_ALL: [&str; 4] = [
    "spawn-all",
    SPAWN_ALL_COUNTS[0],
    SPAWN_ALL_COUNTS[1],
    SPAWN_ALL_COUNTS[2],
];

/// The groups, in the table's order; every row of the table is in exactly one.
pub(super) const GROUPS: [Group; 9] = [
    Group {
        procs: "2",
        args: &["spawn-join"],
        rows: &["spawn-join"],
    },
    Group {
        procs: "2",
        args: &SPAWN_ALL,
        rows: &["spawn-all-1k-2p", "spawn-all-100k-2p", "spawn-all-1m-2p"],
    },
    Group {
        procs: "1",
        args: &SPAWN_ALL,
        rows: &["spawn-all-1k-1p", "spawn-all-100k-1p", "spawn-all-1m-1p"],
    },
    Group {
        procs: "1",
        args: &["ping-pong"],
        rows: &["ping-pong-1p"],
    },
    Group {
        procs: "2",
        args: &["ping-pong"],
        rows: &["ping-pong-2p"],
    },
    Group {
        procs: "1",
        args: &["yield"],
        rows: &["yield"],
    },
    Group {
        procs: "2",
        args: &["chan-buffered"],
        rows: &["chan-buffered"],
    },
    Group {
        procs: "2",
        args: &["select", "2", "8"],
        rows: &["select-2", "select-8"],
    },
    Group {
        procs: "2",
        args: &["select-many"],
        rows: &["select-many"],
    },
];

/// The external programs, built, with the figures gathered so far.
pub(super) struct Programs {
    go: Result<(std::path::PathBuf, Vec<(String, f64)>), String>,
    user: Result<(std::path::PathBuf, Vec<(String, f64)>), String>,
}

impl Programs {
    /// Builds Go's reference programs and the user-build crate.
    pub(super) fn build() -> Programs {
        Programs {
            go: build_go().map(|bin| (bin, Vec::new())),
            user: build_user().map(|bin| (bin, Vec::new())),
        }
    }

    /// Runs group `i` (of [`GROUPS`]) with both programs, alternating which goes first so
    /// neither always runs on a machine the other just warmed (or heated).
    pub(super) fn run_group(&mut self, i: usize) {
        let group = &GROUPS[i];
        for turn in 0..2 {
            let side = if (i + turn).is_multiple_of(2) {
                &mut self.go
            } else {
                &mut self.user
            };
            if let Ok((bin, figures)) = side {
                match run_program(bin, group.procs, group.args) {
                    Ok(out) => parse_figures(&out, figures),
                    Err(why) => *side = Err(why),
                }
            }
        }
    }

    /// The figures, and Go's parked lines for each count in `parked`.
    pub(super) fn finish(self, parked: &[usize]) -> External {
        let mut lines = Vec::new();
        if let Ok((bin, _)) = &self.go {
            for &n in parked {
                match run_program(bin, "2", &["parked", &n.to_string()]) {
                    Ok(out) => lines.extend(out.lines().map(|l| format!("go       {l}"))),
                    Err(why) => lines.push(format!("go       parked {n}: {why}")),
                }
            }
        }
        External {
            go: self.go.map(|(_, f)| f),
            user: self.user.map(|(_, f)| f),
            parked: lines,
        }
    }
}
