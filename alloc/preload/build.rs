//! Link flags for `libtessera.so`.
//!
//! `-z nodelete`: the library registers a `pthread_key_create` destructor and
//! `pthread_atfork` handlers that point into its own code, and hands out memory that outlives
//! any caller. If it was `dlopen`ed and then `dlclose`d, unmapping it would leave those
//! callbacks (and every block still live) dangling, so the loader is told never to unload it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
