//! The workloads with jemalloc (`tikv-jemallocator`) as the global allocator.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(tessera_rust_programs::main_entry("jemalloc"));
}
