/* One thread, N malloc(size) + free pairs, the sizes cycling over eight small classes (16 to
 * 512 B): the hit paths of both calls and nothing else. Prints the thread's CPU time per
 * pair in ns (CLOCK_THREAD_CPUTIME_ID). `benches/fastpath/run.sh` runs it under each cache mode.
 *
 *   cc -O2 pair.c -o pair && LD_PRELOAD=libtessera.so TESSERA_CACHE=percpu ./pair 20000000 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000000;
    static const size_t sizes[8] = {16, 32, 48, 64, 96, 128, 256, 512};
    void *volatile sink;
    /* One of each first, so that the loop finds every class's cache filled. */
    for (int i = 0; i < 8; i++) {
        void *p = malloc(sizes[i]);
        free(p);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) {
        void *p = malloc(sizes[i & 7]);
        sink = p;
        free(p);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.3f\n", ns / n);
    (void)sink;
    return 0;
}
