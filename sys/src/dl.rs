//! The dynamic loader and the unwinder: symbols looked up by name, code addresses named by
//! module and symbol, the loaded objects with their segments and build IDs, libgcc's FDE
//! search, and libgcc's walk of the calling thread's stack.
//!
//! Why libgcc's unwinder: frame pointers are not kept in release builds, and glibc's
//! `backtrace()` loads libgcc_s with `dlopen` on its first call, which allocates.
//! `_Unwind_Backtrace` and `_Unwind_Find_FDE` (libgcc's unwinder: libgcc_s, which every Rust
//! program links, or in `libtessera.so` a private copy of it, alloc/preload/build.rs) find the DWARF call-frame information through
//! `dl_iterate_phdr`, with no allocation on that path; `dladdr` and `dl_iterate_phdr` read
//! the loader's tables under its lock, without allocating either. The allocator's own walk
//! (`tessera`'s `unwind/`) interprets the FDEs that [`find_fde`] finds, and leaves what it
//! cannot follow to [`backtrace`].
//!
//! The loader's lock: do not walk the loaded objects while holding a lock that the
//! allocation path takes, since a thread inside `dlopen` holds the loader's lock and may be
//! allocating.

use core::ffi::{CStr, c_int, c_void};
use core::ops::ControlFlow;

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

// ---- loaded objects ------------------------------------------------------------------

/// The longest build ID [`LoadedObject::build_id`] returns, in bytes (GNU's are 20: a
/// SHA-1; `--build-id=sha256` makes 32). Longer notes are ignored rather than truncated.
pub const MAX_BUILD_ID: usize = 64;

/// ELF note type of a GNU build ID (`NT_GNU_BUILD_ID` in `<elf.h>`).
const NT_GNU_BUILD_ID: u32 = 3;

/// A loadable segment (`PT_LOAD`) of a loaded object, where it lies in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its first address: the object's load bias plus the segment's `p_vaddr` (wrapping).
    pub start: u64,
    /// Its length in memory (`p_memsz`); may be 0.
    pub len: u64,
    /// How much of it comes from the file (`p_filesz`, at most `len`): the rest is zeroed
    /// memory (`.bss`).
    pub file_len: u64,
    /// The file offset of `start` (`p_offset`).
    pub file_offset: u64,
    /// Whether it holds code (`PF_X`).
    pub executable: bool,
}

/// One object the loader has loaded (the program, a shared library, the vDSO), as
/// [`for_each_object`] shows it; valid during the callback only.
pub struct LoadedObject<'a> {
    /// The load bias: what is added to the object's virtual addresses (`dlpi_addr`).
    pub base: u64,
    /// The loader's name for it (`dlpi_name`): empty for the program itself; the vDSO's
    /// starts with `linux-vdso` (`linux-gate` on 32-bit kernels). Not necessarily UTF-8.
    pub name: &'a [u8],
    headers: &'a [libc::Elf64_Phdr],
}

impl core::fmt::Debug for LoadedObject<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoadedObject")
            .field("base", &self.base)
            .field("name", &self.name)
            .field("program_headers", &self.headers.len())
            .finish()
    }
}

impl<'a> LoadedObject<'a> {
    /// Its loadable segments, in program-header order.
    pub fn segments(&self) -> impl Iterator<Item = Segment> + 'a {
        let base = self.base;
        self.headers
            .iter()
            .filter(|ph| ph.p_type == libc::PT_LOAD)
            .map(move |ph| Segment {
                start: base.wrapping_add(ph.p_vaddr),
                len: ph.p_memsz,
                file_len: ph.p_filesz.min(ph.p_memsz),
                file_offset: ph.p_offset,
                executable: ph.p_flags & libc::PF_X != 0,
            })
    }

    /// The virtual address (before the load bias) of its `.eh_frame_hdr`, the sorted table
    /// of its FDEs (`PT_GNU_EH_FRAME`); `None` when it has none.
    pub fn eh_frame_hdr(&self) -> Option<u64> {
        self.headers
            .iter()
            .find(|ph| ph.p_type == libc::PT_GNU_EH_FRAME)
            .map(|ph| ph.p_vaddr)
    }

    /// Its GNU build ID (the raw descriptor of its `NT_GNU_BUILD_ID` note), read from its
    /// loaded image; `None` when it has none, or an empty one, or one longer than
    /// [`MAX_BUILD_ID`]. Only notes inside a loaded segment's file-backed bytes are read.
    pub fn build_id(&self) -> Option<&'a [u8]> {
        let headers = self.headers;
        for note in headers.iter().filter(|ph| ph.p_type == libc::PT_NOTE) {
            // Notes are read from memory, so the segment must lie inside a loaded one.
            let inside_load = headers.iter().any(|load| {
                load.p_type == libc::PT_LOAD
                    && load.p_vaddr <= note.p_vaddr
                    && note.p_vaddr.saturating_add(note.p_memsz)
                        <= load.p_vaddr.saturating_add(load.p_filesz)
            });
            if !inside_load || note.p_memsz > (1 << 20) {
                continue;
            }
            let addr = self.base.wrapping_add(note.p_vaddr) as usize;
            // SAFETY: the note segment lies within a loaded segment's file-backed bytes
            // (checked just above), which stay mapped and unchanged while the object is
            // loaded, that is, for the whole `for_each_object` callback (`'a`).
            let bytes =
                unsafe { core::slice::from_raw_parts(addr as *const u8, note.p_memsz as usize) };
            let align = if note.p_align == 8 { 8 } else { 4 };
            if let Some(id) = gnu_build_id(bytes, align) {
                return Some(id);
            }
        }
        None
    }
}

/// Finds the GNU build ID among the notes in `notes`, each laid out as (ELF spec, "Note
/// Section"): name size, descriptor size and type as 32-bit words, then the name and the
/// descriptor, each padded to `align` (4, or 8 for a note segment aligned so). Used on a
/// loaded image ([`LoadedObject::build_id`]) and on notes read from a file.
pub fn gnu_build_id(notes: &[u8], align: usize) -> Option<&[u8]> {
    let word = |at: usize| -> Option<usize> {
        let b = notes.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let pad = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (name_len, desc_len, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(name_len)?)?;
        let end = desc_at.checked_add(pad(desc_len)?)?;
        let name = notes.get(name_at..name_at.checked_add(name_len)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(desc_len)?)?;
        if kind == NT_GNU_BUILD_ID as usize && name == b"GNU\0" {
            return (!desc.is_empty() && desc.len() <= MAX_BUILD_ID).then_some(desc);
        }
        at = end;
    }
    None
}

/// What `for_each_object` hands its C callback.
type ObjectVisitor<'f> = &'f mut dyn FnMut(&LoadedObject<'_>) -> ControlFlow<()>;

/// Calls `f` with every loaded object, the program first, until it breaks
/// (`dl_iterate_phdr`). Cannot fail.
///
/// The walk holds the loader's lock: `f` must not load or unload objects, nor wait for a
/// thread that might (a thread inside `dlopen` may be allocating: see the top of this file).
pub fn for_each_object(mut f: &mut dyn FnMut(&LoadedObject<'_>) -> ControlFlow<()>) {
    /// # Safety
    /// `info` must be the loader's description of a loaded object, valid for the call, and
    /// `data` the visitor that `for_each_object` passed.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: per this function's contract, both pointers are valid and unaliased for
        // the call.
        let (info, f) = unsafe { (&*info, &mut *data.cast::<ObjectVisitor<'_>>()) };
        let name = if info.dlpi_name.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's names are NUL-terminated and live while the object is
            // loaded, which it stays for this call.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader hands out the object's program header table,
            // `dlpi_phnum` entries long, mapped while the object is loaded.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let object = LoadedObject {
            base: info.dlpi_addr,
            name,
            headers,
        };
        match f(&object) {
            ControlFlow::Continue(()) => 0,
            ControlFlow::Break(()) => 1,
        }
    }
    // SAFETY: `visit` matches the callback type and reads `data` only as the visitor passed
    // here, which outlives the call; it does not unwind (Rust aborts on a panic escaping an
    // `extern "C"` function).
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut f).cast()) };
}

/// glibc's `struct dl_find_object` on x86-64 (`<dlfcn.h>`: no `dlfo_eh_dbase`, no
/// `dlfo_eh_count` there).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *const LinkMap,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

/// The public head of glibc's `struct link_map` (`<link.h>`, the debugger protocol).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const core::ffi::c_char,
}

unsafe extern "C" {
    /// glibc 2.35 and later (as `__rseq_offset`, which this crate needs already).
    fn _dl_find_object(address: *mut c_void, result: *mut DlFindObject) -> c_int;
}

/// The loaded object whose mapping holds `pc`, found without the loader's lock
/// (`_dl_find_object`, which libgcc's unwinder uses too): fit for the allocator's paths,
/// for a signal handler, and for a forked child whose parent had another thread inside
/// `dl_iterate_phdr` (whose lock [`for_each_object`] takes, and which the child would then
/// wait for forever). Its program headers are read where its first segment maps them (the
/// ELF header at the start of the object's mapping); `None` when `pc` is in no object, or
/// the object's mapping does not start with its ELF header and program headers.
///
/// # Safety
/// The result borrows the object's name and program headers: the object must stay loaded
/// (no `dlclose` of it) while the result is used.
pub unsafe fn find_object(pc: usize) -> Option<LoadedObject<'static>> {
    const EHDR_SIZE: usize = 64;
    const PHDR_SIZE: usize = size_of::<libc::Elf64_Phdr>();
    let mut found = DlFindObject {
        flags: 0,
        map_start: core::ptr::null_mut(),
        map_end: core::ptr::null_mut(),
        link_map: core::ptr::null(),
        eh_frame: core::ptr::null_mut(),
        reserved: [0; 7],
    };
    // SAFETY: `found` is a writable `struct dl_find_object`; any address may be asked.
    if unsafe { _dl_find_object(pc as *mut c_void, &mut found) } != 0 || found.link_map.is_null() {
        return None;
    }
    let (start, end) = (found.map_start as usize, found.map_end as usize);
    if end.saturating_sub(start) < EHDR_SIZE {
        return None;
    }
    // SAFETY: the first bytes of the object's mapping, which is mapped and readable while
    // the object is loaded (its first segment; nothing on x86-64 maps execute-only).
    let ehdr = unsafe { core::slice::from_raw_parts(start as *const u8, EHDR_SIZE) };
    let phoff = usize::try_from(u64::from_le_bytes(ehdr[32..40].try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16::from_le_bytes([ehdr[54], ehdr[55]]));
    let phnum = usize::from(u16::from_le_bytes([ehdr[56], ehdr[57]]));
    // The program headers must lie in the first page, which the ELF header's segment maps.
    let table_end = phoff.checked_add(phnum.checked_mul(PHDR_SIZE)?)?;
    if ehdr[..6] != *b"\x7fELF\x02\x01" || phentsize != PHDR_SIZE || table_end > 4096 {
        return None;
    }
    if table_end > end - start || phoff % align_of::<libc::Elf64_Phdr>() != 0 {
        return None;
    }
    // SAFETY: checked just above: inside the mapped first page, aligned, `phnum` entries.
    let headers =
        unsafe { core::slice::from_raw_parts((start + phoff) as *const libc::Elf64_Phdr, phnum) };
    // SAFETY: the loader's link map for a loaded object: its name is a NUL-terminated
    // string (empty for the program) that lives while the object is loaded.
    let (base, name) = unsafe {
        let map = &*found.link_map;
        let name = if map.l_name.is_null() {
            &[][..]
        } else {
            CStr::from_ptr(map.l_name).to_bytes()
        };
        (map.l_addr as u64, name)
    };
    Some(LoadedObject {
        base,
        name,
        headers,
    })
}

// ---- libgcc's unwinder ---------------------------------------------------------------

/// An FDE (DWARF frame description entry) in a loaded `.eh_frame`, and the bases its
/// pointer encodings are relative to (libgcc's `struct dwarf_eh_bases`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fde {
    /// The FDE's address (its length field); it stays mapped while its module is loaded.
    pub addr: usize,
    /// The base of `DW_EH_PE_textrel` pointers.
    pub text_base: usize,
    /// The base of `DW_EH_PE_datarel` pointers.
    pub data_base: usize,
    /// The start of the function the FDE covers.
    pub func: usize,
}

/// `struct dwarf_eh_bases`, as `_Unwind_Find_FDE` fills it.
#[repr(C)]
struct EhBases {
    tbase: usize,
    dbase: usize,
    func: usize,
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
    /// Exported by libgcc_s since GCC 3.0.
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut EhBases) -> *const c_void;
}

/// The FDE covering the code address `pc` (`_Unwind_Find_FDE`), searched in the frames
/// registered with libgcc and in every loaded module's `PT_GNU_EH_FRAME` (through
/// `dl_iterate_phdr`, with libgcc's own cache). In `libtessera.so`, whose copy of the
/// unwinder is its own, frames a JIT registered with the program's libgcc_s
/// (`__register_frame`) are not found: a walk ends there. `None` when none covers it: code without
/// unwind information, the kernel's signal trampoline, an address in no module. No
/// `errno`.
#[inline]
pub fn find_fde(pc: usize) -> Option<Fde> {
    let mut bases = EhBases {
        tbase: 0,
        dbase: 0,
        func: 0,
    };
    // SAFETY: `_Unwind_Find_FDE` only reads the loader's and libgcc's tables and writes
    // `bases`; any address may be looked up.
    let fde = unsafe { _Unwind_Find_FDE(pc as *mut c_void, &mut bases) };
    (!fde.is_null()).then_some(Fde {
        addr: fde as usize,
        text_base: bases.tbase,
        data_base: bases.dbase,
        func: bases.func,
    })
}

/// Where the unwinder's callback records.
struct Frames<'a> {
    frames: &'a mut [usize],
    len: usize,
    /// Frames still to pass over before recording.
    skip: usize,
}

/// Fills `frames` with the return addresses of the calling thread's stack, innermost first,
/// after passing over the first `skip` of them, and returns how many it wrote
/// (`_Unwind_Backtrace`). Cannot fail: a stack the unwinder cannot walk just ends early.
///
/// Inlined, so that the walk starts in the caller's frame, as if it called the unwinder
/// itself: the first return address (skipped with `skip = 1`) is that of the call to
/// `_Unwind_Backtrace`, in the caller; the next is the caller's own.
#[inline(always)]
pub fn backtrace(frames: &mut [usize], skip: usize) -> usize {
    let mut state = Frames {
        frames,
        len: 0,
        skip,
    };
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
    if state.skip > 0 {
        state.skip -= 1;
        return URC_NO_REASON;
    }
    state.frames[state.len] = ip;
    state.len += 1;
    URC_NO_REASON
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn this_stack_unwinds_and_its_code_has_a_module() {
        let mut frames = [0usize; 8];
        let n = backtrace(&mut frames, 0);
        assert!(n > 0);
        // SAFETY: the test binary stays loaded.
        let info = unsafe { addr_info(frames[0] - 1) }.unwrap();
        assert!(info.module_base != 0);
        // SAFETY: as above.
        let program = unsafe { addr_info(program_headers() + 1) }.unwrap();
        assert_eq!(program.module_base, info.module_base);
        assert!(!lookup(c"malloc").is_null());
        let mut skipped = [0usize; 8];
        let m = backtrace(&mut skipped, 1);
        assert!(m > 0 && m <= n);
        assert_eq!(backtrace(&mut [], 0), 0);
    }

    #[test]
    fn this_function_has_an_fde_and_lies_in_an_executable_segment_of_the_program() {
        let here = this_function_has_an_fde_and_lies_in_an_executable_segment_of_the_program
            as fn() as usize;
        let fde = find_fde(here + 1).expect("Rust code has unwind tables");
        assert!(fde.func <= here + 1 && fde.addr != 0);
        let mut objects = Vec::new();
        for_each_object(&mut |object| {
            let code = object
                .segments()
                .any(|s| s.executable && s.start <= here as u64 && (here as u64) < s.start + s.len);
            objects.push((
                object.name.to_vec(),
                code,
                object.build_id().map(<[u8]>::len),
            ));
            ControlFlow::Continue(())
        });
        assert!(objects.len() > 1);
        let (name, code, id) = &objects[0];
        assert!(name.is_empty(), "the program comes first, without a name");
        assert!(code);
        assert!(id.is_none_or(|n| (1..=MAX_BUILD_ID).contains(&n)));
        let mut visited = 0;
        for_each_object(&mut |_| {
            visited += 1;
            ControlFlow::Break(())
        });
        assert_eq!(visited, 1);
    }

    #[test]
    fn note_parsing() {
        // A 4-aligned note of another type, then a GNU build ID.
        let mut notes = Vec::new();
        for word in [5u32, 3, 1] {
            notes.extend_from_slice(&word.to_ne_bytes());
        }
        notes.extend_from_slice(b"ABCD\0\0\0\0xyz\0");
        for word in [4u32, 4, NT_GNU_BUILD_ID] {
            notes.extend_from_slice(&word.to_ne_bytes());
        }
        notes.extend_from_slice(b"GNU\0\xde\xad\xbe\xef");
        assert_eq!(gnu_build_id(&notes, 4), Some(&b"\xde\xad\xbe\xef"[..]));
        // Truncated or garbage input finds nothing and does not panic.
        for cut in 0..notes.len() {
            assert_eq!(gnu_build_id(&notes[..cut], 4), None);
        }
        let junk = [0xffu8; 64];
        assert_eq!(gnu_build_id(&junk, 4), None);
        assert_eq!(gnu_build_id(&junk, 8), None);
    }
}
