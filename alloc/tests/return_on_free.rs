//! Large blocks from 128 KiB up to 8 MiB (exclusive) give their pages back to the OS when
//! freed (`large.rs`, `returns_at_free`), until allocations of their size band have found a
//! returned block of the band four times: from then on that band's blocks stay on the decay
//! curve, for reuse without faults. Each check runs alone in a child with a decay time of
//! an hour, so no decay step purges anything while it runs: every byte the purge counter
//! gains is a return at free, and a block left dirty stays dirty. Huge pages are off, as a
//! return in an arena backed by them is left to the decay (it would split them).

#[allow(dead_code)] // Of the shared helpers, only `in_child` serves here.
mod common;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const MIB: usize = 1 << 20;

/// Runs `body` as test `test` alone in a child with a decay time of `decay_ms` and huge
/// pages off; panics unless it passed there.
fn alone(test: &str, decay_ms: &str, body: impl FnOnce()) {
    let env = [
        ("TESSERA_PURGE_DELAY_MS", decay_ms),
        ("TESSERA_THP", "never"),
    ];
    if let Some(out) = common::in_child(test, test, &env, body) {
        assert!(
            out.status.success(),
            "{test} in a child:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Allocates `size` bytes, writes every page, frees the block, and returns how many bytes
/// the purge counter and the page heaps' dirty bytes gained at the free.
fn touch_and_free(size: usize) -> (u64, isize) {
    let p = tessera::alloc(size, 8);
    assert!(!p.is_null());
    for offset in (0..size).step_by(4096) {
        // SAFETY: `offset < size`, inside the block just allocated.
        unsafe { p.add(offset).write_volatile(1) };
    }
    let before = tessera::stats();
    // SAFETY: allocated above with this size and alignment, not freed yet.
    unsafe { tessera::dealloc(p, size, 8) };
    let after = tessera::stats();
    (
        after.purged - before.purged,
        after.breakdown.heap_dirty as isize - before.breakdown.heap_dirty as isize,
    )
}

#[test]
fn big_blocks_go_back_at_free_until_their_size_is_reused() {
    alone(
        "big_blocks_go_back_at_free_until_their_size_is_reused",
        "3600000",
        blocks_until_reused,
    );
}

fn blocks_until_reused() {
    // Below 128 KiB: on the decay curve, nothing returned.
    let (purged, dirty) = touch_and_free(64 << 10);
    assert_eq!(purged, 0, "a 64 KiB block was returned at free");
    assert_eq!(dirty, 64 << 10, "a 64 KiB block did not stay dirty");
    // Above 4 MiB: on the decay curve too, whatever the reuse evidence says.
    let (purged, dirty) = touch_and_free(8 * MIB);
    assert_eq!(purged, 0, "an 8 MiB block was returned at free");
    assert_eq!(dirty, 8 * MIB as isize, "an 8 MiB block did not stay dirty");
    // The first 4 MiB block goes back whole at its free, and so do the next three, each of
    // which finds the one before returned (a miss).
    for round in 0..4 {
        let (purged, dirty) = touch_and_free(4 * MIB);
        assert!(
            purged >= 4 * MIB as u64,
            "4 MiB block {round} was not returned at free: {purged} B purged"
        );
        assert!(dirty <= 0, "4 MiB block {round} left {dirty} B dirty");
    }
    // The fourth miss: blocks of this band stay resident for reuse from now on.
    for round in 4..6 {
        let (purged, dirty) = touch_and_free(4 * MIB);
        assert_eq!(purged, 0, "4 MiB block {round} was returned");
        assert_eq!(
            dirty,
            4 * MIB as isize,
            "4 MiB block {round} did not stay dirty"
        );
    }
    // Another band has no misses: its first block is returned.
    let (purged, _) = touch_and_free(MIB / 2);
    assert!(
        purged >= (MIB / 2) as u64,
        "a 512 KiB block was not returned at free: {purged} B purged"
    );
}

/// A 4 MiB buffer with a small header (sqlite3 grows one by reallocation to 4,194,312 B) is
/// in the last band, whole, and goes back at free like a 4 MiB block; under a top of 4 MiB
/// it stayed dirty, and the program's next allocations made it its peak.
#[test]
fn a_4_mib_buffer_with_a_header_goes_back_at_free() {
    alone(
        "a_4_mib_buffer_with_a_header_goes_back_at_free",
        "3600000",
        || {
            let size = 4 * MIB + 8;
            let (purged, dirty) = touch_and_free(size);
            assert!(
                purged >= size as u64,
                "a block of 4 MiB and 8 B was not returned at free: {purged} B purged"
            );
            assert!(dirty <= 0, "a block of 4 MiB and 8 B left {dirty} B dirty");
        },
    );
}

#[test]
fn growing_blocks_of_one_band_all_go_back_at_free() {
    alone(
        "growing_blocks_of_one_band_all_go_back_at_free",
        "3600000",
        || {
            // Each block is larger than every one returned before it, as a buffer grown by
            // moving reallocations is: no block returned could have served the next, so
            // none counts as reuse, and all six go back at free (with one band's four
            // misses, the fifth and sixth would stay dirty).
            for (round, kib) in [2048, 2304, 2560, 2816, 3072, 3328].into_iter().enumerate() {
                let (purged, dirty) = touch_and_free(kib << 10);
                assert!(
                    purged >= (kib << 10) as u64,
                    "block {round} ({kib} KiB) was not returned at free: {purged} B purged"
                );
                assert!(dirty <= 0, "block {round} ({kib} KiB) left {dirty} B dirty");
            }
        },
    );
}

#[test]
fn a_block_grown_past_4_mib_in_place_stays_dirty() {
    alone(
        "a_block_grown_past_4_mib_in_place_stays_dirty",
        "3600000",
        || {
            let p = tessera::alloc(MIB, 8);
            assert!(!p.is_null());
            // SAFETY: allocated above with this size and alignment. A fresh heap has free
            // pages right after the block, so it grows in place, flag and all.
            let q = unsafe { tessera::realloc(p, MIB, 8, 16 * MIB) };
            assert_eq!(q, p, "not grown in place");
            for offset in (0..16 * MIB).step_by(4096) {
                // SAFETY: inside the block.
                unsafe { q.add(offset).write_volatile(1) };
            }
            let before = tessera::stats();
            // SAFETY: allocated above with this size and alignment, not freed yet.
            unsafe { tessera::dealloc(q, 16 * MIB, 8) };
            let after = tessera::stats();
            assert_eq!(after.purged - before.purged, 0, "returned at free");
        },
    );
}

#[test]
fn a_decay_time_of_never_returns_nothing_at_free() {
    alone(
        "a_decay_time_of_never_returns_nothing_at_free",
        "-1",
        || {
            let (purged, dirty) = touch_and_free(4 * MIB);
            assert_eq!(purged, 0, "returned under TESSERA_PURGE_DELAY_MS=-1");
            assert_eq!(dirty, 4 * MIB as isize, "the block did not stay dirty");
        },
    );
}
