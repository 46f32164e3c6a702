/*
 * remote.c: frees of blocks another thread allocated (a remote free in every allocator
 * that keeps per-thread heaps), in the order they were built or shuffled.
 *
 * A worker thread allocates N blocks of 16-64 B and writes each whole; it exits, and the
 * main thread frees them all, in allocation order or in a random order. The shuffled order
 * is what dropping a hash map another thread filled looks like (each free lands in another
 * span and block), the built order what a consumer of a producer's messages does. Prints
 * the main thread's CPU ns per free for each of ROUNDS rounds. Written for the remote-free
 * batch (alloc/src/cache/remote_batch.rs); run it through remote.sh.
 *
 *   remote [shuffled|ordered] [n=1000000] [rounds=5]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void **blocks;
static size_t count;

static uint64_t thread_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* xorshift64: the same sizes and order for every allocator. */
static uint64_t next(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static void *build(void *arg) {
    uint64_t state = (uint64_t)(uintptr_t)arg;
    for (size_t i = 0; i < count; i++) {
        size_t size = 16 + next(&state) % 49;
        blocks[i] = malloc(size);
        if (!blocks[i]) {
            perror("malloc");
            exit(2);
        }
        memset(blocks[i], (int)i, size);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int shuffled = argc < 2 || strcmp(argv[1], "ordered") != 0;
    count = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    blocks = malloc(count * sizeof *blocks);
    if (!blocks || count == 0)
        return 2;
    uint64_t state = 0x9e3779b97f4a7c15u;
    printf("%s ns/free:", shuffled ? "shuffled" : "ordered");
    for (int round = 0; round < rounds; round++) {
        pthread_t worker;
        if (pthread_create(&worker, NULL, build, (void *)(uintptr_t)(round + 1)) ||
            pthread_join(worker, NULL))
            return 3;
        if (shuffled)
            for (size_t i = count - 1; i > 0; i--) {
                size_t j = next(&state) % (i + 1);
                void *t = blocks[i];
                blocks[i] = blocks[j];
                blocks[j] = t;
            }
        uint64_t start = thread_ns();
        for (size_t i = 0; i < count; i++)
            free(blocks[i]);
        printf(" %.1f", (double)(thread_ns() - start) / (double)count);
    }
    printf("\n");
    free(blocks);
    return 0;
}
