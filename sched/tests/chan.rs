//! Channels: ping-pong, close semantics, select fairness and timeouts, MPMC, threads.

mod common;

use std::time::Duration;

use tessera_sched::chan::{self, RecvTimeoutError, TryRecvError, TrySendError};
use tessera_sched::{Runtime, Spawn, WaitReason, select, spawn};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

#[test]
fn ping_pong_rendezvous() {
    let _w = common::Watchdog::new("ping-pong", 60);
    for procs in [1, 2] {
        let n = rt(procs).block_on(|| {
            let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
            let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
            let h = spawn(move || {
                for v in ping_rx.iter() {
                    pong_tx.send(v + 1).unwrap();
                }
            });
            let mut v = 0;
            for _ in 0..10_000 {
                ping_tx.send(v).unwrap();
                v = pong_rx.recv().unwrap();
            }
            drop(ping_tx);
            h.join().unwrap();
            v
        });
        assert_eq!(n, 10_000);
    }
}

#[test]
fn close_semantics() {
    let _w = common::Watchdog::new("close", 60);
    rt(2).block_on(|| {
        let (tx, rx) = chan::bounded::<i32>(3);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert!(tx.close());
        assert!(!tx.close(), "second close reports false");
        // Sends fail with the value back; buffered values still drain.
        assert_eq!(tx.send(3).unwrap_err().into_inner(), 3);
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        assert!(rx.recv().is_err());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

        // A blocked receiver is woken by close. (Seen blocked first: a receiver that only
        // arrived after the close would pass without testing the wake-up.)
        let (tx, rx) = chan::bounded::<i32>(0);
        let h = Spawn::new()
            .name("receiver-woken-by-close")
            .spawn(move || rx.recv());
        common::until_waiting("receiver-woken-by-close", WaitReason::ChanRecv, None);
        tx.close();
        assert!(h.join().unwrap().is_err());

        // A blocked sender gets its value back.
        let (tx, rx) = chan::bounded::<String>(0);
        let h = Spawn::new()
            .name("sender-woken-by-close")
            .spawn(move || tx.send("kept".to_string()));
        common::until_waiting("sender-woken-by-close", WaitReason::ChanSend, None);
        drop(rx); // the last receiver closes too
        assert_eq!(h.join().unwrap().unwrap_err().0, "kept");

        // Dropping the last sender closes.
        let (tx, rx) = chan::unbounded::<i32>();
        let tx2 = tx.clone();
        tx.send(5).unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx2);
        assert!(rx.recv().is_err());
    });
}

#[test]
fn try_and_timeouts() {
    let _w = common::Watchdog::new("timeouts", 60);
    rt(2).block_on(|| {
        let (tx, rx) = chan::bounded::<i32>(1);
        assert!(tx.try_send(1).is_ok());
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        assert!(tx.send_timeout(3, Duration::from_millis(2)).is_err());
        assert_eq!(rx.recv_timeout(Duration::from_millis(2)), Ok(1));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(2)),
            Err(RecvTimeoutError::Timeout)
        );
        // The timed-out waiters left the queues: the channel still works both ways.
        tx.send(4).unwrap();
        assert_eq!(rx.recv(), Ok(4));
    });
}

#[test]
fn mpmc_delivers_everything_once() {
    let _w = common::Watchdog::new("mpmc", 60);
    let sum = rt(2).block_on(|| {
        let (tx, rx) = chan::bounded::<u64>(4);
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let tx = tx.clone();
                spawn(move || {
                    for i in 0..1000 {
                        tx.send(p * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || rx.iter().sum::<u64>())
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        consumers
            .into_iter()
            .map(|c| c.join().unwrap())
            .sum::<u64>()
    });
    assert_eq!(sum, (0..4000u64).sum());
}

#[test]
fn select_is_fair_among_ready_arms() {
    let _w = common::Watchdog::new("select fairness", 60);
    let counts = rt(1).block_on(|| {
        let (t1, r1) = chan::unbounded::<()>();
        let (t2, r2) = chan::unbounded::<()>();
        let (t3, r3) = chan::bounded::<()>(1000);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            // Keep all three ready.
            let _ = t1.try_send(());
            let _ = t2.try_send(());
            let _ = t3.try_send(());
            select! {
                recv(r1) -> m => { m.unwrap(); counts[0] += 1 }
                recv(r2) -> m => { m.unwrap(); counts[1] += 1 }
                recv(r3) -> m => { m.unwrap(); counts[2] += 1 }
            }
        }
        counts
    });
    // Expected 1000 each; a fair coin is far inside these bounds (> 10 sigma).
    for c in counts {
        assert!((700..1300).contains(&c), "{counts:?}");
    }
}

#[test]
fn select_send_default_and_timeout() {
    let _w = common::Watchdog::new("select default", 60);
    rt(2).block_on(|| {
        let (tx, rx) = chan::bounded::<i32>(0);
        // Nothing ready: default.
        let got = select! {
            recv(rx) -> _ => "recv",
            default => "default",
        };
        assert_eq!(got, "default");
        // Times out.
        let got = select! {
            recv(rx) -> _ => "recv",
            default(Duration::from_millis(3)) => "timeout",
        };
        assert_eq!(got, "timeout");
        // A send arm pairs with a receiver that arrives later.
        let (tx2, rx2) = chan::bounded::<i32>(0);
        let h = spawn(move || rx2.recv().unwrap());
        let got = select! {
            send(tx2, 9) -> r => { r.unwrap(); "sent" }
            recv(rx) -> _ => "recv",
        };
        assert_eq!(got, "sent");
        assert_eq!(h.join().unwrap(), 9);
        // A closed channel is ready in select.
        drop(tx);
        select! {
            recv(rx) -> m => assert!(m.is_err()),
        }
    });
}

#[test]
fn select_in_a_loop_does_not_leak_waiters() {
    let _w = common::Watchdog::new("select loop", 60);
    rt(2).block_on(|| {
        let (data_tx, data_rx) = chan::bounded::<u32>(0);
        let (_quit_tx, quit_rx) = chan::bounded::<()>(0);
        let h = spawn(move || {
            for i in 0..5000 {
                data_tx.send(i).unwrap();
            }
        });
        let mut n = 0;
        while n < 5000 {
            select! {
                recv(data_rx) -> m => { m.unwrap(); n += 1 }
                recv(quit_rx) -> _ => unreachable!(),
            }
        }
        h.join().unwrap();
        // The quit channel's queue was cleaned each time: one more waiter, and it works.
        assert!(quit_rx.is_empty());
    });
}

#[test]
fn plain_threads_use_channels_with_coroutines() {
    let _w = common::Watchdog::new("threads", 60);
    let rt = rt(2);
    let (tx, rx) = chan::bounded::<u32>(0);
    let (back_tx, back_rx) = chan::bounded::<u32>(0);
    let h = rt.spawn(move || {
        for v in rx.iter() {
            back_tx.send(v * 2).unwrap();
        }
    });
    for i in 0..1000 {
        tx.send(i).unwrap();
        assert_eq!(back_rx.recv(), Ok(i * 2));
    }
    drop(tx);
    h.join().unwrap();
}

#[test]
fn send_happens_before_receive() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let _w = common::Watchdog::new("happens-before", 60);
    rt(2).block_on(|| {
        let cell = Arc::new(AtomicU64::new(0));
        let (tx, rx) = chan::bounded::<()>(0);
        let c = cell.clone();
        let h = spawn(move || {
            for i in 1..=2000 {
                c.store(i, Ordering::Relaxed);
                tx.send(()).unwrap();
            }
        });
        for i in 1..=2000 {
            rx.recv().unwrap();
            // A relaxed write before the send is visible after the receive.
            assert!(cell.load(Ordering::Relaxed) >= i);
        }
        h.join().unwrap();
    });
}
