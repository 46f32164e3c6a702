//! regex: a log of generated request lines, each matched with a capturing regex and turned
//! into an owned `Entry` (strings copied out of the line, numbers parsed), the entries
//! collected into a `BTreeMap` by request path, as a log-analysis tool does.

use crate::rng::Rng;
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const LINES: usize = 400_000;

/// One parsed line.
#[derive(Debug)]
struct Entry {
    timestamp: String,
    level: String,
    worker: u16,
    method: String,
    query: Option<String>,
    status: u16,
    bytes: u64,
    millis: f64,
    user: String,
    agent: String,
}

const PATTERN: &str = r#"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) +worker-(?P<worker>\d+) (?P<method>[A-Z]+) (?P<path>/[^ ?]*)(?:\?(?P<query>[^ ]*))? status=(?P<status>\d{3}) bytes=(?P<bytes>\d+) dur=(?P<dur>\d+\.\d+)ms user="(?P<user>[^"]*)" ua="(?P<ua>[^"]*)"$"#;

fn generate(lines: usize) -> String {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "ERROR"];
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "DELETE"];
    let mut rng = Rng::new(0x6c6f_6773);
    let mut log = String::with_capacity(lines * 170);
    for i in 0..lines {
        let second = i as u64 / 20;
        let _ = write!(
            log,
            "2024-03-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<5} worker-{:02} {} /api/v{}/{}/{}",
            1 + second / 86_400 % 28,
            second / 3600 % 24,
            second / 60 % 60,
            second % 60,
            rng.below(1000),
            LEVELS[rng.below(4) as usize],
            rng.below(32),
            METHODS[rng.below(4) as usize],
            1 + rng.below(3),
            rng.word(),
            rng.below(5000),
        );
        if rng.below(3) == 0 {
            let _ = write!(log, "?expand={}&page={}", rng.word(), rng.below(50));
        }
        let _ = writeln!(
            log,
            " status={} bytes={} dur={}.{:03}ms user=\"{}.{}\" ua=\"Mozilla/5.0 (X11; Linux x86_64) {}/{}\"",
            [200, 200, 201, 304, 404, 500][rng.below(6) as usize],
            rng.below(100_000),
            rng.below(2000),
            rng.below(1000),
            rng.word(),
            rng.word(),
            rng.word(),
            rng.below(120),
        );
    }
    log
}

pub(crate) fn run() -> String {
    let log = generate(LINES);
    let re = Regex::new(PATTERN).expect("the pattern is valid");
    let mut by_path: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut unmatched = 0;
    for line in log.lines() {
        let Some(c) = re.captures(line) else {
            unmatched += 1;
            continue;
        };
        let number = |name: &str| c[name].parse::<u64>().expect("digits only");
        let entry = Entry {
            timestamp: c["ts"].to_string(),
            level: c["level"].to_string(),
            worker: number("worker") as u16,
            method: c["method"].to_string(),
            query: c.name("query").map(|m| m.as_str().to_string()),
            status: number("status") as u16,
            bytes: number("bytes"),
            millis: c["dur"].parse().expect("a decimal"),
            user: c["user"].to_string(),
            agent: c["ua"].to_string(),
        };
        by_path
            .entry(c["path"].to_string())
            .or_default()
            .push(entry);
    }
    let entries: usize = by_path.values().map(Vec::len).sum();
    let (mut errors, mut bytes, mut queries, mut text, mut slow, mut workers) =
        (0, 0u64, 0, 0usize, 0, 0u64);
    for e in by_path.values().flatten() {
        errors += usize::from(e.status >= 500 || e.level == "ERROR");
        bytes += e.bytes;
        queries += usize::from(e.query.is_some());
        text += e.timestamp.len() + e.method.len() + e.user.len() + e.agent.len();
        slow += usize::from(e.millis > 1000.0);
        workers += u64::from(e.worker);
    }
    let (busiest, most) = by_path
        .iter()
        .max_by_key(|(path, v)| (v.len(), std::cmp::Reverse(*path)))
        .map(|(path, v)| (path.as_str(), v.len()))
        .unwrap_or(("", 0));
    format!(
        "regex lines={LINES} unmatched={unmatched} paths={} entries={entries} errors={errors} \
         bytes={bytes} queries={queries} text={text} slow={slow} workers={workers} busiest={busiest}:{most}",
        by_path.len(),
    )
}
