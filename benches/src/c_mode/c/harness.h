/*
 * harness.h: what every C workload of `tessera-bench --c` shares. Written for this project.
 *
 * Layout of the C mode's sources: one file per workload (fastpath.c, glibc_simple.c,
 * larson.c, xmalloc.c, cache_scratch.c, mstress.c), each a complete program that includes
 * this header; the runner compiles each with `cc -O2 -pthread` into its own executable and
 * runs it under every LD_PRELOAD allocator. The programs call plain malloc and free through
 * the PLT, nothing allocator specific, as the programs people judge an allocator by do.
 *
 * Command line of every program:   PROGRAM THREADS BUDGET_MS
 *
 * A program works for about BUDGET_MS of wall time and prints exactly one result line:
 *
 *   tessera-bench-c v1 workload=larson threads=2 ops=1234 nanos=150000000 malloc=/path/lib.so
 *
 * `ops` operations (what one is depends on the workload) took `nanos` of wall time. A
 * workload that measures several series (fastpath: one per size) prints `ops.KEY=` and
 * `nanos.KEY=` per series instead. `malloc=` is last and runs to the end of the line: the
 * file that defines the `malloc` this program calls (dladdr), so the runner can tell that
 * the preload really took.
 *
 * Every block carries a check pattern (a per-allocation tag at its start, its complement at
 * its end, a stamp on every 4 KiB page in between) that is verified before it is freed. An
 * allocator that hands out overlapping or scribbled-on memory makes the program print the
 * reason on stderr and exit with status 3 instead of a figure. The page stamps also make
 * every page of a large block resident, as a real program's use would, so peak RSS is
 * honest. All of this costs every allocator the same.
 */
#ifndef TESSERA_BENCH_HARNESS_H
#define TESSERA_BENCH_HARNESS_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096

/* The program's name, for messages; set by parse_args. */
static const char *program = "workload";

/* Prints "PROGRAM: message" on stderr and exits with status 3 (a failed check). */
static inline void fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", program);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(3);
}

struct args {
    int threads;
    uint64_t budget_ns;
};

static inline struct args parse_args(int argc, char **argv, const char *name) {
    program = name;
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS BUDGET_MS\n", name);
        exit(2);
    }
    char *end;
    long threads = strtol(argv[1], &end, 10);
    if (*end != '\0' || threads < 1 || threads > 1024)
        fail("bad thread count %s", argv[1]);
    long ms = strtol(argv[2], &end, 10);
    if (*end != '\0' || ms < 1)
        fail("bad budget %s", argv[2]);
    struct args a = {(int)threads, (uint64_t)ms * 1000000u};
    return a;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- random numbers */

/* xorshift64* (Marsaglia; Vigna's multiplier): fast, and plenty for picking sizes and slots. */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A generator seeded from `seed` (any value, zero included). */
static inline uint64_t rng_seed(uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    return s ? s : 1;
}

/* Uniform in [0, n). */
static inline size_t rng_below(uint64_t *s, size_t n) {
    return (size_t)((rng_next(s) >> 11) % n);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi) {
    return lo + rng_below(s, hi - lo + 1);
}

/* ---------------------------------------------------------------- checked blocks */

static inline void *must_malloc(size_t size) {
    void *p = malloc(size);
    if (p == NULL)
        fail("malloc(%zu) returned NULL", size);
    /* x86-64's ABI wants 16 for anything that can hold a long double; an 8-byte request
     * may get 8 (jemalloc and tcmalloc have an 8-byte class). */
    size_t align = size >= 16 ? 16 : 8;
    if ((uintptr_t)p % align != 0)
        fail("malloc(%zu) returned %p, not %zu-byte aligned", size, p, align);
    return p;
}

static inline void put64(unsigned char *at, uint64_t v) { memcpy(at, &v, 8); }

static inline uint64_t get64(const unsigned char *at) {
    uint64_t v;
    memcpy(&v, at, 8);
    return v;
}

/*
 * Stamps a block of `size` >= 8 bytes with `tag`: the tag at offset 0, its complement in the
 * last 8 bytes (when they do not overlap the first 8), and tag ^ k on page k >= 1 wherever a
 * page boundary leaves room before the tail. The caller remembers size and tag (or stores
 * them in the block, as mstress does) to check the block later.
 */
static inline void stamp(void *block, size_t size, uint64_t tag) {
    unsigned char *b = block;
    put64(b, tag);
    if (size >= 16)
        put64(b + size - 8, ~tag);
    for (size_t k = 1; k * PAGE + 16 <= size; k++)
        put64(b + k * PAGE, tag ^ k);
}

/* Fails the run unless `block` still carries the stamp of (size, tag). */
static inline void check(const void *block, size_t size, uint64_t tag) {
    const unsigned char *b = block;
    if (get64(b) != tag)
        fail("block %p of %zu B: head %#llx, expected %#llx (overlapping or reused block)",
             block, size, (unsigned long long)get64(b), (unsigned long long)tag);
    if (size >= 16 && get64(b + size - 8) != ~tag)
        fail("block %p of %zu B: tail overwritten", block, size);
    for (size_t k = 1; k * PAGE + 16 <= size; k++)
        if (get64(b + k * PAGE) != (tag ^ k))
            fail("block %p of %zu B: page %zu overwritten", block, size, k);
}

/* Allocates and stamps a block. */
static inline void *block_new(size_t size, uint64_t tag) {
    void *p = must_malloc(size);
    stamp(p, size, tag);
    return p;
}

/* Checks and frees a block. */
static inline void block_free(void *p, size_t size, uint64_t tag) {
    check(p, size, tag);
    free(p);
}

/* ---------------------------------------------------------------- threads */

/* One worker thread: its index, the workload's shared state, and what it counted. */
struct worker {
    pthread_t thread;
    int index;
    void *shared;
    uint64_t ops;
};

static inline struct worker *workers_new(int n) {
    struct worker *workers = calloc((size_t)n, sizeof *workers);
    if (workers == NULL)
        fail("out of memory for %d workers", n);
    return workers;
}

/*
 * Runs `body` on `n` new threads at once (worker i gets index i and `shared`), joins them all
 * and returns the sum of their `ops`. `workers` has room for `n`.
 */
static inline uint64_t run_workers(struct worker *workers, int n, void *(*body)(void *), void *shared) {
    for (int i = 0; i < n; i++) {
        workers[i].index = i;
        workers[i].shared = shared;
        workers[i].ops = 0;
        int rc = pthread_create(&workers[i].thread, NULL, body, &workers[i]);
        if (rc != 0)
            fail("pthread_create: %s", strerror(rc));
    }
    uint64_t ops = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(workers[i].thread, NULL);
        ops += workers[i].ops;
    }
    return ops;
}

/* ---------------------------------------------------------------- the result line */

static inline void result_begin(const char *workload, int threads) {
    printf("tessera-bench-c v1 workload=%s threads=%d", workload, threads);
}

/* One series; `key` NULL for a workload's only figure. */
static inline void result_series(const char *key, uint64_t ops, uint64_t nanos) {
    if (key == NULL)
        printf(" ops=%llu nanos=%llu", (unsigned long long)ops, (unsigned long long)nanos);
    else
        printf(" ops.%s=%llu nanos.%s=%llu", key, (unsigned long long)ops, key,
               (unsigned long long)nanos);
}

static inline void result_end(void) {
    Dl_info info;
    /* `malloc` here is the PLT's target: whichever library won symbol lookup. */
    void *(*resolved)(size_t) = malloc;
    const char *owner = "unknown";
    if (dladdr((void *)resolved, &info) != 0 && info.dli_fname != NULL)
        owner = info.dli_fname;
    printf(" malloc=%s\n", owner);
    fflush(stdout);
}

/* The whole result line of a workload with one figure. */
static inline void result_one(const char *workload, int threads, uint64_t ops, uint64_t nanos) {
    result_begin(workload, threads);
    result_series(NULL, ops, nanos);
    result_end();
}

/*
 * The main of a workload that is one parallel phase: runs `body` on `a.threads` workers
 * with `shared`, times it from before the first spawn to after the last join, and prints
 * the result line.
 */
static inline int run_phase(const char *workload, struct args a, void *(*body)(void *), void *shared) {
    struct worker *workers = workers_new(a.threads);
    uint64_t start = now_ns();
    uint64_t ops = run_workers(workers, a.threads, body, shared);
    uint64_t nanos = now_ns() - start;
    free(workers);
    result_one(workload, a.threads, ops, nanos);
    return 0;
}

#endif
