/*
 * glibc_shim.c: an LD_PRELOAD library for `tessera-bench --programs` that sends malloc and
 * friends to glibc's own allocator (its exported __libc_* entry points).
 *
 * It exists for programs that link an allocator themselves: Debian's redis-server needs
 * libjemalloc.so.2, which comes before libc in symbol lookup, so "no preload" would measure
 * jemalloc, not glibc. Preloading this shim puts glibc's malloc first again. Programs that
 * link no allocator run under glibc with no preload at all.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

void *malloc(size_t n) { return __libc_malloc(n); }
void free(void *p) { __libc_free(p); }
void cfree(void *p) { __libc_free(p); }
void *calloc(size_t n, size_t m) { return __libc_calloc(n, m); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { return __libc_memalign(a, n); }
void *valloc(size_t n) { return __libc_valloc(n); }
void *pvalloc(size_t n) { return __libc_pvalloc(n); }

void *aligned_alloc(size_t a, size_t n) {
    if (a == 0 || (a & (a - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return __libc_memalign(a, n);
}

int posix_memalign(void **out, size_t a, size_t n) {
    if (a < sizeof(void *) || (a & (a - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(a, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *reallocarray(void *p, size_t n, size_t m) {
    size_t bytes;
    if (__builtin_mul_overflow(n, m, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, bytes);
}

/* glibc's malloc_usable_size has no __libc_ name: take libc's own definition, not the first
 * one in lookup order (which would be jemalloc's). */
size_t malloc_usable_size(void *p) {
    static size_t (*libc_usable)(void *);
    if (!libc_usable) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        if (libc)
            libc_usable = (size_t (*)(void *))dlsym(libc, "malloc_usable_size");
        if (!libc_usable)
            return 0;
    }
    return libc_usable(p);
}
