/* An idle program's background purger sleeps (issue #13, item 1).
 *
 * Under the default cache mode (`auto`), the purger used to wake every decay time (1 s)
 * for the whole life of the process, as if per-CPU caches existed, and ran the per-CPU
 * drains' code each time (a 64 KiB window of the library's cold text resident, and a
 * wake-up a second in a program doing nothing). With thread caches only, it
 * must sleep until the page heap has something for it.
 *
 * Makes the purger start (64 MiB allocated and freed), gives everything back with
 * malloc_trim, then reads the purger thread's context switches (/proc/self/task/TID/status)
 * every 200 ms: it must go quiet (two equal readings, within 5 s: a stash it still holds
 * goes back after the decay time) and stay so for 1.5 s more, longer than the decay time.
 * Nothing here allocates in between (the buffers are static). Prints "purger_idle: OK" or
 * what it saw, and fails. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char path[128];

/* The purger's task directory, or 0 if it has none. */
static int find_purger(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d))) {
        char comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, comm, sizeof comm - 1);
        close(fd);
        if (n > 0 && strncmp(comm, "tessera-purge", 13) == 0) {
            snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
            found = 1;
            break;
        }
    }
    if (d) closedir(d);
    return found;
}

/* Voluntary plus involuntary context switches of the purger. */
static long switches(void) {
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long total = 0;
    for (char *p = buf; (p = strstr(p, "ctxt_switches:")); p += 14) total += atol(p + 14);
    return total;
}

static void nap_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

int main(void) {
    enum { N = 1024, SIZE = 64 << 10 };
    static void *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE);
        if (!blocks[i]) return 2;
        memset(blocks[i], i, SIZE);
    }
    for (int i = 0; i < N; i++) free(blocks[i]);
    malloc_trim(0);
    if (!find_purger()) {
        /* Give a lazily started thread a moment to name itself. */
        nap_ms(200);
        if (!find_purger()) {
            printf("purger_idle: no tessera-purge thread after 64 MiB allocated and freed\n");
            return 1;
        }
    }
    long last = switches(), now = -1;
    int quiet = 0;
    for (int i = 0; i < 25 && !quiet; i++) {
        nap_ms(200);
        now = switches();
        quiet = now == last;
        last = now;
    }
    if (!quiet) {
        printf("purger_idle: the purger kept waking in an idle program (%ld switches)\n", now);
        return 1;
    }
    nap_ms(1500);
    now = switches();
    if (now != last) {
        printf("purger_idle: the purger woke %ld times in 1.5 s of idle\n", now - last);
        return 1;
    }
    printf("purger_idle: OK (the purger sleeps)\n");
    return 0;
}
