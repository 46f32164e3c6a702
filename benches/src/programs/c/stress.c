/*
 * stress.c: a threaded malloc stress program for `tessera-bench --programs`, written for
 * this project. Compiled at run time with `cc -O2 -pthread` and run under each LD_PRELOAD
 * allocator; its output must be identical under all of them.
 *
 * ROUNDS rounds of THREADS threads share SLOTS slots (atomic pointers). Each thread, from its
 * own seeded generator, allocates blocks of mixed sizes (8 B to 64 KiB, mostly small), fills
 * them with bytes derived from a per-block tag, and swaps them into a random slot; the block
 * it takes out (usually allocated by another thread, possibly one that has exited) is
 * checked byte for byte and freed: cross-thread frees. Threads also keep a small private
 * ring of blocks freed locally, and grow some blocks with realloc. At the end the main
 * thread empties the slots.
 *
 * Every block's content hash is added (wrapping) to `written` when it is filled and to
 * `checked` when it is read back before its free. Both sums are order independent, so they
 * are the same on every run whatever the interleaving; a lost, corrupted or doubly handed
 * out block makes `checked` differ from `written` and counts in `bad`.
 *
 * usage: stress [THREADS [OPS_PER_THREAD [ROUNDS]]]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 8192
#define RING 64

/* A block starts with this header; the payload follows. */
struct block {
    uint64_t tag;
    uint64_t size; /* total bytes, header included */
};

static _Atomic(struct block *) slots[SLOTS];
static _Atomic uint64_t written, checked, bad;

struct worker {
    pthread_t thread;
    uint64_t seed;
    long ops;
};

static uint64_t next(uint64_t *s) {
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Mostly small: 70% 16..256 B, 25% up to 4 KiB, 5% up to 64 KiB. */
static size_t pick_size(uint64_t *s) {
    uint64_t r = next(s);
    uint64_t p = r % 100;
    uint64_t v = r >> 32;
    size_t size;
    if (p < 70)
        size = 8 + v % 249;
    else if (p < 95)
        size = 257 + v % 3840;
    else
        size = 4097 + v % 61440;
    return size < sizeof(struct block) ? sizeof(struct block) : size;
}

/* The payload words that are written and checked: every word of the first 256 bytes, then
 * one word in 32 (one per 256 bytes), and the last word, so big blocks are touched along
 * their whole length without the byte traffic drowning the allocator's own cost. */
static size_t step(size_t k, size_t words) {
    size_t n = k < 32 ? k + 1 : k + 32;
    return n >= words && k + 1 < words ? words - 1 : n;
}

/* Fills the payload from the tag and returns its hash. */
static uint64_t fill(struct block *b) {
    unsigned char *p = (unsigned char *)(b + 1);
    size_t n = b->size - sizeof *b;
    uint64_t x = b->tag | 1, h = b->tag ^ b->size;
    size_t words = n / 8, i;
    for (size_t k = 0; k < words; k = step(k, words)) {
        uint64_t w = next(&x);
        memcpy(p + k * 8, &w, 8);
        h = (h ^ w) * 0x100000001B3ULL;
    }
    for (i = words * 8; i < n; i++) {
        p[i] = (unsigned char)(x >> (i % 8 * 8));
        h = (h ^ p[i]) * 0x100000001B3ULL;
    }
    return h;
}

/* Recomputes the payload's hash and checks it against the tag's bytes. */
static uint64_t check(const struct block *b) {
    const unsigned char *p = (const unsigned char *)(b + 1);
    size_t n = b->size - sizeof *b;
    uint64_t x = b->tag | 1, h = b->tag ^ b->size;
    size_t words = n / 8, i;
    int wrong = 0;
    for (size_t k = 0; k < words; k = step(k, words)) {
        uint64_t want = next(&x), got;
        memcpy(&got, p + k * 8, 8);
        wrong |= got != want;
        h = (h ^ got) * 0x100000001B3ULL;
    }
    for (i = words * 8; i < n; i++) {
        wrong |= p[i] != (unsigned char)(x >> (i % 8 * 8));
        h = (h ^ p[i]) * 0x100000001B3ULL;
    }
    if (wrong)
        atomic_fetch_add(&bad, 1);
    return h;
}

static struct block *make(uint64_t tag, size_t size, uint64_t *sum) {
    struct block *b = malloc(size);
    if (!b) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(2);
    }
    b->tag = tag;
    b->size = size;
    *sum += fill(b);
    return b;
}

static void *work(void *arg) {
    struct worker *w = arg;
    uint64_t s = w->seed, wsum = 0, csum = 0;
    struct block *ring[RING] = {0};
    for (long op = 0; op < w->ops; op++) {
        uint64_t tag = (w->seed << 24) ^ (uint64_t)op;
        size_t size = pick_size(&s);
        uint64_t r = next(&s);
        if (r % 4 == 0) {
            /* Private ring: allocated and freed by this thread. */
            struct block **slot = &ring[(r >> 8) % RING];
            if (*slot) {
                csum += check(*slot);
                free(*slot);
            }
            *slot = make(tag, size, &wsum);
        } else if (r % 16 == 1) {
            /* Growth by realloc, then into a shared slot. */
            struct block *b = make(tag, size, &wsum);
            csum += check(b);
            size_t bigger = size + size / 2 + 16;
            b = realloc(b, bigger);
            if (!b) {
                fprintf(stderr, "realloc(%zu) failed\n", bigger);
                exit(2);
            }
            b->size = bigger;
            wsum += fill(b);
            struct block *old = atomic_exchange(&slots[(r >> 8) % SLOTS], b);
            if (old) {
                csum += check(old);
                free(old);
            }
        } else {
            struct block *b = make(tag, size, &wsum);
            struct block *old = atomic_exchange(&slots[(r >> 8) % SLOTS], b);
            if (old) {
                csum += check(old);
                free(old);
            }
        }
    }
    for (int i = 0; i < RING; i++)
        if (ring[i]) {
            csum += check(ring[i]);
            free(ring[i]);
        }
    atomic_fetch_add(&written, wsum);
    atomic_fetch_add(&checked, csum);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long ops = argc > 2 ? atol(argv[2]) : 200000;
    int rounds = argc > 3 ? atoi(argv[3]) : 4;
    if (threads < 1 || ops < 1 || rounds < 1) {
        fprintf(stderr, "usage: stress [THREADS [OPS_PER_THREAD [ROUNDS]]]\n");
        return 2;
    }
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!workers)
        return 2;
    for (int round = 0; round < rounds; round++) {
        for (int t = 0; t < threads; t++) {
            workers[t].seed = (uint64_t)(round * 1000 + t + 1) * 0x9E3779B97F4A7C15ULL;
            workers[t].ops = ops;
            if (pthread_create(&workers[t].thread, NULL, work, &workers[t]) != 0) {
                fprintf(stderr, "pthread_create failed\n");
                return 2;
            }
        }
        for (int t = 0; t < threads; t++)
            pthread_join(workers[t].thread, NULL);
    }
    uint64_t csum = 0;
    for (int i = 0; i < SLOTS; i++) {
        struct block *b = atomic_exchange(&slots[i], NULL);
        if (b) {
            csum += check(b);
            free(b);
        }
    }
    atomic_fetch_add(&checked, csum);
    free(workers);
    uint64_t wr = atomic_load(&written), ck = atomic_load(&checked);
    /* Only order-independent figures (how many frees were remote depends on timing). */
    printf("threads %d rounds %d ops %ld\n", threads, rounds, ops);
    printf("written %016llx\nchecked %016llx\nbad %llu\n", (unsigned long long)wr,
           (unsigned long long)ck, (unsigned long long)atomic_load(&bad));
    printf("%s\n", wr == ck && atomic_load(&bad) == 0 ? "ok" : "MISMATCH");
    return wr == ck && atomic_load(&bad) == 0 ? 0 : 1;
}
