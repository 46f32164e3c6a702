//! The comparison: every server in its own child process on its own port, the one client
//! against each, rounds interleaved, and one table of medians and ratios.
//!
//! Fairness: the servers take turns within a round, and the order rotates from one round to
//! the next (round r starts at the r-th server), so none always runs first on a cold machine
//! or right after a particular neighbour; each row is the median over rounds. Each run gets
//! a fresh server process and a fresh port, so nothing carries over between runs.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_bench::report::human_rate;
use tessera_bench::stats::median;

use crate::client::{self, ClientConfig};
use crate::sys;

/// The servers, in table order: tessera-sched in the runner's build (its `echo` example:
/// thin LTO, Tessera as the global allocator) and in a user's (`user`: the
/// `benches/sched-user` crate's `echo`, cargo's default release profile, the system
/// allocator), then Go (the target's reference) and the Rust peers.
pub(crate) const SERVERS: [&str; 5] = ["tessera", "user", "go", "tokio", "may"];

/// The rows whose ratios to the peers the table shows: tessera-sched's two builds.
const OURS: [&str; 2] = ["tessera", "user"];

/// How long a server may take to print `listening on`.
const STARTUP: Duration = Duration::from_secs(10);

/// What `echo compare` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct CompareOptions {
    pub(crate) servers: Vec<&'static str>,
    pub(crate) rounds: usize,
    /// The client's shape; its address is filled in per run.
    pub(crate) client: ClientConfig,
    pub(crate) base_port: u16,
    /// Worker threads / processors of every server.
    pub(crate) workers: usize,
    pub(crate) tessera_bin: PathBuf,
    pub(crate) user_bin: PathBuf,
    pub(crate) go_bin: PathBuf,
    /// CPUs each server (and the client) is confined to, if the placement is pinned
    /// (`--pin-server`, `--pin-client`); every server gets the same.
    pub(crate) pin_server: Option<Vec<usize>>,
    pub(crate) pin_client: Option<Vec<usize>>,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Run {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Cores the server used during the measured window, in its own code and in the
    /// kernel.
    server_user: Option<f64>,
    server_sys: Option<f64>,
    /// Cores the client (this process) used during the measured window.
    client_cpu: f64,
    /// Cores everything else on the machine used meanwhile (other people's work on a shared
    /// machine, or the hypervisor's steal); large values mean a disturbed run.
    other_cpu: Option<f64>,
    /// The server's context switches per request during the measured window (all its
    /// threads), voluntary and involuntary.
    server_switches: Option<(f64, f64)>,
    /// The client's (this process's) context switches per request, the same way.
    client_switches: Option<(f64, f64)>,
}

impl Run {
    fn server_cpu(&self) -> Option<f64> {
        self.server_user.zip(self.server_sys).map(|(u, s)| u + s)
    }
}

/// A server's runs over all rounds.
#[derive(Debug)]
struct Row {
    name: &'static str,
    runs: Vec<Run>,
    failures: Vec<String>,
}

impl Row {
    fn median_of(&self, f: impl Fn(&Run) -> f64) -> Option<f64> {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
    fn rate(&self) -> Option<f64> {
        self.median_of(|r| r.requests_per_sec)
    }
    fn p50(&self) -> Option<f64> {
        self.median_of(|r| r.p50.as_secs_f64())
    }
    fn p99(&self) -> Option<f64> {
        self.median_of(|r| r.p99.as_secs_f64())
    }
    fn range(&self) -> Option<(f64, f64)> {
        let rates = self.runs.iter().map(|r| r.requests_per_sec);
        let min = rates.clone().reduce(f64::min)?;
        Some((min, rates.reduce(f64::max)?))
    }
    fn server_cpu(&self) -> Option<f64> {
        let cpu: Vec<f64> = self.runs.iter().filter_map(Run::server_cpu).collect();
        median(&cpu)
    }
    /// The server's CPU per request, user and system, in µs (medians over the runs).
    fn server_per_request(&self) -> Option<(f64, f64)> {
        let per = |f: fn(&Run) -> Option<f64>| {
            let us: Vec<f64> = self
                .runs
                .iter()
                .filter_map(|r| f(r).map(|c| c / r.requests_per_sec * 1e6))
                .collect();
            median(&us)
        };
        per(|r| r.server_user).zip(per(|r| r.server_sys))
    }
    /// The client's CPU per request in µs (median over the runs).
    fn client_per_request(&self) -> Option<f64> {
        self.median_of(|r| r.client_cpu / r.requests_per_sec * 1e6)
    }
    /// Context switches per request, voluntary and involuntary (medians over the runs), of
    /// the server (`client` false) or the client: a thread that blocks and is woken again
    /// for each few requests costs both sides a switch and a wake-up.
    fn switches_per_request(&self, client: bool) -> Option<(f64, f64)> {
        let of = |r: &Run| {
            if client {
                r.client_switches
            } else {
                r.server_switches
            }
        };
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| of(r).map(|s| s.0))
            .collect();
        let i: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| of(r).map(|s| s.1))
            .collect();
        median(&v).zip(median(&i))
    }
    fn other_cpu(&self) -> Option<f64> {
        let cpu: Vec<f64> = self.runs.iter().filter_map(|r| r.other_cpu).collect();
        median(&cpu)
    }
}

/// Runs the comparison, prints the table and writes it as Markdown; returns the exit code.
pub(crate) fn compare(options: &CompareOptions) -> i32 {
    if let Some(cpus) = &options.pin_client {
        // This thread starts the client's threads, which inherit the set; each server is
        // given its own set as it starts (`server_command`).
        if let Err(e) = sys::pin_to(cpus) {
            eprintln!("echo: cannot pin the client to CPUs {cpus:?}: {e}");
            return 2;
        }
    }
    let mut present = Vec::new();
    for &name in &options.servers {
        match missing_reason(name, options) {
            Some(why) => eprintln!("echo: skipping {name}: {why}"),
            None => present.push(name),
        }
    }
    if present.is_empty() {
        eprintln!("echo: no server to measure");
        return 1;
    }
    let mut rows: Vec<Row> = present
        .iter()
        .map(|&name| Row {
            name,
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    let n = present.len();
    for round in 0..options.rounds {
        for k in 0..n {
            let i = (round + k) % n;
            // Port 0: each server takes a free port from the kernel and says which.
            let port = match options.base_port {
                0 => 0,
                base => base as usize + round * n + i,
            };
            let Ok(port) = u16::try_from(port) else {
                eprintln!("echo: port {port} out of range; lower --base-port");
                return 2;
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let name = present[i];
            let result = measure(name, addr, options);
            match &result {
                Ok(run) => eprintln!(
                    "[round {}/{}] {name:<8} {:>8} req/s  p50 {:>9}  p99 {:>9}  cpu: server {} client {:.2} other {}  cs/req: server {} client {}",
                    round + 1,
                    options.rounds,
                    human_rate(run.requests_per_sec),
                    latency(run.p50.as_secs_f64()),
                    latency(run.p99.as_secs_f64()),
                    run.server_cpu().map_or("-".into(), |c| format!("{c:.2}")),
                    run.client_cpu,
                    run.other_cpu.map_or("-".into(), |c| format!("{c:.2}")),
                    opt(run.server_switches, switches),
                    opt(run.client_switches, switches),
                ),
                Err(why) => eprintln!(
                    "[round {}/{}] {name:<8} failed: {why}",
                    round + 1,
                    options.rounds
                ),
            }
            match result {
                Ok(run) => rows[i].runs.push(run),
                Err(why) => rows[i].failures.push(why),
            }
            // Let the killed server's sockets and threads go before the next one starts.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let table = render(&rows, options, false);
    print!("{table}");
    let markdown = render(&rows, options, true);
    let dir = tessera_bench::paths::report_dir();
    let path = dir.join("echo.md");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, markdown)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("echo: cannot write {}: {e}", path.display()),
    }
    if rows.iter().any(|r| r.runs.is_empty()) {
        1
    } else {
        0
    }
}

/// Why `name` cannot run here, if it cannot.
fn missing_reason(name: &str, options: &CompareOptions) -> Option<String> {
    match name {
        "tessera" if !options.tessera_bin.exists() => Some(format!(
            "{} not found (cargo build --release -p tessera-sched --example echo)",
            options.tessera_bin.display()
        )),
        "user" if !options.user_bin.exists() => Some(format!(
            "{} not found (cargo build --release --manifest-path benches/sched-user/Cargo.toml \
             --target-dir <target>/sched-user; benches/go/echo/compare.sh and \
             `tessera-bench --sched` build it)",
            options.user_bin.display()
        )),
        "go" if !options.go_bin.exists() => Some(format!(
            "{} not found (benches/go/echo/compare.sh builds it when `go` is installed; \
             Debian: apt-get install -y golang-go)",
            options.go_bin.display()
        )),
        _ => None,
    }
}

/// The command that starts server `name` on `addr`.
fn server_command(name: &str, addr: SocketAddr, options: &CompareOptions) -> Command {
    let workers = options.workers.to_string();
    let mut cmd = match name {
        "tessera" => {
            let mut cmd = Command::new(&options.tessera_bin);
            cmd.arg(addr.to_string()).env("TESSERA_PROCS", &workers);
            cmd
        }
        "user" => {
            let mut cmd = Command::new(&options.user_bin);
            cmd.args(["echo", &addr.to_string()])
                .env("TESSERA_PROCS", &workers);
            cmd
        }
        "go" => {
            let mut cmd = Command::new(&options.go_bin);
            cmd.arg(addr.to_string()).env("GOMAXPROCS", &workers);
            cmd
        }
        runtime => {
            let me = std::env::current_exe().unwrap_or_else(|_| "echo".into());
            let mut cmd = Command::new(me);
            cmd.args(["server", runtime, &addr.to_string(), "--workers", &workers]);
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(cpus) = options.pin_server.clone() {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook runs in the forked child before exec and only makes the one
        // system call of `pin_to` (no allocation: the set is built on its stack from the
        // moved-in list), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || sys::pin_to(&cpus));
        }
    }
    cmd
}

/// A running server child; killed when dropped, so no early return leaves one behind.
#[derive(Debug)]
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `name` on `addr` and waits for its `listening on` line; returns the address the
/// line names (the real port when `addr`'s is 0).
fn start(
    name: &str,
    addr: SocketAddr,
    options: &CompareOptions,
) -> Result<(Server, SocketAddr), String> {
    let mut child = server_command(name, addr, options)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut server = Server { child };
    let (ready, listening) = mpsc::channel();
    // Reads the server's stdout to the end, so a chatty server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.strip_prefix("listening on ") {
                let _ = ready.send(at.trim().parse::<SocketAddr>());
            }
        }
    });
    match listening.recv_timeout(STARTUP) {
        Ok(Ok(at)) => Ok((server, at)),
        Ok(Err(e)) => Err(format!("announced an address that does not parse: {e}")),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "printed no `listening on` line within {} s",
            STARTUP.as_secs()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = server
                .child
                .wait()
                .map_or("unknown status".into(), |s| s.to_string());
            Err(format!("exited before listening ({status})"))
        }
    }
}

/// One run: start the server, drive it, sample CPU over the measured window, kill it.
fn measure(name: &str, addr: SocketAddr, options: &CompareOptions) -> Result<Run, String> {
    let (server, addr) = start(name, addr, options)?;
    let pid = server.child.id();
    let config = ClientConfig {
        addr,
        ..options.client.clone()
    };
    let (warmup, window) = (config.warmup, config.duration);
    let (cpu_tx, cpu_rx) = mpsc::channel();
    let result = client::run(&config, |start| {
        std::thread::spawn(move || {
            let sample = || {
                let server = sys::process_cpu_times(pid);
                let switches = (sys::process_switches(pid), sys::own_switches());
                (
                    server,
                    sys::own_cpu_time(),
                    sys::machine_busy_time(),
                    switches,
                )
            };
            sleep_until(start + warmup);
            let before = sample();
            sleep_until(start + warmup + window);
            let after = sample();
            let cores =
                |a: Duration, b: Duration| b.saturating_sub(a).as_secs_f64() / window.as_secs_f64();
            let client = cores(before.1, after.1);
            let server = before
                .0
                .zip(after.0)
                .map(|(a, b)| (cores(a.user, b.user), cores(a.system, b.system)));
            let other = before
                .2
                .zip(after.2)
                .zip(server)
                .map(|((a, b), (u, s))| (cores(a, b) - u - s - client).max(0.0));
            let switches = (
                before
                    .3
                    .0
                    .zip(after.3.0)
                    .map(|(a, b)| sys::switches_between(&a, &b)),
                before.3.1.until(after.3.1),
            );
            let _ = cpu_tx.send((server, client, other, switches));
        });
    });
    drop(server);
    let result = result?;
    let (server_cpu, client_cpu, other_cpu, switches) = match cpu_rx.recv() {
        Ok((s, c, o, sw)) => (s, c, o, Some(sw)),
        Err(_) => (None, f64::NAN, None, None),
    };
    // Per request completed in the window (the window the switches were counted over).
    let per_request = |s: sys::Switches| {
        let n = result.requests.max(1) as f64;
        (s.voluntary as f64 / n, s.involuntary as f64 / n)
    };
    let server_switches = switches.and_then(|s| s.0).map(per_request);
    let client_switches = switches.map(|s| per_request(s.1));
    let (server_user, server_sys) = server_cpu.unzip();
    let quantile = |q| {
        result
            .latencies
            .quantile(q)
            .ok_or("no request completed in the window")
    };
    Ok(Run {
        requests_per_sec: result.requests_per_sec(),
        p50: quantile(0.50)?,
        p99: quantile(0.99)?,
        server_user,
        server_sys,
        client_cpu,
        other_cpu,
        server_switches,
        client_switches,
    })
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

/// `0.00123` s → `"1.23 ms"`, `0.000456` → `"456 µs"`.
fn latency(secs: f64) -> String {
    if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

fn opt<T>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".into(), f)
}

/// The table of medians and the ratios of tessera to each peer, for the terminal or (with
/// `markdown`) for `echo.md`.
fn render(rows: &[Row], options: &CompareOptions, markdown: bool) -> String {
    let mut out = String::new();
    let heading = heading(options);
    let header = [
        "server",
        "req/s",
        "req/s range",
        "p50",
        "p99",
        "server cpu",
        "server µs/req",
        "client µs/req",
        "server cs/req",
        "client cs/req",
        "other cpu",
    ];
    let cells = figure_rows(rows);
    let ratios = ratio_rows(rows);
    let ratio_header = ["ratio", "req/s", "p99", ""];
    if markdown {
        out.push_str("# echo\n\n");
        out.push_str(&heading);
        out.push_str(
            ". CPU in cores used during the measured window; µs/req: CPU time per request, \
             the server's split user+system (its own code + the kernel's, mostly the TCP work of \
             its `recv` and `send`); cs/req: context switches per request, voluntary+involuntary \
             (the server's threads; the client's, this process); \"other\" is the rest of the machine (a busy neighbour \
             disturbs the run).\n\n",
        );
        markdown_table(&mut out, &header, &cells);
        if !ratios.is_empty() {
            out.push('\n');
            markdown_table(&mut out, &ratio_header, &ratios);
        }
    } else {
        out.push_str(&heading);
        out.push_str(
            "\n(cpu: cores used during the measured window; µs/req: CPU time per request, the \
             server's as user+system; cs/req: context switches per request, \
             voluntary+involuntary; other = the rest of the machine)\n\n",
        );
        text_table(&mut out, &header, &cells);
        if !ratios.is_empty() {
            out.push('\n');
            text_table(&mut out, &ratio_header, &ratios);
        }
    }
    if ratios.is_empty() {
        out.push_str("\nno tessera row, so no tessera/peer ratios\n");
    }
    failures(&mut out, rows);
    out
}

/// What was measured and how, one line.
fn heading(options: &CompareOptions) -> String {
    let c = &options.client;
    let cpus = |set: &Option<Vec<usize>>| match set {
        Some(cpus) => format!(" on CPUs {}", cpu_list(cpus)),
        None => String::new(),
    };
    format!(
        "echo: {} connections on 127.0.0.1, {} B messages, closed loop; client: {} epoll \
         thread(s) on the same machine{}; servers: {} workers each{}; median of {} \
         interleaved round(s) of {} ms after {} ms warm-up",
        c.conns,
        c.size,
        c.threads,
        cpus(&options.pin_client),
        options.workers,
        cpus(&options.pin_server),
        options.rounds,
        c.duration.as_millis(),
        c.warmup.as_millis()
    )
}

/// `[0, 1, 3]` -> `"0,1,3"`.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Context switches per request, voluntary+involuntary.
fn switches((voluntary, involuntary): (f64, f64)) -> String {
    format!("{voluntary:.3}+{involuntary:.3}")
}

/// Each server's medians, one row each.
fn figure_rows(rows: &[Row]) -> Vec<[String; 11]> {
    rows.iter()
        .map(|row| {
            [
                row.name.to_string(),
                opt(row.rate(), human_rate),
                opt(row.range(), |(lo, hi)| {
                    format!("{}–{}", human_rate(lo), human_rate(hi))
                }),
                opt(row.p50(), latency),
                opt(row.p99(), latency),
                opt(row.server_cpu(), |c| format!("{c:.2}")),
                opt(row.server_per_request(), |(u, s)| format!("{u:.2}+{s:.2}")),
                opt(row.client_per_request(), |c| format!("{c:.2}")),
                opt(row.switches_per_request(false), switches),
                opt(row.switches_per_request(true), switches),
                opt(row.other_cpu(), |c| format!("{c:.2}")),
            ]
        })
        .collect()
}

/// The rate and p99 of each tessera-sched build (`OURS`) that has figures against each
/// peer's, with the verdict on the target against Go.
fn ratio_rows(rows: &[Row]) -> Vec<[String; 4]> {
    let ours = rows
        .iter()
        .filter(|r| OURS.contains(&r.name) && !r.runs.is_empty());
    ours.flat_map(|t| {
        rows.iter()
            .filter(|r| !OURS.contains(&r.name))
            .map(move |peer| {
                let rate = t.rate().zip(peer.rate()).map(|(a, b)| a / b);
                let p99 = t.p99().zip(peer.p99()).map(|(a, b)| a / b);
                let verdict = match (peer.name, rate, p99) {
                    ("go", Some(r), Some(p)) if r >= 1.2 && p <= 1.0 => {
                        "target met (≥ 1.2× req/s, p99 ≤ 1×)"
                    }
                    ("go", Some(_), Some(_)) => "target missed (≥ 1.2× req/s, p99 ≤ 1×)",
                    _ => "",
                };
                [
                    format!("{}/{}", t.name, peer.name),
                    opt(rate, |r| format!("{r:.2}×")),
                    opt(p99, |r| format!("{r:.2}×")),
                    verdict.to_string(),
                ]
            })
    })
    .collect()
}

/// The rounds that failed, per server.
fn failures(out: &mut String, rows: &[Row]) {
    for row in rows {
        for why in &row.failures {
            out.push_str(&format!("\n{} failed a round: {why}", row.name));
        }
    }
    if rows.iter().any(|r| !r.failures.is_empty()) {
        out.push('\n');
    }
}

fn text_table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .chain([header[col].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..N).map(width).collect();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (col, cell) in cells.enumerate() {
            let pad = widths[col].saturating_sub(cell.chars().count());
            if col == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("  ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(out, &mut header.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn markdown_table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut row_line = |cells: &mut dyn Iterator<Item = &str>| {
        let _ = writeln!(out, "| {} |", cells.collect::<Vec<_>>().join(" | "));
    };
    row_line(&mut header.iter().copied());
    row_line(&mut (0..N).map(|i| if i == 0 { "---" } else { "---:" }));
    for row in rows {
        row_line(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> CompareOptions {
        CompareOptions {
            servers: SERVERS.to_vec(),
            rounds: 3,
            client: ClientConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                conns: 100,
                size: 64,
                threads: 1,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(2),
            },
            base_port: 7100,
            workers: 2,
            tessera_bin: "/nonexistent/echo".into(),
            user_bin: "/nonexistent/tessera-sched-user".into(),
            go_bin: "/nonexistent/echo-go".into(),
            pin_server: None,
            pin_client: None,
        }
    }

    fn run(rate: f64, p99_ms: u64) -> Run {
        Run {
            requests_per_sec: rate,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(p99_ms),
            server_user: Some(0.1),
            server_sys: Some(0.9),
            client_cpu: 0.5,
            other_cpu: Some(0.1),
            server_switches: Some((0.05, 0.01)),
            client_switches: Some((0.1, 0.002)),
        }
    }

    #[test]
    fn missing_binaries_are_skipped_with_a_reason() {
        let o = options();
        assert!(
            missing_reason("tessera", &o)
                .unwrap()
                .contains("--example echo")
        );
        assert!(missing_reason("go", &o).unwrap().contains("golang-go"));
        assert!(missing_reason("user", &o).unwrap().contains("sched-user"));
        assert_eq!(missing_reason("tokio", &o), None);
    }

    #[test]
    fn ratios_against_go_carry_the_target_verdict() {
        let rows = [
            Row {
                name: "tessera",
                runs: vec![run(120_000.0, 5), run(130_000.0, 5), run(110_000.0, 6)],
                failures: Vec::new(),
            },
            Row {
                name: "go",
                runs: vec![run(90_000.0, 6), run(100_000.0, 6), run(95_000.0, 7)],
                failures: vec!["connection 3 request 9: boom".into()],
            },
        ];
        let text = render(&rows, &options(), false);
        assert!(text.contains("tessera/go"), "{text}");
        // No user-build row, so no user ratios.
        assert!(!text.contains("user/go"), "{text}");
        assert!(text.contains("1.26×"), "{text}");
        assert!(text.contains("0.83×"), "{text}");
        assert!(text.contains("target met"), "{text}");
        assert!(text.contains("go failed a round: connection 3"), "{text}");
        let md = render(&rows, &options(), true);
        assert!(
            md.contains(
                "| tessera | 120k | 110k–130k | 500 µs | 5.00 ms | 1.00 | 0.83+7.50 | 4.17 | \
                 0.050+0.010 | 0.100+0.002 |"
            ),
            "{md}"
        );
    }

    #[test]
    fn the_user_build_has_ratios_of_its_own() {
        let rows = [
            Row {
                name: "user",
                runs: vec![run(100_000.0, 5)],
                failures: Vec::new(),
            },
            Row {
                name: "go",
                runs: vec![run(80_000.0, 4)],
                failures: Vec::new(),
            },
        ];
        let text = render(&rows, &options(), false);
        assert!(text.contains("user/go"), "{text}");
        assert!(text.contains("1.25×"), "{text}");
        assert!(text.contains("1.25×  target missed"), "{text}");
        assert!(!text.contains("tessera/"), "{text}");
    }

    #[test]
    fn without_tessera_there_are_no_ratios() {
        let rows = [Row {
            name: "tokio",
            runs: vec![run(80_000.0, 4)],
            failures: Vec::new(),
        }];
        let text = render(&rows, &options(), false);
        assert!(text.contains("no tessera row"), "{text}");
        assert!(!text.contains("tessera/tokio"), "{text}");
    }
}
