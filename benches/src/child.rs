//! One run per child process: the parent re-executes its own binary with hidden arguments
//! ([`ChildSpec::to_args`]); the child runs the workload, reads its own peak RSS (and, for
//! Tessera, where its memory is at the end) and prints one result line ([`crate::protocol`]). A process per run keeps each run's peak RSS its own
//! and keeps one allocator's leftovers (caches, retained pages) out of the next one's numbers.

use crate::allocators;
use crate::args::ChildSpec;
use crate::protocol::{ChildReport, TesseraMemory};
use crate::workloads::Params;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child's side: run, report, exit code 0. A failed check panics (exit code 101), and the
/// parent shows the panic message.
pub fn child_main(spec: &ChildSpec) -> i32 {
    let allocator = allocators::find(spec.allocator).expect("validated by the argument parser");
    allocators::prepare_child(spec.allocator);
    let params = Params {
        threads: spec.threads,
        duration: spec.duration,
    };
    let outcome = (allocator.run)(spec.workload, &params);
    let report = ChildReport {
        ops: outcome.ops,
        nanos: u64::try_from(outcome.elapsed.as_nanos()).unwrap_or(u64::MAX),
        maxrss_kib: peak_rss_kib(),
        // The workload called Tessera directly (the runner's own allocator is `System`), so
        // its figures are the workload's: what it still holds once the workload's threads
        // have finished and exited.
        tessera: allocators::is_tessera(spec.allocator).then(TesseraMemory::now),
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{report}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    0
}

/// This process's peak resident set size in KiB (Linux reports `ru_maxrss` in KiB).
pub fn peak_rss_kib() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for getrusage to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 {
        usage.ru_maxrss.max(0) as u64
    } else {
        0
    }
}

/// How long a run with budget `duration` may take before it is killed as hung: generous,
/// since a busy machine can slow a run down many times, but finite.
pub fn time_limit(duration: Duration) -> Duration {
    duration * 20 + Duration::from_secs(20)
}

/// The parent's side: runs `spec` in a child and returns its report, or a one-line reason
/// why there is none (crash, failed check, timeout, garbled output).
pub fn spawn(spec: &ChildSpec) -> Result<ChildReport, String> {
    let own = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let exe = if spec.allocator == allocators::UNHARDENED {
        unhardened_exe(&own)
    } else {
        own
    };
    let mut child = Command::new(&exe)
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start child {}: {e}", exe.display()))?;

    // A deadlocked allocator must not hang the whole comparison. The output is one line (or
    // a panic message), far below a pipe's capacity, so it is read after the exit.
    let limit = time_limit(spec.duration);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {limit:?} (deadlock?)"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    if !status.success() {
        // A panic's message is the line after "thread '...' panicked at file:line:col:".
        let mut lines = stderr.lines();
        let why = lines
            .by_ref()
            .find(|l| l.contains("panicked at"))
            .and_then(|_| lines.next())
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message");
        return Err(format!("child {status}: {}", why.trim()));
    }
    ChildReport::find_in(&stdout)
}

/// This runner built without Tessera's hardening (`runner::run` builds it when
/// `tessera-unhardened` is asked for), beside the libtessera.so of the same flags.
pub fn unhardened_exe(own: &std::path::Path) -> std::path::PathBuf {
    crate::programs::preload::unhardened_target()
        .join("release")
        .join(own.file_name().unwrap_or_else(|| "tessera-bench".as_ref()))
}
