/* Memory back while the program sleeps (issue #13, "Background return of memory"): allocate
 * 1 GiB in 64-byte blocks and 256 MiB in 64 KiB blocks, free everything, then make no
 * allocator call and watch VmRSS. Tessera's background purger must bring it to at most 10%
 * of the peak. The target is 2 s; this test fails only if it never gets there within
 * DEADLINE_S (a purger that does not run), so a slow machine cannot fail it, and it prints
 * how long it took. With --report it prints the curve every 100 ms for the first 2 s, for
 * any allocator (the runner's and the closing note's idle-RSS table). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rss.h"
#include <time.h>

#define DEADLINE_S 30

static void nap_100ms(void) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    int report = argc > 1 && strcmp(argv[1], "--report") == 0;
    size_t small = (1ul << 30) / 64, big = (256ul << 20) / 65536;
    void **a = malloc(small * sizeof(void *));
    void **b = malloc(big * sizeof(void *));
    if (!a || !b) return 2;
    for (size_t i = 0; i < small; i++) {
        if (!(a[i] = malloc(64))) return 2;
        memset(a[i], 1, 64);
    }
    for (size_t i = 0; i < big; i++) {
        if (!(b[i] = malloc(65536))) return 2;
        memset(b[i], 1, 65536);
    }
    long peak = rss_kib();
    for (size_t i = 0; i < small; i++) free(a[i]);
    for (size_t i = 0; i < big; i++) free(b[i]);
    free(a);
    free(b);
    /* From here on, no allocator call: rss_kib uses stdio, whose buffers were allocated by
     * the first call above and are reused. */
    long after = rss_kib();
    if (report) {
        printf("peak %ld MiB, right after free %ld MiB\n", peak >> 10, after >> 10);
        for (int t = 1; t <= 20; t++) {
            nap_100ms();
            printf("%4d ms: %ld MiB (%.0f%% of peak)\n", t * 100, rss_kib() >> 10,
                   100.0 * rss_kib() / peak);
        }
        return 0;
    }
    for (int t = 1; t <= DEADLINE_S * 10; t++) {
        nap_100ms();
        long now = rss_kib();
        if (now * 10 <= peak) {
            printf("idle_return: OK (%ld of %ld MiB after %d ms idle)\n", now >> 10, peak >> 10,
                   t * 100);
            return 0;
        }
    }
    printf("idle_return: VmRSS %ld MiB of a %ld MiB peak after %d s idle\n", rss_kib() >> 10,
           peak >> 10, DEADLINE_S);
    return 1;
}
