//! Entry point of the comparison runner; everything lives in the library so the criterion
//! benches and the unit tests can reach it.
//!
//! The process's global allocator is `System` for the runner's own bookkeeping (the
//! allocator workloads call each allocator directly), except in the scheduler comparison's
//! child process, which the runner starts with `TESSERA_BENCH_GLOBAL=tessera` so that
//! tessera-sched, may and tokio all allocate through Tessera there, as in the criterion
//! bench. The choice is made once, at the first allocation, before anything could have
//! been allocated by the other.

#[global_allocator]
static GLOBAL: tessera_bench::global::Chosen = tessera_bench::global::Chosen;

fn main() {
    std::process::exit(tessera_bench::main_entry());
}
