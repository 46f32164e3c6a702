//! A coroutine-per-connection TCP echo server (BENCHMARKS.md, "echo").
//!
//! `cargo run --release -p tessera-sched --example echo -- 127.0.0.1:7000`
//!
//! Prints `listening on ADDR` once bound, then echoes every connection until killed.
//! `TESSERA_PROCS` sets the number of processors (default: the CPUs available).

use std::io::{ErrorKind, Read, Write};

use tessera_sched::net::{TcpListener, TcpStream};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

fn serve(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => {
                eprintln!("echo: read: {e}");
                return;
            }
        };
        if let Err(e) = s.write_all(&buf[..n]) {
            if !matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
                eprintln!("echo: write: {e}");
            }
            return;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let rt = tessera_sched::Runtime::new().unwrap_or_else(|e| {
        eprintln!("echo: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    let r = rt.block_on(move || -> std::io::Result<()> {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tessera_sched::spawn(move || serve(s));
                }
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => eprintln!("echo: accept: {e}"),
            }
        }
    });
    if let Err(e) = r {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
