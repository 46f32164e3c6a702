/* Hands libtessera.so a pointer it must refuse, chosen by argv[1]. Run as a child by
 * .ci/preload.sh, which expects SIGABRT and a "tessera: ..." line on stderr. Reaching the
 * end of main means the bad pointer was accepted: exit 0 so the script sees the failure.
 *
 *   stack          free() of a stack address
 *   realloc-stack  realloc() of a stack address
 *   usable-global  malloc_usable_size() of a global
 *   interior       free() of a pointer into the middle of a small block
 *   interior-odd   free() of p + 16 in a 48-byte block (a class that is not a power of two)
 *   interior-old   free() of an interior pointer in a span the thread no longer allocates from
 *   double-small   free(p); free(p) of a small block
 *   double-old     free(p); free(p) of a small block of a span the thread no longer allocates from
 *   realloc-interior  realloc() of a pointer into the middle of a small block
 *   double-large   the second free() of a 200 KiB block
 *   double-huge    the second free() of a 64 MiB block (its own mapping) */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char global_buffer[64];

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    char local[64];
    volatile char *sink = local;
    sink[0] = 1;
    if (!strcmp(mode, "stack")) {
        free((void *)sink);
    } else if (!strcmp(mode, "realloc-stack")) {
        void *p = realloc((void *)sink, 128);
        printf("realloc returned %p\n", p);
    } else if (!strcmp(mode, "usable-global")) {
        printf("usable size %zu\n", malloc_usable_size(global_buffer));
    } else if (!strcmp(mode, "interior")) {
        char *p = malloc(64);
        free(p + 8);
    } else if (!strcmp(mode, "interior-odd")) {
        char *p = malloc(40);
        free(p + 16);
    } else if (!strcmp(mode, "interior-old")) {
        /* Fill more than a span of the class so the first block's span is no longer the
         * thread's current one. */
        enum { N = 20000 };
        static char *blocks[N];
        for (int i = 0; i < N; i++) blocks[i] = malloc(100);
        free(blocks[0] + 8);
    } else if (!strcmp(mode, "double-small")) {
        void *volatile keep = malloc(64);
        void *volatile p = malloc(64);
        free(p);
        free(p);
        (void)keep;
    } else if (!strcmp(mode, "double-old")) {
        enum { N = 20000 };
        static char *volatile blocks[N];
        for (int i = 0; i < N; i++) blocks[i] = malloc(100);
        free(blocks[0]);
        free(blocks[0]);
    } else if (!strcmp(mode, "realloc-interior")) {
        char *p = malloc(64);
        void *q = realloc(p + 16, 200);
        printf("realloc returned %p\n", q);
    } else if (!strcmp(mode, "double-large")) {
        void *volatile p = malloc(200 << 10);
        free(p);
        free(p);
    } else if (!strcmp(mode, "double-huge")) {
        void *volatile p = malloc(64 << 20);
        free(p);
        free(p);
    } else {
        return 2;
    }
    printf("bad_free %s: not detected\n", mode);
    return 0;
}
