//! Link flags for `libtessera.so`.
//!
//! `-z nodelete`: the library registers a `pthread_key_create` destructor and
//! `pthread_atfork` handlers that point into its own code, and hands out memory that outlives
//! any caller. If it was `dlopen`ed and then `dlclose`d, unmapping it would leave those
//! callbacks (and every block still live) dangling, so the loader is told never to unload it.
//!
//! The rest keeps the library's own footprint small, since every program it is preloaded
//! into pays it in resident memory (README.md, "Memory policy"; issue #13, item 6):
//!
//! - **libgcc's unwinder linked in, hidden** (`libgcc_eh.a` with `--exclude-libs`), instead
//!   of a `libgcc_s.so.1` dependency: a C program that does not load libgcc_s itself (git,
//!   sqlite3, python3) paid ~100 KiB resident for it (its text, read by the fault-around of
//!   its start-up code, and its data). The copy is private to the library: its `_Unwind_*`
//!   symbols are not exported, so a C++ program's exceptions still go through the program's
//!   own libgcc_s, and the library's walks (`tessera_sys::dl`) and its own panics through
//!   its copy. Where the C compiler has no `libgcc_eh.a`, the library links libgcc_s as
//!   before.
//! - **Packed relative relocations** (`-z pack-relative-relocs`, `DT_RELR`) where the C
//!   library understands them (glibc 2.36 and later): the relocations' 43 KiB of
//!   `.rela.dyn` become 2.4 KiB (0.4 KiB of packed relative ones, 2 KiB of the others), and
//!   the loader reads and maps that much less.
//! - **Hot code first** (`hot-text.ld`): the functions a program under the preload runs are
//!   laid out together before the rest of the text, so only their few 64 KiB windows are
//!   resident (git's pack-objects: 448 KiB of the library's text resident before, 156 KiB
//!   after, 108 KiB since the cold constants below moved and tessera-numa is built for
//!   size). The script says how it picks them.
//! - **Cold constants after the text** (also `hot-text.ld`): std's constants and the unwind
//!   tables leave the first read-only segment, which every program reads at start-up, for
//!   one after the text that programs do not read (its first window: 64 -> 20 KiB resident
//!   in every process).

use std::process::Command;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-changed=hot-text.ld");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    // The checks below ask the build machine's C toolchain and C library: only meaningful
    // when the library is built for the machine it is built on.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/hot-text.ld");
    }
    if !linux_gnu || !native {
        return;
    }
    if let Some(dir) = libgcc_eh_dir() {
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-lib=static=gcc_eh");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,libgcc_eh.a");
    }
    if glibc_has_relr() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// The directory of the C compiler's `libgcc_eh.a`, if it has one.
fn libgcc_eh_dir() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    // Without the file, the compiler prints the bare name back.
    let path = std::path::Path::new(path.trim());
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return None;
    }
    Some(path.parent()?.to_str()?.to_owned())
}

/// Whether the C library's loader applies `DT_RELR` relocations (glibc 2.36 and later).
fn glibc_has_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
