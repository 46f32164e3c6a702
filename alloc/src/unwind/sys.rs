//! What the unwinder asks of the machine and of the system libraries: the registers of the
//! current frame (`asm!`), libgcc's entry points (its whole walk, and its FDE search), and
//! the signal trampoline's code.

use core::ffi::{c_int, c_void};

use super::cfi::Bases;

unsafe extern "C" {
    pub(super) fn _Unwind_Backtrace(
        trace: extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
    pub(super) fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
    /// The FDE covering `pc`, searched in the frames registered with libgcc and in every
    /// loaded module's `PT_GNU_EH_FRAME` (through `dl_iterate_phdr`, with libgcc's own
    /// cache); fills `bases`. Exported by libgcc_s since GCC 3.0.
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut Bases) -> *const c_void;
}

/// The FDE covering the byte before the return address `ra`, and its bases.
pub(super) fn find_fde(ra: usize) -> Option<(usize, Bases)> {
    let mut bases = Bases::default();
    // SAFETY: `_Unwind_Find_FDE` only reads the loader's and libgcc's tables and writes
    // `bases`; any address may be looked up.
    let fde = unsafe { _Unwind_Find_FDE((ra - 1) as *mut c_void, &mut bases) };
    (!fde.is_null()).then_some((fde as usize, bases))
}

/// The registers a walk starts from: a code address in the frame and that frame's rsp and
/// rbp, all read at the same instruction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Registers {
    pub(super) pc: usize,
    pub(super) sp: usize,
    pub(super) bp: usize,
}

/// The registers at this point of the function it is inlined into.
#[inline(always)]
pub(super) fn registers() -> Registers {
    let (pc, sp, bp): (usize, usize, usize);
    // SAFETY: reads three registers and computes an address; touches no memory, no stack,
    // no flags. rbp may be read even where it is not the frame pointer: the CFI of this pc
    // says whether the caller's rbp is saved (then this value is not used) or unchanged.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip + 2f]",
            "2:",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    Registers { pc, sp, bp }
}

/// Whether the code at `pc` is the kernel's signal-return trampoline (`mov $15, %rax;
/// syscall`), which libgcc recognises without an FDE and unwinds as a signal frame.
///
/// # Safety
/// `pc` must be a return address of this thread's stack whose code is mapped.
pub(super) unsafe fn is_sigreturn(pc: usize) -> bool {
    const CODE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    // SAFETY: the caller's contract; libgcc reads the same bytes in the same case.
    let bytes = unsafe { (pc as *const [u8; 9]).read_unaligned() };
    bytes == CODE
}
