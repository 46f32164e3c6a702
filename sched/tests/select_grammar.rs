//! `select!` accepts every form crossbeam-channel's `select!` accepts (issue #14): one test
//! per form. Each runs on the test thread, outside a runtime, with exactly one arm ready (or
//! none, for `default`), so each also checks that the right body ran with the right value.

use std::time::Duration;

use tessera_sched::chan::{self, Receiver, RecvError, Sender};
use tessera_sched::select;

/// A channel of capacity one holding `v`.
fn ready(v: i32) -> (Sender<i32>, Receiver<i32>) {
    let (tx, rx) = chan::bounded(1);
    tx.send(v).unwrap();
    (tx, rx)
}

/// A channel of capacity one with nothing in it.
fn idle() -> (Sender<i32>, Receiver<i32>) {
    chan::bounded(1)
}

#[test]
fn block_arm_followed_by_a_comma() {
    let (_s1, r1) = ready(1);
    let (_s2, r2) = idle();
    let got = select! {
        recv(r1) -> v => { v.unwrap() * 10 },
        recv(r2) -> w => w.unwrap()
    };
    assert_eq!(got, 10);
}

#[test]
fn block_arms_without_commas() {
    let (_s1, r1) = idle();
    let (_s2, r2) = ready(2);
    let got = select! {
        recv(r1) -> v => { v.unwrap() }
        recv(r2) -> w => { w.unwrap() + 1 }
    };
    assert_eq!(got, 3);
}

#[test]
fn expression_arms_with_a_trailing_comma() {
    let (_s1, r1) = idle();
    let (_s2, r2) = ready(4);
    let got = select! {
        recv(r1) -> v => v.unwrap(),
        recv(r2) -> w => w.unwrap() * 2,
    };
    assert_eq!(got, 8);
}

#[test]
fn expression_arms_without_a_trailing_comma() {
    let (_s1, r1) = ready(5);
    let (_s2, r2) = idle();
    let got = select! {
        recv(r1) -> v => v.unwrap() - 1,
        recv(r2) -> w => w.unwrap()
    };
    assert_eq!(got, 4);
}

#[test]
fn send_arm_with_a_result_pattern() {
    let (s1, r1) = idle();
    let (_s2, r2) = idle();
    let sent = select! {
        send(s1, 7) -> res => res.is_ok(),
        recv(r2) -> _ => false,
    };
    assert!(sent);
    assert_eq!(r1.try_recv(), Ok(7));
    // A send on a closed channel gives the value back.
    s1.close();
    let back = select! {
        send(s1, 8) -> res => res.unwrap_err().into_inner(),
    };
    assert_eq!(back, 8);
}

#[test]
fn default_with_an_expression_and_a_block() {
    let (_s, r) = idle();
    let got = select! {
        recv(r) -> _ => "recv",
        default => "default",
    };
    assert_eq!(got, "default");
    let got = select! {
        recv(r) -> _ => "recv",
        default => { "default block" }
    };
    assert_eq!(got, "default block");
}

#[test]
fn default_with_a_timeout() {
    let (_s, r) = idle();
    // A deadline that has passed: no waiting, the default body runs.
    let got = select! {
        recv(r) -> _ => 0,
        default(Duration::ZERO) => 1,
    };
    assert_eq!(got, 1);
    // A ready arm wins over a timeout however long.
    let (_s, r) = ready(3);
    let got = select! {
        recv(r) -> v => v.unwrap(),
        default(Duration::from_secs(3600)) => { -1 }
    };
    assert_eq!(got, 3);
}

#[test]
fn default_first_and_in_the_middle() {
    let (_s1, r1) = idle();
    let (_s2, r2) = ready(6);
    let got = select! {
        default => 0,
        recv(r1) -> v => v.unwrap(),
    };
    assert_eq!(got, 0);
    let got = select! {
        recv(r1) -> v => v.unwrap(),
        default(Duration::ZERO) => 0,
        recv(r2) -> w => w.unwrap(),
    };
    assert_eq!(got, 6);
}

#[test]
fn trailing_commas_in_argument_lists() {
    let (s1, r1) = ready(9);
    let got = select! {
        recv(r1,) -> v => v.unwrap(),
        default() => 0,
    };
    assert_eq!(got, 9);
    let sent = select! {
        send(s1, 10,) -> res => res.is_ok(),
        default(Duration::ZERO,) => false,
    };
    assert!(sent);
    assert_eq!(r1.try_recv(), Ok(10));
}

#[test]
fn only_a_default_case() {
    assert_eq!(select! { default => 1 }, 1);
    assert_eq!(select! { default(Duration::ZERO) => 2, }, 2);
}

#[test]
fn patterns_and_control_flow_in_bodies() {
    let (s, r) = chan::bounded::<i32>(4);
    for v in [1, 2, 3] {
        s.send(v).unwrap();
    }
    s.close();
    let mut sum = 0;
    loop {
        select! {
            recv(r) -> mut v => {
                if v == Err(RecvError) {
                    break;
                }
                v = v.map(|x| x * 100);
                sum += v.unwrap();
                continue;
            }
        }
    }
    assert_eq!(sum, 600);
    let (_s, r) = ready(1);
    let first = || -> i32 {
        select! {
            recv(r) -> _ => return 42,
            default => {}
        }
        0
    };
    assert_eq!(first(), 42);
}

#[test]
fn thirty_two_arms() {
    let chans: Vec<_> = (0..32).map(|_| idle()).collect();
    chans[31].0.send(31).unwrap();
    let r = |i: usize| &chans[i].1;
    let got = select! {
        recv(r(0)) -> v => v.unwrap(), recv(r(1)) -> v => v.unwrap(),
        recv(r(2)) -> v => v.unwrap(), recv(r(3)) -> v => v.unwrap(),
        recv(r(4)) -> v => v.unwrap(), recv(r(5)) -> v => v.unwrap(),
        recv(r(6)) -> v => v.unwrap(), recv(r(7)) -> v => v.unwrap(),
        recv(r(8)) -> v => v.unwrap(), recv(r(9)) -> v => v.unwrap(),
        recv(r(10)) -> v => v.unwrap(), recv(r(11)) -> v => v.unwrap(),
        recv(r(12)) -> v => v.unwrap(), recv(r(13)) -> v => v.unwrap(),
        recv(r(14)) -> v => v.unwrap(), recv(r(15)) -> v => v.unwrap(),
        recv(r(16)) -> v => v.unwrap(), recv(r(17)) -> v => v.unwrap(),
        recv(r(18)) -> v => v.unwrap(), recv(r(19)) -> v => v.unwrap(),
        recv(r(20)) -> v => v.unwrap(), recv(r(21)) -> v => v.unwrap(),
        recv(r(22)) -> v => v.unwrap(), recv(r(23)) -> v => v.unwrap(),
        recv(r(24)) -> v => v.unwrap(), recv(r(25)) -> v => v.unwrap(),
        recv(r(26)) -> v => v.unwrap(), recv(r(27)) -> v => v.unwrap(),
        recv(r(28)) -> v => v.unwrap(), recv(r(29)) -> v => v.unwrap(),
        recv(r(30)) -> v => v.unwrap(), recv(r(31)) -> v => v.unwrap(),
    };
    assert_eq!(got, 31);
}
