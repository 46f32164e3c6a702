//! Tessera's statistics for C programs: the `struct tessera_stats` that `tessera_stats()`
//! fills (`include/tessera.h`), and the text of `malloc_stats()` and the XML of
//! `malloc_info()` (`c_api.rs` exports all three).
//!
//! The figures are `tessera::stats()`'s (see `alloc/src/stats.rs` for what each part of the
//! breakdown holds). The printers are modelled on mimalloc's `mi_stats_print` and jemalloc's
//! `malloc_stats_print`: totals first, then per node and per size class. They run inside
//! `malloc`'s own library, so they gather everything first (the walk takes the allocator's
//! locks and allocates nothing) and only then write, through a stack buffer (`text.rs`),
//! with no allocator lock held.

use core::ffi::c_int;

use tessera::Stats;

use crate::text::{Sink, Text};

/// `TESSERA_STATS_VERSION` in `tessera.h`.
pub(crate) const VERSION: u32 = 1;

/// `struct tessera_stats` in `include/tessera.h`: every figure a `uint64_t`, so the layout
/// is the same for every C compiler; later versions only append fields.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct CStats {
    /// `VERSION`.
    pub version: u32,
    /// `size_of::<CStats>()` in the library that filled it.
    pub size: u32,
    /// The breakdown; these six add up to `mapped`.
    pub live: u64,
    /// See `tessera::Breakdown`.
    pub cached: u64,
    /// See `tessera::Breakdown`.
    pub central: u64,
    /// See `tessera::Breakdown`.
    pub heap_dirty: u64,
    /// See `tessera::Breakdown`.
    pub heap_purged: u64,
    /// See `tessera::Breakdown`.
    pub metadata: u64,
    /// Every byte mapped: the sum of the six above.
    pub mapped: u64,
    /// `mapped - heap_purged`.
    pub committed: u64,
    /// Measured with `mincore`.
    pub resident: u64,
    /// Bytes in spans in use and huge blocks.
    pub active: u64,
    /// Bytes returned to the OS by purges since the start.
    pub purged_total: u64,
    /// Live huge blocks.
    pub huge_blocks: u64,
    /// Caches (one per thread or processor that allocated), of which `idle_caches` idle.
    pub caches: u64,
    /// Caches of exited threads, parked for reuse.
    pub idle_caches: u64,
    /// NUMA nodes in use.
    pub nodes: u64,
}

/// glibc's `struct mallinfo2` (`<malloc.h>`, glibc 2.33 on), filled with Tessera's figures
/// by `mallinfo2()`. glibc describes its own heap in these fields; each holds the nearest of
/// Tessera's figures (`from_stats`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MallInfo2 {
    /// glibc: bytes of its non-`mmap`ed heap. Here: the arenas' committed bytes (everything
    /// of them not returned to the OS: objects, free room, dirty pages, headers).
    pub arena: usize,
    /// glibc: free chunks. Tessera counts none: 0.
    pub ordblks: usize,
    /// glibc: free fastbin chunks: 0.
    pub smblks: usize,
    /// Huge blocks (each a mapping of its own, glibc's `mmap`ed chunks).
    pub hblks: usize,
    /// Bytes in huge blocks.
    pub hblkhd: usize,
    /// Always 0 (in glibc too).
    pub usmblks: usize,
    /// glibc: bytes in free fastbin chunks: 0.
    pub fsmblks: usize,
    /// Bytes handed out from the arenas: small objects at their class size, large blocks.
    pub uordblks: usize,
    /// Committed arena bytes free for reuse: caches' and central lists' free objects and
    /// room, and the page heap's dirty pages.
    pub fordblks: usize,
    /// glibc: what `malloc_trim` could release at the heap's top. Here: the page heap's dirty
    /// pages, which `malloc_trim` returns to the OS.
    pub keepcost: usize,
}

impl MallInfo2 {
    pub(crate) fn from_stats(s: &Stats) -> MallInfo2 {
        let nodes = &s.nodes[..s.node_count];
        // `Stats::active` is the spans in use (each node's `active`) plus the huge blocks.
        let in_spans: usize = nodes.iter().map(|n| n.active).sum();
        let huge = s.active - in_spans;
        let arena_live: usize = nodes.iter().map(|n| n.breakdown.live).sum();
        MallInfo2 {
            arena: nodes.iter().map(|n| n.breakdown.committed()).sum(),
            hblks: s.huge_blocks,
            hblkhd: huge,
            uordblks: arena_live,
            fordblks: nodes
                .iter()
                .map(|n| n.breakdown.cached + n.breakdown.central + n.breakdown.heap_dirty)
                .sum(),
            keepcost: nodes.iter().map(|n| n.breakdown.heap_dirty).sum(),
            ..MallInfo2::default()
        }
    }
}

/// glibc's older `struct mallinfo`: `MallInfo2` in `int`s, each saturated at `INT_MAX`
/// (glibc's own wraps around past 2 GiB).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MallInfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

impl From<MallInfo2> for MallInfo {
    fn from(m: MallInfo2) -> MallInfo {
        let i = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
        MallInfo {
            arena: i(m.arena),
            ordblks: i(m.ordblks),
            smblks: i(m.smblks),
            hblks: i(m.hblks),
            hblkhd: i(m.hblkhd),
            usmblks: i(m.usmblks),
            fsmblks: i(m.fsmblks),
            uordblks: i(m.uordblks),
            fordblks: i(m.fordblks),
            keepcost: i(m.keepcost),
        }
    }
}

impl CStats {
    pub(crate) fn from_stats(s: &Stats) -> CStats {
        let b = &s.breakdown;
        let n = |v: usize| v as u64;
        CStats {
            version: VERSION,
            size: core::mem::size_of::<CStats>() as u32,
            live: n(b.live),
            cached: n(b.cached),
            central: n(b.central),
            heap_dirty: n(b.heap_dirty),
            heap_purged: n(b.heap_purged),
            metadata: n(b.metadata),
            mapped: n(s.mapped),
            committed: n(b.committed()),
            resident: n(s.resident),
            active: n(s.active),
            purged_total: s.purged,
            huge_blocks: n(s.huge_blocks),
            caches: n(s.caches),
            idle_caches: n(s.idle_caches),
            nodes: n(s.node_count),
        }
    }
}

/// `malloc_stats()`'s report.
pub(crate) fn print_text<S: Sink, const N: usize>(s: &Stats, out: &mut Text<S, N>) {
    let b = &s.breakdown;
    out.put(b"tessera: where the memory is\n");
    out.put(b"  part                   bytes        size\n");
    let row = |out: &mut Text<S, N>, label: &[u8], bytes: usize, note: &[u8]| {
        out.put(b"  ");
        out.put_left(label, 14);
        out.put_decimal_width(bytes, 14);
        out.put_size(bytes, 12);
        if !note.is_empty() {
            out.put(b"  ");
            out.put(note);
        }
        out.put(b"\n");
    };
    row(
        out,
        b"live",
        b.live,
        b"objects handed out (small, large, huge)",
    );
    row(out, b"cached", b.cached, b"held by thread/processor caches");
    row(
        out,
        b"central",
        b.central,
        b"free room of spans on central lists",
    );
    row(
        out,
        b"heap dirty",
        b.heap_dirty,
        b"free pages, not purged yet",
    );
    row(
        out,
        b"heap purged",
        b.heap_purged,
        b"free pages returned to the OS",
    );
    row(
        out,
        b"metadata",
        b.metadata,
        b"arena headers, caches, registry",
    );
    row(out, b"= mapped", s.mapped, b"");
    row(out, b"committed", b.committed(), b"mapped - heap purged");
    row(out, b"resident", s.resident, b"measured (mincore)");
    row(
        out,
        b"purged total",
        s.purged as usize,
        b"returned to the OS since start",
    );
    out.put(b"  caches: ");
    out.put_decimal(s.caches);
    out.put(b" (");
    out.put_decimal(s.idle_caches);
    out.put(b" idle); huge blocks: ");
    out.put_decimal(s.huge_blocks);
    out.put(b"\n\n  node");
    const NODE_COLUMNS: [&[u8]; 7] = [
        b"live",
        b"cached",
        b"central",
        b"dirty",
        b"purged",
        b"metadata",
        b"resident",
    ];
    for name in NODE_COLUMNS {
        out.put_right(name, 12);
    }
    out.put(b"\n");
    for (i, node) in s.nodes[..s.node_count].iter().enumerate() {
        let p = &node.breakdown;
        out.put_decimal_width(i, 6);
        for bytes in [
            p.live,
            p.cached,
            p.central,
            p.heap_dirty,
            p.heap_purged,
            p.metadata,
            node.resident,
        ] {
            out.put_size(bytes, 12);
        }
        out.put(b"\n");
    }
    out.put(b"\n  size classes in use (objects carved; in use: handed out or on a bin list)\n");
    out.put(b"  class    size   spans     objects      in use        free  central\n");
    for (i, c) in s.classes.iter().enumerate().filter(|(_, c)| c.spans > 0) {
        out.put_decimal_width(i, 7);
        out.put_decimal_width(c.size, 8);
        out.put_decimal_width(c.spans, 8);
        out.put_decimal_width(c.objects, 12);
        out.put_decimal_width(c.allocated(), 12);
        out.put_decimal_width(c.free, 12);
        out.put_decimal_width(c.central_spans, 9);
        out.put(b"\n");
    }
    out.flush();
}

/// `malloc_info()`'s XML: one `<malloc>` element, the breakdown as `<part>`s, totals,
/// one `<node>` per node and one `<size>` per size class in use.
pub(crate) fn print_xml<S: Sink, const N: usize>(s: &Stats, out: &mut Text<S, N>) {
    let b = &s.breakdown;
    let attr = |out: &mut Text<S, N>, name: &[u8], value: usize| {
        out.put(b" ");
        out.put(name);
        out.put(b"=\"");
        out.put_decimal(value);
        out.put(b"\"");
    };
    // `<part name="NAME" size="N"/>` and its like.
    let named_size = |out: &mut Text<S, N>, open: &[u8], name: &[u8], bytes: usize| {
        out.put(open);
        out.put(name);
        out.put(b"\"");
        attr(out, b"size", bytes);
        out.put(b"/>\n");
    };
    out.put(b"<malloc version=\"1\" allocator=\"tessera\">\n<breakdown");
    attr(out, b"mapped", s.mapped);
    out.put(b">\n");
    for (name, bytes) in [
        (&b"live"[..], b.live),
        (b"cached", b.cached),
        (b"central", b.central),
        (b"heap-dirty", b.heap_dirty),
        (b"heap-purged", b.heap_purged),
        (b"metadata", b.metadata),
    ] {
        named_size(out, b"<part name=\"", name, bytes);
    }
    out.put(b"</breakdown>\n");
    for (name, bytes) in [
        (&b"mapped"[..], s.mapped),
        (b"committed", b.committed()),
        (b"resident", s.resident),
        (b"active", s.active),
        (b"purged-since-start", s.purged as usize),
    ] {
        named_size(out, b"<total type=\"", name, bytes);
    }
    out.put(b"<caches");
    attr(out, b"count", s.caches);
    attr(out, b"idle", s.idle_caches);
    out.put(b"/>\n<huge");
    attr(out, b"count", s.huge_blocks);
    out.put(b"/>\n");
    for (i, node) in s.nodes[..s.node_count].iter().enumerate() {
        let p = &node.breakdown;
        out.put(b"<node");
        attr(out, b"nr", i);
        attr(out, b"mapped", node.mapped);
        attr(out, b"live", p.live);
        attr(out, b"cached", p.cached);
        attr(out, b"central", p.central);
        attr(out, b"heap-dirty", p.heap_dirty);
        attr(out, b"heap-purged", p.heap_purged);
        attr(out, b"metadata", p.metadata);
        attr(out, b"resident", node.resident);
        out.put(b"/>\n");
    }
    out.put(b"<sizes>\n");
    for (i, c) in s.classes.iter().enumerate().filter(|(_, c)| c.spans > 0) {
        out.put(b"<size");
        attr(out, b"class", i);
        attr(out, b"bytes", c.size);
        attr(out, b"spans", c.spans);
        attr(out, b"objects", c.objects);
        attr(out, b"in-use", c.allocated());
        attr(out, b"free", c.free);
        attr(out, b"central-spans", c.central_spans);
        out.put(b"/>\n");
    }
    out.put(b"</sizes>\n</malloc>\n");
    out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tests::Collect;

    fn render(print: fn(&Stats, &mut Text<Collect, 256>)) -> (Stats, String) {
        let blocks: Vec<*mut u8> = (0..100).map(|i| tessera::alloc(16 + i * 8, 8)).collect();
        let s = tessera::stats();
        for (i, p) in blocks.into_iter().enumerate() {
            // SAFETY: each block is live and freed once, with its size.
            unsafe { tessera::dealloc(p, 16 + i * 8, 8) };
        }
        let mut text = Text::new(Collect::default());
        print(&s, &mut text);
        (s, text.collected())
    }

    #[test]
    fn the_c_struct_carries_the_breakdown() {
        let s = tessera::stats();
        let c = CStats::from_stats(&s);
        assert_eq!(c.version, VERSION);
        assert_eq!(c.size as usize, core::mem::size_of::<CStats>());
        assert_eq!(
            c.live + c.cached + c.central + c.heap_dirty + c.heap_purged + c.metadata,
            c.mapped
        );
        assert_eq!(c.committed, c.mapped - c.heap_purged);
        // The header declares 2 x uint32_t and 15 x uint64_t.
        assert_eq!(core::mem::size_of::<CStats>(), 8 + 15 * 8);
    }

    #[test]
    fn mallinfo2_holds_the_arena_figures_and_mallinfo_saturates() {
        let s = tessera::stats();
        let m = MallInfo2::from_stats(&s);
        let nodes = &s.nodes[..s.node_count];
        // Arena bytes in use and free add up within the arenas' committed bytes (their
        // headers are the rest), and huge blocks are apart.
        assert!(m.uordblks + m.fordblks <= m.arena, "{m:?}");
        assert_eq!(m.uordblks + m.hblkhd, s.breakdown.live, "{m:?} {s:?}");
        assert_eq!(m.hblks, s.huge_blocks);
        assert_eq!(m.keepcost, s.breakdown.heap_dirty);
        assert_eq!(
            m.arena,
            nodes.iter().map(|n| n.breakdown.committed()).sum::<usize>()
        );
        // glibc's `int` fields wrap past 2 GiB; these stop at `INT_MAX`.
        let big = MallInfo2 {
            arena: 5 << 30,
            hblks: 3,
            ..MallInfo2::default()
        };
        let old = MallInfo::from(big);
        assert_eq!((old.arena, old.hblks, old.uordblks), (c_int::MAX, 3, 0));
    }

    #[test]
    fn the_text_report_shows_the_figures() {
        let (s, text) = render(print_text);
        assert!(text.starts_with("tessera: where the memory is\n"), "{text}");
        let mapped = format!("= mapped{:>20}", s.mapped);
        assert!(text.contains(&mapped), "{text}");
        let live = format!("live{:>24}", s.breakdown.live);
        assert!(text.contains(&live), "{text}");
        assert!(text.contains("\n     0 "), "node 0: {text}");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("16"))
        );
    }

    #[test]
    fn the_xml_is_well_formed_and_adds_up() {
        let (s, xml) = render(print_xml);
        assert!(xml.starts_with("<malloc version=\"1\" allocator=\"tessera\">\n"));
        assert!(xml.ends_with("</malloc>\n"));
        // Every element is closed, in order: a stack of open tags.
        let mut open = Vec::new();
        for tag in xml.split('<').skip(1) {
            let tag = &tag[..tag.find('>').unwrap()];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name.to_string()), "{xml}");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().unwrap().to_string());
            }
        }
        assert!(open.is_empty(), "{xml}");
        let parts: usize = xml
            .lines()
            .filter(|l| l.starts_with("<part "))
            .map(|l| {
                let size = l.split("size=\"").nth(1).unwrap();
                size[..size.find('"').unwrap()].parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(parts, s.mapped);
        assert!(xml.contains(&format!(
            "<part name=\"live\" size=\"{}\"/>",
            s.breakdown.live
        )));
    }
}
