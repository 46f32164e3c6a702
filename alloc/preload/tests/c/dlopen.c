/* libtessera.so loaded with dlopen instead of LD_PRELOAD: its thread-locals then live in
 * dynamic TLS that glibc allocates lazily per thread, and its functions are reached through
 * dlsym. Uses them from the main thread, from threads that exit (their blocks freed by
 * main), across fork, and after a dlclose/dlopen cycle (the library is NODELETE, so the
 * same code stays mapped). Prints "dlopen: OK".
 *
 *   dlopen PATH/TO/libtessera.so */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*realloc_fn)(void *, size_t);
typedef size_t (*usable_fn)(void *);

static malloc_fn t_malloc;
static free_fn t_free;
static realloc_fn t_realloc;
static usable_fn t_usable;
static int failures;

#define CHECK(cond, what)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAILED %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, what);   \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

#define THREADS 32
#define PER_THREAD 200
static unsigned char *left[THREADS][PER_THREAD];

static int workout(unsigned seed) {
    int bad = 0;
    unsigned char *keep[64] = {0};
    for (unsigned i = 0; i < 5000; i++) {
        unsigned slot = (seed + i * 13) % 64;
        if (keep[slot]) {
            bad += keep[slot][0] != (unsigned char)slot;
            if (i % 5 == 0) {
                keep[slot] = t_realloc(keep[slot], 1 + (i * 31) % 5000);
                bad += keep[slot][0] != (unsigned char)slot;
            }
            t_free(keep[slot]);
        }
        size_t size = 1 + (seed * 7 + i * 131) % 20000;
        keep[slot] = t_malloc(size);
        memset(keep[slot], (int)slot, size);
        bad += t_usable(keep[slot]) < size;
    }
    for (int k = 0; k < 64; k++) t_free(keep[k]);
    return bad;
}

static void *thread_main(void *arg) {
    size_t me = (size_t)arg;
    int bad = workout((unsigned)me);
    for (int i = 0; i < PER_THREAD; i++) {
        left[me][i] = t_malloc(8 + (size_t)i * 3);
        memset(left[me][i], (int)me, 8 + (size_t)i * 3);
    }
    return (void *)(size_t)bad;
}

static void load(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        exit(1);
    }
    t_malloc = (malloc_fn)dlsym(h, "malloc");
    t_free = (free_fn)dlsym(h, "free");
    t_realloc = (realloc_fn)dlsym(h, "realloc");
    t_usable = (usable_fn)dlsym(h, "malloc_usable_size");
    if (!t_malloc || !t_free || !t_realloc || !t_usable) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        exit(1);
    }
    /* The process's own malloc must still be glibc's: dlopen does not interpose. */
    Dl_info info;
    CHECK(dladdr((void *)t_malloc, &info) && strstr(info.dli_fname, "libtessera"),
          "dlsym(malloc) is in libtessera.so");
    CHECK(dlsym(RTLD_DEFAULT, "malloc") != (void *)t_malloc, "global malloc untouched");
    if (dlclose(h) != 0) CHECK(0, "dlclose");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen PATH/TO/libtessera.so\n");
        return 2;
    }
    load(argv[1]);
    void *first = (void *)t_malloc;
    CHECK(workout(1) == 0, "main thread");

    for (int wave = 0; wave < 2; wave++) {
        pthread_t t[THREADS];
        for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, thread_main, (void *)i);
        for (int i = 0; i < THREADS; i++) {
            void *bad;
            pthread_join(t[i], &bad);
            CHECK(bad == NULL, "thread workout");
        }
        int bad = 0;
        for (int i = 0; i < THREADS; i++)
            for (int j = 0; j < PER_THREAD; j++) {
                for (int k = 0; k < 8 + j * 3; k++) bad += left[i][j][k] != (unsigned char)i;
                t_free(left[i][j]);
            }
        CHECK(bad == 0, "blocks of exited threads intact");
    }

    pid_t pid = fork();
    if (pid == 0) _exit(workout(7) == 0 ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork child");

    /* dlclose above did not unmap it (NODELETE); a second dlopen finds the same code. */
    load(argv[1]);
    CHECK((void *)t_malloc == first, "same library after dlclose + dlopen");
    CHECK(workout(3) == 0, "after reload");

    if (failures) {
        printf("dlopen: %d FAILURES\n", failures);
        return 1;
    }
    printf("dlopen: %d threads x 2 waves, fork, reload: OK\n", THREADS);
    return 0;
}
