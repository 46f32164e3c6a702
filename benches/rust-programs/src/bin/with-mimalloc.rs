//! The workloads with mimalloc (the `mimalloc` crate, its bundled C library) as the global allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(tessera_rust_programs::main_entry("mimalloc"));
}
