/* libtessera.so reaches its thread-locals through __tls_get_addr (see lib.rs). glibc's
 * __tls_get_addr itself calls malloc and free when dlopen/dlclose change the set of TLS
 * modules, so an interposed malloc that uses dynamic TLS is re-entered from inside it.
 * This program provokes exactly that, under LD_PRELOAD:
 * - loads many copies of a TLS module at once (argv[1..]: paths of distinct copies), so the
 *   thread's dynamic thread vector outgrows its initial size and glibc reallocates it;
 * - touches each module's TLS from fresh threads and from main, so glibc mallocs TLS blocks;
 * - dlcloses them all, so the next TLS access by main (inside malloc) frees those blocks;
 * - repeats, while a background thread allocates and frees without pause.
 * Prints "tls_churn: OK". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODULES 64
typedef unsigned (*touch_fn)(unsigned);

static _Atomic int stop;
static touch_fn touches[MAX_MODULES];
static int nmodules;

static void *background(void *arg) {
    (void)arg;
    void *keep[32] = {0};
    unsigned i = 0;
    while (!atomic_load(&stop)) {
        free(keep[i % 32]);
        keep[i % 32] = malloc(16 + (i * 37) % 3000);
        i++;
    }
    for (int k = 0; k < 32; k++) free(keep[k]);
    return NULL;
}

static void *toucher(void *arg) {
    unsigned sum = (unsigned)(size_t)arg;
    for (int m = 0; m < nmodules; m++) {
        void *p = malloc(100);
        sum += touches[m](sum);
        free(p);
    }
    return (void *)(size_t)sum;
}

int main(int argc, char **argv) {
    nmodules = argc - 1 < MAX_MODULES ? argc - 1 : MAX_MODULES;
    if (nmodules < 1) {
        fprintf(stderr, "usage: tls_churn MODULE.so...\n");
        return 2;
    }
    pthread_t bg;
    pthread_create(&bg, NULL, background, NULL);
    unsigned total = 0;
    for (int round = 0; round < 30; round++) {
        void *handles[MAX_MODULES];
        for (int m = 0; m < nmodules; m++) {
            handles[m] = dlopen(argv[1 + m], RTLD_NOW | RTLD_LOCAL);
            if (!handles[m]) {
                fprintf(stderr, "dlopen %s: %s\n", argv[1 + m], dlerror());
                return 1;
            }
            touches[m] = (touch_fn)dlsym(handles[m], "touch");
        }
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, toucher, (void *)(size_t)i);
        for (int m = 0; m < nmodules; m++) total += touches[m](round);
        for (int i = 0; i < 4; i++) {
            void *ret;
            pthread_join(t[i], &ret);
            total += (unsigned)(size_t)ret;
        }
        for (int m = 0; m < nmodules; m++) dlclose(handles[m]);
        /* main's next allocations run __tls_get_addr with a stale generation: glibc frees
         * the closed modules' TLS blocks from inside it. */
        for (int i = 0; i < 1000; i++) free(malloc(24 + (size_t)i));
    }
    atomic_store(&stop, 1);
    pthread_join(bg, NULL);
    printf("tls_churn: %d modules x 30 rounds (checksum %u): OK\n", nmodules, total);
    return 0;
}
