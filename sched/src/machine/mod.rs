//! The M: an OS thread that runs Gs while it holds a P (Go's `schedule`, `findRunnable`,
//! `execute`, `stopm`, `startm`, `wakep`, `handoffp`, `entersyscall`/`exitsyscall` in
//! proc.go).
//!
//! The loop: find a runnable G (its P's queue, every 61st tick the global queue first, then
//! the global queue, then the netpoller without blocking, then stealing), run it until it
//! yields, parks, returns or asks to run a blocking section, repeat. The P's due timers are
//! fired first, and a thief fires other Ps' (timer.rs). When there is nothing to do, the M
//! gives its P back to the idle list, puts itself on the idle list, re-checks every queue
//! (the "delicate dance" of findRunnable: work pushed just before we went idle would
//! otherwise be lost), and then either becomes the netpoller (one M at a time, blocked in
//! `epoll_wait` until an event, a timer or a break) or sleeps on its futex parker until
//! handed a P.
//!
//! Ms: one per P at start-up; more are started when a P must run while every M is busy or
//! stuck in a blocking section (`start_m`). Idle Ms stay for reuse. `wakep` pairs an idle
//! P with an idle M; with no idle M it breaks a blocked poller (which then takes the P) or
//! starts a new M.
//!
//! The pieces, one file each:
//! - this file: what an M is (`MShared`, the part other threads see; `MCtx`, its own);
//! - current.rs: the calling thread's M, G, P and runtime, and its random numbers;
//! - m_loop.rs: the M loop (`m_main`, `schedule`, `execute`, blocking sections);
//! - find_work.rs: finding a runnable G (Go's `findRunnable`: queues, the netpoller,
//!   stealing) and the time-slice bookkeeping;
//! - idle.rs: the idle protocol (idle Ps and Ms, spinning, `wakep`, `stop_m`, the poller);
//! - ready.rs: parking a G and making it runnable again (`park_current`, `ready`, `queue`);
//! - api.rs: the public calls (`yield_now`, `lock_to_thread`, `blocking`).

mod api;
mod current;
mod find_work;
mod idle;
#[cfg(all(test, tessera_loom))]
mod idle_loom;
mod m_loop;
mod ready;

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::coroutine::GRef;
use crate::park::Parker;
use crate::runtime::Shared;

pub use api::{blocking, is_locked_to_thread, lock_to_thread, unlock_from_thread, yield_now};
pub(crate) use current::{
    current_g, current_p, current_runtime, current_runtime_of_g, fastrand, note_labels,
    with_current_runtime,
};
pub(crate) use idle::{Idle, put_idle_p, start_m, timer_added, wake_all, wakep};
pub(crate) use m_loop::m_main;
pub(crate) use ready::{begin_scan, end_scan, park_current, queue, ready, ready_from};

const NO_P: usize = usize::MAX;

/// The part of an M that other threads see.
#[derive(Debug)]
pub(crate) struct MShared {
    pub(crate) parker: Parker,
    /// A P handed over by `wakep`, `start_m` or `put_idle_p` (or `NO_P`).
    nextp: crate::shim::AtomicUsize,
    /// Whether the hand-over counted this M as spinning.
    next_spinning: crate::shim::AtomicBool,
    /// Gs locked to this M (`lock_to_thread`) that are runnable.
    mailbox: Mutex<VecDeque<usize>>,
    mailbox_len: AtomicUsize,
}

impl MShared {
    pub(crate) fn new() -> Self {
        Self {
            parker: Parker::new(),
            nextp: crate::shim::AtomicUsize::new(NO_P),
            next_spinning: crate::shim::AtomicBool::new(false),
            mailbox: Mutex::new(VecDeque::new()),
            mailbox_len: AtomicUsize::new(0),
        }
    }

    /// Hands this idle M a P and wakes it.
    ///
    /// # Safety
    /// The caller holds P `p` (it took it off the idle list, or it is the caller's own) and
    /// gives it up: from here on this M alone may use it.
    unsafe fn hand_p(&self, p: usize, spinning: bool) {
        self.next_spinning.store(spinning, Ordering::Relaxed);
        self.nextp.store(p, Ordering::Release);
        self.parker.unpark();
    }

    /// Queues `g` for this M (`lock_to_thread`).
    ///
    /// # Safety
    /// `g` is a live RUNNABLE G locked to this M and on no run queue; the caller gives it up
    /// (this M runs it, `execute`, once it finds it here).
    unsafe fn push_mail(&self, g: GRef) {
        let mut q = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(g as usize);
        self.mailbox_len.store(q.len(), Ordering::SeqCst);
    }

    #[inline]
    fn pop_mail(&self) -> Option<GRef> {
        if self.mailbox_len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.pop_mail_locked()
    }

    /// `pop_mail` once the mailbox looked non-empty.
    #[inline(never)]
    fn pop_mail_locked(&self) -> Option<GRef> {
        let mut q = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        let g = q.pop_front();
        self.mailbox_len.store(q.len(), Ordering::SeqCst);
        g.map(|g| g as GRef)
    }
}

/// The M's own state, on its thread's stack for the thread's life. `S` is the runtime: the
/// real one, or loom's stand-in for the idle protocol (idle_loom.rs).
pub(crate) struct MCtx<S = Shared> {
    pub(crate) shared: Arc<S>,
    pub(crate) ms: Arc<MShared>,
    p: Cell<usize>,
    curg: Cell<GRef>,
    spinning: Cell<bool>,
    rng: Cell<u64>,
}
