/*
 * manythreads.c: issue #19's program in the C mode of tessera-bench: many threads (run it
 * with 64 and 256, on a machine of a few CPUs), each allocating a round of 1,000 blocks of
 * 16-512 B and then freeing them all, round after round.
 *
 * Models a server or a pool with far more threads than cores, where most threads are
 * preempted in the middle of a round: what a cache per thread keeps grows with the threads,
 * what a cache per CPU keeps with the cores. The runner reports the peak RSS beside the
 * rate; benches/manythreads.sh measures the memory kept once every thread is idle. One
 * operation is one malloc or one free.
 */
#include "harness.h"

#define BLOCKS 1000

static void *rounds(void *arg) {
    struct worker *w = arg;
    const uint64_t deadline = *(const uint64_t *)w->shared;
    uint64_t rng = rng_seed((uint64_t)w->index);
    void **live = must_malloc(BLOCKS * sizeof *live);
    size_t *sizes = must_malloc(BLOCKS * sizeof *sizes);
    uint64_t ops = 0;
    do {
        uint64_t tag = rng_next(&rng);
        for (size_t i = 0; i < BLOCKS; i++) {
            sizes[i] = rng_range(&rng, 16, 512);
            live[i] = block_new(sizes[i], tag ^ i);
        }
        for (size_t i = 0; i < BLOCKS; i++)
            block_free(live[i], sizes[i], tag ^ i);
        ops += 2 * BLOCKS;
    } while (now_ns() < deadline);
    free(sizes);
    free(live);
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "manythreads");
    uint64_t deadline = now_ns() + a.budget_ns;
    return run_phase("manythreads", a, rounds, &deadline);
}
