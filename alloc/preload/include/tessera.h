/* tessera.h: what libtessera.so offers beyond the C allocation functions.
 *
 * libtessera.so also replaces glibc's malloc_stats() (a report on stderr),
 * malloc_info(0, fp) (XML on fp), mallinfo2() and mallinfo() with Tessera's figures, and
 * malloc_trim(pad) with a return of every free page to the OS; they are declared in
 * <malloc.h>.
 * Look tessera_stats up with dlsym(RTLD_DEFAULT, "tessera_stats") when the program may run
 * without the library. */
#ifndef TESSERA_H
#define TESSERA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TESSERA_STATS_VERSION 1

/* Where the bytes Tessera holds from the OS are. The first six fields add up to `mapped`
 * exactly:
 *   mapped = live + cached + central + heap_dirty + heap_purged + metadata
 * Later versions only append fields; `size` says how long the library's struct is. */
struct tessera_stats {
    uint32_t version; /* TESSERA_STATS_VERSION of the library that filled the struct */
    uint32_t size;    /* sizeof(struct tessera_stats) in that library */

    uint64_t live;        /* objects handed out: small at class size, large spans, huge blocks */
    uint64_t cached;      /* held by thread/processor caches, idle ones (exited threads) included:
                             free objects and free room of the spans they own, empty spans they
                             keep. Other threads' bin lists count as live (only the calling
                             thread's are walked). */
    uint64_t central;     /* free objects and free room of spans on the central lists */
    uint64_t heap_dirty;  /* free pages not purged yet: possibly resident (a run merged with
                             untouched pages counts whole: an upper bound) */
    uint64_t heap_purged; /* free pages returned to the OS (or never touched): not committed */
    uint64_t metadata;    /* arena headers, cache chunks, the huge-block registry */

    uint64_t mapped;       /* every byte mapped: the sum of the six above */
    uint64_t committed;    /* mapped - heap_purged: what may be resident (an upper bound) */
    uint64_t resident;     /* resident now, measured with mincore */
    uint64_t active;       /* bytes in spans in use and huge blocks */
    uint64_t purged_total; /* bytes returned to the OS by purges since the start */
    uint64_t huge_blocks;  /* live huge blocks (each its own mapping) */
    uint64_t caches;       /* caches made (peak threads/processors at once) */
    uint64_t idle_caches;  /* of those, parked after their thread exited */
    uint64_t nodes;        /* NUMA nodes in use */
};

/* Fills at most `size` bytes of *out (pass sizeof *out) and returns the size of the
 * library's struct; out may be NULL to ask for that size alone. Allocates nothing; walks
 * the page heaps under their locks, so it is not for a hot loop. */
size_t tessera_stats(struct tessera_stats *out, size_t size);

/* Heap profiling (on by default: one sample per 512 KiB allocated on average;
 * TESSERA_PROF_RATE=<bytes> changes the rate, 0 turns it off).
 *
 * Writes the heap profile, gzipped pprof (`go tool pprof <program> <path>` reads it), to the
 * file `path`, replacing it. Returns 0, or an errno value (the file could not be written, or
 * the profile could not be built: ENOMEM). TESSERA_PROF_OUT=<path> (`%p`: the process id)
 * writes it at exit, and TESSERA_PROF_SIGNAL=SIGUSR2 also on that signal. */
int tessera_heap_profile_write(const char *path);

/* Sets the mean sampling interval in bytes (0: off); returns the previous one. */
size_t tessera_heap_profile_rate(size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_H */
