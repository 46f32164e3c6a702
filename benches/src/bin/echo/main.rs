//! The echo workload of BENCHMARKS.md: a TCP echo server with a coroutine (or task) per
//! connection, 100 connections on 127.0.0.1, 64 B messages, requests/s and p99 — tessera-sched
//! (in the runner's build and in a user's) side by side with Go, tokio and may in one run. Target: tessera ≥ 1.2× Go's requests/s
//! with a p99 no worse.
//!
//! One binary, three modes:
//!
//! - `echo [compare] [flags]` (the default): the driver ([`driver`]) starts each server as a
//!   child process, runs the client against it, and prints one table (also written to
//!   `<target>/tessera-bench/echo.md`). tessera-sched's server is its `echo` example (thin
//!   LTO, Tessera as the global allocator) and, as a user builds it, `benches/sched-user`'s
//!   `echo` (cargo's default release profile, the system allocator); Go's is
//!   `benches/go/echo/main.go`; `benches/go/echo/compare.sh` builds them all and runs this.
//! - `echo client ADDR [flags]`: the load generator ([`client`]) alone, against any server.
//! - `echo server tokio|may ADDR [--workers N]`: the Rust peer servers ([`servers`]).
//!
//! The client runs on the same two cores as the server, so both the client's and the
//! server's CPU use are reported beside the figures, and per request. `--pin-server` and
//! `--pin-client` confine every server and the client to CPU sets of their own (what
//! `taskset` does), the same for every server.

mod client;
mod driver;
mod histogram;
mod servers;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use client::ClientConfig;
use driver::CompareOptions;

// The same allocator as the rest of the bench binaries; tokio and may allocate through it
// (they allocate little once the connections are up).
#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

const USAGE: &str = "\
usage:
  echo [compare] [--servers tessera,user,go,tokio,may] [--rounds 5] [--workers 2]
                 [--base-port 7100 (0: free ports from the kernel)]
                 [--pin-server CPUS --pin-client CPUS (e.g. 1 and 0; lists like 0,2-3)]
                 [--tessera PATH] [--user PATH] [--go PATH] [CLIENT FLAGS]
  echo client ADDR [CLIENT FLAGS]
  echo server tokio|may ADDR [--workers 2]

client flags: [--conns 100] [--size 64] [--client-threads 1]
              [--warmup-ms 1000] [--duration-ms 2000]

compare defaults: --tessera <target>/release/examples/echo
                  --user <target>/sched-user/release/tessera-sched-user
                  --go <target>/tessera-bench/echo-go
(<target> is $CARGO_TARGET_DIR, else the workspace's target/)
";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&argv) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("echo: {message}");
            eprint!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

fn run(argv: &[String]) -> Result<i32, String> {
    match argv.first().map(String::as_str) {
        Some("-h" | "--help") => {
            print!("{USAGE}");
            Ok(0)
        }
        Some("server") => {
            let (runtime, addr) = match argv.get(1..3) {
                Some([runtime, addr]) => (runtime, addr),
                _ => return Err("server needs a runtime and an address".into()),
            };
            let runtime = servers::Runtime::parse(runtime)
                .ok_or_else(|| format!("unknown server runtime `{runtime}` (tokio or may)"))?;
            let mut flags = Flags::new(&argv[3..]);
            let workers = flags.take("--workers")?.unwrap_or(2);
            flags.finish()?;
            servers::serve(runtime, parse_addr(addr)?, workers)?;
            Ok(0)
        }
        Some("client") => {
            let addr = parse_addr(argv.get(1).ok_or("client needs an address")?)?;
            let mut flags = Flags::new(&argv[2..]);
            let config = client_config(&mut flags, addr)?;
            flags.finish()?;
            let result = client::run(&config, |_| {})?;
            let q = |q| {
                result
                    .latencies
                    .quantile(q)
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
            };
            println!(
                "{:.0} req/s  p50 {:.0} µs  p99 {:.0} µs  ({} requests in {} ms)",
                result.requests_per_sec(),
                q(0.50),
                q(0.99),
                result.requests,
                result.window.as_millis()
            );
            Ok(0)
        }
        Some("compare") => compare(&argv[1..]),
        _ => compare(argv),
    }
}

fn compare(args: &[String]) -> Result<i32, String> {
    let mut flags = Flags::new(args);
    let servers = match flags.take::<String>("--servers")? {
        None => driver::SERVERS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                driver::SERVERS
                    .iter()
                    .copied()
                    .find(|s| *s == name)
                    .ok_or_else(|| {
                        format!("unknown server `{name}` (tessera, user, go, tokio, may)")
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let target = tessera_bench::paths::target_dir();
    let options = CompareOptions {
        servers,
        rounds: flags.take("--rounds")?.unwrap_or(5),
        workers: flags.take("--workers")?.unwrap_or(2),
        base_port: flags.take("--base-port")?.unwrap_or(7100),
        tessera_bin: flags
            .take("--tessera")?
            .unwrap_or_else(|| target.join("release/examples/echo")),
        user_bin: flags
            .take("--user")?
            .unwrap_or_else(|| target.join("sched-user/release/tessera-sched-user")),
        go_bin: flags
            .take::<PathBuf>("--go")?
            .unwrap_or_else(|| tessera_bench::paths::report_dir().join("echo-go")),
        pin_server: flags
            .take::<String>("--pin-server")?
            .map(|l| cpu_set(&l))
            .transpose()?,
        pin_client: flags
            .take::<String>("--pin-client")?
            .map(|l| cpu_set(&l))
            .transpose()?,
        client: client_config(&mut flags, SocketAddr::from(([127, 0, 0, 1], 0)))?,
    };
    flags.finish()?;
    if options.rounds == 0 || options.workers == 0 {
        return Err("--rounds and --workers must be positive".into());
    }
    Ok(driver::compare(&options))
}

fn client_config(flags: &mut Flags<'_>, addr: SocketAddr) -> Result<ClientConfig, String> {
    Ok(ClientConfig {
        addr,
        conns: flags.take("--conns")?.unwrap_or(100),
        size: flags.take("--size")?.unwrap_or(64),
        threads: flags.take("--client-threads")?.unwrap_or(1),
        warmup: Duration::from_millis(flags.take("--warmup-ms")?.unwrap_or(1000)),
        duration: Duration::from_millis(flags.take("--duration-ms")?.unwrap_or(2000)),
    })
}

/// A CPU list as `taskset -c` takes it: `0`, `0,2`, `1-3`.
fn cpu_set(list: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("`{list}` is not a CPU list like 0,2-3");
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        // The kernel's cpu_set_t holds 1024 CPUs.
        if lo > hi || hi >= 1024 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:7000"))
}

/// `--flag value` pairs, taken one by one; whatever is left over is an error.
#[derive(Debug)]
struct Flags<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    stray: Option<&'a str>,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        let mut pairs = Vec::new();
        let mut stray = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match it.next() {
                Some(value) if flag.starts_with("--") => {
                    pairs.push((flag.as_str(), value.as_str()))
                }
                _ => {
                    stray.get_or_insert(flag.as_str());
                }
            }
        }
        Flags { pairs, stray }
    }

    fn take<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        let Some(i) = self.pairs.iter().position(|(flag, _)| *flag == name) else {
            return Ok(None);
        };
        let (_, value) = self.pairs.remove(i);
        value
            .parse()
            .map(Some)
            .map_err(|_| format!("bad value `{value}` for {name}"))
    }

    fn finish(self) -> Result<(), String> {
        if let Some(stray) = self.stray {
            return Err(format!("unexpected argument `{stray}`"));
        }
        match self.pairs.first() {
            Some((flag, _)) => Err(format!("unknown flag {flag}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_parse_and_reject_leftovers() {
        let a = args("--rounds 3 --conns 10");
        let mut f = Flags::new(&a);
        assert_eq!(f.take::<usize>("--rounds").unwrap(), Some(3));
        assert_eq!(f.take::<usize>("--size").unwrap(), None);
        assert!(f.finish().unwrap_err().contains("--conns"));
        let a = args("--rounds x");
        assert!(Flags::new(&a).take::<usize>("--rounds").is_err());
        let a = args("--rounds");
        assert!(Flags::new(&a).finish().unwrap_err().contains("--rounds"));
    }

    #[test]
    fn cpu_lists_parse_as_taskset_takes_them() {
        assert_eq!(cpu_set("1").unwrap(), [1]);
        assert_eq!(cpu_set("0,2-4").unwrap(), [0, 2, 3, 4]);
        for bad in ["", "x", "3-1", "0,", "1-2-3", "4096"] {
            assert!(cpu_set(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_servers_are_refused() {
        assert!(
            run(&args("compare --servers go,nginx"))
                .unwrap_err()
                .contains("nginx")
        );
        assert!(
            run(&args("server nginx 127.0.0.1:1"))
                .unwrap_err()
                .contains("nginx")
        );
    }
}
