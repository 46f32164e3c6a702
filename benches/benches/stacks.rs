//! Stack benchmarks (BENCHMARKS.md, "stack-acquire"), each against its peer in the same run:
//!
//! - taking a stack from the tessera pool and giving it back, against creating and dropping a
//!   `corosensei::stack::DefaultStack` (a fresh `mmap` + `mprotect` + `munmap` per stack);
//! - creating a coroutine, running it to completion and dropping it, on a pooled stack against
//!   the same on a fresh `DefaultStack`.
//!
//! The pooled stack is released at every iteration, so each includes the release-time shrink
//! check (the canary band of `coroutine-stacks/src/shrink.rs`; these coroutines stay in their
//! top page, so no `madvise` is needed, as for most real ones).

use std::hint::black_box;
use std::time::Duration;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 2] = [64 << 10, 1 << 20];

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

fn acquire_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack-acquire");
    for size in SIZES {
        g.bench_with_input(
            BenchmarkId::new("tessera-pool", label(size)),
            &size,
            |b, &size| b.iter(|| drop(black_box(tessera_stacks::acquire(size).unwrap()))),
        );
        g.bench_with_input(
            BenchmarkId::new("DefaultStack::new", label(size)),
            &size,
            |b, &size| b.iter(|| drop(black_box(DefaultStack::new(size).unwrap()))),
        );
    }
    g.finish();
}

fn run_once<S: corosensei::stack::Stack + 'static>(stack: S) -> u64 {
    let mut co = Coroutine::<u64, (), u64, S>::with_stack(stack, |_, x| black_box(x) + 1);
    match co.resume(black_box(41)) {
        CoroutineResult::Return(v) => v,
        CoroutineResult::Yield(()) => unreachable!(),
    }
}

fn coroutine_create_run_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("coroutine-create-run-drop");
    for size in SIZES {
        g.bench_with_input(
            BenchmarkId::new("tessera-pool", label(size)),
            &size,
            |b, &size| b.iter(|| run_once(tessera_stacks::acquire(size).unwrap())),
        );
        g.bench_with_input(
            BenchmarkId::new("DefaultStack::new", label(size)),
            &size,
            |b, &size| b.iter(|| run_once(DefaultStack::new(size).unwrap())),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = acquire_release, coroutine_create_run_drop
}
criterion_main!(benches);
