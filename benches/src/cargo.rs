//! The builds the runner makes before it measures (libtessera.so for `LD_PRELOAD`, the
//! binaries of `--rust-programs`), with the cargo that started it (`$CARGO`, which `cargo
//! run` sets), so what is measured is the allocator of this working tree.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};

/// The cargo that started this process, if one did.
pub fn started_by() -> Option<OsString> {
    std::env::var_os("CARGO")
}

/// Runs `cargo build --release ARGS --manifest-path MANIFEST` into `target` (a no-op when
/// everything is up to date), saying on stderr what it builds and `why`. Cargo's progress and
/// errors go to stderr, its stdout nowhere.
pub fn build_release(
    cargo: &OsStr,
    manifest: &Path,
    target: &Path,
    args: &[&str],
    why: &str,
) -> Result<(), String> {
    let line = format!("cargo build --release {}", args.join(" "));
    eprintln!(
        "tessera-bench: {line} --manifest-path {} ({why}, in {})",
        manifest.display(),
        target.display()
    );
    let status = Command::new(cargo)
        .args(["build", "--release"])
        .args(args)
        .arg("--manifest-path")
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{line}: {s}")),
        Err(e) => Err(format!("cannot run {}: {e}", cargo.to_string_lossy())),
    }
}
