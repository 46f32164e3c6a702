//! Spans of the shared classes (above 1 KiB, `size_class::shared`): a cache gives up a span
//! it has used up, the remote frees that bring its objects back file it on the node's
//! central list, where any thread's cache takes it, and one they empty goes back to the
//! page heap. Each scenario runs alone in a child process with thread caches, so that no
//! other test's thread takes the spans or brings spans of the class.

#[allow(dead_code)] // Of the shared helpers, only `in_child` serves here.
mod common;

use std::sync::mpsc;
use std::thread;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// Blocks the first thread allocates: a multiple of the remote batch (64), so the freeing
/// thread's batches go out as they fill.
const N: usize = 512;

/// Runs `scenario` in a child with thread caches and checks that it passed.
fn run(test: &str, scenario: &str, body: impl FnOnce()) {
    if let Some(out) = common::in_child(test, scenario, &[("TESSERA_CACHE", "thread")], body) {
        assert!(
            out.status.success(),
            "{scenario} in a child:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Allocates `N` blocks of `size` on a thread that then waits (its cache stays alive and
/// owns what it has not given up) until the returned sender is dropped. Before them, the
/// thread has a first round of its blocks freed by another thread: a cache gives up its
/// used-up spans of a class only once other threads free its objects of it
/// (`Cache::park_current`).
///
/// Returns the blocks, the spans of the class after that first round (the thread's cache
/// keeps some of them, as its spare and in its stash: see `Cache::release_if_empty`), the
/// sender and the thread.
fn allocate_on_waiting_thread(
    size: usize,
) -> (Vec<usize>, usize, mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (blocks_tx, blocks_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let first: Vec<usize> = (0..64).map(|_| tessera::alloc(size, 8) as usize).collect();
        assert!(first.iter().all(|&p| p != 0));
        free_on_another_thread(first, size);
        // The first round's frees reach this cache at its next refill.
        let p = tessera::alloc(size, 8);
        // SAFETY: just allocated, freed once.
        unsafe { tessera::dealloc(p, size, 8) };
        let warm = class_of(size).spans;
        let blocks: Vec<usize> = (0..N).map(|_| tessera::alloc(size, 8) as usize).collect();
        assert!(blocks.iter().all(|&p| p != 0));
        blocks_tx.send((blocks, warm)).unwrap();
        // Wait, alive, until the test is done.
        let _ = done_rx.recv();
    });
    let (blocks, warm) = blocks_rx.recv().unwrap();
    (blocks, warm, done_tx, owner)
}

/// The statistics of the class that holds `size` bytes.
fn class_of(size: usize) -> tessera::ClassStats {
    *tessera::stats()
        .classes
        .iter()
        .find(|c| c.size >= size)
        .expect("a class holds the size")
}

/// Frees `blocks` of `size` on a thread of its own, which exits (publishing its last
/// remote batch) before this returns.
fn free_on_another_thread(blocks: Vec<usize>, size: usize) {
    thread::spawn(move || {
        for p in blocks {
            // SAFETY: each block is live and freed once, here.
            unsafe { tessera::dealloc(p as *mut u8, size, 8) };
        }
    })
    .join()
    .unwrap();
}

/// A thread's used-up spans, whose objects a second thread frees while the first still
/// runs, serve a third thread's allocations. When the first thread's cache kept them (on
/// its full list, then its partial list once notified), none of the third thread's blocks
/// came from them: they waited for the first thread, which allocates no more.
#[test]
fn spans_freed_into_by_another_thread_serve_a_third() {
    run(
        "spans_freed_into_by_another_thread_serve_a_third",
        "third",
        || {
            const SIZE: usize = 2048;
            let (blocks, _, done, owner) = allocate_on_waiting_thread(SIZE);
            let first: std::collections::HashSet<usize> = blocks.iter().copied().collect();
            // Keep every eighth block, so that no span (4 objects or more) is sure to empty
            // and go back to the page heap: what the third thread reuses comes from the
            // central list, not from wherever the page heap places a fresh span.
            let (kept, freed): (Vec<_>, Vec<_>) =
                blocks.iter().enumerate().partition(|(i, _)| i % 8 == 0);
            free_on_another_thread(freed.into_iter().map(|(_, &p)| p).collect(), SIZE);
            let again = thread::spawn(move || {
                (0..N - N / 8)
                    .map(|_| tessera::alloc(SIZE, 8) as usize)
                    .collect::<Vec<usize>>()
            })
            .join()
            .unwrap();
            let reused = again.iter().filter(|p| first.contains(p)).count();
            assert!(
                reused >= again.len() / 2,
                "{reused} of {} blocks reused the first thread's spans",
                again.len()
            );
            for p in again.into_iter().chain(kept.into_iter().map(|(_, &p)| p)) {
                // SAFETY: each block is live and freed once.
                unsafe { tessera::dealloc(p as *mut u8, SIZE, 8) };
            }
            drop(done);
            owner.join().unwrap();
        },
    );
}

/// A given-up span that remote frees empty goes back to the page heap at the free that
/// empties it, but for one spare per central list, which a sweep of the lists (the
/// purger's, or here `collect`'s) takes: no cache would see such a span empty before one
/// takes it again, and a program done with the class would keep every one. Here another
/// thread frees every block while the allocating one still runs: only its current span
/// (its own) stays.
#[test]
fn emptied_shared_spans_go_back_to_the_page_heap() {
    run(
        "emptied_shared_spans_go_back_to_the_page_heap",
        "emptied",
        || {
            // A class of its own (20,480 B): the harness allocates nothing of it.
            const SIZE: usize = 20_000;
            let (blocks, warm, done, owner) = allocate_on_waiting_thread(SIZE);
            let during = class_of(SIZE);
            assert!(
                during.spans > warm + 8,
                "{during:?}, {warm} after the first round"
            );
            free_on_another_thread(blocks, SIZE);
            // At the frees that emptied them; the central list keeps one as its spare. The
            // first round's spans stayed with the allocating thread's cache.
            let freed = class_of(SIZE);
            assert!(
                freed.spans <= warm + 2 && freed.central_spans <= 1,
                "emptied spans stayed: {during:?} -> {freed:?}, {warm} after the first round"
            );
            // The sweep of a reclaim takes the spare too.
            tessera::collect();
            let after = class_of(SIZE);
            assert!(
                after.spans <= warm + 1 && after.central_spans == 0,
                "the spare stayed: {freed:?} -> {after:?}, {warm} after the first round"
            );
            drop(done);
            owner.join().unwrap();
        },
    );
}

/// A cache whose objects no other thread frees keeps its used-up spans of the shared
/// classes: given up, each would come back only to it, and each of its own frees into one
/// would be a remote free meanwhile. Here one thread allocates and frees its own blocks in
/// rounds; no span of the class ever reaches the central list.
#[test]
fn spans_freed_by_their_own_thread_alone_stay_with_its_cache() {
    run(
        "spans_freed_by_their_own_thread_alone_stay_with_its_cache",
        "own",
        || {
            // A class of its own (12,288 B): the harness allocates nothing of it.
            const SIZE: usize = 12_000;
            thread::spawn(|| {
                for _ in 0..4 {
                    let blocks: Vec<usize> =
                        (0..N).map(|_| tessera::alloc(SIZE, 8) as usize).collect();
                    assert!(blocks.iter().all(|&p| p != 0));
                    for p in blocks {
                        // SAFETY: each block is live and freed once, here.
                        unsafe { tessera::dealloc(p as *mut u8, SIZE, 8) };
                    }
                    let listed = class_of(SIZE).central_spans;
                    assert_eq!(listed, 0, "the thread's spans went to the central list");
                }
            })
            .join()
            .unwrap();
        },
    );
}
