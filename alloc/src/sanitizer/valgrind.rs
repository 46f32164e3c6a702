//! Memcheck's client requests, issued the way `valgrind.h` documents them for amd64: the
//! address of six words (request, five arguments) in `rax`, a default result in `rdx`, and
//! the "special instruction preamble" (`rdi` rotated by 3, 13, 61 and 51 bits: 128 in all,
//! so `rdi` ends unchanged) followed by `xchg rbx, rbx`. On a real CPU the sequence does
//! nothing and `rdx` keeps the default; under valgrind the JIT recognises it and puts the
//! request's result in `rdx`. Written here from the protocol, not with a crate: a client
//! request must not allocate, and the C header's macros cannot be used from Rust.

use core::arch::asm;

/// Core requests (`valgrind.h`, `Vg_ClientRequest`).
const MALLOCLIKE_BLOCK: usize = 0x1301;
const FREELIKE_BLOCK: usize = 0x1302;

/// Memcheck's requests (`memcheck.h`): `VG_USERREQ_TOOL_BASE('M', 'C')` and on.
const MC_BASE: usize = ((b'M' as usize) << 24) | ((b'C' as usize) << 16);
const MAKE_MEM_NOACCESS: usize = MC_BASE;
const MAKE_MEM_UNDEFINED: usize = MC_BASE + 1;
const MAKE_MEM_DEFINED: usize = MC_BASE + 2;
const GET_VBITS: usize = MC_BASE + 8;
const SET_VBITS: usize = MC_BASE + 9;
const ENABLE_ADDR_ERROR_REPORTING_IN_RANGE: usize = MC_BASE + 13;
const DISABLE_ADDR_ERROR_REPORTING_IN_RANGE: usize = MC_BASE + 14;

/// `GET_VBITS`/`SET_VBITS` succeeded (0: not under valgrind; 3: a byte is unaddressable).
const VBITS_OK: usize = 1;

const WORD: usize = 8;

/// Issues `request` with `args`; returns valgrind's answer, or `default` when the program
/// is not running under valgrind.
#[inline(always)]
fn request(default: usize, request: usize, args: [usize; 5]) -> usize {
    let block = [request, args[0], args[1], args[2], args[3], args[4]];
    let result;
    // SAFETY: on a real CPU the sequence rotates `rdi` by 128 bits in all (a no-op) and
    // exchanges `rbx` with itself; it touches only the flags, which are not preserved. Under
    // valgrind it reads the six words at `rax` (alive until the end of this function) and
    // writes `rdx`; the requests issued here change memcheck's view of memory and, for
    // `GET_VBITS`, write the buffer the caller passed, which is why memory is not `nomem`.
    unsafe {
        asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") block.as_ptr(),
            inout("rdx") default => result,
            out("rdi") _,
            options(nostack),
        );
    }
    result
}

pub(super) fn malloclike(block: *mut u8, size: usize, zeroed: bool) {
    request(
        0,
        MALLOCLIKE_BLOCK,
        [block as usize, size, 0, zeroed as usize, 0],
    );
}

pub(super) fn freelike(block: *mut u8) {
    request(0, FREELIKE_BLOCK, [block as usize, 0, 0, 0, 0]);
}

pub(super) fn make_undefined(block: *mut u8, size: usize) {
    request(0, MAKE_MEM_UNDEFINED, [block as usize, size, 0, 0, 0]);
}

/// Turns memcheck's reports of unaddressable accesses in the `size` bytes at `block` on or
/// off.
pub(super) fn report_addresses(block: *mut u8, size: usize, on: bool) {
    let which = if on {
        ENABLE_ADDR_ERROR_REPORTING_IN_RANGE
    } else {
        DISABLE_ADDR_ERROR_REPORTING_IN_RANGE
    };
    request(0, which, [block as usize, size, 0, 0, 0]);
}

/// What `open_word` found: the addressable prefix of the word and its validity bits.
pub(super) struct Saved {
    addressable: usize,
    vbits: [u8; WORD],
}

/// Makes the word at `block` addressable and defined for tessera's access, remembering its
/// state: a free block's word is unaddressable; a live block's is addressable up to the
/// block's size (a block of fewer than 8 bytes leaves a prefix), with the program's
/// definedness, which must survive the freed-block marker's read.
pub(super) fn open_word(block: *mut u8) -> Saved {
    let mut saved = Saved {
        addressable: 0,
        vbits: [0; WORD],
    };
    let at = block as usize;
    let vbits = saved.vbits.as_mut_ptr() as usize;
    if request(0, GET_VBITS, [at, vbits, WORD, 0, 0]) == VBITS_OK {
        saved.addressable = WORD;
    } else {
        while saved.addressable < WORD
            && request(
                0,
                GET_VBITS,
                [at + saved.addressable, vbits + saved.addressable, 1, 0, 0],
            ) == VBITS_OK
        {
            saved.addressable += 1;
        }
    }
    request(0, MAKE_MEM_DEFINED, [at, WORD, 0, 0, 0]);
    saved
}

/// Gives the word at `block` back the state `open_word` found.
pub(super) fn close_word(block: *mut u8, saved: Saved) {
    let at = block as usize;
    let n = saved.addressable;
    if n < WORD {
        request(0, MAKE_MEM_NOACCESS, [at + n, WORD - n, 0, 0, 0]);
    }
    if n > 0 {
        let vbits = saved.vbits.as_ptr() as usize;
        request(0, SET_VBITS, [at, vbits, n, 0, 0]);
    }
}
