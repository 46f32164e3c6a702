//! AddressSanitizer's shadow for tessera's blocks (`-Zsanitizer=address`).
//!
//! A block handed out is unpoisoned with ASan's public call. A freed block gets the shadow
//! value ASan gives its own freed chunks (`0xfd`, "freed heap region"), so a use after free
//! is reported as `heap-use-after-free`, not as the `use-after-poison` of
//! `__asan_poison_memory_region`. The public interface has no call for that value, so the
//! shadow is written here directly, at the place `__asan_get_shadow_mapping` names
//! (`(addr >> scale) + offset`), with `asm!`: an ordinary store would itself be checked by
//! ASan against the shadow of the shadow, which is an unmapped gap.

use core::arch::asm;

/// Bytes per shadow granule, and per link word.
const WORD: usize = 8;

unsafe extern "C" {
    fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
    fn __asan_get_shadow_mapping(scale: *mut usize, offset: *mut usize);
}

/// ASan's shadow byte for a freed heap region (`kAsanHeapFreeMagic`).
const HEAP_FREED: u8 = 0xfd;

/// Where the shadow byte of the 8-byte granule holding `addr` lives.
fn shadow_of(addr: usize) -> *mut u8 {
    let (mut scale, mut offset) = (0, 0);
    // SAFETY: the runtime writes the two words we pass.
    unsafe { __asan_get_shadow_mapping(&mut scale, &mut offset) };
    ((addr >> scale) + offset) as *mut u8
}

pub(super) fn unpoison(block: *mut u8, size: usize) {
    if !block.is_null() {
        // SAFETY: the runtime accepts any range of application memory.
        unsafe { __asan_unpoison_memory_region(block, size) };
    }
}

/// Marks the block at `block` freed: `size` bytes if the caller knows them, else the size
/// tessera finds for it. Only blocks inside arenas: huge blocks are unmapped (their address
/// range may be mapped again by anyone) and guarded ones are protected by their own pages.
pub(super) fn poison_freed(block: *mut u8, size: Option<usize>) {
    let addr = block as usize;
    if block.is_null() || !tessera_span::arena::in_arena(addr) || addr % WORD != 0 {
        return;
    }
    let Some(size) = size.or_else(|| crate::block_size(block)) else {
        return; // not a block: tessera's free reports it
    };
    let granules = size.max(1).div_ceil(WORD);
    // SAFETY: the shadow of arena memory is mapped for as long as the process runs; `rep
    // stosb` writes `granules` bytes from `rdi`.
    unsafe {
        asm!(
            "rep stosb",
            inout("rdi") shadow_of(addr) => _,
            inout("rcx") granules => _,
            in("al") HEAP_FREED,
            options(nostack, preserves_flags),
        );
    }
}

/// Opens the 8-aligned word at `block` (one shadow byte) and returns its shadow.
pub(super) fn open_word(block: *mut u8) -> u8 {
    let shadow = shadow_of(block as usize);
    let saved: u8;
    // SAFETY: the shadow of application memory is mapped; a byte load and store.
    unsafe {
        asm!(
            "mov {saved}, byte ptr [{shadow}]",
            "mov byte ptr [{shadow}], 0",
            shadow = in(reg) shadow,
            saved = out(reg_byte) saved,
            options(nostack, preserves_flags),
        );
    }
    saved
}

/// Gives the word at `block` back the shadow `open_word` found.
pub(super) fn close_word(block: *mut u8, saved: u8) {
    let shadow = shadow_of(block as usize);
    // SAFETY: as in `open_word`.
    unsafe {
        asm!(
            "mov byte ptr [{shadow}], {saved}",
            shadow = in(reg) shadow,
            saved = in(reg_byte) saved,
            options(nostack, preserves_flags),
        );
    }
}
