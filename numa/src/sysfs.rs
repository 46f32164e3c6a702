//! Reading sysfs without allocating: a path built in a fixed buffer, a file streamed byte by
//! byte through a small stack buffer, and a directory listed with `getdents64` (glibc's
//! `opendir` would `malloc` its buffer, which an allocator must not call).

use core::ffi::CStr;

use crate::sys::Fd;

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

/// Calls `f` with the name of every entry of the directory at `path`; returns false when the
/// directory cannot be opened.
pub(crate) fn for_each_dir_entry(path: &mut SysPath, mut f: impl FnMut(&[u8])) -> bool {
    let Some(c) = path.as_cstr() else {
        return false;
    };
    let Some(fd) = Fd::open(c, libc::O_DIRECTORY) else {
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
    }
}
