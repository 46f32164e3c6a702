//! Reports bad input (a foreign pointer, a double free, a corrupted free list) and stops
//! the process.
//!
//! The report is built in a stack buffer and written with `write(2)` (`tessera_sys::io`): no
//! formatting machinery, no allocation, no panic (a panic would unwind through the
//! allocator). Then `abort`, because carrying on after a corrupting free is how heaps get
//! exploited.

use tessera_span::Span;
use tessera_sys::io;

/// A report line being built in a stack buffer; `abort` writes it, `emit` writes it and
/// starts the next.
pub(crate) type Line = io::Line<320>;

/// A report line that starts `tessera: <what>`.
pub(crate) fn line(what: &str) -> Line {
    let mut line = Line::new();
    line.text("tessera: ").text(what);
    line
}

/// Writes `tessera: <what> (pointer 0x...)` to stderr and aborts.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, ptr: usize) -> ! {
    line(what).text(" (pointer ").hex(ptr).text(")").abort()
}

/// Writes `tessera: <what> (pointer 0x..., size class N of S bytes, span 0x..., <who>)` to
/// stderr and aborts: a report about a block of the small span `span`.
#[cold]
#[inline(never)]
pub(crate) fn fatal_block(what: &str, ptr: usize, span: &Span, who: Who) -> ! {
    let mut line = line(what);
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
