/* What a fork costs the parent in memory (issue #13, item 6).
 *
 * The library's fork handlers take every lock of the allocator before the fork and give
 * them back after it. A lock that sits at the start of a big static table makes that
 * table's page resident in every program that forks: the per-CPU transfer cache's 39
 * class locks, one per 32 KiB array, added 156 KiB to git gc's peak, though a program on
 * thread caches never uses the arrays.
 *
 * Allocates and frees a little (the allocator set up), then reads RssAnon (anonymous and
 * copied-on-write pages: the code's own pages are not counted) before and after a fork
 * whose child exits at once, and checks that the parent grew by less than LIMIT_KIB.
 * Runs on glibc too. Prints "fork_rss: OK" and the growth, or the growth and fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LIMIT_KIB 48

static long rss_anon_kib(void) {
    static char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    long kib = -1;
    if (!f) return -1;
    setvbuf(f, buf, _IOFBF, sizeof buf);
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssAnon:", 8) == 0) kib = atol(line + 8);
    fclose(f);
    return kib;
}

int main(void) {
    /* Blocks of many sizes, some kept: caches and spans of several classes exist. */
    void *kept[64];
    for (int i = 0; i < 64; i++) {
        kept[i] = malloc(16 + 48 * (size_t)i);
        free(malloc(24 + 64 * (size_t)i));
    }
    /* Twice, so that whatever the first read of /proc costs is paid before `before`. */
    long before = rss_anon_kib();
    before = rss_anon_kib();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork_rss: fork");
        return 2;
    }
    if (pid == 0) _exit(0);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_rss: the child did not exit cleanly\n");
        return 2;
    }
    long after = rss_anon_kib();
    for (int i = 0; i < 64; i++) free(kept[i]);
    if (before < 0 || after < 0) {
        fprintf(stderr, "fork_rss: cannot read RssAnon\n");
        return 2;
    }
    long grew = after - before;
    if (grew >= LIMIT_KIB) {
        printf("fork_rss: a fork made %ld KiB of the parent's memory resident (limit %d KiB)\n",
               grew, LIMIT_KIB);
        return 1;
    }
    printf("fork_rss: OK (a fork made %ld KiB resident)\n", grew);
    return 0;
}
