//! Stacks for the guarded blocks' reports: return addresses taken with the unwinder, printed
//! as raw addresses with their module and offset (`addr2line -e <module> <offset>` resolves
//! them) and the nearest dynamic symbol when `dladdr` knows one.
//!
//! Why the unwinder: frame pointers are not kept in release builds, and glibc's `backtrace()`
//! loads libgcc_s with `dlopen` on its first call, which allocates. `_Unwind_Backtrace`
//! (libgcc_s, which every Rust program and `libtessera.so` already link) walks the DWARF
//! call-frame information it finds through `dl_iterate_phdr`, with no allocation on that
//! path; `dladdr` reads the loader's tables under its lock, without allocating either.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::report::Line;

/// Frames kept per stack.
const DEPTH: usize = 24;

/// `_Unwind_Reason_Code` values the callback returns.
const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

/// The return addresses of a stack, innermost first.
#[derive(Clone, Copy, Debug)]
pub(super) struct Trace {
    frames: [usize; DEPTH],
    len: usize,
}

impl Trace {
    pub(super) const EMPTY: Trace = Trace {
        frames: [0; DEPTH],
        len: 0,
    };

    /// Records the calling thread's stack, counting the capture in `capturing` while it runs
    /// (no sample is taken meanwhile: see `guarded/mod.rs`).
    #[inline(never)]
    pub(super) fn capture(&mut self, capturing: &AtomicUsize) {
        self.len = 0;
        capturing.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the callback receives `self` as `arg` and is the only user of it until
        // `_Unwind_Backtrace` returns.
        unsafe { _Unwind_Backtrace(record, (self as *mut Trace).cast()) };
        capturing.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes one line per frame: `    #n 0x<address> <module>+0x<offset> (<symbol>+0x<offset>)`,
    /// from the frame at `from` (the faulting instruction, for a stack taken in the fault
    /// handler) or else from the first frame outside tessera's own module when that module
    /// is a shared library (`libtessera.so`; linked into a program, its frames cannot be told
    /// from the program's by module, and are shown).
    pub(super) fn print(&self, from: Option<usize>) {
        let frames = &self.frames[..self.len];
        let skip = match from {
            Some(pc) => frames.iter().position(|&ip| ip == pc || ip == pc + 1),
            None => own_library_base()
                .and_then(|own| frames.iter().position(|&ip| module_base(ip) != Some(own))),
        };
        for (n, &ip) in frames[skip.unwrap_or(0)..].iter().enumerate() {
            let mut line = Line::blank();
            line.text("    #").dec(n).text(" ").hex(ip);
            describe(&mut line, ip);
            line.emit();
        }
    }
}

extern "C" fn record(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Trace` that `capture` passed, borrowed by nobody else meanwhile.
    let trace = unsafe { &mut *arg.cast::<Trace>() };
    // SAFETY: `ctx` is the unwinder's context for the frame being visited.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 || trace.len == DEPTH {
        return URC_END_OF_STACK;
    }
    trace.frames[trace.len] = ip;
    trace.len += 1;
    URC_NO_REASON
}

/// The load address of the module holding `ip`.
fn module_base(ip: usize) -> Option<usize> {
    // SAFETY: an all-zero `Dl_info` is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`.
    let found = unsafe { libc::dladdr(ip.saturating_sub(1) as *const c_void, &mut info) } != 0;
    found.then_some(info.dli_fbase as usize)
}

/// The load address of the module this code is in, if that is not the program itself.
fn own_library_base() -> Option<usize> {
    let own = module_base(own_library_base as *const () as usize + 1)?;
    // SAFETY: `getauxval` has no preconditions; `AT_PHDR` is the program's header table.
    let program = module_base(unsafe { libc::getauxval(libc::AT_PHDR) } as usize + 1);
    (program != Some(own)).then_some(own)
}

/// Appends ` <module>+0x<offset> (<symbol>+0x<offset>)` for the code address `ip`, as far as
/// the loader knows it.
pub(super) fn describe(line: &mut Line, ip: usize) {
    // SAFETY: an all-zero `Dl_info` is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // A return address may be one past the call's last byte, the first of the next symbol:
    // look up the byte before it.
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`.
    if unsafe { libc::dladdr(ip.saturating_sub(1) as *const c_void, &mut info) } == 0 {
        return;
    }
    line.text(" ");
    if !info.dli_fname.is_null() {
        // SAFETY: the loader's file name of a loaded module, a C string.
        let name = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) };
        line.text(name.to_str().unwrap_or("?"));
    }
    line.text("+").hex(ip - info.dli_fbase as usize);
    if !info.dli_sname.is_null() {
        // SAFETY: as above, the symbol's name.
        let name = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) };
        line.text(" (")
            .text(name.to_str().unwrap_or("?"))
            .text("+")
            .hex(ip - info.dli_saddr as usize)
            .text(")");
    }
}
