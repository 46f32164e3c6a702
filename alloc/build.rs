//! `cfg(tessera_asan)` when the crate is built with `-Zsanitizer=address` on x86_64:
//! `cfg(sanitize = "address")` itself is unstable, but cargo reports the target's cfgs
//! (those RUSTFLAGS set included) to build scripts. See `src/sanitizer/`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let sanitizers = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if sanitizers.split(',').any(|s| s == "address") && arch == "x86_64" {
        println!("cargo:rustc-cfg=tessera_asan");
    }
}
