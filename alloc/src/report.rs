//! Reports bad input (a foreign pointer, a double free) and stops the process.
//!
//! The report is built in a stack buffer and written with `write(2)`: no formatting
//! machinery, no allocation, no panic (a panic would unwind through the allocator). Then
//! `abort`, because carrying on after a corrupting free is how heaps get exploited.

/// Writes `tessera: <what> (pointer 0x...)` to stderr and aborts.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, ptr: usize) -> ! {
    let mut buf = [0u8; 256];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    put(b"tessera: ");
    put(what.as_bytes());
    put(b" (pointer 0x");
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        let nibble = (ptr >> ((15 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    let first = hex.iter().position(|&d| d != b'0').unwrap_or(15);
    put(&hex[first..]);
    put(b")\n");
    // SAFETY: writing an initialised stack buffer to fd 2; the result does not matter since
    // we abort either way.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::abort();
    }
}
