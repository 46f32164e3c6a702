//! An HTTP/1.1 "hello, world" server: one coroutine per connection, keep-alive, pipelined
//! requests answered in order.
//!
//! `cargo run --release -p tessera-sched --example http -- 127.0.0.1:8080`, then
//! `curl -v http://127.0.0.1:8080/`.
//!
//! It also serves `/debug/pprof/` as Go's `net/http/pprof` does
//! (`tessera_sched::profile::http`): `go tool pprof http://127.0.0.1:8080/debug/pprof/heap`
//! (or `allocs`, `goroutine`), and `curl http://127.0.0.1:8080/debug/pprof/sched_latency`.
//!
//! The parser is deliberately small: it reads the request line and headers up to the
//! blank line, honours `Connection: close` and HTTP/1.0, and skips a `Content-Length` body.
//! Anything malformed or over 16 KiB of headers gets `400 Bad Request` and the connection
//! is closed.

use std::io::{ErrorKind, Read, Write};

use tessera_sched::net::{TcpListener, TcpStream};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const MAX_HEAD: usize = 16 << 10;
const BODY: &str = "Hello, world!\n";

/// What the server needs to know of one request head.
struct Head {
    keep_alive: bool,
    body_len: usize,
    /// The request target (path and query).
    target: String,
}

/// Parses one request head (`text` ends at the blank line). `None` if malformed.
fn parse(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n");
    let request = lines.next()?;
    let mut parts = request.split(' ');
    let (_method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut head = Head {
        keep_alive: version == "HTTP/1.1",
        body_len: 0,
        target: target.to_owned(),
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                head.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            head.body_len = value.parse().ok()?;
        }
    }
    Some(head)
}

fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Read until a whole head is buffered.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                s.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(head) = std::str::from_utf8(&buf[..end]).ok().and_then(parse) else {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        // Skip the body, reading more if it is not all here.
        let skip = end + head.body_len;
        while buf.len() < skip {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..skip);
        let conn = if head.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        // `/debug/pprof/...` (Go's `net/http/pprof`), else the greeting.
        match tessera_sched::profile::http::respond(&head.target) {
            Some(r) => {
                let header = format!(
                    "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
                    r.status,
                    r.reason(),
                    r.content_type,
                    r.body.len()
                );
                s.write_all(header.as_bytes())?;
                s.write_all(&r.body)?;
            }
            None => {
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{BODY}",
                    BODY.len()
                );
                s.write_all(response.as_bytes())?;
            }
        }
        if !head.keep_alive {
            return Ok(());
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let rt = tessera_sched::Runtime::new().unwrap_or_else(|e| {
        eprintln!("http: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    let r = rt.block_on(move || -> std::io::Result<()> {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on http://{}/", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    tessera_sched::spawn(move || {
                        if let Err(e) = serve(s)
                            && !matches!(
                                e.kind(),
                                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                            )
                        {
                            eprintln!("http: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("http: accept: {e}"),
            }
        }
    });
    if let Err(e) = r {
        eprintln!("http: {e}");
        std::process::exit(1);
    }
}
