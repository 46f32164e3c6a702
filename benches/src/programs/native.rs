//! The C sources of `--programs`, committed under `programs/c/` and compiled with the system
//! C compiler at run time into `<target>/tessera-bench/programs/`: the threaded stress
//! program (`cc -O2 -pthread`) and the glibc shim (a shared object that puts glibc's own
//! malloc back in front of an allocator a program links itself).

use crate::paths;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// stress.c: threads, mixed sizes, cross-thread frees, a checksum of contents.
pub const STRESS_C: &str = include_str!("c/stress.c");
/// glibc_shim.c: malloc and friends forwarded to glibc's `__libc_*` entry points.
pub const GLIBC_SHIM_C: &str = include_str!("c/glibc_shim.c");

/// How programs (rather than shared objects) are compiled: the flags a user's `make` would
/// give a threaded program.
pub const PROGRAM_FLAGS: &[&str] = &["-O2", "-pthread"];

/// Where the compiled files go.
pub fn build_dir() -> PathBuf {
    paths::report_dir().join("programs")
}

/// The C compiler: `$CC`, else `cc`, else `gcc`, else `clang`, if one is found.
pub fn compiler() -> Option<PathBuf> {
    let from_env = std::env::var_os("CC").map(PathBuf::from);
    let path = std::env::var_os("PATH").unwrap_or_default();
    from_env
        .into_iter()
        .chain(["cc", "gcc", "clang"].map(PathBuf::from))
        .find_map(|name| {
            if name.components().count() > 1 {
                return name.is_file().then_some(name);
            }
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|p| p.is_file())
        })
}

/// Compiles `source` (the text of `name`.c) with `flags` into `out`; `headers` (file name,
/// text) are written beside it for its `#include "..."`s. Errors carry the compiler's last
/// line of output.
pub fn compile(
    cc: &Path,
    name: &str,
    source: &str,
    headers: &[(&str, &str)],
    flags: &[&str],
    out: &Path,
) -> Result<PathBuf, String> {
    let dir = out
        .parent()
        .ok_or_else(|| format!("bad output path {}", out.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = format!("{name}.c");
    for (file, text) in headers.iter().copied().chain([(file.as_str(), source)]) {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let src = dir.join(file);
    let mut command = Command::new(cc);
    command.args(flags).arg("-o").arg(out).arg(&src);
    match super::measure::run(command, Duration::from_secs(120)) {
        Ok(_) => Ok(out.to_path_buf()),
        Err(why) => Err(format!("{} {name}.c failed: {why}", cc.display())),
    }
}

/// Builds the stress program; `Err` says why it cannot run.
pub fn build_stress() -> Result<PathBuf, String> {
    let cc = compiler().ok_or("no C compiler (cc, gcc or clang) found")?;
    compile(
        &cc,
        "stress",
        STRESS_C,
        &[],
        PROGRAM_FLAGS,
        &build_dir().join("stress"),
    )
}

/// Builds the glibc shim; `Err` says why it cannot.
pub fn build_glibc_shim() -> Result<PathBuf, String> {
    let cc = compiler().ok_or("no C compiler (cc, gcc or clang) found")?;
    compile(
        &cc,
        "glibc_shim",
        GLIBC_SHIM_C,
        &[],
        &["-O2", "-shared", "-fPIC"],
        &build_dir().join("libglibc_shim.so"),
    )
}

/// The allocator library `binary` links itself (jemalloc, mimalloc, tcmalloc), according to
/// `ldd`; `None` if it links none or `ldd` cannot tell.
pub fn linked_allocator(binary: &Path) -> Option<String> {
    let mut command = Command::new("ldd");
    command.arg(binary);
    let out = super::measure::run(command, Duration::from_secs(20)).ok()?;
    out.stdout.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        ["libjemalloc", "libmimalloc", "libtcmalloc"]
            .iter()
            .any(|a| name.starts_with(a))
            .then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_embedded() {
        assert!(STRESS_C.contains("pthread_create"));
        assert!(GLIBC_SHIM_C.contains("__libc_malloc"));
    }

    #[test]
    fn stress_compiles_and_checks_itself() {
        let Some(cc) = compiler() else {
            eprintln!("no C compiler: skipped");
            return;
        };
        let dir = std::env::temp_dir().join(format!("tessera-native-{}", std::process::id()));
        let exe = compile(&cc, "stress", STRESS_C, &[], PROGRAM_FLAGS, &dir.join("s")).unwrap();
        let mut command = Command::new(&exe);
        command.args(["3", "2000", "2"]);
        let m = super::super::measure::run(command, Duration::from_secs(60)).unwrap();
        assert!(m.stdout.ends_with("ok\n"), "{}", m.stdout);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shell_links_no_allocator() {
        assert_eq!(linked_allocator(Path::new("/bin/sh")), None);
    }
}
