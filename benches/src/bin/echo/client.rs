//! The load generator: `conns` TCP connections, each a closed loop of "write one message,
//! read its echo back, check it, write the next". It shares the machine's two cores with
//! the server it measures, so it is built to cost little: a fixed, small number of threads,
//! each owning a share of the connections and one level-triggered epoll, one `read` per
//! readiness event and one `write` per request (no per-request allocation or thread
//! hand-off). Every server is measured by this same code with the same settings.
//!
//! Timing: all threads share one start instant. Requests that complete during the warm-up
//! are not counted; throughput is the requests completed inside the measured window divided
//! by its length, and each of them contributes its latency (from just before its `write` to
//! the read that completed its echo) to the histogram.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::histogram::Histogram;
use crate::sys::{self, Epoll};

/// How one client run is shaped.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) conns: usize,
    /// Message size in bytes.
    pub(crate) size: usize,
    pub(crate) threads: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct ClientResult {
    pub(crate) requests: u64,
    pub(crate) window: Duration,
    pub(crate) latencies: Histogram,
}

impl ClientResult {
    pub(crate) fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }
}

/// How long a connection may go without completing a request before the run is declared
/// stuck; generous, since a loaded shared machine can stall a process for a while.
const STALL: Duration = Duration::from_secs(5);
/// How long to keep retrying `connect` while a just-started server comes up.
const CONNECT_RETRY: Duration = Duration::from_secs(3);

/// Opens the connections, runs the warm-up and the measured window, closes them.
/// `on_start` is called with the shared start instant once every connection is open (the
/// driver uses it to sample CPU time at the window's edges).
pub(crate) fn run(
    config: &ClientConfig,
    on_start: impl FnOnce(Instant),
) -> Result<ClientResult, String> {
    if config.conns == 0 || config.threads == 0 || config.size == 0 {
        return Err("connections, threads and message size must be positive".into());
    }
    let mut shares: Vec<Vec<Connection>> = (0..config.threads).map(|_| Vec::new()).collect();
    for id in 0..config.conns {
        let stream =
            connect(config.addr).map_err(|e| format!("connect to {}: {e}", config.addr))?;
        shares[id % config.threads].push(Connection::new(stream, id, config.size));
    }
    let start = Instant::now();
    let window_start = start + config.warmup;
    let end = window_start + config.duration;
    on_start(start);
    let results: Vec<Result<Histogram, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, share)| {
                std::thread::Builder::new()
                    .name(format!("echo-client-{i}"))
                    .spawn_scoped(scope, move || drive(share, window_start, end))
                    .expect("spawn a client thread")
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect()
    });
    let mut latencies = Histogram::new();
    for result in results {
        latencies.merge(&result?);
    }
    Ok(ClientResult {
        requests: latencies.count(),
        window: config.duration,
        latencies,
    })
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let give_up = Instant::now() + CONNECT_RETRY;
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    // Each message is one small write that must leave at once (Go's default for every TCP
    // connection; the peer servers in this binary set it too).
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// One connection's state in the closed loop.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    id: usize,
    /// Requests sent so far; the next message's contents derive from it.
    seq: u64,
    sent: Vec<u8>,
    received: Vec<u8>,
    /// How many bytes of the current echo have arrived.
    got: usize,
    sent_at: Instant,
}

impl Connection {
    fn new(stream: TcpStream, id: usize, size: usize) -> Self {
        Connection {
            stream,
            id,
            seq: 0,
            sent: vec![0; size],
            received: vec![0; size],
            got: 0,
            sent_at: Instant::now(),
        }
    }

    /// Fills the next message with bytes that differ per connection and per request, so an
    /// echo from the wrong connection or a stale one does not pass the check.
    fn next_message(&mut self) {
        self.seq += 1;
        let pattern = (self.seq << 16 | self.id as u64).to_le_bytes();
        for (i, byte) in self.sent.iter_mut().enumerate() {
            *byte = pattern[i % 8].wrapping_add((i / 8) as u8);
        }
    }

    /// Writes the next message and starts its clock at `now`. The send buffer is empty here
    /// (the previous echo came back, so the server had read it), so the write completes at
    /// once; a partial write is handled anyway, by waiting for room.
    fn send(&mut self, now: Instant) -> Result<(), String> {
        self.next_message();
        self.sent_at = now;
        self.got = 0;
        let mut off = 0;
        while off < self.sent.len() {
            match (&self.stream).write(&self.sent[off..]) {
                Ok(0) => return Err(self.fail("write returned 0")),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait_writable(self.stream.as_raw_fd(), STALL)
                        .map_err(|e| self.fail(&e.to_string()))?;
                }
                Err(e) => return Err(self.fail(&e.to_string())),
            }
        }
        Ok(())
    }

    /// Reads what has arrived; `Ok(true)` when the whole echo is in and matches.
    fn receive(&mut self) -> Result<bool, String> {
        match (&self.stream).read(&mut self.received[self.got..]) {
            Ok(0) => Err(self.fail("the server closed the connection")),
            Ok(n) => {
                self.got += n;
                if self.got < self.received.len() {
                    return Ok(false);
                }
                if self.received != self.sent {
                    return Err(self.fail("the echo differs from the message sent"));
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail(&e.to_string())),
        }
    }

    fn fail(&self, why: &str) -> String {
        format!("connection {} request {}: {why}", self.id, self.seq)
    }
}

/// One client thread: its connections' closed loops until `end`; returns the latencies of the
/// requests completed in `[window_start, end)`.
fn drive(
    mut conns: Vec<Connection>,
    window_start: Instant,
    end: Instant,
) -> Result<Histogram, String> {
    let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    for (token, conn) in conns.iter().enumerate() {
        epoll
            .add_readable(conn.stream.as_raw_fd(), token as u64)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
    }
    let mut latencies = Histogram::new();
    let mut events = sys::empty_events(conns.len());
    let now = Instant::now();
    for conn in &mut conns {
        conn.send(now)?;
    }
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Wake at least every 100 ms to notice the end of the run (or a stuck server).
        let timeout = (end - now).min(Duration::from_millis(100));
        let n = epoll
            .wait(&mut events, timeout)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        if n == 0 {
            let now = Instant::now();
            if let Some(stuck) = conns
                .iter()
                .find(|c| now.saturating_duration_since(c.sent_at) > STALL)
            {
                return Err(stuck.fail("no echo for 5 s"));
            }
            continue;
        }
        for event in &events[..n] {
            let conn = &mut conns[event.u64 as usize];
            if !conn.receive()? {
                continue;
            }
            let done = Instant::now();
            if done >= window_start && done < end {
                latencies.record(done - conn.sent_at);
            }
            conn.send(done)?;
        }
    }
    Ok(latencies)
}
