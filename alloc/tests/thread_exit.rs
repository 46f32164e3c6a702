//! Allocations and frees after a thread's exit handler has run (issue #13, item 7): another
//! pthread key's destructor that runs after tessera's allocates, writes and frees, and frees
//! a block the thread allocated while it was alive. Each must work, and the process must not
//! gain a cache per exited thread. (glibc's own late frees, in `__libc_thread_freeres`, are
//! exercised under `LD_PRELOAD` by `alloc/preload/tests/c/late_free.c`.)

use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

static LATE_OK: AtomicUsize = AtomicUsize::new(0);

/// Runs after tessera's exit handler: keys' destructors run in creation order, and
/// tessera's key exists from the process's first allocation, before this test made its own.
extern "C" fn late_destructor(arg: *mut libc::c_void) {
    // SAFETY: the key's value is a `Box<Vec<u64>>` leaked by the thread below.
    let kept = unsafe { Box::from_raw(arg.cast::<Vec<u64>>()) };
    let fresh: Vec<u64> = (0..1000).collect();
    let big = vec![7u8; 300_000];
    if kept.iter().sum::<u64>() == 4950 && fresh[999] == 999 && big[299_999] == 7 {
        LATE_OK.fetch_add(1, Ordering::Relaxed);
    }
    drop((kept, fresh, big));
}

#[test]
fn allocations_after_the_exit_handler_work_and_make_no_cache() {
    // The harness has allocated already, so tessera's key exists and precedes ours.
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` destructor that lives forever.
    let created = unsafe { libc::pthread_key_create(&mut key, Some(late_destructor)) };
    assert_eq!(created, 0);
    const THREADS: usize = 2000;
    const AT_ONCE: usize = 4;
    for _ in 0..THREADS / AT_ONCE {
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                std::thread::spawn(move || {
                    let kept: Box<Vec<u64>> = Box::new((0..100).collect());
                    // SAFETY: `key` is live; the value is handed to the destructor.
                    unsafe { libc::pthread_setspecific(key, Box::into_raw(kept).cast()) };
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    assert_eq!(LATE_OK.load(Ordering::Relaxed), THREADS);
    // Caches are pooled: their number is the peak of threads alive at once (plus the
    // harness's and other tests' threads), never one per exited thread.
    let caches = tessera::stats().caches;
    assert!(
        caches < 200,
        "{caches} caches after {THREADS} threads allocated after their exit handler"
    );
}
