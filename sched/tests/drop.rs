//! Dropping a runtime releases everything (issue #14, item 3): the coroutines it still
//! has are unwound (their closures and what they own dropped, their joiners told
//! `Cancelled`), their stacks go back, and the runtime's epoll and eventfd are closed.
//!
//! The only test of its binary that measures the process (RSS, descriptors); every test
//! here holds `SERIAL`, so that no other test's runtime moves the figures.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tessera_sched::{JoinError, Runtime, WaitReason, chan, select, spawn, yield_now};

/// One test of this binary at a time (see the file comment).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts the drops of the values that coroutines own.
struct Owned(Arc<AtomicUsize>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> usize {
    tessera_stacks::process_rss_kib().unwrap()
}

/// Waits (without a deadline: the watchdog guards) until `n` coroutines are parked.
fn until_parked(rt: &Runtime, n: usize) {
    while rt.stats().parked < n {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One runtime with `n` coroutines parked receiving on a channel nobody sends to, dropped.
/// Checks that their closures were dropped and their joiners told.
fn drop_with_parked(n: usize) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = chan::bounded::<()>(0);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (rx, owned) = (rx.clone(), Owned(drops.clone()));
            rt.spawn(move || {
                let _owned = owned;
                let _ = rx.recv();
            })
        })
        .collect();
    until_parked(&rt, n);
    drop(rt);
    assert_eq!(drops.load(Ordering::Relaxed), n, "every closure is dropped");
    for h in handles {
        assert!(matches!(h.join(), Err(JoinError::Cancelled)));
    }
    // Nobody was woken: a send now finds no receiver.
    assert!(tx.try_send(()).is_err());
}

#[test]
fn dropping_runtimes_with_parked_coroutines_releases_stacks_and_descriptors() {
    const RUNTIMES: usize = 50;
    const PARKED: usize = 2_000;
    let _serial = serial();
    let _w = common::Watchdog::new("drop", 600);
    // The first runtime warms up what stays for the process (stack pools, allocator
    // caches, the timer thread's heap).
    drop_with_parked(PARKED);
    let (fds, rss) = (open_fds(), rss_kib());
    for _ in 0..RUNTIMES {
        drop_with_parked(PARKED);
    }
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    eprintln!(
        "after {RUNTIMES} runtimes of {PARKED} parked coroutines: fds {fds} -> {fds_after}, \
         RSS {rss} -> {rss_after} KiB"
    );
    // Leaking, this grew by two descriptors and ~7 MiB per runtime (+100 fds, +360 MiB).
    // Released, nothing should stay: the margins are for the test harness and allocator
    // caches, a tenth of what one leaked runtime in five would leave.
    assert!(
        fds_after <= fds + 4,
        "open descriptors grew from {fds} to {fds_after}"
    );
    assert!(
        rss_after <= rss + (32 << 10),
        "RSS grew from {rss} KiB to {rss_after} KiB"
    );
}

#[test]
fn a_dropped_runtime_unwinds_coroutines_in_every_state() {
    let _serial = serial();
    let _w = common::Watchdog::new("drop states", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let owned = || Owned(drops.clone());
    let (_tx, rx) = chan::bounded::<u8>(0);
    let mut handles = Vec::new();
    // Parked on a channel, asleep, and joining a parked coroutine.
    let (o, rx2) = (owned(), rx.clone());
    handles.push(
        tessera_sched::Spawn::new()
            .name("drop-recv")
            .spawn_on(&rt, move || {
                let _o = o;
                let _ = rx2.recv();
            }),
    );
    let o = owned();
    handles.push(
        tessera_sched::Spawn::new()
            .name("drop-sleep")
            .spawn_on(&rt, move || {
                let _o = o;
                tessera_sched::sleep(Duration::from_secs(3600));
            }),
    );
    let (o, o2, rx3) = (owned(), owned(), rx.clone());
    handles.push(
        tessera_sched::Spawn::new()
            .name("drop-join")
            .spawn_on(&rt, move || {
                let _o = o;
                let inner = spawn(move || {
                    let _o = o2;
                    let _ = rx3.recv();
                });
                let _ = inner.join();
            }),
    );
    // Runnable: yields for ever.
    let o = owned();
    handles.push(rt.spawn(move || {
        let _o = o;
        loop {
            yield_now();
        }
    }));
    let owners = 5;
    let waiting = [
        ("drop-recv", WaitReason::ChanRecv),
        ("drop-sleep", WaitReason::Sleep),
        ("drop-join", WaitReason::Join),
    ];
    rt.block_on(move || {
        for (name, reason) in waiting {
            common::until_waiting(name, reason, None);
        }
    });
    drop(rt);
    assert_eq!(drops.load(Ordering::Relaxed), owners);
    for h in handles {
        assert!(matches!(h.join(), Err(JoinError::Cancelled)));
    }
}

/// Coroutines parked in a `select!` (blocking, or with a `default(timeout)` that will not
/// come) and in blocking sends, when their runtime is dropped. Their waiter nodes live in
/// their frames: the unwinding must take every node off its channel queue before the stack
/// is freed, since the channels outlive the runtime here. A node left behind is found by
/// the waiter's drop (a debug assertion, aborting inside the unwinding), else by the
/// operations and drops below, which pop it from freed memory.
#[test]
fn a_dropped_runtime_takes_selects_and_blocked_sends_off_the_channel_queues() {
    const EACH: usize = 16;
    let _serial = serial();
    let _w = common::Watchdog::new("drop selects", 120);
    let rt = Runtime::builder().procs(2).build().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    // Nobody sends to `a`, `b`, `c` or receives from `d` and `full` (whose one slot is
    // taken), outside the coroutines below.
    let (tx_a, rx_a) = chan::bounded::<Owned>(0);
    let (tx_b, rx_b) = chan::bounded::<Owned>(0);
    let (tx_c, rx_c) = chan::bounded::<Owned>(0);
    let (tx_d, rx_d) = chan::bounded::<Owned>(0);
    let (tx_full, rx_full) = chan::bounded::<Owned>(1);
    assert!(tx_full.try_send(Owned(drops.clone())).is_ok());
    let mut handles = Vec::new();
    for _ in 0..EACH {
        let (o, a, b, c) = (
            Owned(drops.clone()),
            rx_a.clone(),
            rx_b.clone(),
            rx_c.clone(),
        );
        handles.push(rt.spawn(move || {
            let _o = o;
            select! {
                recv(a) -> _ => unreachable!("nobody sends on a"),
                recv(b) -> _ => unreachable!("nobody sends on b"),
                recv(c) -> _ => unreachable!("nobody sends on c"),
            }
        }));
        let (o, v) = (Owned(drops.clone()), Owned(drops.clone()));
        let (a, b, d) = (rx_a.clone(), rx_b.clone(), tx_d.clone());
        handles.push(rt.spawn(move || {
            let _o = o;
            select! {
                recv(a) -> _ => unreachable!("nobody sends on a"),
                recv(b) -> _ => unreachable!("nobody sends on b"),
                send(d, v) -> _ => unreachable!("nobody receives on d"),
                default(Duration::from_secs(3600)) => unreachable!("the runtime goes first"),
            }
        }));
        let (o, v, d) = (Owned(drops.clone()), Owned(drops.clone()), tx_d.clone());
        handles.push(rt.spawn(move || {
            let _o = o;
            let _ = d.send(v);
            unreachable!("nobody receives on d");
        }));
        let (o, v, full) = (Owned(drops.clone()), Owned(drops.clone()), tx_full.clone());
        handles.push(rt.spawn(move || {
            let _o = o;
            let _ = full.send(v);
            unreachable!("nobody receives on full");
        }));
    }
    until_parked(&rt, handles.len());
    drop(rt);
    // Each coroutine's closure, and the values of the blocked sends and the send arms.
    assert_eq!(drops.load(Ordering::Relaxed), 7 * EACH);
    for h in handles {
        assert!(matches!(h.join(), Err(JoinError::Cancelled)));
    }
    // No receiver or sender is left waiting on any queue.
    for tx in [&tx_a, &tx_b, &tx_c] {
        assert!(matches!(
            tx.try_send(Owned(drops.clone())),
            Err(chan::TrySendError::Full(_))
        ));
    }
    assert!(matches!(rx_d.try_recv(), Err(chan::TryRecvError::Empty)));
    assert!(rx_full.try_recv().is_ok());
    assert!(matches!(rx_full.try_recv(), Err(chan::TryRecvError::Empty)));
    assert_eq!(drops.load(Ordering::Relaxed), 7 * EACH + 4);
    // Closing drains both queues of each channel, and a channel's drop asserts that they
    // are empty (debug builds).
    drop((tx_a, tx_b, tx_c, tx_d, tx_full));
    drop((rx_a, rx_b, rx_c, rx_d, rx_full));
}
