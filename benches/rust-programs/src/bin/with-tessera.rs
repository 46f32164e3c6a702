//! The workloads with Tessera as the global allocator.

#[global_allocator]
static GLOBAL: tessera::Tessera = tessera::Tessera;

fn main() {
    std::process::exit(tessera_rust_programs::main_entry("tessera"));
}
