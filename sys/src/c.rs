//! The C types of `extern "C"` signatures (`libtessera.so`'s `malloc` family, `malloc_info`),
//! so that the crates above name them without `libc`.

pub use core::ffi::{c_char, c_int, c_void};
pub use libc::{FILE, size_t};
