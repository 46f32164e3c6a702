//! Profiler labels (Go's `pprof.Do` and `pprof.Labels`): key/value pairs that every heap
//! sample taken while a coroutine runs carries, so that `go tool pprof -tagfocus=key=value`
//! shows the memory one kind of work allocated.
//!
//! A coroutine's labels are a `tessera::profile::LabelSet` in its G record; a spawned
//! coroutine starts with its spawner's. The M that runs a G hands the set to the allocator
//! cache it allocates from (its P's) when it switches to a G whose set differs from the
//! last one it handed over (`machine::m_loop::execute`): one compare per switch. Outside a
//! coroutine, the labels belong to the thread.
//!
//! Label sets are interned for the life of the process (tessera keeps at most 4,096 distinct
//! sets): label kinds of work (a handler's name, a tenant), not single requests.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tessera::profile::LabelSet;

use crate::machine;

thread_local! {
    /// The labels of a thread outside any coroutine.
    static THREAD_LABELS: Cell<LabelSet> = const { Cell::new(LabelSet::NONE) };
}

/// A set's (key, value) pairs, sorted by key.
pub type Pairs = Vec<(String, String)>;

/// The pairs of every set made here, so that a nested `with` can extend its parent's.
fn registry() -> &'static Mutex<HashMap<LabelSet, Pairs>> {
    static REGISTRY: OnceLock<Mutex<HashMap<LabelSet, Pairs>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The labels of the running coroutine (or, outside one, of the calling thread).
pub fn current() -> LabelSet {
    let g = machine::current_g();
    if g.is_null() {
        THREAD_LABELS.with(Cell::get)
    } else {
        // SAFETY: the current G is live while it runs, and only it reads or writes its
        // labels (its M reads them when switching to it, before it runs).
        unsafe { (*g).labels.get() }
    }
}

/// The (key, value) pairs of the running coroutine's labels, sorted by key.
pub fn current_pairs() -> Pairs {
    let set = current();
    if set == LabelSet::NONE {
        return Vec::new();
    }
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&set)
        .cloned()
        .unwrap_or_default()
}

/// Runs `f` with `pairs` added to the running coroutine's labels (a key already set takes
/// the new value), then restores them, also when `f` panics. Coroutines spawned inside
/// inherit the labels.
pub fn with<R>(pairs: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let previous = current();
    let mut merged = current_pairs();
    for &(key, value) in pairs {
        match merged.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => merged.push((key.to_string(), value.to_string())),
        }
    }
    merged.sort();
    let refs: Vec<(&str, &str)> = merged
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let set = LabelSet::new(&refs);
    if set != LabelSet::NONE {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(set)
            .or_insert(merged);
    }
    struct Restore(LabelSet);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_current(self.0);
        }
    }
    set_current(set);
    let _restore = Restore(previous);
    f()
}

/// Makes `set` the labels of the running coroutine (or thread) and of the allocator cache
/// it allocates from.
fn set_current(set: LabelSet) {
    let g = machine::current_g();
    if g.is_null() {
        THREAD_LABELS.with(|l| l.set(set));
    } else {
        // SAFETY: as in `current`: the running G's labels are its own.
        unsafe { (*g).labels.set(set) };
    }
    tessera::profile::set_current_labels(set);
    machine::note_labels(set);
}
