/* TESSERA_PROF_SIGNAL (issue #18): a signal asks for a heap profile; the handler only
 * flags the request, and tessera's background thread writes the file (writing one walks
 * the loaded objects under the loader's lock, which the interrupted thread may hold).
 * Run under LD_PRELOAD=libtessera.so with TESSERA_PROF_OUT=DIR/sig-%p.pb.gz,
 * TESSERA_PROF_SIGNAL=SIGUSR2 and a small TESSERA_PROF_RATE: the program allocates (and
 * frees, so the background thread starts), raises SIGUSR2 from a dl_iterate_phdr callback
 * (the loader's lock held, as inside dlopen), then makes no allocator call and waits for
 * the profile: no later sample can write it, the background thread must. Exit status 0
 * when the file appeared whole (it is renamed into place: gzip magic) within 60 s. */
#define _GNU_SOURCE
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int raise_inside(struct dl_phdr_info *info, size_t size, void *data) {
    (void)info;
    (void)size;
    (void)data;
    /* Delivered before raise returns, on this thread, with the loader's lock held. */
    raise(SIGUSR2);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: prof_signal DIR\n");
        return 2;
    }
    /* Some live blocks and some freed ones: samples at a small rate, dirty pages for the
     * background thread to start on. */
    enum { N = 4096 };
    static void *keep[N];
    for (int i = 0; i < N; i++) keep[i] = malloc(1024);
    for (int i = 0; i < N; i += 2) free(keep[i]);
    void *big = malloc(8 << 20);
    memset(big, 1, 8 << 20);
    free(big);

    char path[4096];
    snprintf(path, sizeof path, "%s/sig-%d.pb.gz", argv[1], (int)getpid());
    dl_iterate_phdr(raise_inside, NULL);

    /* No allocator call from here on: stat, nanosleep and open/read only. */
    for (int waited = 0; waited < 60000; waited += 10) {
        struct stat st;
        if (stat(path, &st) == 0 && st.st_size > 0) {
            FILE *f = fopen(path, "rb"); /* stdio allocates: only once the file is there */
            unsigned char magic[2] = {0, 0};
            size_t n = f ? fread(magic, 1, 2, f) : 0;
            if (f) fclose(f);
            if (n == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
                printf("info: profile written by the background thread after ~%d ms (%lld bytes)\n",
                       waited, (long long)st.st_size);
                return 0;
            }
            fprintf(stderr, "%s is not a whole gzip file\n", path);
            return 1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "no profile at %s after 60 s\n", path);
    return 1;
}
