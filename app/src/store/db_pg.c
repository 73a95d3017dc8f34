/*
 * PostgreSQL driver on libpq. Queries go out with PQsendQueryParams (the
 * extended protocol's unnamed statement: no session state, so it works
 * through pgbouncer and RDS Proxy in transaction mode) and results are
 * awaited with kiln_wait_fd (poll() on a worker, the loop on a fiber) so
 * that every query has a deadline and a fiber never blocks its loop. On a deadline the
 * query is cancelled and the connection dropped: its state is unknown.
 * With prepared_statements on (direct connections only), each connection
 * prepares a statement once per SQL text and reuses it.
 */
#include "store/db_internal.h"

#include <errno.h>
#include "core/dl.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"

static PGconn *C(struct kiln_db *db)
{
    return db->conn;
}

static void pipe_down(struct kiln_db *db);

static void pg_disconnect(struct kiln_db *db)
{
    kiln_fdwatch_close(&db->watch); /* before libpq closes the socket */
    pipe_down(db);
    if (db->conn) /* NULL too when libpq could not be loaded */
        kiln_pq.PQfinish(C(db));
    db->conn = NULL;
    for (unsigned i = 0; i < KILN_DB_STMT_CACHE; i++) {
        free(db->cache[i].sql);
        free(db->cache[i].stmt);
        db->cache[i].sql = NULL;
        db->cache[i].stmt = NULL;
        db->cache[i].hash = 0;
    }
}

/* Server notices ("relation already exists, skipping") are not errors and
 * must not reach stderr as unstructured text. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int pipe_up(struct kiln_db *db);

/* Ask the configured credentials source, with host, port and user from
 * conninfo. */
static int credentials(struct kiln_db *db, char *user, size_t ucap, char *password, size_t pcap)
{
    char *perr = NULL;
    PQconninfoOption *opts = kiln_pq.PQconninfoParse(db->cfg->conninfo, &perr);
    if (!opts) {
        /* libpq's parse error may quote the string, password included. */
        kiln_pq.PQfreemem(perr);
        kiln__db_error(db, "postgres: unreadable connection settings");
        return KILN_EUNAVAILABLE;
    }
    struct kiln_db_target t = { .host = NULL, .port = 5432, .user = NULL };
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !o->val[0])
            continue;
        if (strcmp(o->keyword, "host") == 0)
            t.host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            t.port = (unsigned)strtoul(o->val, NULL, 10);
        else if (strcmp(o->keyword, "user") == 0)
            t.user = o->val;
    }
    char err[512] = "";
    int rc = db->cfg->credentials(db->cfg->credentials_ctx, &t, user, ucap, password, pcap, err,
                                  sizeof err);
    kiln_pq.PQconninfoFree(opts);
    if (rc) {
        kiln__db_error(db, "postgres: no credentials for a new connection: %s", err);
        return KILN_EUNAVAILABLE;
    }
    return 0;
}

static int pg_connect(struct kiln_db *db, unsigned timeout_ms)
{
    /*
     * The configured string (URI or key=value) is expanded as "dbname";
     * the keywords after it override, so keepalives are ours whatever the
     * URL says: they notice a dead server (failover) between queries
     * instead of at the next query's timeout. The connect itself is
     * driven with PQconnectPoll so that it honours a deadline in
     * milliseconds (libpq's connect_timeout has whole seconds, at least 2).
     * gssencmode comes before "dbname", so a URL that names it wins: by
     * default libpq looks for Kerberos credentials before every connect
     * (gssencmode=prefer), which initialised Kerberos in each process
     * (0.7 MiB of RSS, docs/ARCHITECTURE.md, Footprint) for a GSSAPI
     * encryption no Kiln deployment uses.
     */
    const char *keys[] = { "gssencmode", "dbname", "keepalives", "keepalives_idle",
                           "keepalives_interval", "keepalives_count", NULL, NULL, NULL };
    const char *vals[] = { "disable", db->cfg->conninfo, "1", "30", "10", "3", NULL, NULL, NULL };
    if (kiln_dl_pq() != 0) {
        kiln__db_error(db, "postgres: cannot load " KILN_PQ_SONAME);
        return KILN_EUNAVAILABLE;
    }
    char user[256] = "", password[8192] = "";
    if (db->cfg->credentials) {
        int rc = credentials(db, user, sizeof user, password, sizeof password);
        if (rc)
            return rc;
        size_t k = 6;
        if (user[0]) {
            keys[k] = "user";
            vals[k++] = user;
        }
        if (password[0]) {
            keys[k] = "password";
            vals[k++] = password;
        }
    }
    uint64_t deadline = kiln_now_ms() + timeout_ms;
    PGconn *c = kiln_pq.PQconnectStartParams(keys, vals, 1);
    explicit_bzero(password, sizeof password);
    if (!c) {
        kiln__db_error(db, "postgres: out of memory");
        return KILN_EUNAVAILABLE;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (kiln_pq.PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        /* libpq may move to another socket (next address): a fresh
         * watcher for every wait. */
        struct kiln_fdwatch *watch = NULL;
        int w = kiln_wait_fd(&watch, kiln_pq.PQsocket(c),
                             st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        kiln_fdwatch_close(&watch);
        if (w == KILN_ETIMEDOUT) {
            kiln__db_error(db, "postgres: connect timed out after %u ms", timeout_ms);
            kiln_pq.PQfinish(c);
            return KILN_EUNAVAILABLE;
        }
        if (w)
            break;
        st = kiln_pq.PQconnectPoll(c);
    }
    if (kiln_pq.PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names host and reason, never the password. */
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
        /* The server refused the login (its words: "password
         * authentication failed", "PAM authentication failed" from RDS IAM,
         * "not permitted to log in", RDS Proxy's "no credentials for the
         * role"): say so, so that rotated credentials are read again. */
        const char *m = kiln_pq.PQerrorMessage(c);
        if (db->cfg->credentials_rejected &&
            (strstr(m, "authentication failed") || strstr(m, "not permitted to log in") ||
             strstr(m, "no credentials for")))
            db->cfg->credentials_rejected(db->cfg->credentials_ctx);
        kiln_pq.PQfinish(c);
        return KILN_EUNAVAILABLE;
    }
    kiln_pq.PQsetNoticeProcessor(c, on_notice, NULL);
    /* Sends never block the thread: a large one is flushed by send_wait. */
    if (kiln_pq.PQsetnonblocking(c, 1) != 0) {
        kiln__db_error(db, "postgres: cannot make the connection non-blocking");
        kiln_pq.PQfinish(c);
        return KILN_EUNAVAILABLE;
    }
    db->conn = c;
    if (db->pool && kiln_fiber_loop())
        return pipe_up(db);
    return 0;
}

/* Map a failed result to a kiln_err by SQLSTATE class (PostgreSQL appendix A). */
static int error_of(struct kiln_db *db, PGresult *res)
{
    const char *state = res ? kiln_pq.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? kiln_pq.PQresultErrorMessage(res) : kiln_pq.PQerrorMessage(C(db));
    /* Only the primary message: DETAIL lines may quote row values. */
    const char *primary = res ? kiln_pq.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    kiln__db_error(db, "postgres: %s%s%s", state ? state : "", state ? " " : "",
                   primary ? primary : msg);
    if (kiln_pq.PQstatus(C(db)) == CONNECTION_BAD || !state)
        return KILN_EUNAVAILABLE;
    if (!strncmp(state, "23", 2))
        return KILN_ECONFLICT;          /* integrity constraint violation */
    if (!strncmp(state, "22", 2))
        return KILN_EINVAL;             /* data exception */
    if (!strncmp(state, "08", 2) || !strncmp(state, "53", 2) || !strncmp(state, "57", 2) ||
        !strcmp(state, "40001") || !strcmp(state, "40P01"))
        return KILN_EUNAVAILABLE;       /* connection, resources, shutdown, cancel */
    return KILN_EDB;
}

/* Flush the query just queued, then wait for its result, or give up at the
 * deadline. */
static int wait_result(struct kiln_db *db, unsigned timeout_ms)
{
    PGconn *c = C(db);
    uint64_t deadline = kiln_now_ms() + timeout_ms;
    for (;;) {
        int f = kiln_pq.PQflush(c);
        if (f == 0)
            break;
        if (f < 0) {
            kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
        /* The server may be sending while we still send: read too. */
        if (kiln_wait_fd(&db->watch, kiln_pq.PQsocket(c), POLLOUT | POLLIN, deadline) ==
            KILN_ETIMEDOUT) {
            kiln__db_error(db, "postgres: query not sent within %u ms", timeout_ms);
            return KILN_EUNAVAILABLE;
        }
        if (!kiln_pq.PQconsumeInput(c)) {
            kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
    }
    for (;;) {
        if (!kiln_pq.PQconsumeInput(c)) {
            kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
        if (!kiln_pq.PQisBusy(c))
            return 0;
        uint64_t now = kiln_now_ms();
        if (now >= deadline) {
            /*
             * Drop the connection (the caller does) rather than PQcancel:
             * libpq 15's cancel opens a new connection and waits without a
             * deadline, so a frozen server or pooler would hang the worker.
             * The server ends the query when it finds the client gone.
             */
            kiln__db_error(db, "postgres: query timed out after %u ms", timeout_ms);
            return KILN_EUNAVAILABLE;
        }
        int w = kiln_wait_fd(&db->watch, kiln_pq.PQsocket(c), POLLIN, deadline);
        if (w == KILN_EIO) {
            kiln__db_error(db, "postgres: poll failed");
            return KILN_EUNAVAILABLE;
        }
        if (w == KILN_ETIMEDOUT && kiln_now_ms() < deadline) {
            kiln__db_error(db, "postgres: query abandoned: kiln is stopping");
            return KILN_EUNAVAILABLE;
        }
    }
}

static void fill_rows(PGresult *res, kiln_arena *a, struct kiln_db_rows *rows)
{
    int nr = kiln_pq.PQntuples(res), nc = kiln_pq.PQnfields(res);
    rows->nrows = (size_t)nr;
    rows->ncols = (size_t)nc;
    rows->cells = kiln_arena_alloc(a, (size_t)(nr > 0 ? nr : 1) * (size_t)(nc > 0 ? nc : 1) *
                                          sizeof *rows->cells);
    rows->names = kiln_arena_alloc(a, (size_t)(nc > 0 ? nc : 1) * sizeof *rows->names);
    for (int j = 0; j < nc; j++)
        rows->names[j] = kiln_arena_strndup(a, kiln_pq.PQfname(res, j), strlen(kiln_pq.PQfname(res, j)));
    for (int i = 0; i < nr; i++) {
        for (int j = 0; j < nc; j++) {
            kiln_str *cell = &rows->cells[(size_t)i * (size_t)nc + (size_t)j];
            if (kiln_pq.PQgetisnull(res, i, j)) {
                *cell = KILN_STR_NULL;
            } else {
                size_t len = (size_t)kiln_pq.PQgetlength(res, i, j);
                *cell = (kiln_str){ kiln_arena_strndup(a, kiln_pq.PQgetvalue(res, i, j), len), len };
            }
        }
    }
    const char *affected = kiln_pq.PQcmdTuples(res);
    rows->affected = affected && *affected ? strtoull(affected, NULL, 10) : 0;
}

/* Collect every result of the query; the first error wins. */
static int collect(struct kiln_db *db, kiln_arena *a, struct kiln_db_rows *rows)
{
    int err = 0;
    bool got = false;
    PGresult *res;
    while ((res = kiln_pq.PQgetResult(C(db)))) {
        ExecStatusType st = kiln_pq.PQresultStatus(res);
        if (!err) {
            if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
                if (rows && !got)
                    fill_rows(res, a, rows);
                got = true;
            } else {
                err = error_of(db, res);
            }
        }
        kiln_pq.PQclear(res);
    }
    if (!err && kiln_pq.PQstatus(C(db)) == CONNECTION_BAD) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(C(db)));
        err = KILN_EUNAVAILABLE;
    }
    return err;
}

/* Name of this connection's prepared statement for sql, preparing it once. */
static const char *prepared(struct kiln_db *db, const char *sql, size_t nparams,
                            unsigned timeout_ms, int *err)
{
    uint64_t h = kiln_db_sql_hash(sql);
    for (unsigned i = 0; i < KILN_DB_STMT_CACHE; i++)
        if (db->cache[i].sql && db->cache[i].hash == h && !strcmp(db->cache[i].sql, sql))
            return db->cache[i].stmt;
    unsigned slot = db->cache_next++ % KILN_DB_STMT_CACHE;
    char name[32];
    snprintf(name, sizeof name, "kiln_%016llx", (unsigned long long)h);
    if (db->cache[slot].sql) {
        /* Evicted: deallocate so the server's memory stays bounded too. */
        char dealloc[64];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", (char *)db->cache[slot].stmt);
        if (!kiln_pq.PQsendQuery(C(db), dealloc) || (*err = wait_result(db, timeout_ms)) != 0 ||
            (*err = collect(db, NULL, NULL)) != 0) {
            if (!*err)
                *err = KILN_EUNAVAILABLE;
            return NULL;
        }
        free(db->cache[slot].sql);
        free(db->cache[slot].stmt);
        db->cache[slot].sql = NULL;
        db->cache[slot].stmt = NULL;
    }
    if (!kiln_pq.PQsendPrepare(C(db), name, sql, (int)nparams, NULL)) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(C(db)));
        *err = KILN_EUNAVAILABLE;
        return NULL;
    }
    if ((*err = wait_result(db, timeout_ms)) != 0 || (*err = collect(db, NULL, NULL)) != 0)
        return NULL;
    db->cache[slot].hash = h;
    db->cache[slot].sql = kiln_strdup(sql);
    db->cache[slot].stmt = kiln_strdup(name);
    return db->cache[slot].stmt;
}

static int pg_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                    const char *const *params, size_t nparams, struct kiln_db_rows *rows,
                    unsigned timeout_ms)
{
    int ok;
    if (db->cfg->prepared_statements) {
        int err = 0;
        const char *name = prepared(db, sql, nparams, timeout_ms, &err);
        if (!name)
            return err;
        ok = kiln_pq.PQsendQueryPrepared(C(db), name, (int)nparams, params, NULL, NULL, 0);
    } else {
        ok = kiln_pq.PQsendQueryParams(C(db), sql, (int)nparams, NULL, params, NULL, NULL, 0);
    }
    if (!ok) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(C(db)));
        return KILN_EUNAVAILABLE;
    }
    int err = wait_result(db, timeout_ms);
    if (err)
        return err;
    return collect(db, a, rows);
}

static int pg_exec(struct kiln_db *db, const char *sql, unsigned timeout_ms)
{
    /* The simple protocol: several statements in one string (migrations). */
    if (!kiln_pq.PQsendQuery(C(db), sql)) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(C(db)));
        return KILN_EUNAVAILABLE;
    }
    int err = wait_result(db, timeout_ms);
    if (err)
        return err;
    return collect(db, NULL, NULL);
}


/* ---- pipeline: one connection, many fibers ------------------------------- */

/*
 * A loop's pool member in libpq's pipeline mode: each fiber's statement goes
 * out with its own Sync (so it is its own implicit transaction, and an error
 * aborts nothing of anyone else's) and parks; the loop reads results as they
 * come and hands each fiber its own, in order. The server takes in a batch
 * of statements per wake-up instead of one. Transactions are pipelined too:
 * the pool keeps other fibers off a connection from BEGIN to COMMIT.
 *
 * Results per statement: its result (or error), NULL, then
 * PGRES_PIPELINE_SYNC. With prepared statements a statement may be preceded
 * in its segment by a DEALLOCATE and a Prepare, counted in `statements`.
 */
struct pipe_waiter {
    struct pipe_waiter *next;
    struct kiln_fiber *fiber;
    kiln_arena *arena;
    struct kiln_db_rows *rows;
    unsigned statements;     /* in this segment; the last is the caller's */
    unsigned ended;          /* statements whose results ended (NULL seen) */
    int new_slot;            /* statement cache slot filled for it, or -1 */
    unsigned timeout_ms;
    uint64_t deadline;
    int rc;
    bool got_rows;
    bool done;
    char err[sizeof ((struct kiln_db *)0)->err];
};

struct pipe {
    struct kiln_db *db;      /* NULL once the member is closed */
    uv_poll_t *poll;         /* the connection's socket; NULL when down */
    uv_timer_t timer;        /* the earliest deadline in flight */
    uint64_t timer_due;
    struct pipe_waiter *head, **tail;
    bool want_write;
};

static void on_pipe_poll(uv_poll_t *h, int status, int events);

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Fail every statement in flight with the connection's error, and drop it. */
static void pipe_fail(struct kiln_db *db, int rc)
{
    struct pipe *p = db->pipe;
    struct pipe_waiter *w = p->head;
    p->head = NULL;
    p->tail = &p->head;
    db->inflight = 0;
    uv_timer_stop(&p->timer);
    while (w) {
        struct pipe_waiter *next = w->next;
        w->rc = rc;
        memcpy(w->err, db->err, sizeof w->err);
        w->done = true;
        if (w->fiber != kiln_fiber_self()) /* the caller itself is running */
            kiln_fiber_wake(w->fiber);
        w = next;
    }
    if (db->conn)
        pg_disconnect(db);
    kiln__db_pipe_idle(db, true);
}

static void pipe_down(struct kiln_db *db)
{
    struct pipe *p = db->pipe;
    if (!p)
        return;
    if (p->head) {
        kiln__db_error(db, "postgres: connection closed");
        struct pipe_waiter *w = p->head;
        p->head = NULL;
        p->tail = &p->head;
        for (; w; w = w->next) {
            w->rc = KILN_EUNAVAILABLE;
            memcpy(w->err, db->err, sizeof w->err);
            w->done = true;
            if (w->fiber != kiln_fiber_self())
                kiln_fiber_wake(w->fiber);
        }
        db->inflight = 0;
        kiln__db_pipe_idle(db, true);
    }
    if (p->poll) {
        uv_poll_stop(p->poll); /* out of epoll before libpq closes the fd */
        uv_close((uv_handle_t *)p->poll, on_poll_closed);
        p->poll = NULL;
    }
    p->want_write = false;
    uv_timer_stop(&p->timer);
}

static int pipe_up(struct kiln_db *db)
{
    PGconn *c = C(db);
    struct pipe *p = db->pipe;
    if (!p) {
        p = kiln_calloc(1, sizeof *p);
        p->db = db;
        p->tail = &p->head;
        uv_timer_init(kiln_fiber_loop(), &p->timer);
        p->timer.data = p;
        uv_unref((uv_handle_t *)&p->timer);
        db->pipe = p;
    }
    kiln_fdwatch_close(&db->watch);
    p->poll = kiln_malloc(sizeof *p->poll);
    if (!kiln_pq.PQenterPipelineMode(c) ||
        uv_poll_init_socket(kiln_fiber_loop(), p->poll, kiln_pq.PQsocket(c)) != 0) {
        free(p->poll);
        p->poll = NULL;
        kiln__db_error(db, "postgres: cannot start the pipeline: %s", kiln_pq.PQerrorMessage(c));
        kiln_pq.PQfinish(c);
        db->conn = NULL;
        return KILN_EUNAVAILABLE;
    }
    p->poll->data = p;
    uv_poll_start(p->poll, UV_READABLE, on_pipe_poll);
    return 0;
}

static void pipe_want_write(struct pipe *p, bool on)
{
    if (p->want_write == on || !p->poll)
        return;
    p->want_write = on;
    uv_poll_start(p->poll, on ? UV_READABLE | UV_WRITABLE : UV_READABLE, on_pipe_poll);
}

static void on_pipe_timer(uv_timer_t *h);

static void arm_timer(struct pipe *p, uint64_t deadline)
{
    if (uv_is_active((uv_handle_t *)&p->timer) && p->timer_due <= deadline)
        return;
    uint64_t now = kiln_now_ms();
    p->timer_due = deadline;
    uv_timer_start(&p->timer, on_pipe_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_pipe_timer(uv_timer_t *h)
{
    struct pipe *p = h->data;
    struct kiln_db *db = p->db;
    if (!db || !p->head)
        return;
    uint64_t now = kiln_now_ms(), next = UINT64_MAX;
    for (struct pipe_waiter *w = p->head; w; w = w->next) {
        if (w->deadline <= now) {
            /* As wait_result: drop the connection, the server ends the
             * statement when it finds us gone. Everything behind it in the
             * pipeline is lost with it. */
            kiln__db_error(db, "postgres: query timed out after %u ms", w->timeout_ms);
            pipe_fail(db, KILN_EUNAVAILABLE);
            return;
        }
        if (w->deadline < next)
            next = w->deadline;
    }
    arm_timer(p, next);
}

/* A failed statement: its error for the waiter; a prepared statement that
 * failed to prepare leaves the cache. */
static void waiter_error(struct kiln_db *db, struct pipe_waiter *w, PGresult *res)
{
    if (w->rc)
        return;
    if (kiln_pq.PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
        kiln__db_error(db, "postgres: statement aborted by an earlier error");
        w->rc = KILN_EDB;
    } else {
        w->rc = error_of(db, res);
    }
    memcpy(w->err, db->err, sizeof w->err);
    if (w->new_slot >= 0) {
        unsigned i = (unsigned)w->new_slot;
        free(db->cache[i].sql);
        free(db->cache[i].stmt);
        db->cache[i].sql = NULL;
        db->cache[i].stmt = NULL;
        db->cache[i].hash = 0;
        w->new_slot = -1;
    }
}

static void on_pipe_poll(uv_poll_t *h, int status, int events)
{
    struct pipe *p = h->data;
    struct kiln_db *db = p->db;
    if (!db || !db->conn || p->poll != h)
        return;
    PGconn *c = C(db);
    (void)status;
    if (events & UV_WRITABLE) {
        int f = kiln_pq.PQflush(c);
        if (f < 0) {
            kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
            pipe_fail(db, KILN_EUNAVAILABLE);
            return;
        }
        pipe_want_write(p, f == 1);
    }
    if (!kiln_pq.PQconsumeInput(c)) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
        pipe_fail(db, KILN_EUNAVAILABLE);
        return;
    }
    while (p->head && !kiln_pq.PQisBusy(c)) {
        struct pipe_waiter *w = p->head;
        PGresult *res = kiln_pq.PQgetResult(c);
        if (!res) {
            w->ended++;
            continue;
        }
        ExecStatusType st = kiln_pq.PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            p->head = w->next;
            if (!p->head) {
                p->tail = &p->head;
                uv_timer_stop(&p->timer);
            }
            db->inflight--;
            kiln__db_pipe_done(db);
            if (!db->inflight)
                kiln__db_pipe_idle(db, false);
            if (!w->rc && !w->got_rows && w->rows) {
                /* No result for the caller's statement: cannot happen
                 * unless the protocol went astray. */
                kiln__db_error(db, "postgres: no result");
                w->rc = KILN_EDB;
                memcpy(w->err, db->err, sizeof w->err);
            }
            w->done = true;
            kiln_fiber_wake(w->fiber);
        } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            if (w->ended + 1 == w->statements && !w->got_rows && !w->rc) {
                if (w->rows)
                    fill_rows(res, w->arena, w->rows);
                w->got_rows = true;
            }
        } else {
            waiter_error(db, w, res);
        }
        kiln_pq.PQclear(res);
    }
    if (kiln_pq.PQstatus(c) == CONNECTION_BAD) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
        pipe_fail(db, KILN_EUNAVAILABLE);
    } else if (!p->head) {
        /* Nothing in flight: a readable socket now is the server closing
         * it (restart, idle timeout); libpq notices on the next read. */
    }
}

/* Queue the prepared-statement traffic for sql: its name, or NULL. */
static const char *pipe_prepared(struct kiln_db *db, const char *sql, size_t nparams,
                                 struct pipe_waiter *w)
{
    PGconn *c = C(db);
    uint64_t h = kiln_db_sql_hash(sql);
    for (unsigned i = 0; i < KILN_DB_STMT_CACHE; i++)
        if (db->cache[i].sql && db->cache[i].hash == h && !strcmp(db->cache[i].sql, sql))
            return db->cache[i].stmt;
    unsigned slot = db->cache_next++ % KILN_DB_STMT_CACHE;
    char name[32];
    snprintf(name, sizeof name, "kiln_%016llx", (unsigned long long)h);
    if (db->cache[slot].sql) {
        char dealloc[64];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", (char *)db->cache[slot].stmt);
        if (!kiln_pq.PQsendQueryParams(c, dealloc, 0, NULL, NULL, NULL, NULL, 0))
            return NULL;
        w->statements++;
        free(db->cache[slot].sql);
        free(db->cache[slot].stmt);
        db->cache[slot].sql = NULL;
        db->cache[slot].stmt = NULL;
    }
    if (!kiln_pq.PQsendPrepare(c, name, sql, (int)nparams, NULL))
        return NULL;
    w->statements++;
    db->cache[slot].hash = h;
    db->cache[slot].sql = kiln_strdup(sql);
    db->cache[slot].stmt = kiln_strdup(name);
    w->new_slot = (int)slot;
    return db->cache[slot].stmt;
}

static int pg_pipe_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                         const char *const *params, size_t nparams, struct kiln_db_rows *rows,
                         unsigned timeout_ms)
{
    struct pipe *p = db->pipe;
    PGconn *c = C(db);
    struct pipe_waiter w = { .fiber = kiln_fiber_self(), .arena = a, .rows = rows,
                             .new_slot = -1 };
    int ok;
    if (!p || !p->poll || !w.fiber) {
        kiln__db_error(db, "postgres: pipelined query without a pipeline");
        return KILN_EDB;
    }
    if (db->cfg->prepared_statements) {
        const char *name = pipe_prepared(db, sql, nparams, &w);
        ok = name && kiln_pq.PQsendQueryPrepared(c, name, (int)nparams, params, NULL, NULL, 0);
    } else {
        ok = kiln_pq.PQsendQueryParams(c, sql, (int)nparams, NULL, params, NULL, NULL, 0);
    }
    w.statements++;
    /* PQpipelineSync also flushes, as far as the socket takes it. */
    if (!ok || !kiln_pq.PQpipelineSync(c)) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
        /* What went out of this segment gets results nobody waits for:
         * the connection cannot be trusted any more. */
        pipe_fail(db, KILN_EUNAVAILABLE);
        return KILN_EUNAVAILABLE;
    }
    w.timeout_ms = timeout_ms;
    w.deadline = kiln_now_ms() + timeout_ms;
    *p->tail = &w;
    p->tail = &w.next;
    db->inflight++;
    kiln__db_pipe_sent(db);
    arm_timer(p, w.deadline);
    int f = kiln_pq.PQflush(c);
    if (f < 0) {
        kiln__db_error(db, "postgres: %s", kiln_pq.PQerrorMessage(c));
        pipe_fail(db, KILN_EUNAVAILABLE);
    } else {
        pipe_want_write(p, f == 1);
    }
    if (!w.done)
        kiln_fiber_park();
    if (w.rc)
        memcpy(db->err, w.err, sizeof db->err);
    return w.rc;
}

/* The member is being freed (its loop is stopping): the pipeline goes with
 * it once libuv has closed the timer. */
static void pipe_free(struct kiln_db *db)
{
    struct pipe *p = db->pipe;
    if (!p)
        return;
    p->db = NULL;
    db->pipe = NULL;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

const struct kiln_db_ops kiln__db_pg_ops = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .query = pg_query,
    .exec = pg_exec,
    .pipe_query = pg_pipe_query,
    .pipe_free = pipe_free,
};
