/* Memory glibc frees after a thread's TLS destructors have run (issue #13, item 7).
 *
 * glibc runs pthread key destructors (tessera's thread-exit handler among them) and then
 * __libc_thread_freeres, which frees per-thread buffers: the text strerror builds for an
 * unknown errno, the message of a failed dlopen. Those frees reach libtessera.so after its
 * exit handler has given the thread's cache back; they must go to a shared path, not make
 * a new cache that nobody returns (4.8 KiB per thread, 96 MiB for this program, before).
 *
 * Churns THREADS threads, each allocating, calling strerror on an unknown errno and dlopen
 * on a missing library, and checks that VmRSS grows by less than LIMIT_KIB over the churn
 * (the first batch warms up first). Prints "late_free: OK" or the growth. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rss.h"

#define THREADS 20000
#define AT_ONCE 8
#define LIMIT_KIB (16 * 1024)

static void *body(void *arg) {
    unsigned n = (unsigned)(size_t)arg;
    char *own = malloc(100 + n % 200);
    if (!own) return (void *)1;
    snprintf(own, 100, "%s", strerror(100000 + (int)(n % 1000)));
    if (dlopen("/nonexistent/libtessera-late-free.so", RTLD_NOW)) return (void *)1;
    (void)dlerror();
    if (dlopen("/nonexistent/libtessera-late-free-2.so", RTLD_NOW)) return (void *)1;
    free(own);
    return NULL;
}

static int churn(unsigned from, unsigned to) {
    for (unsigned i = from; i < to; i += AT_ONCE) {
        pthread_t t[AT_ONCE];
        unsigned n = to - i < AT_ONCE ? to - i : AT_ONCE;
        for (unsigned k = 0; k < n; k++)
            if (pthread_create(&t[k], NULL, body, (void *)(size_t)(i + k)) != 0) return 1;
        for (unsigned k = 0; k < n; k++) {
            void *ret;
            pthread_join(t[k], &ret);
            if (ret) return 1;
        }
    }
    return 0;
}

int main(void) {
    if (churn(0, 200)) {
        fprintf(stderr, "late_free: a thread failed\n");
        return 1;
    }
    long before = rss_kib();
    if (churn(200, THREADS)) {
        fprintf(stderr, "late_free: a thread failed\n");
        return 1;
    }
    long grown = rss_kib() - before;
    if (before < 0 || grown > LIMIT_KIB) {
        printf("late_free: VmRSS grew by %ld KiB over %d threads (limit %d KiB)\n", grown,
               THREADS, LIMIT_KIB);
        return 1;
    }
    printf("late_free: OK (VmRSS %+ld KiB over %d threads)\n", grown, THREADS);
    return 0;
}
