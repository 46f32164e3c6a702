//! `--prof-cost` without callgrind: its flags parse (and refuse what does not apply), its
//! arithmetic takes the two budgets' difference, and its table judges made-up counts
//! against the bars per mode. The measurement itself runs for minutes under
//! valgrind, so it is not run here.

use std::time::Duration;
use tessera_bench::args::{Command, parse};
use tessera_bench::icount::{Count, DEFAULT_SHORT, Mode, PerOp, Row, collected, per_op, render};

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn the_flag_parses_and_refuses_what_does_not_apply() {
    assert_eq!(
        parse(&args("--prof-cost")),
        Ok(Command::ProfCost {
            short: DEFAULT_SHORT
        })
    );
    assert_eq!(
        parse(&args("--prof-cost --duration-ms 50")),
        Ok(Command::ProfCost {
            short: Duration::from_millis(50)
        })
    );
    for (line, needle) in [
        ("--prof-cost --workloads larson", "do not apply"),
        ("--prof-cost --threads 2", "do not apply"),
        ("--prof-cost --reps 3", "do not apply"),
        ("--prof-cost --c", "separate modes"),
        ("--sched --prof-cost", "separate modes"),
    ] {
        let err = parse(&args(line)).unwrap_err();
        assert!(err.contains(needle), "{line}: {err}");
    }
    assert!(tessera_bench::args::usage().contains("--prof-cost"));
}

#[test]
fn instructions_per_op_are_the_two_budgets_difference() {
    let short = Count {
        instructions: 5_000_000 + 100 * 1_000,
        ops: 1_000,
    };
    let long = Count {
        instructions: 5_000_000 + 100 * 4_000,
        ops: 4_000,
    };
    // A start-up of 5M instructions cancels: 100 per op, not 5,100 or 1,350.
    let p = per_op(short, long).unwrap();
    assert_eq!(p.instructions, 100.0);
    assert!(!p.whole_run);
    // The same work whatever the budget: the whole run over its operations.
    let fixed = per_op(long, long).unwrap();
    assert_eq!(fixed.instructions, 5_400_000.0 / 4_000.0);
    assert!(fixed.whole_run);
    // A long run that did less is an error, not a figure.
    assert!(per_op(long, short).is_err());
    let more_ops_fewer_instructions = Count {
        instructions: 1,
        ops: 5_000,
    };
    assert!(per_op(short, more_ops_fewer_instructions).is_err());
}

#[test]
fn callgrinds_log_gives_the_count() {
    let log = "==12== Callgrind, a call-graph generating cache profiler\n\
               ==12== Events    : Ir\n==12== Collected : 123456789\n==12== \n\
               ==12== I   refs:      123,456,789\n";
    assert_eq!(collected(log), Some(123_456_789));
    assert_eq!(collected("==12== nothing\n"), None);
}

fn figure(instructions: f64) -> Result<PerOp, String> {
    Ok(PerOp {
        instructions,
        whole_run: false,
    })
}

fn row(mode: Mode, name: &str, fast_path: bool, off: f64, on: f64) -> Row {
    Row {
        mode,
        name: name.to_string(),
        threads: 1,
        fast_path,
        off: figure(off),
        on: figure(on),
    }
}

#[test]
fn the_table_judges_each_mode_against_the_bars() {
    let mut rows = vec![
        // Rust: fast path +0.5%, larson +1.0%: geomean sqrt(1.005 * 1.01) - 1 = 0.75%.
        row(Mode::Rust, "fastpath", true, 100.0, 100.5),
        row(Mode::Rust, "larson", false, 200.0, 202.0),
        // C: fastpath-16 +1%, fastpath-1024 +4% (a miss); burst +2%, a whole run's figure.
        row(Mode::C, "fastpath-16", true, 80.0, 80.8),
        row(Mode::C, "fastpath-1024", true, 80.0, 83.2),
        Row {
            off: Ok(PerOp {
                instructions: 450.0,
                whole_run: true,
            }),
            on: Ok(PerOp {
                instructions: 459.0,
                whole_run: true,
            }),
            ..row(Mode::C, "burst", false, 0.0, 0.0)
        },
    ];
    let t = render(&rows);
    assert!(
        t.contains("Rust  fastpath         1       100.00       100.50   +0.50%\n"),
        "{t}"
    );
    assert!(
        t.contains("C     burst            1      450.00*      459.00*   +2.00%\n"),
        "{t}"
    );
    assert!(
        t.contains(
            "Rust, 2 rows:\n  fast path cost <= 3.0%: 1 of 1 rows (highest fastpath t=1 0.5%): pass\n  \
             geomean cost 0.7% <= 1.0%: pass\n"
        ),
        "{t}"
    );
    // (1.01 * 1.04 * 1.02) ^ (1/3) - 1 = 2.3%.
    assert!(
        t.contains(
            "C, 3 rows:\n  fast path cost <= 3.0%: 1 of 2 rows (highest fastpath-1024 t=1 4.0%), \
             MISS: fastpath-1024 t=1 4.0%\n  geomean cost 2.3% <= 1.0%: MISS\n"
        ),
        "{t}"
    );
    assert!(t.contains("*: the whole run's instructions"), "{t}");

    // A failed variant shows, and leaves its row out of the geomean rather than passing.
    rows[1].on = Err("timed out".into());
    let t = render(&rows);
    assert!(t.contains("FAILED Rust larson t=1 on: timed out"), "{t}");
    assert!(
        t.contains("Rust  larson           1       200.00       FAILED      n/a"),
        "{t}"
    );
    assert!(t.contains("geomean cost 0.5% <= 1.0%: pass"), "{t}");
}
