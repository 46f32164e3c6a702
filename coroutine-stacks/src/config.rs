//! Run-time configuration of the stacks, read once from the environment.
//!
//! - `TESSERA_STACK_GUARD=auto|madvise|mprotect` picks how guard pages are made
//!   (see `guard.rs`): `auto` probes for `MADV_GUARD_INSTALL`, `madvise` requires it,
//!   `mprotect` forces the fallback that costs two VMAs per stack.
//! - `TESSERA_STACK_HOT_KB` is the hot watermark: when a stack goes back to the pool,
//!   everything below its top `HOT_KB` KiB is given back to the OS (`pool.rs`).
//!
//! This crate is not allocator code, so `std::env` is fine here; the values are read on the
//! first stack acquired and never again, so the cost is paid once.

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
    /// Bytes at the top of a stack kept resident when it returns to the pool; page multiple.
    pub(crate) hot_bytes: usize,
}

/// Default hot watermark: two pages hold the frames of a typical parked coroutine
/// (the entry trampoline, the closure and a channel wait), so reuse does not fault them in.
const DEFAULT_HOT_KB: usize = 8;

impl Config {
    fn from_env() -> Self {
        Self::parse(
            std::env::var("TESSERA_STACK_GUARD").ok().as_deref(),
            std::env::var("TESSERA_STACK_HOT_KB").ok().as_deref(),
        )
    }

    /// Parses the two variables; unknown values fall back to the defaults rather than fail,
    /// because a typo in the environment must not stop a program from running.
    fn parse(guard: Option<&str>, hot_kb: Option<&str>) -> Self {
        let guard = match guard.map(str::trim) {
            Some("madvise") => GuardRequest::Madvise,
            Some("mprotect") => GuardRequest::Mprotect,
            _ => GuardRequest::Auto,
        };
        let page = tessera_span::os::page_size();
        let hot_kb = hot_kb
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_HOT_KB);
        let hot_bytes = hot_kb.saturating_mul(1024).next_multiple_of(page);
        Self { guard, hot_bytes }
    }
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
        let c = Config::parse(None, None);
        assert_eq!(c.guard, GuardRequest::Auto);
        assert_eq!(
            c.hot_bytes,
            (DEFAULT_HOT_KB * 1024).next_multiple_of(tessera_span::os::page_size())
        );
    }

    #[test]
    fn explicit_values_and_rounding() {
        let c = Config::parse(Some("mprotect"), Some("5"));
        assert_eq!(c.guard, GuardRequest::Mprotect);
        let page = tessera_span::os::page_size();
        assert_eq!(c.hot_bytes, (5 * 1024usize).next_multiple_of(page));
        assert_eq!(
            Config::parse(Some("madvise"), Some("0")).guard,
            GuardRequest::Madvise
        );
        assert_eq!(Config::parse(Some("madvise"), Some("0")).hot_bytes, 0);
    }

    #[test]
    fn garbage_falls_back_to_defaults() {
        let c = Config::parse(Some("bogus"), Some("lots"));
        assert_eq!(c.guard, GuardRequest::Auto);
        assert_eq!(c.hot_bytes, Config::parse(None, None).hot_bytes);
    }
}
