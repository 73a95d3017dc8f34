/*
 * Background jobs: the queue in the database, a manager thread that claims
 * and schedules, runner threads that run (jobs.h is the contract,
 * docs/JOBS.md the guide).
 *
 * The manager thread owns one database connection and, with Valkey, two
 * key-value connections (one subscribed to KILN_JOBS_CHANNEL, one to
 * publish). It claims due jobs whenever a runner is free and there may be
 * work: this instance enqueued (kiln_jobs_notify), another one published,
 * a runner finished, a retry is due, or JOB_POLL_MS passed (so nothing
 * waits long for a lost wake-up). It renews the leases of the jobs its
 * runners hold, puts back jobs whose lease expired elsewhere and enqueues
 * scheduled ticks.
 *
 * The pumps (work that turns other rows into jobs: webhook deliveries from
 * the events outbox) run on a thread of their own with their own
 * connection, so a backlog there never delays a claim or a renewal.
 *
 * Runners wait on a condition variable for claimed jobs; each opens its
 * own database and key-value connections on first use.
 */
#include "jobs/jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
#include "core/random.h"
#include "http/server.h"
#include "jobs/cron.h"

#define DEFAULT_ATTEMPTS 10
#define DEFAULT_BACKOFF_MS 1000u
#define DEFAULT_MAX_BACKOFF_MS 3600000u
#define MAX_RUNNERS 256
/* Wake-ups published to the other instances at most this often: a burst
 * of enqueues is one message. */
#define PUBLISH_GAP_MS 5
/* The pumps run at most this often while writes keep waking them: each
 * run is a transaction of a few statements (the webhooks' dispatcher: its
 * cursor, the horizon, the events, the deliveries), and at 5 ms under
 * 10,000 writes/s they were as many statements as the writes' own. */
#define PUMP_GAP_MS 20
/* How often the manager looks for a drain (SIGTERM) while idle. */
#define DRAIN_CHECK_MS 200
/* What a drain keeps for itself after the jobs' time: releasing what still
 * runs and closing. */
#define DRAIN_MARGIN_MS 500
#define MAX_PUMPS 8
/* Retry times this instance remembers to claim on time (beyond them, the
 * latest ones wait for the poll). */
#define MAX_RETRY_TIMES 64

#define PG_NOW "now()"
#define LITE_NOW "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
#define LITE_IN_MS(p) "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || (" p " / 1000.0) || ' seconds')"
#define LITE_INT(p) p
#define PG_NOW "now()"
#define PG_IN_MS(p) "now() + " p "::bigint * interval '1 millisecond'"
#define PG_INT(p) p "::bigint"
/* A statement whose dialects differ only in these: written once, as
 * STMT(NOW, IN_MS, INT), and made for both. */
#define BOTH(stmt) (J.pg ? stmt(PG_NOW, PG_IN_MS, PG_INT) : stmt(LITE_NOW, LITE_IN_MS, LITE_INT))

/* The ends of a run (finish), guarded so that a job this instance no
 * longer holds is left alone; $4 the delay in ms (unused by DONE and
 * DEAD, checked by DEAD so that every statement takes the same four). */
#define JOB_DONE_SET(NOW)                                                                         \
    "state = 'done', finished_at = " NOW ", updated_at = " NOW ", lease_until = NULL, last_error " \
    "= NULL"
#define JOB_DONE(NOW, IN_MS, INT)                                                                 \
    "UPDATE jobs SET " JOB_DONE_SET(NOW) " WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND " \
    "state = 'running'"
#define JOB_RETRY(NOW, IN_MS, INT)                                                                \
    "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, "  \
    "finished_at = CASE WHEN attempts >= max_attempts THEN " NOW " END, run_at = " IN_MS("$4")    \
    ", last_error = $5, lease_until = NULL, locked_by = NULL, updated_at = " NOW " WHERE id = $1 " \
    "AND locked_by = $2 AND attempts = $3 AND state = 'running' RETURNING state"
#define JOB_DEAD(NOW, IN_MS, INT)                                                                 \
    "UPDATE jobs SET state = 'dead', finished_at = " NOW ", last_error = $5, lease_until = NULL, " \
    "updated_at = " NOW " WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND state = "         \
    "'running' AND " INT("$4") " >= 0"
#define JOB_RELEASE(NOW, IN_MS, INT)                                                              \
    "UPDATE jobs SET state = 'queued', attempts = attempts - 1, run_at = " IN_MS("$4")            \
    ", lease_until = NULL, locked_by = NULL, updated_at = " NOW " WHERE id = $1 AND locked_by = " \
    "$2 AND attempts = $3 AND state = 'running'"
/* Jobs whose lease ran out (sweep). */
#define JOB_EXPIRED(NOW, IN_MS, INT)                                                              \
    "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, "  \
    "finished_at = CASE WHEN attempts >= max_attempts THEN " NOW " END, last_error = 'lease "     \
    "expired: the instance running it (' || coalesce(locked_by, '?') || ') stopped renewing it', " \
    "run_at = " NOW ", lease_until = NULL, locked_by = NULL, updated_at = " NOW " WHERE state = "  \
    "'running' AND lease_until < " NOW " RETURNING id"

struct claimed {
    int64_t id;
    int attempt, max_attempts;
    char kind[KILN_JOB_KIND_MAX + 1];
    char *args; /* malloc'd */
};

struct runner {
    pthread_t thread;
    bool busy;
    /* The jobs it runs (one, or a batch), for lease renewal and release */
    int64_t *ids; /* KILN_JOB_MAX_BATCH of them */
    size_t nids;
    struct kiln_db *db;
    struct kiln_kv *kv;
};

struct pump {
    void (*fn)(struct kiln_db *db, void *arg);
    void *arg;
    atomic_bool due;
};

static struct {
    struct kiln_jobs_config cfg;
    struct kiln_job_kind kinds[KILN_JOB_MAX_KINDS];
    struct kiln_cron crons[KILN_JOB_MAX_KINDS];
    int64_t next_tick[KILN_JOB_MAX_KINDS];
    size_t nkinds;
    char *kinds_json; /* ["a","b"]: the kinds this instance runs */
    unsigned max_batch;   /* the largest batch of those (1: none) */

    struct pump pumps[MAX_PUMPS];
    size_t npumps;
    pthread_t pumper;      /* runs the pumps, on its own connection */
    pthread_cond_t pump_cond; /* under lock: a pump is due, or stop */

    pthread_t manager;
    struct runner runners[MAX_RUNNERS];
    unsigned nrunners;

    pthread_mutex_t lock;
    pthread_cond_t work;  /* runners: a job is queued, or stop */
    pthread_cond_t idle;  /* a runner finished */
    struct claimed *queue; /* claimed, not yet picked up by a runner */
    size_t qhead, qlen, qcap;
    unsigned busy;

    int wake_fd;
    atomic_bool changed;  /* this instance enqueued: publish, claim */
    atomic_bool stop;
    volatile bool stopping; /* draining: jobs see it through kiln_job.stopping */
    atomic_bool draining;
    /* When the retries this instance set are due (monotonic ms, under
     * lock): each one, not only the soonest, so that a later retry is not
     * left to the poll once a sooner one was claimed. */
    uint64_t retry_at[MAX_RETRY_TIMES];
    size_t nretry;
    uint64_t drain_started;
    bool started, pg, valkey;

    atomic_ulong claimed_n, done_n, retried_n, dead_n, released_n;
} J = { .lock = PTHREAD_MUTEX_INITIALIZER,
        .work = PTHREAD_COND_INITIALIZER,
        .idle = PTHREAD_COND_INITIALIZER,
        .pump_cond = PTHREAD_COND_INITIALIZER,
        .wake_fd = -1 };

/* ---- kinds ---------------------------------------------------------------- */

static bool name_ok(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (!len || len > KILN_JOB_KIND_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

void kiln_job_register(const struct kiln_job_kind *kind)
{
    if (J.started)
        kiln_fatal("jobs: kiln_job_register after kiln_jobs_start");
    if (!kind || !name_ok(kind->name) || !kind->run == !kind->run_batch)
        kiln_fatal("jobs: a job kind needs a name of [a-z0-9_.-] (at most 64) and a function "
                   "(run or run_batch)");
    if (kind->run_batch && (kind->batch < 2 || kind->batch > KILN_JOB_MAX_BATCH))
        kiln_fatal("jobs: a run_batch kind needs a batch of 2..KILN_JOB_MAX_BATCH");
    if (kiln_job_kind_find(kind->name)) {
        kiln_logf(KILN_LOG_ERROR, "jobs: kind %s registered twice", kind->name);
        kiln_fatal("jobs: a kind registered twice");
    }
    if (J.nkinds == KILN_JOB_MAX_KINDS)
        kiln_fatal("jobs: too many job kinds (KILN_JOB_MAX_KINDS)");
    struct kiln_job_kind k = *kind;
    if (!k.max_attempts)
        k.max_attempts = DEFAULT_ATTEMPTS;
    if (!k.backoff_ms)
        k.backoff_ms = DEFAULT_BACKOFF_MS;
    if (!k.max_backoff_ms)
        k.max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
    if (k.cron && k.every_s)
        kiln_fatal("jobs: a kind has a cron expression or an interval, not both");
    if (k.cron) {
        char err[200];
        if (kiln_cron_parse(&J.crons[J.nkinds], k.cron, err, sizeof err)) {
            kiln_logf(KILN_LOG_ERROR, "jobs: kind %s: cron \"%s\": %s", k.name, k.cron, err);
            kiln_fatal("jobs: a bad cron expression");
        }
    }
    J.kinds[J.nkinds++] = k;
}

const struct kiln_job_kind *kiln_job_kind_find(const char *name)
{
    for (size_t i = 0; name && i < J.nkinds; i++)
        if (!strcmp(J.kinds[i].name, name))
            return &J.kinds[i];
    return NULL;
}

void kiln_jobs_add_pump(void (*fn)(struct kiln_db *db, void *arg), void *arg)
{
    if (J.started || J.npumps == MAX_PUMPS)
        kiln_fatal("jobs: kiln_jobs_add_pump after start, or too many");
    J.pumps[J.npumps].fn = fn;
    J.pumps[J.npumps].arg = arg;
    atomic_store(&J.pumps[J.npumps].due, true);
    J.npumps++;
}

static void wake(void)
{
    if (J.wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(J.wake_fd, &one, sizeof one);
        (void)n; /* a full counter is already a wake-up */
    }
}

void kiln_jobs_pump_due(void)
{
    if (!J.started)
        return;
    bool any = false;
    for (size_t i = 0; i < J.npumps; i++)
        if (!atomic_exchange(&J.pumps[i].due, true))
            any = true;
    if (any) {
        pthread_mutex_lock(&J.lock);
        pthread_cond_signal(&J.pump_cond);
        pthread_mutex_unlock(&J.lock);
    }
}

uint64_t kiln_job_backoff_ms(const struct kiln_job_kind *k, int n)
{
    uint64_t d = k->backoff_ms ? k->backoff_ms : DEFAULT_BACKOFF_MS;
    uint64_t cap = k->max_backoff_ms ? k->max_backoff_ms : DEFAULT_MAX_BACKOFF_MS;
    for (int i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    /* Jitter: retries of jobs that failed together (an endpoint down) do
     * not come back together. */
    uint32_t r = 0;
    kiln_random_bytes(&r, sizeof r);
    return d / 2 + (uint64_t)((double)d * ((double)r / 4294967296.0));
}

/* ---- enqueue -------------------------------------------------------------- */

int kiln_job_enqueue(struct kiln_db *db, kiln_arena *a, const char *kind, const char *args,
                     const struct kiln_job_options *opt, int64_t *id)
{
    static const struct kiln_job_options none;
    if (!opt)
        opt = &none;
    if (id)
        *id = 0;
    const struct kiln_job_kind *k = kiln_job_kind_find(kind);
    if (!k)
        return KILN_EINVAL;
    if (!args)
        args = "{}";
    if (strlen(args) > KILN_JOB_ARGS_MAX ||
        (opt->idempotency_key && strlen(opt->idempotency_key) > KILN_JOB_KEY_MAX))
        return KILN_EINVAL;
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES;
    kiln_str p[5] = {
        kiln_str_c(kind),
        kiln_str_c(args),
        kiln_str_c(kiln_arena_sprintf(a, "%llu", (unsigned long long)opt->delay_ms)),
        kiln_str_c(kiln_arena_sprintf(a, "%d", opt->max_attempts > 0 ? opt->max_attempts
                                                                     : k->max_attempts)),
        opt->idempotency_key ? kiln_str_c(opt->idempotency_key) : (kiln_str){ NULL, 0 },
    };
    struct kiln_db_rows rows;
    int err = kiln_db_query(
        db, a,
        pg ? "INSERT INTO jobs (kind, args, run_at, max_attempts, idempotency_key) "
             "VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond', $4, $5) "
             "ON CONFLICT (kind, idempotency_key) WHERE idempotency_key IS NOT NULL "
             "DO NOTHING RETURNING id"
           : "INSERT INTO jobs (kind, args, run_at, max_attempts, idempotency_key, "
             "inserted_at, updated_at) VALUES ($1, $2, " LITE_IN_MS("$3") ", $4, $5, " LITE_NOW
             ", " LITE_NOW ") ON CONFLICT (kind, idempotency_key) WHERE idempotency_key IS "
             "NOT NULL DO NOTHING RETURNING id",
        p, 5, &rows);
    if (err)
        return err;
    if (id && rows.nrows == 1)
        kiln_db_int64(&rows, 0, 0, id);
    return 0;
}

int kiln_job_enqueue_batch(struct kiln_db *db, kiln_arena *a, const char *kind,
                           const char *values, const char *prefix, const char *suffix,
                           int max_attempts)
{
    const struct kiln_job_kind *k = kiln_job_kind_find(kind);
    if (!k)
        return KILN_EINVAL;
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES;
    kiln_str p[5] = {
        kiln_str_c(kind), kiln_str_c(values), kiln_str_c(prefix), kiln_str_c(suffix),
        kiln_str_c(kiln_arena_sprintf(a, "%d", max_attempts > 0 ? max_attempts : k->max_attempts)),
    };
    /* In the array's order: ids follow it, and claims take the oldest
     * first. */
    return kiln_db_query(
        db, a,
        pg ? "INSERT INTO jobs (kind, args, max_attempts) SELECT $1, $3 || x.v || $4, $5 FROM "
             "json_array_elements_text($2::json) WITH ORDINALITY AS x(v, n) ORDER BY x.n"
           : "INSERT INTO jobs (kind, args, run_at, max_attempts, inserted_at, updated_at) "
             "SELECT $1, $3 || x.value || $4, " LITE_NOW ", $5, " LITE_NOW ", " LITE_NOW
             " FROM json_each($2) AS x ORDER BY x.key",
        p, 5, NULL);
}

void kiln_jobs_notify(void)
{
    if (J.started && !atomic_exchange(&J.changed, true))
        wake();
}

/* ---- runners -------------------------------------------------------------- */

/* The end of one run, guarded so that a job this instance no longer holds
 * (its lease expired and another instance took it, or a drain released it)
 * is left alone. */
static void finish(struct runner *r, const struct claimed *c, enum kiln_job_result res,
                   const struct kiln_job_run *job, const struct kiln_job_kind *k)
{
    kiln_arena *a = kiln_arena_new(2048);
    const char *sql;
    uint64_t delay = job->retry_in_ms;
    if (res == KILN_JOB_RETRY && !delay)
        delay = kiln_job_backoff_ms(k, c->attempt);
    char err[KILN_JOB_ERROR_MAX + 1];
    snprintf(err, sizeof err, "%s", job->error[0] ? job->error : "failed");
    switch (res) {
    case KILN_JOB_ENDED:
        atomic_fetch_add(&J.done_n, 1);
        kiln_arena_free(a);
        return;
    case KILN_JOB_OK:
        sql = BOTH(JOB_DONE);
        break;
    case KILN_JOB_RETRY:
        sql = BOTH(JOB_RETRY);
        break;
    case KILN_JOB_DEAD:
        sql = BOTH(JOB_DEAD);
        break;
    default: /* KILN_JOB_RELEASE */
        sql = BOTH(JOB_RELEASE);
        break;
    }
    kiln_str p[5] = {
        kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)c->id)),
        kiln_str_c(J.cfg.instance),
        kiln_str_c(kiln_arena_sprintf(a, "%d", c->attempt)),
        kiln_str_c(kiln_arena_sprintf(a, "%llu", (unsigned long long)delay)),
        kiln_str_c(err),
    };
    size_t np = res == KILN_JOB_OK ? 3 : res == KILN_JOB_RELEASE ? 4 : 5;
    struct kiln_db_rows rows = { 0 };
    int e = kiln_db_query(r->db, a, sql, p, np, &rows);
    if (e) {
        /* The lease runs out and the job runs again elsewhere: at least
         * once. */
        kiln_log(KILN_LOG_WARNING, "jobs: recording a job's end failed", "kind", c->kind,
                 "error", kiln_db_last_error(r->db), NULL);
    } else if (res == KILN_JOB_OK) {
        atomic_fetch_add(&J.done_n, 1);
    } else if (res == KILN_JOB_RELEASE) {
        atomic_fetch_add(&J.released_n, 1);
    } else {
        if (res == KILN_JOB_RETRY) {
            /* Claim it on time, not at the next poll. */
            uint64_t due = kiln_now_ms() + delay;
            pthread_mutex_lock(&J.lock);
            if (J.nretry < MAX_RETRY_TIMES) {
                J.retry_at[J.nretry++] = due;
            } else {
                size_t latest = 0;
                for (size_t i = 1; i < J.nretry; i++)
                    if (J.retry_at[i] > J.retry_at[latest])
                        latest = i;
                if (due < J.retry_at[latest])
                    J.retry_at[latest] = due;
            }
            pthread_mutex_unlock(&J.lock);
        }
        bool dead = res == KILN_JOB_DEAD;
        if (res == KILN_JOB_RETRY && rows.nrows == 1) {
            kiln_str st = kiln_db_text(&rows, 0, 0);
            dead = kiln_str_eq(st, kiln_str_c("dead"));
        }
        atomic_fetch_add(dead ? &J.dead_n : &J.retried_n, 1);
        kiln_log(dead ? KILN_LOG_ERROR : KILN_LOG_WARNING,
                 dead ? "jobs: a job is dead (no attempts left)" : "jobs: a job failed; retry",
                 "kind", c->kind, "job", kiln_arena_sprintf(a, "%lld", (long long)c->id),
                 "attempt", kiln_arena_sprintf(a, "%d", c->attempt), "error", err, NULL);
    }
    kiln_arena_free(a);
}

/*
 * Runners and the pumps run at a lower CPU priority than the loops
 * (niceness JOB_NICENESS on their own thread): jobs use the CPU requests
 * leave, so a backlog of deliveries slows itself rather than the API. The
 * manager keeps the normal priority: a starved lease renewal would let
 * another instance run a job a second time.
 */
#define JOB_NICENESS 10

static void lower_priority(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, (id_t)tid, JOB_NICENESS) != 0)
        kiln_logf(KILN_LOG_WARNING, "jobs: cannot lower a thread's priority: %s",
                  strerror(errno));
}

/*
 * Yielding to requests. Niceness gives the loops this process's CPU
 * first, but most of a job's cost is its statements, run by the
 * database's processes: where those share the CPUs with the requests (one
 * host, as on a developer's machine, or a database at its limit) a
 * backlog of deliveries would take a third or more of the writes'
 * throughput. So while the requests keep the instance busy (over the last
 * YIELD_WINDOW_MS, on average at least YIELD_INFLIGHT of them in progress
 * and the machine's CPUs at least YIELD_CPU busy), each background
 * thread (a runner, the pumps' thread) pauses after each piece of its work
 * (a job or a batch, a pump's run) so that it works JOB_BUSY_PERCENT of
 * the time. A backlog then drains more slowly during the load and at full
 * speed after it; a light load, or a heavy one that leaves CPU spare,
 * makes nothing wait, and neither does the drain. Both conditions are
 * needed: requests alone are no reason to wait when the CPUs are free,
 * and busy CPUs alone may be the background work itself (or another
 * process's batch job).
 */
#define YIELD_WINDOW_MS 100
#define YIELD_CPU 0.9
#define YIELD_INFLIGHT 1.0
/* A piece's time is wall time (a delivery's includes the receiver's
 * answer, which costs no CPU here): a slow receiver must not stop a
 * runner for minutes. */
#define YIELD_MAX_PAUSE_MS 1000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t at_ms, cpu_busy, cpu_total, req_ns; /* the last sample */
    bool busy;
    atomic_bool yielding;
    atomic_ulong yielded;
} Y = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

/* The machine's CPU time so far (/proc/stat's first line, in ticks):
 * all of it, and the part not idle. */
static bool cpu_times(uint64_t *busy, uint64_t *total)
{
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    unsigned long long v[8] = { 0 };
    if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) < 5)
        return false;
    uint64_t sum = 0;
    for (size_t i = 0; i < 8; i++)
        sum += v[i];
    *total = sum;
    *busy = sum - v[3] - v[4]; /* idle, iowait */
    return true;
}

/* Under Y.mu: whether the requests keep the instance busy, from a sample
 * at most YIELD_WINDOW_MS old (taken here when older: an idle instance
 * reads nothing). */
static bool requests_busy(uint64_t now_ms)
{
    if (Y.at_ms && now_ms - Y.at_ms < YIELD_WINDOW_MS)
        return Y.busy;
    uint64_t cb, ct, rq = kiln_server_request_ns();
    bool busy = false;
    if (!cpu_times(&cb, &ct)) {
        Y.at_ms = 0;
    } else {
        if (Y.at_ms && ct > Y.cpu_total && now_ms > Y.at_ms && rq >= Y.req_ns) {
            double cpu = (double)(cb - Y.cpu_busy) / (double)(ct - Y.cpu_total);
            double inflight = (double)(rq - Y.req_ns) / ((double)(now_ms - Y.at_ms) * 1e6);
            busy = cpu >= YIELD_CPU && inflight >= YIELD_INFLIGHT;
        }
        Y.at_ms = now_ms;
        Y.cpu_busy = cb;
        Y.cpu_total = ct;
        Y.req_ns = rq;
    }
    Y.busy = busy;
    atomic_store(&Y.yielding, busy);
    return busy;
}

static bool yield_off(void)
{
    return !J.cfg.busy_percent || J.cfg.busy_percent >= 100;
}

/* Before a piece of background work on this thread: while the requests
 * keep the instance busy, wait until the thread's pause after its last
 * piece is over. Returns whether it waited or may have had to (then
 * yield_end after the work, with the time it started). */
static _Thread_local uint64_t yield_next_ns; /* this thread's pause ends then */

static bool yield_begin(void)
{
    if (yield_off())
        return false;
    bool busy = false, waited = false;
    pthread_mutex_lock(&Y.mu);
    for (;;) {
        uint64_t now = kiln_now_ns();
        if (J.stopping || atomic_load(&J.stop) || !requests_busy(now / 1000000))
            break;
        busy = true;
        if (now >= yield_next_ns)
            break;
        if (!waited) {
            waited = true;
            atomic_fetch_add(&Y.yielded, 1);
        }
        uint64_t wait_ns = (uint64_t)YIELD_WINDOW_MS * 1000000;
        if (yield_next_ns - now < wait_ns)
            wait_ns = yield_next_ns - now;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + wait_ns;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&Y.cv, &Y.mu, &ts);
    }
    pthread_mutex_unlock(&Y.mu);
    return busy;
}

static void yield_end(bool busy, uint64_t started_ns)
{
    if (!busy)
        return;
    uint64_t now = kiln_now_ns(), pct = J.cfg.busy_percent;
    uint64_t pause = (now - started_ns) * (100 - pct) / pct;
    if (pause > (uint64_t)YIELD_MAX_PAUSE_MS * 1000000)
        pause = (uint64_t)YIELD_MAX_PAUSE_MS * 1000000;
    yield_next_ns = now + pause;
}

/* Under J.lock: take the queue's next job, and for a kind that runs in
 * batches the queue's next jobs of the same kind (in claim order) with
 * it. Returns how many were put in out. */
static size_t take_jobs(struct claimed *out)
{
    size_t n = 0;
    out[n++] = J.queue[J.qhead];
    J.qhead = (J.qhead + 1) % J.qcap;
    J.qlen--;
    const struct kiln_job_kind *k = kiln_job_kind_find(out[0].kind);
    if (!k || !k->run_batch || J.stopping)
        return n;
    size_t keep = 0;
    for (size_t i = 0; i < J.qlen; i++) {
        struct claimed *q = &J.queue[(J.qhead + i) % J.qcap];
        if (n < k->batch && !strcmp(q->kind, out[0].kind))
            out[n++] = *q;
        else
            J.queue[(J.qhead + keep++) % J.qcap] = *q;
    }
    J.qlen = keep;
    return n;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    kiln_wait_abortable();
    lower_priority();
    struct claimed *batch = kiln_calloc(J.max_batch, sizeof *batch);
    struct kiln_job_run *jobs = kiln_calloc(J.max_batch, sizeof *jobs);
    enum kiln_job_result res[KILN_JOB_MAX_BATCH];
    for (;;) {
        pthread_mutex_lock(&J.lock);
        while (!J.qlen && !atomic_load(&J.stop))
            pthread_cond_wait(&J.work, &J.lock);
        if (!J.qlen) {
            pthread_mutex_unlock(&J.lock);
            break;
        }
        /* The turn first, then the jobs: those queued meanwhile join the
         * batch. */
        pthread_mutex_unlock(&J.lock);
        bool took = yield_begin();
        uint64_t started = kiln_now_ns();
        pthread_mutex_lock(&J.lock);
        if (!J.qlen) {
            pthread_mutex_unlock(&J.lock);
            yield_end(took, started);
            continue;
        }
        size_t n = take_jobs(batch);
        r->busy = true;
        for (size_t i = 0; i < n; i++)
            r->ids[i] = batch[i].id;
        r->nids = n;
        J.busy++;
        pthread_mutex_unlock(&J.lock);

        if (!r->db)
            r->db = kiln_db_open(&J.cfg.db);
        if (!r->kv && J.cfg.kv)
            r->kv = kiln_kv_open(J.cfg.kv);
        const struct kiln_job_kind *k = kiln_job_kind_find(batch[0].kind);
        kiln_arena *arena = kiln_arena_new(8192);
        for (size_t i = 0; i < n; i++) {
            jobs[i] = (struct kiln_job_run){
                .id = batch[i].id,
                .kind = batch[i].kind,
                .args = batch[i].args,
                .attempt = batch[i].attempt,
                .max_attempts = batch[i].max_attempts,
                .db = r->db,
                .kv = r->kv,
                .arena = arena,
                .stopping = &J.stopping,
            };
            res[i] = KILN_JOB_RELEASE;
        }
        if (!k) {
            for (size_t i = 0; i < n; i++)
                snprintf(jobs[i].error, sizeof jobs[i].error, "no job kind %s on this instance",
                         batch[0].kind);
        } else if (J.stopping) {
            /* claimed just before the drain: released */
        } else if (k->run_batch) {
            k->run_batch(jobs, n, res);
        } else {
            res[0] = k->run(&jobs[0]);
        }
        for (size_t i = 0; i < n; i++) {
            finish(r, &batch[i], res[i], &jobs[i], k);
            free(batch[i].args);
        }
        kiln_arena_free(arena);

        pthread_mutex_lock(&J.lock);
        r->busy = false;
        r->nids = 0;
        J.busy--;
        pthread_cond_broadcast(&J.idle);
        pthread_mutex_unlock(&J.lock);
        yield_end(took, started);
        wake(); /* a runner is free: claim */
    }
    free(jobs);
    free(batch);
    return NULL;
}

const char *kiln_job_done_sql(kiln_arena *a, const struct kiln_job_run *job, size_t first,
                              kiln_str out[3])
{
    /* JOB_DONE's $1..$3, renumbered: one text for the runner and for the
     * functions that end their job themselves. */
    static const char done[] = JOB_DONE(PG_NOW, PG_IN_MS, PG_INT);
    kiln_buf b;
    kiln_buf_init(&b, sizeof done + 16);
    for (const char *s = done; *s; s++) {
        if (*s == '$' && s[1] >= '1' && s[1] <= '3') {
            kiln_buf_printf(&b, "$%zu", first + (size_t)(s[1] - '1'));
            s++;
        } else {
            kiln_buf_append(&b, s, 1);
        }
    }
    const char *sql = kiln_arena_strndup(a, b.p, b.len);
    kiln_buf_free(&b);
    out[0] = kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)job->id));
    out[1] = kiln_str_c(J.cfg.instance ? J.cfg.instance : "");
    out[2] = kiln_str_c(kiln_arena_sprintf(a, "%d", job->attempt));
    return sql;
}

const char *kiln_job_done_many_sql(kiln_arena *a, const char *rows, const char *where,
                                   size_t first, kiln_str out[1])
{
    out[0] = kiln_str_c(J.cfg.instance ? J.cfg.instance : "");
    return kiln_arena_sprintf(a,
                              "UPDATE jobs SET " JOB_DONE_SET(PG_NOW) " FROM %s WHERE %s%sjobs.id "
                              "= %s.job AND jobs.locked_by = $%zu AND jobs.attempts = %s.attempt "
                              "AND jobs.state = 'running'",
                              rows, where ? where : "", where ? " AND " : "", rows, first, rows);
}

/* ---- pruning -------------------------------------------------------------- */

#define PRUNE_BATCH 1000
#define PRUNE_MAX_BATCHES 100

long kiln_prune_rows(struct kiln_db *db, const char *table, const char *column,
                     const char *where, uint64_t age_ms, const volatile bool *stopping)
{
    char cutoff[KILN_RFC3339_LEN + 1];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000 - (int64_t)age_ms;
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    kiln_time_rfc3339(cutoff, &ts);
    kiln_arena *a = kiln_arena_new(1024);
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES;
    const char *and = where ? kiln_arena_sprintf(a, " AND (%s)", where) : "";
    /* PostgreSQL: by the rows' addresses (a TID scan: no index on the id
     * needed), SQLite: by rowid. */
    const char *sql =
        pg ? kiln_arena_sprintf(a,
                                "DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s "
                                "WHERE %s < $1%s LIMIT %d FOR UPDATE SKIP LOCKED))",
                                table, table, column, and, PRUNE_BATCH)
           : kiln_arena_sprintf(a,
                                "DELETE FROM %s WHERE rowid IN (SELECT rowid FROM %s WHERE %s < "
                                "$1%s LIMIT %d)",
                                table, table, column, and, PRUNE_BATCH);
    kiln_str p[1] = { kiln_str_c(cutoff) };
    long total = 0;
    for (int i = 0; i < PRUNE_MAX_BATCHES && !(stopping && *stopping); i++) {
        struct kiln_db_rows rows;
        int err = kiln_db_query(db, a, sql, p, 1, &rows);
        if (err) {
            kiln_log(KILN_LOG_WARNING, "jobs: pruning failed", "table", table, "error",
                     kiln_db_last_error(db), NULL);
            total = -1;
            break;
        }
        total += (long)rows.affected;
        if (rows.affected < PRUNE_BATCH)
            break;
    }
    kiln_arena_free(a);
    return total;
}

/* ---- the manager ---------------------------------------------------------- */

static struct kiln_db *M_db;
static struct kiln_kv *M_pub, *M_sub;

/* The jobs' own line per dependency (what is a static string): a
 * request's outage line counts requests, and this thread's failures are
 * not requests. */
static void outage(const char *what, int err, const char *detail)
{
    (void)err;
    kiln_log_outage(what, detail);
}

static unsigned free_slots(void)
{
    pthread_mutex_lock(&J.lock);
    unsigned used = J.busy + (unsigned)J.qlen;
    pthread_mutex_unlock(&J.lock);
    return used >= J.nrunners ? 0 : J.nrunners - used;
}

/* A claim: up to $1 due jobs whose kind is KIND, oldest first, FOR
 * UPDATE SKIP LOCKED, in one auto-committed statement. */
#define CLAIM(NOW, LEASE, KIND)                                                                  \
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = " LEASE            \
    ", locked_by = $3, updated_at = " NOW " WHERE id IN (SELECT id FROM jobs WHERE state = "      \
    "'queued' AND run_at <= " NOW " AND kind " KIND " ORDER BY run_at, id LIMIT $1" PG_LOCK        \
    ") RETURNING id, kind, args, attempts, max_attempts"
#define PG_LEASE "now() + $2::int * interval '1 second'"
#define LITE_LEASE "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $2 || ' seconds')"

static int cmp_claimed(const void *x, const void *y)
{
    int64_t a = ((const struct claimed *)x)->id, b = ((const struct claimed *)y)->id;
    return (a > b) - (a < b);
}

/* Claim up to n due jobs of the kinds this instance runs; when some are
 * of a kind that runs in batches, up to batch - 1 more of that kind for
 * each of them (a second statement: the jobs a runner will take with
 * it). Returns how many (or -1 on error); they are queued in the order
 * they were enqueued. */
static int claim(unsigned n)
{
    kiln_arena *a = kiln_arena_new(8192);
    kiln_str p[4] = {
        kiln_str_c(kiln_arena_sprintf(a, "%u", n)),
        kiln_str_c(kiln_arena_sprintf(a, "%u", J.cfg.lease_s)),
        kiln_str_c(J.cfg.instance),
        kiln_str_c(J.kinds_json),
    };
#define PG_LOCK " FOR UPDATE SKIP LOCKED"
    static const char pg_all[] =
        CLAIM("now()", PG_LEASE, "IN (SELECT json_array_elements_text($4::json))");
    static const char pg_one[] = CLAIM("now()", PG_LEASE, "= $4");
#undef PG_LOCK
#define PG_LOCK ""
    static const char lite_all[] =
        CLAIM(LITE_NOW, LITE_LEASE, "IN (SELECT value FROM json_each($4))");
    static const char lite_one[] = CLAIM(LITE_NOW, LITE_LEASE, "= $4");
#undef PG_LOCK
    struct kiln_db_rows rows, more = { 0 };
    int err = kiln_db_query(M_db, a, J.pg ? pg_all : lite_all, p, 4, &rows);
    const struct kiln_job_kind *bk = NULL;
    unsigned nb = 0;
    for (size_t i = 0; !err && i < rows.nrows; i++) {
        kiln_str kind = kiln_db_text(&rows, i, 1);
        const struct kiln_job_kind *k =
            kind.p ? kiln_job_kind_find(kiln_arena_strndup(a, kind.p, kind.len)) : NULL;
        if (k && k->run_batch && (!bk || k == bk)) {
            bk = k;
            nb++;
        }
    }
    if (!err && bk) {
        kiln_str q[4] = { kiln_str_c(kiln_arena_sprintf(a, "%u", nb * (bk->batch - 1))), p[1],
                          p[2], kiln_str_c(bk->name) };
        if (kiln_db_query(M_db, a, J.pg ? pg_one : lite_one, q, 4, &more))
            more.nrows = 0; /* those claimed first still run */
    }
    if (err) {
        outage("Database (jobs)", err, kiln_db_last_error(M_db));
        kiln_arena_free(a);
        return -1;
    }
    size_t total = rows.nrows + more.nrows;
    struct claimed *got = total ? kiln_calloc(total, sizeof *got) : NULL;
    for (size_t i = 0; i < total; i++) {
        struct claimed *c = &got[i];
        const struct kiln_db_rows *r = i < rows.nrows ? &rows : &more;
        size_t row = i < rows.nrows ? i : i - rows.nrows;
        int64_t v = 0;
        kiln_db_int64(r, row, 0, &c->id);
        kiln_str kind = kiln_db_text(r, row, 1);
        snprintf(c->kind, sizeof c->kind, "%.*s", (int)kind.len, kind.p ? kind.p : "");
        kiln_str args = kiln_db_text(r, row, 2);
        c->args = kiln_strndup(args.p ? args.p : "{}", args.p ? args.len : 2);
        kiln_db_int64(r, row, 3, &v);
        c->attempt = (int)v;
        kiln_db_int64(r, row, 4, &v);
        c->max_attempts = (int)v;
    }
    if (total > 1)
        qsort(got, total, sizeof *got, cmp_claimed);
    pthread_mutex_lock(&J.lock);
    for (size_t i = 0; i < total; i++) {
        if (J.qlen == J.qcap) {
            size_t ncap = J.qcap ? J.qcap * 2 : 16;
            struct claimed *q = kiln_calloc(ncap, sizeof *q);
            for (size_t k = 0; k < J.qlen; k++)
                q[k] = J.queue[(J.qhead + k) % J.qcap];
            free(J.queue);
            J.queue = q;
            J.qhead = 0;
            J.qcap = ncap;
        }
        J.queue[(J.qhead + J.qlen) % J.qcap] = got[i];
        J.qlen++;
    }
    if (total)
        pthread_cond_broadcast(&J.work);
    pthread_mutex_unlock(&J.lock);
    free(got);
    atomic_fetch_add(&J.claimed_n, total);
    int n_got = (int)rows.nrows;
    kiln_arena_free(a);
    return n_got;
}

/* The ids this instance's runners hold, as a JSON array (the same text
 * for both dialects). NULL when none. */
static char *held_json(kiln_arena *a)
{
    kiln_buf b;
    kiln_buf_init(&b, 1 << 20);
    kiln_buf_append_c(&b, "[");
    bool any = false;
    pthread_mutex_lock(&J.lock);
    for (unsigned i = 0; i < J.nrunners; i++)
        for (size_t k = 0; J.runners[i].busy && k < J.runners[i].nids; k++) {
            kiln_buf_printf(&b, "%s%lld", any ? "," : "", (long long)J.runners[i].ids[k]);
            any = true;
        }
    /* claimed, waiting for a runner (batches claim ahead) */
    for (size_t k = 0; k < J.qlen; k++) {
        kiln_buf_printf(&b, "%s%lld", any ? "," : "",
                        (long long)J.queue[(J.qhead + k) % J.qcap].id);
        any = true;
    }
    pthread_mutex_unlock(&J.lock);
    kiln_buf_append_c(&b, "]");
    char *s = any ? kiln_arena_strndup(a, b.p, b.len) : NULL;
    kiln_buf_free(&b);
    return s;
}

static void renew(void)
{
    kiln_arena *a = kiln_arena_new(2048);
    char *ids = held_json(a);
    if (ids) {
        kiln_str p[3] = { kiln_str_c(ids), kiln_str_c(J.cfg.instance),
                          kiln_str_c(kiln_arena_sprintf(a, "%u", J.cfg.lease_s)) };
        int err = kiln_db_query(
            M_db, a,
            J.pg ? "UPDATE jobs SET lease_until = now() + $3::int * interval '1 second' WHERE id "
                   "IN (SELECT json_array_elements_text($1::json)::bigint) AND locked_by = $2 "
                   "AND state = 'running'"
                 : "UPDATE jobs SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || "
                   "$3 || ' seconds') WHERE id IN (SELECT value FROM json_each($1)) AND "
                   "locked_by = $2 AND state = 'running'",
            p, 3, NULL);
        if (err)
            outage("Database (jobs)", err, kiln_db_last_error(M_db));
    }
    kiln_arena_free(a);
}

/* Jobs whose instance stopped renewing: queued again (the attempt counts:
 * a job that kills its instance every time ends dead), or dead when
 * their attempts are spent. */
static void sweep(void)
{
    kiln_arena *a = kiln_arena_new(1024);
    struct kiln_db_rows rows;
    int err = kiln_db_query(
        M_db, a,
        BOTH(JOB_EXPIRED),
        NULL, 0, &rows);
    if (err)
        outage("Database (jobs)", err, kiln_db_last_error(M_db));
    else if (rows.nrows)
        kiln_logf(KILN_LOG_WARNING, "jobs: %zu job(s) whose lease expired queued again",
                  rows.nrows);
    kiln_arena_free(a);
}

/* Enqueue each scheduled kind's ticks that are due. The tick's time is the
 * idempotency key: the first instance to insert it wins. */
static int64_t next_tick(size_t i, int64_t after_s)
{
    const struct kiln_job_kind *k = &J.kinds[i];
    if (k->every_s)
        return (after_s / k->every_s + 1) * (int64_t)k->every_s;
    return k->cron ? kiln_cron_next(&J.crons[i], after_s) : -1;
}

/* Ticks are wall-clock (UTC) seconds: the key must mean the same instant
 * on every instance, and a cron expression is a time of day. kiln_now_ms
 * is monotonic (seconds since boot), good only for this process's waits. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* After a failed enqueue of a tick (the database away), not before this
 * (monotonic ms): the tick stays due, and retrying it at every turn of the
 * loop would spin on the database. */
#define SCHEDULE_RETRY_MS 1000
static uint64_t M_sched_retry;

static void schedule(int64_t now_s)
{
    if (kiln_now_ms() < M_sched_retry)
        return;
    for (size_t i = 0; i < J.nkinds; i++) {
        if (J.next_tick[i] < 0 || now_s < J.next_tick[i])
            continue;
        kiln_arena *a = kiln_arena_new(1024);
        int64_t tick = J.next_tick[i];
        struct kiln_job_options o = {
            .idempotency_key = kiln_arena_sprintf(a, "tick:%lld", (long long)tick),
        };
        int64_t id = 0;
        int err = kiln_job_enqueue(M_db, a, J.kinds[i].name,
                                   J.kinds[i].cron_args ? J.kinds[i].cron_args : "{}", &o, &id);
        if (err) {
            outage("Database (jobs)", err, kiln_db_last_error(M_db));
            M_sched_retry = kiln_now_ms() + SCHEDULE_RETRY_MS;
            kiln_arena_free(a);
            return;
        } else {
            /* Ticks missed while the database was away are not made up;
             * the next one after now is. */
            J.next_tick[i] = next_tick(i, now_s);
            if (id)
                atomic_store(&J.changed, true);
        }
        kiln_arena_free(a);
    }
}

static bool pumps_due(void)
{
    for (size_t i = 0; i < J.npumps; i++)
        if (atomic_load(&J.pumps[i].due))
            return true;
    return false;
}

/*
 * The pumps' thread: its own connection, so that a backlog of pump work
 * (thousands of events to turn into deliveries) never holds back the
 * manager's claims and lease renewals. It runs the due pumps, at most
 * every PUMP_GAP_MS while they are woken (a burst of writes is one
 * run), at once again when a pump says more is waiting, and every
 * JOB_POLL_MS regardless (a lost wake-up); never while draining.
 */
static void *pumper_main(void *arg)
{
    (void)arg;
    kiln_wait_abortable();
    lower_priority();
    struct kiln_db *db = kiln_db_open(&J.cfg.db);
    uint64_t last = 0;
    for (;;) {
        pthread_mutex_lock(&J.lock);
        if (!atomic_load(&J.stop) && !pumps_due()) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)(J.cfg.poll_ms / 1000);
            ts.tv_nsec += (long)(J.cfg.poll_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&J.pump_cond, &J.lock, &ts) != 0)
                for (size_t i = 0; i < J.npumps; i++)
                    atomic_store(&J.pumps[i].due, true); /* the poll */
        }
        pthread_mutex_unlock(&J.lock);
        if (atomic_load(&J.stop))
            break;
        if (atomic_load(&J.draining)) {
            struct timespec ts = { 0, DRAIN_CHECK_MS * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        uint64_t now = kiln_now_ms();
        if (now < last + PUMP_GAP_MS) {
            struct timespec ts = { 0, (long)(last + PUMP_GAP_MS - now) * 1000000L };
            nanosleep(&ts, NULL);
        }
        bool took = yield_begin();
        uint64_t started = kiln_now_ns();
        last = kiln_now_ms();
        for (size_t i = 0; i < J.npumps; i++)
            if (atomic_exchange(&J.pumps[i].due, false))
                J.pumps[i].fn(db, J.pumps[i].arg);
        yield_end(took, started);
    }
    kiln_db_close(db);
    return NULL;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The soonest retry time this instance set (0: none); with take, those
 * due by now are forgotten, and the answer is whether there were any. */
static uint64_t retries(uint64_t now, bool take)
{
    uint64_t soonest = 0;
    bool due = false;
    pthread_mutex_lock(&J.lock);
    for (size_t i = 0; i < J.nretry;) {
        if (take && J.retry_at[i] <= now) {
            J.retry_at[i] = J.retry_at[--J.nretry];
            due = true;
            continue;
        }
        if (!soonest || J.retry_at[i] < soonest)
            soonest = J.retry_at[i];
        i++;
    }
    pthread_mutex_unlock(&J.lock);
    return take ? due : soonest;
}

static void on_message(void *arg, kiln_str m)
{
    bool *want = arg;
    if (m.len == 1 && m.p[0] == 'j')
        *want = true;
}

static void *manager_main(void *arg)
{
    (void)arg;
    kiln_wait_abortable();
    M_db = kiln_db_open(&J.cfg.db);
    M_pub = J.valkey ? kiln_kv_open(J.cfg.kv) : NULL;
    M_sub = J.valkey ? kiln_kv_open(J.cfg.kv) : NULL;
    uint64_t now = kiln_now_ms();
    uint64_t lease_ms = J.cfg.lease_s * 1000ull;
    uint64_t next_poll = now, next_renew = now + lease_ms / 3, next_sweep = now + 1000;
    uint64_t last_pub = 0, sub_retry = 0;
    bool want = true, pub_pending = false;
    for (size_t i = 0; i < J.nkinds; i++)
        J.next_tick[i] = next_tick(i, wall_ms() / 1000);

    while (!atomic_load(&J.stop)) {
        now = kiln_now_ms();
        bool draining = atomic_load(&J.draining);
        if (!draining && kiln_server_draining()) {
            J.drain_started = now;
            J.stopping = true;
            atomic_store(&J.draining, true);
            draining = true;
        }
        uint64_t deadline = min_u64(next_poll, min_u64(next_renew, next_sweep));
        deadline = min_u64(deadline, now + DRAIN_CHECK_MS);
        /* Ticks and pumps wait while draining (nothing is scheduled or
         * pumped then): a due one must not make the loop spin. */
        int64_t wall = wall_ms();
        for (size_t i = 0; i < J.nkinds && !draining; i++) {
            if (J.next_tick[i] < 0)
                continue;
            uint64_t due = J.next_tick[i] * 1000 <= wall
                               ? now
                               : now + (uint64_t)(J.next_tick[i] * 1000 - wall);
            deadline = min_u64(deadline, due > M_sched_retry ? due : M_sched_retry);
        }
        if (pub_pending)
            deadline = min_u64(deadline, last_pub + PUBLISH_GAP_MS);
        /* Pumps run when due, at most every PUBLISH_GAP_MS: no wake-up
         * every few milliseconds while none is. */
        uint64_t rd = retries(now, false);
        if (rd)
            deadline = min_u64(deadline, rd);
        if (want && !draining && free_slots())
            deadline = now;
        if (J.valkey && now >= sub_retry) {
            bool fresh = false;
            int err = kiln_kv_listen(M_sub, KILN_JOBS_CHANNEL, J.wake_fd, deadline, on_message,
                                     &want, &fresh);
            if (fresh)
                want = true; /* wake-ups may have been missed meanwhile */
            if (err) {
                outage("Valkey (jobs)", err, kiln_kv_last_error(M_sub));
                sub_retry = kiln_now_ms() + 1000;
            }
        } else if (deadline > now) {
            struct pollfd pfd = { .fd = J.wake_fd, .events = POLLIN };
            uint64_t wait = deadline - now;
            if (J.valkey)
                wait = min_u64(wait, sub_retry > now ? sub_retry - now : 0);
            poll(&pfd, 1, (int)min_u64(wait, 60000));
        }
        uint64_t counter;
        if (read(J.wake_fd, &counter, sizeof counter) > 0)
            want = true; /* an enqueue, a finished runner, a pump, a stop */
        if (atomic_exchange(&J.changed, false)) {
            want = true;
            pub_pending = J.valkey;
        }
        now = kiln_now_ms();
        if (retries(now, true))
            want = true;
        if (pub_pending && now >= last_pub + PUBLISH_GAP_MS) {
            pub_pending = false;
            last_pub = now;
            int err = kiln_kv_publish(M_pub, KILN_JOBS_CHANNEL, KILN_STR("j"));
            if (err)
                outage("Valkey (jobs)", err, kiln_kv_last_error(M_pub));
        }
        if (atomic_load(&J.stop))
            break;
        if (!draining) {
            schedule(wall_ms() / 1000);
            unsigned n = free_slots();
            if (n && (want || now >= next_poll)) {
                int got = claim(n);
                /* A full claim may have left more: claim again when a
                 * runner frees up. */
                want = got >= (int)n;
                next_poll = now + J.cfg.poll_ms;
            } else if (!n) {
                next_poll = now + J.cfg.poll_ms;
            }
        }
        if (now >= next_renew) {
            renew();
            next_renew = now + lease_ms / 3;
        }
        if (now >= next_sweep) {
            sweep();
            next_sweep = now + min_u64(lease_ms / 2, 5000);
        }
    }
    kiln_kv_close(M_sub);
    kiln_kv_close(M_pub);
    kiln_db_close(M_db);
    M_db = NULL;
    return NULL;
}

int kiln_jobs_start(const struct kiln_jobs_config *cfg)
{
    J.cfg = *cfg;
    /* 0 is an instance that runs no jobs (JOB_CONCURRENCY=0): it still
     * enqueues, schedules, sweeps and pumps. */
    if (J.cfg.concurrency > MAX_RUNNERS)
        J.cfg.concurrency = MAX_RUNNERS;
    if (!J.cfg.lease_s)
        J.cfg.lease_s = 60;
    if (!J.cfg.poll_ms)
        J.cfg.poll_ms = 1000;
    J.pg = J.cfg.db.dialect == KILN_DB_POSTGRES;
    J.valkey = J.cfg.kv && !kiln_kv_is_memory(J.cfg.kv);
    kiln_buf b;
    kiln_buf_init(&b, 1 << 16);
    kiln_buf_append_c(&b, "[");
    for (size_t i = 0; i < J.nkinds; i++)
        kiln_buf_printf(&b, "%s\"%s\"", i ? "," : "", J.kinds[i].name);
    kiln_buf_append_c(&b, "]");
    J.kinds_json = kiln_strndup(b.p, b.len);
    kiln_buf_free(&b);
    J.max_batch = 1;
    for (size_t i = 0; i < J.nkinds; i++)
        if (J.kinds[i].run_batch && J.kinds[i].batch > J.max_batch)
            J.max_batch = J.kinds[i].batch;

    J.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (J.wake_fd < 0) {
        kiln_logf(KILN_LOG_ERROR, "jobs: eventfd: %s", strerror(errno));
        return KILN_EIO;
    }
    atomic_store(&J.stop, false);
    kiln_wait_abort(false);
    J.started = true;
    J.nrunners = J.cfg.concurrency;
    for (unsigned i = 0; i < J.nrunners; i++)
        if (!J.runners[i].ids) /* kept by a runner still in a job after a stop */
            J.runners[i].ids = kiln_calloc(KILN_JOB_MAX_BATCH, sizeof *J.runners[i].ids);
    for (unsigned i = 0; i < J.nrunners; i++)
        if (pthread_create(&J.runners[i].thread, NULL, runner_main, &J.runners[i]) != 0)
            kiln_fatal("jobs: cannot start a runner thread");
    if (J.npumps && pthread_create(&J.pumper, NULL, pumper_main, NULL) != 0)
        kiln_fatal("jobs: cannot start the pumps' thread");
    if (pthread_create(&J.manager, NULL, manager_main, NULL) != 0)
        kiln_fatal("jobs: cannot start the jobs thread");
    return 0;
}

/* Queue again what the runners still hold (called with the manager
 * stopped: its connection is free). */
static void release_held(struct kiln_db *db, const char *queued)
{
    kiln_arena *a = kiln_arena_new(2048);
    char *ids = held_json(a);
    if (queued)
        ids = ids ? kiln_arena_sprintf(a, "%.*s,%s]", (int)strlen(ids) - 1, ids, queued)
                  : kiln_arena_sprintf(a, "[%s]", queued);
    if (ids) {
        kiln_str p[2] = { kiln_str_c(ids), kiln_str_c(J.cfg.instance) };
        struct kiln_db_rows rows;
        int err = kiln_db_query(
            db, a,
            J.pg ? "UPDATE jobs SET state = 'queued', attempts = attempts - 1, run_at = now(), "
                   "lease_until = NULL, locked_by = NULL, updated_at = now() WHERE id IN (SELECT "
                   "json_array_elements_text($1::json)::bigint) AND locked_by = $2 AND state = "
                   "'running' RETURNING id"
                 : "UPDATE jobs SET state = 'queued', attempts = attempts - 1, run_at = " LITE_NOW
                   ", lease_until = NULL, locked_by = NULL, updated_at = " LITE_NOW
                   " WHERE id IN (SELECT value FROM json_each($1)) AND locked_by = $2 AND "
                   "state = 'running' RETURNING id",
            p, 2, &rows);
        if (err)
            kiln_log(KILN_LOG_WARNING,
                     "jobs: could not release the running jobs at shutdown; they run again "
                     "when their lease expires",
                     "error", kiln_db_last_error(db), NULL);
        else if (rows.nrows)
            kiln_logf(KILN_LOG_WARNING,
                      "jobs: %zu job(s) still running at the end of the drain released for "
                      "another instance",
                      rows.nrows);
        atomic_fetch_add(&J.released_n, err ? 0 : rows.nrows);
    }
    kiln_arena_free(a);
}

void kiln_jobs_stop(void)
{
    if (!J.started)
        return;
    uint64_t now = kiln_now_ms();
    if (!atomic_load(&J.draining)) {
        J.drain_started = now;
        J.stopping = true;
        atomic_store(&J.draining, true);
    }
    uint64_t budget = J.cfg.shutdown_timeout_s * 1000ull;
    uint64_t deadline = J.drain_started + (budget > DRAIN_MARGIN_MS ? budget - DRAIN_MARGIN_MS
                                                                    : budget);
    /* Let the running jobs finish, until the drain's time is up (the
     * runners hand back at once what was claimed but not started). */
    pthread_mutex_lock(&J.lock);
    while (J.busy || J.qlen) {
        now = kiln_now_ms();
        if (now >= deadline)
            break;
        uint64_t left = deadline - now;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&J.idle, &J.lock, &ts);
    }
    unsigned still = J.busy;
    /* Claimed but never started (the drain ran out first): released below
     * with the running ones, so they are no longer queued here. */
    kiln_arena *qa = kiln_arena_new(1024);
    kiln_buf qids;
    kiln_buf_init(&qids, 1 << 20);
    for (size_t k = 0; k < J.qlen; k++) {
        struct claimed *c = &J.queue[(J.qhead + k) % J.qcap];
        kiln_buf_printf(&qids, "%s%lld", k ? "," : "", (long long)c->id);
        free(c->args);
    }
    size_t queued = J.qlen;
    J.qlen = 0;
    pthread_mutex_unlock(&J.lock);

    /* The drain is over: whatever a background thread still waits for
     * (a database or Valkey that does not answer) is given up now. */
    kiln_wait_abort(true);
    atomic_store(&J.stop, true);
    wake();
    pthread_mutex_lock(&Y.mu);
    pthread_cond_broadcast(&Y.cv); /* a thread in its pause */
    pthread_mutex_unlock(&Y.mu);
    pthread_join(J.manager, NULL);
    if (J.npumps) {
        pthread_mutex_lock(&J.lock);
        pthread_cond_broadcast(&J.pump_cond);
        pthread_mutex_unlock(&J.lock);
        pthread_join(J.pumper, NULL);
    }
    if (still || queued) {
        /* On this thread, which does not give up: bounded instead. */
        struct kiln_db_config short_cfg = J.cfg.db;
        short_cfg.connect_timeout_s = 2;
        short_cfg.query_timeout_ms = 2000;
        struct kiln_db *db = kiln_db_open(&short_cfg);
        release_held(db, qids.len ? kiln_arena_strndup(qa, qids.p, qids.len) : NULL);
        kiln_db_close(db);
    }
    kiln_buf_free(&qids);
    kiln_arena_free(qa);
    free(J.queue);
    J.queue = NULL;
    J.qcap = J.qhead = 0;
    free(J.kinds_json);
    J.kinds_json = NULL;
    pthread_mutex_lock(&J.lock);
    pthread_cond_broadcast(&J.work);
    pthread_mutex_unlock(&J.lock);
    /* Runners still inside a job are left to the process's exit: their job
     * is released, and waiting for them would overrun the drain. */
    for (unsigned i = 0; i < J.nrunners; i++) {
        if (J.runners[i].busy) {
            pthread_detach(J.runners[i].thread);
            continue; /* its ids stay: it may still write them */
        }
        pthread_join(J.runners[i].thread, NULL);
        free(J.runners[i].ids);
        J.runners[i].ids = NULL;
        kiln_db_close(J.runners[i].db);
        kiln_kv_close(J.runners[i].kv);
    }
    close(J.wake_fd);
    J.wake_fd = -1;
    J.started = false;
}

const char *kiln_jobs_instance(void)
{
    return J.cfg.instance ? J.cfg.instance : "";
}

void kiln_jobs_stats(struct kiln_jobs_stats *out)
{
    pthread_mutex_lock(&J.lock);
    out->running = J.busy;
    pthread_mutex_unlock(&J.lock);
    out->claimed = atomic_load(&J.claimed_n);
    out->done = atomic_load(&J.done_n);
    out->retried = atomic_load(&J.retried_n);
    out->dead = atomic_load(&J.dead_n);
    out->released = atomic_load(&J.released_n);
    out->yielding = atomic_load(&Y.yielding);
    out->yielded = atomic_load(&Y.yielded);
}
