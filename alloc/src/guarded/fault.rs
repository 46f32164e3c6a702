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
//! and uses only `write(2)`, the unwinder and `dladdr` (`trace.rs`): nothing allocates.

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::Ordering;

use super::trace::{self, Trace};
use super::{CAPTURING, FREED, FREEING, LIVE, SLOT, slot_index};
use crate::report::Line;

/// The actions installed before ours, written once before ours is installed.
struct Saved(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: written only by `install`, under the pool's lock, before the `sigaction` call that
// makes the reader, `on_fault`, reachable; rewritten only when another handler replaced ours,
// that is, while ours is not installed (a fault in that window goes to the other handler).
unsafe impl Sync for Saved {}

static OLD_SEGV: Saved = Saved(UnsafeCell::new(MaybeUninit::uninit()));
static OLD_BUS: Saved = Saved(UnsafeCell::new(MaybeUninit::uninit()));

fn saved(sig: c_int) -> &'static Saved {
    if sig == libc::SIGBUS {
        &OLD_BUS
    } else {
        &OLD_SEGV
    }
}

/// Installs the handler for SIGSEGV and SIGBUS unless it is in place. Called from `enable`
/// and again, under the pool's lock, each time a slot is handed out: Rust's runtime reads
/// the SIGSEGV action, allocates (the first sample may come here and install ours), then
/// installs its own stack-overflow handler over what it read, which does not chain. Coming
/// back puts ours on top with Rust's (or anyone's) saved as the one to chain to.
pub(super) fn install() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is a valid out-parameter.
        let mut current: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: a null new action only reads the current one.
        unsafe { libc::sigaction(sig, ptr::null(), &mut current) };
        if current.sa_sigaction == on_fault as *const () as usize {
            continue;
        }
        // SAFETY: callers hold the pool's lock (or run before any slot exists), so one
        // thread writes the slot at a time; a fault racing with this re-installation is the
        // accepted window (see `Saved`).
        unsafe { (*saved(sig).0.get()).write(current) };
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action` is initialised and `on_fault` has the SA_SIGINFO signature.
        unsafe { libc::sigaction(sig, &action, ptr::null_mut()) };
    }
}

extern "C" fn on_fault(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: for SIGSEGV/SIGBUS under SA_SIGINFO the kernel passes a valid siginfo whose
    // `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if super::contains(addr) {
        report_fault(addr, ctx);
    }
    // SAFETY: the kernel's arguments, forwarded as the kernel would have passed them.
    unsafe { chain(sig, info, ctx) };
}

/// Hands a fault that is not ours to the previous disposition.
///
/// # Safety
/// Called from the signal handler with the kernel's arguments.
unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: `install` saved the old action before our handler could run.
    let old = unsafe { (*saved(sig).0.get()).assume_init_ref() };
    match old.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => {
            // SAFETY: an all-zero sigaction with SIG_DFL is the default disposition.
            let mut dfl: libc::sigaction = unsafe { core::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: restoring the default; on return the instruction faults again and the
            // kernel applies it.
            unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) };
        }
        handler if old.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: with SA_SIGINFO the previous handler takes three arguments.
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { core::mem::transmute(handler) };
            f(sig, info, ctx);
        }
        handler => {
            // SAFETY: without SA_SIGINFO it takes the signal number only.
            let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
            f(sig);
        }
    }
}

/// The faulting access as the CPU saw it: the instruction's address and whether it wrote.
pub(super) struct Access {
    pc: usize,
    write: Option<bool>,
}

fn access(ctx: *mut c_void) -> Access {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !ctx.is_null() {
        // SAFETY: for an SA_SIGINFO handler the third argument is the thread's `ucontext_t`.
        let regs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        // The page-fault error code: bit 1 set for a write.
        let err = regs[libc::REG_ERR as usize] as usize;
        return Access {
            pc: regs[libc::REG_RIP as usize] as usize,
            write: Some(err & 2 != 0),
        };
    }
    let _ = ctx;
    Access { pc: 0, write: None }
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
    let mut line = Line::new(what);
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
        let mut here = Trace::EMPTY;
        here.capture_in_signal_handler(&CAPTURING);
        line.text("  access stack:").emit();
        here.print(Some(a.pc));
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
