//! The real programs of `--programs` and their inputs, written here: an allocation-heavy
//! python3 script (with pymalloc, and with `PYTHONMALLOC=malloc` so every object goes to the
//! C allocator), sqlite3 bulk inserts and queries, git init/add/commit/log on a fresh
//! repository, redis-server loaded by redis-benchmark without and with pipelining (see
//! `redis.rs`), and the threaded C
//! stress program (`c/stress.c`, compiled at run time). Each prints results that must be
//! identical under every allocator; nothing prints times, dates or addresses.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes a program's input into `dir` (a fresh directory of its own) and returns the
/// command to time; `full` asks for a larger input.
pub type Prepare = fn(binary: &Path, dir: &Path, full: bool) -> std::io::Result<Command>;

/// How a program is run and what its figure is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Runs to completion; the figure is its wall time.
    Command(Prepare),
    /// redis-server loaded by redis-benchmark sending `pipeline` requests at a time per
    /// connection (`-P`; 1: one at a time); the figure is requests/s.
    Redis {
        /// Requests in flight per connection.
        pipeline: u32,
    },
}

/// Where a program's executable comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// Installed: looked up in /usr/bin, then `PATH`.
    Installed(&'static str),
    /// `c/stress.c`, compiled at run time.
    Stress,
}

/// One program of the suite.
#[derive(Debug)]
pub struct Program {
    /// Name in the table.
    pub name: &'static str,
    /// The executable it needs.
    pub binary: Binary,
    /// How it runs.
    pub kind: Kind,
}

/// Every program, in table order.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: "python3",
        binary: Binary::Installed("python3"),
        kind: Kind::Command(python_pymalloc),
    },
    Program {
        name: "python3-malloc",
        binary: Binary::Installed("python3"),
        kind: Kind::Command(python_malloc),
    },
    Program {
        name: "sqlite3",
        binary: Binary::Installed("sqlite3"),
        kind: Kind::Command(sqlite),
    },
    Program {
        name: "git",
        binary: Binary::Installed("git"),
        kind: Kind::Command(git),
    },
    Program {
        name: "redis",
        binary: Binary::Installed("redis-server"),
        kind: Kind::Redis { pipeline: 1 },
    },
    // Pipelining takes the network round trips out, which leaves the server's own work,
    // parsing and allocating, as what limits it (BENCHMARKS.md: allocator-bound).
    Program {
        name: "redis -P 16",
        binary: Binary::Installed("redis-server"),
        kind: Kind::Redis { pipeline: 16 },
    },
    Program {
        name: "stress.c",
        binary: Binary::Stress,
        kind: Kind::Command(stress),
    },
];

/// Requests per redis-benchmark test; pipelined runs go about ten times faster here, so they
/// get ten times as many requests and last as long.
pub fn redis_requests(full: bool, pipeline: u32) -> u32 {
    let base = if full { 500_000 } else { 50_000 };
    if pipeline > 1 { base * 10 } else { base }
}

/// The stress program: 4 threads (twice the cores here), 4 rounds of them.
fn stress(binary: &Path, _dir: &Path, full: bool) -> std::io::Result<Command> {
    let mut command = Command::new(binary);
    command.args(["4", if full { "1000000" } else { "100000" }, "4"]);
    Ok(command)
}

/// Finds `name` in /usr/bin (Debian's packages, not wrappers such as pyenv shims) or else on
/// `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

const PYTHON_SCRIPT: &str = r#"
import json, sys
n = int(sys.argv[1])
# A big dict of small lists, strings and dicts: many objects of mixed sizes.
d = {}
for i in range(n):
    d["key-%d" % i] = [i, str(i) * (i % 7 + 1), {"x": i % 13, "y": [i] * (i % 5)}]
text = json.dumps(d)
back = json.loads(text)
order = sorted(back, key=lambda k: (len(k), k[::-1]))
total = 0
for k in order[::3]:
    v = back[k]
    total = (total * 31 + v[0] + len(v[1]) + v[2]["x"] + len(v[2]["y"])) % 1000000007
# Many short-lived objects through a sliding window.
window = []
for i in range(n):
    window.append(tuple(range(i % 10)) + (str(i),))
    if len(window) > 2000:
        del window[:1000]
del d, back, order
print(len(text), total, len(window))
"#;

fn python(binary: &Path, dir: &Path, full: bool, malloc: bool) -> std::io::Result<Command> {
    let script = dir.join("alloc_heavy.py");
    std::fs::write(&script, PYTHON_SCRIPT)?;
    let mut command = Command::new(binary);
    command
        .arg(&script)
        .arg(if full { "600000" } else { "60000" });
    command
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if malloc {
        command.env("PYTHONMALLOC", "malloc");
    } else {
        command.env_remove("PYTHONMALLOC");
    }
    Ok(command)
}

fn python_pymalloc(binary: &Path, dir: &Path, full: bool) -> std::io::Result<Command> {
    python(binary, dir, full, false)
}

fn python_malloc(binary: &Path, dir: &Path, full: bool) -> std::io::Result<Command> {
    python(binary, dir, full, true)
}

fn sqlite(binary: &Path, dir: &Path, full: bool) -> std::io::Result<Command> {
    let rows = if full { 1_000_000 } else { 100_000 };
    // Journal and syncs off and a 64 MiB page cache, so the run is about the library's
    // memory (page cache, sorter, parser), not the disk.
    let sql = format!(
        "PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-65536;
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, payload TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
INSERT INTO t SELECT x, 'name-' || x, x % 97,
    hex((x * 2654435761) % 4294967296) || printf('%.*c', x % 50, 'z') FROM c;
CREATE INDEX t_grp ON t(grp, name);
SELECT grp, count(*), sum(length(payload)), min(name) FROM t GROUP BY grp ORDER BY grp LIMIT 5;
SELECT count(DISTINCT payload) FROM t;
SELECT name FROM t WHERE grp = 42 ORDER BY name DESC LIMIT 3;
SELECT count(*) FROM t a JOIN t b ON a.id = b.id + 1 WHERE a.grp = b.grp + 1;
"
    );
    let script = dir.join("bulk.sql");
    std::fs::write(&script, sql)?;
    let mut command = Command::new(binary);
    command
        .arg("-bail")
        .arg(dir.join("bench.db"))
        .arg(format!(".read {}", script.display()));
    Ok(command)
}

fn git(binary: &Path, dir: &Path, full: bool) -> std::io::Result<Command> {
    let files = if full { 4000 } else { 600 };
    let work = dir.join("repo");
    std::fs::create_dir_all(work.join("src"))?;
    for i in 0..files {
        let body: String = (0..40)
            .map(|line| format!("file {i} line {line}: {}\n", i * 7919 + line))
            .collect();
        std::fs::write(work.join("src").join(format!("f{i:05}.txt")), body)?;
    }
    // Fixed identities and dates make every hash reproducible; HOME and NOSYSTEM keep the
    // user's and the system's configuration out.
    let script = format!(
        "set -e
g={git}
$g init -q -b main .
$g add -A
$g commit -q -m first
for f in src/f*1.txt; do echo changed >> \"$f\"; done
$g add -A
$g commit -q -m second
$g log --format='%H %T %s'
$g diff --stat HEAD~1 | tail -n 1
$g rev-list --objects --all | wc -l
$g gc -q
$g count-objects -v | grep -E '^(count|in-pack)'
",
        git = binary.display()
    );
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script).current_dir(&work);
    for (k, v) in [
        ("HOME", dir.to_str().unwrap_or("/tmp")),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_AUTHOR_NAME", "bench"),
        ("GIT_AUTHOR_EMAIL", "bench@example.invalid"),
        ("GIT_COMMITTER_NAME", "bench"),
        ("GIT_COMMITTER_EMAIL", "bench@example.invalid"),
        ("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z"),
        ("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z"),
    ] {
        command.env(k, v);
    }
    Ok(command)
}
