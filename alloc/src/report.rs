//! Reports bad input (a foreign pointer, a double free, a corrupted free list) and stops
//! the process.
//!
//! The report is built in a stack buffer and written with `write(2)`: no formatting
//! machinery, no allocation, no panic (a panic would unwind through the allocator). Then
//! `abort`, because carrying on after a corrupting free is how heaps get exploited.

use tessera_span::Span;

/// A report line being built in a stack buffer (`tessera: ...`); `abort` writes it, `emit`
/// writes it and starts the next.
pub(crate) struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    pub(crate) fn new(what: &str) -> Self {
        let mut line = Line::blank();
        line.text("tessera: ").text(what);
        line
    }

    /// An empty line, for a report's continuation lines.
    pub(crate) fn blank() -> Self {
        Line {
            buf: [0; 320],
            len: 0,
        }
    }

    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        let bytes = s.as_bytes();
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    fn digits(&mut self, mut value: usize, base: usize) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut at = tmp.len();
        loop {
            at -= 1;
            tmp[at] = b"0123456789abcdef"[value % base];
            value /= base;
            if value == 0 {
                break;
            }
        }
        // The digits are ASCII.
        self.text(core::str::from_utf8(&tmp[at..]).unwrap_or("?"))
    }

    pub(crate) fn hex(&mut self, value: usize) -> &mut Self {
        self.text("0x").digits(value, 16)
    }

    pub(crate) fn dec(&mut self, value: usize) -> &mut Self {
        self.digits(value, 10)
    }

    /// Writes the line to stderr and empties the buffer for the next one.
    pub(crate) fn emit(&mut self) -> &mut Self {
        self.text("\n");
        let mut written = 0;
        while written < self.len {
            // SAFETY: writing an initialised part of the stack buffer to fd 2.
            let n =
                unsafe { libc::write(2, self.buf[written..].as_ptr().cast(), self.len - written) };
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
        self.len = 0;
        self
    }

    pub(crate) fn abort(&mut self) -> ! {
        self.emit();
        // SAFETY: abort has no preconditions and does not return.
        unsafe { libc::abort() }
    }
}

/// Writes `tessera: <what> (pointer 0x...)` to stderr and aborts.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, ptr: usize) -> ! {
    Line::new(what)
        .text(" (pointer ")
        .hex(ptr)
        .text(")")
        .abort()
}

/// Writes `tessera: <what> (pointer 0x..., size class N of S bytes, span 0x..., <who>)` to
/// stderr and aborts: a report about a block of the small span `span`.
#[cold]
#[inline(never)]
pub(crate) fn fatal_block(what: &str, ptr: usize, span: &Span, who: Who) -> ! {
    let mut line = Line::new(what);
    line.text(" (pointer ")
        .hex(ptr)
        .text(", size class ")
        .dec(span.class as usize)
        .text(" of ")
        .dec(span.obj_size as usize)
        .text(" bytes, span ")
        .hex(span.base() as usize);
    match who {
        Who::FreedBy(tid) => line.text(", freed again by thread ").dec(tid as usize),
        Who::RemoteFree => line.text(", freed again by a thread that does not own its span"),
        Who::Nobody => &mut line,
    };
    line.text(")").abort()
}

/// Which thread a block report names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Who {
    /// The thread with this kernel id made the bad call.
    FreedBy(u32),
    /// Found when the span's owner drained its remote frees: some other thread's free.
    RemoteFree,
    /// Nobody in particular (a corrupted link).
    Nobody,
}
