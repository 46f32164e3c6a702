//! The netpoller and sockets: many connections with their data checked, deadlines and
//! timeouts, peer resets and half-closes, UDP, and sockets used from plain threads.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_sched::net::{TcpListener, TcpStream, UdpSocket};
use tessera_sched::{Runtime, Spawn, WaitReason, sleep, spawn};

/// An echo server coroutine on an ephemeral port; returns its address.
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    spawn(move || {
        loop {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// `n` messages of `len` bytes, each different, through one connection.
fn check_echo(mut c: impl Read + Write, id: usize, n: usize, len: usize) {
    let mut msg = vec![0u8; len];
    let mut back = vec![0u8; len];
    for i in 0..n {
        for (k, b) in msg.iter_mut().enumerate() {
            *b = (id * 131 + i * 17 + k) as u8;
        }
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(msg, back, "connection {id}, message {i}");
    }
}

#[test]
fn many_concurrent_connections_echo_their_data() {
    let _w = common::Watchdog::new("many_concurrent_connections", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let addr = echo_server();
        let clients: Vec<_> = (0..300)
            .map(|id| {
                spawn(move || {
                    let c = TcpStream::connect(addr).unwrap();
                    c.set_nodelay(true).unwrap();
                    // Sizes past the socket buffer make writes park too.
                    let len = if id % 10 == 0 { 300_000 } else { 64 };
                    let n = if id % 10 == 0 { 3 } else { 50 };
                    check_echo(c, id, n, len);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    });
}

#[test]
fn plain_threads_use_the_same_sockets() {
    let _w = common::Watchdog::new("plain_threads", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let addr = rt.block_on(echo_server);
    let threads: Vec<_> = (0..8)
        .map(|id| {
            std::thread::spawn(move || {
                // Outside a runtime the sockets wait in poll(2).
                let c = TcpStream::connect(addr).unwrap();
                check_echo(&c, id, 100, 64);
                c.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
                let t = Instant::now();
                let e = (&c).read(&mut [0u8; 8]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::TimedOut);
                assert!(t.elapsed() >= Duration::from_millis(30));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn read_deadline_and_timeout_fail_with_timed_out_and_the_socket_stays_usable() {
    let _w = common::Watchdog::new("deadlines", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let addr = echo_server();
        let c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 4];

        let t = Instant::now();
        c.set_read_deadline(Some(t + Duration::from_millis(50)));
        let e = (&c).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        // Never early; how late is up to the machine's load (an ignored deadline would
        // hang until the watchdog).
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        // Still passed: fails at once.
        assert_eq!((&c).read(&mut buf).unwrap_err().kind(), ErrorKind::TimedOut);
        c.set_read_deadline(None);

        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(c.read_timeout(), Some(Duration::from_millis(20)));
        assert_eq!((&c).read(&mut buf).unwrap_err().kind(), ErrorKind::TimedOut);
        assert_eq!(
            c.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        c.set_read_timeout(None).unwrap();

        // The connection still works after timeouts.
        check_echo(&c, 1, 10, 64);
    });
}

/// A coroutine named `name` that reads once and reports the error kind and when it ended.
fn spawn_reader(
    name: &str,
    c: Arc<TcpStream>,
) -> tessera_sched::JoinHandle<(Result<usize, ErrorKind>, Instant)> {
    Spawn::new().name(name).spawn(move || {
        let r = (&*c).read(&mut [0u8; 4]);
        (r.map_err(|e| e.kind()), Instant::now())
    })
}

#[test]
fn a_deadline_set_by_another_coroutine_wakes_a_blocked_reader() {
    let _w = common::Watchdog::new("deadline_from_another", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let addr = echo_server();
        let c = Arc::new(TcpStream::connect(addr).unwrap());
        // Without a deadline the reader waits for ever, so once it is seen waiting it is
        // still waiting when the deadline comes.
        let reader = spawn_reader("reader-woken-by-deadline", c.clone());
        common::until_waiting("reader-woken-by-deadline", WaitReason::IoRead, None);
        // A deadline already in the past wakes the reader now (Go's SetReadDeadline).
        let set = Instant::now();
        c.set_read_deadline(Some(set));
        let (r, ended) = reader.join().unwrap();
        assert_eq!(r, Err(ErrorKind::TimedOut));
        assert!(ended >= set);

        // A deadline moved later while a reader waits: the reader waits for the new one.
        // The case holds only if the reader waits and the move lands before the first
        // deadline passes; a loaded machine may stall us past it, and then the round
        // proves nothing and is run again with more room.
        let mut room = Duration::from_millis(20);
        loop {
            let first = Instant::now() + room;
            c.set_read_deadline(Some(first));
            let reader = spawn_reader("reader-of-a-moved-deadline", c.clone());
            let waiting = common::until_waiting(
                "reader-of-a-moved-deadline",
                WaitReason::IoRead,
                Some(first),
            );
            let later = first + Duration::from_millis(60);
            c.set_read_deadline(Some(later));
            let moved_in_time = waiting && Instant::now() < first;
            let (r, ended) = reader.join().unwrap();
            assert_eq!(r, Err(ErrorKind::TimedOut));
            if moved_in_time {
                assert!(
                    ended >= later,
                    "the reader gave up {:?} before the moved deadline",
                    later - ended
                );
                break;
            }
            room *= 2;
        }
    });
}

#[test]
fn accept_deadline_and_connect_errors() {
    let _w = common::Watchdog::new("accept_connect", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
        assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::TimedOut);

        // A port nobody listens on: refused, not hung.
        let (_held, closed) = common::refusing_addr();
        let e = TcpStream::connect_timeout(&closed, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        let e = TcpStream::connect(closed).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let c = TcpStream::connect_timeout(&a, Duration::from_secs(5)).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
    });
}

#[test]
fn write_deadline_fails_a_writer_the_peer_never_reads() {
    let _w = common::Watchdog::new("write_deadline", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        c.set_write_deadline(Some(Instant::now() + Duration::from_millis(50)));
        let chunk = vec![7u8; 1 << 16];
        let mut sent = 0usize;
        let e = loop {
            match (&c).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(sent > 0, "the socket buffers took some data first");
    });
}

#[test]
fn half_close_and_peer_reset() {
    let _w = common::Watchdog::new("half_close_reset", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Half-close: the client stops writing; the server reads to EOF, then answers on
        // the half that is still open.
        let server = spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&(got.len() as u32).to_le_bytes()).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            // Reset: the next client closes with SO_LINGER 0.
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 16];
            let mut first = true;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof),
                    Ok(_) => first = false,
                    Err(e) => {
                        return if first {
                            Err(ErrorKind::Other)
                        } else {
                            Ok(e.kind())
                        };
                    }
                }
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[1u8; 1000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, 1000u32.to_le_bytes());

        let c = TcpStream::connect(addr).unwrap();
        (&c).write_all(b"x").unwrap();
        sleep(Duration::from_millis(20));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: a valid option struct on an open socket.
        let r = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                core::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        drop(c);
        assert_eq!(server.join().unwrap(), Ok(ErrorKind::ConnectionReset));
    });
}

#[test]
fn udp_round_trips_and_recv_deadline() {
    let _w = common::Watchdog::new("udp", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let saddr = server.local_addr().unwrap();
        let echo = spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..100 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(saddr).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..100u32 {
            c.send(&i.to_le_bytes()).unwrap();
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], i.to_le_bytes());
        }
        echo.join().unwrap();
        c.set_read_deadline(Some(Instant::now() + Duration::from_millis(20)));
        assert_eq!(c.recv(&mut buf).unwrap_err().kind(), ErrorKind::TimedOut);
    });
}

#[test]
fn idle_runtime_wakes_for_io_and_timers_together() {
    // With every coroutine parked on a socket or a timer, the idle M waits in epoll with
    // the next timer as its timeout: both kinds of wake-up must arrive.
    let _w = common::Watchdog::new("io_and_timers", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sleeper = spawn(|| {
            let t = Instant::now();
            for _ in 0..10 {
                sleep(Duration::from_millis(3));
            }
            t.elapsed()
        });
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(15));
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
        });
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        let slept = sleeper.join().unwrap();
        assert!(slept >= Duration::from_millis(30), "{slept:?}");
        writer.join().unwrap();
    });
}

#[test]
fn end_of_file_after_a_short_read_is_not_missed() {
    // The peer's data and FIN arrive while the reader is parked, often as one edge; the
    // read that takes the data is short, and the next must still see end-of-file rather
    // than wait for an edge that will never come.
    let _w = common::Watchdog::new("eof_after_short_read", 60);
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| {
        for round in 0..20 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                c.write_all(&[round as u8; 100]).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).unwrap();
            });
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1000];
            let mut got = 0;
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => got += n,
                }
            }
            assert_eq!(got, 100);
            drop(s);
            peer.join().unwrap();
        }
    });
}

#[test]
fn a_socket_outlives_its_runtime_and_works_in_the_next() {
    // Registered with runtime A's epoll, then used in runtime B, whose epoll may well get
    // the same descriptor number A's had: the socket must register again, not trust the
    // number.
    let _w = common::Watchdog::new("socket_outlives_runtime", 60);
    let (server, client) = {
        let a = Runtime::builder().procs(1).build().unwrap();
        a.block_on(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            // A read that parks registers `s` with A's epoll.
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            assert_eq!(
                (&s).read(&mut [0u8; 4]).unwrap_err().kind(),
                ErrorKind::TimedOut
            );
            s.set_read_timeout(None).unwrap();
            (s, c)
        })
    };
    let b = Runtime::builder().procs(1).build().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        (&client).write_all(b"late").unwrap();
        client
    });
    let got = b.block_on(move || {
        let mut buf = [0u8; 4];
        (&server).read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&got, b"late");
    drop(writer.join().unwrap());
}

#[test]
fn a_burst_on_every_connection_at_once_is_served_on_two_ps() {
    // Each round writes to every connection before reading any echo, so the server's
    // coroutines are woken by the netpoller in batches (machine/ready.rs `ready_batch`),
    // both by an M polling between coroutines and by an idle M blocked in epoll.
    let _w = common::Watchdog::new("a_burst_on_every_connection", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let addr = rt.block_on(echo_server);
    let mut conns: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let c = std::net::TcpStream::connect(addr).unwrap();
            c.set_nodelay(true).unwrap();
            c
        })
        .collect();
    for round in 0..50usize {
        for (id, c) in conns.iter_mut().enumerate() {
            let msg = [(id * 7 + round) as u8; 64];
            c.write_all(&msg).unwrap();
        }
        for (id, c) in conns.iter_mut().enumerate() {
            let mut back = [0u8; 64];
            c.read_exact(&mut back).unwrap();
            assert_eq!(
                back,
                [(id * 7 + round) as u8; 64],
                "connection {id}, round {round}"
            );
        }
    }
}

#[test]
fn coroutines_a_netpoll_batch_wakes_still_reach_the_other_p() {
    // A batch of woken coroutines stays on the P that polled, and no M is woken for it
    // (machine/ready.rs `ready_batch`); the other P must still get some of that work,
    // however the netpoller split it (sysmon's backlog rule, or its own poll). Each
    // handler here runs without yielding until two handlers have run at the same time,
    // which needs both Ps: if the work never reached the second one, the first handler
    // would spin until the watchdog ends the test.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _w = common::Watchdog::new("a_netpoll_batch_reaches_the_other_p", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (active2, peak2) = (active.clone(), peak.clone());
    let addr = rt.block_on(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(move || {
            while let Ok((mut s, _)) = listener.accept() {
                let (active, peak) = (active2.clone(), peak2.clone());
                spawn(move || {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_err() {
                        return;
                    }
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    while peak.load(Ordering::SeqCst) < 2 {
                        std::hint::spin_loop();
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                    s.write_all(&b).unwrap();
                });
            }
        });
        addr
    });
    let mut conns: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Every handler is parked in its read before the bytes go out, so one poll can wake
    // them together. Counted in this runtime's own dump: `tessera_sched::dump()` would also
    // count the readers of the other tests' runtimes, which run at the same time.
    let reading = format!("[waiting, {}", WaitReason::IoRead.as_str());
    // The 8 handlers and the accept loop.
    while rt.dump().matches(&reading).count() < 9 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for c in &mut conns {
        c.write_all(&[7]).unwrap();
    }
    for c in &mut conns {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, [7]);
    }
    assert!(peak.load(Ordering::SeqCst) >= 2);
}
