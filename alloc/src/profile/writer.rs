//! The heap profile: the table's buckets as a pprof profile, scaled for the sampling rate,
//! and the three ways it leaves the process (the Rust API, the C entry point, and the
//! `TESSERA_PROF_OUT` file at exit or on `TESSERA_PROF_SIGNAL`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use core::ffi::{CStr, c_int};

use tessera_sys::error::{self, EINVAL, OsError};
use tessera_sys::fs::{self, Fd};
use tessera_sys::{clock, process, signal};

use super::buf::OsBuf;
use super::pprof::{Label, ProfileBuilder, Stack};
use super::{sample, table};
use crate::report;

/// The frames a reader should hide (pprof's `drop_frames`: a frame whose function matches,
/// and every frame it called): the allocator's own, and the allocation entry points of
/// Rust's `alloc` and of C, so that a sample's leaf is the function that allocated. In
/// `libtessera.so` the allocator's frames are cut when the sample is taken; a Rust program
/// that links tessera cannot tell them from its own by address, so the reader drops them by
/// name: by `__rust_alloc` (and its kin), which every Rust allocation passes through, and by
/// the entry points that pprof names by their short DWARF names (`alloc`, the standard
/// library's `alloc::alloc::alloc` in a debug build; a program function of that name is
/// hidden too). A build whose debug information has no linkage names (`debug =
/// "line-tables-only"`, common in release profiles) gives pprof only short names for
/// tessera's functions too, and the shims' frames are gone when they tail-call
/// (`__rust_alloc` is a `jmp`): the sample's outermost frame of ours is then
/// `alloc_slow` (every sample passes through it), or an entry point that called it
/// (`alloc_word`, `alloc_pow2`), so those short names are dropped as well; `capture_into`
/// (the walk's own frame) stands behind them. Without them every sample of such a build
/// had `capture_into` for its leaf.
const DROP_FRAMES: &str = concat!(
    "(__rust_(alloc|alloc_zeroed|realloc|dealloc)|",
    "__rustc::__rust_(alloc|alloc_zeroed|realloc|dealloc)|__rg_.*|__rdl_.*|",
    "tessera::.*|<tessera::.*|alloc::alloc::.*|alloc|alloc_zeroed|exchange_malloc|",
    "alloc_slow|alloc_word|alloc_pow2|capture_into|",
    "malloc|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|",
    "pvalloc|operator new.*|_Znwm|_Znam|_ZnwmRKSt9nothrow_t|_ZnamRKSt9nothrow_t|",
    "_ZnwmSt11align_val_t|_ZnamSt11align_val_t)"
);

/// The rate samples were last taken at, for a profile written after sampling was turned
/// off (its samples still need scaling by the rate they were taken at).
static LAST_RATE: AtomicUsize = AtomicUsize::new(sample::DEFAULT_RATE);

/// Remembers `rate` for scaling (called whenever the rate is set).
pub(crate) fn note_rate(rate: usize) {
    if rate != 0 {
        LAST_RATE.store(rate, Ordering::Relaxed);
    }
}

/// Go's `scaleHeapSample`: `count` sampled objects holding `bytes` stand for
/// `count / p` objects and `bytes / p` bytes, where `p = 1 - exp(-avg / rate)` is the
/// probability that an object of the average size was sampled.
fn scale(count: u64, bytes: u64, rate: usize) -> (i64, i64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count as i64, bytes as i64);
    }
    let avg = bytes as f64 / count as f64;
    let p = 1.0 - super::math::exp(-avg / rate as f64);
    ((count as f64 / p) as i64, (bytes as f64 / p) as i64)
}

/// A heap profile's sample types (type, unit), Go's four, in Go's order.
pub(super) const HEAP_SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// Builds the heap profile (gzipped `profile.proto`) into `out`, with `default_type` (one
/// of its four sample types) as the one readers show unless told otherwise: Go's heap
/// profile says `inuse_space`, its `allocs` profile, the same data, `alloc_space`.
pub(crate) fn heap_profile(out: &mut OsBuf, default_type: &str) -> Result<(), OsError> {
    let rate = LAST_RATE.load(Ordering::Relaxed);
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), rate as i64)?;
    b.set_default_sample_type(default_type)?;
    b.set_drop_frames(DROP_FRAMES)?;
    b.set_time_nanos(clock::realtime_ns());
    b.add_process_mappings()?;
    let mut result = Ok(());
    table::visit_buckets(|bucket, pairs| {
        if result.is_err() {
            return;
        }
        let live = bucket.allocs - bucket.frees;
        let (alloc_objects, alloc_space) = scale(bucket.allocs, bucket.alloc_bytes, rate);
        let (inuse_objects, inuse_space) = scale(live, live * bucket.size, rate);
        let mut labels = [Label::Str { key: "", value: "" }; MAX_LABELS + 1];
        let mut n = 0;
        labels[n] = Label::Num {
            key: "bytes",
            value: bucket.size as i64,
            unit: "bytes",
        };
        n += 1;
        for (key, value) in pairs.take(MAX_LABELS) {
            // Interned from `&str`s: valid UTF-8.
            if let (Ok(key), Ok(value)) = (core::str::from_utf8(key), core::str::from_utf8(value)) {
                labels[n] = Label::Str { key, value };
                n += 1;
            }
        }
        result = b.add_sample(
            Stack::ReturnAddresses(bucket.frames()),
            &[alloc_objects, alloc_space, inuse_objects, inuse_space],
            &labels[..n],
        );
    });
    result?;
    b.finish_gzip(out)
}

/// Labels kept per sample besides `bytes`.
const MAX_LABELS: usize = 15;

// ---- the file: `TESSERA_PROF_OUT`, at exit and on a signal ------------------------------

/// `TESSERA_PROF_OUT` (the environment's own bytes, NUL-terminated, for the life of the
/// process), or null.
static OUT_PATH: AtomicUsize = AtomicUsize::new(0);
/// A signal asked for a profile (`on_signal`) that nobody has written yet.
static PENDING: AtomicBool = AtomicBool::new(false);
/// `TESSERA_PROF_SIGNAL`'s handler is installed.
static SIGNAL: AtomicBool = AtomicBool::new(false);

/// Whether `TESSERA_PROF_SIGNAL`'s handler is installed.
pub(crate) fn signal_installed() -> bool {
    SIGNAL.load(Ordering::Relaxed)
}

/// Reads `TESSERA_PROF_OUT` and `TESSERA_PROF_SIGNAL` (from `config::load`, early in the
/// first allocation): registers the exit writer and the signal handler.
pub(crate) fn configure(out: Option<&'static [u8]>, signal: Option<&'static [u8]>) {
    let Some(path) = out.filter(|p| !p.is_empty()) else {
        return;
    };
    // `env` hands out the environment's bytes, which are NUL-terminated in place.
    OUT_PATH.store(path.as_ptr() as usize, Ordering::Relaxed);
    // Without the exit handler (glibc could not grow its table) the signal and the C entry
    // point still write profiles.
    let _ = process::at_exit(write_at_exit);
    if let Some(signo) = signal.and_then(signal_number) {
        install_signal(signo);
    }
}

/// A signal's number from its name (`SIGUSR2`, `USR2`) or number.
fn signal_number(text: &[u8]) -> Option<c_int> {
    let name = text.strip_prefix(b"SIG").unwrap_or(text);
    let signo = match name {
        b"USR1" => signal::SIGUSR1,
        b"USR2" => signal::SIGUSR2,
        b"PROF" => signal::SIGPROF,
        b"HUP" => signal::SIGHUP,
        b"URG" => signal::SIGURG,
        b"WINCH" => signal::SIGWINCH,
        _ => {
            let n = crate::config::parse_size(name)?;
            c_int::try_from(n).ok()?
        }
    };
    (1..=64).contains(&signo).then_some(signo)
}

fn install_signal(signo: c_int) {
    // A signal that cannot be caught (`SIGKILL`'s 9) is refused; there is nobody to tell
    // this early, and the exit writer stays.
    // SAFETY: the handler is async-signal-safe as far as it goes (see `on_signal`).
    if unsafe { signal::install_handler(signo, on_signal) }.is_ok() {
        SIGNAL.store(true, Ordering::Relaxed);
    }
}

/// Asks for a profile and returns: the handler writes nothing itself. Writing a profile
/// reads the loaded objects with `dl_iterate_phdr`, which takes the loader's lock, and a
/// signal can land in a thread that holds it (inside `dlopen`, say), where the handler would
/// walk a half-updated list of objects. The background thread (`purger.rs`, which runs with
/// every signal blocked) writes the profile at its next wake-up, which this one hastens (it
/// starts at the first allocation slow path after the handler is installed); without that
/// thread (`TESSERA_PURGER=off`, or a signal before then) the next sampled allocation
/// writes it, or the exit writer. Both steps here are
/// async-signal-safe: an atomic store and `commit::notify` (an atomic add and a futex wake).
extern "C" fn on_signal(_signo: c_int) {
    // The handler must leave the interrupted code's `errno` as it found it.
    let errno = error::errno();
    PENDING.store(true, Ordering::Release);
    tessera_span::commit::notify();
    error::set_errno(errno);
}

/// Whether a signal asked for a profile that is not written yet.
pub(crate) fn pending() -> bool {
    PENDING.load(Ordering::Acquire)
}

/// Writes the profile a signal asked for, if one did (the background thread at each wake-up,
/// and every sampled allocation after its sample, outside the table's lock).
pub(crate) fn write_if_pending() {
    if PENDING.load(Ordering::Relaxed) && PENDING.swap(false, Ordering::Acquire) {
        write_out();
    }
}

extern "C" fn write_at_exit() {
    write_out();
}

/// Writes the profile to `TESSERA_PROF_OUT`, `%p` replaced by the process id. Failures are
/// reported on stderr, never fatal.
fn write_out() {
    let path = OUT_PATH.load(Ordering::Relaxed) as *const core::ffi::c_char;
    if path.is_null() {
        return;
    }
    let mut name = [0u8; 4096];
    // SAFETY: `OUT_PATH` holds a NUL-terminated environment string.
    let template = unsafe { CStr::from_ptr(path) }.to_bytes();
    let Some(len) = expand_pid(template, std::process::id(), &mut name) else {
        report::line("TESSERA_PROF_OUT is too long; no heap profile written").emit();
        return;
    };
    if let Err(e) = write_file(&name[..=len]) {
        report::line("cannot write the heap profile to TESSERA_PROF_OUT: OS error ")
            .dec(e.0 as usize)
            .emit();
    }
}

/// Copies `template` into `out` with every `%p` replaced by `pid`, NUL-terminated; the
/// length without the NUL, or `None` when it does not fit.
fn expand_pid(template: &[u8], pid: u32, out: &mut [u8]) -> Option<usize> {
    let mut digits = [0u8; 10];
    let mut n = digits.len();
    let mut v = pid;
    loop {
        n -= 1;
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let pid_text = &digits[n..];
    let mut len = 0;
    let mut i = 0;
    while i < template.len() {
        let piece: &[u8] = if template[i..].starts_with(b"%p") {
            i += 2;
            pid_text
        } else {
            i += 1;
            &template[i - 1..i]
        };
        let end = len + piece.len();
        if end >= out.len() {
            return None;
        }
        out[len..end].copy_from_slice(piece);
        len = end;
    }
    out[len] = 0;
    Some(len)
}

/// Builds the profile and writes it to the file `path` (NUL-terminated), replacing it.
pub(crate) fn write_file(path: &[u8]) -> Result<(), OsError> {
    let mut out = OsBuf::new();
    heap_profile(&mut out, "inuse_space")?;
    // The name is what precedes the first NUL, as `open` would read it.
    let path = CStr::from_bytes_until_nul(path).map_err(|_| OsError(EINVAL))?;
    // A regular file (or none yet) is written beside the target, then renamed over it: a
    // reader (a tool polling for the file, or the previous profile's reader) never sees a
    // part of one. Anything else (`/dev/stdout`, a pipe, a symbolic link) is written
    // through, since renaming over it would replace it.
    if fs::kind(path) == fs::Kind::Other {
        return Fd::create(path, 0o644)?.write_all(out.as_slice());
    }
    let mut temp = [0u8; 4096 + 8];
    let name = path.to_bytes();
    let end = name.len() + b".tmp".len();
    if end >= temp.len() {
        return Err(OsError(EINVAL));
    }
    temp[..name.len()].copy_from_slice(name);
    temp[name.len()..end].copy_from_slice(b".tmp");
    let temp = CStr::from_bytes_until_nul(&temp[..=end]).map_err(|_| OsError(EINVAL))?;
    Fd::create(temp, 0o644)?.write_all(out.as_slice())?;
    fs::rename(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_expands_everywhere() {
        let mut out = [0u8; 64];
        let n = expand_pid(b"/tmp/heap.%p.pb.gz", 4321, &mut out).unwrap();
        assert_eq!(&out[..=n], b"/tmp/heap.4321.pb.gz\0");
        let n = expand_pid(b"%p-%p", 7, &mut out).unwrap();
        assert_eq!(&out[..n], b"7-7");
        let n = expand_pid(b"plain", 7, &mut out).unwrap();
        assert_eq!(&out[..n], b"plain");
        assert_eq!(expand_pid(&[b'x'; 64], 7, &mut out), None);
        let mut small = [0u8; 5];
        assert_eq!(expand_pid(b"a%p", 12345, &mut small), None);
    }

    #[test]
    fn files_are_renamed_into_place_and_devices_written_through() {
        use std::os::unix::fs::FileTypeExt;
        let dir = std::env::temp_dir().join(format!("tessera-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("heap.pb.gz");
        let mut path = target.as_os_str().as_encoded_bytes().to_vec();
        path.push(0);
        for _ in 0..2 {
            // Created, then replaced.
            write_file(&path).unwrap();
            let bytes = std::fs::read(&target).unwrap();
            assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip file");
            assert!(
                !dir.join("heap.pb.gz.tmp").exists(),
                "no temporary file left"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // Renaming over a device would replace it.
        write_file(b"/dev/null\0").unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(
            meta.file_type().is_char_device(),
            "/dev/null is still a device"
        );
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number(b"SIGUSR2"), Some(signal::SIGUSR2));
        assert_eq!(signal_number(b"USR1"), Some(signal::SIGUSR1));
        assert_eq!(signal_number(b"12"), Some(12));
        assert_eq!(signal_number(b"SIGNOPE"), None);
        assert_eq!(signal_number(b"0"), None);
        assert_eq!(signal_number(b"99"), None);
    }

    #[test]
    fn scaling_follows_go() {
        // Objects of the rate's size are sampled with probability 1 - 1/e.
        let (n, b) = scale(100, 100 * 512 * 1024, 512 * 1024);
        let p = 1.0 - (-1.0f64).exp();
        assert_eq!(n, (100.0 / p) as i64);
        assert_eq!(b, (100.0 * 512.0 * 1024.0 / p) as i64);
        // Small objects: each sample stands for about rate/size objects.
        let (n, _) = scale(1, 16, 512 * 1024);
        assert!((n - 32768).abs() <= 1, "{n}");
        assert_eq!(scale(0, 0, 512 * 1024), (0, 0));
        assert_eq!(scale(3, 30, 1), (3, 30));
    }
}
