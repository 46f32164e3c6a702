//! `fork` safety (ARCHITECTURE.md#fork): the prepare handler takes every allocator lock in one
//! fixed order, so the child never inherits a lock held by a thread that does not exist in
//! it; the parent releases them, the child resets them.
//!
//! Order: the orphan cache, the per-CPU back ends (by id) and their threads' span memos, the cache pool, then per node (in index order) every central list (in class
//! order) and the page heap, then the huge-block registry, then the guarded pool, then the heap profile's tables (a leaf: held alone). Code that nests locks nests them
//! in this same order (a cache refill holds no central lock while it asks the page heap).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::node;
use crate::orphan;
use crate::pool;

/// The nodes `prepare` locked, so `parent` and `child` release exactly those even if a
/// first use of a new node raced with the fork.
static LOCKED_NODES: AtomicUsize = AtomicUsize::new(0);

fn each_lock(mut f: impl FnMut(&tessera_sys::lock::RawLock)) {
    f(orphan::raw_lock());
    crate::percpu::each_lock(&mut f);
    f(pool::raw_lock());
    for node in &node::used_nodes()[..LOCKED_NODES.load(Ordering::Relaxed)] {
        for central in node.centrals.iter() {
            f(central.raw_lock());
        }
        f(node.heap.raw_lock());
    }
    f(tessera_span::huge::raw_lock());
    f(crate::guarded::raw_lock());
    f(crate::profile::table::raw_lock());
}

extern "C" fn prepare() {
    LOCKED_NODES.store(node::used_nodes().len(), Ordering::Relaxed);
    each_lock(|lock| lock.lock());
}

extern "C" fn parent() {
    // SAFETY: `prepare` took every one of these locks on this thread.
    each_lock(|lock| unsafe { lock.unlock() });
}

extern "C" fn child() {
    // SAFETY: the child has one thread, the one that ran `prepare`; nobody else can hold
    // or wait for these locks.
    each_lock(|lock| unsafe { lock.force_unlock() });
    crate::purger::after_fork_in_child();
    crate::percpu::after_fork_in_child();
    crate::profile::sample::after_fork_in_child();
}

/// Registers the handlers; called once from the process set-up.
pub(crate) fn register() {
    // Without the handlers (no memory for glibc's record of them) a forked child may find a
    // lock taken for ever, as with any allocator that registers none; nothing else to do.
    let _ = tessera_sys::process::atfork(prepare, parent, child);
}
