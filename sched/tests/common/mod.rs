//! Shared by the integration tests: a hang guard, and ways to wait for a state instead of
//! sleeping and hoping it was reached.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tessera_sched::WaitReason;

/// Aborts the process if dropped later than `secs` after creation: a hang guard, not a
/// timing assertion (the limit is far above any normal run).
pub(crate) struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    pub(crate) fn new(what: &'static str, secs: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            for _ in 0..secs * 10 {
                std::thread::sleep(Duration::from_millis(100));
                if d.load(Ordering::Relaxed) {
                    return;
                }
            }
            eprintln!(
                "watchdog: {what} hung for {secs}s\n{}",
                tessera_sched::dump()
            );
            std::process::abort();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The `dump()` line of the coroutine named `name` (a name no other test uses), if it is
/// alive.
pub(crate) fn dump_line(name: &str) -> Option<String> {
    let tag = format!("\"{name}\" [");
    tessera_sched::dump()
        .lines()
        .find(|l| l.contains(&tag))
        .map(str::to_owned)
}

/// Yields until the coroutine named `name` is parked for `reason`, so a test acts on a
/// waiter that really waits rather than on one a loaded machine has not run yet. Gives up
/// and returns false once `give_up` passes, for a caller whose scenario only holds until
/// then; without it, only the watchdog ends the wait.
pub(crate) fn until_waiting(name: &str, reason: WaitReason, give_up: Option<Instant>) -> bool {
    let state = format!("[waiting, {}", reason.as_str());
    loop {
        if dump_line(name).is_some_and(|l| l.contains(&state)) {
            return true;
        }
        if give_up.is_some_and(|t| Instant::now() >= t) {
            return false;
        }
        tessera_sched::yield_now();
    }
}

/// Yields until some coroutine is parked for `reason` (the watchdog ends a wait for one
/// that never is).
pub(crate) fn until_waiting_any(reason: WaitReason) {
    let state = format!("[waiting, {}", reason.as_str());
    while !tessera_sched::dump().contains(&state) {
        tessera_sched::yield_now();
    }
}

/// A loopback TCP address that refuses connections, with the socket that keeps it so: bound
/// but not listening, and without `SO_REUSEADDR`, so no other socket can bind the port (and
/// listen there) while the test connects to it. The port of a listener that was just closed
/// is not that: any `bind(0)` in a parallel test may be handed it again.
pub(crate) fn refusing_addr() -> (std::os::fd::OwnedFd, std::net::SocketAddr) {
    use std::os::fd::FromRawFd;
    // SAFETY: creates a new socket; no memory is passed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a descriptor we just opened and own alone.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero bytes are a valid `sockaddr_in` (port 0, address 0.0.0.0).
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid `sockaddr_in` of `len` bytes for both calls; getsockname
    // writes at most `len` bytes into it.
    unsafe {
        assert_eq!(libc::bind(fd, (&raw const sin).cast(), len), 0, "bind");
        assert_eq!(
            libc::getsockname(fd, (&raw mut sin).cast(), &mut len),
            0,
            "getsockname"
        );
    }
    let addr =
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(sin.sin_port)));
    (owned, addr)
}

/// Whether `go` (for `go tool pprof`) is installed: the profile tests read their profiles
/// with it when it is, and check less without it. With `TESSERA_REQUIRE_GO` set (the CI
/// stage that installs go), its absence fails the test instead.
pub(crate) fn go_installed() -> bool {
    let here = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        here || std::env::var_os("TESSERA_REQUIRE_GO").is_none(),
        "TESSERA_REQUIRE_GO is set and go is not installed"
    );
    here
}

/// `go tool pprof -top` with `flags`, then this test program and `source` (a file or a
/// URL); pprof keeps what it fetches in `tmp`. Its output; panics if it fails.
pub(crate) fn pprof_top(source: &std::ffi::OsStr, flags: &[&str], tmp: &std::path::Path) -> String {
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=1000"])
        .args(flags)
        .arg(std::env::current_exe().unwrap())
        .arg(source)
        .env("PPROF_TMPDIR", tmp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {source:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

// Running one test of this binary in a child process, for the tests that exhaust a
// process-wide resource other tests need: the stacks crate's helpers.
#[path = "../../../coroutine-stacks/tests/common/mod.rs"]
mod child_process;
#[allow(unused_imports)] // each test binary uses its own subset
pub(crate) use child_process::{child_mode, run_child};
