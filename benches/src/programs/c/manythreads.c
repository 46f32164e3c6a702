/* Issue #19's program: many threads on few CPUs, each allocating and freeing rounds of
 * small blocks, then all of them idle with nothing live. Written as a user would, against
 * plain malloc/free: run it under LD_PRELOAD with each allocator (`benches/manythreads.sh`
 * builds and runs it against every allocator; it measures the memory kept while idle, which
 * the runner's `manythreads` workloads, C and Rust, do not).
 *
 *   cc -O2 -pthread manythreads.c -o manythreads
 *   LD_PRELOAD=libtessera.so TESSERA_CACHE=percpu ./manythreads 256 200 1000 2000
 *   manythreads [threads=256] [rounds=200] [blocks=1000] [idle_ms=2000]
 *
 * Prints one line: threads, throughput (million malloc+free operations per second over the
 * rounds), the process's CPU time (user + system, getrusage) per operation over the rounds
 * in ns (what to compare on a shared machine, where wall time depends on the neighbours),
 * RSS when the last thread finished its rounds, and RSS after idle_ms more of every thread
 * idle (alive, blocked, nothing live), all from /proc/self/statm. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int rounds = 200, blocks = 1000;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done, release;
static uint64_t checksum;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) {
        fprintf(stderr, "cannot read /proc/self/statm\n");
        exit(1);
    }
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *worker(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1, sum = 0;
    char **live = malloc(sizeof(char *) * blocks);
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < blocks; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t size = 16 + x % 497;
            live[i] = malloc(size);
            if (!live[i]) {
                fprintf(stderr, "out of memory\n");
                exit(1);
            }
            live[i][0] = (char)i;
            live[i][size - 1] = (char)r;
        }
        for (int i = 0; i < blocks; i++) {
            sum += (unsigned char)live[i][0];
            free(live[i]);
        }
    }
    free(live);
    pthread_mutex_lock(&lock);
    checksum += sum;
    done++;
    pthread_cond_broadcast(&cond);
    while (!release)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 256;
    rounds = argc > 2 ? atoi(argv[2]) : 200;
    blocks = argc > 3 ? atoi(argv[3]) : 1000;
    int idle_ms = argc > 4 ? atoi(argv[4]) : 2000;
    pthread_t *t = malloc(sizeof(pthread_t) * threads);
    double start = now(), cpu_start = cpu_seconds();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    pthread_mutex_lock(&lock);
    while (done < threads)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    double elapsed = now() - start, cpu = cpu_seconds() - cpu_start;
    long rss_done = rss_kib();
    usleep(idle_ms * 1000);
    long rss_idle = rss_kib();
    pthread_mutex_lock(&lock);
    release = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double ops = 2.0 * threads * rounds * blocks;
    printf("threads=%d mops=%.1f cpu_ns_op=%.2f rss_done_mib=%.1f rss_idle_mib=%.1f "
           "checksum=%llu\n",
           threads, ops / elapsed / 1e6, cpu * 1e9 / ops, rss_done / 1024.0, rss_idle / 1024.0,
           (unsigned long long)checksum);
    free(t);
    return 0;
}
