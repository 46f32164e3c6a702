/* Heap attacks that libtessera.so must stop with a report (issue #15), chosen by argv[1],
 * with a block size in argv[2] where it matters. Run as a child by .ci/preload.sh, which
 * expects SIGABRT and a "tessera: ..." line on stderr. Each mode ends by checking whether
 * the attack worked; reaching the end of main means it was not stopped: the program prints
 * what happened and exits 0, so the script sees the failure.
 *
 *   overflow SIZE        a linear overflow from a block rewrites the link of its freed
 *                        neighbour with the address of a global; later mallocs must never
 *                        return that address
 *   double-abca SIZE     free(a); free(b); free(c); free(a): a double free under two others
 *   double-deep SIZE N   free(a), then N other blocks, then free(a) again
 *   double-old SIZE      the same at depth 3 in a span the thread no longer allocates from
 *   double-old-head SIZE free(a); free(a) in a span the thread no longer allocates from (a
 *                        is then the head of that span's local list)
 *   double-thread SIZE   a freed by its owner, then freed again by another thread
 *   double-thread-old SIZE  the same, in a span the owner no longer allocates from
 *   double-remote SIZE   another thread frees a block of the main thread twice
 *   double-remote-owner SIZE  another thread frees a block of the main thread, then the main
 *                        thread frees it too, before the other thread's remote frees go out
 *   double-remote-apart SIZE  the same with a block of another span freed in between (the
 *                        two frees go onto the span's remote list in separate pushes)
 *   realloc-freed SIZE   realloc() of a freed block
 *   realloc-interior SIZE  realloc(p + 16, ...) of a live block
 *   usable-freed SIZE    malloc_usable_size() of a freed block */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where an attacker would like malloc to return: a global. */
static char target[4096] __attribute__((aligned(64)));

/* Enough blocks to use up more than one span of any small class. */
enum { MANY = 40000 };
static void *volatile blocks[MANY];

static void *volatile shared;

/* Writes through a volatile pointer, so the compiler keeps the out-of-bounds store. */
static void poke(void *at, uintptr_t value) {
    *(volatile uintptr_t *)at = value;
}

/* Allocates `n` blocks of `size` and reports whether any address came out twice. */
static int mallocs_repeat(size_t size, int n) {
    void **seen = calloc((size_t)n, sizeof *seen);
    if (!seen) return 0;
    int dup = 0;
    for (int i = 0; i < n && !dup; i++) {
        seen[i] = malloc(size);
        if ((char *)seen[i] >= target && (char *)seen[i] < target + sizeof target) {
            printf("malloc returned the attacker's address %p\n", seen[i]);
            return 1;
        }
        for (int j = 0; j < i; j++) {
            if (seen[j] == seen[i]) {
                printf("malloc(%zu) handed out %p twice\n", size, seen[i]);
                dup = 1;
                break;
            }
        }
    }
    return dup;
}

static void *free_shared(void *arg) {
    (void)arg;
    free(shared);
    return NULL;
}

static void *free_shared_twice(void *arg) {
    (void)arg;
    free(shared);
    free(shared);
    return NULL;
}

static void *volatile other;

static void *free_shared_twice_apart(void *arg) {
    (void)arg;
    free(shared);
    free(other);
    free(shared);
    return NULL;
}

static pthread_barrier_t step;

static void *free_shared_then_wait(void *arg) {
    (void)arg;
    free(shared);
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    return NULL;
}

static void in_thread(void *(*body)(void *)) {
    pthread_t t;
    if (pthread_create(&t, NULL, body, NULL) || pthread_join(t, NULL)) exit(3);
}

/* Fills more than a span of `size`, so that blocks[0]'s span is no longer the thread's
 * current one. */
static void fill(size_t size) {
    for (int i = 0; i < MANY; i++) blocks[i] = malloc(size);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    size_t size = strtoul(argv[2], NULL, 10);
    int stopped_not = 0;
    if (!strcmp(mode, "overflow")) {
        /* Two neighbours: the second starts where the first's usable bytes end. */
        char *a = NULL, *b = NULL;
        for (int i = 0; i < 64 && !b; i++) {
            blocks[i] = malloc(size);
            for (int j = 0; j < i; j++) {
                char *p = blocks[j];
                if ((char *)blocks[i] == p + malloc_usable_size(p)) {
                    a = p;
                    b = blocks[i];
                    break;
                }
            }
        }
        if (!b) {
            printf("no neighbouring blocks of %zu bytes\n", size);
            return 4;
        }
        free(b);
        /* The overflow: one word past a's end is b's link. */
        poke(a + malloc_usable_size(a), (uintptr_t)target);
        stopped_not = mallocs_repeat(size, 8);
        if (!stopped_not) printf("overflow: the link was not followed, but not reported\n");
        stopped_not = 1;
    } else if (!strcmp(mode, "double-abca")) {
        void *a = malloc(size), *b = malloc(size), *c = malloc(size);
        free(a);
        free(b);
        free(c);
        free(a);
        stopped_not = mallocs_repeat(size, 6) || 1;
    } else if (!strcmp(mode, "double-deep")) {
        int depth = argc > 3 ? atoi(argv[3]) : 1;
        if (depth < 0 || depth >= MANY) return 2;
        void *a = malloc(size);
        for (int i = 0; i < depth; i++) blocks[i] = malloc(size);
        free(a);
        for (int i = 0; i < depth; i++) free(blocks[i]);
        free(a);
        stopped_not = mallocs_repeat(size, depth + 4) || 1;
    } else if (!strcmp(mode, "double-old")) {
        fill(size);
        free(blocks[0]);
        free(blocks[1]);
        free(blocks[2]);
        free(blocks[0]);
        stopped_not = 1;
    } else if (!strcmp(mode, "double-old-head")) {
        fill(size);
        free(blocks[0]);
        free(blocks[0]);
        stopped_not = 1;
    } else if (!strcmp(mode, "double-thread")) {
        void *keep = malloc(size);
        shared = malloc(size);
        free(shared);
        in_thread(free_shared);
        /* The owner finds out when it takes its remote frees: use the span up. */
        stopped_not = mallocs_repeat(size, 3000) || 1;
        (void)keep;
    } else if (!strcmp(mode, "double-thread-old")) {
        fill(size);
        shared = blocks[1];
        free(shared);
        in_thread(free_shared);
        /* Empty the rest of the span: its count must not reach "empty" with a live block
         * in it, and the owner checks before it believes the count. */
        for (int i = 0; i < MANY; i++)
            if (i != 1) free(blocks[i]);
        stopped_not = 1;
    } else if (!strcmp(mode, "double-remote")) {
        shared = malloc(size);
        in_thread(free_shared_twice);
        stopped_not = 1;
    } else if (!strcmp(mode, "double-remote-owner")) {
        void *keep = malloc(size);
        shared = malloc(size);
        pthread_t t;
        if (pthread_barrier_init(&step, NULL, 2) || pthread_create(&t, NULL, free_shared_then_wait, NULL))
            exit(3);
        pthread_barrier_wait(&step); /* the other thread has freed it */
        free(shared);                /* and its owner frees it too */
        pthread_barrier_wait(&step);
        pthread_join(t, NULL); /* the other thread's exit sends its remote frees */
        stopped_not = mallocs_repeat(size, 3000) || 1;
        (void)keep;
    } else if (!strcmp(mode, "double-remote-apart")) {
        shared = malloc(size);
        other = malloc(size * 4);
        in_thread(free_shared_twice_apart);
        /* The owner finds out when it takes its remote frees: use the span up. */
        stopped_not = mallocs_repeat(size, 3000) || 1;
    } else if (!strcmp(mode, "realloc-freed")) {
        void *keep = malloc(size);
        void *p = malloc(size);
        free(p);
        void *q = realloc(p, size / 2 + 1);
        printf("realloc returned %p\n", q);
        stopped_not = mallocs_repeat(size, 8) || 1;
        (void)keep;
    } else if (!strcmp(mode, "realloc-interior")) {
        char *p = malloc(size);
        void *q = realloc(p + 16, size / 2 + 1);
        printf("realloc returned %p\n", q);
        stopped_not = 1;
    } else if (!strcmp(mode, "usable-freed")) {
        void *keep = malloc(size);
        void *p = malloc(size);
        free(p);
        printf("usable size %zu\n", malloc_usable_size(p));
        stopped_not = 1;
        (void)keep;
    } else {
        return 2;
    }
    printf("attacks %s %zu: not stopped (%d)\n", mode, size, stopped_not);
    return 0;
}
