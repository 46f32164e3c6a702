//! Where the runner writes its report: `<target>/tessera-bench/`, with `<target>` from
//! `CARGO_TARGET_DIR` when set, else the workspace's `target/`.

use std::path::{Path, PathBuf};

/// The workspace root (this package lives in `<root>/benches`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| workspace_root());
    target_dir_from(
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
        &cwd,
    )
}

/// `target_dir` with the environment passed in (for tests). A relative `CARGO_TARGET_DIR` is
/// relative to the current directory, as cargo takes it.
pub fn target_dir_from(env: Option<PathBuf>, cwd: &Path) -> PathBuf {
    match env {
        Some(dir) if !dir.as_os_str().is_empty() => cwd.join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The runner's output directory.
pub fn report_dir() -> PathBuf {
    target_dir().join("tessera-bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_follows_the_environment() {
        let cwd = Path::new("/somewhere");
        assert_eq!(
            target_dir_from(Some("/tmp/t".into()), cwd),
            PathBuf::from("/tmp/t")
        );
        assert_eq!(target_dir_from(None, cwd), workspace_root().join("target"));
        assert_eq!(
            target_dir_from(Some("rel".into()), cwd),
            PathBuf::from("/somewhere/rel")
        );
        assert!(workspace_root().join("Cargo.toml").exists());
    }
}
