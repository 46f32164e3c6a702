/*
 * glibc_simple.c: allocate many small blocks, free them all, repeat (C mode of
 * tessera-bench; the shape of glibc's bench-malloc-simple, written here from that
 * description).
 *
 * Models a program that builds a large structure of small nodes and then tears it down:
 * each round, each thread allocates COUNT blocks of one size, then frees them in the order
 * it allocated them; the size cycles through 16, 64, 256 and 1024 B over the rounds. This
 * measures the allocator's bulk paths (refilling a thread cache from shared lists,
 * returning whole pages) rather than the block-just-freed case of fastpath. One operation
 * is one malloc (each later freed).
 */
#include "harness.h"

#define COUNT 4096
static const size_t SIZES[] = {16, 64, 256, 1024};

static void *rounds(void *arg) {
    struct worker *w = arg;
    const uint64_t deadline = *(const uint64_t *)w->shared;
    uint64_t rng = rng_seed((uint64_t)w->index);
    void **live = must_malloc(COUNT * sizeof *live);
    uint64_t ops = 0;
    for (unsigned round = 0;; round++) {
        size_t size = SIZES[round % 4];
        uint64_t tag = rng_next(&rng);
        for (size_t i = 0; i < COUNT; i++)
            live[i] = block_new(size, tag ^ i);
        for (size_t i = 0; i < COUNT; i++)
            block_free(live[i], size, tag ^ i);
        ops += COUNT;
        if (now_ns() >= deadline)
            break;
    }
    free(live);
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "glibc-simple");
    uint64_t deadline = now_ns() + a.budget_ns;
    return run_phase("glibc-simple", a, rounds, &deadline);
}
