//! The redis programs of `--programs`: `redis-server` on 127.0.0.1 (a free high port, no
//! persistence) under the preload being measured, loaded by `redis-benchmark` (SET, GET,
//! LPUSH, LPOP, INCR; 50 clients; one request at a time per client, and 16 with `-P 16`),
//! which like `redis-cli` runs without the preload. The
//! figure is requests/s (geometric mean over the tests); the peak RSS is the server's own,
//! from `wait4` on the server. The output compared across allocators is what the benchmark
//! left in the database (the INCR counter must read exactly the number of requests).

use super::measure::{self, Measured};
use crate::stats::geomean;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tests `redis-benchmark` runs.
pub const TESTS: &str = "set,get,lpush,lpop,incr";
/// How long the server may take to answer PING.
const STARTUP: Duration = Duration::from_secs(10);
/// How long the benchmark may take.
const BENCHMARK: Duration = Duration::from_secs(120);
/// How long a `redis-cli` call may take.
const CLI: Duration = Duration::from_secs(10);
/// How long the server may take to exit after SHUTDOWN.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// The three binaries, found next to each other.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `redis-server`.
    pub server: PathBuf,
    /// `redis-cli`.
    pub cli: PathBuf,
    /// `redis-benchmark`.
    pub benchmark: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct RedisRun {
    /// Requests/s, geometric mean over the tests.
    pub rps: f64,
    /// The server's peak RSS in KiB.
    pub maxrss_kib: u64,
    /// Checked across allocators.
    pub stdout: String,
}

impl Redis {
    /// Finds all three, or says which is missing.
    pub fn find() -> Result<Redis, String> {
        let find = |name: &str| {
            super::suite::find_binary(name).ok_or(format!("`{name}` is not installed"))
        };
        Ok(Redis {
            server: find("redis-server")?,
            cli: find("redis-cli")?,
            benchmark: find("redis-benchmark")?,
        })
    }

    fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.cli);
        c.env_remove("LD_PRELOAD")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args);
        measure::run(c, CLI).map(|m| m.stdout.trim().to_string())
    }

    /// Starts the server under `preload` (None: no preload) with `env` added to its
    /// environment, benchmarks it and shuts it down. `expect_mapped`, when given, must appear in the server's /proc/PID/maps.
    /// `requests` per test, `pipeline` of them in flight per client.
    pub fn run(
        &self,
        preload: Option<&Path>,
        env: &[(&str, &str)],
        expect_mapped: Option<&Path>,
        requests: u32,
        pipeline: u32,
    ) -> Result<RedisRun, String> {
        let port = free_port()?;
        let mut server = Command::new(&self.server);
        server
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes", "--logfile", ""]);
        match preload {
            Some(lib) => server.env("LD_PRELOAD", lib),
            None => server.env_remove("LD_PRELOAD"),
        };
        server.envs(env.iter().copied());
        let running = measure::spawn(server)?;
        let pid = running.pid();
        let body = self.drive(&running, port, expect_mapped, requests, pipeline);
        // Shut down whatever happened; a server that ignores SHUTDOWN is killed by the
        // timeout of `finish`.
        let shutdown = if running.has_exited() {
            Ok(String::new())
        } else {
            self.cli(port, &["shutdown", "nosave"]).or_else(|e| {
                if running.has_exited() {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })
        };
        let finished: Result<Measured, String> = running.finish(SHUTDOWN);
        let (rps, stdout) = body?;
        let measured = finished.map_err(|e| format!("redis-server (pid {pid}): {e}"))?;
        shutdown.map_err(|e| format!("redis-cli shutdown: {e}"))?;
        Ok(RedisRun {
            rps,
            maxrss_kib: measured.maxrss_kib,
            stdout,
        })
    }

    /// Waits for PING, checks the preload is mapped, runs the benchmark, and reads back what
    /// it left in the database.
    fn drive(
        &self,
        server: &measure::Running,
        port: u16,
        expect_mapped: Option<&Path>,
        requests: u32,
        pipeline: u32,
    ) -> Result<(f64, String), String> {
        let start = Instant::now();
        loop {
            if server.has_exited() {
                return Err("redis-server exited before answering PING".into());
            }
            if self.cli(port, &["ping"]).is_ok_and(|r| r == "PONG") {
                break;
            }
            if start.elapsed() > STARTUP {
                return Err(format!(
                    "redis-server did not answer PING within {STARTUP:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(lib) = expect_mapped {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid()))
                .map_err(|e| format!("cannot read the server's maps: {e}"))?;
            let real = lib.canonicalize().unwrap_or_else(|_| lib.to_path_buf());
            if !maps.contains(&*real.to_string_lossy()) {
                return Err(format!(
                    "{} is not mapped in redis-server: LD_PRELOAD did not take",
                    real.display()
                ));
            }
        }
        let mut bench = Command::new(&self.benchmark);
        bench
            .env_remove("LD_PRELOAD")
            .args(benchmark_args(port, requests, pipeline));
        let out = measure::run(bench, BENCHMARK).map_err(|e| format!("redis-benchmark: {e}"))?;
        let results = parse_benchmark(&out.stdout);
        let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
        if results.len() != TESTS.split(',').count() {
            return Err(format!(
                "redis-benchmark reported {names:?}, expected {TESTS}: {:?}",
                out.stdout.lines().last().unwrap_or("")
            ));
        }
        let rates: Vec<f64> = results.iter().map(|(_, r)| *r).collect();
        let rps = geomean(&rates).ok_or("redis-benchmark reported a zero rate")?;
        let counter = self.cli(port, &["get", "counter:__rand_int__"])?;
        let list = self.cli(port, &["llen", "mylist"])?;
        let keys = self.cli(port, &["dbsize"])?;
        let value = self.cli(port, &["strlen", "key:__rand_int__"])?;
        let stdout = format!(
            "tests {}\ncounter {counter}\nmylist {list}\ndbsize {keys}\nvalue length {value}\n",
            names.join(" ")
        );
        Ok((rps, stdout))
    }
}

/// redis-benchmark's arguments: quiet, the tests of [`TESTS`], 50 clients, `-P` when
/// `pipeline` is more than one request.
fn benchmark_args(port: u16, requests: u32, pipeline: u32) -> Vec<String> {
    let mut args: Vec<String> = ["-h", "127.0.0.1", "-p", &port.to_string()]
        .into_iter()
        .chain(["-n", &requests.to_string(), "-q", "-t", TESTS, "-c", "50"])
        .map(String::from)
        .collect();
    if pipeline > 1 {
        args.extend(["-P".to_string(), pipeline.to_string()]);
    }
    args
}

/// A port the kernel just gave out on 127.0.0.1 (ephemeral, so high); a collision with
/// another program in the instant before redis binds it makes a FAILED row, not a hang.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `(test, requests/s)` from `redis-benchmark -q` output, whose progress lines end in `\r`
/// and final lines read `SET: 43591.98 requests per second, p50=0.319 msec`.
pub fn parse_benchmark(text: &str) -> Vec<(String, f64)> {
    text.split(['\r', '\n'])
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": ")?;
            let rate = rest.strip_suffix("requests per second").or_else(|| {
                rest.split_once(" requests per second")
                    .map(|(rate, _)| rate)
            })?;
            Some((name.to_string(), rate.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quiet_output_with_progress_lines() {
        let text = "\rSET: rps=0.0 (overall: 0.0) avg_msec=-nan (overall: -nan)\r           \r\
                    SET: 43591.98 requests per second, p50=0.319 msec\n\
                    GET: 33025.10 requests per second, p50=0.319 msec\n\
                    LPOP: 26399.15 requests per second\n";
        let got = parse_benchmark(text);
        assert_eq!(
            got,
            vec![
                ("SET".to_string(), 43591.98),
                ("GET".to_string(), 33025.10),
                ("LPOP".to_string(), 26399.15)
            ]
        );
    }

    #[test]
    fn a_server_that_does_not_come_up_is_an_error_not_a_hang() {
        let fake = Redis {
            server: PathBuf::from("/bin/false"),
            cli: PathBuf::from("/bin/false"),
            benchmark: PathBuf::from("/bin/false"),
        };
        let start = Instant::now();
        let err = fake.run(None, &[], None, 10, 1).unwrap_err();
        assert!(err.contains("exited before answering PING"), "{err}");
        assert!(start.elapsed() < STARTUP, "{:?}", start.elapsed());
    }

    #[test]
    fn pipelining_adds_dash_p() {
        let plain = benchmark_args(7000, 100, 1).join(" ");
        assert_eq!(
            plain,
            "-h 127.0.0.1 -p 7000 -n 100 -q -t set,get,lpush,lpop,incr -c 50"
        );
        assert_eq!(
            benchmark_args(7000, 100, 16).join(" "),
            format!("{plain} -P 16")
        );
    }

    #[test]
    fn ports_are_high() {
        assert!(free_port().unwrap() >= 1024);
    }
}
