//! The few Linux calls the echo client and driver make directly: an epoll instance (the
//! client's one wait for all its connections), a poll for writability (the rare path of a
//! full send buffer), CPU time of this process and of a server child, so the report can
//! show who used the two cores, and CPU affinity for the pinned placement (`--pin-server`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance in level-triggered mode: a connection with unread bytes is reported
/// again on the next wait, so the client may read once per event and never drain in a loop.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

/// One readiness report: the token given to [`Epoll::add`].
pub(crate) type Event = libc::epoll_event;

pub(crate) fn empty_events(n: usize) -> Vec<Event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns, so OwnedFd may close it.
        unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Epoll {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Watches `fd` for readability (and errors, which epoll always reports), tagged `token`.
    pub(crate) fn add_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call (the kernel
        // copies it); both descriptors are open, `fd` because the caller holds its socket.
        let rc =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events; returns how many of `events` were filled.
    pub(crate) fn wait(&self, events: &mut [Event], timeout: Duration) -> io::Result<usize> {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the kernel writes at most `max` entries, and `events` holds at least that
        // many; the buffer is exclusively borrowed for the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(n as usize)
    }
}

/// Blocks until `fd` can take more bytes, or `timeout` passes (then `TimedOut`).
pub(crate) fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, exclusively borrowed for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    match n {
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "send buffer stayed full",
        )),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// User + system CPU time this process has used so far (all its threads).
pub(crate) fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time the whole machine has spent running tasks so far (`/proc/stat`'s `cpu` line:
/// user, nice, system and steal), so a run can tell how much went to processes other than
/// the server and the client. Interrupt time is left out: loopback TCP is processed there,
/// charged to no process, and belongs to the benchmark itself. `None` if unreadable.
pub(crate) fn machine_busy_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields: user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = [0, 1, 2, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    ticks_to_duration(busy)
}

fn ticks_to_duration(ticks: u64) -> Option<Duration> {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU time a process has used so far, split as the kernel accounts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuTimes {
    /// In the process's own code (and its libraries).
    pub(crate) user: Duration,
    /// In the kernel on its behalf: system calls (for a server here, mostly the TCP work of
    /// `recv` and `send`), page faults. Softirq time (the loopback's packet delivery) is
    /// not in it when the kernel accounts interrupt time apart (`/proc/stat`'s softirq).
    pub(crate) system: Duration,
}

/// User and system CPU time process `pid` has used so far (all its threads), from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks); `None` if it has gone.
pub(crate) fn process_cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(CpuTimes {
        user: ticks_to_duration(utime)?,
        system: ticks_to_duration(stime)?,
    })
}

/// Context switches: voluntary (the thread blocked: a wait, a sleep) and involuntary (the
/// kernel preempted it for another thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Switches {
    pub(crate) voluntary: u64,
    pub(crate) involuntary: u64,
}

impl Switches {
    /// What happened between `self` (earlier) and `later`.
    pub(crate) fn until(self, later: Switches) -> Switches {
        Switches {
            voluntary: later.voluntary.saturating_sub(self.voluntary),
            involuntary: later.involuntary.saturating_sub(self.involuntary),
        }
    }
}

/// The context switches of each live thread of process `pid` so far, by thread id
/// (`/proc/<pid>/task/*/status`). `None` if the process has gone, or has no thread left to
/// read (a zombie, killed before the sample: its switches would read as none at all).
pub(crate) fn process_switches(pid: u32) -> Option<Vec<(u32, Switches)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that exited since the listing is skipped.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        // A killed server's leader lingers as a zombie with its counts gone.
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("zombie"))
        {
            continue;
        }
        threads.push((
            tid,
            Switches {
                voluntary: status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0),
                involuntary: status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0),
            },
        ));
    }
    (!threads.is_empty()).then_some(threads)
}

/// The switches between two `process_switches` samples: each thread's own difference, and
/// all of a thread's switches if it started in between. A thread that exited in between
/// drops out (its switches after the first sample are lost; summing the samples instead
/// would subtract all of its earlier ones).
pub(crate) fn switches_between(before: &[(u32, Switches)], after: &[(u32, Switches)]) -> Switches {
    let mut sum = Switches::default();
    for &(tid, now) in after {
        let then = before
            .iter()
            .find(|(t, _)| *t == tid)
            .map_or(Switches::default(), |&(_, s)| s);
        let d = then.until(now);
        sum.voluntary += d.voluntary;
        sum.involuntary += d.involuntary;
    }
    sum
}

/// The number after `name` on its own line of a `/proc` status file.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .parse()
        .ok()
}

/// The context switches of this process so far, all its threads, exited ones included
/// (`getrusage`).
pub(crate) fn own_switches() -> Switches {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Switches::default();
    }
    Switches {
        voluntary: usage.ru_nvcsw as u64,
        involuntary: usage.ru_nivcsw as u64,
    }
}

/// Restricts the calling thread, and the threads and processes it starts from now on, to
/// the CPUs in `cpus` (`sched_setaffinity`; what `taskset` does).
pub(crate) fn pin_to(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value of this plain C struct.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // No allocation here (an error built from a string would): this runs between fork
        // and exec too (`driver::server_command`).
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `cpu` is below CPU_SETSIZE (checked just above), so the bit is inside
        // `set`, which is exclusively borrowed.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed, borrowed for the call; pid 0
    // is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_from_both_sources() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(own_cpu_time() > Duration::ZERO);
        let t = process_cpu_times(std::process::id()).unwrap();
        assert!(t.user + t.system > Duration::ZERO);
        assert_eq!(process_cpu_times(u32::MAX), None);
        assert!(pin_to(&[1 << 20]).is_err());
        assert!(machine_busy_time().is_some());
    }

    #[test]
    fn context_switches_of_this_process_from_both_sources() {
        // A sleep blocks this thread: at least one voluntary switch each time.
        let before = (
            own_switches(),
            process_switches(std::process::id()).unwrap(),
        );
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = (
            own_switches(),
            process_switches(std::process::id()).unwrap(),
        );
        assert!(before.0.until(after.0).voluntary >= 3);
        assert!(switches_between(&before.1, &after.1).voluntary >= 3);
        assert_eq!(process_switches(u32::MAX), None);
        // A thread gone by the second sample drops out; a new one counts in full.
        let s = |voluntary| Switches {
            voluntary,
            involuntary: 1,
        };
        let d = switches_between(&[(1, s(10)), (2, s(50))], &[(1, s(12)), (3, s(4))]);
        assert_eq!((d.voluntary, d.involuntary), (6, 1));
        assert_eq!(
            status_field(
                "Name:\tx\nvoluntary_ctxt_switches:\t12\n",
                "voluntary_ctxt_switches:"
            ),
            Some(12)
        );
    }
}
