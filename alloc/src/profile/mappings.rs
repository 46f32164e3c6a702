//! The process's loaded objects, as pprof mappings: for each object (the program, each
//! shared library), its executable segments, its file name and its GNU build ID, so that
//! `go tool pprof` and other readers find the right binary to symbolise against.
//!
//! The source is `dl_iterate_phdr(3)` (`tessera_sys::dl::for_each_object`), which walks the
//! dynamic loader's list of loaded objects in place: it takes the loader's lock but
//! allocates nothing, and so can run inside the allocator. Do not call it while holding a
//! lock that the allocation path takes: a thread inside `dlopen` holds the loader's lock and
//! may be allocating.

use core::ops::ControlFlow;

use tessera_sys::{dl, fs};

/// The longest build ID kept, in bytes (GNU's are 20: a SHA-1; `--build-id=sha256`
/// makes 32). Longer notes are ignored rather than truncated.
pub const MAX_BUILD_ID: usize = dl::MAX_BUILD_ID;

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
    let exe = &exe[..exe_len];
    dl::for_each_object(&mut |object| {
        visit_object(object, exe, f);
        ControlFlow::Continue(())
    });
}

/// The program's path, from `/proc/self/exe`, into `buf`; its length (0 on failure).
fn read_exe_path(buf: &mut [u8; PATH_MAX]) -> usize {
    // A full buffer may mean a truncated path: better none than a wrong one.
    match fs::read_link(c"/proc/self/exe", buf) {
        Ok(n) if n < buf.len() => n,
        _ => 0,
    }
}

/// Reports one object's executable segments.
fn visit_object(object: &dl::LoadedObject<'_>, exe: &[u8], f: &mut dyn FnMut(&Mapping<'_>)) {
    let name = object.name;
    if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
        return;
    }
    let filename = if name.is_empty() { exe } else { name };
    let mut hex = [0u8; 2 * MAX_BUILD_ID];
    let hex_len = match object.build_id() {
        Some(id) => hex_encode(id, &mut hex),
        None => 0,
    };
    for segment in object.segments() {
        if !segment.executable || segment.len == 0 {
            continue;
        }
        f(&Mapping {
            start: segment.start,
            limit: segment.start.saturating_add(segment.len),
            file_offset: segment.file_offset,
            filename,
            build_id: &hex[..hex_len],
        });
    }
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
        let page = tessera_sys::mem::page_size() as u64;
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
    fn build_ids_are_written_in_lowercase_hex() {
        let mut hex = [0; 2 * MAX_BUILD_ID];
        assert_eq!(hex_encode(b"\x01\xab", &mut hex), 4);
        assert_eq!(&hex[..4], b"01ab");
    }
}
