//! Run-time configuration of the stacks, read once from the environment.
//!
//! - `TESSERA_STACK_GUARD=auto|madvise|mprotect` picks how guard pages are made
//!   (see `guard.rs`): `auto` probes for `MADV_GUARD_INSTALL`, `madvise` requires it,
//!   `mprotect` forces the fallback that costs two VMAs per stack.
//! - `TESSERA_STACK_GUARD_KB` is the width of the guard region below every stack (`guard.rs`
//!   says why it is wide): 64 KiB by default, rounded up to whole pages, at least one page and
//!   at most 4 MiB.
//! - `TESSERA_STACK_HOT_KB` is the hot watermark: when a stack goes back to the pool,
//!   everything below its top `HOT_KB` KiB is given back to the OS (`pool.rs`).
//!
//! The values are read on the first stack acquired and never again. They are read in place
//! (`tessera_sys::env`), without allocating, like the allocator's `TESSERA_*` settings: a
//! stack may be acquired while the global allocator is busy or being configured.

use std::sync::OnceLock;

/// How guard pages are installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardMode {
    /// `MADV_GUARD_INSTALL` (Linux 6.13+): the guard lives in the page tables, no VMA is added.
    Madvise,
    /// `mprotect(PROT_NONE)`: every guard splits its slab's VMA, two VMAs per stack.
    Mprotect,
}

/// What the environment asked for; `auto` is resolved against the kernel in `guard.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuardRequest {
    Auto,
    Madvise,
    Mprotect,
}

/// The settings every other module reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) guard: GuardRequest,
    /// Width of the guard region below every stack, in bytes; page multiple.
    pub(crate) guard_bytes: usize,
    /// Bytes at the top of a stack kept resident when it returns to the pool; page multiple.
    pub(crate) hot_bytes: usize,
}

/// Default hot watermark: two pages hold the frames of a typical parked coroutine
/// (the entry trampoline, the closure and a channel wait), so reuse does not fault them in.
const DEFAULT_HOT_KB: usize = 8;

/// Default guard width: wider than the largest frames that C code compiled without
/// `-fstack-clash-protection` commonly puts on a stack (`guard.rs`).
pub(crate) const DEFAULT_GUARD_KB: usize = 64;

/// Widest guard accepted: with it the largest class (8 MiB) still gets five slots in a 64 MiB
/// slab (`slab.rs`). Larger requests are clamped to it.
pub(crate) const MAX_GUARD_KB: usize = 4 << 10;

impl Config {
    fn from_env() -> Self {
        Self::parse(
            env(b"TESSERA_STACK_GUARD"),
            env(b"TESSERA_STACK_HOT_KB"),
            env(b"TESSERA_STACK_GUARD_KB"),
        )
    }

    /// Parses the variables; unknown values fall back to the defaults rather than fail,
    /// because a typo in the environment must not stop a program from running.
    fn parse(guard: Option<&str>, hot_kb: Option<&str>, guard_kb: Option<&str>) -> Self {
        let guard = match guard.map(str::trim) {
            Some("madvise") => GuardRequest::Madvise,
            Some("mprotect") => GuardRequest::Mprotect,
            _ => GuardRequest::Auto,
        };
        let page = tessera_sys::mem::page_size();
        let hot_kb = hot_kb
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_HOT_KB);
        let hot_bytes = hot_kb.saturating_mul(1024).next_multiple_of(page);
        // Never below one page: a stack without a guard would overflow silently.
        let guard_kb = guard_kb
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_GUARD_KB)
            .min(MAX_GUARD_KB);
        let guard_bytes = (guard_kb * 1024).next_multiple_of(page).max(page);
        Self {
            guard,
            guard_bytes,
            hot_bytes,
        }
    }
}

/// Longest value read; ours are a mode name or a number, anything longer is not valid.
const ENV_BUF: usize = 32;

/// The value of `name`, without allocating; `None` when unset, longer than `ENV_BUF`, or not
/// UTF-8.
fn env(name: &[u8]) -> Option<&'static str> {
    let bytes = tessera_sys::env::var(name).filter(|v| v.len() <= ENV_BUF)?;
    std::str::from_utf8(bytes).ok()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The process-wide configuration, read from the environment on first use.
pub(crate) fn get() -> &'static Config {
    CONFIG.get_or_init(Config::from_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::parse(None, None, None);
        assert_eq!(c.guard, GuardRequest::Auto);
        assert_eq!(
            c.guard_bytes,
            (DEFAULT_GUARD_KB * 1024).next_multiple_of(tessera_sys::mem::page_size())
        );
        assert!(c.guard_bytes >= 64 << 10);
        assert_eq!(
            c.hot_bytes,
            (DEFAULT_HOT_KB * 1024).next_multiple_of(tessera_sys::mem::page_size())
        );
    }

    #[test]
    fn explicit_values_and_rounding() {
        let c = Config::parse(Some("mprotect"), Some("5"), None);
        assert_eq!(c.guard, GuardRequest::Mprotect);
        let page = tessera_sys::mem::page_size();
        assert_eq!(c.hot_bytes, (5 * 1024usize).next_multiple_of(page));
        assert_eq!(
            Config::parse(Some("madvise"), Some("0"), None).guard,
            GuardRequest::Madvise
        );
        assert_eq!(Config::parse(Some("madvise"), Some("0"), None).hot_bytes, 0);
    }

    #[test]
    fn guard_width_rounds_to_pages_and_is_bounded() {
        let page = tessera_sys::mem::page_size();
        let width = |kb: &str| Config::parse(None, None, Some(kb)).guard_bytes;
        assert_eq!(width("128"), (128usize << 10).next_multiple_of(page));
        assert_eq!(width(" 4 "), page.max(4 << 10));
        assert_eq!(width("1"), page, "rounded up to a whole page");
        assert_eq!(width("0"), page, "never unguarded");
        assert_eq!(width("1000000000"), MAX_GUARD_KB << 10);
        assert_eq!(width("99999999999999999999999"), width("64"), "unparsable");
    }

    #[test]
    fn garbage_falls_back_to_defaults() {
        let c = Config::parse(Some("bogus"), Some("lots"), Some("wide"));
        let d = Config::parse(None, None, None);
        assert_eq!(c.guard, GuardRequest::Auto);
        assert_eq!(c.hot_bytes, d.hot_bytes);
        assert_eq!(c.guard_bytes, d.guard_bytes);
    }

    #[test]
    fn reads_the_environment_in_place() {
        // Compare with std's (allocating) view on every variable the test process has.
        let mut checked = 0;
        for (name, _) in std::env::vars() {
            let value = std::env::var(&name).unwrap();
            let expect = (value.len() <= ENV_BUF).then_some(value.as_str());
            assert_eq!(env(name.as_bytes()), expect, "{name:?}");
            checked += 1;
        }
        assert!(checked > 0);
        assert_eq!(env(b"TESSERA_STACKS_SURELY_UNSET_VARIABLE"), None);
    }
}
