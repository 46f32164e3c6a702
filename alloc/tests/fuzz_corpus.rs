//! Runs the fuzz target's committed seed corpus (`fuzz/corpus/alloc_ops/`) through the same
//! interpreter, so every `cargo test` replays it.

#[path = "../../fuzz/ops.rs"]
mod ops;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[test]
fn seed_corpus_replays_clean() {
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
