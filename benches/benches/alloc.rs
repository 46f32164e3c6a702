//! Criterion benches of the allocators, each called through `GlobalAlloc` in the same run
//! (the list is `tessera_bench::with_allocators!`, shared with the comparison runner):
//!
//! - `fastpath/<alloc>/<size>`: one malloc+free pair of 16, 64, 256, 1024 B, one thread;
//! - `batch64/<alloc>`: 100 allocations of 64 B, then 100 frees (cache refill and flush);
//! - `remote-free/<alloc>`: a producer thread allocates 64 B blocks and passes them through an
//!   SPSC ring to a consumer thread that frees them: every free is remote. Throughput is
//!   blocks per second through the pair.
//!
//! Every allocator is called through `CallBoundary` (one call that is never inlined, as behind
//! `#[global_allocator]`), so a Rust allocator is not inlined into the loop while the C ones
//! stay behind FFI.
//!
//! Run: `cargo bench -p tessera-bench --bench alloc`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tessera_bench::allocators::CallBoundary;
use tessera_bench::spsc;

const SIZES: [usize; 4] = [16, 64, 256, 1024];
const BATCH: usize = 100;

/// One malloc+free pair per iteration.
fn pair<A: GlobalAlloc>(b: &mut criterion::Bencher<'_>, a: &A, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    b.iter(|| {
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` is live with `layout` from `a` (black_box keeps the pair from being
        // optimised away, not from being valid).
        unsafe { a.dealloc(black_box(p), layout) };
    });
}

/// `BATCH` allocations, then `BATCH` frees, per iteration.
fn batch<A: GlobalAlloc>(b: &mut criterion::Bencher<'_>, a: &A) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut ptrs = [std::ptr::null_mut::<u8>(); BATCH];
    b.iter(|| {
        for p in &mut ptrs {
            // SAFETY: non-zero size.
            *p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
        }
        for &p in black_box(&ptrs) {
            // SAFETY: each pointer is live with `layout` from `a`, freed once.
            unsafe { a.dealloc(p, layout) };
        }
    });
}

/// Producer allocates, consumer frees, through an SPSC ring; returns the time for `iters`
/// blocks to be allocated and freed.
fn remote<A: GlobalAlloc + Sync>(a: &A, iters: u64) -> Duration {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let (mut tx, mut rx) = spsc::channel(1024);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            for _ in 0..iters {
                let mut idle = 0u32;
                loop {
                    match rx.pop() {
                        // SAFETY: every value in the ring is a live block of `layout` from
                        // `a`, sent once by the producer.
                        Some(p) => break unsafe { a.dealloc(p as *mut u8, layout) },
                        None => backoff(&mut idle),
                    }
                }
            }
        });
        for _ in 0..iters {
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: the first byte of the 64 B block we own; a write makes the block's
            // line travel to the consumer, as real handed-off objects do.
            unsafe { p.write(1) };
            let (mut value, mut idle) = (p as usize, 0u32);
            while let Err(v) = tx.push(value) {
                value = v;
                backoff(&mut idle);
            }
        }
    });
    start.elapsed()
}

/// Spin briefly, then give the core away: with two threads on two shared cores, pure
/// spinning would measure the scheduler, not the allocator.
fn backoff(idle: &mut u32) {
    *idle += 1;
    if *idle < 64 {
        std::hint::spin_loop();
    } else {
        *idle = 0;
        std::thread::yield_now();
    }
}

macro_rules! benches_for {
    ($(($name:literal, $unit:path)),* $(,)?) => {
        fn fastpath(c: &mut Criterion) {
            let mut group = c.benchmark_group("fastpath");
            group.throughput(Throughput::Elements(1));
            for size in SIZES {
                $(group.bench_with_input(BenchmarkId::new($name, size), &size, |b, &size| {
                    pair(b, &CallBoundary($unit), size)
                });)*
            }
            group.finish();
        }

        fn batch64(c: &mut Criterion) {
            let mut group = c.benchmark_group("batch64");
            group.throughput(Throughput::Elements(BATCH as u64));
            $(group.bench_function($name, |b| batch(b, &CallBoundary($unit)));)*
            group.finish();
        }

        fn remote_free(c: &mut Criterion) {
            let mut group = c.benchmark_group("remote-free");
            group.throughput(Throughput::Elements(1));
            $(group.bench_function($name, |b| b.iter_custom(|iters| remote(&CallBoundary($unit), iters)));)*
            group.finish();
        }
    };
}

tessera_bench::with_allocators!(benches_for);

fn config() -> Criterion {
    // Shorter than criterion's defaults so the whole file runs in about two minutes on the
    // shared 2-core machines; the allocators are interleaved per size, not per group.
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = fastpath, batch64, remote_free
}
criterion_main!(benches);
