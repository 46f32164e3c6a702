//! Text built in a stack buffer and handed to a sink in pieces: the last-words reports and
//! the statistics printers, which run where `malloc` is Tessera itself and so may not use
//! `core::fmt` machinery that allocates, `format!`, or anything that could panic.
//!
//! A [`Text`] collects bytes and numbers (decimal, padded, or as a readable size) into a
//! fixed buffer, and passes the buffer to its [`Sink`] whenever it fills and on
//! [`Text::flush`], so output of any length goes through a few hundred bytes of stack.

use tessera_sys::c::{FILE, c_int};
use tessera_sys::io;

/// Where a [`Text`]'s bytes go.
pub(crate) trait Sink {
    /// Writes `bytes` out, as far as it can; errors are dropped (there is nobody to tell).
    fn write(&mut self, bytes: &[u8]);
}

/// A file descriptor, written with `write(2)` (`tessera_sys::io`): no buffer, no allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fd(pub(crate) c_int);

impl Sink for Fd {
    fn write(&mut self, bytes: &[u8]) {
        // Short writes and EINTR are handled there; any other error ends the output, which
        // is best effort.
        let _ = tessera_sys::io::write_all(self.0, bytes);
    }
}

/// A C stream, written with `fwrite`, in pieces of a whole buffer.
///
/// The hazard: glibc's stdio `malloc`s a buffer on the first output to a buffered stream
/// that has none yet (and `fwrite` takes the stream's lock). Inside `libtessera.so` that
/// `malloc` is Tessera, re-entered from this write. It is safe because the printers gather
/// every figure before they write a byte, so no allocator lock is held here; what must not
/// happen, and does not, is calling `fwrite` from inside a statistics walk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream(*mut FILE);

impl Stream {
    /// A sink that writes to `fp`.
    ///
    /// # Safety
    /// `fp` must be a valid stream open for writing, and stay so for as long as the sink
    /// (or a copy of it) is written to.
    pub(crate) unsafe fn new(fp: *mut FILE) -> Self {
        Self(fp)
    }
}

impl Sink for Stream {
    fn write(&mut self, bytes: &[u8]) {
        // SAFETY: `self.0` is a valid stream open for writing (`Stream::new`'s contract);
        // `bytes` is initialised for its length.
        unsafe { io::fwrite(self.0, bytes) };
    }
}

/// Text of at most `N` bytes at a time on its way to `S`.
#[derive(Debug)]
pub(crate) struct Text<S: Sink, const N: usize> {
    buf: [u8; N],
    len: usize,
    sink: S,
}

impl<S: Sink, const N: usize> Text<S, N> {
    pub(crate) const fn new(sink: S) -> Self {
        Text {
            buf: [0; N],
            len: 0,
            sink,
        }
    }

    /// Appends `bytes`, handing full buffers to the sink.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len == N {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    /// Appends `value` in decimal.
    pub(crate) fn put_decimal(&mut self, value: usize) {
        self.put_decimal_width(value, 0);
    }

    /// Appends `value` in decimal, right-aligned in `width` columns.
    pub(crate) fn put_decimal_width(&mut self, mut value: usize, width: usize) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 || start == 0 {
                break;
            }
        }
        self.pad(digits.len() - start, width);
        self.put(&digits[start..]);
    }

    /// Appends `bytes` as a readable size, right-aligned in `width` columns: `512 B`,
    /// `12.3 KiB`, `1.5 GiB` (one decimal, truncated).
    pub(crate) fn put_size(&mut self, bytes: usize, width: usize) {
        const UNITS: [&[u8]; 5] = [b" B", b" KiB", b" MiB", b" GiB", b" TiB"];
        let mut unit = 0;
        let mut scale = 1usize;
        while unit + 1 < UNITS.len() && bytes / scale >= 1024 {
            scale *= 1024;
            unit += 1;
        }
        let whole = bytes / scale;
        let tenth = (bytes % scale) * 10 / scale;
        let digits = decimal_len(whole) + if unit > 0 { 2 } else { 0 };
        self.pad(digits + UNITS[unit].len(), width);
        self.put_decimal(whole);
        if unit > 0 {
            self.put(b".");
            self.put_decimal(tenth);
        }
        self.put(UNITS[unit]);
    }

    /// Appends `text` left-aligned in `width` columns.
    pub(crate) fn put_left(&mut self, text: &[u8], width: usize) {
        self.put(text);
        self.pad(0, width.saturating_sub(text.len()));
    }

    /// Appends `text` right-aligned in `width` columns.
    pub(crate) fn put_right(&mut self, text: &[u8], width: usize) {
        self.pad(text.len(), width);
        self.put(text);
    }

    fn pad(&mut self, len: usize, width: usize) {
        for _ in len..width {
            self.put(b" ");
        }
    }

    /// Hands what is buffered to the sink.
    pub(crate) fn flush(&mut self) {
        if self.len > 0 {
            self.sink.write(self.buf.get(..self.len).unwrap_or(&[]));
            self.len = 0;
        }
    }
}

fn decimal_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 10 {
        value /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    impl<const N: usize> Text<Collect, N> {
        /// What was written, once flushed.
        pub(crate) fn collected(self) -> String {
            String::from_utf8(self.sink.bytes).unwrap()
        }
    }

    /// Collects what a `Text` writes, and how many pieces it came in (tests may allocate).
    #[derive(Debug, Default)]
    pub(crate) struct Collect {
        pub(crate) bytes: Vec<u8>,
        pub(crate) writes: usize,
    }

    impl Sink for Collect {
        fn write(&mut self, bytes: &[u8]) {
            self.bytes.extend_from_slice(bytes);
            self.writes += 1;
        }
    }

    fn render(f: impl FnOnce(&mut Text<Collect, 64>)) -> String {
        let mut text = Text::<_, 64>::new(Collect::default());
        f(&mut text);
        text.flush();
        String::from_utf8(text.sink.bytes).unwrap()
    }

    #[test]
    fn numbers_without_fmt() {
        let s = render(|t| {
            t.put(b"x ");
            t.put_decimal(0);
            t.put(b" ");
            t.put_decimal(usize::MAX);
            t.put(b"|");
            t.put_decimal_width(42, 5);
        });
        assert_eq!(s, "x 0 18446744073709551615|   42");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        let s = render(|t| {
            for bytes in [0, 1023, 1024, 1536, 12_900_000, 3 << 30, usize::MAX] {
                t.put_size(bytes, 0);
                t.put(b";");
            }
            t.put_size(1536, 10);
        });
        assert_eq!(
            s,
            "0 B;1023 B;1.0 KiB;1.5 KiB;12.3 MiB;3.0 GiB;16777215.9 TiB;   1.5 KiB"
        );
    }

    #[test]
    fn long_text_goes_out_in_pieces_and_whole() {
        let mut text = Text::<_, 64>::new(Collect::default());
        for _ in 0..100 {
            text.put(b"0123456789");
        }
        text.flush();
        assert_eq!(text.sink.bytes.len(), 1000);
        assert_eq!(text.sink.writes, 1000usize.div_ceil(64));
    }
}
