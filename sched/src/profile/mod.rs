//! Profiles of the scheduler (issue #18): the goroutine profile, the scheduling-latency
//! histogram in text, and the `/debug/pprof/` handler that serves them with the heap
//! profiles, as Go's `net/http/pprof` does (ARCHITECTURE.md#profiles-of-the-scheduler).

mod goroutine;
mod groups;
pub mod http;
mod latency;

use tessera::profile::buf::OsBuf;

pub use goroutine::GoroutineCounts;
pub use latency::write_sched_latency;

fn io_error(e: tessera_sys::error::OsError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.0)
}

/// Writes the goroutine profile, gzipped `profile.proto` as `go tool pprof` reads it, to
/// `out`: every live coroutine of every live runtime, grouped by identical stack and label
/// set, with how many share it (sample type `goroutine`/`count`). Parked coroutines are
/// walked from where they switched out, held still meanwhile; running and runnable ones
/// are counted under a stand-in frame that says so (`running_coroutine_not_walked`,
/// `runnable_coroutine_not_walked`); the caller, if a coroutine, is walked where it stands.
/// Returns what it saw.
///
/// The profile is built in memory mapped from the OS, not through the allocator; only `out`
/// may allocate. For a human-readable list, [`crate::dump`].
pub fn write_goroutine(out: &mut impl std::io::Write) -> std::io::Result<GoroutineCounts> {
    let mut buf = OsBuf::new();
    let counts = goroutine::build(&mut buf, true).map_err(io_error)?;
    out.write_all(buf.as_slice())?;
    Ok(counts)
}

/// [`write_goroutine`] without the gzip layer: the bare `profile.proto` message, which
/// pprof's readers take too.
pub fn write_goroutine_uncompressed(
    out: &mut impl std::io::Write,
) -> std::io::Result<GoroutineCounts> {
    let mut buf = OsBuf::new();
    let counts = goroutine::build(&mut buf, false).map_err(io_error)?;
    out.write_all(buf.as_slice())?;
    Ok(counts)
}
