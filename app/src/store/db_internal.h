/*
 * Private to the db drivers: the handle and the vtable each driver fills.
 * db.c owns the lazy connect, the reconnect backoff and parameter checks;
 * a driver only connects, disconnects and runs one statement.
 */
#ifndef KILN_STORE_DB_INTERNAL_H
#define KILN_STORE_DB_INTERNAL_H

#include "store/db.h"

struct kiln_db;

struct kiln_db_ops {
    const char *name;
    /* 0 or an error within timeout_ms; on error db->err says why. */
    int (*connect)(struct kiln_db *db, unsigned timeout_ms);
    void (*disconnect)(struct kiln_db *db);
    /* One statement with text parameters (already checked, NUL-terminated). */
    int (*query)(struct kiln_db *db, kiln_arena *a, const char *sql, const char *const *params,
                 size_t nparams, struct kiln_db_rows *rows, unsigned timeout_ms);
    /* Several statements, no parameters, no rows (migrations, BEGIN). */
    int (*exec)(struct kiln_db *db, const char *sql, unsigned timeout_ms);
    /*
     * Optional (NULL: pools lend whole connections instead). One statement
     * on a pool member shared by many fibers of its loop: queued behind the
     * others' on the connection (pipelined) and awaited on the calling
     * fiber. The member is connected; a failure of the connection fails
     * every statement in flight on it and disconnects it.
     */
    int (*pipe_query)(struct kiln_db *db, kiln_arena *a, const char *sql,
                      const char *const *params, size_t nparams, struct kiln_db_rows *rows,
                      unsigned timeout_ms);
    /* Optional: free a pool member's pipeline state (after disconnect). */
    void (*pipe_free)(struct kiln_db *db);
};

#define KILN_DB_STMT_CACHE 32

struct kiln_db {
    const struct kiln_db_config *cfg;
    const struct kiln_db_ops *ops;
    void *conn;                  /* PGconn * or sqlite3 *; NULL when not connected */
    uint64_t retry_at_ms;        /* no connect attempt before this (backoff) */
    unsigned backoff_ms;
    unsigned long failed_version;  /* credentials_version at the failure */
    char err[512];
    /* Statement cache (PostgreSQL names when prepared_statements is on;
     * sqlite3_stmt pointers for SQLite), keyed by the SQL text's hash. */
    struct {
        uint64_t hash;
        char *sql;
        void *stmt;
    } cache[KILN_DB_STMT_CACHE];
    unsigned cache_next;
    struct kiln_fdwatch *watch;  /* PostgreSQL: the socket's watcher on a fiber */
    void *pipe;                  /* PostgreSQL pool member: the pipeline's state */
    unsigned inflight;           /* pool member: pipelined statements in flight */
    bool connecting;             /* pool member: a fiber is connecting it */
    struct pool_waiter *connect_waiters; /* pool member: fibers waiting for that */

    /* A pool (kiln_db_pool_open) lends members; a member knows its lender. */
    struct kiln_db **members;
    unsigned nmembers;
    struct pool_waiter *waiters, **waiters_tail;
    struct kiln_db *pool;        /* member: the pool it belongs to */
    uint64_t stmt_ns;            /* pool: a pipelined statement's cost (EWMA) */
    uint64_t cost_acc_ns;        /* pool: busy time since the last fold */
    unsigned cost_n;             /* pool: statements answered in it */
    uint64_t busy_since_ns;      /* member: last answer, or the first send */
    struct kiln_fiber *holder;   /* member: the fiber borrowing it */
    /* member, unpipelined: came free for this waiting fiber, which takes
     * it before anyone else (no fiber waits forever behind newcomers) */
    struct kiln_fiber *reserved;
    bool in_transaction;         /* member: held from BEGIN to COMMIT/ROLLBACK */
};

/* Set db->err (printf-style). */
void kiln__db_error(struct kiln_db *db, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A pipelined statement was sent on member m (after inflight++), or one
 * was answered (after inflight--): how the pool measures a statement's
 * cost (db.c, depth_limit). */
void kiln__db_pipe_sent(struct kiln_db *m);
void kiln__db_pipe_done(struct kiln_db *m);
/* Member m has nothing in flight any more (answered, or failed: its
 * connection dropped): unpipelined, a fiber waiting for a member may go. */
void kiln__db_pipe_idle(struct kiln_db *m, bool failed);

extern const struct kiln_db_ops kiln__db_pg_ops;
extern const struct kiln_db_ops kiln__db_sqlite_ops;

#endif
