/* Sampled guarded allocations (issue #15, item 3), run by .ci/preload.sh under LD_PRELOAD
 * with TESSERA_GUARDED_SAMPLE_RATE=1, so every allocation is guarded until the pool's slots
 * are all live. The mode is argv[1], a block size argv[2]:
 *
 *   overflow SIZE   writes one byte past the end of a fresh block (SIZE a multiple of 16,
 *                   so the block ends flush against its guard): must die with tessera's
 *                   report naming the address, the block and the stack of its allocation
 *   uaf SIZE        reads a block after freeing it: the report must add the free's stack
 *   normal          ordinary work with the rate set: mallocs, callocs, reallocs across
 *                   size classes, malloc_usable_size, frees in other orders, another thread,
 *                   and more live blocks than the pool has slots; must exit 0
 *
 * The first two print "not stopped" and exit 0 if the access goes through, so the script
 * sees the failure. Built with -fno-builtin so every call reaches the allocator. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what) {
    fprintf(stderr, "guarded: %s\n", what);
    exit(1);
}

/* Kept out of line, so their frames appear in the reported stacks. */
__attribute__((noinline)) static char *make_block(size_t size) {
    char *p = malloc(size);
    if (p == NULL)
        fail("malloc failed");
    memset(p, 'a', size);
    return p;
}

__attribute__((noinline)) static void drop_block(char *p) {
    free(p);
}

static int overflow(size_t size) {
    char *p = make_block(size);
    printf("block %p, writing at %p\n", (void *)p, (void *)(p + size));
    fflush(stdout);
    ((volatile char *)p)[size] = 'x';
    printf("not stopped: wrote one byte past a %zu-byte block\n", size);
    return 0;
}

static int use_after_free(size_t size) {
    char *p = make_block(size);
    drop_block(p);
    char c = ((volatile char *)p)[size / 2];
    printf("not stopped: read '%c' from a freed block\n", c);
    return 0;
}

static void *thread_work(void *arg) {
    char **blocks = arg;
    /* Frees blocks the main thread allocated, then allocates its own. */
    for (int i = 0; i < 64; i++)
        free(blocks[i]);
    for (int i = 0; i < 64; i++) {
        blocks[i] = make_block(24 + i);
    }
    return NULL;
}

static int normal(void) {
    enum { N = 2000 };
    static char *live[N];
    size_t sizes[] = {1, 8, 13, 16, 24, 100, 256, 1000, 4096, 5000, 20000, 32768, 100000};
    size_t nsizes = sizeof sizes / sizeof sizes[0];
    /* More live blocks than slots: the pool runs out, the rest come from spans. */
    for (int i = 0; i < N; i++) {
        size_t size = sizes[i % nsizes];
        live[i] = make_block(size);
        if (malloc_usable_size(live[i]) < size)
            fail("usable size below the request");
        if (((uintptr_t)live[i] & (size <= 8 ? 7 : 15)) != 0)
            fail("misaligned block");
    }
    for (int i = 0; i < N; i++) {
        size_t size = sizes[i % nsizes];
        for (size_t j = 0; j < size; j++)
            if (live[i][j] != 'a')
                fail("block contents changed");
    }
    /* Free every other one (back to quarantine), then grow the rest with realloc. */
    for (int i = 0; i < N; i += 2) {
        free(live[i]);
        live[i] = NULL;
    }
    for (int i = 1; i < N; i += 2) {
        size_t size = sizes[i % nsizes];
        char *q = realloc(live[i], size * 2 + 1);
        if (q == NULL)
            fail("realloc failed");
        for (size_t j = 0; j < size; j++)
            if (q[j] != 'a')
                fail("realloc lost the contents");
        live[i] = q;
    }
    for (int i = 0; i < 200; i++) {
        char *z = calloc(1, 64 + i);
        for (int j = 0; j < 64 + i; j++)
            if (z[j] != 0)
                fail("calloc block not zeroed");
        free(z);
    }
    void *aligned = NULL;
    if (posix_memalign(&aligned, 64, 200) != 0 || ((uintptr_t)aligned & 63) != 0)
        fail("posix_memalign");
    free(aligned);
    char *cross[64];
    for (int i = 0; i < 64; i++)
        cross[i] = make_block(48);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_work, cross) != 0)
        fail("pthread_create");
    pthread_join(t, NULL);
    for (int i = 0; i < 64; i++)
        free(cross[i]);
    for (int i = 0; i < N; i++)
        free(live[i]);
    /* Many short-lived blocks through the quarantine. */
    for (int i = 0; i < 20000; i++)
        drop_block(make_block(16 + i % 200));
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "normal") == 0)
        return normal();
    if (argc < 3)
        fail("usage: guarded overflow|uaf SIZE | guarded normal");
    size_t size = (size_t)strtoul(argv[2], NULL, 10);
    if (strcmp(argv[1], "overflow") == 0)
        return overflow(size);
    if (strcmp(argv[1], "uaf") == 0)
        return use_after_free(size);
    fail("unknown mode");
    return 1;
}
