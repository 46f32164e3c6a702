//! Multi-threaded stress: cross-thread frees in every direction, content checks, and the
//! accounting that says nothing leaked once everything is freed.

use std::sync::mpsc;
use std::thread;

#[global_allocator]
static A: tessera::Tessera = tessera::Tessera;

/// xorshift64*: deterministic sizes without pulling a RNG through the allocator.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn size_for(r: u64) -> usize {
    match r % 100 {
        0 => 40_000 + (r >> 8) as usize % 200_000,
        1..=10 => 1025 + (r >> 8) as usize % 31_000,
        _ => 1 + (r >> 8) as usize % 1024,
    }
}

/// A block tagged with its owner's pattern, sent between threads as an address.
struct Sent {
    addr: usize,
    size: usize,
    tag: u8,
}

fn make(size: usize, tag: u8) -> Sent {
    let ptr = tessera::alloc(size, 8);
    assert!(!ptr.is_null());
    // SAFETY: a fresh block of `size` bytes.
    unsafe { std::ptr::write_bytes(ptr, tag, size) };
    Sent {
        addr: ptr as usize,
        size,
        tag,
    }
}

fn consume(s: Sent) {
    let ptr = s.addr as *mut u8;
    // SAFETY: the block is live and `size` long; we are its only holder.
    unsafe {
        assert_eq!(ptr.read(), s.tag);
        assert_eq!(ptr.add(s.size - 1).read(), s.tag);
        assert_eq!(ptr.add(s.size / 2).read(), s.tag);
        tessera::dealloc(ptr, s.size, 8);
    }
}

#[test]
fn ring_of_threads_frees_each_others_blocks() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 60_000;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::sync_channel::<Vec<Sent>>(64))
        .unzip();
    let mut handles = Vec::new();
    for (t, rx) in receivers.into_iter().enumerate() {
        let tx = senders[(t + 1) % THREADS].clone();
        handles.push(thread::spawn(move || {
            let mut state = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
            let mut sent = 0;
            let mut local = Vec::new();
            let mut batch = Vec::with_capacity(64);
            while sent < PER_THREAD {
                let r = next(&mut state);
                let block = make(
                    size_for(r),
                    (t as u8).wrapping_mul(37).wrapping_add(r as u8),
                );
                if r.is_multiple_of(3) {
                    local.push(block);
                } else {
                    batch.push(block);
                    sent += 1;
                    if batch.len() == 64 {
                        tx.send(std::mem::replace(&mut batch, Vec::with_capacity(64)))
                            .unwrap();
                    }
                }
                if local.len() > 500 {
                    for b in local.drain(..250) {
                        consume(b);
                    }
                }
                while let Ok(incoming) = rx.try_recv() {
                    incoming.into_iter().for_each(consume);
                }
            }
            tx.send(batch).unwrap();
            drop(tx);
            local.into_iter().for_each(consume);
            // Drain what the neighbour still sends, until it hangs up.
            for incoming in rx {
                incoming.into_iter().for_each(consume);
            }
        }));
    }
    drop(senders);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn producer_consumer_every_free_remote() {
    producer_consumer(false);
}

/// The consumer frees each batch in a random order: its remote frees land in a different
/// span nearly every time, so its unpublished frees span many spans at once while the
/// producer keeps allocating from them (a block handed out before its free was published,
/// or twice, fails a content check).
#[test]
fn producer_consumer_frees_shuffled() {
    producer_consumer(true);
}

fn producer_consumer(shuffle: bool) {
    let (tx, rx) = mpsc::sync_channel::<Vec<Sent>>(16);
    let consumer = thread::spawn(move || {
        let mut n = 0;
        let mut state = 11;
        for mut batch in rx {
            n += batch.len();
            if shuffle {
                for i in (1..batch.len()).rev() {
                    batch.swap(i, next(&mut state) as usize % (i + 1));
                }
            }
            batch.into_iter().for_each(consume);
        }
        n
    });
    let mut state = 7;
    for _ in 0..2000 {
        let batch = (0..100)
            .map(|_| {
                let r = next(&mut state);
                make(1 + (r % 512) as usize, r as u8)
            })
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 200_000);
}
