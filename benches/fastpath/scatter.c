/* One thread, rounds of 1,000 malloc(16..512 B) (random sizes, a fixed seed) then the 1,000
 * frees in allocation order: issue #19's program with one thread. Its frees scatter over the
 * spans of some 60 classes, so a per-CPU thread's span memo goes off and each free takes the
 * page-map path; `pair.c`'s frees all hit the memo. `run.sh` counts the instructions of
 * 100 mallocs from the 2,001st (round 3: the memo off by then) and of 100 frees after them,
 * and prints the means (count.py).
 *
 *   cc -O2 scatter.c -o scatter && LD_PRELOAD=libtessera.so TESSERA_CACHE=percpu ./scatter */
#include <stdint.h>
#include <stdlib.h>

#define BLOCKS 1000

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    static void *live[BLOCKS];
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < BLOCKS; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            live[i] = malloc(16 + rng % 497);
            if (!live[i])
                return 2;
            /* Touched, as a program would. */
            *(volatile char *)live[i] = 1;
        }
        for (int i = 0; i < BLOCKS; i++)
            free(live[i]);
    }
    return 0;
}
