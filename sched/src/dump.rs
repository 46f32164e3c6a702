//! `dump()`: every live coroutine with its state, wait reason, age, spawn site and stack in
//! use (Go's goroutine dump), on demand and on SIGQUIT.
//!
//! The SIGQUIT handler (sys.rs) only writes a byte to a pipe; the `tessera-sigquit` thread
//! reads it and prints, so nothing unsafe happens in signal context.

use core::fmt::Write;
use std::sync::{Arc, Once};

use crate::coroutine::{
    G, NOTIFIED, PARKED, RUNNABLE, RUNNING, SCAN_READIED, SCANNING, WaitReason,
};
use crate::runtime::{RUNTIMES, Shared};

pub(crate) fn live_runtimes() -> Vec<Arc<Shared>> {
    RUNTIMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|w| w.upgrade())
        .collect()
}

fn line(out: &mut String, g: &G) {
    let state = match g.state() {
        RUNNABLE => "runnable",
        RUNNING | NOTIFIED => "running",
        PARKED | SCANNING | SCAN_READIED => "waiting",
        _ => "?",
    };
    let reason = g.wait_reason();
    let age = std::time::Duration::from_nanos(crate::sys::coarse_now_ns().saturating_sub(g.born()));
    let base = g.stack_base.load(core::sync::atomic::Ordering::Relaxed);
    let used = base.saturating_sub(
        g.saved_sp
            .load(core::sync::atomic::Ordering::Relaxed)
            .min(base),
    );
    let _ = write!(out, "coroutine {}", g.id());
    if let Some(n) = &g.name {
        let _ = write!(out, " \"{n}\"");
    }
    let _ = write!(out, " [{state}");
    if !reason.as_str().is_empty() && (state == "waiting" || reason == WaitReason::Blocking) {
        let _ = write!(out, ", {}", reason.as_str());
    }
    let long = g.long_runs.load(core::sync::atomic::Ordering::Relaxed);
    if long > 0 {
        let _ = write!(out, ", ran over 10ms without yielding {long}x");
    }
    let site = g.spawn_site();
    let _ = writeln!(
        out,
        ", {:.3}s]: spawned at {}:{}:{}, stack {} of {} bytes in use",
        age.as_secs_f64(),
        site.file(),
        site.line(),
        site.column(),
        used,
        g.stack_size
    );
}

pub(crate) fn dump_runtime(sh: &Shared) -> String {
    let mut out = String::new();
    let s = crate::stats::collect(sh);
    let _ = writeln!(
        out,
        "tessera runtime: procs={} threads={} live={} running={} runnable={} parked={} spawned={} steals={} long_runs={}",
        s.procs,
        s.threads,
        s.live,
        s.running,
        s.runnable,
        s.parked,
        s.spawned,
        s.steals,
        s.long_runs
    );
    sh.allgs.for_each(&mut |g| line(&mut out, g));
    out
}

/// Every live coroutine of every live runtime, one line each:
/// `coroutine 7 "name" [waiting, chan receive, 0.120s]: spawned at src/main.rs:10:5, stack 1184 of 65536 bytes in use`.
/// The stack figure is measured at the last switch (a running coroutine shows its last one).
pub fn dump() -> String {
    let mut out = String::new();
    for r in live_runtimes() {
        out.push_str(&dump_runtime(&r));
    }
    out
}

pub(crate) fn start_sigquit_thread() -> std::io::Result<()> {
    static STARTED: Once = Once::new();
    let fd = crate::sys::install_sigquit()?;
    let mut res = Ok(());
    STARTED.call_once(|| {
        res = std::thread::Builder::new()
            .name("tessera-sigquit".into())
            .spawn(move || {
                while crate::sys::read_byte(fd) {
                    eprint!("SIGQUIT: coroutine dump\n{}", dump());
                }
            })
            .map(|_| ());
    });
    res
}
