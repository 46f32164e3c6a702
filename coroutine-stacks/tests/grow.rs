//! `maybe_grow` lets recursion run far deeper than the stack it starts on, on tessera
//! coroutine stacks and on ordinary threads alike.

use corosensei::Coroutine;

const RED_ZONE: usize = 16 << 10;
const SEGMENT: usize = 64 << 10;

/// Stack use of a recursion, added up across segments: every level adds how far the stack
/// pointer moved down since the level above, unless a new segment began in between.
#[derive(Debug, Default)]
struct Depth {
    last: usize,
    used: usize,
}

/// Recurses `depth` levels with about 1 KiB of frame each, growing onto new segments as needed.
#[inline(never)]
fn deep(depth: usize, d: &mut Depth) -> usize {
    tessera_stacks::maybe_grow(RED_ZONE, SEGMENT, || {
        let buf = std::hint::black_box([depth as u8; 1024]);
        let left = tessera_stacks::remaining_stack().unwrap();
        if left < d.last {
            d.used += d.last - left;
        }
        d.last = left;
        let below = if depth == 0 {
            0
        } else {
            deep(depth - 1, d) + 1
        };
        std::hint::black_box(&buf);
        below
    })
}

/// Recurses until the stack used adds up to `target` bytes; returns the levels it took.
fn deep_until(target: usize) -> (usize, usize) {
    // Double the depth until the recursion has used enough stack.
    let mut levels = 64;
    loop {
        let mut d = Depth::default();
        assert_eq!(deep(levels, &mut d), levels);
        if d.used >= target {
            return (levels, d.used);
        }
        levels *= 2;
    }
}

#[test]
fn recursion_ten_times_deeper_than_a_coroutine_stack() {
    let stack_size = 64 << 10;
    let stack = tessera_stacks::acquire(stack_size).unwrap();
    let mut co = Coroutine::<(), (), (usize, usize), _>::with_stack(stack, move |_, ()| {
        deep_until(10 * stack_size)
    });
    let (levels, used) = match co.resume(()) {
        corosensei::CoroutineResult::Return(r) => r,
        corosensei::CoroutineResult::Yield(()) => unreachable!(),
    };
    assert!(used >= 10 * stack_size);
    eprintln!("{levels} levels, {used} bytes of stack, from a 64 KiB coroutine stack");
}

#[test]
fn recursion_ten_times_deeper_than_a_thread_stack() {
    let stack_size = 128 << 10;
    let (_, used) = std::thread::Builder::new()
        .stack_size(stack_size)
        .spawn(move || deep_until(10 * stack_size))
        .unwrap()
        .join()
        .unwrap();
    assert!(used >= 10 * stack_size);
}
#[test]
fn remaining_stack_on_a_coroutine_counts_down_from_its_size() {
    let stack = tessera_stacks::acquire(32 << 10).unwrap();
    let mut co = Coroutine::<(), (), usize, _>::with_stack(stack, |_, ()| {
        tessera_stacks::remaining_stack().unwrap()
    });
    let left = match co.resume(()) {
        corosensei::CoroutineResult::Return(n) => n,
        corosensei::CoroutineResult::Yield(()) => unreachable!(),
    };
    assert!(left < 32 << 10 && left > 28 << 10, "{left}");
}

#[test]
fn unknown_stacks_always_grow() {
    // A corosensei default stack is neither a tessera stack nor the thread's: unknown.
    let mut co = Coroutine::<(), (), (Option<usize>, Option<usize>), _>::new(|_, ()| {
        let outside = tessera_stacks::remaining_stack();
        let inside = tessera_stacks::maybe_grow(1, SEGMENT, tessera_stacks::remaining_stack);
        (outside, inside)
    });
    let (outside, inside) = match co.resume(()) {
        corosensei::CoroutineResult::Return(r) => r,
        corosensei::CoroutineResult::Yield(()) => unreachable!(),
    };
    assert_eq!(outside, None);
    assert!(inside.is_some_and(|n| n <= SEGMENT));
}

#[inline(never)]
fn caller_with_a_recognisable_name() -> String {
    tessera_stacks::grow(256 << 10, || {
        std::backtrace::Backtrace::force_capture().to_string()
    })
}

#[test]
fn backtraces_walk_from_a_segment_back_to_the_caller() {
    // The trampoline's CFI describes its frame through the frame pointer, so the unwinder
    // gets from the segment back onto the original stack and finds the caller.
    let trace = caller_with_a_recognisable_name();
    assert!(trace.contains("caller_with_a_recognisable_name"), "{trace}");
    assert!(
        trace.contains("backtraces_walk_from_a_segment_back_to_the_caller"),
        "{trace}"
    );
}
