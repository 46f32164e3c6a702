//! `/debug/pprof/` over HTTP (issue #18 item 3): a server on 127.0.0.1 answers with
//! `tessera_sched::profile::http::respond`, as the HTTP example does, and `go tool pprof`
//! (when `go` is installed) reads the heap, allocs and goroutine profiles from its URLs.

mod common;

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::io::{Read, Write};

use tessera_sched::net::{TcpListener, TcpStream};
use tessera_sched::{Runtime, spawn};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const BLOCK: usize = 1024;

#[inline(never)]
fn pprof_http_site() -> usize {
    // SAFETY: a non-zero size.
    black_box(unsafe { alloc(Layout::from_size_align(BLOCK, 8).unwrap()) }) as usize
}

/// One request per connection: reads the head and its body (pprof POSTs to
/// `/debug/pprof/symbol`; closing with unread data would reset the connection), answers,
/// closes.
fn answer(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let body_len: usize = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + body_len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = text.split(' ').nth(1).unwrap_or("/");
    let r = tessera_sched::profile::http::respond(target).unwrap_or_else(|| {
        tessera_sched::profile::http::Response {
            status: 404,
            content_type: "text/plain",
            body: Vec::new(),
        }
    });
    write!(
        s,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.reason(),
        r.content_type,
        r.body.len()
    )?;
    s.write_all(&r.body)
}

#[inline(never)]
fn serve_debug_pprof(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept() else {
            continue;
        };
        spawn(move || answer(s).ok());
    }
}

// One test: the heap profiler's tables are process-wide.
#[test]
fn go_tool_pprof_reads_the_profiles_over_http() {
    let _guard = common::Watchdog::new("pprof over HTTP", 300);
    tessera::profile::set_rate(16 * 1024);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (blocks, texts) = rt.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(move || serve_debug_pprof(listener));
        // 8 MiB live at a known site: about 512 samples.
        let blocks: Vec<usize> = (0..8192).map(|_| pprof_http_site()).collect();
        // The raw answers, through the server, whether or not go is here.
        let fetch = |path: &str| {
            let path = path.to_owned();
            tessera_sched::blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut all = Vec::new();
                s.read_to_end(&mut all).unwrap();
                all
            })
        };
        let index = fetch("/debug/pprof/");
        let latency = fetch("/debug/pprof/sched_latency");
        let heap = fetch("/debug/pprof/heap");
        let texts = if common::go_installed() {
            let tmp =
                std::env::temp_dir().join(format!("tessera-pprof-http-{}", std::process::id()));
            std::fs::create_dir_all(&tmp).unwrap();
            let url = |p: &str| std::ffi::OsString::from(format!("http://{addr}/debug/pprof/{p}"));
            let tops = tessera_sched::blocking(move || {
                [
                    common::pprof_top(&url("heap"), &["-sample_index=inuse_space"], &tmp),
                    common::pprof_top(&url("allocs"), &[], &tmp),
                    common::pprof_top(&url("goroutine"), &[], &tmp),
                ]
            });
            std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("tessera-pprof-http-{}", std::process::id())),
            )
            .ok();
            Some(tops)
        } else {
            None
        };
        (blocks, (index, latency, heap, texts))
    });
    drop(rt);
    let (index, latency, heap, tops) = texts;
    let index = String::from_utf8_lossy(&index);
    assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
    assert!(index.contains("goroutine"), "{index}");
    let latency = String::from_utf8_lossy(&latency);
    assert!(
        latency.contains("tessera_sched_latency_seconds_bucket{le=\"+Inf\"}"),
        "{latency}"
    );
    let body_at = heap.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(heap[body_at..body_at + 2], [0x1f, 0x8b], "a gzip stream");

    if let Some([heap_top, allocs_top, goroutine_top]) = tops {
        assert!(heap_top.contains("Type: inuse_space"), "{heap_top}");
        let share: f64 = heap_top
            .lines()
            .find(|l| l.trim_end().ends_with("pprof_http_site"))
            .and_then(|l| l.split_whitespace().nth(4)?.strip_suffix('%')?.parse().ok())
            .unwrap_or_else(|| panic!("pprof_http_site missing:\n{heap_top}"));
        // The 8 MiB are most of what this test keeps live (its cum%).
        assert!(share > 50.0, "pprof_http_site has {share}% of:\n{heap_top}");
        assert!(allocs_top.contains("Type: alloc_space"), "{allocs_top}");
        assert!(allocs_top.contains("pprof_http_site"), "{allocs_top}");
        assert!(goroutine_top.contains("Type: goroutine"), "{goroutine_top}");
        // The accept loop, parked in `accept`, walked from where it switched out.
        assert!(
            goroutine_top.contains("serve_debug_pprof"),
            "{goroutine_top}"
        );
    } else {
        eprintln!("go not installed: go tool pprof is not run against the server");
    }
    for p in blocks {
        // SAFETY: allocated by `pprof_http_site` with this layout.
        unsafe { dealloc(p as *mut u8, Layout::from_size_align(BLOCK, 8).unwrap()) };
    }
    tessera::profile::set_rate(tessera::profile::DEFAULT_RATE);
}
