//! Signals: the fault handlers (the stacks' overflow report, the guarded pool's report) that
//! sit on top of whatever handler was there and chain to it, the alternate signal stacks
//! they run on, the scheduler's SIGQUIT pipe, and plain handlers (that pipe's, the heap
//! profile's `TESSERA_PROF_SIGNAL`).
//!
//! Chaining: a handler saves the [`Action`] it found ([`current`]) before it installs itself
//! ([`install_fault_handler`]); a fault that is not its own goes on with [`chain`]. Several
//! such handlers stack up, each calling the one it found.

use core::ffi::{c_int, c_void};
use core::ptr;

use crate::error::OsError;

pub use libc::{SIGBUS, SIGHUP, SIGPROF, SIGQUIT, SIGSEGV, SIGURG, SIGUSR1, SIGUSR2, SIGWINCH};

/// The kernel's description of a signal (`siginfo_t`), as a fault handler receives it.
pub type SigInfo = libc::siginfo_t;

/// A handler with the `SA_SIGINFO` signature: the signal, its `siginfo_t`, the interrupted
/// thread's `ucontext_t`.
pub type FaultHandler = extern "C" fn(c_int, *mut SigInfo, *mut c_void);

/// A signal's disposition (`struct sigaction`), as saved by [`current`].
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Action(libc::sigaction);

impl core::fmt::Debug for Action {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Action")
            .field("handler", &self.handler())
            .field("flags", &self.0.sa_flags)
            .finish()
    }
}

impl Action {
    /// The handler's address (`SIG_DFL` is 0, `SIG_IGN` 1).
    pub fn handler(&self) -> usize {
        self.0.sa_sigaction
    }
}

fn check_zero(rc: c_int) -> Result<(), OsError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError::last())
    }
}

/// The disposition of `sig` now. Cannot fail for a valid signal number (`EINVAL` otherwise,
/// which reads as the default disposition).
pub fn current(sig: c_int) -> Action {
    // SAFETY: a zeroed sigaction is a valid out-parameter (and, left so, the default
    // disposition).
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into the out-pointer.
    unsafe { libc::sigaction(sig, ptr::null(), &mut old) };
    Action(old)
}

/// Installs `handler` for `sig` with `SA_SIGINFO | SA_ONSTACK` (on the alternate stack when
/// the thread has one) and an empty mask.
///
/// Errors: `EINVAL` for a signal that cannot be caught.
pub fn install_fault_handler(sig: c_int, handler: FaultHandler) -> Result<(), OsError> {
    // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `action` is fully initialised; `handler` has the SA_SIGINFO signature.
    check_zero(unsafe { libc::sigaction(sig, &action, ptr::null_mut()) })
}

/// Installs `handler` (the plain one-argument signature) for `sig` with `SA_RESTART` and an
/// empty mask.
///
/// Errors: `EINVAL` for a signal that cannot be caught.
///
/// # Safety
/// `handler` must do only async-signal-safe work.
pub unsafe fn install_handler(sig: c_int, handler: extern "C" fn(c_int)) -> Result<(), OsError> {
    // SAFETY: a zeroed sigaction is a valid starting point; we set the handler and an
    // empty mask, and the handler only does async-signal-safe work (the contract).
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        check_zero(libc::sigaction(sig, &sa, ptr::null_mut()))
    }
}

/// Hands a fault that is not the caller's to `old`, the disposition it found: a previous
/// handler is called as the kernel would have called it; `SIG_DFL` is put back (`SIG_IGN`
/// too, as `SIG_DFL`, since ignoring a hardware fault would spin for ever), and the caller
/// returns, so the instruction faults again and the kernel's default action follows.
///
/// # Safety
/// Must be called from a fault handler, with the kernel's arguments.
pub unsafe fn chain(old: &Action, sig: c_int, info: *mut SigInfo, ctx: *mut c_void) {
    let old = &old.0;
    match old.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => {
            // SAFETY: an all-zero sigaction with SIG_DFL is the default disposition.
            let mut dfl: libc::sigaction = unsafe { core::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            let restore = if old.sa_sigaction == libc::SIG_DFL {
                old
            } else {
                &dfl
            };
            // SAFETY: installing a default disposition is always valid; when we return, the
            // faulting instruction re-executes and the kernel applies it.
            unsafe { libc::sigaction(sig, restore, ptr::null_mut()) };
        }
        handler if old.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: with SA_SIGINFO the previous handler has the three-argument signature.
            let f: FaultHandler = unsafe { core::mem::transmute(handler) };
            f(sig, info, ctx);
        }
        handler => {
            // SAFETY: without SA_SIGINFO the previous handler takes the signal number only.
            let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
            f(sig);
        }
    }
}

/// The faulting address of a SIGSEGV or SIGBUS (`si_addr`).
///
/// # Safety
/// `info` is the `siginfo_t` the kernel passed a `SA_SIGINFO` handler for SIGSEGV/SIGBUS.
pub unsafe fn fault_address(info: *const SigInfo) -> usize {
    // SAFETY: a valid siginfo (the contract), whose `si_addr` is the faulting address for
    // these signals.
    unsafe { (*info).si_addr() as usize }
}

/// The faulting access as the CPU saw it: the instruction's address and whether it wrote
/// (`None` where the platform does not say). `(0, None)` without a context.
///
/// # Safety
/// `ctx` is null or the `ucontext_t` the kernel passed a `SA_SIGINFO` handler for a page
/// fault.
pub unsafe fn fault_access(ctx: *mut c_void) -> (usize, Option<bool>) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !ctx.is_null() {
        // SAFETY: for an SA_SIGINFO handler the third argument is the thread's `ucontext_t`.
        let regs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        // The page-fault error code: bit 1 set for a write.
        let err = regs[libc::REG_ERR as usize] as usize;
        return (regs[libc::REG_RIP as usize] as usize, Some(err & 2 != 0));
    }
    let _ = ctx;
    (0, None)
}

/// An alternate signal stack: where it starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AltStack {
    /// The lowest address.
    pub base: usize,
    /// Its length in bytes.
    pub size: usize,
}

/// The calling thread's alternate signal stack, `None` when it has none (disabled).
///
/// Errors: none in practice (`EFAULT` is ruled out by the out-pointer on our stack).
pub fn altstack() -> Result<Option<AltStack>, OsError> {
    // SAFETY: a zeroed stack_t is a valid out-parameter.
    let mut current: libc::stack_t = unsafe { core::mem::zeroed() };
    // SAFETY: querying has no preconditions.
    check_zero(unsafe { libc::sigaltstack(ptr::null(), &mut current) })?;
    if current.ss_flags & libc::SS_DISABLE != 0 {
        return Ok(None);
    }
    Ok(Some(AltStack {
        base: current.ss_sp as usize,
        size: current.ss_size,
    }))
}

/// Makes `stack` the calling thread's alternate signal stack.
///
/// Errors: `ENOMEM` (smaller than `MINSIGSTKSZ`), `EPERM` (the thread is running on its
/// current alternate stack).
///
/// # Safety
/// `stack` must be writable memory that stays mapped, and unused by anything else, for as
/// long as it is installed.
pub unsafe fn set_altstack(stack: AltStack) -> Result<(), OsError> {
    let st = libc::stack_t {
        ss_sp: stack.base as *mut c_void,
        ss_flags: 0,
        ss_size: stack.size,
    };
    // SAFETY: `st` describes memory the caller vouches for (the contract).
    check_zero(unsafe { libc::sigaltstack(&st, ptr::null_mut()) })
}

/// Removes the calling thread's alternate signal stack; its memory may be reused after.
///
/// Errors: `EPERM` when the thread is running on it (inside a handler).
///
/// # Safety
/// No handler of this thread may be running on the stack.
pub unsafe fn disable_altstack() -> Result<(), OsError> {
    let disable = libc::stack_t {
        ss_sp: ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: no handler runs on the stack (the contract), so it can be disabled.
    check_zero(unsafe { libc::sigaltstack(&disable, ptr::null_mut()) })
}

/// A close-on-exec pipe `(read end, write end)` for a signal handler to write to: the write
/// end is non-blocking (a handler must never block; a full pipe drops the byte), the read
/// end blocks (a thread waits on it).
///
/// Errors: `EMFILE`/`ENFILE`.
pub fn self_pipe() -> Result<(c_int, c_int), OsError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    check_zero(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // The read end blocks (the reader waits on it); the write end must not (signal).
    // SAFETY: fds[0] is the pipe's read end we just created.
    unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
    Ok((fds[0], fds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_takes_an_alternate_stack_and_gives_it_back() {
        std::thread::spawn(|| {
            // SAFETY: this thread runs no handler now.
            unsafe { disable_altstack() }.unwrap();
            assert_eq!(altstack().unwrap(), None);
            let mut mem = std::vec![0u8; 64 << 10];
            let stack = AltStack {
                base: mem.as_mut_ptr() as usize,
                size: mem.len(),
            };
            // SAFETY: `mem` outlives the installation, which ends below.
            unsafe { set_altstack(stack) }.unwrap();
            assert_eq!(altstack().unwrap(), Some(stack));
            // SAFETY: as above.
            unsafe { disable_altstack() }.unwrap();
            drop(mem);
        })
        .join()
        .unwrap();
    }
}
