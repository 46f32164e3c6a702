//! Call stacks taken inside the allocator, for the guarded blocks' reports (`guarded/`) and
//! the heap profiler's samples (`profile/`).
//!
//! Why the unwinder: frame pointers are not kept in release builds (nor in most C
//! programs a distribution ships), and glibc's `backtrace()` loads libgcc_s with `dlopen` on
//! its first call, which allocates. `_Unwind_Backtrace` (libgcc_s, which every Rust program
//! and `libtessera.so` already link) walks the DWARF call-frame information it finds
//! through `dl_iterate_phdr`, with no allocation on that path.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

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

/// Where the callback writes.
struct Frames<'a> {
    out: &'a mut [usize],
    len: usize,
}

/// Writes the calling thread's return addresses into `out`, innermost first (this
/// function's caller's first), and returns how many: at most `out.len()`, fewer when the
/// stack is shallower.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize]) -> usize {
    let mut frames = Frames { out, len: 0 };
    // SAFETY: the callback receives `frames` as `arg` and is the only user of it until
    // `_Unwind_Backtrace` returns.
    unsafe { _Unwind_Backtrace(record, (&mut frames as *mut Frames<'_>).cast()) };
    frames.len
}

extern "C" fn record(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Frames` that `capture` passed, borrowed by nobody else meanwhile.
    let frames = unsafe { &mut *arg.cast::<Frames<'_>>() };
    // SAFETY: `ctx` is the unwinder's context for the frame being visited.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 || frames.len == frames.out.len() {
        return URC_END_OF_STACK;
    }
    frames.out[frames.len] = ip;
    frames.len += 1;
    URC_NO_REASON
}

/// The load address of the module holding the code address `ip` (a return address: the
/// byte before it is looked up).
pub(crate) fn module_base(ip: usize) -> Option<usize> {
    // SAFETY: an all-zero `Dl_info` is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`.
    let found = unsafe { libc::dladdr(ip.saturating_sub(1) as *const c_void, &mut info) } != 0;
    found.then_some(info.dli_fbase as usize)
}

/// The address range `[start, end)` of the module this code is in, if that module is not
/// the program itself (`libtessera.so`): `(0, 0)` until looked up, `(1, 1)` when linked
/// into the program.
static OWN_RANGE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The address range this library's segments occupy, if it is a shared library; looked up
/// once (`dladdr`, then the loader's program headers).
fn own_library_range() -> Option<(usize, usize)> {
    let start = OWN_RANGE[0].load(Ordering::Relaxed);
    if start != 0 {
        return (start != 1).then(|| (start, OWN_RANGE[1].load(Ordering::Relaxed)));
    }
    let own = module_base(own_library_range as *const () as usize + 1);
    // SAFETY: `getauxval` has no preconditions; `AT_PHDR` is the program's header table.
    let program = module_base(unsafe { libc::getauxval(libc::AT_PHDR) } as usize + 1);
    let range = own
        .filter(|&own| program != Some(own))
        .and_then(module_range);
    let (start, end) = range.unwrap_or((1, 1));
    OWN_RANGE[1].store(end, Ordering::Relaxed);
    OWN_RANGE[0].store(start, Ordering::Relaxed);
    range
}

/// The lowest and highest address of the loadable segments of the module loaded at `base`.
fn module_range(base: usize) -> Option<(usize, usize)> {
    struct Search {
        base: usize,
        range: Option<(usize, usize)>,
    }
    extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `Search` below, used by nobody else during the walk; `info`
        // is the loader's description of one module, valid during the callback.
        let (search, info) = unsafe { (&mut *arg.cast::<Search>(), &*info) };
        let base = info.dlpi_addr as usize;
        let mut lo = usize::MAX;
        let mut hi = 0;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: the header table holds `dlpi_phnum` entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                lo = lo.min(base + ph.p_vaddr as usize);
                hi = hi.max(base + (ph.p_vaddr + ph.p_memsz) as usize);
            }
        }
        if lo <= search.base && search.base < hi {
            search.range = Some((lo, hi));
            return 1;
        }
        0
    }
    let mut search = Search { base, range: None };
    // SAFETY: the callback only reads the loader's data and writes `search`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    search.range
}

/// The index of the first frame outside this library when it is a shared library
/// (`libtessera.so`); `None` when linked into the program (whose frames cannot be told
/// from the allocator's by module) or when every frame is inside.
pub(crate) fn first_outside_own_library(frames: &[usize]) -> Option<usize> {
    let (start, end) = own_library_range()?;
    frames.iter().position(|&ip| !(start < ip && ip <= end))
}
