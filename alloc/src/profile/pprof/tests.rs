//! `pprof.rs`'s tests: profiles decoded back, and read by `go tool pprof` when it is installed.

use super::*;
use std::process::Command;

// ---- a small protobuf reader, for the tests only -----------------------------------------

#[derive(Clone, Debug)]
enum Value {
    Int(u64),
    Bytes(Vec<u8>),
}

type Message = Vec<(u32, Value)>;

fn read_varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[0];
        *b = &b[1..];
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
    }
    panic!("varint too long");
}

fn decode(mut b: &[u8]) -> Message {
    let mut fields = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b);
        let field = (key >> 3) as u32;
        match key & 7 {
            0 => fields.push((field, Value::Int(read_varint(&mut b)))),
            2 => {
                let len = read_varint(&mut b) as usize;
                fields.push((field, Value::Bytes(b[..len].to_vec())));
                b = &b[len..];
            }
            wire => panic!("unexpected wire type {wire}"),
        }
    }
    fields
}

/// Every value of a repeated integer field, packed or not.
fn ints(m: &Message, field: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for (f, v) in m {
        if *f != field {
            continue;
        }
        match v {
            Value::Int(i) => out.push(*i),
            Value::Bytes(b) => {
                let mut b = &b[..];
                while !b.is_empty() {
                    out.push(read_varint(&mut b));
                }
            }
        }
    }
    out
}

/// A singular integer field (0 when absent, as proto3 reads it).
fn int(m: &Message, field: u32) -> u64 {
    ints(m, field).last().copied().unwrap_or(0)
}

fn messages(m: &Message, field: u32) -> Vec<Message> {
    m.iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, v)| match v {
            Value::Bytes(b) => decode(b),
            Value::Int(_) => panic!("field {field} is not a message"),
        })
        .collect()
}

fn strings(m: &Message) -> Vec<String> {
    m.iter()
        .filter(|(f, _)| *f == field::PROFILE_STRING_TABLE)
        .map(|(_, v)| match v {
            Value::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
            Value::Int(_) => panic!("string table entry is not bytes"),
        })
        .collect()
}

fn finished(b: ProfileBuilder) -> Vec<u8> {
    let mut out = OsBuf::new();
    b.finish(&mut out).unwrap();
    out.as_slice().to_vec()
}

fn heap_builder() -> ProfileBuilder {
    ProfileBuilder::new(
        &[("alloc_objects", "count"), ("alloc_space", "bytes")],
        ("space", "bytes"),
        524_288,
    )
    .unwrap()
}

// ---- structure ---------------------------------------------------------------------------

#[test]
fn a_profile_decodes_to_what_was_added() {
    let mut b = heap_builder();
    b.set_time_nanos(1_700_000_000_000_000_000);
    b.set_duration_nanos(5_000);
    b.set_drop_frames("tessera::profile.*").unwrap();
    b.set_default_sample_type("alloc_space").unwrap();
    b.add_comment("hello").unwrap();
    b.add_mapping(&Mapping {
        start: 0x1000,
        limit: 0x2000,
        file_offset: 0x3000,
        filename: b"/bin/prog",
        build_id: b"abcd",
    })
    .unwrap();
    // Return addresses: stored minus one.
    b.add_sample(Stack::ReturnAddresses(&[0x1101, 0x1201]), &[1, 100], &[])
        .unwrap();
    // An exact leaf equal to the first sample's leaf shares its location; the value
    // list is padded; a zero pc is skipped; an address outside every mapping gets none.
    b.add_sample(
        Stack::ExactLeaf(&[0x1100, 0, 0x9001]),
        &[2],
        &[
            Label::Str {
                key: "coroutine",
                value: "worker",
            },
            Label::Num {
                key: "bytes",
                value: 4096,
                unit: "bytes",
            },
        ],
    )
    .unwrap();
    // Too many values: the extra ones are dropped.
    b.add_sample(Stack::ReturnAddresses(&[0x1201]), &[3, 4, 5], &[])
        .unwrap();
    assert_eq!(b.sample_count(), 3);

    let p = decode(&finished(b));
    let s = strings(&p);
    assert_eq!(s[0], "");
    let st = |i: u64| s[i as usize].as_str();
    let unique: std::collections::HashSet<_> = s.iter().collect();
    assert_eq!(unique.len(), s.len(), "strings are deduplicated: {s:?}");

    let types = messages(&p, field::PROFILE_SAMPLE_TYPE);
    let types: Vec<_> = types
        .iter()
        .map(|t| (st(int(t, 1)), st(int(t, 2))))
        .collect();
    assert_eq!(
        types,
        [("alloc_objects", "count"), ("alloc_space", "bytes")]
    );
    let period_type = &messages(&p, field::PROFILE_PERIOD_TYPE)[0];
    assert_eq!(
        (st(int(period_type, 1)), st(int(period_type, 2))),
        ("space", "bytes")
    );
    assert_eq!(int(&p, field::PROFILE_PERIOD), 524_288);
    assert_eq!(
        int(&p, field::PROFILE_TIME_NANOS),
        1_700_000_000_000_000_000
    );
    assert_eq!(int(&p, field::PROFILE_DURATION_NANOS), 5_000);
    assert_eq!(
        st(int(&p, field::PROFILE_DROP_FRAMES)),
        "tessera::profile.*"
    );
    assert_eq!(int(&p, field::PROFILE_KEEP_FRAMES), 0);
    assert_eq!(
        st(int(&p, field::PROFILE_DEFAULT_SAMPLE_TYPE)),
        "alloc_space"
    );
    let comments: Vec<_> = ints(&p, field::PROFILE_COMMENT)
        .into_iter()
        .map(st)
        .collect();
    assert_eq!(comments, ["hello"]);

    let maps = messages(&p, field::PROFILE_MAPPING);
    assert_eq!(maps.len(), 1);
    assert_eq!(int(&maps[0], 1), 1);
    assert_eq!(int(&maps[0], 2), 0x1000);
    assert_eq!(int(&maps[0], 3), 0x2000);
    assert_eq!(int(&maps[0], 4), 0x3000);
    assert_eq!(st(int(&maps[0], 5)), "/bin/prog");
    assert_eq!(st(int(&maps[0], 6)), "abcd");

    let locs = messages(&p, field::PROFILE_LOCATION);
    let loc_of = |id: u64| {
        let l = locs
            .iter()
            .find(|l| int(l, 1) == id)
            .expect("location exists");
        (int(l, 3), int(l, 2))
    };
    assert_eq!(locs.len(), 3, "three distinct addresses");

    let samples = messages(&p, field::PROFILE_SAMPLE);
    assert_eq!(samples.len(), 3);
    let stacks: Vec<Vec<(u64, u64)>> = samples
        .iter()
        .map(|s| ints(s, 1).into_iter().map(loc_of).collect())
        .collect();
    assert_eq!(stacks[0], [(0x1100, 1), (0x1200, 1)]);
    assert_eq!(stacks[1], [(0x1100, 1), (0x9000, 0)]);
    assert_eq!(stacks[2], [(0x1200, 1)]);
    assert_eq!(ints(&samples[0], 1)[0], ints(&samples[1], 1)[0]);
    assert_eq!(ints(&samples[0], 2), [1, 100]);
    assert_eq!(ints(&samples[1], 2), [2, 0]);
    assert_eq!(ints(&samples[2], 2), [3, 4]);

    let labels = messages(&samples[1], 3);
    assert_eq!(labels.len(), 2);
    assert_eq!(st(int(&labels[0], 1)), "coroutine");
    assert_eq!(st(int(&labels[0], 2)), "worker");
    assert_eq!(st(int(&labels[1], 1)), "bytes");
    assert_eq!(int(&labels[1], 3), 4096);
    assert_eq!(st(int(&labels[1], 4)), "bytes");
    assert!(messages(&samples[0], 3).is_empty());
}

#[test]
fn a_builder_can_move_to_another_thread() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ProfileBuilder>();
}

#[test]
fn negative_values_and_empty_profiles() {
    let b = ProfileBuilder::new(&[], ("", ""), 0).unwrap();
    let p = decode(&finished(b));
    assert_eq!(strings(&p), [""]);
    let mut b = heap_builder();
    b.add_sample(Stack::ReturnAddresses(&[]), &[-1, i64::MIN], &[])
        .unwrap();
    let p = decode(&finished(b));
    let sample = &messages(&p, field::PROFILE_SAMPLE)[0];
    assert!(ints(sample, 1).is_empty());
    let values: Vec<i64> = ints(sample, 2).into_iter().map(|v| v as i64).collect();
    assert_eq!(values, [-1, i64::MIN]);
}

#[test]
fn deep_stacks_keep_their_innermost_frames() {
    let mut b = heap_builder();
    let pcs: Vec<usize> = (1..=200).map(|i| 0x10_0000 + i * 16 + 1).collect();
    b.add_sample(Stack::ReturnAddresses(&pcs), &[1, 1], &[])
        .unwrap();
    let p = decode(&finished(b));
    let locs = messages(&p, field::PROFILE_LOCATION);
    let sample = &messages(&p, field::PROFILE_SAMPLE)[0];
    let addrs: Vec<u64> = ints(sample, 1)
        .into_iter()
        .map(|id| int(locs.iter().find(|l| int(l, 1) == id).unwrap(), 3))
        .collect();
    let expect: Vec<u64> = pcs[..MAX_FRAMES].iter().map(|&pc| pc as u64 - 1).collect();
    assert_eq!(addrs, expect);
}

#[test]
fn tables_stay_deduplicated_as_they_grow() {
    let mut b = heap_builder();
    let names: Vec<String> = (0..3000).map(|i| format!("label-{i}")).collect();
    for round in 0..2 {
        for i in 0..5000usize {
            let pcs = [0x40_0000 + i * 8 + 1, 0x50_0000 + (i % 7) * 8 + 1];
            let labels = [Label::Str {
                key: "k",
                value: &names[i % names.len()],
            }];
            b.add_sample(Stack::ReturnAddresses(&pcs), &[round, 1], &labels)
                .unwrap();
        }
    }
    assert_eq!(b.sample_count(), 10_000);
    let p = decode(&finished(b));
    assert_eq!(messages(&p, field::PROFILE_LOCATION).len(), 5000 + 7);
    let s = strings(&p);
    // "", five sample and period names ("bytes" twice), "k", the labels.
    assert_eq!(s.len(), 1 + 5 + 1 + 3000);
    let locs = messages(&p, field::PROFILE_LOCATION);
    let mut ids: Vec<u64> = locs.iter().map(|l| int(l, 1)).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=5007).collect::<Vec<u64>>());
}

#[test]
fn gzip_output_inflates_to_the_raw_profile() {
    let build = || {
        let mut b = heap_builder();
        b.add_process_mappings().unwrap();
        for i in 0..2000usize {
            b.add_sample(
                Stack::ReturnAddresses(&[0x1000 + i % 50, 0x2000 + i % 3]),
                &[1, i as i64],
                &[],
            )
            .unwrap();
        }
        b
    };
    let raw = finished(build());
    let mut gz = OsBuf::new();
    build().finish_gzip(&mut gz).unwrap();
    // The values make this profile dense: zlib -6 gets 36% here, the fixed Huffman code
    // 53%.
    assert!(
        gz.len() * 10 < raw.len() * 6,
        "{} of {}",
        gz.len(),
        raw.len()
    );
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(gz.as_slice())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, raw);
}

// ---- go tool pprof -----------------------------------------------------------------------

#[inline(never)]
fn pprof_test_alpha_site(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(0x9e37_79b9).rotate_left(7) ^ 0x55)
}

#[inline(never)]
fn pprof_test_beta_site(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_add(0x1234_5678).rotate_right(3) ^ 0xaa)
}

/// `go tool pprof -raw` on `bytes`, or `None` (with a note) when `go` is missing.
fn go_pprof_raw(bytes: &[u8], name: &str) -> Option<String> {
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("go is not installed: skipping the `go tool pprof` check");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tessera-pprof-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&path)
        .env("PPROF_TMPDIR", &dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof failed: {stderr}\n{stdout}"
    );
    Some(stdout)
}

/// A heap-style profile of this test program: two sites, their callers given as return
/// addresses, real mappings with build IDs.
fn program_profile() -> ProfileBuilder {
    let alpha = pprof_test_alpha_site as fn(u64) -> u64 as usize;
    let beta = pprof_test_beta_site as fn(u64) -> u64 as usize;
    assert_ne!(pprof_test_alpha_site(1), pprof_test_beta_site(1));
    let mut b = ProfileBuilder::new(
        &crate::profile::writer::HEAP_SAMPLE_TYPES,
        ("space", "bytes"),
        524_288,
    )
    .unwrap();
    b.set_default_sample_type("inuse_space").unwrap();
    b.add_process_mappings().unwrap();
    // alpha allocates 3 objects of 1 MiB, called from beta (a return address inside
    // beta, so stored at beta's entry); beta allocates 1 of 512 KiB on its own.
    b.add_sample(
        Stack::ExactLeaf(&[alpha, beta + 1]),
        &[3, 3 << 20, 3, 3 << 20],
        &[Label::Str {
            key: "coroutine",
            value: "worker",
        }],
    )
    .unwrap();
    b.add_sample(Stack::ExactLeaf(&[beta]), &[1, 1 << 19, 1, 1 << 19], &[])
        .unwrap();
    b
}

fn check_raw_output(raw: &str) {
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains("Period: 524288"), "{raw}");
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "{raw}"
    );
    assert!(raw.contains("3    3145728          3    3145728"), "{raw}");
    assert!(raw.contains("coroutine:[worker]"), "{raw}");
    // Symbolised against the test binary, found through the mapping.
    assert!(raw.contains("pprof_test_alpha_site"), "{raw}");
    assert!(raw.contains("pprof_test_beta_site"), "{raw}");
}

#[test]
fn go_tool_pprof_reads_the_raw_profile() {
    let bytes = finished(program_profile());
    if let Some(raw) = go_pprof_raw(&bytes, "heap.pb") {
        check_raw_output(&raw);
    }
}

#[test]
fn go_tool_pprof_reads_the_gzipped_profile() {
    let mut gz = OsBuf::new();
    program_profile().finish_gzip(&mut gz).unwrap();
    assert_eq!(&gz.as_slice()[..2], &[0x1f, 0x8b]);
    if let Some(raw) = go_pprof_raw(gz.as_slice(), "heap.pb.gz") {
        check_raw_output(&raw);
    }
}
