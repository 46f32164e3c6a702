//! File helpers that run their system calls in [`blocking`](crate::blocking), so a slow disk
//! holds up one thread, not the coroutines of its P. Regular files are always "ready" to
//! epoll, so they cannot go through the netpoller; Go's `os` package makes the same choice.
//! For anything else, wrap the call: `tessera_sched::blocking(|| file.sync_all())`.

use std::io;
use std::path::Path;

/// `std::fs::read` in a blocking section.
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    crate::blocking(|| std::fs::read(path))
}

/// `std::fs::read_to_string` in a blocking section.
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    crate::blocking(|| std::fs::read_to_string(path))
}

/// `std::fs::write` in a blocking section.
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    crate::blocking(|| std::fs::write(path, contents))
}

/// `std::fs::metadata` in a blocking section.
pub fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    crate::blocking(|| std::fs::metadata(path))
}

/// `std::fs::remove_file` in a blocking section.
pub fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    crate::blocking(|| std::fs::remove_file(path))
}
