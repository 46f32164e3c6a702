//! The workloads with glibc's malloc (`std::alloc::System`) as the global allocator.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    std::process::exit(tessera_rust_programs::main_entry("system"));
}
