/* Fixed threads over a mutex + condition-variable FIFO; see workers.h. */
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
    unsigned nthreads;
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
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->ready, &w->lock);
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

struct kiln_workers *kiln_workers_start(unsigned threads, unsigned queue_cap,
                                        const struct kiln_worker_hooks *hooks)
{
    struct kiln_workers *w = kiln_calloc(1, sizeof *w);
    if (hooks)
        w->hooks = *hooks;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->ready, NULL);
    w->cap = queue_cap;
    w->nthreads = threads;
    w->threads = kiln_calloc(threads, sizeof *w->threads);
    /* Workers never handle signals; the main thread does. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        struct start *s = kiln_malloc(sizeof *s);
        s->w = w;
        s->index = (int)i;
        if (pthread_create(&w->threads[i], NULL, worker_main, s) != 0)
            kiln_fatal("cannot start worker thread");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->ready);
    free(w->threads);
    free(w);
}
