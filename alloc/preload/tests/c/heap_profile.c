/* Heap profile of a C program with two known allocation sites (issue #18): site_a keeps
 * three times the bytes site_b keeps, and site_c allocates and frees as much as both
 * (counted in alloc_space, never in inuse_space). Built without frame pointers; run under
 * LD_PRELOAD=libtessera.so with TESSERA_PROF_RATE set, it writes the profile to argv[1]
 * through the C entry point (found with dlsym, so the program links against nothing of
 * tessera's), and .ci/preload.sh reads it with `go tool pprof -top`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024
#define B_BLOCKS 24576 /* 24 MiB kept by site_b, 72 MiB by site_a */

/* Three distinct functions, each its own frame: not inlined, not cloned for a constant
 * argument, not folded into one another (noipa), and not static, so that each keeps its
 * plain name in the symbol table. */
#define SITE __attribute__((noinline, noipa))
void *site_a(size_t n);
void *site_b(size_t n);
void site_c(size_t n);

SITE void *site_a(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::"r"(p) : "memory");
    return p;
}

SITE void *site_b(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::"r"(p) : "memory");
    return p;
}

SITE void site_c(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::"r"(p) : "memory");
    free(p);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: heap_profile OUT.pb.gz\n");
        return 2;
    }
    int (*write_profile)(const char *) =
        (int (*)(const char *))dlsym(RTLD_DEFAULT, "tessera_heap_profile_write");
    if (!write_profile) {
        fprintf(stderr, "tessera_heap_profile_write not found: not under libtessera.so?\n");
        return 2;
    }
    void **kept = calloc(4 * B_BLOCKS, sizeof *kept);
    size_t n = 0;
    for (int i = 0; i < B_BLOCKS; i++) {
        for (int j = 0; j < 3; j++) {
            kept[n] = site_a(BLOCK);
            memset(kept[n++], 1, BLOCK);
        }
        kept[n] = site_b(BLOCK);
        memset(kept[n++], 2, BLOCK);
        for (int j = 0; j < 4; j++)
            site_c(BLOCK);
    }
    int rc = write_profile(argv[1]);
    if (rc != 0) {
        fprintf(stderr, "tessera_heap_profile_write: %s\n", strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        free(kept[i]);
    free(kept);
    return 0;
}
