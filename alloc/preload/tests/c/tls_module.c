/* A shared library with a dynamic-TLS variable, for tls_churn.c: each thread that calls
 * touch() gets this module's TLS block from __tls_get_addr, which glibc allocates with
 * malloc (libtessera.so's, when preloaded) and frees with free on dlclose. */
static __thread unsigned char block[256];

unsigned touch(unsigned seed) {
    unsigned sum = 0;
    for (unsigned i = 0; i < sizeof block; i++) {
        block[i] = (unsigned char)(block[i] + seed + i);
        sum += block[i];
    }
    return sum;
}
