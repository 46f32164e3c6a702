//! C++ `operator new` and `operator delete`, every replaceable form, exported under their
//! Itanium-mangled names so that a C++ program's allocations reach Tessera directly rather
//! than through libstdc++'s versions (which would call our `malloc` anyway, one call later).
//!
//! | symbol | C++ |
//! |---|---|
//! | `_Znwm`, `_Znam` | `new(size_t)`, `new[](size_t)` |
//! | `_ZnwmRKSt9nothrow_t`, `_ZnamRKSt9nothrow_t` | the `nothrow` forms |
//! | `_ZnwmSt11align_val_t`, `_ZnamSt11align_val_t` (+ `RKSt9nothrow_t`) | aligned `new` |
//! | `_ZdlPv`, `_ZdaPv` (+ `RKSt9nothrow_t`) | `delete(void*)`, `delete[](void*)` |
//! | `_ZdlPvm`, `_ZdaPvm` | sized `delete` |
//! | `_ZdlPvSt11align_val_t`, `_ZdaPvSt11align_val_t` (+ `RKSt9nothrow_t`) | aligned `delete` |
//! | `_ZdlPvmSt11align_val_t`, `_ZdaPvmSt11align_val_t` | sized aligned `delete` |
//!
//! Sized deletes go to `tessera::dealloc` with the size and alignment the matching `new`
//! used (C++ guarantees the size is the one passed to `new`), which frees without a page-map
//! lookup when the block belongs to the thread's current span. Should a program pass a wrong
//! size anyway, `dealloc` finds the block outside the span it would check and takes the
//! ordinary `free` path, so a lie costs speed, not the heap.
//!
//! Out of memory in a throwing `new`: the standard wants the installed `new_handler` called
//! until it makes room, and `std::bad_alloc` thrown when there is none. Rust cannot throw a
//! C++ exception, but it can let one pass: the throwing forms are `extern "C-unwind"`, and on
//! failure they look up `std::get_new_handler` and libstdc++'s `std::__throw_bad_alloc` with
//! `dlsym` (only then, never on a successful allocation) and call them, so a handler runs
//! and `catch (std::bad_alloc&)` works as with libstdc++'s own `new`. If libstdc++ is not
//! loaded (a C program calling `_Znwm` by hand), the failure is reported on stderr and the
//! process aborts. The `nothrow` forms return null with `errno = ENOMEM` and do not call the
//! handler: a handler that throws could not be caught here.
//!
//! An aligned `new` with an alignment that is not a power of two (undefined behaviour in
//! C++) fails like an out-of-memory `new`, as libstdc++'s does.

use core::ffi::c_void;
use core::ptr;

use tessera_sys::dl::lookup;
use tessera_sys::error::{ENOMEM, set_errno};
use tessera_sys::process;

use crate::rules::{MAX_REQUEST, align_for, malloc_align};
use crate::text::{Fd, Text};

/// `std::new_handler`. It may throw, so it is called through the unwinding ABI.
type NewHandler = unsafe extern "C-unwind" fn();
/// `std::get_new_handler()`: a plain C++ function taking nothing and returning a pointer,
/// which the Itanium ABI passes exactly like a C function.
type GetNewHandler = unsafe extern "C-unwind" fn() -> Option<NewHandler>;
/// libstdc++'s `std::__throw_bad_alloc()`.
type ThrowBadAlloc = unsafe extern "C-unwind" fn() -> !;

/// Allocates for a `new` expression: null when out of memory (or bad alignment).
#[inline(always)]
fn try_new(size: usize, align: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    tessera::alloc(size, align).cast()
}

/// The throwing `new`'s failure path: the new-handler loop, then `std::bad_alloc`.
#[cold]
#[inline(never)]
fn new_failed(size: usize, align: usize) -> *mut c_void {
    set_errno(ENOMEM);
    loop {
        if align.is_power_of_two()
            && let Some(handler) = new_handler()
        {
            // SAFETY: a handler installed with `std::set_new_handler` takes no arguments and
            // either makes memory available, throws (unwinding through this `C-unwind`
            // frame, which holds nothing to clean up), or terminates.
            unsafe { handler() };
            let p = try_new(size, align);
            if !p.is_null() {
                return p;
            }
            continue;
        }
        throw_bad_alloc(size);
    }
}

fn new_handler() -> Option<NewHandler> {
    let sym = lookup(c"_ZSt15get_new_handlerv");
    if sym.is_null() {
        return None;
    }
    // SAFETY: the symbol is libstdc++'s `std::get_new_handler()`, whose type is
    // `GetNewHandler`; a function pointer and `*mut c_void` have the same size on this
    // platform, and null was excluded above.
    let get: GetNewHandler = unsafe { core::mem::transmute::<*mut c_void, GetNewHandler>(sym) };
    // SAFETY: `get_new_handler` has no preconditions.
    unsafe { get() }
}

/// Writes `tessera: <what> (<number> bytes)` to stderr and aborts the process.
#[cold]
#[inline(never)]
pub(crate) fn fatal_size(what: &[u8], bytes: usize) -> ! {
    let mut m = Text::<_, 256>::new(Fd(2));
    m.put(b"tessera: ");
    m.put(what);
    m.put(b" (");
    m.put_decimal(bytes);
    m.put(b" bytes)\n");
    m.flush();
    process::abort()
}

fn throw_bad_alloc(size: usize) -> ! {
    let sym = lookup(c"_ZSt17__throw_bad_allocv");
    if sym.is_null() {
        fatal_size(
            b"operator new: out of memory, and std::bad_alloc cannot be thrown (libstdc++ is not loaded)",
            size,
        );
    }
    // SAFETY: the symbol is libstdc++'s `std::__throw_bad_alloc()`, of type `ThrowBadAlloc`;
    // null was excluded above.
    let throw: ThrowBadAlloc = unsafe { core::mem::transmute::<*mut c_void, ThrowBadAlloc>(sym) };
    // SAFETY: it throws `std::bad_alloc`, which unwinds through our `C-unwind` frames to the
    // `new` expression's caller.
    unsafe { throw() }
}

#[inline(always)]
fn new_throwing(size: usize, align: usize) -> *mut c_void {
    let p = try_new(size, align);
    if p.is_null() {
        return new_failed(size, align);
    }
    p
}

#[inline(always)]
fn new_nothrow(size: usize, align: usize) -> *mut c_void {
    let p = try_new(size, align);
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p
}

/// # Safety
/// `ptr` must be null or a live block from this library, not used afterwards.
#[inline(always)]
unsafe fn delete_unsized(ptr: *mut c_void) {
    // SAFETY: forwarded contract; `tessera::free_inlined` ignores null.
    unsafe { tessera::free_inlined(ptr.cast()) }
}

/// # Safety
/// `ptr` must be null or a live block from this library that the matching `new` allocated
/// with `size` bytes at `align` (as computed by `align_for`/`malloc_align`).
#[inline(always)]
unsafe fn delete_sized(ptr: *mut c_void, size: usize, align: usize) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: forwarded contract; a wrong size only makes `dealloc` fall back to `free`.
    unsafe { tessera::dealloc_inlined(ptr.cast(), size, align) }
}

// ---- new ---------------------------------------------------------------------------------

/// `operator new(size_t)`.
///
/// # Safety
/// As `malloc`; release with a matching `delete`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _Znwm(size: usize) -> *mut c_void {
    new_throwing(size, malloc_align(size))
}

/// `operator new[](size_t)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _Znam(size: usize) -> *mut c_void {
    new_throwing(size, malloc_align(size))
}

/// `operator new(size_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, _tag: *const c_void) -> *mut c_void {
    new_nothrow(size, malloc_align(size))
}

/// `operator new[](size_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnamRKSt9nothrow_t(size: usize, _tag: *const c_void) -> *mut c_void {
    new_nothrow(size, malloc_align(size))
}

/// `operator new(size_t, std::align_val_t)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_throwing(size, align_for(size, align))
}

/// `operator new[](size_t, std::align_val_t)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_throwing(size, align_for(size, align))
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    new_nothrow(size, align_for(size, align))
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_Znwm`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    new_nothrow(size, align_for(size, align))
}

// ---- delete ------------------------------------------------------------------------------

/// `operator delete(void*)`.
///
/// # Safety
/// `ptr` must be null or a live block from this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPv(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete[](void*)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPv(ptr: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete(void*, const std::nothrow_t&)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvRKSt9nothrow_t(ptr: *mut c_void, _tag: *const c_void) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete[](void*, const std::nothrow_t&)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvRKSt9nothrow_t(ptr: *mut c_void, _tag: *const c_void) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete(void*, size_t)`.
///
/// # Safety
/// As `_ZdlPv`, and `size` must be the size passed to the matching `new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvm(ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded contract; `_Znwm` allocated with `malloc_align(size)`.
    unsafe { delete_sized(ptr, size, malloc_align(size)) }
}

/// `operator delete[](void*, size_t)`.
///
/// # Safety
/// As `_ZdlPvm`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvm(ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded contract; `_Znam` allocated with `malloc_align(size)`.
    unsafe { delete_sized(ptr, size, malloc_align(size)) }
}

/// `operator delete(void*, std::align_val_t)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvSt11align_val_t(ptr: *mut c_void, _align: usize) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete[](void*, std::align_val_t)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvSt11align_val_t(ptr: *mut c_void, _align: usize) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvSt11align_val_tRKSt9nothrow_t(
    ptr: *mut c_void,
    _align: usize,
    _tag: *const c_void,
) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As `_ZdlPv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvSt11align_val_tRKSt9nothrow_t(
    ptr: *mut c_void,
    _align: usize,
    _tag: *const c_void,
) {
    // SAFETY: forwarded contract.
    unsafe { delete_unsized(ptr) }
}

/// `operator delete(void*, size_t, std::align_val_t)`.
///
/// # Safety
/// As `_ZdlPvm`, and `align` must be the alignment passed to the matching `new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdlPvmSt11align_val_t(ptr: *mut c_void, size: usize, align: usize) {
    // SAFETY: forwarded contract; the aligned `new` used `align_for(size, align)`.
    unsafe { delete_sized(ptr, size, align_for(size, align)) }
}

/// `operator delete[](void*, size_t, std::align_val_t)`.
///
/// # Safety
/// As `_ZdlPvmSt11align_val_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ZdaPvmSt11align_val_t(ptr: *mut c_void, size: usize, align: usize) {
    // SAFETY: forwarded contract; the aligned `new[]` used `align_for(size, align)`.
    unsafe { delete_sized(ptr, size, align_for(size, align)) }
}
