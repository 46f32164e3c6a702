//! Fuzz target: a freed block's bytes are corrupted between operations, and Tessera must
//! either report it (`tessera: ...` on stderr, then abort) or go on giving right answers;
//! a silent wrong answer (a block overlapping a live one, an address that is no block of
//! Tessera's, the attacker's address) is a finding.
//!
//! A report aborts the process, and libFuzzer would count that as a crash, so each input
//! runs in two parts:
//! 1. In the fuzzing process, a prefix of small allocations and frees (checked as in
//!    `ops.rs`), which leaves freed blocks on Tessera's free lists. This part gets coverage
//!    feedback.
//! 2. In a forked child (its stderr into a pipe, libFuzzer's signal handlers reset), the
//!    corruption (`Attack`), then more operations and a drain of the corrupted block's size
//!    class, with every returned pointer checked. The child exits 0 when every answer was
//!    right, 3 with a message when one was wrong. The parent accepts exit 0 or `SIGABRT`
//!    with a `tessera: ` line, and panics (a libFuzzer finding) on anything else. The
//!    child's coverage does not reach the fuzzer: its counters die with it.
//!
//! The child allocates nothing for its own bookkeeping (capacity reserved before the fork,
//! messages formatted on the stack), so a corrupted heap cannot hand the checker itself a
//! wrong block, and a report from Tessera is always about the program's own calls.
#![no_main]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// Where an attacker would like `malloc` to point: a buffer in the binary's data.
static mut TARGET: [u64; 64] = [0; 64];

/// Live blocks the child may hold at most (prefix, tail and drain).
const CAPACITY: usize = 4096;
/// Allocations of the corrupted block's size the drain makes at most.
const DRAIN: usize = 1024;

static RUNS: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
struct Live {
    addr: usize,
    size: usize,
    tag: u8,
}

/// Live blocks sorted by address: overlap checks and inserts without allocating (within
/// the reserved capacity).
struct Heap {
    live: Vec<Live>,
    /// Freed blocks not handed out again since (as far as the shadow can tell).
    freed: Vec<(usize, usize)>,
}

/// A message built on the stack, for the child (which must not allocate to report).
struct Msg {
    buf: [u8; 256],
    len: usize,
}

impl std::fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Ends the child with exit code 3 and `args` on its stderr.
fn wrong(args: std::fmt::Arguments<'_>) -> ! {
    let mut m = Msg {
        buf: [0; 256],
        len: 0,
    };
    let _ = m.write_str("corrupt: wrong answer: ");
    let _ = m.write_fmt(args);
    let _ = m.write_str("\n");
    // SAFETY: writing an initialised stack buffer to fd 2, then ending the process
    // without running anything of the parent's (atexit handlers, libFuzzer's).
    unsafe {
        libc::write(2, m.buf.as_ptr().cast(), m.len);
        libc::_exit(3)
    }
}

fn sample(size: usize) -> [usize; 2] {
    [0, size.saturating_sub(1)]
}

impl Heap {
    /// Records a block just handed out for `size` bytes, checking (in the child, `strict`)
    /// that it is a block of Tessera's, not the attacker's, and overlaps nothing live.
    fn admit(&mut self, p: *mut u8, size: usize, tag: u8, strict: bool) {
        let addr = p as usize;
        let check = |ok: bool, what: &str| {
            if !ok {
                if strict {
                    wrong(format_args!("{what}: {addr:#x} for {size} bytes"));
                }
                panic!("{what}: {addr:#x} for {size} bytes");
            }
        };
        check(addr != 0, "allocation failed");
        check(addr % 8 == 0, "misaligned block");
        let target = &raw const TARGET as usize;
        check(
            addr + size <= target || addr >= target + size_of::<[u64; 64]>(),
            "the attacker's address handed out",
        );
        check(
            tessera::block_size(p).is_some_and(|s| s >= size),
            "not the start of a block of tessera's, or too small",
        );
        let at = self.live.partition_point(|b| b.addr < addr);
        if let Some(b) = at.checked_sub(1).map(|i| self.live[i]) {
            check(
                b.addr + b.size.max(1) <= addr,
                "overlaps the live block below",
            );
        }
        if let Some(b) = self.live.get(at) {
            check(
                addr + size.max(1) <= b.addr,
                "overlaps the live block above",
            );
        }
        check(self.live.len() < self.live.capacity(), "shadow full");
        self.live.insert(at, Live { addr, size, tag });
        self.freed
            .retain(|&(a, s)| a + s.max(1) <= addr || addr + size.max(1) <= a);
        for i in sample(size) {
            // SAFETY: a block of at least `size` bytes, checked above; `i < size`.
            unsafe { *p.add(i) = tag };
        }
    }

    /// Checks and frees the live block at index `at`.
    fn release(&mut self, at: usize, strict: bool) {
        let b = self.live.remove(at);
        for i in sample(b.size) {
            // SAFETY: a live block of `size` bytes; `i < size`.
            if unsafe { *((b.addr + i) as *const u8) } != b.tag {
                if strict {
                    wrong(format_args!("live block {:#x} changed", b.addr));
                }
                panic!("live block {:#x}+{} changed", b.addr, b.size);
            }
        }
        // SAFETY: a live block of this size at alignment 8.
        unsafe { tessera::dealloc(b.addr as *mut u8, b.size, 8) };
        if self.freed.len() < self.freed.capacity() {
            self.freed.push((b.addr, b.size));
        }
    }

    /// Runs alloc/free steps from `bytes` (two bytes each), stopping at `steps` or the end.
    fn steps(&mut self, bytes: &mut &[u8], steps: usize, tag: &mut u8, strict: bool) {
        for _ in 0..steps {
            let &[op, arg, ref rest @ ..] = *bytes else {
                return;
            };
            *bytes = rest;
            if op % 3 != 0 && !self.live.is_empty() {
                let at = arg as usize % self.live.len();
                self.release(at, strict);
            } else {
                let size = small_size(op, arg);
                *tag = tag.wrapping_add(1).max(1);
                let p = tessera::alloc(size, 8);
                self.admit(p, size, *tag, strict);
            }
        }
    }
}

/// A small-class size (8 B to 32 KiB) from two bytes, mostly under 1 KiB.
fn small_size(op: u8, arg: u8) -> usize {
    let base = (arg as usize) << 2 | (op as usize >> 6);
    match op >> 2 & 7 {
        0..=5 => 8 + base,
        6 => 8 + base * 8,
        _ => 8 + base * 32,
    }
}

/// What the child does to a freed block.
fn attack(heap: &mut Heap, [kind, pick, a, b, c, d]: [u8; 6]) {
    let (victim, size) = heap.freed[pick as usize % heap.freed.len()];
    let word = u64::from_le_bytes([a, b, c, d, a ^ b, b ^ c, c ^ d, d ^ a]);
    let target = &raw mut TARGET as usize + 8 * (a as usize % 32);
    let write = |at: usize, value: u64| {
        if at + 8 <= victim + size.max(8) {
            // SAFETY: `at` is inside the freed small block `victim` (its memory stays
            // mapped in an arena while free), which is the point of the attack.
            unsafe { (at as *mut u64).write_unaligned(value) };
        }
    };
    match kind % 7 {
        // The link word made to point at the attacker's buffer.
        0 => write(victim, target as u64),
        // ... at a live block, so that a later malloc would hand it out twice.
        1 if !heap.live.is_empty() => {
            let live = heap.live[a as usize % heap.live.len()].addr;
            write(victim, live as u64)
        }
        // ... into the middle of a block (itself or a neighbour).
        2 => write(
            victim,
            (victim as u64).wrapping_add(8 * (a as u64 % 16)) - 8,
        ),
        // ... to fuzzer bytes, or zero.
        3 => write(victim, word),
        4 => write(victim, 0),
        // One byte of the block, anywhere in its first 64 bytes (a partial overwrite).
        5 => {
            let at = victim + (a as usize % 64).min(size.max(8) - 1);
            // SAFETY: as `write`: inside the freed block.
            unsafe { *(at as *mut u8) ^= b | 1 };
        }
        // A double free of the freed block.
        _ => {
            // SAFETY: none: a double free is the bad input under test.
            if d & 1 == 0 {
                unsafe { tessera::free(victim as *mut u8) }
            } else {
                unsafe { tessera::dealloc(victim as *mut u8, size, 8) }
            }
        }
    }
    // Drain the victim's size class past it: its link is read when it is popped.
    let mut seen_victim = None;
    for n in 0..DRAIN {
        let p = tessera::alloc(size, 8);
        heap.admit(p, size, 0xa5, true);
        if p as usize == victim && seen_victim.is_none() {
            seen_victim = Some(n);
        }
        if seen_victim.is_some_and(|at| n > at + 16) {
            break;
        }
    }
}

/// The child: the attack, the rest of the input, then exit 0 if nothing went wrong.
fn child(heap: &mut Heap, how: [u8; 6], mut bytes: &[u8], mut tag: u8) -> ! {
    attack(heap, how);
    heap.steps(&mut bytes, 64, &mut tag, true);
    while !heap.live.is_empty() {
        heap.release(heap.live.len() - 1, true);
    }
    // SAFETY: ending the child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// Runs `child` in a forked process with its stderr captured; returns the wait status and
/// what it wrote.
fn fork_child(heap: &mut Heap, how: [u8; 6], bytes: &[u8], tag: u8) -> (libc::c_int, Vec<u8>) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only runs `child`, which allocates through Tessera (fork-safe by
    // its atfork handlers) and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain syscalls on our own descriptors and signal dispositions. libFuzzer's
        // handlers would treat the expected abort as a crash of the fuzzer itself.
        unsafe {
            libc::dup2(fds[1], 2);
            for sig in [
                libc::SIGABRT,
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        child(heap, how, bytes, tag);
    }
    // SAFETY: closing our copy of the write end, so the read sees end of file.
    unsafe { libc::close(fds[1]) };
    let mut err = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a stack buffer of that length.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        err.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: our child; `status` is writable.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    (status, err)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The attack comes first in the input, so that short inputs make one too.
    let &[prefix_steps, kind, pick, a, b, c, d, ref rest @ ..] = data else {
        return;
    };
    let mut bytes = rest;
    let mut heap = Heap {
        live: Vec::with_capacity(CAPACITY),
        freed: Vec::with_capacity(CAPACITY),
    };
    let mut tag = 0u8;
    heap.steps(&mut bytes, prefix_steps as usize % 64, &mut tag, false);
    // There is always a victim: the last block freed, else one made to be freed.
    if heap.freed.is_empty() {
        if heap.live.is_empty() {
            tag = tag.wrapping_add(1).max(1);
            let size = small_size(kind, pick);
            heap.admit(tessera::alloc(size, 8), size, tag, false);
        }
        heap.release(heap.live.len() - 1, false);
    }
    let (status, err) = fork_child(&mut heap, [kind, pick, a, b, c, d], bytes, tag);
    let text = String::from_utf8_lossy(&err);
    let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let reported = libc::WIFSIGNALED(status)
        && libc::WTERMSIG(status) == libc::SIGABRT
        && text.lines().any(|l| l.starts_with("tessera: "));
    assert!(
        clean || reported,
        "the corrupted child neither ran clean nor ended in tessera's report \
         (wait status {status:#x}); its stderr:\n{text}"
    );
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let reports = REPORTED.fetch_add(reported as u64, Ordering::Relaxed) + reported as u64;
    if runs.is_power_of_two() && runs >= 1024 {
        eprintln!("corrupt: {runs} children, {reports} ended in tessera's report");
    }
    while !heap.live.is_empty() {
        heap.release(heap.live.len() - 1, false);
    }
});
