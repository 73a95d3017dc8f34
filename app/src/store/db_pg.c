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
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"

static PGconn *C(struct kiln_db *db)
{
    return db->conn;
}

static void pg_disconnect(struct kiln_db *db)
{
    kiln_fdwatch_close(&db->watch); /* before libpq closes the socket */
    PQfinish(C(db));
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

static int pg_connect(struct kiln_db *db, unsigned timeout_ms)
{
    /*
     * The configured string (URI or key=value) is expanded as "dbname";
     * the keywords after it override, so keepalives are ours whatever the
     * URL says: they notice a dead server (failover) between queries
     * instead of at the next query's timeout. The connect itself is
     * driven with PQconnectPoll so that it honours a deadline in
     * milliseconds (libpq's connect_timeout has whole seconds, at least 2).
     */
    const char *keys[] = { "dbname", "keepalives", "keepalives_idle", "keepalives_interval",
                           "keepalives_count", NULL };
    const char *vals[] = { db->cfg->conninfo, "1", "30", "10", "3", NULL };
    uint64_t deadline = kiln_now_ms() + timeout_ms;
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c) {
        kiln__db_error(db, "postgres: out of memory");
        return KILN_EUNAVAILABLE;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        /* libpq may move to another socket (next address): a fresh
         * watcher for every wait. */
        struct kiln_fdwatch *watch = NULL;
        int w = kiln_wait_fd(&watch, PQsocket(c),
                             st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        kiln_fdwatch_close(&watch);
        if (w == KILN_ETIMEDOUT) {
            kiln__db_error(db, "postgres: connect timed out after %u ms", timeout_ms);
            PQfinish(c);
            return KILN_EUNAVAILABLE;
        }
        if (w)
            break;
        st = PQconnectPoll(c);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names host and reason, never the password. */
        kiln__db_error(db, "postgres: %s", PQerrorMessage(c));
        PQfinish(c);
        return KILN_EUNAVAILABLE;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    /* Sends never block the thread: a large one is flushed by send_wait. */
    if (PQsetnonblocking(c, 1) != 0) {
        kiln__db_error(db, "postgres: cannot make the connection non-blocking");
        PQfinish(c);
        return KILN_EUNAVAILABLE;
    }
    db->conn = c;
    return 0;
}

/* Map a failed result to a kiln_err by SQLSTATE class (PostgreSQL appendix A). */
static int error_of(struct kiln_db *db, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(C(db));
    /* Only the primary message: DETAIL lines may quote row values. */
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    kiln__db_error(db, "postgres: %s%s%s", state ? state : "", state ? " " : "",
                   primary ? primary : msg);
    if (PQstatus(C(db)) == CONNECTION_BAD || !state)
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
        int f = PQflush(c);
        if (f == 0)
            break;
        if (f < 0) {
            kiln__db_error(db, "postgres: %s", PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
        /* The server may be sending while we still send: read too. */
        if (kiln_wait_fd(&db->watch, PQsocket(c), POLLOUT | POLLIN, deadline) ==
            KILN_ETIMEDOUT) {
            kiln__db_error(db, "postgres: query not sent within %u ms", timeout_ms);
            return KILN_EUNAVAILABLE;
        }
        if (!PQconsumeInput(c)) {
            kiln__db_error(db, "postgres: %s", PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
    }
    for (;;) {
        if (!PQconsumeInput(c)) {
            kiln__db_error(db, "postgres: %s", PQerrorMessage(c));
            return KILN_EUNAVAILABLE;
        }
        if (!PQisBusy(c))
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
        if (kiln_wait_fd(&db->watch, PQsocket(c), POLLIN, deadline) == KILN_EIO) {
            kiln__db_error(db, "postgres: poll failed");
            return KILN_EUNAVAILABLE;
        }
    }
}

static void fill_rows(PGresult *res, kiln_arena *a, struct kiln_db_rows *rows)
{
    int nr = PQntuples(res), nc = PQnfields(res);
    rows->nrows = (size_t)nr;
    rows->ncols = (size_t)nc;
    rows->cells = kiln_arena_alloc(a, (size_t)(nr > 0 ? nr : 1) * (size_t)(nc > 0 ? nc : 1) *
                                          sizeof *rows->cells);
    rows->names = kiln_arena_alloc(a, (size_t)(nc > 0 ? nc : 1) * sizeof *rows->names);
    for (int j = 0; j < nc; j++)
        rows->names[j] = kiln_arena_strndup(a, PQfname(res, j), strlen(PQfname(res, j)));
    for (int i = 0; i < nr; i++) {
        for (int j = 0; j < nc; j++) {
            kiln_str *cell = &rows->cells[(size_t)i * (size_t)nc + (size_t)j];
            if (PQgetisnull(res, i, j)) {
                *cell = KILN_STR_NULL;
            } else {
                size_t len = (size_t)PQgetlength(res, i, j);
                *cell = (kiln_str){ kiln_arena_strndup(a, PQgetvalue(res, i, j), len), len };
            }
        }
    }
    const char *affected = PQcmdTuples(res);
    rows->affected = affected && *affected ? strtoull(affected, NULL, 10) : 0;
}

/* Collect every result of the query; the first error wins. */
static int collect(struct kiln_db *db, kiln_arena *a, struct kiln_db_rows *rows)
{
    int err = 0;
    bool got = false;
    PGresult *res;
    while ((res = PQgetResult(C(db)))) {
        ExecStatusType st = PQresultStatus(res);
        if (!err) {
            if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
                if (rows && !got)
                    fill_rows(res, a, rows);
                got = true;
            } else {
                err = error_of(db, res);
            }
        }
        PQclear(res);
    }
    if (!err && PQstatus(C(db)) == CONNECTION_BAD) {
        kiln__db_error(db, "postgres: %s", PQerrorMessage(C(db)));
        err = KILN_EUNAVAILABLE;
    }
    return err;
}

/* Name of this connection's prepared statement for sql, preparing it once. */
static const char *prepared(struct kiln_db *db, const char *sql, size_t nparams,
                            unsigned timeout_ms, int *err)
{
    uint64_t h = kiln__db_hash(sql);
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
        if (!PQsendQuery(C(db), dealloc) || (*err = wait_result(db, timeout_ms)) != 0 ||
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
    if (!PQsendPrepare(C(db), name, sql, (int)nparams, NULL)) {
        kiln__db_error(db, "postgres: %s", PQerrorMessage(C(db)));
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
        ok = PQsendQueryPrepared(C(db), name, (int)nparams, params, NULL, NULL, 0);
    } else {
        ok = PQsendQueryParams(C(db), sql, (int)nparams, NULL, params, NULL, NULL, 0);
    }
    if (!ok) {
        kiln__db_error(db, "postgres: %s", PQerrorMessage(C(db)));
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
    if (!PQsendQuery(C(db), sql)) {
        kiln__db_error(db, "postgres: %s", PQerrorMessage(C(db)));
        return KILN_EUNAVAILABLE;
    }
    int err = wait_result(db, timeout_ms);
    if (err)
        return err;
    return collect(db, NULL, NULL);
}

const struct kiln_db_ops kiln__db_pg_ops = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .query = pg_query,
    .exec = pg_exec,
};
