//! Entry point of the comparison runner; everything lives in the library so the criterion
//! benches and the unit tests can reach it.

fn main() {
    std::process::exit(tessera_bench::main_entry());
}
