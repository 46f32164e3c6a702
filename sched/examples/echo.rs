//! A coroutine-per-connection TCP echo server (BENCHMARKS.md, "echo").
//!
//! `cargo run --release -p tessera-sched --example echo -- 127.0.0.1:7000`
//!
//! Prints `listening on ADDR` once bound, then echoes every connection until killed.
//! `TESSERA_PROCS` sets the number of processors (default: the CPUs available).

// The server itself, shared with the user-build crate's `echo` (`benches/sched-user`).
#[path = "common/echo_server.rs"]
mod echo_server;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let rt = tessera_sched::Runtime::new().unwrap_or_else(|e| {
        eprintln!("echo: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    if let Err(e) = rt.block_on(move || echo_server::serve_forever(&addr)) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
