//! Running one program and measuring it: wall time from spawn to exit, and the peak RSS and
//! minor page faults that `wait4` reports for it (peak RSS: the largest of the process and
//! the descendants it waited for, so a shell script's biggest command counts; faults: the sum
//! over them).
//!
//! Every run is bounded: the program is started in a process group of its own, and a
//! watchdog kills the whole group when its time is up. The group is also killed once its
//! leader has exited (before the leader is reaped, so the group id cannot have been reused),
//! so nothing a program started outlives it and holds our pipes open.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one program run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak RSS in KiB (`ru_maxrss` from `wait4`).
    pub maxrss_kib: u64,
    /// Minor page faults (`ru_minflt` from `wait4`): pages the kernel had to map in, which
    /// an allocator that returns memory and takes it back again pays for.
    pub minflt: u64,
    /// Everything the program wrote to stdout (compared across allocators).
    pub stdout: String,
}

/// A started program, not yet reaped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    start: Instant,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
}

/// Starts `command` in a process group of its own, stdin closed, stdout and stderr drained
/// on threads (so a chatty program cannot block on a full pipe).
pub fn spawn(mut command: Command) -> Result<Running, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    Ok(Running {
        child,
        start,
        out,
        err,
    })
}

/// Runs `command` to completion within `timeout`. A non-zero exit, a signal or a timeout is
/// an error carrying the last line of stderr.
pub fn run(command: Command, timeout: Duration) -> Result<Measured, String> {
    spawn(command)?.finish(timeout)
}

impl Running {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (it stays unreaped, so [`Running::finish`] still
    /// gets its status and usage).
    pub fn has_exited(&self) -> bool {
        // SAFETY: an all-zero `siginfo_t` is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the pid is our own unreaped child (std's `Child` never waited on it), `info`
        // is valid for writes, and WNOWAIT leaves the child unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: `si_pid` is the field waitid fills for an exited child; with WNOHANG and
        // nothing to report it stays 0 from the zeroed value.
        rc == 0 && unsafe { info.si_pid() } != 0
    }

    /// Waits for the process to exit, killing its group if it is still running after
    /// `timeout`, and reaps it. An exit status other than 0 is an error.
    pub fn finish(self, timeout: Duration) -> Result<Measured, String> {
        let Running {
            child,
            start,
            out,
            err,
        } = self;
        let pid = child.id() as libc::pid_t;
        let (cancel, cancelled) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            match cancelled.recv_timeout(timeout) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // SAFETY: kill() has no memory-safety preconditions. The group is ours
                    // and cannot have been reused: its leader is not reaped until this thread
                    // has been joined.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    true
                }
                _ => false,
            }
        });
        // Wait for the exit without reaping, so the pid and group stay ours.
        let waited = loop {
            // SAFETY: an all-zero `siginfo_t` is a valid value of this plain C struct.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `pid` is our own unreaped child, `info` is valid for writes, and WNOWAIT
            // leaves it unreaped.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                break Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                break Err(format!("waitid: {e}"));
            }
        };
        let wall = start.elapsed();
        let _ = cancel.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        // Whatever the leader left running in its group goes too (the leader is a zombie, so
        // the group id is still ours).
        // SAFETY: kill() has no memory-safety preconditions; the group is ours (see above).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = waited.and_then(|()| {
            loop {
                // SAFETY: `pid` is our own unreaped child (std's `Child` has not waited on it and
                // we never call its `wait`), and `status`/`usage` are valid for writes.
                let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
                if rc == pid {
                    break Ok(());
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break Err(format!("wait4: {e}"));
                }
            }
        });
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        reaped?;
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        if timed_out {
            return Err(format!("timed out after {timeout:?}, killed: {last}"));
        }
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !ok {
            let how = if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("exit status {}", libc::WEXITSTATUS(status))
            };
            return Err(format!("{how}: {last}"));
        }
        Ok(Measured {
            wall,
            maxrss_kib: usage.ru_maxrss.max(0) as u64,
            minflt: usage.ru_minflt.max(0) as u64,
            stdout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn measures_output_time_and_rss() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo hello"]);
        let m = run(c, LONG).unwrap();
        assert_eq!(m.stdout, "hello\n");
        assert!(m.maxrss_kib > 0);
        // Loading a program at all maps pages in.
        assert!(m.minflt > 0);
    }

    #[test]
    fn failures_carry_their_reason() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        assert_eq!(run(c, LONG).unwrap_err(), "exit status 3: oops");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "kill -9 $$"]);
        assert!(run(c, LONG).unwrap_err().starts_with("killed by signal 9"));
    }

    #[test]
    fn a_hang_is_killed_with_its_children() {
        let mut c = Command::new("/bin/sh");
        // The background sleep holds stdout open: only killing the group ends the drain.
        c.args(["-c", "sleep 60 & echo started >&2; sleep 60"]);
        let start = Instant::now();
        let err = run(c, Duration::from_millis(300)).unwrap_err();
        assert!(err.starts_with("timed out after"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn has_exited_does_not_reap() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "exit 0"]);
        let running = spawn(c).unwrap();
        let start = Instant::now();
        while !running.has_exited() {
            assert!(start.elapsed() < LONG);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(running.finish(LONG).is_ok());
    }
}
