//! FDEs read from the module's file instead of its mapping.
//!
//! Why: libgcc's search (`_Unwind_Find_FDE`) reads a module's `.eh_frame_hdr` and
//! `.eh_frame` where they are mapped, and the kernel's fault-around maps 64 KiB of the file
//! around each page it touches. The first heap-profile samples of a C program therefore made
//! most of its unwind tables resident: measured on git's `gc` (its largest process), 380
//! KiB of git's tables, 128 KiB of libc's and 40 KiB of the library's own, a tenth of that
//! process's peak RSS against glibc's malloc. Read with `pread`, the same bytes come from
//! the page cache (where the loader's reads and any other process's already put them)
//! without becoming part of the process (issue #13, item 6: peak RSS against glibc's).
//!
//! A miss of the rule cache costs about ten system calls this way (open, the ELF header,
//! the program headers and the build-ID note to check that the file is the image that is
//! loaded, a few table reads of the binary search, the FDE and its CIE, close), against
//! libgcc's search in memory; misses come with the first samples of each call site, and
//! the rule cache keeps what they find. A walk keeps the last file it opened ([`Files`]),
//! checked and with its table's header read, for its next miss in the same module: a
//! program's first sample misses on all of the allocator's seven frames in a row, which
//! opened and checked `libtessera.so` seven times (a C `malloc`/`free` loop under
//! `LD_PRELOAD`: 147 system calls more than with sampling off, 103 with the file kept).
//! Nothing stays open after the walk.
//!
//! Where the file cannot answer — the vDSO (no file), a module without a build ID or whose
//! file no longer matches its image, a file the process may not open (a sandbox, a deleted
//! library's path), a table in an encoding other than the one every linker writes, an FDE
//! too long for the buffers here — the caller asks libgcc as before.

use core::ffi::CStr;

use tessera_sys::dl::{self, Segment};
use tessera_sys::fs::Fd;

use super::cfi::{self, Bases, Entry, Rule};

/// What the file says of a return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The rule of its FDE.
    Rule(Rule),
    /// Its module's table has no FDE covering it.
    NotCovered,
    /// The file could not tell (see the module documentation): ask libgcc.
    Unknown,
}

/// The longest module path opened (longer ones go to libgcc).
const MAX_PATH: usize = 512;
/// The loadable segments of a module kept for translating addresses to file offsets.
const MAX_SEGMENTS: usize = 8;
/// The longest FDE and CIE read, with their length field; git's average FDE is 55 bytes.
const MAX_FDE: usize = 512;
const MAX_CIE: usize = 128;
/// Binary search reads single table entries until the range is this many, then reads it
/// whole.
const SCAN_ENTRIES: usize = 64;

/// `DW_EH_PE_udata4`, `DW_EH_PE_datarel | DW_EH_PE_sdata4`: the encodings of the FDE count
/// and of the search table that GNU ld, gold, lld and mold all write.
const UDATA4: u8 = 0x03;
const DATAREL_SDATA4: u8 = 0x3b;

/// What the loader knows of the module holding a code address.
struct Module {
    base: u64,
    hdr: u64,
    segments: [Segment; MAX_SEGMENTS],
    nsegments: usize,
    path: [u8; MAX_PATH + 1],
    build_id: [u8; dl::MAX_BUILD_ID],
    build_id_len: usize,
}

impl Module {
    /// The module holding `pc` in an executable segment, if it has a search table, a build
    /// ID and a file (the program's own is `/proc/self/exe`; the vDSO has none). Found
    /// without the loader's lock (`dl::find_object`): a fork may leave that lock held in the
    /// child by a thread that no longer exists there, and the child would wait on it in
    /// its first sample.
    fn of(pc: u64) -> Option<Module> {
        // SAFETY: the object holds a return address of this thread's stack, so it stays
        // loaded while the walk runs (a `dlclose` meanwhile is the walk's hazard, as for
        // libgcc's: `fast.rs`); `Module` copies what it keeps.
        let object = unsafe { dl::find_object(pc as usize) }?;
        let holds = object
            .segments()
            .any(|s| s.executable && s.start <= pc && pc - s.start < s.len);
        if !holds {
            return None;
        }
        Module::from_object(&object)
    }

    fn from_object(object: &dl::LoadedObject<'_>) -> Option<Module> {
        let hdr = object.eh_frame_hdr()?;
        let id = object.build_id()?;
        let mut module = Module {
            base: object.base,
            hdr,
            segments: [Segment {
                start: 0,
                len: 0,
                file_len: 0,
                file_offset: 0,
                executable: false,
            }; MAX_SEGMENTS],
            nsegments: 0,
            path: [0; MAX_PATH + 1],
            build_id: [0; dl::MAX_BUILD_ID],
            build_id_len: id.len(),
        };
        module.build_id[..id.len()].copy_from_slice(id);
        for segment in object.segments() {
            *module.segments.get_mut(module.nsegments)? = segment;
            module.nsegments += 1;
        }
        let name: &[u8] = if object.name.is_empty() {
            b"/proc/self/exe"
        } else if object.name.starts_with(b"/") {
            object.name
        } else {
            return None; // the vDSO, or a name that is no path
        };
        if name.len() > MAX_PATH || name.contains(&0) {
            return None;
        }
        module.path[..name.len()].copy_from_slice(name);
        Some(module)
    }

    /// The file offset of the `len` bytes at the module's virtual address `vaddr` (before
    /// the load bias), if a segment holds them all in its file-backed part.
    fn offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let at = self.base.wrapping_add(vaddr);
        self.segments[..self.nsegments].iter().find_map(|s| {
            let within = at.checked_sub(s.start)?;
            (within.checked_add(len)? <= s.file_len).then(|| s.file_offset + within)
        })
    }
}

/// The module's file, opened and checked against the loaded image.
struct File<'m> {
    fd: &'m Fd,
    module: &'m Module,
}

/// The file a walk opened last, checked against its module's image, and the module's search
/// table as its header gives it: kept for the walk's next miss in the same module.
pub(super) struct Files {
    last: Option<Opened>,
}

struct Opened {
    /// The module's load address: the same module while it is loaded.
    base: u64,
    fd: Fd,
    table: Option<Table>,
}

/// A module's FDE search table, from `.eh_frame_hdr`'s header.
#[derive(Clone, Copy)]
struct Table {
    /// The first entry's virtual address (before the load bias).
    at: u64,
    count: u32,
}

impl Files {
    /// No file open.
    pub(super) const fn new() -> Files {
        Files { last: None }
    }

    /// The opened, checked file of `module`: the one kept if it is that module's, else
    /// opened now (and kept, closing the one before).
    fn open(&mut self, module: &Module) -> Option<&mut Opened> {
        if self.last.as_ref().is_some_and(|o| o.base != module.base) {
            self.last = None;
        }
        if self.last.is_none() {
            let len = module.path.iter().position(|&b| b == 0)?;
            let path = CStr::from_bytes_with_nul(&module.path[..=len]).ok()?;
            let fd = Fd::open(path, 0)?;
            if !(File { fd: &fd, module }).matches_image() {
                return None;
            }
            self.last = Some(Opened {
                base: module.base,
                fd,
                table: None,
            });
        }
        self.last.as_mut()
    }
}

impl<'m> File<'m> {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read(&self, buf: &mut [u8], offset: u64) -> Option<()> {
        (self.fd.read_at(buf, offset).ok()? == buf.len()).then_some(())
    }

    /// Reads the `buf.len()` bytes at the module's virtual address `vaddr`.
    fn read_vaddr(&self, buf: &mut [u8], vaddr: u64) -> Option<()> {
        self.read(buf, self.module.offset(vaddr, buf.len() as u64)?)
    }

    /// Whether the file's build ID is the loaded image's: a file replaced since (an
    /// upgrade) or another file at the path must not be read as the image's tables.
    fn matches_image(&self) -> bool {
        self.build_id(&mut |id| id == &self.module.build_id[..self.module.build_id_len])
            .unwrap_or(false)
    }

    /// Calls `check` with the file's GNU build ID (from its `PT_NOTE` segments).
    fn build_id(&self, check: &mut dyn FnMut(&[u8]) -> bool) -> Option<bool> {
        const PT_NOTE: u32 = 4;
        const PHDR_SIZE: usize = 56;
        let mut ehdr = [0u8; 64];
        self.read(&mut ehdr, 0)?;
        // A 64-bit little-endian ELF file whose program headers are the size we read.
        if ehdr[..6] != *b"\x7fELF\x02\x01" || u16_at(&ehdr, 54) != PHDR_SIZE as u16 {
            return None;
        }
        let phoff = u64_at(&ehdr, 32);
        let phnum = usize::from(u16_at(&ehdr, 56));
        // All the program headers in one read (a linker writes a dozen or so).
        let mut phdrs = [0u8; 16 * PHDR_SIZE];
        let phdrs = phdrs.get_mut(..phnum * PHDR_SIZE)?;
        self.read(phdrs, phoff)?;
        for phdr in phdrs.chunks_exact(PHDR_SIZE) {
            if u32_at(phdr, 0) != PT_NOTE {
                continue;
            }
            let (offset, len, align) = (u64_at(phdr, 8), u64_at(phdr, 32), u64_at(phdr, 48));
            let mut notes = [0u8; 256];
            let Some(notes) = notes.get_mut(..usize::try_from(len).ok()?) else {
                continue; // a note segment too big for a build ID alone: not ours to read
            };
            self.read(notes, offset)?;
            if let Some(id) = dl::gnu_build_id(notes, if align == 8 { 8 } else { 4 }) {
                return Some(check(id));
            }
        }
        None
    }

    /// The FDE search table's entry `i`: (function start, FDE), both relative to the
    /// table's header.
    fn entry(&self, table: u64, i: u32) -> Option<(i32, i32)> {
        let mut e = [0u8; 8];
        self.read_vaddr(&mut e, table + u64::from(i) * 8)?;
        Some((u32_at(&e, 0) as i32, u32_at(&e, 4) as i32))
    }
}

/// The rule of the return address `ra` from its module's file (see the module
/// documentation), through the walk's `files`.
pub(super) fn rule(files: &mut Files, ra: usize) -> Found {
    let pc = ra as u64 - 1;
    let Some(module) = Module::of(pc) else {
        return Found::Unknown;
    };
    let Some(opened) = files.open(&module) else {
        return Found::Unknown;
    };
    let file = File {
        fd: &opened.fd,
        module: &module,
    };
    let table = match opened.table {
        Some(table) => table,
        None => {
            let Some(table) = search_table(&file) else {
                return Found::Unknown;
            };
            opened.table = Some(table);
            table
        }
    };
    search(&file, table, pc, ra).unwrap_or(Found::Unknown)
}

/// The module's FDE search table (`.eh_frame_hdr`, LSB "Exception Frames": version, three
/// encodings, the `.eh_frame` pointer, the count, then sorted pairs of function start and
/// FDE address), if it is in the encodings every linker writes.
fn search_table(file: &File<'_>) -> Option<Table> {
    let module = file.module;
    // The four encodings, the `.eh_frame` pointer (4 or 8 bytes) and the count.
    let mut head = [0u8; 16];
    let head = &mut head[..12];
    file.read_vaddr(head, module.hdr)?;
    let [
        version,
        frame_ptr_encoding,
        count_encoding,
        table_encoding,
        ..,
    ] = *head
    else {
        return None;
    };
    let frame_ptr_size = match frame_ptr_encoding & 0x0f {
        0x03 | 0x0b => 4,
        0x00 | 0x04 | 0x0c => 8,
        _ => return None,
    };
    if version != 1 || count_encoding != UDATA4 || table_encoding != DATAREL_SDATA4 {
        return None;
    }
    let count = if frame_ptr_size == 4 {
        u32_at(head, 8)
    } else {
        let mut count = [0u8; 4];
        file.read_vaddr(&mut count, module.hdr + 12)?;
        u32_at(&count, 0)
    };
    Some(Table {
        at: module.hdr + 4 + frame_ptr_size + 4,
        count,
    })
}

/// Finds `pc`'s FDE in the module's search table `table` and evaluates its rule at `ra`.
fn search(file: &File<'_>, table: Table, pc: u64, ra: usize) -> Option<Found> {
    let module = file.module;
    let Table { at: table, count } = table;
    // Table entries are relative to the header's address, as `pc` is made here.
    let target = pc.wrapping_sub(module.base.wrapping_add(module.hdr)) as i64;
    // The last entry whose function starts at or before `pc`.
    let (mut lo, mut hi) = (0u32, count);
    while hi - lo > SCAN_ENTRIES as u32 {
        let mid = lo + (hi - lo) / 2;
        if i64::from(file.entry(table, mid)?.0) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut block = [0u8; SCAN_ENTRIES * 8];
    let block = &mut block[..(hi - lo) as usize * 8];
    file.read_vaddr(block, table + u64::from(lo) * 8)?;
    let found = block
        .chunks_exact(8)
        .rev()
        .find(|e| i64::from(u32_at(e, 0) as i32) <= target);
    let Some(entry) = found else {
        return Some(Found::NotCovered);
    };
    let hdr = module.hdr;
    let func = hdr.wrapping_add(i64::from(u32_at(entry, 0) as i32) as u64);
    let fde_vaddr = hdr.wrapping_add(i64::from(u32_at(entry, 4) as i32) as u64);
    let mut fde = [0u8; MAX_FDE];
    let fde = read_entry(file, fde_vaddr, &mut fde)?;
    // In `.eh_frame` the CIE pointer is the distance back from the field itself.
    let cie_field = fde_vaddr + 4;
    let cie_vaddr = cie_field.checked_sub(u64::from(u32_at(fde, 0)))?;
    if cie_vaddr == cie_field {
        return None; // a CIE where an FDE should be
    }
    let mut cie = [0u8; MAX_CIE];
    let cie = read_entry(file, cie_vaddr, &mut cie)?;
    let bias = module.base;
    let bases = Bases {
        // As libgcc's search leaves them on x86-64: no text or data base.
        text: 0,
        data: 0,
        func: bias.wrapping_add(func) as usize,
    };
    let rule = cfi::evaluate(
        Entry {
            bytes: cie,
            addr: bias.wrapping_add(cie_vaddr + 4) as usize,
        },
        Entry {
            bytes: fde,
            addr: bias.wrapping_add(cie_field) as usize,
        },
        &bases,
        ra as u64,
    );
    // A pc past the end of the function the table points at (a gap between functions)
    // evaluates to nothing: libgcc tells that apart from an odd FDE.
    rule.map(Found::Rule)
}

/// Reads the CIE or FDE at `vaddr` into `buf`: the bytes after its 32-bit length field,
/// with the length in the same read when the segment has `buf.len()` bytes there (one
/// read for the entries that fit, which are nearly all). `None` for the 64-bit format, a
/// terminator, one shorter than its 4-byte id (a file not as it should be: nothing here may
/// index past it), or one longer than `buf` less its length field.
fn read_entry<'b>(file: &File<'_>, vaddr: u64, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if file.read_vaddr(buf, vaddr).is_none() {
        // Near the end of the segment: the length, then the bytes.
        file.read_vaddr(&mut buf[..4], vaddr)?;
        let len = u32_at(buf, 0) as usize;
        file.read_vaddr(buf.get_mut(4..4usize.checked_add(len)?)?, vaddr + 4)?;
    }
    let len = u32_at(buf, 0) as usize;
    if len < 4 || len == 0xffff_ffff {
        return None;
    }
    buf.get(4..4usize.checked_add(len)?)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}
