//! The dynamic loader and the unwinder: symbols looked up by name, code addresses named by
//! module and symbol, and the return addresses of the calling thread's stack, for reports.
//!
//! Why the unwinder: frame pointers are not kept in release builds, and glibc's `backtrace()`
//! loads libgcc_s with `dlopen` on its first call, which allocates. `_Unwind_Backtrace`
//! (libgcc_s, which every Rust program and `libtessera.so` already link) walks the DWARF
//! call-frame information it finds through `dl_iterate_phdr`, with no allocation on that
//! path; `dladdr` reads the loader's tables under its lock, without allocating either.

use core::ffi::{CStr, c_int, c_void};

/// Looks `name` up in the global scope of the process (`dlsym(RTLD_DEFAULT, name)`); null
/// when no loaded module defines it (`dlerror` would say why; nobody asks).
///
/// Not for the allocator's paths: `dlsym` takes the loader's lock and may itself allocate.
pub fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is a valid C string; `RTLD_DEFAULT` is always a valid handle.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// What the loader knows of a code address ([`addr_info`]).
#[derive(Clone, Copy, Debug)]
pub struct AddrInfo {
    /// The file name of the module holding the address, if the loader has one.
    pub module: Option<&'static CStr>,
    /// The module's load address.
    pub module_base: usize,
    /// The nearest dynamic symbol at or below the address, if any.
    pub symbol: Option<&'static CStr>,
    /// That symbol's address (0 without one).
    pub symbol_addr: usize,
}

/// The module and nearest dynamic symbol of `addr` (`dladdr`); `None` when no loaded module
/// holds it. No `errno`: `dladdr` only says yes or no.
///
/// # Safety
/// The module holding `addr` must stay loaded while the returned names are read (they point
/// into the loader's tables). Tessera's own code and the program's always do.
pub unsafe fn addr_info(addr: usize) -> Option<AddrInfo> {
    // SAFETY: an all-zero `Dl_info` is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 {
        return None;
    }
    let name = |p: *const libc::c_char| {
        // SAFETY: a non-null name from `dladdr` is a C string in the loader's tables, alive
        // while its module stays loaded (the contract).
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
    };
    Some(AddrInfo {
        module: name(info.dli_fname),
        module_base: info.dli_fbase as usize,
        symbol: name(info.dli_sname),
        symbol_addr: info.dli_saddr as usize,
    })
}

/// The address of the program's ELF program headers (`getauxval(AT_PHDR)`), an address
/// inside the main program's module; 0 if the kernel did not pass one (it always does).
pub fn program_headers() -> usize {
    // SAFETY: `getauxval` has no preconditions; `AT_PHDR` is the program's header table.
    unsafe { libc::getauxval(libc::AT_PHDR) as usize }
}

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

/// Where the unwinder's callback records.
struct Frames<'a> {
    frames: &'a mut [usize],
    len: usize,
}

/// Fills `frames` with the return addresses of the calling thread's stack, innermost (the
/// caller's own frame) first, and returns how many it wrote. Cannot fail: a stack the
/// unwinder cannot walk just ends early.
///
/// Inlined, so that the innermost frame is the caller's, as if it called the unwinder itself.
#[inline(always)]
pub fn backtrace(frames: &mut [usize]) -> usize {
    let mut state = Frames { frames, len: 0 };
    // SAFETY: the callback receives `state` as `arg` and is the only user of it until
    // `_Unwind_Backtrace` returns.
    unsafe { _Unwind_Backtrace(record, (&raw mut state).cast()) };
    state.len
}

extern "C" fn record(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Frames` that `backtrace` passed, borrowed by nobody else meanwhile.
    let state = unsafe { &mut *arg.cast::<Frames<'_>>() };
    // SAFETY: `ctx` is the unwinder's context for the frame being visited.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 || state.len == state.frames.len() {
        return URC_END_OF_STACK;
    }
    state.frames[state.len] = ip;
    state.len += 1;
    URC_NO_REASON
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_stack_unwinds_and_its_code_has_a_module() {
        let mut frames = [0usize; 8];
        let n = backtrace(&mut frames);
        assert!(n > 0);
        // SAFETY: the test binary stays loaded.
        let info = unsafe { addr_info(frames[0] - 1) }.unwrap();
        assert!(info.module_base != 0);
        // SAFETY: as above.
        let program = unsafe { addr_info(program_headers() + 1) }.unwrap();
        assert_eq!(program.module_base, info.module_base);
        assert!(!lookup(c"malloc").is_null());
    }
}
