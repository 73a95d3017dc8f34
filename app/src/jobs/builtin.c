/*
 * The job kinds Kiln itself registers: the pruning that keeps the outbox,
 * the audit log and the queue at their retention, and (KILN_ENV=test only)
 * the kinds the black-box tests enqueue through POST /_test/jobs.
 */
#include "jobs/builtin.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "jobs/jobs.h"

static const struct kiln_config *C;

static enum kiln_job_result prune_events(struct kiln_job_run *job)
{
    long e = kiln_prune_rows(job->db, "events", "at", NULL,
                             C->events_retention_hours * 3600000ull, job->stopping);
    long a = kiln_prune_rows(job->db, "audit", "at", NULL,
                             C->audit_retention_days * 86400000ull, job->stopping);
    if (e < 0 || a < 0) {
        snprintf(job->error, sizeof job->error, "pruning failed: %s",
                 kiln_db_last_error(job->db));
        return KILN_JOB_RETRY;
    }
    return KILN_JOB_OK;
}

static enum kiln_job_result prune_jobs(struct kiln_job_run *job)
{
    long d = kiln_prune_rows(job->db, "jobs", "finished_at", "state = 'done'",
                             C->job_retention_hours * 3600000ull, job->stopping);
    long x = kiln_prune_rows(job->db, "jobs", "finished_at", "state = 'dead'",
                             C->job_dead_retention_days * 86400000ull, job->stopping);
    if (d < 0 || x < 0) {
        snprintf(job->error, sizeof job->error, "pruning failed: %s",
                 kiln_db_last_error(job->db));
        return KILN_JOB_RETRY;
    }
    return KILN_JOB_OK;
}

/* Ended sessions (and rate-limit counters, cached lists) leave their
 * memory in the in-process store until a write passes by; this frees it
 * on an idle instance. Valkey expires keys itself. */
static enum kiln_job_result sweep_sessions(struct kiln_job_run *job)
{
    size_t freed = 0;
    if (job->kv && kiln_kv_sweep(job->kv, &freed)) {
        snprintf(job->error, sizeof job->error, "sweep failed: %s",
                 kiln_kv_last_error(job->kv));
        return KILN_JOB_RETRY;
    }
    return KILN_JOB_OK;
}

/* ---- test kinds ------------------------------------------------------------ */

/* One line per run into KILN_TEST_JOBS_LOG (O_APPEND: lines from several
 * instances do not interleave), so a test counts runs across instances. */
static void record_run(struct kiln_job_run *job, size_t batch, int64_t lead)
{
    const char *path = getenv("KILN_TEST_JOBS_LOG");
    if (!path || !*path)
        return;
    json_t *args = json_loads(job->args, 0, NULL);
    json_t *line = json_pack("{s:I, s:s, s:i, s:s, s:o?}", "id", (json_int_t)job->id, "kind",
                             job->kind, "attempt", job->attempt, "instance",
                             kiln_jobs_instance(), "args", args);
    if (batch) { /* test.batch: the batch's size and first job */
        json_object_set_new(line, "batch", json_integer((json_int_t)batch));
        json_object_set_new(line, "lead", json_integer((json_int_t)lead));
    }
    char *text = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && text) {
        size_t n = strlen(text);
        text[n] = '\n'; /* the NUL becomes the newline: one write() */
        ssize_t w = write(fd, text, n + 1);
        (void)w;
    }
    if (fd >= 0)
        close(fd);
    free(text);
}

static void record(struct kiln_job_run *job)
{
    record_run(job, 0, 0);
}

static long long arg_int(struct kiln_job_run *job, const char *key)
{
    json_t *o = json_loads(job->args, 0, NULL);
    long long v = o ? (long long)json_integer_value(json_object_get(o, key)) : 0;
    json_decref(o);
    return v;
}

static enum kiln_job_result test_record(struct kiln_job_run *job)
{
    record(job);
    return KILN_JOB_OK;
}

/* {"ms": N}: sleeps N ms; false when a drain came first and the job asked
 * for it ({"release": 1}). */
static bool sleep_for_args(struct kiln_job_run *job)
{
    long long ms = arg_int(job, "ms");
    bool release = arg_int(job, "release") != 0;
    for (long long t = 0; t < ms; t += 10) {
        if (release && *job->stopping)
            return false;
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return true;
}

/* Sleeps its {"ms"} (see above), then records. */
static enum kiln_job_result test_sleep(struct kiln_job_run *job)
{
    if (!sleep_for_args(job))
        return KILN_JOB_RELEASE;
    record(job);
    return KILN_JOB_OK;
}

/* Runs in batches of up to TEST_BATCH: each job sleeps its {"ms"}, then
 * is recorded with the batch's size and first job. */
#define TEST_BATCH 8
static void test_batch(struct kiln_job_run *jobs, size_t n, enum kiln_job_result *res)
{
    for (size_t i = 0; i < n; i++) {
        res[i] = KILN_JOB_RELEASE;
        if (!sleep_for_args(&jobs[i]))
            continue;
        record_run(&jobs[i], n, jobs[0].id);
        res[i] = KILN_JOB_OK;
    }
}

/* {"fail": N}: fails its first N attempts (records each), then succeeds;
 * {"dead": 1}: fails for good at once; "retry_ms" sets the retry delay. */
static enum kiln_job_result test_fail(struct kiln_job_run *job)
{
    record(job);
    if (arg_int(job, "dead")) {
        snprintf(job->error, sizeof job->error, "test.fail: dead on purpose");
        return KILN_JOB_DEAD;
    }
    if (job->attempt <= arg_int(job, "fail")) {
        snprintf(job->error, sizeof job->error, "test.fail: attempt %d fails on purpose",
                 job->attempt);
        job->retry_in_ms = (uint64_t)arg_int(job, "retry_ms");
        return KILN_JOB_RETRY;
    }
    return KILN_JOB_OK;
}

void kiln_jobs_register_builtin(const struct kiln_config *cfg)
{
    C = cfg;
    if (cfg->events_prune_s) {
        kiln_job_register(&(struct kiln_job_kind){
            .name = "events.prune", .run = prune_events, .every_s = cfg->events_prune_s,
            .max_attempts = 3 });
        kiln_job_register(&(struct kiln_job_kind){
            .name = "jobs.prune", .run = prune_jobs, .every_s = cfg->events_prune_s,
            .max_attempts = 3 });
        kiln_job_register(&(struct kiln_job_kind){
            .name = "sessions.sweep", .run = sweep_sessions, .every_s = cfg->events_prune_s,
            .max_attempts = 1 });
    }
    if (cfg->env == KILN_ENV_TEST) {
        kiln_job_register(&(struct kiln_job_kind){ .name = "test.record", .run = test_record });
        kiln_job_register(&(struct kiln_job_kind){ .name = "test.sleep", .run = test_sleep });
        kiln_job_register(&(struct kiln_job_kind){ .name = "test.batch",
                                                   .run_batch = test_batch,
                                                   .batch = TEST_BATCH });
        kiln_job_register(&(struct kiln_job_kind){ .name = "test.fail", .run = test_fail,
                                                   .backoff_ms = 100 });
        const char *cron = getenv("KILN_TEST_JOBS_CRON");
        if (cron && *cron)
            kiln_job_register(&(struct kiln_job_kind){ .name = "test.cron", .run = test_record,
                                                       .cron = cron });
        const char *every = getenv("KILN_TEST_JOBS_EVERY");
        if (every && atoi(every) > 0)
            kiln_job_register(&(struct kiln_job_kind){ .name = "test.every",
                                                       .run = test_record,
                                                       .every_s = (unsigned)atoi(every) });
    }
}
