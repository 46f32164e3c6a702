/* TESSERA_MEMORY_LIMIT (issue #13, "A memory limit"), tried as a C program would: with the
 * limit given in argv[1] (MiB; the caller sets TESSERA_MEMORY_LIMIT to the same), allocate
 * 4 KiB blocks (or argv[2] bytes) until malloc returns NULL, and check:
 * - it does return NULL (with errno ENOMEM), after between 90% and 100% of the limit in
 *   live blocks: the limit counts what tessera holds from the OS, never more than the limit;
 * - a huge block (64 MiB) is refused too while the heap is full;
 * - after freeing half, allocation works again, up to the limit again.
 * With 1 MiB blocks every allocation of the program is a large one: the limit held only from
 * a program's first small allocation on, which such a program never makes.
 * Prints "limit: OK ..." or what went wrong. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes per block: 4 KiB, or argv[2]. */
static size_t block_size = 4096;

static size_t fill(void **blocks, size_t from, size_t cap) {
    size_t n = from;
    while (n < cap) {
        void *p = malloc(block_size);
        if (!p) break;
        memset(p, 0x5a, block_size);
        blocks[n++] = p;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    size_t limit = (size_t)atol(argv[1]) << 20;
    if (argc > 2) block_size = (size_t)atol(argv[2]);
    if (block_size == 0) return 2;
    size_t cap = limit / block_size * 2;
    /* Counted against the limit too; at least 64 KiB, a large block, so that with 1 MiB
     * blocks the program makes no small allocation before the limit must hold. */
    void **blocks = calloc(cap < 8192 ? 8192 : cap, sizeof(void *));
    if (!blocks) return 2;
    errno = 0;
    size_t n = fill(blocks, 0, cap);
    int err = errno;
    size_t live = n * block_size;
    if (n == cap || err != ENOMEM) {
        printf("limit: malloc never failed or errno %d (live %zu MiB, limit %zu MiB)\n", err,
               live >> 20, limit >> 20);
        return 1;
    }
    if (live > limit || live < limit / 10 * 9 - cap * sizeof(void *)) {
        printf("limit: first NULL at %zu MiB live, limit %zu MiB\n", live >> 20, limit >> 20);
        return 1;
    }
    if (malloc(64 << 20) != NULL) {
        printf("limit: a 64 MiB block was granted over the limit\n");
        return 1;
    }
    for (size_t i = 0; i < n; i += 2) free(blocks[i]);
    size_t kept = 0;
    for (size_t i = 1; i < n; i += 2) blocks[kept++] = blocks[i];
    size_t again = fill(blocks, kept, cap);
    size_t live_again = again * block_size;
    if (again <= kept + kept / 2 || live_again > limit) {
        printf("limit: after freeing half, %zu MiB live (limit %zu MiB)\n", live_again >> 20,
               limit >> 20);
        return 1;
    }
    printf("limit: OK (first NULL at %zu MiB live of %zu MiB; after freeing half, again at %zu MiB)\n",
           live >> 20, limit >> 20, live_again >> 20);
    return 0;
}
