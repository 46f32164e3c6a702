//! The process's loaded objects, as pprof mappings: for each object (the program, each
//! shared library), its executable segments, its file name and its GNU build ID, so that
//! `go tool pprof` and other readers find the right binary to symbolise against.
//!
//! The source is `dl_iterate_phdr(3)`, which walks the dynamic loader's list of loaded
//! objects in place: it takes the loader's lock but allocates nothing, and so can run inside
//! the allocator. Do not call it while holding a lock that the allocation path takes: a
//! thread inside `dlopen` holds the loader's lock and may be allocating.
//!
//! Every `libc` call of the profile writer is in this file.

use core::ffi::{CStr, c_int, c_void};

/// The longest build ID kept, in bytes (GNU's are 20: a SHA-1; `--build-id=sha256`
/// makes 32). Longer notes are ignored rather than truncated.
pub const MAX_BUILD_ID: usize = 64;

/// ELF note type of a GNU build ID (`NT_GNU_BUILD_ID` in `<elf.h>`).
const NT_GNU_BUILD_ID: u32 = 3;

/// The longest path `readlink` fills in (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;

/// One executable segment of a loaded object, as pprof's `Mapping` wants it: address −
/// start + offset is the file offset of an address.
///
/// The bounds are the segment's own, not widened to pages as a line of `/proc/self/maps`
/// is. Readers that compute the load bias from the ELF headers (pprof) get the same answer
/// either way, but `go tool pprof` up to at least Go 1.19 takes `start` for the load
/// address of the executable segment's `p_vaddr`, and lld, unlike GNU ld, does not
/// page-align that segment: page-aligned bounds would shift every address it symbolises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// First address of the segment.
    pub start: u64,
    /// One past its last address.
    pub limit: u64,
    /// File offset of `start` (the segment's `p_offset`).
    pub file_offset: u64,
    /// The object's path (the program's from `/proc/self/exe`); not necessarily UTF-8.
    pub filename: &'a [u8],
    /// The GNU build ID, lowercase hex; empty when the object has none.
    pub build_id: &'a [u8],
}

/// Calls `f` with the executable segments of every loaded object, the program first.
/// The kernel's vDSO is left out: there is no file to symbolise it from.
///
/// Uses about 4.3 KiB of stack (the program's path and a hex build ID).
pub fn for_each_mapping(f: &mut dyn FnMut(&Mapping<'_>)) {
    let mut exe = [0u8; PATH_MAX];
    let exe_len = read_exe_path(&mut exe);
    let mut visit = Visit {
        f,
        exe: &exe[..exe_len],
    };
    // SAFETY: `visit_object` matches the callback type and reads `data` only as the
    // `Visit` passed here, which outlives the call; it does not unwind (Rust aborts on a
    // panic escaping an `extern "C"` function).
    unsafe { libc::dl_iterate_phdr(Some(visit_object), (&raw mut visit).cast()) };
}

struct Visit<'f, 'e> {
    f: &'f mut dyn FnMut(&Mapping<'_>),
    exe: &'e [u8],
}

/// The program's path, from `/proc/self/exe`, into `buf`; its length (0 on failure).
fn read_exe_path(buf: &mut [u8; PATH_MAX]) -> usize {
    // SAFETY: the path is NUL-terminated and `buf` is writable for its whole length;
    // readlink writes at most that many bytes and no terminator.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    // A full buffer may mean a truncated path: better none than a wrong one.
    match usize::try_from(n) {
        Ok(n) if n < buf.len() => n,
        _ => 0,
    }
}

/// `dl_iterate_phdr`'s callback: reports one object's executable segments.
///
/// # Safety
/// `info` must be the loader's description of a loaded object, valid for the call, and
/// `data` the `Visit` that `for_each_mapping` passed.
unsafe extern "C" fn visit_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: per this function's contract, both pointers are valid and unaliased for the
    // call.
    let (info, visit) = unsafe { (&*info, &mut *data.cast::<Visit<'_, '_>>()) };
    let name = if info.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: the loader's names are NUL-terminated and live while the object is loaded,
        // which it stays for this call.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
        return 0;
    }
    let filename = if name.is_empty() { visit.exe } else { name };
    let phdrs = if info.dlpi_phdr.is_null() {
        &[][..]
    } else {
        // SAFETY: the loader hands out the object's program header table, `dlpi_phnum`
        // entries long, mapped while the object is loaded.
        unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let mut hex = [0u8; 2 * MAX_BUILD_ID];
    let hex_len = match find_build_id(info.dlpi_addr, phdrs) {
        Some(id) => hex_encode(id, &mut hex),
        None => 0,
    };
    for ph in phdrs {
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 || ph.p_memsz == 0 {
            continue;
        }
        let start = info.dlpi_addr.wrapping_add(ph.p_vaddr);
        (visit.f)(&Mapping {
            start,
            limit: start.saturating_add(ph.p_memsz),
            file_offset: ph.p_offset,
            filename,
            build_id: &hex[..hex_len],
        });
    }
    0
}

/// The object's `NT_GNU_BUILD_ID` note, read from its loaded image.
fn find_build_id(base: u64, phdrs: &[libc::Elf64_Phdr]) -> Option<&[u8]> {
    for note in phdrs.iter().filter(|ph| ph.p_type == libc::PT_NOTE) {
        // Notes are read from memory, so the segment must lie inside a loaded one.
        let inside_load = phdrs.iter().any(|load| {
            load.p_type == libc::PT_LOAD
                && load.p_vaddr <= note.p_vaddr
                && note.p_vaddr.saturating_add(note.p_memsz)
                    <= load.p_vaddr.saturating_add(load.p_filesz)
        });
        if !inside_load || note.p_memsz > (1 << 20) {
            continue;
        }
        let addr = base.wrapping_add(note.p_vaddr) as usize;
        // SAFETY: the note segment lies within a loaded segment's file-backed bytes
        // (checked just above), which stay mapped and unchanged while the object is
        // loaded, that is, for the whole `dl_iterate_phdr` callback that reads it.
        let bytes =
            unsafe { core::slice::from_raw_parts(addr as *const u8, note.p_memsz as usize) };
        let align = if note.p_align == 8 { 8 } else { 4 };
        if let Some(id) = gnu_build_id(bytes, align) {
            return Some(id);
        }
    }
    None
}

/// Finds the GNU build ID among the notes in `notes`, each laid out as (ELF spec, "Note
/// Section"): name size, descriptor size and type as 32-bit words, then the name and the
/// descriptor, each padded to `align`.
fn gnu_build_id(notes: &[u8], align: usize) -> Option<&[u8]> {
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

/// Writes `bytes` as lowercase hex into `out`; returns the number of characters.
fn hex_encode(bytes: &[u8], out: &mut [u8; 2 * MAX_BUILD_ID]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    for &b in bytes.iter().take(MAX_BUILD_ID) {
        out[n] = DIGITS[usize::from(b >> 4)];
        out[n + 1] = DIGITS[usize::from(b & 0xf)];
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A [`Mapping`] that owns its strings, to keep after the callback.
    struct Owned {
        start: u64,
        limit: u64,
        offset: u64,
        name: Vec<u8>,
        id: Vec<u8>,
    }

    fn collect() -> Vec<Owned> {
        let mut all = Vec::new();
        for_each_mapping(&mut |m| {
            all.push(Owned {
                start: m.start,
                limit: m.limit,
                offset: m.file_offset,
                name: m.filename.to_vec(),
                id: m.build_id.to_vec(),
            })
        });
        all
    }

    #[test]
    fn the_test_program_is_the_first_mapping_and_covers_this_function() {
        let all = collect();
        assert!(!all.is_empty());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(all[0].name, exe.as_os_str().as_encoded_bytes());
        let here =
            the_test_program_is_the_first_mapping_and_covers_this_function as fn() as usize as u64;
        let hit = all
            .iter()
            .find(|m| m.start <= here && here < m.limit)
            .expect("a mapping covers our own code");
        assert_eq!(hit.name, all[0].name);
        let page = tessera_span::os::page_size() as u64;
        for m in &all {
            assert_eq!(
                m.start % page,
                m.offset % page,
                "address and offset agree mod a page"
            );
            assert!(m.start < m.limit);
            assert!(!m.name.is_empty());
            assert!(!m.name.starts_with(b"linux-vdso"));
            assert!(m.id.len() % 2 == 0 && m.id.iter().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn mappings_agree_with_proc_self_maps() {
        // Every mapping we report starts inside an executable line of /proc/self/maps for
        // the same file, at the matching file offset.
        let all = collect();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let lines: Vec<(u64, u64, u64, &str)> = maps
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
                    return None;
                }
                let (lo, hi) = f[0].split_once('-')?;
                let hex = |s: &str| u64::from_str_radix(s, 16).ok();
                Some((hex(lo)?, hex(hi)?, hex(f[2])?, f[5]))
            })
            .collect();
        for m in &all {
            let &(lo, _, offset, file) = lines
                .iter()
                .find(|l| l.0 <= m.start && m.start < l.1)
                .expect("an executable line of /proc/self/maps holds the mapping's start");
            assert_eq!(offset + (m.start - lo), m.offset);
            // The loader's name and the kernel's may differ by symlinks (/lib → /usr/lib).
            let ours = std::fs::canonicalize(std::ffi::OsStr::from_bytes(&m.name)).unwrap();
            assert_eq!(ours, std::fs::canonicalize(file).unwrap());
        }
    }

    #[test]
    fn build_id_matches_the_file_note() {
        // `readelf -n`-free check: find the note in the program file and compare.
        let all = collect();
        let file = std::fs::read("/proc/self/exe").unwrap();
        let id = &all[0].id;
        if id.is_empty() {
            eprintln!("test binary has no build ID; skipped");
            return;
        }
        let raw: Vec<u8> = (0..id.len() / 2)
            .map(|i| {
                u8::from_str_radix(std::str::from_utf8(&id[2 * i..2 * i + 2]).unwrap(), 16).unwrap()
            })
            .collect();
        let mut needle = b"GNU\0".to_vec();
        needle.extend_from_slice(&raw);
        assert!(file.windows(needle.len()).any(|w| w == needle));
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
        let mut hex = [0; 2 * MAX_BUILD_ID];
        assert_eq!(hex_encode(b"\x01\xab", &mut hex), 4);
        assert_eq!(&hex[..4], b"01ab");
    }
}
