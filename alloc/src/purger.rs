//! The background purger: returns free memory to the OS while the program makes no
//! allocator call (issue #13, "Background return of memory").
//!
//! One thread, started lazily (`maybe_start`) from an allocation's slow path, where the
//! calling thread holds no allocator lock (`pthread_create` allocates), once the program is
//! worth it: a page heap has held dirty pages, the heap has grown past
//! [`START_COMMITTED`], or `TESSERA_PROF_SIGNAL` asks for profiles, which this thread
//! writes. Never from a free: glibc frees a dead thread's TLS inside `pthread_join` while it
//! holds the stack cache's lock, which `pthread_create` takes too (a purger started from
//! that free waited for it forever). Every epoch (a tenth of the decay time) it
//! runs each page heap's decay step, and hands back the stash of every cache whose stash has
//! not moved for a whole decay time (an idle thread's empty spans). Over the soft limit it
//! returns everything at once: every dirty page, every stash, idle caches' spans. With
//! nothing dirty and no stash left it sleeps until a page heap has dirty pages again
//! (`tessera_span::commit::notify`).
//!
//! It also writes the heap profiles `TESSERA_PROF_SIGNAL` asks for: the handler only flags
//! the request and wakes it (`profile/writer.rs`, `on_signal`), since writing one is not
//! async-signal-safe.
//!
//! `TESSERA_PURGER=off` keeps the thread from starting (for programs that must stay single-
//! threaded, for `unshare(CLONE_NEWUSER)` say); the page heaps then run the decay steps
//! themselves, from their own operations, and nothing is returned while the program is idle.
//! A forked child starts its own purger the same lazy way.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, Ordering};
use core::time::Duration;

use tessera_span::{commit, heap};
use tessera_sys::{clock, thread};

use crate::{node, pool};

const OFF: u8 = 0;
const IDLE: u8 = 1;
const STARTING: u8 = 2;
const RUNNING: u8 = 3;

/// `OFF` until configuration allows a purger, then `IDLE` until one starts.
static STATE: AtomicU8 = AtomicU8::new(OFF);

/// Lets the purger start (configuration, once).
pub(crate) fn enable() {
    let _ = STATE.compare_exchange(OFF, IDLE, Ordering::Relaxed, Ordering::Relaxed);
}

/// Committed memory from which a program gets its purger before it frees anything: what
/// it frees later can then go back while it sleeps, with no allocator call.
const START_COMMITTED: usize = 4 << 20;

/// Starts the purger if one may run, none runs yet, and the program is worth it (see the
/// top of this file). One load once it runs. Only from an allocation's slow path, with no
/// allocator lock held.
#[inline]
pub(crate) fn maybe_start() {
    if STATE.load(Ordering::Relaxed) == IDLE && worth_starting() {
        start();
    }
}

#[cold]
#[inline(never)]
fn worth_starting() -> bool {
    heap::dirty_seen()
        || commit::committed() >= START_COMMITTED
        || crate::profile::writes_on_signal()
}

#[cold]
#[inline(never)]
fn start() {
    if STATE
        .compare_exchange(IDLE, STARTING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // The new thread runs `main`, which takes no argument and never returns, with every
    // signal blocked (it must never run a program's signal handler).
    if thread::spawn_detached(main, 64 << 10).is_ok() {
        heap::set_background_purger(true);
        STATE.store(RUNNING, Ordering::Release);
    } else {
        // No thread (a process limit, say): the heaps keep purging from their own
        // operations; try again at the next occasion.
        STATE.store(IDLE, Ordering::Release);
    }
}

/// In a forked child: the parent's purger thread is not there, and the runs it was
/// returning to the OS at the moment of the fork go back to the dirty lists.
pub(crate) fn after_fork_in_child() {
    if STATE.load(Ordering::Relaxed) != OFF {
        STATE.store(IDLE, Ordering::Relaxed);
        heap::set_background_purger(false);
    }
    for node in node::used_nodes() {
        // SAFETY: called from the fork child handler: the child's only thread is the one
        // that forked, and it is in the handler, not in a purge.
        unsafe { node.heap.recover_after_fork() };
    }
}

extern "C" fn main(_: *mut c_void) -> *mut c_void {
    thread::set_name(c"tessera-purge");
    loop {
        let seen = commit::signal();
        crate::profile::write_signalled();
        if tick() {
            commit::wait(seen, Some(Duration::from_millis(heap::epoch_ms())));
            continue;
        }
        // Nothing left: sleep until a page heap has dirty pages again. Announce the sleep
        // first, then look once more, so a heap that turned dirty in between wakes us.
        // Per-CPU slabs wake nobody when they fill (`percpu::in_use`): while there are any,
        // the sleep lasts a decay time (at least 100 ms: a decay of 0 must not spin).
        let seen = commit::prepare_deep_sleep();
        let more = has_work() || crate::profile::signal_pending();
        let timeout = if more {
            Some(Duration::ZERO)
        } else if crate::percpu::in_use() {
            Some(Duration::from_millis(heap::decay_ms().max(100)))
        } else {
            None
        };
        commit::wait(seen, timeout);
    }
}

/// One pass; whether there is anything left to do at the next epoch.
fn tick() -> bool {
    let urgent = commit::over_soft();
    let now = clock::coarse_now_ms();
    let mut dirty = 0;
    for node in node::used_nodes() {
        // A heap that outgrew its lean part asked for it to be collapsed here, off the
        // allocating thread (`PageHeap::collapse_lean_if_due`).
        node.heap.collapse_lean_if_due();
        let outcome = if urgent {
            node.heap.purge_all()
        } else {
            node.heap.purge_step()
        };
        dirty += outcome.dirty;
    }
    let stale_before = now.saturating_sub(heap::decay_ms());
    let mut stashed = 0;
    let mut reclaimed = 0;
    pool::for_each_cache(|cache| {
        reclaimed += cache.reclaim_stash(stale_before, urgent);
        stashed += cache.stash_bytes();
    });
    if urgent {
        pool::collect_idle();
    }
    if reclaimed > 0 && urgent {
        for node in node::used_nodes() {
            node.heap.purge_all();
        }
    }
    // Per-CPU stacks idle for half a decay time go back to their back ends (`percpu/drain.rs`);
    // while any stack holds objects, the purger keeps looking every epoch.
    let stacked = crate::percpu::drain_idle(now, heap::decay_ms(), urgent);
    // Empty spans on the central lists go back to the page heap (at the next tick if they
    // stay empty until then), whose decay returns them.
    let emptied = crate::central::sweep_all(urgent);
    dirty > 0 || stashed > 0 || reclaimed > 0 || stacked > 0 || emptied > 0
}

fn has_work() -> bool {
    let mut work = false;
    for node in node::used_nodes() {
        work |= node.heap.stats().dirty > 0;
    }
    pool::for_each_cache(|cache| work |= cache.stash_bytes() > 0);
    work
}
