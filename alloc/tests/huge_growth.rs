//! A huge block (its own mapping) is memory the program's footprint grows by while freed
//! pages may wait in the page heap on the decay curve: its allocation purges as many of
//! them as the heap's own growth would (`PageHeap::purge_for_growth`). Rayon's merged hash maps
//! (33 and 66 MiB tables) were mapped while the 8 and 16 MiB tables of earlier merges
//! waited dirty: 40-75 MiB of its peak.

#[allow(dead_code)] // Of the shared helpers, only `in_child` serves here.
mod common;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const MIB: usize = 1 << 20;

/// Blocks above the sizes returned at free (`large.rs`, up to 8 MiB) stay dirty when freed;
/// once they have waited an epoch (a tenth of the 1 s decay time), a huge allocation takes
/// them back to the OS. In a child without the background purger and with 4 KiB pages (a
/// purge in an arena of huge pages keeps whole huge pages apart), so that only the
/// allocator's own calls purge: a decay step that comes meanwhile (after 0.3 of the decay
/// time) would return a fifth of them, not nearly all.
#[test]
fn huge_allocation_purges_aged_dirty_pages() {
    let env = [
        ("TESSERA_PURGE_DELAY_MS", "1000"),
        ("TESSERA_PURGER", "off"),
        ("TESSERA_THP", "never"),
        ("TESSERA_CACHE", "thread"),
    ];
    let name = "huge_allocation_purges_aged_dirty_pages";
    if let Some(out) = common::in_child(name, name, &env, || {
        let blocks: Vec<*mut u8> = (0..4).map(|_| tessera::alloc(12 * MIB, 8)).collect();
        for &b in &blocks {
            assert!(!b.is_null());
            // SAFETY: a fresh block of 12 MiB: every page dirtied.
            unsafe { b.write_bytes(0xA5, 12 * MIB) };
        }
        for &b in &blocks {
            // SAFETY: ours, freed once.
            unsafe { tessera::free(b) };
        }
        let dirty = tessera::stats().breakdown.heap_dirty;
        assert!(dirty >= 40 * MIB, "freed blocks wait dirty: {dirty}");
        // Older than an epoch (a lower bound: a busy machine only makes them older).
        std::thread::sleep(std::time::Duration::from_millis(300));
        let huge = tessera::alloc(64 * MIB, 8);
        assert!(!huge.is_null());
        let left = tessera::stats().breakdown.heap_dirty;
        assert!(
            left < MIB,
            "{left} dirty bytes left after a fresh 64 MiB mapping (were {dirty})"
        );
        // SAFETY: ours, freed once.
        unsafe { tessera::free(huge) };
    }) {
        assert!(
            out.status.success(),
            "{name} in a child:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
