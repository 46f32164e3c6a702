//! Real programs under LD_PRELOAD allocators (placeholder, filled below).
use crate::args::ProgramOptions;

/// Names of the preloads.
pub const PRELOAD_NAMES: &[&str] = &["glibc", "mimalloc", "jemalloc", "tcmalloc", "tessera"];

/// Runs the programs mode.
pub fn run(_options: &ProgramOptions) -> i32 {
    1
}
