//! Runs the fuzz target's committed seed corpus (`fuzz/corpus/alloc_ops/`) through the same
//! interpreter, so every `cargo test` replays it.

#[path = "../../fuzz/ops.rs"]
mod ops;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[test]
fn seed_corpus_replays_clean() {
    replay();
}

/// The same corpus with every thread on the per-CPU caches (`TESSERA_CACHE=percpu`, read at
/// the first allocation, so in a child process).
#[test]
fn seed_corpus_replays_clean_on_percpu_caches() {
    if std::env::var("TESSERA_CHILD").as_deref() == Ok("percpu-corpus") {
        assert!(tessera::cache_mode().thread_percpu);
        replay();
        println!("PERCPU-CORPUS-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "seed_corpus_replays_clean_on_percpu_caches",
            "--nocapture",
        ])
        .env("TESSERA_CHILD", "percpu-corpus")
        .env("TESSERA_CACHE", "percpu")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PERCPU-CORPUS-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/alloc_ops");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        ops::run(&std::fs::read(&path).unwrap());
        ran += 1;
    }
    assert!(
        ran >= 10,
        "the seed corpus went missing from {}",
        dir.display()
    );
}
