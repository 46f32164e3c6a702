/*
 * burst.c: bursts of allocation separated by pauses (C mode of tessera-bench; issue #13's
 * "burst-free-burst" workload, what a purge policy costs).
 *
 * Models a server or a batch job that builds a large working set (a request's buffers, a
 * parsed document), frees it, pauses without calling the allocator (waiting for the next
 * request: PAUSE_MS), and builds it again. Each round, each thread allocates BURST bytes
 * in blocks of 64 B to 64 KiB (checked blocks: every page is written), then frees them all,
 * then sleeps. An allocator that returned the freed pages during the pause faults them in
 * again on the next burst; one that keeps them holds the memory through the pause. Only
 * the bursts are timed (`nanos` excludes the pauses), so the figure is what the policy
 * costs the program's work; peak RSS says what keeping costs. One operation is one malloc
 * (each later freed). ROUNDS rounds whatever the budget: the pauses, not the work, set the
 * run's length.
 */
#include "harness.h"

#include <stdatomic.h>

#define BURST (48u << 20)
#define PAUSE_MS 200
#define ROUNDS 5
#define MAX_BLOCKS (BURST / 64)

struct shared {
    _Atomic uint64_t busy_ns;
};

static void *rounds(void *arg) {
    struct worker *w = arg;
    struct shared *sh = w->shared;
    uint64_t rng = rng_seed((uint64_t)w->index);
    void **live = must_malloc(MAX_BLOCKS * sizeof *live);
    size_t *sizes = must_malloc(MAX_BLOCKS * sizeof *sizes);
    uint64_t ops = 0, busy = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        uint64_t tag = rng_next(&rng);
        uint64_t start = now_ns();
        size_t n = 0, bytes = 0;
        while (bytes < BURST && n < MAX_BLOCKS) {
            /* 64 B to 64 KiB, log-uniform: most blocks small, most bytes in big ones. */
            size_t size = (size_t)64 << (rng_next(&rng) % 11);
            sizes[n] = size;
            live[n] = block_new(size, tag ^ n);
            bytes += size;
            n++;
        }
        for (size_t i = 0; i < n; i++)
            block_free(live[i], sizes[i], tag ^ i);
        busy += now_ns() - start;
        ops += n;
        if (round + 1 < ROUNDS) {
            struct timespec pause = {0, PAUSE_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    free(sizes);
    free(live);
    atomic_fetch_add(&sh->busy_ns, busy);
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "burst");
    struct shared sh = {.busy_ns = 0};
    struct worker *workers = workers_new(a.threads);
    uint64_t ops = run_workers(workers, a.threads, rounds, &sh);
    free(workers);
    /* Busy time per thread, summed over threads and divided back: the runner turns
     * ops/nanos into a rate, which is then the rate of the bursts alone. */
    result_one("burst", a.threads, ops, atomic_load(&sh.busy_ns) / (uint64_t)a.threads);
    return 0;
}
