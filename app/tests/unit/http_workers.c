/*
 * Unit tests for app/src/http/workers.c. Jobs record what they saw (worker
 * index, order, signal mask) into their own struct; cmocka's asserts run on
 * the main thread only. A job can be held on a semaphore, which is how the
 * tests fill the bounded queue deterministically. Every wait has a deadline
 * so that a broken pool fails the test instead of hanging the suite.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "test_util.h"

#include "core/err.h"
#include "http/workers.h"

#define MAX_JOBS 64

struct shared {
    pthread_mutex_t lock;
    int order[MAX_JOBS]; /* ids in the order run() started */
    int nrun;
    sem_t started;       /* posted when a job's run() begins */
    sem_t finished;      /* posted by each finish() */
    sem_t release;       /* held jobs wait here */
};

struct tjob {
    struct kiln_job job; /* first: the pool hands back this pointer */
    struct shared *sh;
    int id;
    bool hold;           /* wait on sh->release inside run() */
    int run_index;
    int finish_index;
    bool ran, finished;
    bool sigint_blocked;
    pthread_t run_thread, finish_thread;
};

static void job_run(struct kiln_job *j)
{
    struct tjob *t = (struct tjob *)j;
    sigset_t mask;
    t->run_index = kiln_worker_index();
    t->run_thread = pthread_self();
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    t->sigint_blocked = sigismember(&mask, SIGINT) == 1;
    pthread_mutex_lock(&t->sh->lock);
    t->sh->order[t->sh->nrun++] = t->id;
    pthread_mutex_unlock(&t->sh->lock);
    sem_post(&t->sh->started);
    if (t->hold)
        sem_wait(&t->sh->release);
    t->ran = true;
}

static void job_finish(struct kiln_job *j)
{
    struct tjob *t = (struct tjob *)j;
    t->finish_index = kiln_worker_index();
    t->finish_thread = pthread_self();
    t->finished = t->ran; /* finish comes after run */
    sem_post(&t->sh->finished);
}

static void job_init(struct tjob *t, struct shared *sh, int id, bool hold)
{
    memset(t, 0, sizeof *t);
    t->job.run = job_run;
    t->job.finish = job_finish;
    t->sh = sh;
    t->id = id;
    t->hold = hold;
    t->run_index = t->finish_index = -2;
}

static int setup(void **state)
{
    struct shared *sh = calloc(1, sizeof *sh);
    pthread_mutex_init(&sh->lock, NULL);
    sem_init(&sh->started, 0, 0);
    sem_init(&sh->finished, 0, 0);
    sem_init(&sh->release, 0, 0);
    *state = sh;
    return 0;
}

static int teardown(void **state)
{
    struct shared *sh = *state;
    pthread_mutex_destroy(&sh->lock);
    sem_destroy(&sh->started);
    sem_destroy(&sh->finished);
    sem_destroy(&sh->release);
    free(sh);
    return 0;
}

/* sem_wait with a 5 s deadline; fails the test on timeout. */
static void wait_sem(sem_t *s, const char *what)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    while (sem_timedwait(s, &deadline) != 0) {
        if (errno == EINTR)
            continue;
        fail_msg("timed out waiting for %s", what);
    }
}

static void test_jobs_run_on_workers(void **state)
{
    struct shared *sh = *state;
    enum { THREADS = 4, JOBS = 20 };
    struct tjob jobs[JOBS];
    struct kiln_workers *w = kiln_workers_start(THREADS, 64, NULL);
    assert_non_null(w);
    assert_int_equal(kiln_worker_index(), -1);

    for (int i = 0; i < JOBS; i++) {
        job_init(&jobs[i], sh, i, false);
        assert_int_equal(kiln_workers_submit(w, &jobs[i].job), 0);
    }
    for (int i = 0; i < JOBS; i++)
        wait_sem(&sh->finished, "finish()");
    kiln_workers_stop(w);

    for (int i = 0; i < JOBS; i++) {
        struct tjob *t = &jobs[i];
        if (!t->ran || !t->finished)
            fail_msg("job %d: ran %d finished-after-run %d", i, t->ran, t->finished);
        if (t->run_index < 0 || t->run_index >= THREADS)
            fail_msg("job %d: kiln_worker_index() in run() = %d, want 0..%d", i,
                     t->run_index, THREADS - 1);
        /* finish is called on the worker that ran the job */
        assert_int_equal(t->finish_index, t->run_index);
        assert_true(pthread_equal(t->run_thread, t->finish_thread));
        assert_false(pthread_equal(t->run_thread, pthread_self()));
        /* workers never take signals; the main thread does */
        assert_true(t->sigint_blocked);
    }
    assert_int_equal(sh->nrun, JOBS);
    assert_int_equal(kiln_worker_index(), -1);
}

/* One thread, queue of one: running + one queued, then EBUSY. */
static void test_bounded_queue(void **state)
{
    struct shared *sh = *state;
    struct tjob busy, queued, rejected, later;
    struct kiln_workers *w = kiln_workers_start(1, 1, NULL);

    job_init(&busy, sh, 0, true);
    job_init(&queued, sh, 1, false);
    job_init(&rejected, sh, 2, false);
    job_init(&later, sh, 3, false);

    /* Results are checked after the held job is released, so that a
     * failure cannot leave a worker blocked on a freed semaphore. */
    int rc_busy = kiln_workers_submit(w, &busy.job);
    wait_sem(&sh->started, "the first job to start"); /* the worker holds it */
    int rc_queued = kiln_workers_submit(w, &queued.job);
    int rc_full = kiln_workers_submit(w, &rejected.job);
    int rc_full_again = kiln_workers_submit(w, &rejected.job);
    sem_post(&sh->release);

    wait_sem(&sh->finished, "the held job");
    wait_sem(&sh->finished, "the queued job");
    /* The queue has room again. */
    int rc_later = kiln_workers_submit(w, &later.job);
    if (rc_later == 0)
        wait_sem(&sh->finished, "the later job");
    kiln_workers_stop(w);

    assert_int_equal(rc_busy, 0);
    assert_int_equal(rc_queued, 0);
    if (rc_full != KILN_EBUSY)
        fail_msg("submit to a full queue: %s (%d), want EBUSY", kiln_err_name(rc_full),
                 rc_full);
    assert_int_equal(rc_full_again, KILN_EBUSY);
    assert_int_equal(rc_later, 0);
    assert_true(busy.finished);
    assert_true(queued.finished);
    assert_true(later.finished);
    assert_false(rejected.ran);
    assert_false(rejected.finished);
    assert_int_equal(sh->nrun, 3);
}

/* One thread runs jobs in submission order. */
static void test_fifo_order(void **state)
{
    struct shared *sh = *state;
    enum { JOBS = 12 };
    struct tjob gate, jobs[JOBS];
    struct kiln_workers *w = kiln_workers_start(1, JOBS, NULL);

    int rc[JOBS + 1];
    job_init(&gate, sh, -1, true);
    rc[JOBS] = kiln_workers_submit(w, &gate.job);
    wait_sem(&sh->started, "the gate job");
    for (int i = 0; i < JOBS; i++) {
        job_init(&jobs[i], sh, i, false);
        rc[i] = kiln_workers_submit(w, &jobs[i].job);
    }
    sem_post(&sh->release);
    kiln_workers_stop(w); /* lets the queued jobs finish first */

    for (int i = 0; i <= JOBS; i++)
        assert_int_equal(rc[i], 0);
    assert_int_equal(sh->nrun, JOBS + 1);
    assert_int_equal(sh->order[0], -1);
    for (int i = 0; i < JOBS; i++) {
        if (sh->order[i + 1] != i)
            fail_msg("position %d ran job %d, want %d", i + 1, sh->order[i + 1], i);
        assert_true(jobs[i].finished);
    }
}

/* stop drains the queue, then joins: nothing queued is lost. */
static void test_stop_drains_queue(void **state)
{
    struct shared *sh = *state;
    enum { JOBS = 30 };
    struct tjob jobs[JOBS];
    struct kiln_workers *w = kiln_workers_start(3, JOBS, NULL);
    for (int i = 0; i < JOBS; i++) {
        job_init(&jobs[i], sh, i, false);
        assert_int_equal(kiln_workers_submit(w, &jobs[i].job), 0);
    }
    kiln_workers_stop(w);
    for (int i = 0; i < JOBS; i++)
        if (!jobs[i].finished)
            fail_msg("job %d was not finished by stop", i);
    assert_int_equal(sh->nrun, JOBS);
}

/* Threads of this process, from /proc. */
static int threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* No thread before the first job; one more each time more jobs wait than
 * threads do, and never more than the pool's size. */
static void test_threads_start_on_demand(void **state)
{
    struct shared *sh = *state;
    enum { THREADS = 3 };
    struct tjob jobs[5];
    int before = threads_now();
    struct kiln_workers *w = kiln_workers_start(THREADS, 16, NULL);
    assert_int_equal(threads_now(), before);

    job_init(&jobs[0], sh, 0, true);
    assert_int_equal(kiln_workers_submit(w, &jobs[0].job), 0);
    wait_sem(&sh->started, "job 0 started");
    assert_int_equal(threads_now(), before + 1);

    /* Held jobs keep every thread busy: each new one needs a new thread,
     * up to THREADS; the fourth and fifth wait in the queue. */
    for (int i = 1; i < 5; i++) {
        job_init(&jobs[i], sh, i, true);
        assert_int_equal(kiln_workers_submit(w, &jobs[i].job), 0);
    }
    wait_sem(&sh->started, "job 1 started");
    wait_sem(&sh->started, "job 2 started");
    assert_int_equal(threads_now(), before + THREADS);
    for (int i = 0; i < 5; i++)
        sem_post(&sh->release);
    for (int i = 0; i < 5; i++)
        wait_sem(&sh->finished, "finish()");
    assert_int_equal(threads_now(), before + THREADS);
    for (int i = 0; i < 5; i++)
        assert_true(jobs[i].run_index >= 0 && jobs[i].run_index < THREADS);
    kiln_workers_stop(w);
    /* A joined thread may still be counted for a moment while the kernel
     * finishes its exit. */
    for (int i = 0; i < 200 && threads_now() != before; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    assert_int_equal(threads_now(), before);
}

static void test_stop_idle_pool(void **state)
{
    struct kiln_workers *w = kiln_workers_start(8, 4, NULL);
    kiln_workers_stop(w);
    kiln_workers_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_jobs_run_on_workers),
        T(test_bounded_queue),
        T(test_fifo_order),
        T(test_stop_drains_queue),
        T(test_stop_idle_pool),
        T(test_threads_start_on_demand),
#undef T
    };
    return cmocka_run_group_tests_name("http/workers", tests, NULL, NULL);
}
