/*
 * larson.c: a server "bleeding" memory from one generation of threads to the next (C mode
 * of tessera-bench; after Larson and Krishnan, "Memory allocation for long-running server
 * applications", ISMM 1998, written here from that description).
 *
 * Models a server whose worker threads come and go while the data they allocated lives on.
 * Each thread owns a live set of LIVE blocks of 8-1000 B; it repeatedly frees a random one
 * and allocates a replacement of a random size. After OPS_PER_GENERATION replacements the
 * thread exits, and in the next generation another thread inherits its set, so most frees
 * are of blocks a different (by then dead) thread allocated: the allocator must get them
 * home without leaking or stranding the dead thread's cache. One operation is one
 * free+malloc replacement.
 */
#include "harness.h"

#define LIVE 1000
#define MIN 8
#define MAX 1000
#define OPS_PER_GENERATION 10000

struct slot {
    void *block;
    size_t size;
    uint64_t tag;
};

struct larson {
    struct slot (*sets)[LIVE];
    int threads;
    uint64_t generation;
};

static void *bleed(void *arg) {
    struct worker *w = arg;
    const struct larson *l = w->shared;
    /* Thread i of generation g takes set (i + g) mod threads: the one thread i+1 of the
     * previous generation worked on. */
    struct slot *set = l->sets[((uint64_t)w->index + l->generation) % (uint64_t)l->threads];
    uint64_t rng = rng_seed(l->generation << 16 | (uint64_t)w->index);
    for (int i = 0; i < OPS_PER_GENERATION; i++) {
        struct slot *s = &set[rng_below(&rng, LIVE)];
        /* Free first, then allocate, so the allocator may reuse the block just freed. */
        block_free(s->block, s->size, s->tag);
        s->size = rng_range(&rng, MIN, MAX);
        s->tag = rng_next(&rng);
        s->block = block_new(s->size, s->tag);
    }
    w->ops = OPS_PER_GENERATION;
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "larson");
    struct larson l = {must_malloc((size_t)a.threads * sizeof *l.sets), a.threads, 0};
    /* The first live sets, made by the main thread before the clock starts. */
    uint64_t rng = rng_seed(0x1a25);
    for (int t = 0; t < a.threads; t++)
        for (int i = 0; i < LIVE; i++) {
            struct slot *s = &l.sets[t][i];
            s->size = rng_range(&rng, MIN, MAX);
            s->tag = rng_next(&rng);
            s->block = block_new(s->size, s->tag);
        }
    struct worker *workers = workers_new(a.threads);
    uint64_t start = now_ns(), ops = 0;
    do {
        ops += run_workers(workers, a.threads, bleed, &l);
        l.generation++;
    } while (now_ns() < start + a.budget_ns);
    uint64_t nanos = now_ns() - start;
    for (int t = 0; t < a.threads; t++)
        for (int i = 0; i < LIVE; i++)
            block_free(l.sets[t][i].block, l.sets[t][i].size, l.sets[t][i].tag);
    free(l.sets);
    free(workers);
    result_one("larson", a.threads, ops, nanos);
    return 0;
}
