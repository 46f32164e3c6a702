//! Sysmon: a thread without a P that watches the Ps (Go's `sysmon` in proc.go).
//!
//! Its one job here: a G put in `runnext` without waking an idle M (machine.rs,
//! `make_runnable`) must not wait behind a coroutine that keeps running. Every millisecond
//! sysmon looks at each P; a P that still has a pending wake-up and has not scheduled since
//! the last look gets it delivered (`wakep`), and the woken M may steal runnext. When every
//! P is idle it backs off to 10 ms, like Go's sysmon.
//!
//! Not done here yet (DESIGN.md): retaking Ps blocked in syscalls (there is no
//! `blocking()` region yet) and netpoll.

use core::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::machine;
use crate::runtime::Shared;

pub(crate) fn run(sh: Arc<Shared>) {
    let mut last: Vec<u32> = sh
        .ps
        .iter()
        .map(|p| p.tick.load(Ordering::Relaxed))
        .collect();
    let mut sleep = Duration::from_millis(1);
    loop {
        sh.sysmon.park_timeout(Some(sleep));
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let mut busy = false;
        for (p, seen) in sh.ps.iter().zip(last.iter_mut()) {
            let t = p.tick.load(Ordering::Relaxed);
            busy |= t != *seen;
            if t == *seen && p.wake_pending.swap(false, Ordering::Relaxed) {
                machine::wakep(&sh);
                busy = true;
            }
            *seen = t;
        }
        sleep = if busy {
            Duration::from_millis(1)
        } else {
            (sleep * 2).min(Duration::from_millis(10))
        };
    }
}
