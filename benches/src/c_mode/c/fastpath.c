/*
 * fastpath.c: malloc/free pairs of 16, 64, 256 and 1024 B in a tight loop (C mode of
 * tessera-bench; see harness.h for the command line and the result line).
 *
 * Models the allocator's best case, the one most programs spend their calls in: the block
 * just freed is the next one handed out, from the thread's own cache. Each size has its own
 * series in the result line (ops.16=, nanos.16=, ...), so the runner can compare every size
 * on its own. With several threads, each runs the same loop on its own: that shows whether
 * the fast path stays thread-local (no shared cache line touched). One operation is one
 * malloc+free pair.
 *
 * A thread takes the sizes in turn, SLICE pairs at a time, and times each slice: a size's
 * time is the sum of its slices. Interleaving the sizes this finely spreads whatever else
 * the machine does over all four alike, instead of spoiling the one size that was running.
 * With several threads, a size's nanos is the mean over the threads of their time in it,
 * so ops/nanos is the threads' combined rate.
 *
 * TESSERA_BENCH_FASTPATH_SIZE=N (one of the sizes) runs that size alone and prints its
 * series alone: `tessera-bench --prof-cost` counts each size's instructions with callgrind,
 * which counts a whole process, not a size's slices. The C mode's tables never set it.
 *
 * The blocks carry no check pattern (it would cost more than the pair itself); a volatile
 * touch of the first byte and a volatile sink for the pointer keep the compiler from
 * eliding or merging the pairs.
 */
#include "harness.h"

static const size_t SIZES[] = {16, 64, 256, 1024};
static const char *const KEYS[] = {"16", "64", "256", "1024"};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
/* Pairs per timed slice: long enough that the two clock reads cost about 1%. */
#define SLICE 1024

struct times {
    uint64_t ops[NSIZES];
    uint64_t nanos[NSIZES];
};

struct fastpath {
    uint64_t deadline;
    struct times *per_thread;
    /* The sizes run: SIZES[first] to SIZES[last - 1]. */
    size_t first, last;
};

/* The range of SIZES to run: all of them, or the one TESSERA_BENCH_FASTPATH_SIZE names. */
static void pick_sizes(struct fastpath *f) {
    f->first = 0;
    f->last = NSIZES;
    const char *only = getenv("TESSERA_BENCH_FASTPATH_SIZE");
    if (only == NULL)
        return;
    for (size_t s = 0; s < NSIZES; s++) {
        if (strcmp(only, KEYS[s]) == 0) {
            f->first = s;
            f->last = s + 1;
            return;
        }
    }
    fail("TESSERA_BENCH_FASTPATH_SIZE=%s is not one of 16, 64, 256, 1024", only);
}

static void *pairs(void *arg) {
    struct worker *w = arg;
    const struct fastpath *f = w->shared;
    struct times *t = &f->per_thread[w->index];
    void *volatile sink;
    do {
        for (size_t s = f->first; s < f->last; s++) {
            const size_t size = SIZES[s];
            uint64_t start = now_ns();
            for (int i = 0; i < SLICE; i++) {
                char *p = malloc(size);
                if (p == NULL)
                    fail("malloc(%zu) returned NULL", size);
                *(volatile char *)p = (char)i;
                sink = p;
                free(p);
            }
            t->nanos[s] += now_ns() - start;
            t->ops[s] += SLICE;
        }
    } while (now_ns() < f->deadline);
    (void)sink;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "fastpath");
    struct worker *workers = workers_new(a.threads);
    struct fastpath f = {now_ns() + a.budget_ns, calloc((size_t)a.threads, sizeof(struct times)), 0, 0};
    if (f.per_thread == NULL)
        fail("out of memory");
    pick_sizes(&f);
    run_workers(workers, a.threads, pairs, &f);
    result_begin("fastpath", a.threads);
    for (size_t s = f.first; s < f.last; s++) {
        uint64_t ops = 0, nanos = 0;
        for (int t = 0; t < a.threads; t++) {
            ops += f.per_thread[t].ops[s];
            nanos += f.per_thread[t].nanos[s];
        }
        result_series(KEYS[s], ops, nanos / (uint64_t)a.threads);
    }
    result_end();
    free(f.per_thread);
    free(workers);
    return 0;
}
