//! Stacks of finished coroutines kept on their P for the next spawn (Go's `gfput`/`gfget`
//! in proc.go, which keep dead Gs with their stacks on a per-P free list).
//!
//! Why not simply give the stack back to the P's `StackCache`: that cache holds a handful of
//! stacks per class and passes the rest to the node pool, and a stack entering the node pool
//! is shrunk with `madvise` (about 0.6 µs). A program that keeps more coroutines alive than
//! the cache holds — spawn a thousand, join a thousand — would pay that syscall and a page
//! fault on every spawn. Here a P keeps up to `MAX_PER_P` stacks of the runtime's default
//! size.
//!
//! Only stacks whose coroutine stayed in its top page are kept, so the list never pins
//! deep-recursion memory: before a stack runs a coroutine, `arm` writes canary words near
//! the bottom of its top page (away from the words tessera-stacks uses for its own check);
//! `stayed_on_top_page` reads them back when the coroutine is done. A coroutine that went
//! deeper overwrote them, and its stack goes back through the `StackCache`, which purges
//! the cold pages.

use std::sync::Mutex;

use tessera_stacks::PooledStack;

/// Moves half of a full P list to the shared list; beyond its cap, stacks go back to the
/// pool through their own `Drop` (the thread's default cache).
pub(crate) fn spill(shared: &Mutex<Vec<PooledStack>>, local: &mut Vec<PooledStack>) {
    let half = local.split_off(local.len() / 2);
    let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
    let room = MAX_SHARED.saturating_sub(g.len());
    let mut half = half;
    let extra = half.len().saturating_sub(room);
    let rest = half.split_off(half.len() - extra);
    g.extend(half);
    drop(g);
    drop(rest);
}

/// Takes a batch from the shared list into an empty P list.
pub(crate) fn refill(shared: &Mutex<Vec<PooledStack>>, local: &mut Vec<PooledStack>) {
    let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
    let n = g.len().min(BATCH);
    let at = g.len() - n;
    local.extend(g.drain(at..));
}

/// Stacks a P keeps (4 KiB resident each): at most 4 MiB per P.
pub(crate) const MAX_PER_P: usize = 1024;
/// Stacks the runtime-wide list keeps for Ps that run short (16 MiB of top pages).
const MAX_SHARED: usize = 4096;
/// Stacks moved between a P and the shared list at a time.
const BATCH: usize = 64;

const WORDS: usize = 4;
/// Byte offset of the first canary above the bottom of the top page. tessera-stacks keeps
/// its band in the lowest 512 bytes; ours sits just above it.
const OFFSET: usize = 512 + 8;
const STRIDE: usize = 64;
const SEED: usize = 0x5c4e_d7a1_e06f_3b29;

fn page() -> usize {
    4096
}

fn canary(stack: &PooledStack, i: usize) -> usize {
    (stack.base() ^ SEED).rotate_left(11 * i as u32 + 3)
}

fn word(stack: &PooledStack, i: usize) -> *mut usize {
    (stack.base() - page() + OFFSET + i * STRIDE) as *mut usize
}

/// Writes the canaries into a stack about to run a coroutine.
pub(crate) fn arm(stack: &PooledStack) {
    debug_assert!(stack.usable_size() >= 4 * page());
    for i in 0..WORDS {
        // SAFETY: the word lies in the top page of the stack's usable range (at least 16 KiB
        // above the guard), which is mapped read-write; we own the stack and nothing runs
        // on it yet.
        unsafe { word(stack, i).write_volatile(canary(stack, i)) };
    }
}

/// Whether the coroutine that just finished on `stack` left the canaries alone.
pub(crate) fn stayed_on_top_page(stack: &PooledStack) -> bool {
    (0..WORDS).all(|i| {
        // SAFETY: as in `arm`; the coroutine has returned, so nobody runs on the stack.
        // Volatile: it was last written by code the compiler cannot see.
        unsafe { word(stack, i).read_volatile() == canary(stack, i) }
    })
}
