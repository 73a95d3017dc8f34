/*
 * The worker pool: up to a fixed number of threads (started as work first
 * needs them) that run handlers which may block (database, Valkey, outbound
 * HTTPS), fed by a bounded FIFO queue.
 * Bounded on purpose: when the queue is full, submit fails at once and the
 * server answers 503 with retry-after, instead of letting latency grow
 * without limit behind a slow database. Each worker thread will own its own
 * store connections, so no pool lock sits on the request path.
 *
 * Threads: submit from any thread; run and finish are called on a worker.
 */
#ifndef KILN_HTTP_WORKERS_H
#define KILN_HTTP_WORKERS_H

struct kiln_job {
    struct kiln_job *next;               /* queue link, owned by the pool */
    void (*run)(struct kiln_job *job);    /* the work */
    void (*finish)(struct kiln_job *job); /* hand the result back (e.g. wake a loop) */
};

struct kiln_workers;

/*
 * Per-worker state (store connections). start runs on each worker thread
 * before its first job and returns that worker's context; stop runs on the
 * same thread after its last job. Either may be NULL.
 */
struct kiln_worker_hooks {
    void *(*start)(void *arg, unsigned index);
    void (*stop)(void *arg, void *context);
    void *arg;
};

/* hooks may be NULL; it is copied. No thread starts before the first
 * submit; then one more starts whenever more jobs are queued than threads
 * wait for them, up to threads (0 counts as 1). */
struct kiln_workers *kiln_workers_start(unsigned threads, unsigned queue_cap,
                                        const struct kiln_worker_hooks *hooks);
/* 0, or KILN_EBUSY when the queue is full, KILN_ECLOSED after stop began. */
int kiln_workers_submit(struct kiln_workers *w, struct kiln_job *job);
/* Let queued jobs finish, then join the threads and free the pool. */
void kiln_workers_stop(struct kiln_workers *w);
/* Index of the calling worker thread (0..threads-1), or -1 elsewhere. */
int kiln_worker_index(void);
/* The calling worker's context from hooks->start, or NULL elsewhere. */
void *kiln_worker_context(void);

#endif
