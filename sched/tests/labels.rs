//! Profiler labels (issue #18): heap samples taken while a coroutine runs under
//! `labels::with` carry its labels, coroutines it spawns inherit them, and `go tool pprof
//! -tagfocus` (when `go` is installed) finds the memory by label.

use std::alloc::{Layout, alloc, dealloc};
use std::process::Command;

use tessera::profile::{LabelSet, LiveSample};
use tessera_sched::{Runtime, labels, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const BLOCK: usize = 1024;

/// `n` blocks of `BLOCK` bytes, kept (as addresses, so the vector's own growth is the only
/// other allocation).
fn allocate(n: usize) -> Vec<usize> {
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    // SAFETY: a non-zero size.
    (0..n).map(|_| unsafe { alloc(layout) } as usize).collect()
}

fn free(blocks: Vec<usize>) {
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    for p in blocks {
        // SAFETY: allocated by `allocate` with this layout.
        unsafe { dealloc(p as *mut u8, layout) };
    }
}

/// Live samples of `BLOCK` bytes carrying `set`.
fn live_with(set: LabelSet) -> usize {
    let mut buf = vec![LiveSample::default(); 100_000];
    let n = tessera::profile::live_samples(&mut buf).min(buf.len());
    buf[..n]
        .iter()
        .filter(|s| s.labels == set && s.requested == BLOCK)
        .count()
}

// One test: the profiler's tables are process-wide.
#[test]
fn samples_carry_the_labels_of_the_coroutine_that_allocated() {
    tessera::profile::set_rate(8 * 1024);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (upload, upload_child, plain) = rt.block_on(|| {
        let (upload, child) = labels::with(&[("handler", "upload")], || {
            assert_eq!(
                labels::current_pairs(),
                [("handler".into(), "upload".into())]
            );
            let mine = allocate(4096);
            // A coroutine spawned here inherits the labels, on whichever P it runs, and
            // extends them.
            let child = spawn(|| {
                labels::with(&[("tenant", "acme")], || {
                    let pairs = labels::current_pairs();
                    assert_eq!(
                        pairs,
                        [
                            ("handler".into(), "upload".into()),
                            ("tenant".into(), "acme".into())
                        ]
                    );
                    allocate(4096)
                })
            })
            .join()
            .unwrap();
            (mine, child)
        });
        // Restored on the way out.
        assert_eq!(labels::current(), LabelSet::NONE);
        (upload, child, allocate(4096))
    });
    let upload_set = LabelSet::new(&[("handler", "upload")]);
    let child_set = LabelSet::new(&[("handler", "upload"), ("tenant", "acme")]);
    // 4 MiB at one sample per 8 KiB: about 512 samples each (Poisson's spread is 23).
    for (what, set, at_least) in [
        ("upload", upload_set, 300),
        ("upload+tenant", child_set, 300),
        ("unlabelled", LabelSet::NONE, 300),
    ] {
        let n = live_with(set);
        assert!(n >= at_least, "{what}: {n} live samples");
    }

    if Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = std::env::temp_dir().join(format!("tessera-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("heap.pb.gz");
        let mut out = Vec::new();
        tessera::profile::write_heap(&mut out).unwrap();
        std::fs::write(&file, &out).unwrap();
        let total = |focus: Option<&str>| {
            let mut cmd = Command::new("go");
            cmd.args(["tool", "pprof", "-top", "-sample_index=inuse_space"]);
            if let Some(f) = focus {
                cmd.arg(format!("-tagfocus={f}"));
            }
            let out = cmd
                .arg(std::env::current_exe().unwrap())
                .arg(&file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // "Showing nodes accounting for X, Y% of Z total": X is what the focus kept.
            text.lines()
                .find_map(|l| {
                    let rest = l.split("accounting for ").nth(1)?;
                    Some(rest.split(',').next()?.to_owned())
                })
                .unwrap_or_else(|| panic!("no total in: {text}"))
        };
        let all = parse_size(&total(None));
        let upload = parse_size(&total(Some("handler=upload")));
        let tenant = parse_size(&total(Some("tenant=acme")));
        std::fs::remove_dir_all(&dir).ok();
        // 8 MiB carry handler=upload (4 in the parent, 4 in the child), 4 MiB tenant=acme, out
        // of at least 12 MiB; sampling error a few percent.
        assert!(
            (6.5..10.0).contains(&upload),
            "handler=upload: {upload} MB of {all}"
        );
        assert!(
            (3.0..5.5).contains(&tenant),
            "tenant=acme: {tenant} MB of {all}"
        );
        assert!(all >= 10.0, "all: {all} MB");
    } else {
        eprintln!("go not installed: -tagfocus is not checked");
    }
    free(upload);
    free(upload_child);
    free(plain);
    tessera::profile::set_rate(tessera::profile::DEFAULT_RATE);
}

/// pprof's "12.34MB" / "567.8kB" as MB.
fn parse_size(text: &str) -> f64 {
    let text = text.trim();
    let (num, scale) = if let Some(n) = text.strip_suffix("MB") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("kB") {
        (n, 1.0 / 1024.0)
    } else if let Some(n) = text.strip_suffix("GB") {
        (n, 1024.0)
    } else if let Some(n) = text.strip_suffix('B') {
        (n, 1.0 / (1024.0 * 1024.0))
    } else {
        (text, 1.0)
    };
    num.parse::<f64>().unwrap_or(0.0) * scale
}
