//! Random bits from the kernel, for keys that must differ between processes (the
//! allocator's free-list key, `tessera`'s `freelist.rs`) and the guarded pool's sampling.

/// 64 random bits from the kernel, without allocating: `getrandom(2)` (non-blocking), or,
/// where that fails (a seccomp filter, a kernel before 3.17, an entropy pool not yet
/// initialised at early boot), the 16 bytes the kernel hands every process at `AT_RANDOM`,
/// mixed with the clock and an address so two such processes still differ. Never fails:
/// the fallback needs no syscall that can.
pub fn random_u64() -> u64 {
    let mut value = 0u64;
    // SAFETY: `value` is a valid, writable 8-byte buffer for the call's duration.
    let got = unsafe {
        libc::getrandom(
            (&raw mut value).cast(),
            core::mem::size_of::<u64>(),
            libc::GRND_NONBLOCK,
        )
    };
    if got == core::mem::size_of::<u64>() as isize {
        return value;
    }
    // SAFETY: `getauxval` has no preconditions; `AT_RANDOM` names 16 readable bytes that the
    // kernel placed on the initial stack and that stay there for the life of the process.
    let aux = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
    let seed = if aux.is_null() {
        0
    } else {
        // SAFETY: as above; read unaligned since the ABI does not promise alignment.
        unsafe { aux.read_unaligned() ^ aux.add(1).read_unaligned().rotate_left(32) }
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mix = seed ^ (ts.tv_nsec as u64).rotate_left(17) ^ (&raw const ts as u64);
    mix64(mix.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// splitmix64's finaliser: every input bit reaches every output bit, so that the low bits
/// of the result (a hash table's slot) depend on all of the input. Not random by itself;
/// the one copy the workspace's hash tables and this module share.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
