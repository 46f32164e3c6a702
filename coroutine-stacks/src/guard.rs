//! Guard pages at the low end of every stack.
//!
//! Two mechanisms, chosen once per process:
//! - `MADV_GUARD_INSTALL` (Linux 6.13+) marks the pages in the page tables; the slab stays
//!   one VMA no matter how many stacks it holds, which is what lets a process keep 100,000+
//!   guarded stacks under the default `vm.max_map_count` (65530).
//! - `mprotect(PROT_NONE)` works everywhere but splits the slab's VMA around each guard:
//!   two more VMAs per stack, so the map-count limit caps a process near 32K stacks.
//!
//! Guards are installed when a slot is first carved from its slab and never removed: a slot
//! keeps its size class for the life of the process, so its guard stays valid across reuse.

use std::sync::OnceLock;

use tessera_span::os::{self, OsError, Protection};

use crate::config::{self, GuardMode, GuardRequest};
use crate::error::StackError;

static MODE: OnceLock<Result<GuardMode, StackError>> = OnceLock::new();

/// The guard mechanism in use, resolving `auto` against the running kernel on first call.
pub(crate) fn mode() -> Result<GuardMode, StackError> {
    *MODE.get_or_init(|| resolve(config::get().guard, os::has_guard_regions()))
}

fn resolve(request: GuardRequest, kernel_has_guards: bool) -> Result<GuardMode, StackError> {
    match (request, kernel_has_guards) {
        (GuardRequest::Mprotect, _) | (GuardRequest::Auto, false) => Ok(GuardMode::Mprotect),
        (GuardRequest::Madvise | GuardRequest::Auto, true) => Ok(GuardMode::Madvise),
        (GuardRequest::Madvise, false) => Err(StackError::GuardUnsupported),
    }
}

/// Size of the guard below every stack: one page. Rust emits stack probes for frames larger
/// than a page, so no frame can step over a single guard page.
#[inline]
pub(crate) fn guard_size() -> usize {
    os::page_size()
}

/// VMAs one installed guard adds to the process.
pub(crate) fn vmas_per_guard(mode: GuardMode) -> usize {
    match mode {
        GuardMode::Madvise => 0,
        GuardMode::Mprotect => 2,
    }
}

/// Makes `lo..lo+guard_size()` fault on any access.
///
/// # Safety
/// The range must be a page-aligned part of a slab this crate reserved, and nothing may use
/// it (it is the guard of a slot that has not been handed out yet).
pub(crate) unsafe fn install(lo: usize, mode: GuardMode) -> Result<(), OsError> {
    let ptr = lo as *mut u8;
    match mode {
        // SAFETY: forwarded from the caller: the page is ours, aligned and unused.
        GuardMode::Madvise => unsafe { os::guard_install(ptr, guard_size()) },
        // SAFETY: as above.
        GuardMode::Mprotect => unsafe { os::protect(ptr, guard_size(), Protection::None) },
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
        // Both mechanisms leave the guard non-resident and the page above it usable.
        for m in [GuardMode::Mprotect, GuardMode::Madvise] {
            if m == GuardMode::Madvise && !os::has_guard_regions() {
                continue;
            }
            let page = os::page_size();
            let p = os::reserve(2 * page, page).unwrap().as_ptr();
            // SAFETY: the two pages were reserved just above and are used by nobody else.
            unsafe {
                install(p as usize, m).unwrap();
                p.add(page).write(1);
                assert_eq!(os::resident_pages(p, 2 * page).unwrap(), 1);
                os::release(p, 2 * page);
            }
        }
    }
}
