//! The SIGSEGV/SIGBUS handler for the guarded pool, and the reports on guarded blocks.
//!
//! Installed once, when sampling is turned on, on top of whatever handler was there; a fault
//! outside the pool goes on to that handler (as `tessera-stacks`' overflow handler does,
//! which may sit above or below this one: each chains to the one it found). A previous
//! `SIG_DFL` (or `SIG_IGN`, which would spin on a hardware fault) is put back and the
//! handler returns, so the instruction faults again and the kernel's default action follows.
//!
//! A fault in the pool is reported and the process aborts. The handler runs on the faulting
//! thread's stack (an overflow of a heap block leaves it intact) or on its alternate stack,
//! and uses only `write(2)`, `sigaltstack(2)`, the unwinder and `dladdr` (`trace.rs`):
//! nothing allocates. On a small alternate stack it does not walk the access stack
//! (`small_alternate_stack`).

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering;

use tessera_sys::signal::{self, Action, SIGBUS, SIGSEGV, SigInfo};

use super::trace::{self, Trace};
use super::{CAPTURING, FREED, FREEING, LIVE, SLOT, slot_index};
use crate::report;

/// The actions installed before ours, written once before ours is installed.
struct Saved(UnsafeCell<MaybeUninit<Action>>);

// SAFETY: written only by `install`, under the pool's lock, before the `sigaction` call that
// makes the reader, `on_fault`, reachable; rewritten only when another handler replaced ours,
// that is, while ours is not installed (a fault in that window goes to the other handler).
unsafe impl Sync for Saved {}

static OLD_SEGV: Saved = Saved(UnsafeCell::new(MaybeUninit::uninit()));
static OLD_BUS: Saved = Saved(UnsafeCell::new(MaybeUninit::uninit()));

fn saved(sig: c_int) -> &'static Saved {
    if sig == SIGBUS { &OLD_BUS } else { &OLD_SEGV }
}

/// Installs the handler for SIGSEGV and SIGBUS unless it is in place. Called from `enable`
/// and again, under the pool's lock, each time a slot is handed out: Rust's runtime reads
/// the SIGSEGV action, allocates (the first sample may come here and install ours), then
/// installs its own stack-overflow handler over what it read, which does not chain. Coming
/// back puts ours on top with Rust's (or anyone's) saved as the one to chain to.
pub(super) fn install() {
    for sig in [SIGSEGV, SIGBUS] {
        let current = signal::current(sig);
        if current.handler() == on_fault as *const () as usize {
            continue;
        }
        // SAFETY: callers hold the pool's lock (or run before any slot exists), so one
        // thread writes the slot at a time; a fault racing with this re-installation is the
        // accepted window (see `Saved`).
        unsafe { (*saved(sig).0.get()).write(current) };
        // Cannot fail for these signals.
        let _ = signal::install_fault_handler(sig, on_fault);
    }
}

extern "C" fn on_fault(sig: c_int, info: *mut SigInfo, ctx: *mut c_void) {
    // SAFETY: for SIGSEGV/SIGBUS under SA_SIGINFO the kernel passes a valid siginfo whose
    // `si_addr` is the faulting address.
    let addr = unsafe { signal::fault_address(info) };
    if super::contains(addr) {
        report_fault(addr, ctx);
    }
    // SAFETY: the kernel's arguments, forwarded as the kernel would have passed them.
    unsafe { chain(sig, info, ctx) };
}

/// Hands a fault that is not ours to the previous disposition (`signal::chain`).
///
/// # Safety
/// Called from the signal handler with the kernel's arguments.
unsafe fn chain(sig: c_int, info: *mut SigInfo, ctx: *mut c_void) {
    // SAFETY: `install` saved the old action before our handler could run.
    let old = unsafe { (*saved(sig).0.get()).assume_init_ref() };
    // SAFETY: the kernel's arguments, in the handler (the contract).
    unsafe { signal::chain(old, sig, info, ctx) };
}

/// The faulting access as the CPU saw it: the instruction's address and whether it wrote.
pub(super) struct Access {
    pc: usize,
    write: Option<bool>,
}

fn access(ctx: *mut c_void) -> Access {
    // SAFETY: `ctx` is the context the kernel passed `on_fault` for this page fault.
    let (pc, write) = unsafe { signal::fault_access(ctx) };
    Access { pc, write }
}

/// Reports a fault at `addr` in the pool and aborts.
fn report_fault(addr: usize, ctx: *mut c_void) -> ! {
    let i = slot_index(addr);
    let state = SLOT[i].state.load(Ordering::Acquire);
    // SAFETY: a report reads the slot racily by design (see `Slot`).
    let block = unsafe { &*SLOT[i].block.get() };
    let what = match state {
        FREED | FREEING => "use after free of a guarded block",
        LIVE if addr >= block.start + block.usable => "heap buffer overflow past a guarded block",
        LIVE => "heap buffer underflow before a guarded block",
        _ => "access to an unused slot of the guarded pool",
    };
    report_and_abort(what, addr, i, Some(access(ctx)))
}

/// Writes the report on slot `i`'s block, for an access (a fault) or a bad free at `addr`,
/// then aborts.
pub(super) fn report_and_abort(what: &str, addr: usize, i: usize, access: Option<Access>) -> ! {
    // SAFETY: a report reads the slot racily by design (see `Slot`).
    let block = unsafe { &*SLOT[i].block.get() };
    let mut line = report::line(what);
    match &access {
        Some(a) => {
            line.text(": ");
            match a.write {
                Some(true) => line.text("write"),
                Some(false) => line.text("read"),
                None => line.text("access"),
            };
            line.text(" at ").hex(addr)
        }
        None => line.text(" (pointer ").hex(addr).text(")"),
    };
    if block.usable != 0 {
        line.text(", ");
        if addr >= block.start + block.usable {
            line.dec(addr - (block.start + block.usable))
                .text(" bytes past the end of");
        } else if addr < block.start {
            line.dec(block.start - addr).text(" bytes before");
        } else {
            line.dec(addr - block.start).text(" bytes into");
        }
        line.text(" the block ")
            .hex(block.start)
            .text(" of ")
            .dec(block.size)
            .text(" bytes");
        if block.usable != block.size {
            line.text(" (").dec(block.usable).text(" usable)");
        }
    }
    line.emit();
    if let Some(a) = &access
        && a.pc != 0
    {
        line.text("  faulting instruction ").hex(a.pc);
        trace::describe(&mut line, a.pc);
        line.emit();
        match small_alternate_stack() {
            None => {
                let mut here = Trace::EMPTY;
                here.capture_in_signal_handler(&CAPTURING);
                line.text("  access stack:").emit();
                here.print(Some(a.pc));
            }
            Some(room) => {
                line.text("  access stack: not walked (the handler runs on an alternate signal stack with ")
                    .dec(room >> 10)
                    .text(" KiB left)")
                    .emit();
            }
        }
    }
    if block.usable != 0 {
        line.text("  allocated by thread ")
            .dec(block.alloc_tid as usize)
            .text(" at:")
            .emit();
        block.alloc.print(None);
        if !block.free.is_empty() && SLOT[i].state.load(Ordering::Relaxed) != LIVE {
            line.text("  freed by thread ")
                .dec(block.free_tid as usize)
                .text(" at:")
                .emit();
            block.free.print(None);
        }
    }
    line.text("  (addresses are return addresses: `addr2line -f -e <module> <offset - 1>`)")
        .abort()
}

/// Room left below the handler's frame when it runs on an alternate signal stack too small
/// for libgcc's walk, else `None`.
///
/// Rust gives every thread an 8 KiB alternate stack. The kernel's signal frame on it holds
/// the CPU's extended state (about 3.5 KiB with AVX-512, more with AMX), and libgcc's walk
/// of a thread's first signal frame calls functions the loader binds lazily, whose resolver
/// saves that state again on the stack: on an AVX-512 machine the walk ran off the end into
/// the guard page and the report ended in a second SIGSEGV instead of its abort. Without
/// the walk, the report's other lines (the block, both stacks recorded at its allocation
/// and free) still come out. A handler on a thread's own stack (C programs, which set no
/// alternate stack) walks as before.
fn small_alternate_stack() -> Option<usize> {
    /// What the walk is given at the least: the resolver's saved state, libgcc's frames and
    /// contexts, and the trace's printing after it, with margin.
    const WALK_ROOM: usize = 32 << 10;
    let marker = 0u8;
    let sp = core::ptr::addr_of!(marker) as usize;
    let stack = signal::altstack().ok().flatten()?;
    if !(stack.base..stack.base + stack.size).contains(&sp) {
        return None;
    }
    let room = sp - stack.base;
    (room < WALK_ROOM).then_some(room)
}
