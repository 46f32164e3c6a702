//! The scheduler comparison's columns that come from programs of their own: Go's reference
//! programs (`benches/go/sched`, when `go` is installed) and tessera-sched as a user builds
//! it (`benches/sched-user`), each printing the median of its own repetitions.

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

/// Runs Go's reference programs and the user-build crate, one workload group at a time,
/// alternating between the two (each prints the median of its own repetitions), then Go's
/// parked workload.
pub(super) fn external_figures(parked: &[usize]) -> External {
    let mut go = build_go().map(|bin| (bin, Vec::new()));
    let mut user = build_user().map(|bin| (bin, Vec::new()));
    let spawn_all: Vec<&str> = std::iter::once("spawn-all")
        .chain(SPAWN_ALL_COUNTS)
        .collect();
    // (processors, arguments, whether the user crate has it).
    let groups: [(&str, &[&str], bool); 9] = [
        ("2", &["spawn-join"], true),
        ("2", &spawn_all, true),
        ("1", &spawn_all, true),
        ("1", &["ping-pong"], true),
        ("2", &["ping-pong"], true),
        ("1", &["yield"], true),
        ("2", &["chan-buffered"], true),
        ("2", &["select", "2", "8"], true),
        ("2", &["select-many"], false),
    ];
    for (i, (procs, args, in_user)) in groups.into_iter().enumerate() {
        // Alternate which program goes first, so neither always runs on a machine the other
        // just warmed (or heated).
        for turn in 0..2 {
            let (side, wanted) = if (i + turn) % 2 == 0 {
                (&mut go, true)
            } else {
                (&mut user, in_user)
            };
            if !wanted {
                continue;
            }
            if let Ok((bin, figures)) = side {
                match run_program(bin, procs, args) {
                    Ok(out) => parse_figures(&out, figures),
                    Err(why) => *side = Err(why),
                }
            }
        }
    }
    let mut lines = Vec::new();
    if let Ok((bin, _)) = &go {
        for &n in parked {
            match run_program(bin, "2", &["parked", &n.to_string()]) {
                Ok(out) => lines.extend(out.lines().map(|l| format!("go       {l}"))),
                Err(why) => lines.push(format!("go       parked {n}: {why}")),
            }
        }
    }
    External {
        go: go.map(|(_, f)| f),
        user: user.map(|(_, f)| f),
        parked: lines,
    }
}
