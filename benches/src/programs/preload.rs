//! The C malloc replacements that `--programs` and the C mode put under programs with
//! `LD_PRELOAD`, at their Debian paths; `glibc` is the program with no preload at all.

use crate::cargo;
use crate::paths;
use std::path::{Path, PathBuf};

/// Names of the preloads, in table order. `glibc` is the reference whose output every other
/// run must match.
pub const PRELOAD_NAMES: &[&str] = &["glibc", "tessera", "mimalloc", "jemalloc", "tcmalloc"];

/// Every name `--allocators` takes: [`PRELOAD_NAMES`] and, on request only,
/// `tessera-unhardened`, libtessera.so built with `--cfg tessera_unhardened` (no free-list
/// encoding or double-free checks, issue #15), so the hardening's cost is measured side by
/// side in one run; and `tessera-noprof`, libtessera.so with `TESSERA_PROF_RATE=0` (heap
/// profiling off, issue #18: `tessera` runs at the default rate), in the C and programs
/// modes; `tessera-percpu` and `tessera-auto`, libtessera.so with `TESSERA_CACHE=percpu` or
/// `auto` (per-CPU caches, issue #19: `tessera` runs with thread caches, the default).
pub const ALL_PRELOAD_NAMES: &[&str] = &[
    "glibc",
    "tessera",
    "mimalloc",
    "jemalloc",
    "tcmalloc",
    "tessera-unhardened",
    "tessera-noprof",
    "tessera-percpu",
    "tessera-auto",
];

/// Where the runner builds `tessera-unhardened`, under the target directory: a directory
/// of its own, since its flags differ from every other build's.
const UNHARDENED_DIR: &str = "tessera-unhardened";

/// Debian's multiarch library directory.
const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// One allocator to preload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// Short name.
    pub name: &'static str,
    /// The shared object for `LD_PRELOAD`; `None` for glibc (no preload).
    pub library: Option<PathBuf>,
    /// How to get the library when it is missing.
    pub install_hint: &'static str,
    /// Environment the program runs with under this preload.
    pub env: &'static [(&'static str, &'static str)],
}

impl Preload {
    /// The preload called `name` (one of [`PRELOAD_NAMES`]).
    pub fn named(name: &'static str) -> Preload {
        let (library, install_hint) = match name {
            "glibc" => (None, ""),
            "tessera" | "tessera-noprof" | "tessera-percpu" | "tessera-auto" => (
                Some(paths::target_dir().join("release").join("libtessera.so")),
                "cargo build --release -p tessera-preload",
            ),
            "tessera-unhardened" => (
                Some(
                    paths::target_dir()
                        .join(UNHARDENED_DIR)
                        .join("release")
                        .join("libtessera.so"),
                ),
                "cargo build --release -p tessera-preload --config \
                 'build.rustflags=[\"--cfg\", \"tessera_unhardened\"]' \
                 --target-dir <target>/tessera-unhardened",
            ),
            "mimalloc" => (
                Some(PathBuf::from(LIBDIR).join("libmimalloc.so.2")),
                "apt-get install libmimalloc2.0",
            ),
            "jemalloc" => (
                Some(PathBuf::from(LIBDIR).join("libjemalloc.so.2")),
                "apt-get install libjemalloc2",
            ),
            "tcmalloc" => (
                Some(PathBuf::from(LIBDIR).join("libtcmalloc_minimal.so.4")),
                "apt-get install libtcmalloc-minimal4",
            ),
            other => panic!("unknown preload {other:?}"),
        };
        let env: &'static [(&'static str, &'static str)] = match name {
            "tessera-noprof" => &[("TESSERA_PROF_RATE", "0")],
            "tessera-percpu" => &[("TESSERA_CACHE", "percpu")],
            "tessera-auto" => &[("TESSERA_CACHE", "auto")],
            _ => &[],
        };
        Preload {
            name,
            library,
            install_hint,
            env,
        }
    }

    /// Whether the library is there (glibc always is).
    pub fn available(&self) -> bool {
        self.library.as_ref().is_none_or(|l| l.is_file())
    }

    /// Why this preload is left out when its library is not there, and how to get it.
    pub fn missing_note(&self) -> String {
        let lib = self
            .library
            .as_ref()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let hint = if self.name == "tessera" {
            format!(
                "build it with `{}`, with the same CARGO_TARGET_DIR as this run",
                self.install_hint
            )
        } else {
            self.install_hint.to_string()
        };
        format!("skipped {}: {lib} is not there ({hint})", self.name)
    }
}

/// Builds libtessera.so with the cargo that started this process, into the target
/// directory where [`Preload::named`] looks for it, so the library measured is the allocator
/// as it is in this working tree: a no-op when it is up to date. `None` when no cargo started
/// us.
pub fn build_libtessera() -> Option<Result<(), String>> {
    let cargo = cargo::started_by()?;
    Some(cargo::build_release(
        &cargo,
        &paths::workspace_root().join("Cargo.toml"),
        &paths::target_dir(),
        &["-p", "tessera-preload"],
        "libtessera.so for LD_PRELOAD",
    ))
}

/// Builds the `tessera-unhardened` library (see [`ALL_PRELOAD_NAMES`]) as
/// [`build_libtessera`] builds the ordinary one.
pub fn build_libtessera_unhardened() -> Option<Result<(), String>> {
    build_unhardened(
        "tessera-preload",
        "libtessera.so without hardening, for the side-by-side cost",
    )
}

/// Builds `package` with `--cfg tessera_unhardened` (Tessera without its hardening, issue
/// #15) into `<target>/tessera-unhardened`, with the cargo that started this process. `None`
/// when no cargo started us.
pub fn build_unhardened(package: &str, why: &str) -> Option<Result<(), String>> {
    let cargo = cargo::started_by()?;
    Some(cargo::build_release(
        &cargo,
        &paths::workspace_root().join("Cargo.toml"),
        &unhardened_target(),
        &[
            "-p",
            package,
            "--config",
            "build.rustflags=[\"--cfg\", \"tessera_unhardened\"]",
        ],
        why,
    ))
}

/// The target directory of the builds without hardening.
pub fn unhardened_target() -> PathBuf {
    paths::target_dir().join(UNHARDENED_DIR)
}

/// The preloads among `names` whose library is there, building libtessera.so first (so the
/// library measured is the working tree's, in the C mode and the programs mode alike: the
/// programs mode once measured a stale one); notes say what was left out and why.
pub fn available(names: &[&'static str], notes: &mut Vec<String>) -> Vec<Preload> {
    let mut out = Vec::new();
    for &name in names {
        let preload = Preload::named(name);
        let build = match name {
            "tessera" | "tessera-noprof" | "tessera-percpu" | "tessera-auto" => {
                Some(build_libtessera as fn() -> _)
            }
            "tessera-unhardened" => Some(build_libtessera_unhardened as fn() -> _),
            _ => None,
        };
        if let Some(build) = build {
            match build() {
                Some(Ok(())) => {}
                Some(Err(why)) => notes.push(format!("building libtessera.so failed: {why}")),
                None if preload.available() => notes.push(format!(
                    "not started by cargo: {} is measured as it is, not rebuilt",
                    preload
                        .library
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                )),
                None => {}
            }
        }
        if preload.available() {
            out.push(preload);
        } else {
            notes.push(preload.missing_note());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_and_glibc_needs_nothing() {
        for name in ALL_PRELOAD_NAMES {
            let p = Preload::named(name);
            assert_eq!(p.library.is_none(), *name == "glibc");
        }
        assert!(Preload::named("glibc").available());
        assert!(
            Preload::named("tessera")
                .library
                .unwrap()
                .ends_with("release/libtessera.so")
        );
    }
}
