/*
 * mstress.c: object migration between threads, thread churn, mixed sizes with rare large
 * objects (C mode of tessera-bench; in the spirit of mimalloc-bench's mstress, written here
 * from its description). Peak RSS matters as much as throughput here.
 *
 * Models a long-running multi-threaded program whose objects outlive the threads that made
 * them: SLOTS shared slots hold blocks. Each round, a fresh set of threads is started
 * (thread churn); each swaps new blocks into random slots and frees what it took out,
 * usually a block another thread, often a dead one, allocated (migration). Sizes are
 * mostly 16 B-4 KiB, skewed small; one allocation in LARGE_ONE_IN is 64 KiB-1 MiB, every
 * page of it touched. One swap in eight empties its slot instead, so the live set breathes.
 * One operation is one slot swap (a malloc and/or a free).
 */
#include "harness.h"

#include <stdatomic.h>

#define SLOTS 4096
#define OPS_PER_THREAD_ROUND 4096
#define LARGE_ONE_IN 256
/* A block's size is in the low bits of its tag, so whichever thread takes it out of a
 * slot can check it: sizes are at most 1 MiB, 21 bits. */
#define SIZE_BITS 21
#define SIZE_MASK ((UINT64_C(1) << SIZE_BITS) - 1)

static _Atomic(void *) slots[SLOTS];

/* Mostly small (16 B to 4 KiB, each power-of-two band equally likely, so small sizes
 * dominate), rarely large (64 KiB to 1 MiB). */
static size_t pick_size(uint64_t *rng) {
    if (rng_below(rng, LARGE_ONE_IN) == 0)
        return rng_range(rng, (size_t)64 << 10, (size_t)1 << 20);
    unsigned band = 4 + (unsigned)rng_below(rng, 8);
    size_t size = rng_range(rng, (size_t)1 << band, ((size_t)2 << band) - 1);
    return size < 4096 ? size : 4096;
}

/* Checks and frees a block taken out of a slot (NULL: the slot was empty). */
static void take(void *block) {
    if (block == NULL)
        return;
    uint64_t tag;
    memcpy(&tag, block, 8);
    size_t size = (size_t)(tag & SIZE_MASK);
    if (size < 16 || size > ((size_t)1 << 20))
        fail("block %p: head overwritten (size field %zu)", block, size);
    block_free(block, size, tag);
}

static void *churn(void *arg) {
    struct worker *w = arg;
    uint64_t rng = rng_seed(*(const uint64_t *)w->shared << 16 | (uint64_t)w->index);
    for (int i = 0; i < OPS_PER_THREAD_ROUND; i++) {
        _Atomic(void *) *slot = &slots[rng_below(&rng, SLOTS)];
        void *fresh = NULL;
        if (rng_below(&rng, 8) != 0) {
            size_t size = pick_size(&rng);
            fresh = block_new(size, (rng_next(&rng) & ~SIZE_MASK) | size);
        }
        /* acq_rel: the block taken out was stamped by another thread, whose writes must be
         * visible before we check it, and ours before anyone takes our block. */
        take(atomic_exchange_explicit(slot, fresh, memory_order_acq_rel));
    }
    w->ops = OPS_PER_THREAD_ROUND;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "mstress");
    struct worker *workers = workers_new(a.threads);
    uint64_t round = 0, start = now_ns(), ops = 0;
    do {
        ops += run_workers(workers, a.threads, churn, &round);
        round++;
    } while (now_ns() < start + a.budget_ns);
    uint64_t nanos = now_ns() - start;
    for (int i = 0; i < SLOTS; i++)
        take(atomic_exchange(&slots[i], NULL));
    free(workers);
    result_one("mstress", a.threads, ops, nanos);
    return 0;
}
