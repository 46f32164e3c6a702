//! What the unwinder asks of the machine: the registers of the current frame (`asm!`) and
//! the signal trampoline's code; and libgcc's FDE search (`tessera_sys::dl::find_fde`) in
//! the terms of `cfi.rs`.

use tessera_sys::dl;

use super::cfi::Bases;

/// The FDE covering the byte before the return address `ra`, and its bases.
#[inline]
pub(super) fn find_fde(ra: usize) -> Option<(usize, Bases)> {
    let fde = dl::find_fde(ra - 1)?;
    let bases = Bases {
        text: fde.text_base,
        data: fde.data_base,
        func: fde.func,
    };
    Some((fde.addr, bases))
}

/// The registers a walk starts from: a code address in the frame and that frame's rsp and
/// rbp, all read at the same instruction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registers {
    pub(crate) pc: usize,
    pub(crate) sp: usize,
    pub(crate) bp: usize,
}

/// The registers at this point of the function it is inlined into.
#[inline(always)]
pub(crate) fn registers() -> Registers {
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
