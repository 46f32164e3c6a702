/* Exercises every C export of libtessera.so and its answers to odd input, then a
 * multi-threaded stress with cross-thread frees, fork while other threads allocate, and
 * thread churn. Run under LD_PRELOAD by .ci/preload.sh; it also runs (and passes, apart from
 * the checks marked tessera-only) on plain glibc, which keeps the test itself honest.
 *
 *   exports [--expect-tessera] [--stress OPS_PER_THREAD] [--only-stress]
 *
 * --expect-tessera: fail unless malloc & co. resolve into libtessera.so, and check the
 * behaviours where tessera deliberately differs from glibc 2.36 (aligned_alloc's EINVAL,
 * malloc_info's -1), and tessera's statistics (tessera_stats, and what malloc_stats and
 * malloc_info print). Needs -I alloc/preload/include for tessera.h.
 * Prints one line per check group and "exports: OK" at the end; exits 1 on any failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tessera.h"

/* A failed realloc leaves the block valid; GCC cannot know that it failed. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

static int failures;
/* Sizes the compiler must not see as constants (it warns about, or folds, absurd ones). */
static volatile size_t size_max = SIZE_MAX;
static int expect_tessera;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static int aligned_to(const void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

/* ---- identity: are we really running on tessera? ------------------------------------- */

static void check_identity(void) {
    static const char *const names[] = {
        "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
        "aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size", "cfree",
        "malloc_stats", "malloc_info", "mallinfo2", "mallinfo", "malloc_trim", "tessera_stats",
    };
    int in_tessera = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info info;
        const char *file = "?";
        if (sym && dladdr(sym, &info) && info.dli_fname) file = info.dli_fname;
        int ours = strstr(file, "libtessera") != NULL;
        in_tessera += ours;
        if (i == 0) printf("identity: malloc resolves to %s\n", file);
        if (expect_tessera) CHECK(ours, "%s resolves to %s, not libtessera.so", names[i], file);
    }
    printf("identity: %d of %zu symbols in libtessera.so\n", in_tessera,
           sizeof names / sizeof *names);
}

/* ---- malloc, free, usable size ------------------------------------------------------- */

static void check_malloc(void) {
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b, "malloc(0) must give unique pointers: %p %p", a, b);
    free(a);
    free(b);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0, "usable size of NULL");

    for (size_t size = 1; size <= 70000; size += size < 300 ? 1 : size / 7) {
        unsigned char *p = malloc(size);
        CHECK(p, "malloc(%zu)", size);
        if (!p) continue;
        CHECK(aligned_to(p, size <= 8 ? 8 : 16), "malloc(%zu) = %p misaligned", size, p);
        size_t usable = malloc_usable_size(p);
        CHECK(usable >= size, "usable %zu < %zu", usable, size);
        memset(p, 0xa5, usable); /* the whole usable size is ours to write */
        free(p);
    }

    errno = 0;
    CHECK(malloc(size_max) == NULL && errno == ENOMEM, "malloc(SIZE_MAX)");
    errno = 0;
    CHECK(malloc(size_max / 2 + 1) == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX+1)");
    errno = 0;
    CHECK(malloc(size_max - 4096) == NULL && errno == ENOMEM, "malloc(SIZE_MAX-4096)");
    printf("malloc/free/malloc_usable_size: done\n");
}

/* ---- calloc ------------------------------------------------------------------------- */

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void check_calloc(void) {
    errno = 0;
    CHECK(calloc(size_max / 2 + 2, 2) == NULL && errno == ENOMEM, "calloc overflow");
    errno = 0;
    CHECK(calloc(size_max / 2 / 2 / 2 + 1, 8) == NULL && errno == ENOMEM,
          "calloc (SIZE_MAX/8+1) * 8");
    errno = 0;
    CHECK(calloc(2, size_max / 2 + 2) == NULL && errno == ENOMEM, "calloc overflow (swapped)");
    void *z = calloc(0, 10);
    CHECK(z != NULL, "calloc(0, 10)");
    free(z);
    z = calloc(10, 0);
    CHECK(z != NULL, "calloc(10, 0)");
    free(z);

    /* Dirty blocks of many sizes, free them, and calloc the same sizes: reused memory
     * must come back zeroed (small classes, large spans, huge mappings). */
    static const size_t sizes[] = {1, 8, 16, 24, 100, 1000, 4096, 32768, 40000, 65536,
                                   300000, 1 << 20, 3 << 20, 5 << 20};
    for (size_t round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t n = sizes[i];
            void *dirty[8];
            for (int k = 0; k < 8; k++) {
                dirty[k] = malloc(n);
                memset(dirty[k], 0xee, n);
            }
            for (int k = 0; k < 8; k++) free(dirty[k]);
            for (int k = 0; k < 8; k++) {
                unsigned char *c = calloc(1, n);
                CHECK(c && all_zero(c, n), "calloc(1, %zu) not zeroed", n);
                dirty[k] = c;
                if (c) memset(c, 0xdd, n);
            }
            for (int k = 0; k < 8; k++) free(dirty[k]);
        }
    }
    printf("calloc: done\n");
}

/* ---- realloc / reallocarray ------------------------------------------------------------ */

static void fill(unsigned char *p, size_t from, size_t to, unsigned seed) {
    for (size_t i = from; i < to; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

static void check_realloc(void) {
    unsigned char *p = realloc(NULL, 100);
    CHECK(p, "realloc(NULL, 100)");
    fill(p, 0, 100, 1);
    errno = 0;
    void *r = realloc(p, 0);
    CHECK(r == NULL, "realloc(p, 0) frees and returns NULL (glibc), got %p", r);
    free(r);
    r = realloc(NULL, 0);
    CHECK(r != NULL, "realloc(NULL, 0) = malloc(0)");
    free(r);

    /* Growth through every regime: small classes, large spans, huge mappings (mremap). */
    size_t size = 1;
    p = malloc(size);
    fill(p, 0, size, 3);
    while (size < (48u << 20)) {
        size_t next = size + size / 2 + 1;
        unsigned char *q = realloc(p, next);
        CHECK(q, "realloc grow %zu -> %zu", size, next);
        if (!q) break;
        CHECK(intact(q, size, 3), "realloc grow %zu -> %zu lost contents", size, next);
        CHECK(aligned_to(q, 16) || next <= 8, "realloc result misaligned");
        fill(q, size, next, 3);
        p = q;
        size = next;
    }
    /* ... and back down. */
    while (size > 1) {
        size_t next = size / 3;
        unsigned char *q = realloc(p, next ? next : 1);
        if (!next) next = 1;
        CHECK(q, "realloc shrink %zu -> %zu", size, next);
        if (!q) break;
        CHECK(intact(q, next, 3), "realloc shrink %zu -> %zu lost contents", size, next);
        p = q;
        size = next;
    }
    free(p);

    /* A failing realloc leaves the block alone. */
    p = malloc(64);
    fill(p, 0, 64, 9);
    errno = 0;
    CHECK(realloc(p, size_max) == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX)");
    CHECK(intact(p, 64, 9), "failed realloc damaged the block");

    errno = 0;
    CHECK(reallocarray(p, size_max / 2 + 2, 2) == NULL && errno == ENOMEM,
          "reallocarray overflow");
    CHECK(intact(p, 64, 9), "failed reallocarray damaged the block");
    unsigned char *q = reallocarray(p, 100, 3);
    CHECK(q && intact(q, 64, 9), "reallocarray(p, 100, 3)");
    q = reallocarray(q, 0, 3);
    CHECK(q == NULL, "reallocarray(p, 0, 3) frees like realloc(p, 0)");
    q = reallocarray(NULL, 10, 10);
    CHECK(q != NULL, "reallocarray(NULL, 10, 10)");
    free(q);
    printf("realloc/reallocarray: done\n");
}

/* ---- aligned allocation ------------------------------------------------------------------- */

static void check_aligned(void) {
    static const size_t bad[] = {0, 1, 2, 4, 12, 24, 40, 3 * 4096, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *sentinel = (void *)0x1234, *p = sentinel;
        int rc = posix_memalign(&p, bad[i], 64);
        CHECK(rc == EINVAL && p == sentinel, "posix_memalign(align %zu) = %d", bad[i], rc);
    }
    void *p = (void *)0x1234;
    CHECK(posix_memalign(&p, 16, SIZE_MAX) == ENOMEM && p == (void *)0x1234,
          "posix_memalign ENOMEM");

    for (size_t align = 1; align <= (1u << 20); align *= 2) {
        static const size_t mult[] = {0, 1, 2, 3};
        for (size_t m = 0; m < 4; m++) {
            size_t sizes[2] = {align * mult[m], align * mult[m] + 1};
            for (int s = 0; s < 2; s++) {
                size_t size = sizes[s];
                if (align >= sizeof(void *)) {
                    void *q = NULL;
                    int rc = posix_memalign(&q, align, size);
                    CHECK(rc == 0 && q && aligned_to(q, align), "posix_memalign(%zu, %zu)",
                          align, size);
                    if (q) {
                        CHECK(malloc_usable_size(q) >= size, "usable");
                        memset(q, 1, size);
                    }
                    free(q);
                }
                void *a = aligned_alloc(align, size);
                CHECK(a && aligned_to(a, align), "aligned_alloc(%zu, %zu)", align, size);
                if (a) memset(a, 2, size);
                free(a);
                void *m2 = memalign(align, size);
                CHECK(m2 && aligned_to(m2, align), "memalign(%zu, %zu)", align, size);
                if (m2) memset(m2, 3, size);
                free(m2);
            }
        }
    }
    void *m = memalign(0, 10);
    CHECK(m && aligned_to(m, 16), "memalign(0, 10)");
    free(m);
    m = memalign(24, 10); /* not a power of two: glibc rounds up to 32 */
    CHECK(m && aligned_to(m, 32), "memalign(24, 10) = %p", m);
    free(m);
    errno = 0;
    CHECK(memalign(SIZE_MAX, 10) == NULL && errno == EINVAL, "memalign(SIZE_MAX)");
    if (expect_tessera) {
        errno = 0;
        CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL, "aligned_alloc(24) (tessera)");
    }

    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t size = 0; size < 3 * page; size += page / 2 + 1) {
        void *v = valloc(size);
        CHECK(v && aligned_to(v, page), "valloc(%zu)", size);
        if (v) memset(v, 4, size);
        free(v);
        void *pv = pvalloc(size);
        CHECK(pv && aligned_to(pv, page), "pvalloc(%zu)", size);
        if (pv) {
            /* pvalloc(0): glibc gives a minimal block, tessera a page. */
            size_t rounded = (size + page - 1) / page * page;
            if (expect_tessera && size == 0) rounded = page;
            CHECK(malloc_usable_size(pv) >= rounded, "pvalloc(%zu) usable %zu", size,
                  malloc_usable_size(pv));
            memset(pv, 5, rounded);
        }
        free(pv);
    }
    errno = 0;
    CHECK(pvalloc(size_max - 10) == NULL && errno == ENOMEM, "pvalloc overflow");

    void (*cfree_fn)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    if (cfree_fn) {
        cfree_fn(malloc(10));
        cfree_fn(NULL);
    }
    printf("posix_memalign/aligned_alloc/memalign/valloc/pvalloc/cfree: done\n");
}

/* ---- big blocks ------------------------------------------------------------------------ */

static void check_big(void) {
    size_t n = 100u << 20;
    unsigned char *p = malloc(n);
    CHECK(p, "malloc(100 MiB)");
    if (p) {
        memset(p, 0xab, n);
        CHECK(p[0] == 0xab && p[n - 1] == 0xab, "100 MiB block");
        CHECK(malloc_usable_size(p) >= n, "usable(100 MiB)");
        free(p);
    }
    unsigned char *c = calloc(n, 1);
    CHECK(c && all_zero(c, n), "calloc(100 MiB) zeroed");
    free(c);
    c = calloc(25u << 20, 4);
    CHECK(c && all_zero(c, n), "calloc(25 Mi, 4) zeroed");
    free(c);
    printf("big blocks (100 MiB malloc, calloc): done\n");
}

/* ---- statistics: malloc_info, malloc_stats, tessera_stats ------------------------------ */

typedef size_t (*tessera_stats_fn)(struct tessera_stats *, size_t);

/* Reads all of `f` from its start into `buf` (NUL-terminated); returns the length. */
static size_t slurp(FILE *f, char *buf, size_t cap) {
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    return n;
}

/* The number after `key` (e.g. `<part name="live" size="`) in `xml`, or -1. */
static long long xml_number(const char *xml, const char *key) {
    const char *at = strstr(xml, key);
    return at ? atoll(at + strlen(key)) : -1;
}

static uint64_t parts_sum(const struct tessera_stats *s) {
    return s->live + s->cached + s->central + s->heap_dirty + s->heap_purged + s->metadata;
}

static char stats_text[1 << 16];

static void check_stats(void) {
    FILE *xml_file = tmpfile(), *err_file = tmpfile();
    CHECK(xml_file && err_file, "tmpfile");
    if (!xml_file || !err_file) return;
    /* Give both streams their buffers now, so that stdio's own allocations fall outside the
     * measured window below. */
    fputc(' ', xml_file);
    fputc(' ', err_file);

    /* Options other than 0 are refused on both (glibc returns EINVAL itself, tessera -1 with
     * errno = EINVAL, as malloc_info(3) says). */
    errno = 0;
    int rc = malloc_info(1, xml_file);
    CHECK(rc != 0, "malloc_info(1, fp) = %d", rc);
    if (expect_tessera) CHECK(rc == -1 && errno == EINVAL, "malloc_info(1): %d, errno %d", rc, errno);

    /* malloc_stats prints on stderr: catch fd 2 in a file for a moment. */
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(err_file), 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t len = slurp(err_file, stats_text, sizeof stats_text);
    CHECK(len > 1, "malloc_stats printed nothing");
    if (expect_tessera)
        CHECK(strstr(stats_text, "tessera: where the memory is") && strstr(stats_text, "= mapped"),
              "malloc_stats output:\n%s", stats_text);

    tessera_stats_fn stats = (tessera_stats_fn)dlsym(RTLD_DEFAULT, "tessera_stats");
    if (!stats) {
        CHECK(!expect_tessera, "tessera_stats is not exported");
        rc = malloc_info(0, xml_file);
        len = slurp(xml_file, stats_text, sizeof stats_text);
        CHECK(rc == 0 && strstr(stats_text, "<malloc") && strstr(stats_text, "</malloc>\n"),
              "malloc_info(0): %d:\n%s", rc, stats_text);
        printf("stats: malloc_info, malloc_stats: glibc's, done\n");
        return;
    }

    struct tessera_stats before, during, after;
    CHECK(stats(NULL, 0) == sizeof before, "tessera_stats(NULL) = %zu, header says %zu",
          stats(NULL, 0), sizeof before);
    /* A caller with a shorter struct gets its prefix and nothing more. */
    unsigned char prefix[32];
    memset(prefix, 0xee, sizeof prefix);
    stats((struct tessera_stats *)prefix, 16);
    CHECK(prefix[16] == 0xee && prefix[31] == 0xee, "tessera_stats wrote past the size given");

    enum { N = 4000, SIZE = 1024 }; /* 1024 B is a size class: live grows by exactly SIZE */
    const uint64_t slack = 64 << 10; /* what this thread may allocate besides */
    static void *blocks[N];
    stats(&before, sizeof before);
    CHECK(before.version == TESSERA_STATS_VERSION && before.size == sizeof before,
          "version %u size %u", before.version, before.size);
    CHECK(parts_sum(&before) == before.mapped, "parts %llu != mapped %llu",
          (unsigned long long)parts_sum(&before), (unsigned long long)before.mapped);
    CHECK(before.committed == before.mapped - before.heap_purged, "committed");
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE);
        memset(blocks[i], i, SIZE);
    }
    stats(&during, sizeof during);
    uint64_t grew = during.live - before.live;
    CHECK(grew >= (uint64_t)N * SIZE && grew <= (uint64_t)N * SIZE + slack,
          "live grew by %llu for %d x %d B", (unsigned long long)grew, N, SIZE);
    CHECK(parts_sum(&during) == during.mapped, "parts add up");

    /* malloc_info while the blocks are live: well formed, and our numbers. */
    rewind(xml_file);
    rc = malloc_info(0, xml_file);
    len = slurp(xml_file, stats_text, sizeof stats_text);
    CHECK(rc == 0, "malloc_info(0) = %d", rc);
    CHECK(!strncmp(stats_text, "<malloc version=\"1\" allocator=\"tessera\">\n", 40) &&
              strstr(stats_text, "</malloc>\n"), "malloc_info:\n%s", stats_text);
    long long xml_live = xml_number(stats_text, "<part name=\"live\" size=\"");
    long long xml_mapped = xml_number(stats_text, "<breakdown mapped=\"");
    long long xml_sum = 0;
    static const char *const parts[] = {"live", "cached", "central", "heap-dirty", "heap-purged",
                                        "metadata"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        char key[64];
        snprintf(key, sizeof key, "<part name=\"%s\" size=\"", parts[i]);
        long long v = xml_number(stats_text, key);
        CHECK(v >= 0, "no %s in malloc_info", parts[i]);
        xml_sum += v;
    }
    CHECK(xml_sum == xml_mapped, "malloc_info parts %lld != mapped %lld", xml_sum, xml_mapped);
    CHECK(xml_live >= (long long)(before.live + (uint64_t)N * SIZE) &&
              xml_live <= (long long)(during.live + slack),
          "malloc_info live %lld, tessera_stats live %llu", xml_live,
          (unsigned long long)during.live);

    for (int i = 0; i < N; i++) free(blocks[i]);
    stats(&after, sizeof after);
    CHECK(after.live <= before.live + slack, "live %llu -> %llu -> %llu after free",
          (unsigned long long)before.live, (unsigned long long)during.live,
          (unsigned long long)after.live);
    CHECK(after.cached > during.cached, "freed on this thread, cached %llu -> %llu",
          (unsigned long long)during.cached, (unsigned long long)after.cached);
    fclose(xml_file);
    fclose(err_file);
    printf("stats: tessera_stats live +%llu KiB for %d KiB, malloc_info and malloc_stats: done\n",
           (unsigned long long)grew >> 10, N * SIZE >> 10);
}

/* ---- mallinfo2, mallinfo, malloc_trim -------------------------------------------------- */

/* Resident KiB of this process (/proc/self/statm). */
static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* What glibc's fields mean holds for tessera's figures too, so the checks run on both:
 * blocks handed out count in uordblks, a block of its own mapping in hblks and hblkhd, and
 * after everything is freed malloc_trim leaves the freed pages out of RSS. (glibc's free
 * trims its heap's top by itself; tessera's pages would wait for its purge delay, which the
 * few microseconds between the frees and the measure do not reach.) */
static void check_mallinfo(void) {
    enum { N = 8192, SIZE = 1000 };
    static void *blocks[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE);
        memset(blocks[i], i, SIZE);
    }
    struct mallinfo2 during = mallinfo2();
    size_t grew = during.uordblks - before.uordblks;
    CHECK(during.uordblks >= before.uordblks + (size_t)N * SIZE && grew <= (size_t)N * 2 * SIZE,
          "uordblks %zu -> %zu for %d x %d B", before.uordblks, during.uordblks, N, SIZE);
    CHECK(during.arena >= during.uordblks, "arena %zu < uordblks %zu", during.arena,
          during.uordblks);

    size_t big = (size_t)48 << 20; /* above both glibc's mmap threshold and tessera's huge one */
    char *h = malloc(big);
    CHECK(h != NULL, "malloc(48 MiB)");
    struct mallinfo2 with_big = mallinfo2();
    CHECK(with_big.hblks == during.hblks + 1 && with_big.hblkhd >= during.hblkhd + big,
          "hblks %zu -> %zu, hblkhd %zu -> %zu", during.hblks, with_big.hblks, during.hblkhd,
          with_big.hblkhd);
    free(h);
    struct mallinfo2 freed_big = mallinfo2();
    CHECK(freed_big.hblks == during.hblks && freed_big.hblkhd == during.hblkhd,
          "after free: hblks %zu, hblkhd %zu (were %zu, %zu)", freed_big.hblks, freed_big.hblkhd,
          during.hblks, during.hblkhd);
    /* Deprecated in glibc, and still called by older programs. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
    CHECK(old.hblks == (int)freed_big.hblks && old.uordblks > 0, "mallinfo hblks %d uordblks %d",
          old.hblks, old.uordblks);

    long full = rss_kib();
    for (int i = 0; i < N; i++) free(blocks[i]);
    int rc = malloc_trim(0);
    long trimmed = rss_kib();
    CHECK(rc == 0 || rc == 1, "malloc_trim(0) = %d", rc);
    /* At least half of the 8 MB freed is out of RSS (a cache may keep a span or two). */
    CHECK(trimmed <= full - (long)((size_t)N * SIZE / 1024 / 2),
          "RSS %ld KiB with the blocks, %ld KiB after free and malloc_trim", full, trimmed);
    if (expect_tessera) {
        struct mallinfo2 after = mallinfo2();
        CHECK(rc == 1 || after.keepcost == 0, "malloc_trim(0) = %d with %zu dirty bytes left", rc,
              after.keepcost);
    }
    printf("mallinfo2, mallinfo, malloc_trim: uordblks +%zu KiB, RSS %ld -> %ld KiB: done\n",
           grew >> 10, full, trimmed);
}

/* ---- threaded stress with cross-thread frees ------------------------------------------------ */

struct block {
    unsigned char *ptr;
    size_t size;
    unsigned seed;
};

#define SLOTS 2048
static struct {
    pthread_mutex_t lock;
    struct block b;
} slots[SLOTS];

static _Atomic long stress_errors;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *rng) {
    uint64_t r = next_rand(rng);
    unsigned kind = r % 1000;
    if (kind < 700) return 1 + (r >> 10) % 256;
    if (kind < 950) return 1 + (r >> 10) % 4096;
    if (kind < 996) return 1 + (r >> 10) % 40000;
    if (kind < 999) return 65536 + (r >> 10) % (1 << 20);
    return (4u << 20) + (r >> 10) % (2u << 20); /* huge: own mapping */
}

/* Big blocks are filled and checked only at the bytes of a fixed set: the first 64 KiB,
 * the last 4 KiB of the block as it was filled (`span`), and every 4093rd byte between. */
static size_t first_index(size_t from, size_t span) {
    if (from < 65536 || from + 4096 > span) return from;
    size_t grid = (from + 4092) / 4093 * 4093, tail = span - 4096 + 1;
    return grid < tail ? grid : tail;
}

static void fill_block(struct block *b, size_t from) {
    for (size_t i = first_index(from, b->size); i < b->size; i = first_index(i + 1, b->size))
        b->ptr[i] = (unsigned char)(b->seed + i * 7);
}

/* Checks bytes [0, upto) of a block whose pattern was written with span `span`. */
static int check_block(const struct block *b, size_t upto, size_t span) {
    for (size_t i = first_index(0, span); i < upto; i = first_index(i + 1, span))
        if (b->ptr[i] != (unsigned char)(b->seed + i * 7)) return 0;
    return 1;
}

static void release_block(struct block *b, uint64_t *rng) {
    if (!b->ptr) return;
    if (!check_block(b, b->size, b->size) || malloc_usable_size(b->ptr) < b->size) {
        fprintf(stderr, "stress: block %p (%zu bytes) corrupted\n", (void *)b->ptr, b->size);
        atomic_fetch_add(&stress_errors, 1);
    }
    if (next_rand(rng) % 8 == 0) {
        /* Resize a block another thread made, then check and free it. */
        size_t old = b->size;
        size_t size = pick_size(rng);
        unsigned char *q = realloc(b->ptr, size);
        if (!q) {
            atomic_fetch_add(&stress_errors, 1);
            free(b->ptr);
            return;
        }
        b->ptr = q;
        b->size = size;
        if (!check_block(b, old < size ? old : size, old)) {
            fprintf(stderr, "stress: realloc %zu -> %zu lost contents\n", old, size);
            atomic_fetch_add(&stress_errors, 1);
        }
    }
    free(b->ptr);
}

static void *stress_thread(void *arg) {
    uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    long ops = (long)(uintptr_t)arg >> 8;
    for (long i = 0; i < ops; i++) {
        struct block b = {0};
        b.size = pick_size(&rng);
        b.seed = (unsigned)next_rand(&rng);
        unsigned how = next_rand(&rng) % 16;
        if (how == 0) {
            b.ptr = calloc(1, b.size);
            if (b.ptr && !all_zero(b.ptr, b.size < 4096 ? b.size : 4096))
                atomic_fetch_add(&stress_errors, 1);
        } else if (how == 1) {
            void *q = NULL;
            size_t align = (size_t)64 << (next_rand(&rng) % 7);
            if (posix_memalign(&q, align, b.size) != 0 || !aligned_to(q, align))
                atomic_fetch_add(&stress_errors, 1);
            b.ptr = q;
        } else {
            b.ptr = malloc(b.size);
        }
        if (!b.ptr) {
            atomic_fetch_add(&stress_errors, 1);
            continue;
        }
        fill_block(&b, 0);
        size_t slot = next_rand(&rng) % SLOTS;
        pthread_mutex_lock(&slots[slot].lock);
        struct block old = slots[slot].b;
        slots[slot].b = b;
        pthread_mutex_unlock(&slots[slot].lock);
        release_block(&old, &rng); /* usually made by another thread: a remote free */
    }
    return NULL;
}

static void run_stress(int threads, long ops) {
    for (int i = 0; i < SLOTS; i++) pthread_mutex_init(&slots[i].lock, NULL);
    pthread_t t[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, stress_thread, (void *)(((uintptr_t)ops << 8) | (uintptr_t)i));
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    uint64_t rng = 42;
    for (int i = 0; i < SLOTS; i++) {
        release_block(&slots[i].b, &rng);
        slots[i].b.ptr = NULL;
    }
    CHECK(atomic_load(&stress_errors) == 0, "%ld stress errors", atomic_load(&stress_errors));
    printf("stress: %d threads x %ld ops, cross-thread frees and reallocs: done\n", threads, ops);
}

/* ---- fork while other threads allocate ---------------------------------------------------- */

static _Atomic int stop_churn;

static void *churn_thread(void *arg) {
    uint64_t rng = (uintptr_t)arg * 7919 + 1;
    void *keep[64] = {0};
    while (!atomic_load(&stop_churn)) {
        size_t i = next_rand(&rng) % 64;
        free(keep[i]);
        keep[i] = malloc(pick_size(&rng));
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

static void check_fork(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)i);
    int bad = 0;
    for (int round = 0; round < 40; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* The child has one thread; every allocator lock must be usable. */
            uint64_t rng = 77;
            void *keep[256];
            for (int i = 0; i < 256; i++) keep[i] = malloc(pick_size(&rng));
            for (int i = 0; i < 256; i++) free(keep[i]);
            pthread_t c;
            if (pthread_create(&c, NULL, stress_thread, (void *)(uintptr_t)(2000 << 8)) == 0)
                pthread_join(c, NULL);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            bad++;
            fprintf(stderr, "fork child %d: status 0x%x\n", round, status);
        }
    }
    atomic_store(&stop_churn, 1);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK(bad == 0, "%d fork children failed", bad);
    printf("fork with 3 allocating threads (40 children): done\n");
}

/* ---- thread churn: exiting threads leave blocks behind ---------------------------------- */

#define CHURN_THREADS 300
static void *leftovers[CHURN_THREADS][16];
static pthread_key_t late_key;
static _Atomic int late_destructors;

/* A pthread key created after tessera's own (which its first malloc made): its destructor
 * runs after tessera has flushed the exiting thread's cache, and still allocates. */
static void late_destructor(void *value) {
    unsigned char *p = value;
    if (p[0] == 0x3c && p[99] == 0x3c) atomic_fetch_add(&late_destructors, 1);
    free(p);
    void *again = malloc(200);
    memset(again, 1, 200);
    free(again);
}

static void *short_lived(void *arg) {
    size_t me = (uintptr_t)arg;
    unsigned char *keyed = malloc(100);
    memset(keyed, 0x3c, 100);
    pthread_setspecific(late_key, keyed);
    for (int i = 0; i < 16; i++) {
        void *tmp = malloc(32 + (size_t)i * 100);
        leftovers[me][i] = malloc(16 + (size_t)i * 50);
        memset(leftovers[me][i], (int)me, 16 + (size_t)i * 50);
        free(tmp);
    }
    return NULL;
}

static void check_thread_exit(void) {
    pthread_key_create(&late_key, late_destructor);
    for (int wave = 0; wave < CHURN_THREADS; wave += 30) {
        pthread_t t[30];
        for (int i = 0; i < 30; i++)
            pthread_create(&t[i], NULL, short_lived, (void *)(uintptr_t)(wave + i));
        for (int i = 0; i < 30; i++) pthread_join(t[i], NULL);
    }
    int bad = 0;
    for (int i = 0; i < CHURN_THREADS; i++)
        for (int j = 0; j < 16; j++) {
            unsigned char *p = leftovers[i][j];
            for (int k = 0; k < 16 + j * 50; k++) bad += p[k] != (unsigned char)i;
            free(p); /* freed by a thread other than the (exited) one that made it */
        }
    CHECK(bad == 0, "%d bytes changed in blocks of exited threads", bad);
    CHECK(atomic_load(&late_destructors) == CHURN_THREADS, "%d late key destructors saw their block",
          atomic_load(&late_destructors));
    printf("thread exit: %d threads, their blocks freed by main, allocation in a late key "
           "destructor: done\n", CHURN_THREADS);
}

int main(int argc, char **argv) {
    long stress_ops = 20000;
    int only_stress = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect-tessera")) expect_tessera = 1;
        else if (!strcmp(argv[i], "--only-stress")) only_stress = 1;
        else if (!strcmp(argv[i], "--stress") && i + 1 < argc) stress_ops = atol(argv[++i]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_identity();
    if (!only_stress) {
        check_malloc();
        check_calloc();
        check_realloc();
        check_aligned();
        check_big();
        check_stats();
        check_mallinfo();
        check_thread_exit();
        check_fork();
    }
    run_stress(8, stress_ops);
    if (failures) {
        printf("exports: %d FAILURES\n", failures);
        return 1;
    }
    printf("exports: OK\n");
    return 0;
}
