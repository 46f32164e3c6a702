//! Guard regions at the low end of every stack.
//!
//! # How wide
//!
//! A guard stops an overflow only if the overflowing code touches it before it touches
//! anything below it. Rust does: on x86-64 it probes every page of a frame larger than a page,
//! top down (inline `probestack`), so a Rust frame of any size hits the first guard page.
//! C compiled without `-fstack-clash-protection` (gcc's default on Debian) does not: gcc -O0
//! makes a function with a 32 KiB local array `sub rsp, 0x7f88`, and if its first store is to
//! the array's low end, that lands 32 KiB below, over a one-page guard and into whatever lies
//! under it: the top of the neighbouring stack in the slab (the Stack Clash class of bugs,
//! Qualys 2017). `tests/guard_gap.rs` does exactly that.
//! So the guard is 64 KiB by default (`TESSERA_STACK_GUARD_KB`, `config.rs`): a frame of up to
//! 64 KiB faults in the guard however little stack is left. It cannot stop a frame larger than
//! the guard; Linux itself keeps a 1 MiB gap below the main thread's stack for the same reason
//! (`stack_guard_gap`), and `TESSERA_STACK_GUARD_KB=1024` gives coroutine stacks the same.
//!
//! # What it costs
//!
//! - `MADV_GUARD_INSTALL`: no VMA and no page of memory for the guard, at any width (the
//!   markers live in page-table entries).
//! - `mprotect`: still one split per stack (two VMAs, as for one page), no memory.
//! - Both: address space, which is what the width trades. A slot is guard + usable size
//!   (`slab.rs`): a 16 KiB stack takes 80 KiB of address space instead of 20, so a 64 MiB slab
//!   holds 819 instead of 3,275, and a million of them reserve 76 GiB in 1,222 slabs instead
//!   of 19 GiB in 306 (the registry has room for 8,192 slabs; user space on x86-64 has 128
//!   TiB). Under strict overcommit (`vm.overcommit_memory=2`) the kernel charges reserved
//!   address space, guards included; a narrower guard is the knob there.
//! - And page tables, because touched stack tops lie further apart: a 4 KiB page-table page
//!   maps 2 MiB, 25 slots of 80 KiB instead of 102 of 20 KiB, so a parked 16 KiB stack costs
//!   about 160 B of page table besides its 4 KiB page, instead of 40 B (VmPTE for 400,000
//!   parked coroutines: 62.8 MB with 64 KiB guards, 15.8 MB with 4 KiB ones).
//!
//! # Mechanisms
//!
//! Two, chosen once per process:
//! - `MADV_GUARD_INSTALL` (Linux 6.13+) marks the pages in the page tables; the slab stays
//!   one VMA no matter how many stacks it holds, which is what lets a process keep 100,000+
//!   guarded stacks under the default `vm.max_map_count` (65530).
//! - `mprotect(PROT_NONE)` works everywhere but splits the slab's VMA around each guard:
//!   two more VMAs per stack, so the map-count limit caps a process near 32K stacks.
//!
//! Guards are installed when a slot is first carved from its slab and never removed: a slot
//! keeps its size class for the life of the process, so its guard stays valid across reuse.

use std::sync::OnceLock;

use tessera_sys::error::OsError;
use tessera_sys::mem::{self, Protection};

use crate::config::{self, GuardMode, GuardRequest};
use crate::error::StackError;

static MODE: OnceLock<Result<GuardMode, StackError>> = OnceLock::new();

/// The guard mechanism in use, resolving `auto` against the running kernel on first call.
pub(crate) fn mode() -> Result<GuardMode, StackError> {
    *MODE.get_or_init(|| resolve(config::get().guard, mem::has_guard_regions()))
}

fn resolve(request: GuardRequest, kernel_has_guards: bool) -> Result<GuardMode, StackError> {
    match (request, kernel_has_guards) {
        (GuardRequest::Mprotect, _) | (GuardRequest::Auto, false) => Ok(GuardMode::Mprotect),
        (GuardRequest::Madvise | GuardRequest::Auto, true) => Ok(GuardMode::Madvise),
        (GuardRequest::Madvise, false) => Err(StackError::GuardUnsupported),
    }
}

/// Width of the guard below every stack: `TESSERA_STACK_GUARD_KB` (64 KiB by default), a
/// page multiple, fixed for the life of the process (every slab's geometry depends on it).
#[inline]
pub(crate) fn guard_size() -> usize {
    config::get().guard_bytes
}

/// VMAs one installed guard adds to the process.
pub(crate) fn vmas_per_guard(mode: GuardMode) -> usize {
    match mode {
        GuardMode::Madvise => 0,
        GuardMode::Mprotect => 2,
    }
}

/// Makes `lo..lo+guard_size()` fault on any access, the whole width in one call.
///
/// # Safety
/// The range must be a page-aligned part of a slab this crate reserved, and nothing may use
/// it (it is the guard of a slot that has not been handed out yet).
pub(crate) unsafe fn install(lo: usize, mode: GuardMode) -> Result<(), OsError> {
    let ptr = lo as *mut u8;
    match mode {
        // SAFETY: forwarded from the caller: the page is ours, aligned and unused.
        GuardMode::Madvise => unsafe { mem::guard_install(ptr, guard_size()) },
        // SAFETY: as above.
        GuardMode::Mprotect => unsafe { mem::protect(ptr, guard_size(), Protection::None) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_table() {
        assert_eq!(resolve(GuardRequest::Auto, true), Ok(GuardMode::Madvise));
        assert_eq!(resolve(GuardRequest::Auto, false), Ok(GuardMode::Mprotect));
        assert_eq!(
            resolve(GuardRequest::Mprotect, true),
            Ok(GuardMode::Mprotect)
        );
        assert_eq!(resolve(GuardRequest::Madvise, true), Ok(GuardMode::Madvise));
        assert_eq!(
            resolve(GuardRequest::Madvise, false),
            Err(StackError::GuardUnsupported)
        );
    }

    #[test]
    fn installed_guard_faults_in_mincore_view() {
        // Both mechanisms leave the whole guard non-resident and the page above it usable.
        for m in [GuardMode::Mprotect, GuardMode::Madvise] {
            if m == GuardMode::Madvise && !mem::has_guard_regions() {
                continue;
            }
            let page = mem::page_size();
            let g = guard_size();
            let p = mem::reserve(g + page, page).unwrap().as_ptr();
            // SAFETY: the range was reserved just above and is used by nobody else.
            unsafe {
                install(p as usize, m).unwrap();
                p.add(g).write(1);
                assert_eq!(mem::resident_pages(p, g + page).unwrap(), 1);
                mem::release(p, g + page);
            }
        }
    }
}
