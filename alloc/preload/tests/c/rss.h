/* VmRSS of the calling process in KiB (-1 if /proc is unreadable), for the C tests that
 * bound or report memory. Uses stdio: the first call allocates its buffer, later calls
 * reuse it. */
#ifndef TESSERA_TEST_RSS_H
#define TESSERA_TEST_RSS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}
#endif
