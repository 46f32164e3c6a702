//! The Rust peer servers of the echo comparison, each the plain idiom of its runtime: a
//! task (tokio) or coroutine (may) per connection that reads into a 4 KiB buffer and writes
//! back what it read, until the peer closes. Both run 2 worker threads (the machine's
//! cores), like Go with GOMAXPROCS=2 and tessera-sched with TESSERA_PROCS=2, and set
//! TCP_NODELAY on accepted connections, as Go does by default. Otherwise each runtime keeps
//! its defaults (may, for one, pins its workers to cores).
//!
//! Contract shared with the Go program and tessera-sched's `echo` example: listen on ADDR,
//! print `listening on <ADDR>` on stdout once accepting, run until killed.

use std::io::{Read, Write};
use std::net::SocketAddr;

/// Read buffer per connection (the Go program uses the same).
const BUF: usize = 4096;

/// Which runtime serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    Tokio,
    May,
}

impl Runtime {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "tokio" => Some(Runtime::Tokio),
            "may" => Some(Runtime::May),
            _ => None,
        }
    }
}

/// Serves until killed; returns only on a setup error.
pub(crate) fn serve(runtime: Runtime, addr: SocketAddr, workers: usize) -> Result<(), String> {
    match runtime {
        Runtime::Tokio => serve_tokio(addr, workers),
        Runtime::May => serve_may(addr, workers),
    }
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

fn serve_tokio(addr: SocketAddr, workers: usize) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_io()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        announce(listener.local_addr().unwrap_or(addr));
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: keep serving the connections we have.
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

fn serve_may(addr: SocketAddr, workers: usize) -> Result<(), String> {
    may::config().set_workers(workers);
    let listener = may::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    announce(listener.local_addr().unwrap_or(addr));
    // The accept loop is a coroutine too, as tokio's is a task: everything runs on may's
    // workers, and the main thread only waits.
    let accept_loop = move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            // SAFETY: may's contract for spawn is that a coroutine holds no thread-local
            // references across its yields (it may resume on another worker); the handler
            // touches only its own socket and buffer.
            unsafe { may::coroutine::spawn(move || echo_may(stream)) };
        }
    };
    // SAFETY: as above; the accept loop touches only the listener.
    let handle = unsafe { may::coroutine::spawn(accept_loop) };
    handle
        .join()
        .map_err(|_| "the may accept loop panicked".to_string())?;
    Ok(())
}

fn echo_may(mut stream: may::net::TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
