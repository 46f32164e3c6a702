//! TCP and UDP sockets with a blocking-style API that parks the coroutine, not the thread
//! (Go's `net` package on the netpoller, netpoll.rs).
//!
//! Every socket is non-blocking underneath. An operation tries the system call; on `EAGAIN`
//! the coroutine parks on the socket's poll descriptor until epoll reports readiness, then
//! retries. Outside a coroutine (a plain thread, or inside `blocking`) the same calls wait in
//! `poll(2)` instead, so the types work anywhere.
//!
//! Deadlines follow Go: `set_read_deadline`/`set_write_deadline` take an absolute instant
//! that applies to every later operation (and to one already waiting) until changed;
//! `set_read_timeout`/`set_write_timeout` follow std and bound each operation separately.
//! A passed deadline or timeout fails the operation with `ErrorKind::TimedOut`; the socket
//! stays usable.
//!
//! ```
//! use std::io::{Read, Write};
//! use tessera_sched::net::{TcpListener, TcpStream};
//! let rt = tessera_sched::Runtime::builder().procs(2).build().unwrap();
//! rt.block_on(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = tessera_sched::spawn(move || {
//!         let (mut s, _) = listener.accept().unwrap();
//!         let mut buf = [0; 5];
//!         s.read_exact(&mut buf).unwrap();
//!         s.write_all(&buf).unwrap();
//!     });
//!     let mut c = TcpStream::connect(addr).unwrap();
//!     c.write_all(b"hello").unwrap();
//!     let mut buf = [0; 5];
//!     c.read_exact(&mut buf).unwrap();
//!     assert_eq!(&buf, b"hello");
//!     server.join().unwrap();
//! });
//! ```

use core::fmt;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{self as stdnet, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use tessera_sys::error::{EINPROGRESS, EINTR, ENOTCONN};
use tessera_sys::net as sys_net;

use crate::netpoll::{Dir, PollDesc};
use crate::sys::os_error;

/// A std socket in non-blocking mode with its poll descriptor and per-operation timeouts.
struct Pollable<S: AsRawFd> {
    io: ManuallyDrop<S>,
    pd: &'static PollDesc,
    /// Per-operation timeouts in nanoseconds (0: none).
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// The last stream read (write) was short, so the socket buffer was empty (full) then:
    /// the next one waits for readiness before its system call instead of paying for an
    /// `EAGAIN` first (tokio clears readiness on a short read for the same reason). An edge
    /// that came after the short call has set the descriptor's `ready`, so the wait returns
    /// at once and nothing is missed.
    drained: [AtomicBool; 2],
}

impl<S: AsRawFd> Pollable<S> {
    fn new(io: S) -> Self {
        let pd = PollDesc::get(io.as_raw_fd());
        Self {
            io: ManuallyDrop::new(io),
            pd,
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
            drained: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// Runs `f` until it does not return `WouldBlock`, parking in between.
    fn io<R>(&self, dir: Dir, f: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.io_after(dir, false, f)
    }

    /// A stream read or write of `len` bytes: `io`, skipping the first system call when
    /// the last one was short (`drained`).
    fn stream_io(
        &self,
        dir: Dir,
        len: usize,
        f: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let drained = &self.drained[dir as usize];
        let wait_first = drained.load(Ordering::Relaxed);
        if wait_first {
            drained.store(false, Ordering::Relaxed);
        }
        let n = self.io_after(dir, wait_first, f)?;
        if n > 0 && n < len {
            drained.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn io_after<R>(
        &self,
        dir: Dir,
        mut wait_first: bool,
        mut f: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        let timeout = match dir {
            Dir::Read => &self.read_timeout,
            Dir::Write => &self.write_timeout,
        }
        .load(Ordering::Relaxed);
        let mut op_deadline = None;
        loop {
            // With `wait_first`, straight to the wait (a `WouldBlock` error made up to be
            // tested cost ~28 instructions a request in the echo server's profile).
            if !wait_first {
                match f(&self.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => return r,
                }
            }
            wait_first = false;
            if timeout != 0 && op_deadline.is_none() {
                op_deadline = Some(Instant::now() + Duration::from_nanos(timeout));
            }
            self.pd.wait(dir, op_deadline)?;
        }
    }

    fn set_timeout(&self, dir: Dir, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero timeout is not allowed (std's rule); use None for no timeout",
            ));
        }
        let ns = t.map_or(0, |t| t.as_nanos().clamp(1, u64::MAX as u128) as u64);
        match dir {
            Dir::Read => &self.read_timeout,
            Dir::Write => &self.write_timeout,
        }
        .store(ns, Ordering::Relaxed);
        Ok(())
    }

    fn timeout(&self, dir: Dir) -> Option<Duration> {
        let ns = match dir {
            Dir::Read => &self.read_timeout,
            Dir::Write => &self.write_timeout,
        }
        .load(Ordering::Relaxed);
        (ns != 0).then(|| Duration::from_nanos(ns))
    }
}

impl<S: AsRawFd> Drop for Pollable<S> {
    fn drop(&mut self) {
        self.pd.deregister();
        // SAFETY: dropped once, here; the socket closes before its descriptor is recycled.
        unsafe { ManuallyDrop::drop(&mut self.io) };
        self.pd.put();
    }
}

/// Tries each address of `addr` in turn, returning the first success or the last error.
/// The lookup runs in `blocking`: for a host name it is a `getaddrinfo` that may wait on
/// DNS, and it is only done when binding or connecting, never per datagram.
fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let addrs: Vec<SocketAddr> = crate::blocking(|| addr.to_socket_addrs().map(Iterator::collect))?;
    let mut last = None;
    for a in &addrs {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

macro_rules! deadlines {
    () => {
        /// Sets an absolute deadline for reads, now and later (`None` clears it), as Go's
        /// `SetReadDeadline`: a read waiting when it passes fails with `TimedOut`.
        pub fn set_read_deadline(&self, deadline: Option<Instant>) {
            self.s.pd.set_deadline(Dir::Read, deadline);
        }

        /// Sets an absolute deadline for writes (`None` clears it).
        pub fn set_write_deadline(&self, deadline: Option<Instant>) {
            self.s.pd.set_deadline(Dir::Write, deadline);
        }

        /// Sets both deadlines.
        pub fn set_deadline(&self, deadline: Option<Instant>) {
            self.set_read_deadline(deadline);
            self.set_write_deadline(deadline);
        }

        /// Bounds each read separately, like std's `set_read_timeout` (but the error is
        /// `TimedOut`). Zero is rejected, as in std.
        pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
            self.s.set_timeout(Dir::Read, t)
        }

        /// Bounds each write separately.
        pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
            self.s.set_timeout(Dir::Write, t)
        }

        /// The per-read timeout.
        pub fn read_timeout(&self) -> Option<Duration> {
            self.s.timeout(Dir::Read)
        }

        /// The per-write timeout.
        pub fn write_timeout(&self) -> Option<Duration> {
            self.s.timeout(Dir::Write)
        }

        /// The address this socket is bound to.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.s.io.local_addr()
        }

        /// Takes and clears the socket's pending error (`SO_ERROR`).
        pub fn take_error(&self) -> io::Result<Option<io::Error>> {
            self.s.io.take_error()
        }
    };
}

macro_rules! fd_impls {
    ($t:ident, $std:ty) => {
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.s.io.as_raw_fd()
            }
        }

        impl From<$std> for $t {
            /// Adopts a std socket (it is switched to non-blocking mode).
            fn from(s: $std) -> Self {
                // A socket from std is valid, so the only failure would be EBADF.
                let _ = s.set_nonblocking(true);
                $t {
                    s: Pollable::new(s),
                }
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("fd", &self.as_raw_fd())
                    .field("local", &self.s.io.local_addr().ok())
                    .finish()
            }
        }
    };
}

/// A TCP listening socket; `accept` parks the coroutine until a connection arrives.
pub struct TcpListener {
    s: Pollable<stdnet::TcpListener>,
}

fd_impls!(TcpListener, stdnet::TcpListener);

impl TcpListener {
    /// Binds to the first address of `addr` that works (`SO_REUSEADDR`, as std), with the
    /// largest accept backlog the system allows (`net.core.somaxconn`, as Go) rather than
    /// std's 128: a burst of connections to a coroutine server otherwise overflows the
    /// queue, and the kernel drops handshakes.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let l = each_addr(addr, |a| stdnet::TcpListener::bind(a))?;
        // `listen` again on our listening socket only changes its backlog, which the kernel
        // caps at somaxconn.
        sys_net::listen(l.as_raw_fd(), 65535).map_err(os_error)?;
        Ok(TcpListener::from(l))
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.s.io(Dir::Read, |l| l.accept())?;
        Ok((TcpStream::from(s), a))
    }

    /// Connections, forever (each `accept` result).
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        core::iter::repeat_with(|| self.accept().map(|(s, _)| s))
    }

    /// A deadline for `accept` (Go's `SetDeadline` on a listener).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.s.pd.set_deadline(Dir::Read, deadline);
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.s.io.local_addr()
    }
}

/// A TCP connection. `Read` and `Write` are implemented for `TcpStream` and `&TcpStream`, so
/// one coroutine may read while another writes (share it in an `Arc`).
pub struct TcpStream {
    s: Pollable<stdnet::TcpStream>,
}

fd_impls!(TcpStream, stdnet::TcpStream);

impl TcpStream {
    /// Connects to the first address of `addr` that accepts.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| connect_addr(a, None))
    }

    /// Connects, giving up with `TimedOut` after `timeout`.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        connect_addr(addr, Some(Instant::now() + timeout))
    }

    deadlines!();

    /// The address of the peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.io.peer_addr()
    }

    /// Shuts down the read half, the write half (the peer reads end-of-file) or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.s.io.shutdown(how)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.s.io.set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.s.io.nodelay()
    }

    /// Reads without consuming.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.io(Dir::Read, |s| s.peek(buf))
    }

    /// A second handle on the same connection (a `dup` of the descriptor) with its own
    /// deadlines.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        self.s.io.try_clone().map(TcpStream::from)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        // Straight to the system call (sys_net::recv says why not through std's, which
        // calls libc's `recv`).
        self.s.stream_io(Dir::Read, len, |s| {
            sys_net::recv(s.as_raw_fd(), buf).map_err(os_error)
        })
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.s.io(Dir::Read, |mut s| s.read_vectored(bufs))
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.stream_io(Dir::Write, buf.len(), |s| {
            sys_net::send(s.as_raw_fd(), buf).map_err(os_error)
        })
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.s.io(Dir::Write, |mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A non-blocking `connect(2)`: parks until the socket is writable, then reads `SO_ERROR`.
fn connect_addr(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let fd = sys_net::tcp_socket(addr).map_err(os_error)?;
    // SAFETY: `fd` is a socket we just created and own.
    let stream = TcpStream::from(unsafe { stdnet::TcpStream::from_raw_fd(fd) });
    loop {
        match sys_net::connect(fd, addr) {
            Ok(()) => return Ok(stream),
            Err(e) if e.0 == EINTR => continue,
            Err(e) if e.0 == EINPROGRESS => break,
            Err(e) => return Err(os_error(e)),
        }
    }
    loop {
        stream.s.pd.wait(Dir::Write, deadline)?;
        // Writable means the handshake ended, one way or the other; a spurious wake-up
        // leaves it pending (no error, no peer yet).
        if let Some(e) = stream.s.io.take_error()? {
            return Err(e);
        }
        match stream.s.io.peer_addr() {
            Ok(_) => return Ok(stream),
            Err(e) if e.raw_os_error() == Some(ENOTCONN) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A UDP socket; receives park the coroutine until a datagram arrives.
pub struct UdpSocket {
    s: Pollable<stdnet::UdpSocket>,
}

fd_impls!(UdpSocket, stdnet::UdpSocket);

impl UdpSocket {
    /// Binds to the first address of `addr` that works.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr(addr, |a| stdnet::UdpSocket::bind(a)).map(UdpSocket::from)
    }

    /// Sets the default peer for `send` and `recv` (and filters others out).
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(addr, |a| self.s.io.connect(a))
    }

    deadlines!();

    /// Sends a datagram to `addr`. Unlike std, the address is already resolved (as in Go's
    /// `WriteTo`): a name lookup per datagram would be a blocking section per send.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.s.io(Dir::Write, |s| s.send_to(buf, addr))
    }

    /// Receives a datagram and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.s.io(Dir::Read, |s| s.recv_from(buf))
    }

    /// Sends to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.s.io(Dir::Write, |s| s.send(buf))
    }

    /// Receives from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.io(Dir::Read, |s| s.recv(buf))
    }

    /// Receives without consuming.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.s.io(Dir::Read, |s| s.peek_from(buf))
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.io.peer_addr()
    }

    /// `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.s.io.set_broadcast(on)
    }
}
