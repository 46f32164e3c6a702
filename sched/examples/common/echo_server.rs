//! The echo workload's server (BENCHMARKS.md, "echo"): a coroutine per connection that reads
//! into a 4 KiB buffer and writes back what it read until the peer closes (Go's reference,
//! `benches/go/echo/main.go`, does the same). One source for both of tessera-sched's builds
//! in the echo comparison: the `echo` example (the runner's build) and `benches/sched-user`'s
//! `echo` (a user's build) include this file, so the two rows measure the same program.

use std::io::{ErrorKind, Read, Write};

use tessera_sched::net::{TcpListener, TcpStream};

/// One connection, until the peer closes it.
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

/// Binds `addr`, prints `listening on ADDR` (the comparison waits for that line), then
/// serves every connection in a coroutine of its own until killed. Call on a coroutine.
pub(crate) fn serve_forever(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
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
}
