//! The one piece of assembly in this crate: call a function on another stack and come back.
//!
//! `maybe_grow` needs to run a closure on a fresh segment and return to the caller's stack
//! afterwards. That is a plain call with the stack pointer swapped, so it does not need a full
//! coroutine: save the old stack pointer in a callee-saved register (the frame pointer), load
//! the new one, call, restore. CFI directives describe the frame through the frame pointer,
//! so debuggers, profilers and backtraces walk from the segment back to the original stack.
//!
//! Panics never cross this frame: the callee (`grow.rs`) catches them on the segment and the
//! caller resumes them on the original stack.

/// Calls `f(arg)` with the stack pointer set to `top`, then returns on the original stack.
///
/// # Safety
/// - `top` must be the 16-byte-aligned high end of a writable stack, large enough for `f`,
///   with a guard below it, that nothing else uses until this returns.
/// - `f` must not unwind (it is `extern "C"`, so an unwind aborts).
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
pub(crate) unsafe extern "C" fn call_on_stack(
    arg: *mut u8,
    f: unsafe extern "C" fn(*mut u8),
    top: usize,
) {
    // rdi = arg (passed through to f), rsi = f, rdx = top.
    core::arch::naked_asm!(
        ".cfi_startproc",
        "push rbp",
        ".cfi_def_cfa_offset 16",
        ".cfi_offset rbp, -16",
        "mov rbp, rsp",
        ".cfi_def_cfa_register rbp",
        // `top` is 16-byte aligned, so after `call` pushes the return address the callee sees
        // the stack pointer at 8 mod 16, as the System V ABI requires.
        "mov rsp, rdx",
        "call rsi",
        "mov rsp, rbp",
        ".cfi_def_cfa_register rsp",
        "pop rbp",
        ".cfi_def_cfa_offset 8",
        ".cfi_restore rbp",
        "ret",
        ".cfi_endproc",
    )
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!("tessera-stacks: the maybe_grow trampoline is written for x86_64 only so far");

/// Reads the current stack pointer.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register; no memory access, no side effect.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}
