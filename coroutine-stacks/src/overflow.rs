//! Reporting stack overflows: a SIGSEGV/SIGBUS handler that recognises a hit anywhere in a
//! tessera stack's guard region and says so in one clear line, instead of a bare
//! "Segmentation fault". The registry knows each slab's guard width, so a fault deep in a
//! wide guard (a large frame's first store) is recognised as well as one at its top.
//!
//! How it fits together:
//! - The handler is installed once per process (`Once`), on top of whatever was there
//!   before. Rust's std installs its own handler at start-up to report main-thread and
//!   std-thread overflows; ours keeps that `sigaction` and chains to it.
//! - A fault on a tessera guard: write one line to stderr with `write(2)` (the fault may have
//!   happened while holding any lock, including malloc's, so nothing here allocates, formats
//!   through `std::fmt`, or locks), then `abort()`.
//! - Any other fault goes to the previous handler unchanged. If that was `SIG_DFL`, the old
//!   disposition is restored and the handler returns: the faulting instruction runs again and
//!   the kernel's default action (core dump) happens with the original fault. `SIG_IGN` is
//!   treated as `SIG_DFL`, since ignoring a hardware fault would spin forever.
//! - The handler runs on an alternate signal stack (`SA_ONSTACK`): the faulting stack has no
//!   room left. Every thread that runs tessera stacks needs one; `prepare_thread` installs one
//!   lazily (on the first `acquire` of a thread) unless the thread already has one (std gives
//!   its threads one when its own handler is installed).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::sync::Once;

use tessera_sys::io::Line;
use tessera_sys::mem::{self, Protection};
use tessera_sys::process;
use tessera_sys::signal::{self, Action, SIGBUS, SIGSEGV, SigInfo};

use crate::class::MAX_STACK_SIZE;
use crate::registry::{self, SlotHit};

/// The sigaction that was installed before ours, per signal; written once, before our
/// handler can run, and only read afterwards.
struct SavedAction(UnsafeCell<MaybeUninit<Action>>);

// SAFETY: written exactly once inside `INSTALL.call_once`, before the `sigaction` call that
// makes our handler (the only reader) reachable; never written again.
unsafe impl Sync for SavedAction {}

static OLD_SEGV: SavedAction = SavedAction(UnsafeCell::new(MaybeUninit::uninit()));
static OLD_BUS: SavedAction = SavedAction(UnsafeCell::new(MaybeUninit::uninit()));
static INSTALL: Once = Once::new();

fn saved(sig: c_int) -> &'static SavedAction {
    if sig == SIGBUS { &OLD_BUS } else { &OLD_SEGV }
}

/// Installs the process-wide handler (idempotent) and gives the calling thread an alternate
/// signal stack if it has none. Called by every `acquire`; runtimes call it on each worker
/// thread that may resume coroutines acquired elsewhere.
///
/// Not inlined: the thread-local it reads must be located afresh on every call, since the
/// caller may be a coroutine that has moved to another thread since its last call.
#[inline(never)]
pub fn prepare_thread() {
    thread_local! {
        static READY: Cell<bool> = const { Cell::new(false) };
    }
    if READY.with(Cell::get) {
        return;
    }
    install_handler();
    ensure_altstack();
    READY.with(|r| r.set(true));
}

fn install_handler() {
    INSTALL.call_once(|| {
        for sig in [SIGSEGV, SIGBUS] {
            let slot = saved(sig);
            // SAFETY: the static slot we own, written here once (see `SavedAction`).
            unsafe { (*slot.0.get()).write(signal::current(sig)) };
            // Cannot fail for these signals.
            let _ = signal::install_fault_handler(sig, on_fault);
        }
    });
}

extern "C" fn on_fault(sig: c_int, info: *mut SigInfo, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV/SIGBUS under SA_SIGINFO, and for
    // these signals `si_addr` is the faulting address.
    let addr = unsafe { signal::fault_address(info) };
    if let Some(hit) = registry::lookup(addr)
        && hit.in_guard
    {
        report(&hit, addr);
        // Async-signal-safe, and does not return.
        process::abort();
    }
    // SAFETY: forwarding the kernel's own arguments to the handler that was installed before
    // ours, as the kernel would have called it.
    unsafe { chain(sig, info, ctx) };
}

/// Hands a fault that is not ours to the previous disposition (`signal::chain`).
///
/// # Safety
/// Must be called from the signal handler, with the kernel's arguments.
unsafe fn chain(sig: c_int, info: *mut SigInfo, ctx: *mut c_void) {
    // SAFETY: `on_fault` only runs after `install_handler` stored the old action.
    let old = unsafe { (*saved(sig).0.get()).assume_init_ref() };
    // SAFETY: the kernel's arguments, in the handler (the contract).
    unsafe { signal::chain(old, sig, info, ctx) };
}

fn report(hit: &SlotHit, addr: usize) {
    let usable_kib = hit.slab.class.size() >> 10;
    // How far below the stack the access went: about a page for runaway recursion, more for
    // a large frame whose first store is at its low end.
    let below = hit.usable_lo() - addr;
    let mut line = Line::<512>::new();
    line.text("tessera-stacks: stack overflow: stack ")
        .dec(hit.slab.id.0 as usize)
        .text(".")
        .dec(hit.index);
    let label = hit.label();
    if label != 0 {
        line.text(" (coroutine ").dec(label as usize).text(")");
    }
    line.text(" (")
        .dec(usable_kib)
        .text(" KiB usable) hit its guard at fault address ")
        .hex(addr)
        .text(", ")
        .dec(below)
        .text(" bytes below the stack (guard: ")
        .dec(hit.slab.guard >> 10)
        .text(" KiB); ask for a bigger stack (tessera_stacks::acquire(size) with size > ")
        .dec(usable_kib)
        .text(" KiB, up to ")
        .dec(MAX_STACK_SIZE >> 10)
        .text(" KiB) or run deep recursion under tessera_stacks::maybe_grow")
        .emit();
}

/// Size of the alternate signal stacks we install: room for the kernel's signal frame (with
/// AVX-512 state) and the handler, which formats one line into a 512-byte buffer.
const ALTSTACK_SIZE: usize = 64 << 10;

/// An alternate signal stack this crate installed; removed and unmapped at thread exit.
struct AltStack {
    map: *mut u8,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let guard = mem::page_size();
        let ours = self.map as usize + guard;
        if !matches!(signal::altstack(), Ok(Some(current)) if current.base == ours) {
            // Someone replaced it; it is no longer ours to tear down, and not in use.
            // SAFETY: the mapping is ours and not installed as an alternate stack.
            unsafe { mem::release(self.map, self.len) };
            return;
        }
        // SAFETY: the thread is exiting and not running a signal handler, so the alternate
        // stack can be disabled and then unmapped.
        unsafe {
            if signal::disable_altstack().is_ok() {
                mem::release(self.map, self.len);
            }
        }
    }
}

thread_local! {
    static OWN_ALTSTACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

fn ensure_altstack() {
    if !matches!(signal::altstack(), Ok(None)) {
        return; // the thread has one already (std's, or the runtime's)
    }
    let page = mem::page_size();
    let len = ALTSTACK_SIZE + page;
    let Ok(map) = mem::reserve(len, page) else {
        return; // no report on overflow then, but no reason to fail the acquire
    };
    let map = map.as_ptr();
    // A guard below the alternate stack, so a handler that overran it faults instead of
    // scribbling on whatever mapping sits below. Best effort.
    // SAFETY: the first page of our fresh mapping, used by nothing.
    let _ = unsafe { mem::protect(map, page, Protection::None) };
    let stack = signal::AltStack {
        base: map as usize + page,
        size: ALTSTACK_SIZE,
    };
    // SAFETY: `stack` describes memory we own for as long as `OWN_ALTSTACK` lives (until
    // thread exit, where `AltStack::drop` disables it before unmapping).
    if unsafe { signal::set_altstack(stack) }.is_err() {
        // SAFETY: never installed, so nothing refers to it.
        unsafe { mem::release(map, len) };
        return;
    }
    let installed = OWN_ALTSTACK.try_with(|s| *s.borrow_mut() = Some(AltStack { map, len }));
    if installed.is_err() {
        // Thread-locals are being destroyed: leave the stack installed and leak it (the thread
        // is about to exit) rather than unmap memory the kernel may still deliver a signal on.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_thread_without_altstack_gets_one() {
        std::thread::spawn(|| {
            // SAFETY: this thread is not in a signal handler; disabling std's alternate stack
            // only affects this thread, which takes no fault before installing ours.
            unsafe { signal::disable_altstack() }.unwrap();
            ensure_altstack();
            let current = signal::altstack().unwrap().expect("an alternate stack");
            assert_eq!(current.size, ALTSTACK_SIZE);
        })
        .join()
        .unwrap();
    }
}
