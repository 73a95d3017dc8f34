/*
 * Background jobs, durable in the database Kiln already has (docs/JOBS.md).
 *
 * A job is a row of the jobs table: a kind (registered in C with
 * kiln_job_register), its arguments (JSON text), when it may run, and its
 * state: queued, running (claimed by one instance under a lease), done or
 * dead (its attempts spent; kept for inspection).
 *
 * Enqueue: kiln_job_enqueue on the connection that makes the write that
 * causes the job, inside the write's transaction (kiln_db_begin ... commit),
 * so the job exists if and only if the write committed. An idempotency key
 * makes a second enqueue of the same (kind, key) a no-op for as long as the
 * first job's row is kept (JOB_RETENTION_HOURS after it ended).
 *
 * Run: every instance runs a jobs thread that claims due jobs (on
 * PostgreSQL with FOR UPDATE SKIP LOCKED, one statement per claim, so it
 * works through a transaction-mode pooler: pgbouncer, RDS Proxy) and hands
 * them to JOB_CONCURRENCY runner threads, each with its own database
 * connection: a job never holds an event loop, a fiber or a request's
 * worker. A claim takes a lease of JOB_LEASE_SECONDS, renewed while the job
 * runs; a job whose instance died is claimed again once its lease has
 * expired: at least once, never lost. A job function must therefore be
 * safe to run twice (deliveries carry a stable id for the receiver).
 *
 * Failures are retried with exponential backoff and jitter (or after the
 * delay the function asks for) until max_attempts, then the job is dead.
 *
 * Schedules: a kind registered with a cron expression (jobs/cron.h, UTC),
 * or with an interval (ticks at the multiples of every_s since the epoch),
 * is enqueued at each tick by whichever instance sees it first; the tick's
 * time is the idempotency key, so each tick runs once across all instances.
 * A tick that comes while no instance runs is not made up.
 *
 * SIGTERM: no new claims (the manager sees kiln_server_draining); running jobs get until the
 * drain deadline to finish; any still running then is released (queued
 * again, the attempt not counted) for another instance.
 */
#ifndef KILN_JOBS_JOBS_H
#define KILN_JOBS_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/str.h"
#include "store/db.h"
#include "store/kv.h"

#define KILN_JOB_KIND_MAX 64        /* bytes of a kind's name */
#define KILN_JOB_KEY_MAX 200        /* bytes of an idempotency key */
#define KILN_JOB_ARGS_MAX (256 * 1024)
#define KILN_JOB_ERROR_MAX 1000     /* bytes of last_error kept */
#define KILN_JOB_MAX_KINDS 64
#define KILN_JOBS_CHANNEL "kiln:jobs"

/* What a running job sees. */
struct kiln_job_run {
    int64_t id;
    const char *kind;
    const char *args;            /* JSON text */
    int attempt;                 /* 1 on the first run */
    int max_attempts;
    struct kiln_db *db;          /* the runner's own connection */
    struct kiln_kv *kv;          /* the runner's own key-value connection */
    kiln_arena *arena;           /* freed after the job */
    /* Set by the function when it fails: why (kept in last_error, capped),
     * and optionally when to try again (ms from now; 0: the backoff). */
    char error[KILN_JOB_ERROR_MAX + 1];
    uint64_t retry_in_ms;
    /* Set when the instance is draining: a long job may stop early and
     * return KILN_JOB_RELEASE to be run elsewhere. */
    const volatile bool *stopping;
};

enum kiln_job_result {
    KILN_JOB_OK = 0,        /* done */
    KILN_JOB_RETRY = 1,     /* failed this time: retry (or dead when spent) */
    KILN_JOB_DEAD = 2,      /* failed for good: dead now, no more attempts */
    KILN_JOB_RELEASE = 3,   /* not done, not failed: queue again, attempt not counted */
    KILN_JOB_ENDED = 4,     /* done, and already recorded so (kiln_job_done_sql) */
};

typedef enum kiln_job_result (*kiln_job_fn)(struct kiln_job_run *job);
/* A kind that runs several of its jobs at once: jobs[0..n) in claim
 * order, sharing one arena, each with its own error and retry_in_ms;
 * res[i] is job i's result. */
typedef void (*kiln_job_batch_fn)(struct kiln_job_run *jobs, size_t n,
                                  enum kiln_job_result *res);
#define KILN_JOB_MAX_BATCH 64

struct kiln_job_kind {
    const char *name;            /* "webhooks.deliver"; [a-z0-9_.-], unique */
    kiln_job_fn run;
    int max_attempts;            /* 0: 10 */
    unsigned backoff_ms;         /* first retry's delay; 0: 1000 (doubles, with jitter) */
    unsigned max_backoff_ms;     /* 0: one hour */
    const char *cron;            /* NULL, or a schedule (jobs/cron.h) */
    unsigned every_s;            /* or: every this many seconds (0: not) */
    const char *cron_args;       /* the scheduled job's args; NULL: "{}" */
    /* Instead of run: run_batch with up to batch (2..KILN_JOB_MAX_BATCH)
     * due jobs of the kind at once, for work whose statements batch (one
     * read and one record for all: the webhooks' deliveries). A claim
     * that finds jobs of such a kind claims up to batch - 1 more of it for
     * each; claimed jobs waiting in the instance's queue keep their lease
     * (renewed there too) and a drain releases them. */
    kiln_job_batch_fn run_batch;
    unsigned batch;
};

/* Register a kind (before kiln_jobs_start; the struct is copied, its
 * strings must outlive the process). Aborts on a bad name, a duplicate or
 * a bad cron expression: a fork's mistake is found at start. */
void kiln_job_register(const struct kiln_job_kind *kind);

/*
 * PostgreSQL: the statement the runner would end job with as done (guarded
 * the same way: a job this instance no longer holds is left alone), its
 * parameters numbered from $first (the job's id, this instance, the
 * attempt: put in out[0..2]). A function whose last statement writes
 * anyway puts it there as a CTE part and returns KILN_JOB_ENDED: the job
 * ends with that statement's commit and the runner saves a round trip.
 */
const char *kiln_job_done_sql(kiln_arena *a, const struct kiln_job_run *job, size_t first,
                              kiln_str out[3]);
/*
 * The same for several jobs of a batch (PostgreSQL), as an UPDATE ... FROM
 * rows: rows names a relation of the statement with the columns job
 * (bigint, the job's id) and attempt (integer), where names a condition
 * on them (NULL: all rows); $first is this instance (put in out[0]).
 */
const char *kiln_job_done_many_sql(kiln_arena *a, const char *rows, const char *where,
                                   size_t first, kiln_str out[1]);
const struct kiln_job_kind *kiln_job_kind_find(const char *name);

struct kiln_job_options {
    const char *idempotency_key; /* NULL: none */
    uint64_t delay_ms;           /* run no earlier than this from now */
    int max_attempts;            /* 0: the kind's */
};

/*
 * Enqueue a job on db (inside the caller's transaction when there is one).
 * args: JSON text (NULL: "{}"). *id (may be NULL) gets the job's id, or 0
 * when the idempotency key was taken already (nothing enqueued). 0, or
 * KILN_EINVAL (unknown kind, args too long), or the database's error.
 * The jobs thread of this instance is woken after the caller's commit by
 * kiln_jobs_notify (kiln_job_enqueue cannot know when that is).
 */
int kiln_job_enqueue(struct kiln_db *db, kiln_arena *a, const char *kind, const char *args,
                     const struct kiln_job_options *opt, int64_t *id);
/*
 * Enqueue one job of kind per element of values (a JSON array of numbers or
 * strings), its args prefix, the element's text and suffix ("{\"delivery\":"
 * and "}"), in one statement, in the array's order. For work that makes
 * many jobs at once (the webhooks' dispatcher). 0 or the database's error.
 */
int kiln_job_enqueue_batch(struct kiln_db *db, kiln_arena *a, const char *kind,
                           const char *values, const char *prefix, const char *suffix,
                           int max_attempts);
/* Jobs were committed: wake this instance's jobs thread (cheap, any
 * thread) and, through Valkey, the other instances'. */
void kiln_jobs_notify(void);

struct kiln_jobs_config {
    struct kiln_db_config db;    /* the runners' and the scheduler's connections */
    struct kiln_kv_store *kv;    /* Valkey: wake-ups between instances */
    unsigned concurrency;        /* JOB_CONCURRENCY; 0: this instance runs no jobs */
    unsigned lease_s;            /* JOB_LEASE_SECONDS */
    unsigned poll_ms;            /* JOB_POLL_MS */
    unsigned busy_percent;       /* JOB_BUSY_PERCENT; 0 or 100: never yield */
    unsigned retention_hours;    /* JOB_RETENTION_HOURS: done jobs kept */
    unsigned dead_retention_days; /* JOB_DEAD_RETENTION_DAYS */
    const char *instance;        /* this instance's name in locked_by */
    unsigned shutdown_timeout_s; /* SHUTDOWN_TIMEOUT_SECONDS: the drain's time */
};

/* Start the jobs thread and its runners (cfg copied). 0 or an error. */
int kiln_jobs_start(const struct kiln_jobs_config *cfg);
/* After the server stopped (or at once, without a server): claim nothing
 * more, wait for the running jobs until the drain's time (counted from the
 * SIGTERM) is up, release what still runs, end the threads. */
void kiln_jobs_stop(void);

/*
 * A pump: work the manager thread does on its own connection when it is
 * due (kiln_jobs_pump_due, and at every JOB_POLL_MS), at most every few
 * milliseconds, never while draining. Used for what turns other rows into
 * jobs (webhooks/: the events outbox into deliveries). Before start.
 */
void kiln_jobs_add_pump(void (*fn)(struct kiln_db *db, void *arg), void *arg);
/* Something a pump reads changed (any thread, cheap). */
void kiln_jobs_pump_due(void);

/* The delay before retry n (n >= 1) of a kind: backoff_ms * 2^(n-1),
 * capped, times a random factor in [0.5, 1.5). */
uint64_t kiln_job_backoff_ms(const struct kiln_job_kind *k, int n);

/*
 * Delete the rows of table whose column is older than age_ms (and that
 * match where, SQL or NULL), in short batches (on PostgreSQL by the rows'
 * addresses, SKIP LOCKED, so instances pruning at once take different rows
 * and no statement holds many rows or a lock for long). Returns the rows
 * deleted, or -1 after an error (logged). Stops early when *stopping.
 */
long kiln_prune_rows(struct kiln_db *db, const char *table, const char *column,
                     const char *where, uint64_t age_ms, const volatile bool *stopping);

/* This instance's name in the jobs table's locked_by (host/pid). */
const char *kiln_jobs_instance(void);

/* Counts by state, for health and tests: -1 where unknown. */
struct kiln_jobs_stats {
    long running;                /* on this instance now */
    unsigned long claimed, done, retried, dead, released;  /* since start */
    /* Yielding to requests: whether it is on now, and the pieces of work
     * (a runner's job or batch, a pump's run) that waited their turn */
    bool yielding;
    unsigned long yielded;
};
void kiln_jobs_stats(struct kiln_jobs_stats *out);

#endif
