//! Stacks for the guarded blocks' reports: return addresses taken with the unwinder, printed
//! as raw addresses with their module and offset (`addr2line -e <module> <offset>` resolves
//! them) and the nearest dynamic symbol when `dladdr` knows one (`tessera_sys::dl`, which
//! reads the loader's tables under its lock, without allocating). The stacks come from
//! `unwind/`.

use core::sync::atomic::{AtomicUsize, Ordering};

use tessera_sys::dl;

use crate::report::Line;
use crate::unwind;

/// Frames kept per stack.
const DEPTH: usize = 24;

/// The return addresses of a stack, innermost first.
#[derive(Clone, Copy, Debug)]
pub(super) struct Trace {
    frames: [usize; DEPTH],
    len: usize,
}

impl Trace {
    pub(super) const EMPTY: Trace = Trace {
        frames: [0; DEPTH],
        len: 0,
    };

    /// Records the calling thread's stack, counting the capture in `capturing` while it runs
    /// (no sample is taken meanwhile: see `guarded/mod.rs`).
    #[inline(never)]
    pub(super) fn capture(&mut self, capturing: &AtomicUsize) {
        capturing.fetch_add(1, Ordering::Relaxed);
        self.len = unwind::capture(&mut self.frames);
        capturing.fetch_sub(1, Ordering::Relaxed);
    }

    /// As [`Trace::capture`], from a signal handler (see `unwind::capture_in_signal_handler`).
    #[inline(never)]
    pub(super) fn capture_in_signal_handler(&mut self, capturing: &AtomicUsize) {
        capturing.fetch_add(1, Ordering::Relaxed);
        self.len = unwind::capture_in_signal_handler(&mut self.frames);
        capturing.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes one line per frame: `    #n 0x<address> <module>+0x<offset> (<symbol>+0x<offset>)`,
    /// from the frame at `from` (the faulting instruction, for a stack taken in the fault
    /// handler) or else from the first frame outside tessera's own module when that module
    /// is a shared library (`libtessera.so`; linked into a program, its frames cannot be told
    /// from the program's by module, and are shown).
    pub(super) fn print(&self, from: Option<usize>) {
        let frames = &self.frames[..self.len];
        let skip = match from {
            Some(pc) => frames.iter().position(|&ip| ip == pc || ip == pc + 1),
            None => unwind::first_outside_own_library(frames),
        };
        for (n, &ip) in frames[skip.unwrap_or(0)..].iter().enumerate() {
            let mut line = Line::new();
            line.text("    #").dec(n).text(" ").hex(ip);
            describe(&mut line, ip);
            line.emit();
        }
    }
}

/// Appends ` <module>+0x<offset> (<symbol>+0x<offset>)` for the code address `ip`, as far as
/// the loader knows it.
pub(super) fn describe(line: &mut Line, ip: usize) {
    // A return address may be one past the call's last byte, the first of the next symbol:
    // look up the byte before it.
    // SAFETY: a code address of this thread's stack or of the faulting instruction: its
    // module is loaded while the report is written.
    let Some(info) = (unsafe { dl::addr_info(ip.saturating_sub(1)) }) else {
        return;
    };
    line.text(" ");
    if let Some(name) = info.module {
        line.text(name.to_str().unwrap_or("?"));
    }
    line.text("+").hex(ip - info.module_base);
    if let Some(name) = info.symbol {
        line.text(" (")
            .text(name.to_str().unwrap_or("?"))
            .text("+")
            .hex(ip - info.symbol_addr)
            .text(")");
    }
}
