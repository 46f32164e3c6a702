//! Running one program and measuring it: wall time from spawn to exit, and the peak RSS that
//! `wait4` reports for it (the largest of the process and the descendants it waited for, so a
//! shell script's biggest command counts).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one program run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak RSS in KiB (`ru_maxrss` from `wait4`).
    pub maxrss_kib: u64,
    /// Everything the program wrote to stdout (compared across allocators).
    pub stdout: String,
}

/// Runs `command` to completion. A non-zero exit or a signal is an error carrying the last
/// line of stderr.
pub fn run(mut command: Command) -> Result<Measured, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Drain both pipes on threads so a chatty program cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
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

    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        // SAFETY: `pid` is our own unreaped child (std's `Child` has not waited on it and we
        // never call its `wait`), and `status`/`usage` are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            break Err(format!("wait4: {e}"));
        }
    };
    let wall = start.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    reaped?;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit status {}", libc::WEXITSTATUS(status))
        };
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("{how}: {last}"));
    }
    Ok(Measured {
        wall,
        maxrss_kib: usage.ru_maxrss.max(0) as u64,
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_output_time_and_rss() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo hello"]);
        let m = run(c).unwrap();
        assert_eq!(m.stdout, "hello\n");
        assert!(m.maxrss_kib > 0);
    }

    #[test]
    fn failures_carry_their_reason() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        assert_eq!(run(c).unwrap_err(), "exit status 3: oops");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "kill -9 $$"]);
        assert!(run(c).unwrap_err().starts_with("killed by signal 9"));
    }
}
