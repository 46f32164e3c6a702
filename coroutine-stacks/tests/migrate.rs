//! Stacks and coroutines move between threads: created on one, resumed on others, dropped on
//! yet another, and each step sees the right data and the right stack bounds.

use std::sync::mpsc;
use std::thread;

use corosensei::{Coroutine, CoroutineResult, Yielder};
use tessera_stacks::{PooledStack, StackCache};

type Co = Coroutine<u64, (u64, usize), u64, PooledStack>;

/// Lets a coroutine cross threads.
struct Movable(Co);

// SAFETY: the coroutine's closure captures nothing, and its stack holds only plain integers
// and an array of them; it keeps no reference to thread-local data across a suspend (the
// crate re-derives its stack bounds from the stack pointer on every `remaining_stack` call).
unsafe impl Send for Movable {}

fn body(y: &Yielder<u64, (u64, usize)>, first: u64) -> u64 {
    // State on the coroutine's stack that must survive every migration.
    let mut history = [0u64; 64];
    let mut sum = 0;
    let mut input = first;
    for i in 0..history.len() {
        history[i] = input;
        sum += input;
        let left = tessera_stacks::remaining_stack().expect("tessera stack bounds are known");
        input = y.suspend((sum, left));
        // Everything written before the switch is still there after it.
        assert_eq!(history[..=i].iter().sum::<u64>(), sum);
    }
    history.iter().sum::<u64>() + sum
}

#[test]
fn coroutine_resumes_correctly_on_other_threads() {
    let stack = tessera_stacks::acquire(64 << 10).unwrap();
    let id = stack.id();
    let co = Movable(Coroutine::with_stack(stack, body));

    // Three workers pass the coroutine around in a ring, each resuming it once per visit.
    let workers = 3;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::channel::<(Movable, u64)>())
        .unzip();
    let (done_tx, done_rx) = mpsc::channel::<(u64, PooledStack)>();
    let mut handles = Vec::new();
    for (w, rx) in rxs.into_iter().enumerate() {
        let next = txs[(w + 1) % workers].clone();
        let done = done_tx.clone();
        handles.push(thread::spawn(move || {
            let mut expected_sum = 0u64;
            while let Ok((mut co, input)) = rx.recv() {
                match co.0.resume(input) {
                    CoroutineResult::Yield((sum, left)) => {
                        assert!(
                            left < 64 << 10,
                            "bounds of the tessera stack, not the thread's"
                        );
                        expected_sum = sum;
                        let _ = next.send((co, input + 1));
                    }
                    CoroutineResult::Return(total) => {
                        let _ = done.send((total, co.0.into_stack()));
                        break;
                    }
                }
            }
            expected_sum
        }));
    }
    txs[0].send((co, 1)).unwrap();
    let (total, stack) = done_rx.recv().unwrap();
    drop(txs);
    // Inputs were 1..=64 then 65: the history sums to 1+..+64 twice.
    assert_eq!(total, 2 * (64 * 65 / 2));
    assert_eq!(stack.id(), id);
    drop(stack); // returned on the test thread, not the thread that created it
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn stacks_acquired_in_one_cache_release_into_another() {
    let mut a = StackCache::new();
    let stack = tessera_stacks::acquire_in(&mut a, 16 << 10).unwrap();
    let id = stack.id();
    let handle = thread::spawn(move || {
        let mut b = StackCache::new();
        b.release(stack);
        assert_eq!(b.len(), 1);
        let again = tessera_stacks::acquire_in(&mut b, 16 << 10).unwrap();
        assert_eq!(again.id(), id);
        again
    });
    let again = handle.join().unwrap();
    a.release(again);
    let back = tessera_stacks::acquire_in(&mut a, 16 << 10).unwrap();
    assert_eq!(
        back.id(),
        id,
        "a cache hands out the stack released last first"
    );
}

#[test]
fn labels_do_not_outlive_their_owner() {
    let mut cache = StackCache::new();
    let mut stack = tessera_stacks::acquire_in(&mut cache, 16 << 10).unwrap();
    assert_eq!(stack.label(), 0);
    stack.set_label(77);
    assert_eq!(stack.label(), 77);
    let id = stack.id();
    cache.release(stack);
    let again = tessera_stacks::acquire_in(&mut cache, 16 << 10).unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.label(), 0);
}
