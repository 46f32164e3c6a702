//! Coroutine-local storage follows the coroutine; `lock_to_thread` pins it to one thread.

mod common;

use std::cell::Cell;

use tessera_sched::{Runtime, coroutine_local, spawn, yield_now};

coroutine_local! {
    static COUNTER: Cell<u32> = Cell::new(0);
}

#[test]
fn coroutine_locals_are_per_coroutine_across_migration() {
    let _w = common::Watchdog::new("locals", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let hs: Vec<_> = (0..50u32)
            .map(|id| {
                spawn(move || {
                    for _ in 0..100 {
                        COUNTER.with(|c| c.set(c.get() + id));
                        yield_now();
                    }
                    COUNTER.with(|c| c.get())
                })
            })
            .collect();
        for (id, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), id as u32 * 100);
        }
    });
}

#[test]
fn lock_to_thread_keeps_the_thread() {
    let _w = common::Watchdog::new("lock_to_thread", 60);
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                spawn(|| {
                    tessera_sched::lock_to_thread();
                    assert!(tessera_sched::is_locked_to_thread());
                    let me = std::thread::current().id();
                    for i in 0..200 {
                        if i % 10 == 0 {
                            tessera_sched::sleep(std::time::Duration::from_micros(20));
                        } else {
                            yield_now();
                        }
                        assert_eq!(std::thread::current().id(), me);
                    }
                    tessera_sched::unlock_from_thread();
                })
            })
            .collect();
        // Load so that stealing would move them if they were not locked.
        let busy: Vec<_> = (0..200)
            .map(|_| {
                spawn(|| {
                    for _ in 0..50 {
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs.into_iter().chain(busy) {
            h.join().unwrap();
        }
    });
}
