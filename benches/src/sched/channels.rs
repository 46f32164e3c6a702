//! The channel workloads: issue #17's channel rows (a buffered channel's throughput,
//! `select!` over 2 and 8 channels) against crossbeam-channel on OS threads. Issue #14's
//! select-many is `select_many.rs`.

use std::time::{Duration, Instant};

// ---------------------------------------------------------------- channel throughput

/// Capacity of the buffered channel of `chan-buffered` (issue #17).
pub const CHAN_CAP: usize = 64;

/// chan-buffered (issue #17): one producer sends `$iters` values over `bounded(CHAN_CAP)`
/// of the channel module `$chan`, started with `$spawn`; the caller receives them until
/// the channel closes. ns per message.
macro_rules! chan_buffered {
    ($chan:path, $spawn:path, $iters:expr) => {{
        use $chan as chan;
        let iters: u64 = $iters;
        let (tx, rx) = chan::bounded::<u64>(CHAN_CAP);
        let start = Instant::now();
        let producer = $spawn(move || {
            for i in 0..iters {
                tx.send(i).unwrap();
            }
        });
        let sum: u64 = rx.iter().sum();
        producer.join().unwrap();
        let el = start.elapsed();
        assert_eq!(
            sum,
            iters * iters.saturating_sub(1) / 2,
            "chan-buffered lost messages"
        );
        el
    }};
}

/// chan-buffered on the current tessera-sched runtime, the producer a coroutine.
pub fn tessera_chan_buffered(iters: u64) -> Duration {
    chan_buffered!(tessera_sched::chan, tessera_sched::spawn, iters)
}

/// chan-buffered with crossbeam-channel between two OS threads.
pub fn crossbeam_chan_buffered(iters: u64) -> Duration {
    chan_buffered!(crossbeam_channel, std::thread::spawn, iters)
}

/// The channels of `select-<k>`: k producers, each sending `per` values on a rendezvous
/// channel of its own, and a consumer in a `select!` over all k receivers until it has
/// `k * per` values (Go's reference: `selectK` in benches/go/sched). `$chan` is the channel
/// module, `$spawn` starts a producer and `$select` is the select macro; `$k` arms.
macro_rules! select_k {
    ($chan:path, $spawn:path, $select:path, $per:expr, $($i:tt)*) => {{
        use $chan as chan;
        let per: u64 = $per;
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        let mut producers = Vec::new();
        let start = Instant::now();
        $(
            let _ = $i;
            let (tx, rx) = chan::bounded::<u64>(0);
            rxs.push(rx);
            // Held until the end: a producer's drop must not close its channel, which a
            // select would then find ready (as Go's, whose producers never close).
            txs.push(tx.clone());
            producers.push($spawn(move || {
                for v in 0..per {
                    tx.send(v).unwrap();
                }
            }));
        )*
        let total = per * rxs.len() as u64;
        let mut sum = 0u64;
        for _ in 0..total {
            $select! {
                $(recv(rxs[$i]) -> v => sum += v.unwrap(),)*
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        let el = start.elapsed();
        drop(txs);
        assert_eq!(sum, rxs.len() as u64 * (per * per.saturating_sub(1) / 2), "select lost messages");
        el
    }};
}

/// How many channels a `select-<k>` row selects over: the rows that exist, so a width
/// without a row cannot be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectWidth {
    /// `select-2`.
    Two,
    /// `select-8`.
    Eight,
}

impl SelectWidth {
    fn channels(self) -> u64 {
        match self {
            Self::Two => 2,
            Self::Eight => 8,
        }
    }
}

/// select-2 or select-8 on the current tessera-sched runtime: `iters` messages in all.
pub fn tessera_select(width: SelectWidth, iters: u64) -> Duration {
    let per = iters / width.channels();
    match width {
        SelectWidth::Two => {
            select_k!(tessera_sched::chan, tessera_sched::spawn, tessera_sched::select, per, 0 1)
        }
        SelectWidth::Eight => {
            select_k!(tessera_sched::chan, tessera_sched::spawn, tessera_sched::select, per, 0 1 2 3 4 5 6 7)
        }
    }
}

/// As `tessera_select`, with crossbeam-channel and a producer thread per channel.
pub fn crossbeam_select(width: SelectWidth, iters: u64) -> Duration {
    let per = iters / width.channels();
    match width {
        SelectWidth::Two => {
            select_k!(crossbeam_channel, std::thread::spawn, crossbeam_channel::select, per, 0 1)
        }
        SelectWidth::Eight => {
            select_k!(crossbeam_channel, std::thread::spawn, crossbeam_channel::select, per, 0 1 2 3 4 5 6 7)
        }
    }
}
