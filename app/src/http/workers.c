/*
 * Threads over a mutex + condition-variable FIFO; see workers.h. Threads
 * start when work first needs them, not at start: an idle or lightly used
 * server never pays for the stacks, malloc arenas and per-worker store
 * connections (an SQLite connection each) of the whole pool, and a start
 * does not wait for ten clone()s (docs/ARCHITECTURE.md, Footprint).
 */
#include "http/workers.h"

#include <stdlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include "core/alloc.h"
#include "core/err.h"

struct kiln_workers {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct kiln_job *head, *tail;
    unsigned queued, cap;
    bool stopping;
    unsigned nthreads;       /* the most that may run */
    unsigned started;        /* threads[0..started) exist */
    unsigned idle;           /* waiting for a job, not yet woken for one */
    pthread_t *threads;
    struct kiln_worker_hooks hooks;
};

static _Thread_local int worker_index = -1;
static _Thread_local void *worker_context;

struct start {
    struct kiln_workers *w;
    int index;
};

int kiln_worker_index(void)
{
    return worker_index;
}

void *kiln_worker_context(void)
{
    return worker_context;
}

static void *worker_main(void *arg)
{
    struct start *s = arg;
    struct kiln_workers *w = s->w;
    worker_index = s->index;
    free(s);
    if (w->hooks.start)
        worker_context = w->hooks.start(w->hooks.arg, (unsigned)worker_index);
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stopping) {
            w->idle++;
            pthread_cond_wait(&w->ready, &w->lock);
            w->idle--;
        }
        struct kiln_job *job = w->head;
        if (!job) { /* stopping and drained */
            pthread_mutex_unlock(&w->lock);
            if (w->hooks.stop)
                w->hooks.stop(w->hooks.arg, worker_context);
            worker_context = NULL;
            return NULL;
        }
        w->head = job->next;
        if (!w->head)
            w->tail = NULL;
        w->queued--;
        pthread_mutex_unlock(&w->lock);
        job->next = NULL;
        job->run(job);
        job->finish(job);
    }
}

/* Called with w->lock held, after taking slot index = w->started++. */
static void spawn(struct kiln_workers *w, unsigned index)
{
    struct start *s = kiln_malloc(sizeof *s);
    s->w = w;
    s->index = (int)index;
    /* Workers never handle signals; the main thread does. The mask is
     * inherited from the caller, which may be an event loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (pthread_create(&w->threads[index], NULL, worker_main, s) != 0)
        kiln_fatal("cannot start worker thread");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

struct kiln_workers *kiln_workers_start(unsigned threads, unsigned queue_cap,
                                        const struct kiln_worker_hooks *hooks)
{
    struct kiln_workers *w = kiln_calloc(1, sizeof *w);
    if (hooks)
        w->hooks = *hooks;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->ready, NULL);
    w->cap = queue_cap;
    w->nthreads = threads ? threads : 1;
    w->threads = kiln_calloc(w->nthreads, sizeof *w->threads);
    return w;
}

int kiln_workers_submit(struct kiln_workers *w, struct kiln_job *job)
{
    int err = 0;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        err = KILN_ECLOSED;
    } else if (w->queued >= w->cap) {
        err = KILN_EBUSY;
    } else {
        job->next = NULL;
        if (w->tail)
            w->tail->next = job;
        else
            w->head = job;
        w->tail = job;
        w->queued++;
        /* More jobs waiting than threads waiting for them: one more
         * thread, while the pool is below its size. Created under the
         * lock so that stop never misses one (a clone, rare: at most
         * nthreads times in the process's life). */
        if (w->queued > w->idle && w->started < w->nthreads)
            spawn(w, w->started++);
        pthread_cond_signal(&w->ready);
    }
    pthread_mutex_unlock(&w->lock);
    return err;
}

void kiln_workers_stop(struct kiln_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->ready);
    unsigned started = w->started; /* no submit succeeds after stopping */
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->ready);
    free(w->threads);
    free(w);
}
