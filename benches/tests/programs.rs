//! End-to-end check of `--programs` run outside cargo (no `$CARGO`, so it cannot build
//! libtessera.so itself) where the library is not built: the runner says where it looked and
//! how to build it, and still runs the programs it can under glibc.

use std::process::Command;

#[test]
fn a_missing_libtessera_is_named_with_the_build_command() {
    let target = std::env::temp_dir().join(format!("tessera-bench-progs-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args(["--programs", "--reps", "1", "--allocators", "glibc,tessera"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lib = target.join("release/libtessera.so");
    assert!(
        stderr.contains(&format!("skipped tessera: {} is not there", lib.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo build --release -p tessera-preload"),
        "{stderr}"
    );
    // With python3, sqlite3, git or a C compiler around, glibc's column still runs and every
    // run matches its own reference.
    match out.status.code() {
        Some(0) => {
            assert!(stdout.contains("program         allocator"), "{stdout}");
            assert!(
                !stdout
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("tessera")),
                "{stdout}"
            );
            assert!(target.join("tessera-bench/programs.md").is_file());
        }
        Some(2) => assert!(stderr.contains("nothing to run"), "{stderr}"),
        other => panic!("exit {other:?}\n{stdout}\n{stderr}"),
    }
    let _ = std::fs::remove_dir_all(&target);
}
