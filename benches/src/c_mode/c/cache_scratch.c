/*
 * cache_scratch.c: passive false sharing (C mode of tessera-bench; after the Hoard
 * benchmark suite, Berger et al., "Hoard: a scalable memory allocator for multithreaded
 * applications", ASPLOS 2000, written here from that description).
 *
 * Models objects made by one thread and handed to others, who then allocate their own
 * working objects: the main thread allocates one small object per worker, back to back (so
 * they likely share a cache line), and hands one to each worker. Each worker frees its
 * object and then, over and over, allocates an object of the same size, writes it hard and
 * frees it. An allocator that gives the freed object (or its neighbours) back to the worker
 * keeps the workers writing to one shared cache line; one that serves each thread from its
 * own memory does not. One operation is one 8 B object allocated, written 100 times and
 * freed.
 */
#include "harness.h"

#define OBJECT 8
#define WRITES 100
/* Objects between two looks at the clock. */
#define ROUND 64

struct scratch {
    void **handed;
    uint64_t deadline;
};

static void *scratch(void *arg) {
    struct worker *w = arg;
    const struct scratch *s = w->shared;
    free(s->handed[w->index]);
    uint64_t ops = 0, seed = rng_seed((uint64_t)w->index);
    do {
        for (int r = 0; r < ROUND; r++) {
            volatile uint64_t *p = must_malloc(OBJECT);
            uint64_t value = seed + ops;
            /* Volatile: every write reaches memory, which is what false sharing slows. */
            for (int k = 0; k < WRITES; k++)
                *p = value + (uint64_t)k;
            if (*p != value + WRITES - 1)
                fail("object %p overwritten", (void *)p);
            free((void *)p);
            ops++;
        }
    } while (now_ns() < s->deadline);
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "cache-scratch");
    struct scratch s = {must_malloc((size_t)a.threads * sizeof(void *)), 0};
    for (int i = 0; i < a.threads; i++)
        s.handed[i] = must_malloc(OBJECT);
    s.deadline = now_ns() + a.budget_ns;
    int rc = run_phase("cache-scratch", a, scratch, &s);
    free(s.handed);
    return rc;
}
