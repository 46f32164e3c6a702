//! The goroutine profile (issue #18 item 3): parked coroutines are walked from where they
//! switched out, grouped by identical stack with counts and their labels, and read back by
//! decoding the protobuf here and, when `go` is installed, by `go tool pprof -top`.

mod common;

use std::hint::black_box;

use tessera_sched::chan::{self, Receiver};
use tessera_sched::{Runtime, labels, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

// Two bodies that differ (the constant after the call), or an optimised build merges them
// into one function; the call is not the last thing either, so it is not a tail call.
#[inline(never)]
fn wait_a(rx: Receiver<()>) {
    black_box(rx.recv()).ok();
    black_box(0xa);
}

#[inline(never)]
fn wait_b(rx: Receiver<()>) {
    black_box(rx.recv()).ok();
    black_box(0xb);
}

// ---- a reader of the profile's protobuf, as much of profile.proto as the test needs ----

/// One sample: location ids, values, (key, value) string labels as string-table indexes.
#[derive(Debug, Default)]
struct Sample {
    locations: Vec<u64>,
    values: Vec<i64>,
    labels: Vec<(i64, i64)>,
}

#[derive(Debug, Default)]
struct Profile {
    samples: Vec<Sample>,
    /// (id, address)
    locations: Vec<(u64, u64)>,
    strings: Vec<String>,
}

fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Calls `f(field, varint value, length-delimited bytes)` for each field of `buf`.
fn fields(buf: &[u8], mut f: impl FnMut(u32, u64, &[u8])) {
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at);
        let (field, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                let v = varint(buf, &mut at);
                f(field, v, &[]);
            }
            2 => {
                let len = varint(buf, &mut at) as usize;
                f(field, 0, &buf[at..at + len]);
                at += len;
            }
            _ => panic!("wire type {wire} not in profile.proto's use"),
        }
    }
}

/// A packed repeated varint field, or one unpacked element.
fn packed(v: u64, bytes: &[u8], out: &mut Vec<u64>) {
    if bytes.is_empty() {
        out.push(v);
    } else {
        let mut at = 0;
        while at < bytes.len() {
            out.push(varint(bytes, &mut at));
        }
    }
}

fn decode(buf: &[u8]) -> Profile {
    let mut p = Profile::default();
    fields(buf, |field, _, bytes| match field {
        2 => {
            let mut s = Sample::default();
            fields(bytes, |f, v, b| match f {
                1 => packed(v, b, &mut s.locations),
                2 => {
                    let mut vals = Vec::new();
                    packed(v, b, &mut vals);
                    s.values.extend(vals.into_iter().map(|x| x as i64));
                }
                3 => {
                    let (mut key, mut value) = (0, 0);
                    fields(b, |lf, lv, _| match lf {
                        1 => key = lv as i64,
                        2 => value = lv as i64,
                        _ => {}
                    });
                    s.labels.push((key, value));
                }
                _ => {}
            });
            p.samples.push(s);
        }
        4 => {
            let (mut id, mut address) = (0, 0);
            fields(bytes, |f, v, _| match f {
                1 => id = v,
                3 => address = v,
                _ => {}
            });
            p.locations.push((id, address));
        }
        6 => p.strings.push(String::from_utf8(bytes.to_vec()).unwrap()),
        _ => {}
    });
    p
}

/// A function of this program: its name here, its address range.
type Function = (&'static str, std::ops::Range<u64>);

/// The sizes of the functions at `starts` (run-time addresses), from the program's ELF
/// symbol table. The load bias is where the kernel mapped the file's first page
/// (`/proc/self/maps`) less the virtual address the program headers give that page.
fn function_sizes(starts: &[u64]) -> Vec<u64> {
    let elf = std::fs::read("/proc/self/exe").unwrap();
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    // The PT_LOAD segment at file offset 0.
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let first_vaddr = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32_at(ph) == 1 && u64_at(ph + 8) == 0)
        .map(|ph| u64_at(ph + 0x10))
        .expect("a PT_LOAD at offset 0");
    let exe = std::env::current_exe().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let base = maps
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[2] == "00000000" && std::path::Path::new(f[5]) == exe
        })
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .expect("the program's first mapping");
    let bias = base - first_vaddr;
    // The size of each function symbol, by address.
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c));
    let mut sizes = std::collections::HashMap::new();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if u32_at(sh + 4) != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size) = (u64_at(sh + 0x18) as usize, u64_at(sh + 0x20) as usize);
        for sym in (off..off + size).step_by(24) {
            if elf[sym + 4] & 0xf == 2 && u64_at(sym + 16) != 0 {
                sizes.insert(u64_at(sym + 8), u64_at(sym + 16)); // STT_FUNC
            }
        }
    }
    starts
        .iter()
        .map(|s| *sizes.get(&(s - bias)).expect("a function symbol there"))
        .collect()
}

/// Which of `functions` holds `address`.
fn function_of(address: u64, functions: &[Function]) -> Option<&'static str> {
    functions
        .iter()
        .find(|(_, range)| range.contains(&address))
        .map(|&(name, _)| name)
}

/// The coroutines a sample counts, per function among `functions` its stack passes through.
fn counts_by_function(p: &Profile, functions: &[Function]) -> Vec<(String, i64)> {
    let address_of = |id: u64| p.locations.iter().find(|l| l.0 == id).unwrap().1;
    let mut out: Vec<(String, i64)> = Vec::new();
    for s in &p.samples {
        let mut seen: Vec<&str> = Vec::new();
        for &id in &s.locations {
            if let Some(name) = function_of(address_of(id), functions)
                && !seen.contains(&name)
            {
                seen.push(name);
            }
        }
        for name in seen {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 += s.values[0],
                None => out.push((name.to_owned(), s.values[0])),
            }
        }
    }
    out
}

/// The `cum` column of the `-top` line whose function name ends with `name`.
fn cum_of(top: &str, name: &str) -> Option<i64> {
    top.lines()
        .find(|l| l.trim_end().ends_with(name))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
}

#[test]
fn parked_coroutines_are_grouped_by_stack_with_counts_and_labels() {
    let _guard = common::Watchdog::new("goroutine profile", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (raw, gz) = rt.block_on(|| {
        let (tx_a, rx_a) = chan::bounded::<()>(0);
        let (tx_b, rx_b) = chan::bounded::<()>(0);
        let mut handles = Vec::new();
        for _ in 0..30 {
            let rx = rx_a.clone();
            handles.push(spawn(move || wait_a(rx)));
        }
        labels::with(&[("role", "b")], || {
            for _ in 0..10 {
                let rx = rx_b.clone();
                handles.push(spawn(move || wait_b(rx)));
            }
        });
        // Until all 40 are parked in their receive (and nothing else of this runtime is).
        while tessera_sched::stats().parked < 40 {
            tessera_sched::yield_now();
        }
        let mut raw = Vec::new();
        let counts = tessera_sched::profile::write_goroutine_uncompressed(&mut raw).unwrap();
        assert!(counts.walked >= 40, "{counts:?}");
        assert_eq!(counts.caller, 1);
        let mut gz = Vec::new();
        tessera_sched::profile::write_goroutine(&mut gz).unwrap();
        // Every walked coroutine was given back: they all wake and finish.
        drop((tx_a, tx_b));
        for h in handles {
            h.join().unwrap();
        }
        (raw, gz)
    });
    drop(rt);

    let p = decode(&raw);
    let type_name = |i: usize| p.strings[i].as_str();
    assert!(p.strings.iter().any(|s| s == "goroutine"));
    let starts = [
        wait_a as *const () as usize as u64,
        wait_b as *const () as usize as u64,
    ];
    let sizes = function_sizes(&starts);
    let functions: [Function; 2] = [
        ("wait_a", starts[0]..starts[0] + sizes[0]),
        ("wait_b", starts[1]..starts[1] + sizes[1]),
    ];
    let counts = counts_by_function(&p, &functions);
    let count = |name: &str| counts.iter().find(|(n, _)| n == name).map_or(0, |e| e.1);
    assert_eq!(count("wait_a"), 30, "{counts:?}");
    assert_eq!(count("wait_b"), 10, "{counts:?}");
    // The 30 share one stack, the 10 another: one sample each, carrying the labels.
    let in_fn = |s: &Sample, name: &str| {
        s.locations.iter().any(|&id| {
            let a = p.locations.iter().find(|l| l.0 == id).unwrap().1;
            function_of(a, &functions) == Some(name)
        })
    };
    let a: Vec<&Sample> = p.samples.iter().filter(|s| in_fn(s, "wait_a")).collect();
    let b: Vec<&Sample> = p.samples.iter().filter(|s| in_fn(s, "wait_b")).collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(a[0].values, [30]);
    assert!(a[0].labels.is_empty());
    let b_labels: Vec<(&str, &str)> = b[0]
        .labels
        .iter()
        .map(|&(k, v)| (type_name(k as usize), type_name(v as usize)))
        .collect();
    assert_eq!(b_labels, [("role", "b")]);

    if common::go_installed() {
        let dir = std::env::temp_dir().join(format!("tessera-goroutine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("goroutine.pb.gz");
        std::fs::write(&file, &gz).unwrap();
        let top = common::pprof_top(file.as_os_str(), &[], &dir);
        let tagged = common::pprof_top(file.as_os_str(), &["-tagfocus=role=b"], &dir);
        std::fs::remove_dir_all(&dir).ok();
        assert!(top.contains("Type: goroutine"), "{top}");
        assert_eq!(cum_of(&top, "wait_a"), Some(30), "{top}");
        assert_eq!(cum_of(&top, "wait_b"), Some(10), "{top}");
        assert_eq!(cum_of(&tagged, "wait_b"), Some(10), "{tagged}");
        assert_eq!(cum_of(&tagged, "wait_a"), None, "{tagged}");
    } else {
        eprintln!("go not installed: the profile was checked by decoding it only");
    }
}
