/*
 * fastpath.c: malloc/free pairs of 16, 64, 256 and 1024 B in a tight loop (C mode of
 * tessera-bench; see harness.h for the command line and the result line).
 *
 * Models the allocator's best case, the one most programs spend their calls in: the block
 * just freed is the next one handed out, from the thread's own cache. Each size gets a
 * quarter of the budget and its own series in the result line (ops.16=, nanos.16=, ...), so
 * the runner can compare every size on its own. With several threads, each runs the same
 * loop on its own: that shows whether the fast path stays thread-local (no shared cache line
 * touched). One operation is one malloc+free pair.
 *
 * The blocks carry no check pattern (it would cost more than the pair itself); a volatile
 * touch of the first byte and a volatile sink for the pointer keep the compiler from
 * eliding or merging the pairs.
 */
#include "harness.h"

static const size_t SIZES[] = {16, 64, 256, 1024};
static const char *const KEYS[] = {"16", "64", "256", "1024"};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
/* Pairs between two looks at the clock. */
#define BATCH 1024

struct fastpath {
    size_t size;
    uint64_t deadline;
};

static void *pairs(void *arg) {
    struct worker *w = arg;
    const struct fastpath *f = w->shared;
    const size_t size = f->size;
    void *volatile sink;
    uint64_t ops = 0;
    do {
        for (int i = 0; i < BATCH; i++) {
            char *p = malloc(size);
            if (p == NULL)
                fail("malloc(%zu) returned NULL", size);
            *(volatile char *)p = (char)i;
            sink = p;
            free(p);
        }
        ops += BATCH;
    } while (now_ns() < f->deadline);
    (void)sink;
    w->ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "fastpath");
    struct worker *workers = workers_new(a.threads);
    uint64_t ops[NSIZES], nanos[NSIZES];
    for (size_t s = 0; s < NSIZES; s++) {
        uint64_t start = now_ns();
        struct fastpath f = {SIZES[s], start + a.budget_ns / NSIZES};
        ops[s] = run_workers(workers, a.threads, pairs, &f);
        nanos[s] = now_ns() - start;
    }
    free(workers);
    result_begin("fastpath", a.threads);
    for (size_t s = 0; s < NSIZES; s++)
        result_series(KEYS[s], ops[s], nanos[s]);
    result_end();
    return 0;
}
