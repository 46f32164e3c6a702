//! `dump()` on demand and on SIGQUIT, counters, `TESSERA_PROCS`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use tessera_sched::{Runtime, Spawn, chan};

#[test]
fn sigquit_prints_a_dump_from_a_thread() {
    // In a child process: SIGQUIT's handler is process-wide.
    if std::env::var_os("TESSERA_SCHED_SIGQUIT_CHILD").is_some() {
        let rt = Runtime::builder()
            .procs(1)
            .dump_on_sigquit(true)
            .build()
            .unwrap();
        let (_tx, rx) = chan::bounded::<()>(0);
        let _h = Spawn::new().name("sleepy").spawn_on(&rt, move || {
            let _ = rx.recv();
        });
        while rt.stats().parked == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: raising a signal at ourselves; the handler only writes to a pipe.
        unsafe { libc::raise(libc::SIGQUIT) };
        // The dump thread prints when it gets to run; the parent reads until it has the
        // dump and then closes our stdin. Exit then, without waiting on anything.
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        std::process::exit(0);
    }
    let _w = common::Watchdog::new("sigquit", 60);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sigquit_prints_a_dump_from_a_thread",
            "--exact",
            "--nocapture",
        ])
        .env("TESSERA_SCHED_SIGQUIT_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the sleepy coroutine's line has come (or the child's stderr ends): when
    // the dump thread gets to run is up to the machine, so no fixed wait would do.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut err = String::new();
    while !err.contains("\"sleepy\" [") {
        if stderr.read_line(&mut err).unwrap() == 0 {
            break;
        }
    }
    drop(child.stdin.take());
    stderr.read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {err}");
    assert!(err.contains("SIGQUIT: coroutine dump"), "{err}");
    assert!(err.contains("\"sleepy\" [waiting, chan receive"), "{err}");
    assert!(err.contains("introspect.rs"), "{err}");
}

#[test]
fn tessera_procs_sets_the_default() {
    if std::env::var_os("TESSERA_SCHED_PROCS_CHILD").is_some() {
        let rt = Runtime::new().unwrap();
        assert_eq!(rt.procs(), 3);
        assert_eq!(tessera_sched::default_procs(), 3);
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["tessera_procs_sets_the_default", "--exact"])
        .env("TESSERA_SCHED_PROCS_CHILD", "1")
        .env("TESSERA_PROCS", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_add_up() {
    let _w = common::Watchdog::new("counters", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (tx, rx) = chan::bounded::<()>(0);
    let hs: Vec<_> = (0..10)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || {
                let _ = rx.recv();
            })
        })
        .collect();
    while rt.stats().parked < 10 {
        std::thread::yield_now();
    }
    let s = rt.stats();
    assert_eq!(s.procs, 2);
    assert_eq!(s.live, 10);
    assert_eq!(s.parked, 10);
    assert!(s.spawned >= 10);
    let d = rt.dump();
    assert_eq!(d.matches("chan receive").count(), 10, "{d}");
    drop(tx);
    for h in hs {
        h.join().unwrap();
    }
    // A joined coroutine is freed by its M right after it returns.
    while rt.stats().live > 0 {
        std::thread::yield_now();
    }
}
