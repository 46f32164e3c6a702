//! Stats and memory return: everything freed shows up as freed, thread exits do not leak
//! caches, and `collect` gives free pages back to the OS. One test per binary run order
//! matters here, so the tests share a lock.

use std::process::Command;
use std::sync::Mutex;
use std::thread;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn freeing_everything_returns_the_bytes() {
    let _guard = SERIAL.lock().unwrap();
    let mut blocks = Vec::with_capacity(200_000);
    tessera::collect();
    let before = tessera::stats();
    for i in 0..200_000usize {
        let size = [16, 48, 200, 1000, 5000, 40_000][i % 6];
        let p = tessera::alloc(size, 8);
        assert!(!p.is_null());
        blocks.push((p, size));
    }
    let during = tessera::stats();
    let requested: usize = blocks.iter().map(|&(_, s)| s).sum();
    assert!(
        during.allocated >= before.allocated + requested,
        "allocated must count every live block"
    );
    for (p, size) in blocks.drain(..) {
        // SAFETY: each block is live and freed once.
        unsafe { tessera::dealloc(p, size, 8) };
    }
    tessera::collect();
    let after = tessera::stats();
    assert!(
        after.allocated <= before.allocated + (256 << 10),
        "leak: allocated {} -> {} -> {}",
        before.allocated,
        during.allocated,
        after.allocated
    );
    assert!(
        after.active < during.active / 4,
        "spans went back to the page heap"
    );
    assert!(
        after.resident < during.resident / 2,
        "collect purged free pages: resident {} -> {}",
        during.resident,
        after.resident
    );
}

#[test]
fn ten_thousand_short_threads_stay_bounded() {
    let _guard = SERIAL.lock().unwrap();
    let start = tessera::stats();
    for wave in 0..1250 {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                thread::spawn(move || {
                    let v: Vec<Vec<u8>> = (0..20)
                        .map(|i| vec![(wave + t + i) as u8; 16 + i * 50])
                        .collect();
                    v.iter().map(|b| b.len()).sum::<usize>()
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap() > 0);
        }
    }
    let end = tessera::stats();
    // Caches are recycled: their number follows the threads alive at once, not started.
    assert!(
        end.caches <= start.caches + 16,
        "caches {} -> {}",
        start.caches,
        end.caches
    );
    assert!(
        end.mapped <= start.mapped + (256 << 20),
        "mapped {} -> {}",
        start.mapped,
        end.mapped
    );
    assert!(
        end.resident <= start.resident + (64 << 20),
        "resident {} -> {}",
        start.resident,
        end.resident
    );
}

#[test]
fn processor_caches_serve_and_flush() {
    let _guard = SERIAL.lock().unwrap();
    let cache = tessera::ProcessorCache::new().unwrap();
    // The processor moves to another thread (an M), allocates there, and comes back.
    let (mut cache, moved) = thread::spawn(move || {
        let mut cache = cache;
        // SAFETY: the guard is not leaked and ends before the cache moves on.
        let installed = unsafe { tessera::install_cache(&mut cache) };
        let v: Vec<u64> = (0..10_000).collect();
        installed.uninstall();
        (cache, v)
    })
    .join()
    .unwrap();
    // Freed on another thread with its own cache: remote frees into the processor's spans.
    assert_eq!(moved.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    drop(moved);
    cache.flush();
    drop(cache);
}

/// Runs `test` alone in a child process (this binary, `--exact`), for a test whose
/// process-wide counts must not include objects the harness allocates meanwhile.
fn run_alone(test: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in a child:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CHILD: &str = "TESSERA_ACCOUNTING_CHILD";

#[test]
fn remote_frees_batched_by_an_exiting_thread_come_home() {
    // Exact to the object in one size class, which the harness shares: in this process it
    // may start the next test's thread (name, output buffer, handles) in the middle of the
    // test, and those objects would count. In the child this is the only test, and the
    // harness waits for it without allocating.
    if std::env::var_os(CHILD).is_none() {
        return run_alone("remote_frees_batched_by_an_exiting_thread_come_home");
    }
    let _guard = SERIAL.lock().unwrap();
    tessera::collect();
    let before = tessera::stats();
    let blocks: Vec<usize> = (0..50_000)
        .map(|_| tessera::alloc(64, 8) as usize)
        .collect();
    assert!(blocks.iter().all(|&p| p != 0));
    // Another thread frees them all (every free is remote, so it batches them) and exits:
    // its exit must publish the last batch.
    thread::spawn(move || {
        for p in blocks {
            // SAFETY: each block is live and freed once, here.
            unsafe { tessera::dealloc(p as *mut u8, 64, 8) };
        }
    })
    .join()
    .unwrap();
    tessera::collect();
    let after = tessera::stats();
    let class = after.classes.iter().find(|c| c.size == 64).unwrap();
    let class_before = before.classes.iter().find(|c| c.size == 64).unwrap();
    assert!(
        class.allocated() <= class_before.allocated(),
        "64 B objects still out: {} -> {}",
        class_before.allocated(),
        class.allocated()
    );
    assert!(
        after.allocated <= before.allocated + (256 << 10),
        "{} -> {}",
        before.allocated,
        after.allocated
    );
}
