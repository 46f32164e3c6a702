//! No file descriptor leaks: runtimes, listeners, connections (accepted, refused, reset,
//! timed out) all give their descriptors back. Its own test binary, so that no other test
//! opens descriptors meanwhile.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tessera_sched::net::{TcpListener, TcpStream, UdpSocket};
use tessera_sched::{Runtime, spawn};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn round() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // The server joins its connections' coroutines: a coroutine still parked when the
        // runtime is dropped is leaked with what it owns (runtime.rs), which would be a leak
        // by design, not the one this test looks for.
        let server = spawn(move || {
            let conns: Vec<_> = (0..50)
                .map(|_| {
                    let (mut s, _) = l.accept().unwrap();
                    spawn(move || {
                        let mut b = [0u8; 64];
                        while let Ok(n) = s.read(&mut b) {
                            if n == 0 || s.write_all(&b[..n]).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            for c in conns {
                c.join().unwrap();
            }
        });
        let clients: Vec<_> = (0..50)
            .map(|i| {
                spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    let c2 = c.try_clone().unwrap();
                    c.write_all(&[i as u8; 10]).unwrap();
                    let mut b = [0u8; 10];
                    (&c2).read_exact(&mut b).unwrap();
                    if i % 2 == 0 {
                        c.set_read_deadline(Some(Instant::now() + Duration::from_millis(5)));
                        assert!(c.read(&mut b).is_err());
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.join().unwrap();
        let (held, closed) = common::refusing_addr();
        assert!(TcpStream::connect(closed).is_err());
        drop(held);
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_deadline(Some(Instant::now()));
        assert!(u.recv(&mut [0u8; 4]).is_err());
    });
}

#[test]
fn no_descriptor_leaks() {
    let _w = common::Watchdog::new("net_fds", 120);
    // Warm up: the timer thread, the allocator and std may open descriptors once.
    round();
    let before = open_fds();
    for _ in 0..5 {
        round();
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}
