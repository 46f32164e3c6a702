//! The environment, read in place from `environ`: `std::env::var` returns a `String`, which
//! would allocate from inside the allocator (and `getenv`'s result would have to be copied
//! somewhere to outlive a `setenv`).

use core::ffi::{CStr, c_char};

unsafe extern "C" {
    static mut environ: *const *const c_char;
}

/// The value of `name` in the environment, without allocating; `None` when unset. Cannot
/// fail otherwise.
///
/// The slice points into the environment block. A concurrent `setenv` could replace the
/// entry while it is read, the same hazard `getenv` has and the one the (unsafe)
/// `std::env::set_var` rules out by contract.
pub fn var(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `environ` is a null-terminated array of C strings maintained by libc; we only
    // read it. A concurrent `setenv` could replace it, which is the same hazard `getenv` has.
    unsafe {
        let mut at = environ;
        if at.is_null() {
            return None;
        }
        while !(*at).is_null() {
            let entry = CStr::from_ptr(*at).to_bytes();
            if entry.len() > name.len() && entry.starts_with(name) && entry[name.len()] == b'=' {
                return Some(&entry[name.len() + 1..]);
            }
            at = at.add(1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_environment_in_place() {
        // Compare with std's (allocating, `getenv`-based) view on every variable the test
        // process has.
        let mut checked = 0;
        for (name, _) in std::env::vars_os() {
            let expect = std::env::var_os(&name).map(|v| v.into_encoded_bytes());
            let ours = var(name.as_encoded_bytes()).map(<[u8]>::to_vec);
            assert_eq!(ours, expect, "{name:?}");
            checked += 1;
        }
        assert!(checked > 0);
        assert_eq!(var(b"TESSERA_SURELY_UNSET_VARIABLE"), None);
    }
}
