/*
 * The SQL database: PostgreSQL (libpq) when DATABASE_URL or DB_HOST is set,
 * SQLite otherwise, behind one interface; callers cannot tell which they
 * have. SQL uses $1..$n placeholders on both; parameters travel as text (or
 * SQL NULL) and are never interpolated.
 *
 * One kiln_db handle is one connection, used by one thread at a time (one
 * per worker), or a pool of them shared by one loop's fibers
 * (kiln_db_pool_open). It connects lazily on the first query and, after the server
 * goes away, reconnects with capped backoff; while it cannot, queries fail
 * at once with KILN_EUNAVAILABLE (callers answer 503).
 *
 * Through a transaction-mode pooler (pgbouncer, RDS Proxy) no session state
 * is used: no SET, no named prepared statements, no temp tables, unless
 * prepared_statements is on (direct connections only).
 *
 * Errors: KILN_EUNAVAILABLE (cannot connect, connection lost, timed out),
 * KILN_ECONFLICT (unique or foreign-key violation), KILN_EDB (any other
 * error: bad SQL, a bug), KILN_EINVAL (bad arguments).
 */
#ifndef KILN_STORE_DB_H
#define KILN_STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/str.h"

enum kiln_db_dialect {
    KILN_DB_SQLITE,
    KILN_DB_POSTGRES,
};

/* Where a PostgreSQL connection goes (from conninfo), for credentials that
 * depend on it (an RDS IAM token is signed for host, port and user). */
struct kiln_db_target {
    const char *host;
    unsigned port;
    const char *user;              /* NULL when conninfo names none */
};

/*
 * Credentials for one new connection, asked for each time one opens: user
 * and password override conninfo's when non-empty. 0, or a kiln_err with
 * err set (the connection then fails with KILN_EUNAVAILABLE). Called on the
 * connecting thread; must not block for long (it may run on an event loop).
 */
typedef int (*kiln_db_credentials_fn)(void *ctx, const struct kiln_db_target *target,
                                      char *user, size_t user_cap, char *password,
                                      size_t password_cap, char *err, size_t errcap);

struct kiln_db_config {
    enum kiln_db_dialect dialect;
    const char *conninfo;          /* PostgreSQL: libpq URI or key=value */
    const char *path;              /* SQLite: file */
    bool prepared_statements;      /* PostgreSQL: named statements per connection */
    unsigned connect_timeout_s;    /* 5 */
    unsigned query_timeout_ms;     /* 15000 */
    kiln_db_credentials_fn credentials;  /* NULL: conninfo's */
    void *credentials_ctx;
    /* Told (with credentials_ctx) when the server refuses a new
     * connection's login: credentials may have rotated under us. NULL:
     * nobody. */
    void (*credentials_rejected)(void *ctx);
    /* A number that moves when the credentials change (rotation): a handle
     * waiting out its reconnect backoff tries at once when it has moved
     * since its failure. NULL: backoff only. */
    unsigned long (*credentials_version)(void *ctx);
    /* PostgreSQL pool: one statement in flight per connection instead of
     * a pipeline (DB_PIPELINE=false), for poolers that hand a server
     * connection to another client at a ReadyForQuery while the next
     * statement's messages are only partly through (pgbouncer). */
    bool unpipelined;
};

struct kiln_db;

/* A handle; never NULL. No I/O until the first query. cfg must outlive it. */
struct kiln_db *kiln_db_open(const struct kiln_db_config *cfg);
/*
 * A handle shared by the fibers of one event loop (core/fiber.h): each call
 * borrows one of size connections for its duration (a fiber that finds none
 * free waits for one), and kiln_db_begin keeps the borrowed connection for
 * the calling fiber until its kiln_db_commit or kiln_db_rollback. With a
 * driver that pipelines (PostgreSQL), fibers share connections instead:
 * each statement goes to the connected member with the fewest statements in
 * flight. Used on one loop thread only; kiln_db_close it there.
 */
struct kiln_db *kiln_db_pool_open(const struct kiln_db_config *cfg, unsigned size);
/*
 * Connect member i now if it is not (on a fiber of the pool's loop): what
 * the loop's warm-up does for member 0 at start, so that the first requests
 * do not wait for a connect (SCRAM, TLS) made on their behalf. 0, or the
 * error (a member in backoff fails at once).
 */
int kiln_db_pool_connect(struct kiln_db *pool, unsigned i);
void kiln_db_close(struct kiln_db *db);           /* NULL allowed */
enum kiln_db_dialect kiln_db_dialect(const struct kiln_db *db);
/* "postgres" or "sqlite". */
const char *kiln_db_driver(const struct kiln_db *db);

/* The rows of a result, in the arena given to the query. */
struct kiln_db_rows {
    size_t nrows;
    size_t ncols;
    kiln_str *cells;       /* row-major; p == NULL for SQL NULL */
    const char **names;    /* column names */
    uint64_t affected;     /* rows changed by INSERT/UPDATE/DELETE */
};

/* A statement text's hash (64-bit FNV-1a): the drivers' statement caches
 * key on it, and so does anything else that groups statements by text. */
uint64_t kiln_db_sql_hash(const char *sql);

/* The most parameters one statement takes (PostgreSQL's own limit is
 * 65535): combined creates are the largest, tens of rows of a few each. */
#define KILN_DB_MAX_PARAMS 1024

/*
 * Run one statement. params[i] is the text of $i+1 (p == NULL: SQL NULL).
 * rows may be NULL when the caller wants none. timeout_ms 0 uses the
 * configured query timeout.
 */
int kiln_db_query(struct kiln_db *db, kiln_arena *a, const char *sql,
                  const kiln_str *params, size_t nparams, struct kiln_db_rows *rows);
int kiln_db_query_timeout(struct kiln_db *db, kiln_arena *a, const char *sql,
                          const kiln_str *params, size_t nparams,
                          struct kiln_db_rows *rows, unsigned timeout_ms);
/* Statements with no parameters and no rows (DDL, BEGIN, COMMIT). On a
 * pool, one statement per call (pipelined statements use the extended
 * protocol, which takes one at a time). */
int kiln_db_exec(struct kiln_db *db, const char *sql);

int kiln_db_begin(struct kiln_db *db);
/* A transaction that reads before it writes: on SQLite BEGIN IMMEDIATE,
 * which takes the write lock first (waiting out the busy timeout), since a
 * deferred one that read first and then meets another writer fails at
 * once with SQLITE_BUSY instead of waiting; on PostgreSQL BEGIN. */
int kiln_db_begin_write(struct kiln_db *db);
int kiln_db_commit(struct kiln_db *db);
int kiln_db_rollback(struct kiln_db *db);

/* SELECT 1 within timeout_ms; for health checks. */
int kiln_db_ping(struct kiln_db *db, unsigned timeout_ms);

/* Last error text for logs (never the password, never parameters), or "". */
const char *kiln_db_last_error(const struct kiln_db *db);
/* db's last error becomes from's (work done on another's connection for
 * db's caller: its error is reported as its own). */
void kiln_db_copy_error(struct kiln_db *db, const struct kiln_db *from);

/* Typed getters. Return false for NULL or a value that does not parse. */
kiln_str kiln_db_text(const struct kiln_db_rows *r, size_t row, size_t col);
bool kiln_db_is_null(const struct kiln_db_rows *r, size_t row, size_t col);
bool kiln_db_int64(const struct kiln_db_rows *r, size_t row, size_t col, int64_t *out);
bool kiln_db_bool(const struct kiln_db_rows *r, size_t row, size_t col, bool *out);
/* Microseconds since the epoch, from PostgreSQL's timestamptz text
 * ("2026-02-13 17:54:34.599935+00") or ISO 8601 ("…T…Z"), as SQLite stores. */
bool kiln_db_timestamp(const struct kiln_db_rows *r, size_t row, size_t col, int64_t *out);

#endif
