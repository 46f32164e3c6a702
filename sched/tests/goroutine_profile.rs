//! The goroutine profile (issue #18 item 3): parked coroutines are walked from where they
//! switched out, grouped by identical stack with counts and their labels, and read back by
//! decoding the protobuf here and, when `go` is installed, by `go tool pprof -top`.

mod common;

use std::hint::black_box;

use tessera_sched::chan::{self, Receiver};
use tessera_sched::{Runtime, labels, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

#[inline(never)]
fn wait_a(rx: Receiver<()>) {
    black_box(rx.recv()).ok();
    black_box(());
}

#[inline(never)]
fn wait_b(rx: Receiver<()>) {
    black_box(rx.recv()).ok();
    black_box(());
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

/// Which of `functions` (name, entry address) holds `address`: the nearest entry at or
/// below it, within 4 KiB (each of the test's functions is far smaller). Only this file's
/// coroutines are alive while its one test runs, and the other functions of the file are
/// among `functions` to bound their neighbours.
fn function_of(address: u64, functions: &[(&'static str, u64)]) -> Option<&'static str> {
    functions
        .iter()
        .filter(|&&(_, start)| start <= address && address - start < 4096)
        .max_by_key(|&&(_, start)| start)
        .map(|&(name, _)| name)
}

/// The coroutines a sample counts, per function among `functions` its stack passes through.
fn counts_by_function(p: &Profile, functions: &[(&'static str, u64)]) -> Vec<(String, i64)> {
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
    let functions = [
        ("wait_a", wait_a as *const () as usize as u64),
        ("wait_b", wait_b as *const () as usize as u64),
        ("varint", varint as *const () as usize as u64),
        ("packed", packed as *const () as usize as u64),
        ("decode", decode as *const () as usize as u64),
        ("function_of", function_of as *const () as usize as u64),
        (
            "go_installed",
            common::go_installed as *const () as usize as u64,
        ),
        ("pprof_top", common::pprof_top as *const () as usize as u64),
        ("cum_of", cum_of as *const () as usize as u64),
    ];
    let counts = counts_by_function(&p, &functions);
    let count = |name: &str| counts.iter().find(|(n, _)| n == name).map_or(0, |e| e.1);
    assert_eq!(count("wait_a"), 30, "{counts:?}");
    assert_eq!(count("wait_b"), 10, "{counts:?}");
    // The 30 share one stack, the 10 another: one sample each, carrying the labels.
    let in_fn = |s: &Sample, f: u64| {
        s.locations.iter().any(|&id| {
            let a = p.locations.iter().find(|l| l.0 == id).unwrap().1;
            function_of(a, &functions) == function_of(f, &functions)
        })
    };
    let a: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| in_fn(s, functions[0].1))
        .collect();
    let b: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| in_fn(s, functions[1].1))
        .collect();
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
