//! Fuzz target: random alloc / realloc / free sequences against Tessera, checked by the
//! interpreter in `ops.rs` (shared with the seed-corpus test in `alloc/tests/fuzz_corpus.rs`).
#![no_main]

#[path = "../ops.rs"]
mod ops;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ops::run(data));
