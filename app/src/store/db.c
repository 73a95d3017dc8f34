/*
 * The driver-independent half of the database layer: lazy connection,
 * reconnect with capped backoff, parameter checks, typed getters.
 *
 * Backoff: the first connect attempt after a failure is immediate (the
 * server may simply have restarted); repeated failures wait 100 ms, doubling
 * to 2 s. While waiting, queries fail at once with KILN_EUNAVAILABLE, so a
 * dead database costs requests a fast 503, not a connect timeout each.
 */
#include "store/db_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000
/*
 * How statements are shared out over a loop's pipelined connections. A
 * statement joins the first connection whose queue would make it wait less
 * than QUEUE_BUDGET_NS (statements in flight × what one costs, measured
 * by kiln__db_pipe_done), and at most PIPELINE_DEPTH deep; when none
 * qualifies, the least loaded.
 * Cheap statements (SELECT 1: under 0.1 ms each under load) pack many to a
 * connection, so the server reads a batch per wake-up: spreading them over
 * every backend cost a quarter of /healthz's throughput. Expensive ones (a
 * page of notes: 0.7 to 3 ms) spread, one or two per connection: packed
 * sixteen deep, the last waited for the fifteen before it on one backend
 * while others idled, which was most of the p99 at 64 connections
 * (docs/ARCHITECTURE.md, Tail latency).
 */
#define QUEUE_BUDGET_NS 4000000u
#define PIPELINE_DEPTH 16

void kiln__db_error(struct kiln_db *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->err, sizeof db->err, fmt, ap);
    va_end(ap);
    /* Driver messages span lines ("…refused\n\tIs the server running…");
     * a log field should be one line with single spaces. */
    char *r = db->err, *w = db->err;
    bool space = false;
    for (; *r; r++) {
        bool ws = *r == '\n' || *r == '\r' || *r == '\t' || *r == ' ';
        if (ws) {
            space = w != db->err;
            continue;
        }
        if (space)
            *w++ = ' ';
        space = false;
        *w++ = *r;
    }
    *w = '\0';
}

uint64_t kiln_db_sql_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

struct kiln_db *kiln_db_open(const struct kiln_db_config *cfg)
{
    struct kiln_db *db = kiln_calloc(1, sizeof *db);
    db->cfg = cfg;
    db->ops = cfg->dialect == KILN_DB_POSTGRES ? &kiln__db_pg_ops : &kiln__db_sqlite_ops;
    return db;
}

struct kiln_db *kiln_db_pool_open(const struct kiln_db_config *cfg, unsigned size)
{
    struct kiln_db *pool = kiln_db_open(cfg);
    pool->nmembers = size ? size : 1;
    pool->members = kiln_calloc(pool->nmembers, sizeof *pool->members);
    for (unsigned i = 0; i < pool->nmembers; i++) {
        pool->members[i] = kiln_db_open(cfg);
        pool->members[i]->pool = pool;
    }
    pool->waiters_tail = &pool->waiters;
    return pool;
}

void kiln_db_close(struct kiln_db *db)
{
    if (!db)
        return;
    for (unsigned i = 0; i < db->nmembers; i++)
        kiln_db_close(db->members[i]);
    free(db->members);
    if (db->conn)
        db->ops->disconnect(db);
    if (db->ops->pipe_free)
        db->ops->pipe_free(db);
    free(db);
}

/* ---- pool: lending connections to fibers ---- */

struct pool_waiter {
    struct pool_waiter *next;
    struct kiln_fiber *fiber;
    struct kiln_db *member;      /* set by the releasing fiber */
};

/* The connection the calling fiber may use: the one it holds for a
 * transaction, an idle connected one, any idle one, or the next released. */
static struct kiln_db *borrow(struct kiln_db *pool)
{
    struct kiln_fiber *self = kiln_fiber_self();
    struct kiln_db *idle = NULL;
    for (unsigned i = 0; i < pool->nmembers; i++) {
        struct kiln_db *m = pool->members[i];
        if (m->holder == self && m->in_transaction)
            return m;
        if (!m->holder && (!idle || (!idle->conn && m->conn)))
            idle = m;
    }
    if (idle) {
        idle->holder = self;
        return idle;
    }
    if (!self)
        kiln_fatal("kiln_db pool exhausted outside a fiber");
    struct pool_waiter w = { .fiber = self };
    *pool->waiters_tail = &w;
    pool->waiters_tail = &w.next;
    kiln_fiber_park();
    w.member->holder = self;
    return w.member;
}

/* After a call: keep a transaction's connection, else pass it on. */
static void give_back(struct kiln_db *pool, struct kiln_db *m)
{
    memcpy(pool->err, m->err, sizeof pool->err);
    if (m->in_transaction)
        return;
    m->holder = NULL;
    struct pool_waiter *w = pool->waiters;
    if (w) {
        pool->waiters = w->next;
        if (!pool->waiters)
            pool->waiters_tail = &pool->waiters;
        w->member = m;
        m->holder = w->fiber; /* nobody else may take it before w runs */
        kiln_fiber_wake(w->fiber);
    }
}

enum kiln_db_dialect kiln_db_dialect(const struct kiln_db *db)
{
    return db->cfg->dialect;
}

const char *kiln_db_driver(const struct kiln_db *db)
{
    return db->ops->name;
}

const char *kiln_db_last_error(const struct kiln_db *db)
{
    return db->err;
}

void kiln_db_copy_error(struct kiln_db *db, const struct kiln_db *from)
{
    if (db != from)
        snprintf(db->err, sizeof db->err, "%s", from->err);
}

static int ensure_connected(struct kiln_db *db, unsigned budget_ms)
{
    if (db->conn)
        return 0;
    uint64_t now = kiln_now_ms();
    const struct kiln_db_config *cfg = db->cfg;
    bool new_credentials = cfg->credentials_version &&
                           cfg->credentials_version(cfg->credentials_ctx) != db->failed_version;
    if (now < db->retry_at_ms && !new_credentials) {
        if (!db->err[0])
            kiln__db_error(db, "database unavailable (retrying)");
        return KILN_EUNAVAILABLE;
    }
    unsigned timeout_ms = db->cfg->connect_timeout_s * 1000;
    if (budget_ms && budget_ms < timeout_ms)
        timeout_ms = budget_ms;
    /* The version these credentials were read at: a rotation landing
     * while this attempt runs must still count as new afterwards. */
    unsigned long version = cfg->credentials_version ? cfg->credentials_version(cfg->credentials_ctx) : 0;
    int err = db->ops->connect(db, timeout_ms);
    if (err) {
        db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_FIRST_MS;
        if (db->backoff_ms > BACKOFF_MAX_MS)
            db->backoff_ms = BACKOFF_MAX_MS;
        db->retry_at_ms = kiln_now_ms() + db->backoff_ms;
        db->failed_version = version;
        return KILN_EUNAVAILABLE;
    }
    db->backoff_ms = 0;
    db->retry_at_ms = 0;
    db->err[0] = '\0';
    return 0;
}

/* A lost connection is dropped; the next query reconnects (no backoff yet:
 * the server may be back already). */
static int after(struct kiln_db *db, int err)
{
    if (err == KILN_EUNAVAILABLE && db->conn)
        db->ops->disconnect(db);
    return err;
}

/* UTF-8 without NUL: what both PostgreSQL text and our JSON carry. */
static bool valid_text(kiln_str s)
{
    return !memchr(s.p, '\0', s.len) && kiln_utf8_valid(s);
}

/* Parameters as NUL-terminated text in a (NULL for SQL NULL). */
static int params_text(struct kiln_db *db, kiln_arena *a, const kiln_str *params,
                       size_t nparams, const char ***out)
{
    if (nparams > KILN_DB_MAX_PARAMS) {
        kiln__db_error(db, "%zu parameters, more than %d", nparams, KILN_DB_MAX_PARAMS);
        return KILN_EINVAL;
    }
    const char **text = kiln_arena_alloc(a, (nparams ? nparams : 1) * sizeof *text);
    *out = text;
    for (size_t i = 0; i < nparams; i++) {
        if (!params[i].p) {
            text[i] = NULL;
            continue;
        }
        /*
         * PostgreSQL text cannot hold NUL or invalid UTF-8; refuse them here
         * on both drivers, so the two behave the same and a caller can
         * answer 422 instead of storing something else than it was given.
         */
        if (!valid_text(params[i])) {
            kiln__db_error(db, "parameter $%zu is not valid UTF-8 text", i + 1);
            return KILN_EINVAL;
        }
        text[i] = kiln_arena_strndup(a, params[i].p, params[i].len);
    }
    return 0;
}

/* ---- pool with pipelined members: many fibers per connection ---- */

/* How busy a member looks to pick(): statements in flight when connected;
 * a member that is not costs a connect first (it counts as limit deep, so
 * one is opened when the connected ones reach the depth limit), one being
 * connected as limit deep plus its waiters, one in backoff a fast error. */
static unsigned member_load(const struct kiln_db *m, uint64_t now, unsigned limit)
{
    if (m->connecting)
        return limit + m->inflight;
    if (m->conn)
        return m->inflight;
    if (now < m->retry_at_ms)
        return UINT_MAX - 1;
    return limit;
}

/* How deep a connection's queue may grow before the next one is used. */
static unsigned depth_limit(const struct kiln_db *pool)
{
    if (pool->cfg->unpipelined)
        return 1;
    if (!pool->stmt_ns)
        return PIPELINE_DEPTH;
    uint64_t d = QUEUE_BUDGET_NS / pool->stmt_ns;
    return d < 1 ? 1 : d > PIPELINE_DEPTH ? PIPELINE_DEPTH : (unsigned)d;
}

/*
 * What a statement costs: the time a member's pipeline was busy divided by
 * the answers it gave meanwhile (from one answer to the next, or from the
 * send that found it idle), folded into the pool's average every 16
 * answers with a weight of 1/4. Answers often arrive together, one read
 * bringing several; over 16 the batches average out. Measured where the
 * answer arrives, not where its fiber resumes, so a busy loop's own
 * scheduling does not count as the database's cost.
 */
void kiln__db_pipe_sent(struct kiln_db *m)
{
    if (m->inflight == 1)
        m->busy_since_ns = kiln_now_ns();
}

void kiln__db_pipe_done(struct kiln_db *m)
{
    struct kiln_db *pool = m->pool;
    uint64_t now = kiln_now_ns();
    uint64_t busy = now - m->busy_since_ns;
    m->busy_since_ns = now;
    if (!pool)
        return;
    pool->cost_acc_ns += busy;
    if (++pool->cost_n < 16)
        return;
    uint64_t avg = pool->cost_acc_ns / pool->cost_n;
    pool->stmt_ns = pool->stmt_ns ? (pool->stmt_ns * 3 + avg) / 4 : avg;
    pool->cost_acc_ns = 0;
    pool->cost_n = 0;
}

/*
 * The member for the calling fiber's next statement: the one it holds for a
 * transaction; else the first connected one with fewer than depth_limit()
 * statements in flight (so a quiet loop keeps using its first connection);
 * else the least loaded (member_load; ties go to the lowest index); else,
 * when every member is inside someone's transaction, the next one freed.
 *
 * Unpipelined (DB_PIPELINE=false) a statement never queues behind another:
 * it takes a connected member with nothing in flight or one not connected
 * (it connects it); while every member is busy or being connected, it
 * waits for one to be answered; when every member is backing off, one of
 * those (a fast error). Through pgbouncer a pipelined statement can have
 * its Parse, Bind and Execute forwarded to a server that is handed to
 * another client at the previous statement's ReadyForQuery, before the
 * pooler reads its Sync: its results then go to someone else or the
 * pooler drops both connections (docs/ARCHITECTURE.md, Poolers).
 */
static struct kiln_db *pick(struct kiln_db *pool)
{
    struct kiln_fiber *self = kiln_fiber_self();
    unsigned limit = depth_limit(pool);
    for (;;) {
        uint64_t now = kiln_now_ms();
        struct kiln_db *first = NULL, *best = NULL, *backing_off = NULL;
        unsigned best_load = UINT_MAX;
        bool busy = false;
        for (unsigned i = 0; i < pool->nmembers; i++) {
            struct kiln_db *m = pool->members[i];
            if (m->in_transaction) {
                if (m->holder == self)
                    return m;
                continue;
            }
            if (m->reserved) {
                if (m->reserved != self) {
                    busy = true;
                    continue;
                }
                m->reserved = NULL;
                return m;
            }
            if (!first && m->conn && !m->connecting && m->inflight < limit)
                first = m;
            unsigned load = member_load(m, now, limit);
            if (pool->cfg->unpipelined && (m->connecting || m->conn)) {
                busy = true;    /* only `first` would do */
                continue;
            }
            if (pool->cfg->unpipelined && load == UINT_MAX - 1)
                backing_off = m;
            else if (load < best_load) {
                best = m;
                best_load = load;
            }
        }
        if (first)
            return first;
        if (best)
            return best;
        if (backing_off && !busy)
            return backing_off;
        if (!self)
            kiln_fatal("kiln_db pool exhausted outside a fiber");
        struct pool_waiter w = { .fiber = self };
        *pool->waiters_tail = &w;
        pool->waiters_tail = &w.next;
        kiln_fiber_park();
    }
}

/* One fiber connects a member; the others that need it wait for that. */
static int member_ready(struct kiln_db *m, unsigned budget_ms)
{
    while (m->connecting) {
        struct pool_waiter w = { .fiber = kiln_fiber_self(), .next = m->connect_waiters };
        m->connect_waiters = &w;
        kiln_fiber_park();
    }
    if (m->conn)
        return 0;
    if (m->in_transaction) {
        /* Reconnecting would run the rest of the transaction outside it. */
        kiln__db_error(m, "postgres: connection lost inside a transaction");
        return KILN_EUNAVAILABLE;
    }
    m->connecting = true;
    int err = ensure_connected(m, budget_ms);
    m->connecting = false;
    struct pool_waiter *w = m->connect_waiters;
    m->connect_waiters = NULL;
    for (; w; w = w->next)
        kiln_fiber_wake(w->fiber);
    /* Unpipelined, fibers skip a member being connected: they look again
     * now (one connected by a warm-up may never answer a statement). */
    kiln__db_pipe_idle(m, true);
    return err;
}

int kiln_db_pool_connect(struct kiln_db *pool, unsigned i)
{
    if (i >= pool->nmembers)
        return KILN_EINVAL;
    struct kiln_db *m = pool->members[i];
    if (m->conn || m->in_transaction)
        return 0;
    int err = member_ready(m, 0);
    if (err)
        memcpy(pool->err, m->err, sizeof pool->err);
    return err;
}

/* A member came free: let the fibers waiting for one (all, or the first)
 * look again. */
static void wake_waiters(struct kiln_db *pool, bool all)
{
    struct pool_waiter *w;
    while ((w = pool->waiters)) {
        pool->waiters = w->next;
        if (!pool->waiters)
            pool->waiters_tail = &pool->waiters;
        kiln_fiber_wake(w->fiber);
        if (!all)
            break;
    }
}

static void transaction_over(struct kiln_db *pool, struct kiln_db *m)
{
    m->in_transaction = false;
    m->holder = NULL;
    if (pool->cfg->unpipelined && !m->inflight)
        kiln__db_pipe_idle(m, false);
    else
        wake_waiters(pool, false);
}

void kiln__db_pipe_idle(struct kiln_db *m, bool failed)
{
    struct kiln_db *pool = m->pool;
    if (!pool || !pool->cfg->unpipelined)
        return;
    if (failed) {
        /* Dropped or (re)connected: everyone looks again. */
        m->reserved = NULL;
        wake_waiters(pool, true);
        return;
    }
    /* Free: it goes to the fiber that has waited longest. */
    struct pool_waiter *w = pool->waiters;
    if (!w || m->reserved || m->in_transaction)
        return;
    pool->waiters = w->next;
    if (!pool->waiters)
        pool->waiters_tail = &pool->waiters;
    m->reserved = w->fiber;
    kiln_fiber_wake(w->fiber);
}

enum step { STATEMENT, ENTER, LEAVE };

/*
 * One statement on a member for the calling fiber. ENTER (BEGIN) keeps the
 * member for this fiber, LEAVE (COMMIT, ROLLBACK) lets it go.
 */
static int pipe_statement(struct kiln_db *pool, kiln_arena *a, const char *sql,
                          const char *const *text, size_t nparams, struct kiln_db_rows *rows,
                          unsigned timeout_ms, unsigned budget_ms, enum step step)
{
    struct kiln_fiber *self = kiln_fiber_self();
    uint64_t start = kiln_now_ms();
    struct kiln_db *m;
    int err;
    for (;;) {
        m = pick(pool);
        err = member_ready(m, budget_ms);
        /* While this fiber waited for the connect, another may have begun
         * a transaction on the member: look again. */
        if (!m->in_transaction || m->holder == self)
            break;
    }
    if (!err && step == ENTER) {
        m->in_transaction = true;
        m->holder = self;
    }
    if (!err) {
        if (budget_ms) {
            uint64_t spent = kiln_now_ms() - start;
            timeout_ms = spent < budget_ms ? budget_ms - (unsigned)spent : 1;
        }
        err = m->ops->pipe_query(m, a, sql, text, nparams, rows,
                                 timeout_ms ? timeout_ms : m->cfg->query_timeout_ms);
    }
    memcpy(pool->err, m->err, sizeof pool->err);
    if (m->in_transaction && m->holder == self && (step == LEAVE || (step == ENTER && err)))
        transaction_over(pool, m);
    return err;
}

static bool pipelined(const struct kiln_db *db)
{
    return db->members && db->ops->pipe_query;
}

static int one_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                     const kiln_str *params, size_t nparams, struct kiln_db_rows *rows,
                     unsigned timeout_ms)
{
    const char **text;
    int err = params_text(db, a, params, nparams, &text);
    if (err)
        return err;
    err = ensure_connected(db, 0);
    if (err)
        return err;
    return after(db, db->ops->query(db, a, sql, text, nparams, rows,
                                     timeout_ms ? timeout_ms : db->cfg->query_timeout_ms));
}

int kiln_db_query_timeout(struct kiln_db *db, kiln_arena *a, const char *sql,
                          const kiln_str *params, size_t nparams,
                          struct kiln_db_rows *rows, unsigned timeout_ms)
{
    struct kiln_db_rows scratch;
    if (!rows)
        rows = &scratch;
    memset(rows, 0, sizeof *rows);
    if (pipelined(db)) {
        const char **text;
        int err = params_text(db, a, params, nparams, &text);
        if (err)
            return err;
        return pipe_statement(db, a, sql, text, nparams, rows, timeout_ms, 0, STATEMENT);
    }
    if (!db->members)
        return one_query(db, a, sql, params, nparams, rows, timeout_ms);
    struct kiln_db *m = borrow(db);
    int err = one_query(m, a, sql, params, nparams, rows, timeout_ms);
    give_back(db, m);
    return err;
}

int kiln_db_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                  const kiln_str *params, size_t nparams, struct kiln_db_rows *rows)
{
    return kiln_db_query_timeout(db, a, sql, params, nparams, rows, 0);
}

static int one_exec(struct kiln_db *db, const char *sql)
{
    int err = ensure_connected(db, 0);
    if (err)
        return err;
    return after(db, db->ops->exec(db, sql, db->cfg->query_timeout_ms));
}

/* enter: BEGIN keeps the connection; leave: COMMIT/ROLLBACK returns it. */
static int pool_exec(struct kiln_db *db, const char *sql, bool enter, bool leave)
{
    if (pipelined(db)) {
        /* One statement, extended protocol: BEGIN, COMMIT, ROLLBACK. */
        kiln_arena *a = kiln_arena_new(256);
        int err = pipe_statement(db, a, sql, NULL, 0, NULL, 0, 0,
                                 enter ? ENTER : leave ? LEAVE : STATEMENT);
        kiln_arena_free(a);
        return err;
    }
    if (!db->members)
        return one_exec(db, sql);
    struct kiln_db *m = borrow(db);
    int err = one_exec(m, sql);
    if (enter && !err)
        m->in_transaction = true;
    if (leave || (m->in_transaction && !m->conn))
        m->in_transaction = false; /* ended, or the connection (and it) is gone */
    give_back(db, m);
    return err;
}

int kiln_db_exec(struct kiln_db *db, const char *sql)
{
    return pool_exec(db, sql, false, false);
}

int kiln_db_begin(struct kiln_db *db)
{
    return pool_exec(db, "BEGIN", true, false);
}

int kiln_db_begin_write(struct kiln_db *db)
{
    return pool_exec(db, kiln_db_dialect(db) == KILN_DB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN", true,
                     false);
}

int kiln_db_commit(struct kiln_db *db)
{
    return pool_exec(db, "COMMIT", false, true);
}

int kiln_db_rollback(struct kiln_db *db)
{
    return pool_exec(db, "ROLLBACK", false, true);
}

static int one_ping(struct kiln_db *db, unsigned timeout_ms);

int kiln_db_ping(struct kiln_db *db, unsigned timeout_ms)
{
    if (pipelined(db)) {
        kiln_arena *a = kiln_arena_new(512);
        struct kiln_db_rows rows;
        int err = pipe_statement(db, a, "SELECT 1", NULL, 0, &rows, timeout_ms, timeout_ms,
                                 STATEMENT);
        kiln_arena_free(a);
        return err;
    }
    if (!db->members)
        return one_ping(db, timeout_ms);
    struct kiln_db *m = borrow(db);
    int err = one_ping(m, timeout_ms);
    give_back(db, m);
    return err;
}

static int one_ping(struct kiln_db *db, unsigned timeout_ms)
{
    /* One budget for connecting and querying: a health check must answer
     * within its deadline even when it has to reconnect first. */
    uint64_t deadline = kiln_now_ms() + timeout_ms;
    int err = ensure_connected(db, timeout_ms);
    if (err)
        return err;
    uint64_t now = kiln_now_ms();
    unsigned left = now < deadline ? (unsigned)(deadline - now) : 1;
    kiln_arena *a = kiln_arena_new(512);
    struct kiln_db_rows rows;
    err = after(db, db->ops->query(db, a, "SELECT 1", NULL, 0, &rows, left));
    kiln_arena_free(a);
    return err;
}

/* ---- getters ---- */

kiln_str kiln_db_text(const struct kiln_db_rows *r, size_t row, size_t col)
{
    if (row >= r->nrows || col >= r->ncols)
        return KILN_STR_NULL;
    return r->cells[row * r->ncols + col];
}

bool kiln_db_is_null(const struct kiln_db_rows *r, size_t row, size_t col)
{
    return kiln_db_text(r, row, col).p == NULL;
}

bool kiln_db_int64(const struct kiln_db_rows *r, size_t row, size_t col, int64_t *out)
{
    kiln_str s = kiln_db_text(r, row, col);
    bool neg = false;
    uint64_t v;
    if (!s.p || s.len == 0)
        return false;
    if (s.p[0] == '-') {
        neg = true;
        s.p++;
        s.len--;
    }
    if (!kiln_str_to_u64(s, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool kiln_db_bool(const struct kiln_db_rows *r, size_t row, size_t col, bool *out)
{
    kiln_str s = kiln_db_text(r, row, col);
    /* PostgreSQL says t/f, SQLite 1/0. */
    if (kiln_str_eq_c(s, "t") || kiln_str_eq_c(s, "1") || kiln_str_eq_c(s, "true")) {
        *out = true;
        return true;
    }
    if (kiln_str_eq_c(s, "f") || kiln_str_eq_c(s, "0") || kiln_str_eq_c(s, "false")) {
        *out = false;
        return true;
    }
    return false;
}

static bool digits(const char **p, const char *end, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9')
            return false;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return true;
}

/* Consume one character that is any of `any`. */
static bool expect(const char **p, const char *end, const char *any)
{
    if (*p >= end || **p == '\0' || !strchr(any, **p))
        return false;
    (*p)++;
    return true;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool kiln_db_timestamp(const struct kiln_db_rows *r, size_t row, size_t col, int64_t *out)
{
    kiln_str s = kiln_db_text(r, row, col);
    if (!s.p)
        return false;
    const char *p = s.p, *end = s.p + s.len;
    int y, mo, d, h, mi, sec, frac = 0, fdigits = 0;
    if (!digits(&p, end, 4, &y) || !expect(&p, end, "-") || !digits(&p, end, 2, &mo) ||
        !expect(&p, end, "-") || !digits(&p, end, 2, &d) || !expect(&p, end, " T") ||
        !digits(&p, end, 2, &h) || !expect(&p, end, ":") || !digits(&p, end, 2, &mi) ||
        !expect(&p, end, ":") || !digits(&p, end, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') {
            if (fdigits < 6) {
                frac = frac * 10 + (*p - '0');
                fdigits++;
            }
            p++;
        }
        while (fdigits < 6) {
            frac *= 10;
            fdigits++;
        }
    }
    int offset_s = 0;
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, oh = 0, om = 0;
        if (!digits(&p, end, 2, &oh))
            return false;
        if (p < end && *p == ':')
            p++;
        if (p < end && !digits(&p, end, 2, &om))
            return false;
        offset_s = sign * (oh * 3600 + om * 60);
    }
    if (p != end)
        return false;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    *out = secs * 1000000 + frac;
    return true;
}
