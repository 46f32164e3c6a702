/* Threads that allocate and free only small blocks, then exit and are joined (issue #13):
 * none of their frees leaves a dirty page in a page heap until a thread's exit hands its
 * cache back, so the first purge-worthy free came from inside pthread_join, where glibc
 * frees the dead thread's TLS while it holds the stack cache's lock. A background thread
 * started from that free called pthread_create, which takes the same lock, and the process
 * hung. Exit status 0 when every thread was joined; the stage's timeout catches a hang. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { THREADS = 64, ROUNDS = 100, BLOCKS = 1000 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done, release;

static void *worker(void *arg) {
    char **live = malloc(sizeof(char *) * BLOCKS);
    uintptr_t sum = (uintptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BLOCKS; i++) {
            live[i] = malloc(64);
            live[i][0] = (char)i;
        }
        for (int i = 0; i < BLOCKS; i++) {
            sum += (unsigned char)live[i][0];
            free(live[i]);
        }
    }
    free(live);
    /* Every thread waits until all are done, then they exit together: their stacks then
     * overflow glibc's stack cache in the joins below, which frees their TLS. */
    pthread_mutex_lock(&lock);
    done++;
    pthread_cond_broadcast(&cond);
    while (!release)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return (void *)sum;
}

int main(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    pthread_mutex_lock(&lock);
    while (done < THREADS)
        pthread_cond_wait(&cond, &lock);
    release = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    uintptr_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *sum;
        pthread_join(t[i], &sum);
        total += (uintptr_t)sum;
    }
    printf("info: %d threads joined (checksum %lu)\n", THREADS, (unsigned long)total);
    return 0;
}
