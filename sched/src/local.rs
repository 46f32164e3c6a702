//! Coroutine-local storage, and what `thread_local!` means inside a coroutine.
//!
//! A `thread_local!` belongs to the thread (the M) that happens to run the coroutine, and a
//! coroutine may resume on another M after any yield, park, channel operation, sleep or
//! lock: a value read from a thread-local before such a point and one read after it may be
//! different threads' values, and a reference into a thread-local must never be held across
//! one. Use `lock_to_thread()` to keep a coroutine on one thread, or this module's
//! `coroutine_local!` for state that follows the coroutine.
//!
//! Values live in a per-G vector indexed by a key number given out on first use; they are
//! created lazily and dropped when the coroutine returns (on the coroutine, so a destructor
//! may still use the runtime). Outside a coroutine, the calling thread's own table is used.

use core::cell::RefCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::any::Any;

static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

/// A coroutine-local key; make one with [`coroutine_local!`](crate::coroutine_local).
pub struct LocalKey<T: 'static> {
    #[doc(hidden)]
    pub init: fn() -> T,
    #[doc(hidden)]
    pub key: AtomicUsize,
}

impl<T: 'static> core::fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LocalKey")
    }
}

/// Declares coroutine-local statics: `coroutine_local!(static X: RefCell<u32> = RefCell::new(0));`
#[macro_export]
macro_rules! coroutine_local {
    ($(#[$a:meta])* $v:vis static $name:ident : $t:ty = $e:expr; $($rest:tt)*) => {
        $(#[$a])* $v static $name: $crate::local::LocalKey<$t> = $crate::local::LocalKey {
            init: { fn __init() -> $t { $e } __init },
            key: ::core::sync::atomic::AtomicUsize::new(0),
        };
        $crate::coroutine_local!($($rest)*);
    };
    () => {};
}

thread_local! {
    static THREAD_TABLE: RefCell<Vec<Option<Box<dyn Any>>>> = const { RefCell::new(Vec::new()) };
}

impl<T: 'static> LocalKey<T> {
    fn index(&self) -> usize {
        let k = self.key.load(Ordering::Acquire);
        if k != 0 {
            return k - 1;
        }
        let new = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        match self
            .key
            .compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => new - 1,
            Err(k) => k - 1,
        }
    }

    /// Runs `f` with this coroutine's value (created by the initialiser on first use).
    /// `f` may yield or block: the value belongs to the coroutine, not the thread.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let i = self.index();
        let g = crate::machine::current_g();
        if g.is_null() {
            let p = THREAD_TABLE.with(|t| {
                let mut t = t.borrow_mut();
                slot_ptr(&mut t, i, self.init)
            });
            // SAFETY: entries of a table are boxed and never removed while the thread lives,
            // so the pointee is stable; the table is this thread's own.
            return f(unsafe { &*p });
        }
        // SAFETY: a G's `locals` are only touched by the G itself, which is running here.
        let table = unsafe { &mut *(*g).locals.get() };
        let p = slot_ptr(table, i, self.init);
        // SAFETY: the value is boxed; entries are only dropped when the coroutine returns.
        f(unsafe { &*p })
    }
}

fn slot_ptr<T: 'static>(t: &mut Vec<Option<Box<dyn Any>>>, i: usize, init: fn() -> T) -> *const T {
    if t.len() <= i {
        t.resize_with(i + 1, || None);
    }
    let b = t[i].get_or_insert_with(|| Box::new(init()));
    b.downcast_ref::<T>().expect("one type per key") as *const T
}

/// Drops the locals of `g`, the running coroutine (at its end).
///
/// # Safety
/// `g` is the G running on the calling thread.
pub(crate) unsafe fn drop_all(g: crate::coroutine::GRef) {
    loop {
        // SAFETY: per the contract `g` is alive and running here, and only the running G
        // touches its table; the reference ends before any destructor runs.
        let table = unsafe { &mut *(*g).locals.get() };
        if table.capacity() == 0 {
            // Never used (the common case), or all dropped.
            return;
        }
        // Move the table out before dropping, so a destructor that reads another local sees
        // a fresh table, not a half-dropped one; go round again for what it creates, so a
        // reused G starts with none.
        drop(core::mem::take(table));
    }
}
