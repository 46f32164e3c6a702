//! Reading sysfs, procfs and cgroupfs without allocating: a path built in a fixed buffer, a
//! file streamed byte by byte through a small stack buffer (or read whole into a caller's
//! buffer, or line by line), and a directory listed with `getdents64` (glibc's `opendir`
//! would `malloc` its buffer, which an allocator must not call).

use core::ffi::CStr;
use core::ops::ControlFlow;

use tessera_sys::fs::{Fd, O_DIRECTORY};

/// Longest path (with its NUL) we build; a longer root makes every file read as missing,
/// which the topology treats as "no `/sys`".
const PATH_CAP: usize = 512;

/// A NUL-terminated path in a fixed buffer.
#[derive(Clone)]
pub(crate) struct SysPath {
    buf: [u8; PATH_CAP],
    len: usize,
    overflow: bool,
}

impl SysPath {
    /// Starts at `root` (e.g. `b"/sys"`), without a trailing slash.
    pub(crate) fn new(root: &[u8]) -> SysPath {
        let mut p = SysPath {
            buf: [0; PATH_CAP],
            len: 0,
            overflow: false,
        };
        let mut root = root;
        while let [rest @ .., b'/'] = root {
            root = rest;
        }
        p.push(root);
        p
    }

    /// Appends raw bytes. An interior NUL or running out of room poisons the path.
    pub(crate) fn push(&mut self, s: &[u8]) -> &mut SysPath {
        if s.contains(&0) || self.len + s.len() >= PATH_CAP {
            self.overflow = true;
            return self;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        self
    }

    /// Appends `n` in decimal.
    pub(crate) fn push_num(&mut self, n: u32) -> &mut SysPath {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    /// The path as a C string, or `None` when it overflowed.
    pub(crate) fn as_cstr(&mut self) -> Option<&CStr> {
        if self.overflow {
            return None;
        }
        self.buf[self.len] = 0;
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).ok()
    }

    /// The current length, to go back to with [`truncate`](Self::truncate).
    pub(crate) fn mark(&self) -> (usize, bool) {
        (self.len, self.overflow)
    }

    /// Goes back to a length from [`mark`](Self::mark).
    pub(crate) fn truncate(&mut self, mark: (usize, bool)) {
        self.len = mark.0;
        self.overflow = mark.1;
    }

    /// Drops the last `/component`, going no shorter than `floor` (a [`mark`](Self::mark)):
    /// from a directory to its parent. False (and unchanged) when nothing is left above the
    /// floor or the path overflowed.
    pub(crate) fn pop(&mut self, floor: (usize, bool)) -> bool {
        if self.overflow || floor.1 || floor.0 >= self.len {
            return false;
        }
        match self.buf[floor.0..self.len].iter().rposition(|&b| b == b'/') {
            Some(i) => {
                self.len = floor.0 + i;
                true
            }
            None => false,
        }
    }

    /// The bytes so far (without the NUL), or `None` when the path overflowed: lets a
    /// `SysPath` double as a fixed buffer for a path read from a file.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        if self.overflow {
            None
        } else {
            Some(&self.buf[..self.len])
        }
    }
}

/// A sysfs file read as a stream of bytes. Read errors end the stream, like end of file:
/// the parsers then see truncated input and reject or ignore it.
pub(crate) struct SysFile {
    fd: Fd,
    buf: [u8; 256],
    pos: usize,
    len: usize,
    done: bool,
}

impl SysFile {
    /// Opens `path`, or `None` when it cannot be opened (missing, too long, no permission).
    pub(crate) fn open(path: &mut SysPath) -> Option<SysFile> {
        let fd = Fd::open(path.as_cstr()?, 0)?;
        Some(SysFile {
            fd,
            buf: [0; 256],
            pos: 0,
            len: 0,
            done: false,
        })
    }
}

impl Iterator for SysFile {
    type Item = u8;

    // Called per byte of every file start-up reads: inlined into the readers even though
    // the crate is built for size (Cargo.toml), where a call per byte cost ~40k more
    // instructions at each start-up.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        if self.pos == self.len {
            if self.done {
                return None;
            }
            match self.fd.read(&mut self.buf) {
                Ok(n) if n > 0 => {
                    self.pos = 0;
                    self.len = n;
                }
                _ => {
                    self.done = true;
                    return None;
                }
            }
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Some(b)
    }
}

/// Reads the whole (small) file at `path` into `buf`. `None` when it cannot be opened or
/// does not fit: a value file that fills the buffer is not one we know how to read.
pub(crate) fn read_file<'b>(path: &mut SysPath, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut len = 0;
    for b in SysFile::open(path)? {
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Some(&buf[..len])
}

/// Calls `f(line, complete)` for each line of the file at `path`, without its newline, until
/// `f` breaks. A line longer than `buf` comes cut to `buf.len()` bytes with `complete` false,
/// and so does a last line without its newline (end of file and a read error look alike, so
/// it may be cut short). False when the file cannot be opened.
pub(crate) fn for_each_line(
    path: &mut SysPath,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8], bool) -> ControlFlow<()>,
) -> bool {
    let Some(file) = SysFile::open(path) else {
        return false;
    };
    let mut len = 0;
    let mut complete = true;
    for b in file {
        if b == b'\n' {
            if f(&buf[..len], complete).is_break() {
                return true;
            }
            len = 0;
            complete = true;
        } else if let Some(slot) = buf.get_mut(len) {
            *slot = b;
            len += 1;
        } else {
            complete = false;
        }
    }
    if len > 0 || !complete {
        let _ = f(&buf[..len], false);
    }
    true
}

/// Calls `f` with the name of every entry of the directory at `path`; returns false when the
/// directory cannot be opened.
pub(crate) fn for_each_dir_entry(path: &mut SysPath, mut f: impl FnMut(&[u8])) -> bool {
    let Some(c) = path.as_cstr() else {
        return false;
    };
    let Some(fd) = Fd::open(c, O_DIRECTORY) else {
        return false;
    };
    // `linux_dirent64` is { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }.
    const NAME: usize = 19;
    let mut buf = [0u8; 2048];
    while let Ok(n) = fd.getdents64(&mut buf) {
        if n == 0 {
            break;
        }
        let mut off = 0;
        while off + NAME <= n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen < NAME || off + reclen > n {
                break;
            }
            let name = &buf[off + NAME..off + reclen];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            f(&name[..end]);
            off += reclen;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_building() {
        let mut p = SysPath::new(b"/sys//");
        p.push(b"/devices/system/node/node").push_num(12);
        assert_eq!(
            p.as_cstr().unwrap().to_bytes(),
            b"/sys/devices/system/node/node12"
        );
        let m = p.mark();
        p.push(b"/cpulist");
        assert_eq!(
            p.as_cstr().unwrap().to_bytes(),
            b"/sys/devices/system/node/node12/cpulist"
        );
        p.truncate(m);
        p.push_num(0);
        assert_eq!(
            p.as_cstr().unwrap().to_bytes(),
            b"/sys/devices/system/node/node120"
        );
    }

    #[test]
    fn popping_to_the_parent_stops_at_the_floor() {
        let mut p = SysPath::new(b"/sys/fs/cgroup");
        let floor = p.mark();
        p.push(b"/a/bb/c");
        assert!(p.pop(floor));
        assert_eq!(p.as_bytes().unwrap(), b"/sys/fs/cgroup/a/bb");
        assert!(p.pop(floor));
        assert!(p.pop(floor));
        assert_eq!(p.as_bytes().unwrap(), b"/sys/fs/cgroup");
        assert!(!p.pop(floor));
        assert_eq!(p.as_bytes().unwrap(), b"/sys/fs/cgroup");
        let mut long = SysPath::new(b"/x");
        long.push(&[b'a'; PATH_CAP]);
        assert!(long.as_bytes().is_none());
        assert!(!long.pop((0, false)));
    }

    #[test]
    fn overlong_or_nul_paths_are_rejected_not_truncated() {
        let long = [b'a'; PATH_CAP];
        assert!(SysPath::new(&long).as_cstr().is_none());
        assert!(SysPath::new(b"/sys\0/x").as_cstr().is_none());
        let mut p = SysPath::new(b"");
        p.push_num(u32::MAX);
        assert_eq!(p.as_cstr().unwrap().to_bytes(), b"4294967295");
    }

    #[test]
    fn reads_a_real_file_and_lists_a_real_dir() {
        let mut p = SysPath::new(b"/proc/self");
        p.push(b"/comm");
        let f = SysFile::open(&mut p).expect("/proc/self/comm");
        let n = f.take_while(|&b| b != b'\n').count();
        assert!(n > 0);

        let mut p = SysPath::new(b"/proc/self");
        let mut saw_status = false;
        assert!(for_each_dir_entry(&mut p, |name| saw_status |= name == b"status"));
        assert!(saw_status);
        let mut missing = SysPath::new(b"/nonexistent-tessera");
        assert!(SysFile::open(&mut missing).is_none());
        assert!(!for_each_dir_entry(&mut missing, |_| ()));
        assert!(read_file(&mut missing, &mut [0; 8]).is_none());
        assert!(!for_each_line(&mut missing, &mut [0; 8], |_, _| {
            ControlFlow::Continue(())
        }));
    }

    /// A scratch file with `text`, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str, text: &[u8]) -> Scratch {
            let p = std::env::temp_dir()
                .join(std::format!("tessera-sysfs-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            Scratch(p)
        }

        fn path(&self) -> SysPath {
            use std::os::unix::ffi::OsStrExt;
            SysPath::new(self.0.as_os_str().as_bytes())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn whole_files_must_fit() {
        let f = Scratch::new("whole", b"max 100000\n");
        assert_eq!(
            read_file(&mut f.path(), &mut [0; 64]),
            Some(&b"max 100000\n"[..])
        );
        assert_eq!(
            read_file(&mut f.path(), &mut [0; 11]),
            Some(&b"max 100000\n"[..])
        );
        assert_eq!(read_file(&mut f.path(), &mut [0; 10]), None);
    }

    #[test]
    fn lines_long_ones_cut_and_the_last_unterminated_one_incomplete() {
        let f = Scratch::new("lines", b"ab\n\nabcdefgh\nxyz");
        let mut seen = std::vec::Vec::new();
        assert!(for_each_line(&mut f.path(), &mut [0; 4], |l, c| {
            seen.push((l.to_vec(), c));
            ControlFlow::Continue(())
        }));
        let want: [(&[u8], bool); 4] = [
            (b"ab", true),
            (b"", true),
            (b"abcd", false),
            (b"xyz", false),
        ];
        assert_eq!(seen.len(), want.len());
        for ((l, c), (wl, wc)) in seen.iter().zip(want) {
            assert_eq!((&l[..], *c), (wl, wc));
        }
        let mut n = 0;
        for_each_line(&mut f.path(), &mut [0; 4], |_, _| {
            n += 1;
            ControlFlow::Break(())
        });
        assert_eq!(n, 1);
    }
}
