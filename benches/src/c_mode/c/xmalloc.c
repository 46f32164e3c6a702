/*
 * xmalloc.c: producer/consumer, every free remote (C mode of tessera-bench; after the
 * xmalloc-test of Lever and Boreham's malloc study, written here from its description).
 *
 * Models a pipeline whose stages run on different threads: messages are allocated by the
 * thread that reads them in and freed by the thread that finishes with them. Half the
 * threads (rounded up) only allocate: they fill batches of BATCH blocks of 16-512 B and
 * queue them. The other half only free the blocks of the batches they take off the queue.
 * An allocator whose caches keep foreign blocks grows without bound here; one that sends
 * them home must do it cheaply. With one thread, it frees its own batches (no remote frees:
 * the single-thread baseline). One operation is one block allocated by a producer and freed
 * by a consumer.
 *
 * The batches themselves are allocated once, before the clock starts, and recycled: the
 * queue costs every allocator the same mutex and condition variables, and no allocation.
 */
#include "harness.h"

#define BATCH 256
#define MIN 16
#define MAX 512
/* Filled batches that may wait in the queue, per consumer. */
#define QUEUED_PER_CONSUMER 4

struct batch {
    void *block[BATCH];
    size_t size[BATCH];
    uint64_t tag[BATCH];
};

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t filled; /* a batch was queued, or the last producer left */
    pthread_cond_t emptied; /* a batch came back empty */
    struct batch **full; /* FIFO ring of `cap` */
    size_t head, count, cap;
    struct batch **empty; /* stack */
    size_t nempty;
    int threads, producers, producers_left;
    uint64_t deadline;
};

static void fill(struct batch *b, uint64_t *rng) {
    for (int i = 0; i < BATCH; i++) {
        b->size[i] = rng_range(rng, MIN, MAX);
        b->tag[i] = rng_next(rng);
        b->block[i] = block_new(b->size[i], b->tag[i]);
    }
}

static void drain(struct batch *b) {
    for (int i = 0; i < BATCH; i++)
        block_free(b->block[i], b->size[i], b->tag[i]);
}

static void produce(struct worker *w, struct queue *q) {
    uint64_t rng = rng_seed((uint64_t)w->index);
    do {
        pthread_mutex_lock(&q->lock);
        while (q->nempty == 0)
            pthread_cond_wait(&q->emptied, &q->lock);
        struct batch *b = q->empty[--q->nempty];
        pthread_mutex_unlock(&q->lock);

        fill(b, &rng);

        pthread_mutex_lock(&q->lock);
        q->full[(q->head + q->count) % q->cap] = b;
        q->count++;
        pthread_cond_signal(&q->filled);
        pthread_mutex_unlock(&q->lock);
    } while (now_ns() < q->deadline);
    pthread_mutex_lock(&q->lock);
    if (--q->producers_left == 0)
        pthread_cond_broadcast(&q->filled);
    pthread_mutex_unlock(&q->lock);
}

static void consume(struct worker *w, struct queue *q) {
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (q->count == 0 && q->producers_left > 0)
            pthread_cond_wait(&q->filled, &q->lock);
        if (q->count == 0) {
            pthread_mutex_unlock(&q->lock);
            return;
        }
        struct batch *b = q->full[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_mutex_unlock(&q->lock);

        drain(b);
        w->ops += BATCH;

        pthread_mutex_lock(&q->lock);
        q->empty[q->nempty++] = b;
        pthread_cond_signal(&q->emptied);
        pthread_mutex_unlock(&q->lock);
    }
}

/* One thread: produce a batch and free it, no queue. */
static void alone(struct worker *w, struct queue *q) {
    uint64_t rng = rng_seed(0);
    struct batch *b = q->empty[0];
    do {
        fill(b, &rng);
        drain(b);
        w->ops += BATCH;
    } while (now_ns() < q->deadline);
}

static void *role(void *arg) {
    struct worker *w = arg;
    struct queue *q = w->shared;
    if (q->threads == 1)
        alone(w, q);
    else if (w->index < q->producers)
        produce(w, q);
    else
        consume(w, q);
    return NULL;
}

int main(int argc, char **argv) {
    struct args a = parse_args(argc, argv, "xmalloc");
    int producers = (a.threads + 1) / 2, consumers = a.threads - producers;
    /* Every batch can be in the queue, being filled or being drained at once. */
    size_t batches = a.threads == 1 ? 1 : (size_t)(QUEUED_PER_CONSUMER * consumers + a.threads);
    struct queue q = {
        .full = must_malloc(batches * sizeof(struct batch *)),
        .cap = batches,
        .empty = must_malloc(batches * sizeof(struct batch *)),
        .threads = a.threads,
        .producers = producers,
        .producers_left = producers,
    };
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.filled, NULL);
    pthread_cond_init(&q.emptied, NULL);
    for (size_t i = 0; i < batches; i++)
        q.empty[q.nempty++] = must_malloc(sizeof(struct batch));
    q.deadline = now_ns() + a.budget_ns;
    int rc = run_phase("xmalloc", a, role, &q);
    if (q.nempty != batches)
        fail("%zu of %zu batches came back", q.nempty, batches);
    for (size_t i = 0; i < batches; i++)
        free(q.empty[i]);
    free(q.full);
    free(q.empty);
    return rc;
}
