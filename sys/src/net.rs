//! Sockets, epoll and eventfd for the scheduler's netpoller (`tessera-sched`'s `net.rs` and
//! `netpoll.rs`): the calls std's socket types do not make for us.
//!
//! Descriptors are plain `c_int`s here; their owners (std sockets, the `Netpoll`) close
//! them. Every fallible call returns the kernel's `errno` as an [`OsError`].

use core::ffi::c_int;
use core::mem::MaybeUninit;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use crate::error::{ENOSYS, OsError};

pub use libc::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP};
pub use libc::{POLLIN, POLLOUT, POLLRDHUP};

/// A `0`/`-1` return as a `Result`.
fn check_zero(rc: c_int) -> Result<(), OsError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// A descriptor-or-`-1` return as a `Result`.
fn check_fd(fd: c_int) -> Result<c_int, OsError> {
    if fd < 0 { Err(OsError::last()) } else { Ok(fd) }
}

/// Closes `fd`. Errors are ignored: after `close` the descriptor is gone whatever it
/// returns (`EINTR` included, on Linux), and there is nothing to retry.
pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor touches no memory; the caller owns `fd`.
    unsafe { libc::close(fd) };
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

/// `listen(fd, backlog)` again on a listening socket: only its backlog changes, capped by the
/// kernel at `net.core.somaxconn`.
///
/// Errors: `EBADF`/`ENOTSOCK` for a bad descriptor, `EOPNOTSUPP` for a socket type that
/// cannot listen.
pub fn listen(fd: c_int, backlog: c_int) -> Result<(), OsError> {
    // SAFETY: plain syscall on a descriptor; no memory is passed.
    check_zero(unsafe { libc::listen(fd, backlog) })
}

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family; the caller owns it.
///
/// Errors: `EMFILE`/`ENFILE` (out of descriptors), `ENOBUFS`/`ENOMEM`,
/// `EAFNOSUPPORT` (IPv6 disabled).
pub fn tcp_socket(addr: &SocketAddr) -> Result<c_int, OsError> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    check_fd(fd)
}

/// `connect(2)` of socket `fd` to `addr`, one attempt.
///
/// Errors that matter on a non-blocking socket: `EINPROGRESS` (the handshake goes on; wait
/// until writable, then read `SO_ERROR`), `EINTR` (try again), `ECONNREFUSED`,
/// `ENETUNREACH`, `ETIMEDOUT`, `EADDRNOTAVAIL`.
pub fn connect(fd: c_int, addr: &SocketAddr) -> Result<(), OsError> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    check_zero(unsafe { libc::connect(fd, (&raw const storage).cast(), len) })
}

/// Reads what has arrived on stream socket `fd` into `buf` (`recvfrom(fd, buf, len, 0,
/// NULL, NULL)`); `Ok(0)` is the end of the stream.
///
/// Made through `syscall(2)`, not libc's `recv`: libc's is a thread-cancellation point,
/// and wraps every call in enabling and disabling asynchronous cancellation, which nothing
/// here uses. In the echo server's profile the wrapper was ~60 of the ~120 instructions a
/// read and a write spent outside the kernel, per request.
///
/// Errors: `EAGAIN` (nothing to read on a non-blocking socket), `EINTR`, `ECONNRESET`,
/// `ENOTCONN`, `EBADF`/`ENOTSOCK`.
#[inline]
pub fn recv(fd: c_int, buf: &mut [u8]) -> Result<usize, OsError> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is exclusively
    // borrowed for the call; the address arguments are null (not wanted).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            core::ptr::null_mut::<libc::sockaddr>(),
            core::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    check_len(n)
}

/// Writes `buf` to stream socket `fd` (`sendto(fd, buf, len, MSG_NOSIGNAL, NULL, 0)`),
/// returning how much the socket took. `MSG_NOSIGNAL`: a peer that has gone gives `EPIPE`,
/// not a `SIGPIPE` that would kill the process (std's sockets do the same). Through
/// `syscall(2)` for the reason [`recv`] gives.
///
/// Errors: `EAGAIN` (the send buffer is full on a non-blocking socket), `EINTR`, `EPIPE`,
/// `ECONNRESET`, `EBADF`/`ENOTSOCK`.
#[inline]
pub fn send(fd: c_int, buf: &[u8]) -> Result<usize, OsError> {
    // SAFETY: the kernel reads at most `buf.len()` bytes of `buf`, borrowed for the call;
    // no address is passed.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            core::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    check_len(n)
}

/// A byte-count-or-`-1` return as a `Result`.
#[inline]
fn check_len(n: libc::c_long) -> Result<usize, OsError> {
    usize::try_from(n).map_err(|_| OsError::last())
}

/// `addr` as a C socket address.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut st).cast::<libc::sockaddr_in>().write(sin) };
            core::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut st).cast::<libc::sockaddr_in6>().write(sin6) };
            core::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// `poll(2)` on one descriptor for `events` (`POLLIN | POLLRDHUP`, `POLLOUT`), at most
/// `timeout_ms` milliseconds (-1: no limit). Returns whether it became ready (false: the
/// time ran out).
///
/// Errors: `EINTR` (a signal came first), `ENOMEM`.
pub fn poll_one(fd: c_int, events: i16, timeout_ms: c_int) -> Result<bool, OsError> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        return Err(OsError::last());
    }
    Ok(n > 0)
}

// ---------------------------------------------------------------------------------------
// epoll and eventfd
// ---------------------------------------------------------------------------------------

/// A new close-on-exec epoll instance; the caller owns it ([`close`]).
///
/// Errors: `EMFILE`/`ENFILE`, `ENOMEM`.
pub fn epoll_create() -> Result<c_int, OsError> {
    // SAFETY: plain syscall.
    check_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
}

/// Adds `fd` to epoll `epfd` for `events`, with `data` handed back in its events.
///
/// Errors: `EEXIST` (already registered), `EBADF`, `EPERM` (a regular file), `ENOMEM`,
/// `ENOSPC` (`max_user_watches`).
pub fn epoll_add(epfd: c_int, fd: c_int, events: u32, data: u64) -> Result<(), OsError> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: plain syscall on descriptors; `ev` is valid for the call.
    check_zero(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) })
}

/// Removes `fd` from epoll `epfd`.
///
/// Errors: `ENOENT` (not registered), `EBADF` (either descriptor closed already).
pub fn epoll_del(epfd: c_int, fd: c_int) -> Result<(), OsError> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: plain syscall on descriptors; `ev` is valid (and ignored) for the call.
    check_zero(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev) })
}

/// One event out of `epoll_wait`.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Event(libc::epoll_event);

impl Event {
    /// The readiness bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDHUP`, `EPOLLERR`, `EPOLLHUP`).
    pub fn events(&self) -> u32 {
        self.0.events
    }

    /// The data word given to [`epoll_add`].
    pub fn data(&self) -> u64 {
        self.0.u64
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("events", &self.events())
            .field("data", &self.data())
            .finish()
    }
}

/// `epoll_pwait2` (nanosecond timeout, Linux 5.11) with a fallback to `epoll_wait`, whose
/// millisecond timeout is rounded up so a timer is never fired early. `timeout` `None`
/// blocks until an event. Returns the events the kernel wrote to the front of `slots`,
/// which need not be initialised: the netpoller's 128 slots were cleared before each poll
/// for nothing (a 1.5 KiB `memset`, 105 instructions a poll under callgrind).
///
/// Errors read as 0 events: `EINTR` (a signal) is a wake-up like any other for the
/// poller; `EBADF`/`EINVAL` cannot happen on a live epoll. `ENOSYS` from `epoll_pwait2`
/// selects the fallback for good.
pub fn epoll_wait(
    epfd: c_int,
    slots: &mut [MaybeUninit<Event>],
    timeout: Option<Duration>,
) -> &[Event] {
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    let max = slots.len().min(i32::MAX as usize) as libc::c_int;
    let events = slots.as_mut_ptr().cast::<libc::epoll_event>();
    let n = if NO_PWAIT2.load(Ordering::Relaxed) {
        -1
    } else {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let tsp = ts
            .as_ref()
            .map_or(core::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` is a writable array of `max` entries (`Event` is a transparent
        // `epoll_event`); `tsp` is null or points at a valid timespec; no signal mask.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                events,
                max,
                tsp,
                core::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 && crate::error::errno() == ENOSYS {
            NO_PWAIT2.store(true, Ordering::Relaxed);
        } else if n < 0 {
            return &[];
        }
        n as libc::c_int
    };
    let n = if NO_PWAIT2.load(Ordering::Relaxed) {
        let ms = timeout.map_or(-1, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as libc::c_int
        });
        // SAFETY: as above.
        unsafe { libc::epoll_wait(epfd, events, max, ms) }
    } else {
        n
    };
    let n = (n.max(0) as usize).min(slots.len());
    // SAFETY: the kernel wrote the first `n` slots (at most `max`), and `Event` is a
    // transparent `epoll_event`, so they are initialised `Event`s, borrowed from `slots`.
    unsafe { core::slice::from_raw_parts(slots.as_ptr().cast::<Event>(), n) }
}

/// A new non-blocking, close-on-exec eventfd (counter 0); the caller owns it ([`close`]).
///
/// Errors: `EMFILE`/`ENFILE`, `ENOMEM`.
pub fn eventfd() -> Result<c_int, OsError> {
    // SAFETY: plain syscall.
    check_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
}

/// Adds `value` to eventfd `fd`'s counter, making it readable.
///
/// Errors: `EAGAIN` when the counter would overflow (it is drained long before).
pub fn eventfd_write(fd: c_int, value: u64) -> Result<(), OsError> {
    // SAFETY: an 8-byte counter increment on a descriptor; no caller memory is kept.
    check_zero(unsafe { libc::eventfd_write(fd, value) })
}

/// Takes eventfd `fd`'s counter, resetting it to 0.
///
/// Errors: `EAGAIN` when it was 0 (non-blocking).
pub fn eventfd_read(fd: c_int) -> Result<u64, OsError> {
    let mut v: libc::eventfd_t = 0;
    // SAFETY: `v` is a valid out-pointer.
    check_zero(unsafe { libc::eventfd_read(fd, &mut v) })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_and_send_move_bytes_and_report_errno() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            recv(a.as_raw_fd(), &mut buf).unwrap_err().0,
            crate::error::EAGAIN
        );
        assert_eq!(send(b.as_raw_fd(), b"hello").unwrap(), 5);
        assert_eq!(recv(a.as_raw_fd(), &mut buf[..3]).unwrap(), 3);
        assert_eq!(recv(a.as_raw_fd(), &mut buf[3..]).unwrap(), 2);
        assert_eq!(&buf[..5], b"hello");
        // Shut down rather than closed: a test that forks at this moment (others run in
        // parallel) holds a copy of `b`'s descriptor until its child execs or exits, and a
        // close then leaves the socket open, so `recv` saw EAGAIN instead of the end.
        b.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 0);
        // The peer is gone: EPIPE, and no SIGPIPE (which would end this test process).
        assert_eq!(send(a.as_raw_fd(), b"x").unwrap_err().0, libc::EPIPE);
    }

    #[test]
    fn an_eventfd_wakes_an_epoll() {
        let ep = epoll_create().unwrap();
        let efd = eventfd().unwrap();
        epoll_add(ep, efd, EPOLLIN as u32, 7).unwrap();
        assert_eq!(
            epoll_add(ep, efd, EPOLLIN as u32, 7).unwrap_err().0,
            crate::error::EEXIST
        );
        let mut slots = [MaybeUninit::uninit(); 4];
        assert!(epoll_wait(ep, &mut slots, Some(Duration::ZERO)).is_empty());
        eventfd_write(efd, 1).unwrap();
        let ready = epoll_wait(ep, &mut slots, Some(Duration::from_secs(5)));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].data(), 7);
        assert_eq!(ready[0].events(), EPOLLIN as u32);
        assert_eq!(eventfd_read(efd).unwrap(), 1);
        assert_eq!(eventfd_read(efd).unwrap_err().0, crate::error::EAGAIN);
        assert!(!poll_one(efd, POLLIN, 0).unwrap());
        epoll_del(ep, efd).unwrap();
        close(efd);
        close(ep);
    }

    #[test]
    fn a_refused_connect_reports_why() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let fd = tcp_socket(&addr).unwrap();
        let err = connect(fd, &addr).unwrap_err().0;
        assert!(
            err == crate::error::EINPROGRESS || err == libc::ECONNREFUSED,
            "{err}"
        );
        close(fd);
    }
}
