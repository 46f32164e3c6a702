//! The runner's scheduler comparison (`tessera-bench --sched`): every workload for every
//! peer in interleaved repetitions, the medians in a table with the ratios against Go, may,
//! tokio and crossbeam-channel, then the parked and timers figures.

use super::channels::{
    SelectWidth, crossbeam_chan_buffered, crossbeam_select, tessera_chan_buffered, tessera_select,
};
use super::coroutines::{
    may_ping_pong, may_spawn_join, may_yield, tessera_ping_pong, tessera_spawn_all,
    tessera_spawn_join, tessera_yield, tokio_ping_pong, tokio_spawn_all, tokio_spawn_join,
    tokio_yield,
};
use super::external::{External, GROUPS, Programs, USER_CRATE};
use super::parked::PARKED_FLAG;
use super::select_many::{SELECT_MSGS, tessera_select_many};
use super::{may_run, tessera_rt, tokio_ct, tokio_mt};
use crate::stats::median;
use std::process::Command;

/// The scheduler peers, as columns. `user` is tessera-sched built the way a user builds
/// it (`benches/sched-user`: its own crate, cargo's default release profile, the system
/// allocator); `tessera` is the runner's own build (thin LTO, one codegen unit, Tessera as
/// the global allocator). `user` and `go` are separate programs (`external_figures`).
/// `crossbeam` is crossbeam-channel on OS threads, for the channel rows only.
const PEERS: [&str; 7] = [
    "tessera",
    "user",
    "go",
    "may",
    "tokio-mt",
    "tokio-ct",
    "crossbeam",
];
const TESSERA: usize = 0;
const USER: usize = 1;
const GO: usize = 2;
const MAY: usize = 3;
const TOKIO_MT: usize = 4;
const TOKIO_CT: usize = 5;
const CROSSBEAM: usize = 6;

/// (workload, iterations per repetition). `spawn-all-<N>-<P>p`: rounds of N coroutines
/// all spawned before any is joined (issue #17), on P processors, at least 100,000 spawns
/// per repetition. `chan-buffered`, `select-2` and `select-8` (issue #17) run on 2 Ps, ns
/// per message.
const WORKLOADS: [(&str, u64); 14] = [
    ("spawn-join", 1_000_000),
    ("spawn-all-1k-2p", 100_000),
    ("spawn-all-100k-2p", 100_000),
    ("spawn-all-1m-2p", 1_000_000),
    ("spawn-all-1k-1p", 100_000),
    ("spawn-all-100k-1p", 100_000),
    ("spawn-all-1m-1p", 1_000_000),
    ("ping-pong-1p", 200_000),
    ("ping-pong-2p", 200_000),
    ("yield", 2_000_000),
    ("chan-buffered", 1_000_000),
    ("select-2", 200_000),
    ("select-8", 200_000),
    ("select-many", SELECT_MSGS),
];

/// The spawn-all counts, as the reference programs take them.
pub(super) const SPAWN_ALL_COUNTS: [&str; 3] = ["1000", "100000", "1000000"];

/// (N, processors) of a `spawn-all-<N>-<P>p` workload.
fn spawn_all_shape(workload: &str) -> Option<(u64, usize)> {
    let rest = workload.strip_prefix("spawn-all-")?;
    let (count, procs) = rest.split_once('-')?;
    let n = match count {
        "1k" => 1000,
        "100k" => 100_000,
        "1m" => 1_000_000,
        _ => return None,
    };
    let procs = procs.strip_suffix('p')?.parse().ok()?;
    Some((n, procs))
}

/// ns per operation of `peer` on `workload` (one repetition), or `None` if the peer has
/// no such configuration (tokio-ct on two Ps, tokio-mt on one; may's spawn-all, whose
/// worker count is fixed and whose stacks are a fresh mapping each) or runs as a program of
/// its own (`user`, `go`).
fn measure(workload: &str, peer: &str, iters: u64, rts: &Runtimes) -> Option<f64> {
    if let Some((n, procs)) = spawn_all_shape(workload) {
        let d = match (peer, procs) {
            ("tessera", 1) => rts.t1.block_on(move || tessera_spawn_all(n, iters)),
            ("tessera", _) => rts.t2.block_on(move || tessera_spawn_all(n, iters)),
            ("tokio-ct", 1) => rts.ct.block_on(tokio_spawn_all(n, iters)),
            ("tokio-mt", 2) => rts
                .mt
                .block_on(async move { tokio::spawn(tokio_spawn_all(n, iters)).await.unwrap() }),
            _ => return None,
        };
        return Some(d.as_nanos() as f64 / (iters.div_ceil(n) * n) as f64);
    }
    let d = match (workload, peer) {
        ("spawn-join", "tessera") => rts.t2.block_on(move || tessera_spawn_join(iters)),
        ("spawn-join", "may") => may_run(move || may_spawn_join(iters)),
        ("spawn-join", "tokio-mt") => rts
            .mt
            .block_on(async move { tokio::spawn(tokio_spawn_join(iters)).await.unwrap() }),
        ("spawn-join", "tokio-ct") => rts.ct.block_on(tokio_spawn_join(iters)),
        ("ping-pong-1p", "tessera") => rts.t1.block_on(move || tessera_ping_pong(iters)),
        ("ping-pong-2p", "tessera") => rts.t2.block_on(move || tessera_ping_pong(iters)),
        ("ping-pong-1p" | "ping-pong-2p", "may") => may_run(move || may_ping_pong(iters)),
        ("ping-pong-1p", "tokio-ct") => rts.ct.block_on(tokio_ping_pong(iters)),
        ("ping-pong-2p", "tokio-mt") => rts
            .mt
            .block_on(async move { tokio::spawn(tokio_ping_pong(iters)).await.unwrap() }),
        ("yield", "tessera") => rts.t1.block_on(move || tessera_yield(iters)),
        ("yield", "may") => may_run(move || may_yield(iters)),
        ("yield", "tokio-ct") => rts.ct.block_on(tokio_yield(iters)),
        ("select-many", "tessera") => rts.t2.block_on(move || tessera_select_many(iters)),
        ("chan-buffered", "tessera") => rts.t2.block_on(move || tessera_chan_buffered(iters)),
        ("chan-buffered", "crossbeam") => crossbeam_chan_buffered(iters),
        ("select-2", "tessera") => rts
            .t2
            .block_on(move || tessera_select(SelectWidth::Two, iters)),
        ("select-8", "tessera") => rts
            .t2
            .block_on(move || tessera_select(SelectWidth::Eight, iters)),
        ("select-2", "crossbeam") => crossbeam_select(SelectWidth::Two, iters),
        ("select-8", "crossbeam") => crossbeam_select(SelectWidth::Eight, iters),
        _ => return None,
    };
    Some(d.as_nanos() as f64 / iters as f64)
}

struct Runtimes {
    t1: tessera_sched::Runtime,
    t2: tessera_sched::Runtime,
    mt: tokio::runtime::Runtime,
    ct: tokio::runtime::Runtime,
}

/// The hidden flag of the comparison's child process.
pub const CHILD_FLAG: &str = "--sched-child";

/// `tessera-bench --sched`: runs the comparison (`run_here`) in a child process that
/// allocates through Tessera (`global.rs`), as the criterion bench does. Returns the exit
/// code.
pub fn run(full: bool, reps: Option<usize>) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("tessera-bench: cannot find its own executable: {e}");
            return 1;
        }
    };
    let mut child = Command::new(exe);
    child.arg(CHILD_FLAG).env(crate::global::ENV, "tessera");
    if full {
        child.arg("--full");
    }
    if let Some(reps) = reps {
        child.arg("--reps").arg(reps.to_string());
    }
    match child.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("tessera-bench: cannot start the scheduler comparison: {e}");
            1
        }
    }
}

/// The comparison itself: every scheduler workload for every peer (interleaved
/// repetitions, median shown), then the ratios against Go, may and tokio, and the parked
/// figures (each in a process of its own). Returns the exit code.
pub fn run_here(full: bool, reps: Option<usize>) -> i32 {
    let reps = reps.unwrap_or(if full { 11 } else { 5 });
    let parked: &[usize] = if full {
        &[100_000, 1_000_000]
    } else {
        &[100_000]
    };
    println!(
        "scheduler workloads: {reps} interleaved repetitions, median (ns per operation); \
         the runner's Rust peers allocate through {}",
        if crate::global::is_tessera() {
            "Tessera"
        } else {
            "the system allocator"
        }
    );
    let rts = Runtimes {
        t1: tessera_rt(1),
        t2: tessera_rt(2),
        mt: tokio_mt(2),
        ct: tokio_ct(),
    };
    let (mut table, external) = measure_interleaved(reps, &rts, parked);
    fill_external_columns(&mut table, &external);
    print_table(&table);
    for (who, figures) in [("go", &external.go), ("user", &external.user)] {
        if let Err(why) = figures {
            println!("{who}: {why}");
        }
    }
    drop(rts);
    print_tessera_parked(parked);
    for line in &external.parked {
        println!("{line}");
    }
    println!();
    let go_bin = external
        .go
        .is_ok()
        .then(|| crate::paths::report_dir().join("go-sched"));
    crate::sched_timers::compare(reps.min(5), go_bin.as_deref());
    0
}

/// The comparison's table: per workload, the median ns/op of each peer, in `PEERS` order
/// (`None`: no figure).
type Table = Vec<(&'static str, Vec<Option<f64>>)>;

/// Measures every workload, one group of the external programs' workloads at a time
/// (`external::GROUPS`): for the runner's own peers, one warm-up round and the first half
/// of `reps` rounds with the peers interleaved; then Go's program and the user crate on
/// the group; then the other half of the rounds. The external programs' figures are thus
/// taken between the runner's own, within the same minute, instead of after all of them.
fn measure_interleaved(reps: usize, rts: &Runtimes, parked: &[usize]) -> (Table, External) {
    let mut programs = Programs::build();
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); PEERS.len()]; WORKLOADS.len()];
    let first_half = reps.div_ceil(2);
    for (g, group) in GROUPS.iter().enumerate() {
        let rows: Vec<usize> = WORKLOADS
            .iter()
            .enumerate()
            .filter(|(_, (w, _))| group.rows.contains(w))
            .map(|(i, _)| i)
            .collect();
        measure_rounds(&rows, 0..=first_half, rts, &mut samples);
        programs.run_group(g);
        measure_rounds(&rows, first_half + 1..=reps, rts, &mut samples);
    }
    let table = WORKLOADS
        .iter()
        .zip(&samples)
        .map(|(&(workload, _), s)| (workload, s.iter().map(|s| median(s)).collect()))
        .collect();
    (table, programs.finish(parked))
}

/// Runs rounds `rounds` of the workloads at `rows` for every runner peer, interleaved;
/// round 0 is the warm-up, not kept.
fn measure_rounds(
    rows: &[usize],
    rounds: std::ops::RangeInclusive<usize>,
    rts: &Runtimes,
    samples: &mut [Vec<Vec<f64>>],
) {
    for &row in rows {
        let (workload, iters) = WORKLOADS[row];
        for round in rounds.clone() {
            for (i, peer) in PEERS.iter().enumerate() {
                if let Some(ns) = measure(workload, peer, iters, rts)
                    && round > 0
                {
                    samples[row][i].push(ns);
                }
            }
        }
    }
}

/// Puts the figures of Go's programs and of the user-build crate into their columns.
fn fill_external_columns(table: &mut Table, external: &External) {
    for (column, figures) in [(GO, &external.go), (USER, &external.user)] {
        if let Ok(ns) = figures {
            for (workload, row) in table.iter_mut() {
                row[column] = ns
                    .iter()
                    .find(|(name, _)| name == workload)
                    .map(|&(_, v)| v);
            }
        }
    }
}

/// Prints the table, the ratios of tessera to each peer beside each row, and the legend.
fn print_table(table: &Table) {
    print!("{:<18}", "workload");
    for peer in PEERS {
        print!("{peer:>10}");
    }
    println!("   tessera/go  user/go  tessera/may  tessera/tokio  tessera/xbeam");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for (workload, row) in table {
        print!("{workload:<18}");
        for v in row {
            print!("{:>10}", cell(*v));
        }
        let ratio = |ours: Option<f64>, peer: Option<f64>| match (ours, peer) {
            (Some(t), Some(p)) => format!("{:.2}", t / p),
            _ => "-".to_string(),
        };
        let tokio = row[TOKIO_MT].or(row[TOKIO_CT]);
        println!(
            "   {:>10}  {:>7}  {:>11}  {:>13}  {:>13}",
            ratio(row[TESSERA], row[GO]),
            ratio(row[USER], row[GO]),
            ratio(row[TESSERA], row[MAY]),
            ratio(row[TESSERA], tokio),
            ratio(row[TESSERA], row[CROSSBEAM])
        );
    }
    println!(
        "(ratio < 1: tessera takes less time; tessera: this runner's build (thin LTO, Tessera \
         as the global allocator), user: {USER_CRATE} (cargo's default release profile, the \
         system allocator) and go each print the median of their own repetitions, run \
         between the runner's rounds of the same workloads; tokio: tokio-mt where it has a figure, else \
         tokio-ct; crossbeam: crossbeam-channel on OS threads, channel rows only)"
    );
}

/// Runs tessera's parked workload for each count in `parked`, each in a child process of
/// its own (`parked.rs`), and prints its lines.
fn print_tessera_parked(parked: &[usize]) {
    let exe = std::env::current_exe();
    for &n in parked {
        match &exe {
            Ok(exe) => match Command::new(exe)
                .arg(PARKED_FLAG)
                .arg(n.to_string())
                .output()
            {
                Ok(out) if out.status.success() => {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        println!("tessera  {line}");
                    }
                }
                Ok(out) => println!(
                    "tessera  parked {n}: failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => println!("tessera  parked {n}: {e}"),
            },
            Err(e) => println!("tessera  parked {n}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_in_exactly_one_external_group() {
        for (workload, _) in WORKLOADS {
            let groups = GROUPS.iter().filter(|g| g.rows.contains(&workload)).count();
            assert_eq!(groups, 1, "{workload} is in {groups} groups");
        }
        for group in &GROUPS {
            for row in group.rows {
                assert!(
                    WORKLOADS.iter().any(|(w, _)| w == row),
                    "group row {row} is not a workload"
                );
            }
        }
    }
}
