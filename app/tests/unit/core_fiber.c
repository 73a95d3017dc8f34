/*
 * Unit tests for app/src/core/fiber.c and the store handles that a loop's
 * fibers share: the PostgreSQL pool in pipeline mode (store/db.c,
 * store/db_pg.c) and the pipelined Valkey handle (store/kv_valkey.c).
 *
 * Every test runs a real libuv loop on this thread. The store tests need the
 * real services (KILN_TEST_PG_URL, KILN_TEST_REDIS_PORT, as `make test`
 * sets them) and are skipped without them. Each ends by closing what it
 * opened and checking that uv_loop_close succeeds: a handle left open by a
 * fiber or a store is a leak this catches.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "test_util.h"

#include "core/arena.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/random.h"
#include "store/db.h"
#include "store/kv.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* ---- a loop with a scheduler, run until every fiber is done ---- */

struct rig {
    uv_loop_t loop;
    struct kiln_fibers *fibers;
    unsigned started, finished;
};

static struct rig *rig_new(void)
{
    struct rig *r = calloc(1, sizeof *r);
    assert_int_equal(uv_loop_init(&r->loop), 0);
    r->loop.data = r;
    r->fibers = kiln_fibers_new(&r->loop, 0);
    return r;
}

static void on_fiber_done(void *arg)
{
    struct rig *r = arg;
    if (++r->finished == r->started)
        uv_stop(&r->loop);
}

/* Spawn fn(arg); the rig counts it until it returns. */
static void rig_spawn(struct rig *r, void (*fn)(void *), void *arg);

struct job {
    struct rig *rig;
    void (*fn)(void *);
    void *arg;
};

static void job_run(void *p)
{
    struct job *j = p;
    j->fn(j->arg);
}

static void job_done(void *p)
{
    struct job *j = p;
    struct rig *r = j->rig;
    free(j);
    on_fiber_done(r);
}

static void rig_spawn(struct rig *r, void (*fn)(void *), void *arg)
{
    struct job *j = malloc(sizeof *j);
    *j = (struct job){ r, fn, arg };
    r->started++;
    if (kiln_fiber_spawn(r->fibers, job_run, job_done, j)) {
        free(j);
        r->finished++;
    }
}

/* Run until every spawned fiber returned (or 20 s: a hang fails). */
static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("fibers still running after 20 s");
}

static void rig_run(struct rig *r)
{
    uv_timer_t dog;
    uv_timer_init(&r->loop, &dog);
    uv_unref((uv_handle_t *)&dog);
    uv_timer_start(&dog, on_watchdog, 20000, 0);
    while (r->finished < r->started)
        uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(kiln_fibers_alive(r->fibers), 0);
    uv_close((uv_handle_t *)&dog, NULL);
    uv_run(&r->loop, UV_RUN_NOWAIT);
}

/* Close the scheduler, let libuv finish every close, insist nothing is
 * left open. */
static void rig_free(struct rig *r)
{
    kiln_fibers_free(r->fibers);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    free(r);
}

static void on_sleep_timer(uv_timer_t *t)
{
    kiln_fiber_wake(t->data);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* Park the calling fiber for ms. */
static void fiber_sleep(unsigned ms)
{
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(kiln_fiber_loop(), t);
    t->data = kiln_fiber_self();
    uv_timer_start(t, on_sleep_timer, ms, 0);
    kiln_fiber_park();
}

/* ---- the scheduler ---- */

static int trace[16];
static int ntrace;

static void no_wait(void *arg)
{
    assert_non_null(kiln_fiber_self());
    trace[ntrace++] = *(int *)arg;
}

static void test_spawn_that_never_waits_finishes_at_once(void **state)
{
    (void)state;
    struct rig *r = rig_new();
    int one = 1;
    ntrace = 0;
    assert_null(kiln_fiber_self());
    rig_spawn(r, no_wait, &one);
    /* It ran inside the spawn call, and the rig counted it finished. */
    assert_int_equal(ntrace, 1);
    assert_int_equal(r->finished, 1);
    assert_int_equal(kiln_fibers_alive(r->fibers), 0);
    assert_null(kiln_fiber_self());
    rig_free(r);
}

static void sleeper(void *arg)
{
    int ms = *(int *)arg;
    char big[32 * 1024]; /* some real stack use on every fiber */
    memset(big, ms, sizeof big);
    fiber_sleep((unsigned)ms);
    assert_int_equal((unsigned char)big[sizeof big - 1], (unsigned char)ms);
    trace[ntrace++] = ms;
}

static void test_parked_fibers_resume_when_woken(void **state)
{
    (void)state;
    struct rig *r = rig_new();
    static int ms[] = { 60, 20, 40 };
    ntrace = 0;
    for (size_t i = 0; i < ARRAY_LEN(ms); i++)
        rig_spawn(r, sleeper, &ms[i]);
    assert_int_equal(ntrace, 0);
    assert_int_equal(kiln_fibers_alive(r->fibers), 3);
    rig_run(r);
    assert_int_equal(ntrace, 3);
    assert_int_equal(trace[0], 20);
    assert_int_equal(trace[1], 40);
    assert_int_equal(trace[2], 60);
    /* Finished fibers are reused: another round works the same. */
    ntrace = 0;
    for (size_t i = 0; i < ARRAY_LEN(ms); i++)
        rig_spawn(r, sleeper, &ms[i]);
    rig_run(r);
    assert_int_equal(ntrace, 3);
    rig_free(r);
}

static void many(void *arg)
{
    (void)arg;
    fiber_sleep(1 + (unsigned)(kiln_now_ms() % 5));
}

static void test_thousands_of_fibers(void **state)
{
    (void)state;
    struct rig *r = rig_new();
    for (int i = 0; i < 3000; i++)
        rig_spawn(r, many, NULL);
    assert_int_equal(kiln_fibers_alive(r->fibers), 3000);
    rig_run(r);
    rig_free(r);
}

/* ---- kiln_wait_fd ---- */

struct waitcase {
    int fd;
    short events;
    unsigned deadline_ms;
    int rc;
    uint64_t took;
};

static void waiter(void *arg)
{
    struct waitcase *w = arg;
    struct kiln_fdwatch *watch = NULL;
    uint64_t start = kiln_now_ms();
    w->rc = kiln_wait_fd(&watch, w->fd, w->events, start + w->deadline_ms);
    w->took = kiln_now_ms() - start;
    kiln_fdwatch_close(&watch);
}

static void on_write_later(uv_timer_t *t)
{
    int fd = *(int *)t->data;
    assert_int_equal(write(fd, "x", 1), 1);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_wait_fd_on_a_fiber_and_off_one(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct rig *r = rig_new();

    /* Nothing to read: the deadline passes. */
    struct waitcase quiet = { sv[0], POLLIN, 80, -1, 0 };
    rig_spawn(r, waiter, &quiet);
    rig_run(r);
    assert_int_equal(quiet.rc, KILN_ETIMEDOUT);
    assert_true(quiet.took >= 70 && quiet.took < 2000);

    /* Data arrives while the fiber is parked: it wakes at once. */
    struct waitcase data = { sv[0], POLLIN, 5000, -1, 0 };
    uv_timer_t later;
    uv_timer_init(&r->loop, &later);
    later.data = &sv[1];
    uv_timer_start(&later, on_write_later, 50, 0);
    rig_spawn(r, waiter, &data);
    rig_run(r);
    assert_int_equal(data.rc, 0);
    assert_true(data.took < 2000);

    /* Writable at once. */
    struct waitcase out = { sv[1], POLLOUT, 1000, -1, 0 };
    rig_spawn(r, waiter, &out);
    rig_run(r);
    assert_int_equal(out.rc, 0);

    /* Off a fiber, poll() does the waiting. */
    struct kiln_fdwatch *none = NULL;
    assert_int_equal(kiln_wait_fd(&none, sv[0], POLLIN, kiln_now_ms() + 1000), 0);
    assert_null(none);
    char c;
    assert_int_equal(read(sv[0], &c, 1), 1);
    assert_int_equal(kiln_wait_fd(&none, sv[0], POLLIN, kiln_now_ms() + 30), KILN_ETIMEDOUT);

    rig_free(r);
    close(sv[0]);
    close(sv[1]);
}

/* ---- PostgreSQL: a pool shared by fibers, pipelined ---- */

static struct kiln_db_config pg_cfg(bool prepared)
{
    return (struct kiln_db_config){ KILN_DB_POSTGRES, env("KILN_TEST_PG_URL"), NULL,
                                    prepared, 5, 5000, NULL, NULL, NULL, NULL, false };
}

static struct kiln_db_config pgbouncer_cfg(void)
{
    /* Unpipelined, as kiln runs through a transaction-mode pooler
     * (DB_PIPELINE=false; store/db.c, pick). */
    return (struct kiln_db_config){ KILN_DB_POSTGRES, env("KILN_TEST_PGBOUNCER_URL"), NULL,
                                    false, 5, 5000, NULL, NULL, NULL, NULL, true };
}

struct pgcase {
    struct kiln_db *db;
    int n;
    int rc;
    int64_t got;
    char table[64];
};

static void double_it(void *arg)
{
    struct pgcase *c = arg;
    kiln_arena *a = kiln_arena_new(1024);
    char v[16];
    snprintf(v, sizeof v, "%d", c->n);
    kiln_str p[] = { kiln_str_c(v) };
    struct kiln_db_rows rows;
    /* Every seventh one is broken SQL: its error must stay its own. */
    const char *sql = c->n % 7 == 3 ? "SELEC $1::int" : "SELECT $1::int * 2";
    c->rc = kiln_db_query(c->db, a, sql, p, 1, &rows);
    if (c->rc == 0 && rows.nrows == 1)
        kiln_db_int64(&rows, 0, 0, &c->got);
    kiln_arena_free(a);
}

static void run_pipelined(struct kiln_db_config cfg)
{
    struct rig *r = rig_new();
    struct kiln_db *db = kiln_db_pool_open(&cfg, 2);
    enum { N = 400 };
    struct pgcase *cases = calloc(N, sizeof *cases);
    for (int i = 0; i < N; i++) {
        cases[i] = (struct pgcase){ .db = db, .n = i, .rc = -1 };
        rig_spawn(r, double_it, &cases[i]);
    }
    rig_run(r);
    for (int i = 0; i < N; i++) {
        if (i % 7 == 3) {
            if (cases[i].rc != KILN_EDB)
                fail_msg("statement %d: rc %s, want KILN_EDB", i, kiln_err_name(cases[i].rc));
        } else if (cases[i].rc != 0 || cases[i].got != 2 * i) {
            fail_msg("statement %d: rc %s, got %lld, want %d", i, kiln_err_name(cases[i].rc),
                     (long long)cases[i].got, 2 * i);
        }
    }
    free(cases);
    kiln_db_close(db);
    rig_free(r);
}

static void test_pg_pool_pipelines_many_fibers(void **state)
{
    (void)state;
    if (!env("KILN_TEST_PG_URL"))
        skip();
    run_pipelined(pg_cfg(false));
    run_pipelined(pg_cfg(true));
    /* Through pgbouncer in transaction mode, unpipelined: 400 fibers
     * share 2 connections one statement at a time, each answer its own. */
    if (env("KILN_TEST_PGBOUNCER_URL"))
        run_pipelined(pgbouncer_cfg());
}

struct bigcase {
    struct kiln_db *db;
    int rc;
    int64_t got;
};

static char big_text[40000];

static void measure_big(void *arg)
{
    struct bigcase *c = arg;
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str p[] = { { big_text, sizeof big_text - 1 } };
    struct kiln_db_rows rows;
    c->rc = kiln_db_query(c->db, a, "SELECT length($1::text) FROM pg_sleep(0.001)", p, 1, &rows);
    if (c->rc == 0 && rows.nrows == 1)
        kiln_db_int64(&rows, 0, 0, &c->got);
    kiln_arena_free(a);
}

/*
 * Unpipelined through pgbouncer: 200 fibers, 2 connections, statements
 * larger than pgbouncer's 4 KiB packet buffer (they reach it over several
 * reads) that each take a while: every fiber waits its turn for a free
 * connection and gets its own answer. (Pipelined, pgbouncer 1.18 can hand
 * the server to another client at one statement's ReadyForQuery while
 * the next one's Sync is unread; test_events.py's large PATCHes showed it,
 * docs/ARCHITECTURE.md, Poolers.)
 */
static void test_pg_pool_unpipelined_large_statements_through_pgbouncer(void **state)
{
    (void)state;
    if (!env("KILN_TEST_PGBOUNCER_URL"))
        skip();
    memset(big_text, 'x', sizeof big_text - 1);
    struct kiln_db_config cfg = pgbouncer_cfg();
    struct rig *r = rig_new();
    struct kiln_db *db = kiln_db_pool_open(&cfg, 2);
    enum { N = 200 };
    struct bigcase *cases = calloc(N, sizeof *cases);
    for (int i = 0; i < N; i++) {
        cases[i] = (struct bigcase){ .db = db, .rc = -1 };
        rig_spawn(r, measure_big, &cases[i]);
    }
    rig_run(r);
    for (int i = 0; i < N; i++)
        if (cases[i].rc != 0 || cases[i].got != (int64_t)sizeof big_text - 1)
            fail_msg("statement %d: rc %s (%s), got %lld", i, kiln_err_name(cases[i].rc),
                     kiln_db_last_error(db), (long long)cases[i].got);
    free(cases);
    kiln_db_close(db);
    rig_free(r);
}

struct txcase {
    struct kiln_db *db;
    const char *table;
    int64_t seen_inside_other;   /* count another fiber saw mid-transaction */
    int64_t seen_after;
    int rc;
    bool commit;
    uint64_t done_at;
};

static int64_t count_rows(struct kiln_db *db, const char *table)
{
    kiln_arena *a = kiln_arena_new(1024);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    struct kiln_db_rows rows;
    int64_t n = -1;
    if (kiln_db_query(db, a, sql, NULL, 0, &rows) == 0)
        kiln_db_int64(&rows, 0, 0, &n);
    kiln_arena_free(a);
    return n;
}

static void writer(void *arg)
{
    struct txcase *t = arg;
    kiln_arena *a = kiln_arena_new(1024);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (v) VALUES ($1)", t->table);
    kiln_str p[] = { KILN_STR("x") };
    int rc = kiln_db_begin(t->db);
    if (!rc)
        rc = kiln_db_query(t->db, a, sql, p, 1, NULL);
    fiber_sleep(100); /* others run now, on the same pool */
    if (!rc)
        rc = t->commit ? kiln_db_commit(t->db) : kiln_db_rollback(t->db);
    t->rc = rc;
    t->done_at = kiln_now_ms();
    kiln_arena_free(a);
}

static void reader(void *arg)
{
    struct txcase *t = arg;
    fiber_sleep(30); /* the writer is inside its transaction by now */
    t->seen_inside_other = count_rows(t->db, t->table);
    t->done_at = kiln_now_ms();
}

static void test_pg_pool_keeps_transactions_to_their_fiber(void **state)
{
    (void)state;
    if (!env("KILN_TEST_PG_URL"))
        skip();
    struct kiln_db_config cfg = pg_cfg(false);
    struct rig *r = rig_new();
    /* One connection: the reader must wait for the writer's transaction;
     * two: it must use the other one. */
    struct kiln_db *db = kiln_db_pool_open(&cfg, 1);
    struct kiln_db *db2 = kiln_db_pool_open(&cfg, 2);
    struct kiln_db *plain = kiln_db_open(&cfg);
    unsigned char rnd[4];
    kiln_random_bytes(rnd, sizeof rnd);
    char table[64], sql[160];
    snprintf(table, sizeof table, "fiber_tx_%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (v text)", table);
    assert_int_equal(kiln_db_exec(plain, sql), 0);

    for (int round = 0; round < 4; round++) {
        bool commit = round % 2 == 1, one_connection = round < 2;
        struct kiln_db *pool = one_connection ? db : db2;
        int64_t before = count_rows(plain, table);
        struct txcase w = { .db = pool, .table = table, .commit = commit, .rc = -1 };
        struct txcase rd = { .db = pool, .table = table };
        rig_spawn(r, writer, &w);
        rig_spawn(r, reader, &rd);
        rig_run(r);
        assert_int_equal(w.rc, 0);
        assert_int_equal(count_rows(plain, table), before + (commit ? 1 : 0));
        if (one_connection) {
            /* The reader waited for the writer's transaction to end: it
             * never ran inside it. */
            assert_true(rd.done_at >= w.done_at);
            assert_int_equal(rd.seen_inside_other, before + (commit ? 1 : 0));
        } else {
            /* The reader ran meanwhile, on the other connection, and saw
             * no uncommitted row. */
            assert_true(rd.done_at < w.done_at);
            assert_int_equal(rd.seen_inside_other, before);
        }
    }

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    assert_int_equal(kiln_db_exec(plain, sql), 0);
    kiln_db_close(plain);
    kiln_db_close(db);
    kiln_db_close(db2);
    rig_free(r);
}

struct pingcase {
    struct kiln_db *db;
    int rc;
};

static void pinger(void *arg)
{
    struct pingcase *c = arg;
    c->rc = kiln_db_ping(c->db, 2000);
}

static void test_pg_pool_unreachable_fails_every_fiber_fast(void **state)
{
    (void)state;
    /* Port 1: refused at once. */
    struct kiln_db_config cfg = { KILN_DB_POSTGRES,
                                  "postgresql://kiln@127.0.0.1:1/kiln?connect_timeout=2", NULL,
                                  false, 2, 2000, NULL, NULL, NULL, NULL, false };
    struct rig *r = rig_new();
    struct kiln_db *db = kiln_db_pool_open(&cfg, 2);
    struct pingcase c[20];
    uint64_t start = kiln_now_ms();
    for (size_t i = 0; i < ARRAY_LEN(c); i++) {
        c[i] = (struct pingcase){ db, -1 };
        rig_spawn(r, pinger, &c[i]);
    }
    rig_run(r);
    for (size_t i = 0; i < ARRAY_LEN(c); i++)
        assert_int_equal(c[i].rc, KILN_EUNAVAILABLE);
    assert_true(kiln_now_ms() - start < 1500);
    assert_non_null(strstr(kiln_db_last_error(db), "postgres"));
    kiln_db_close(db);
    rig_free(r);
}

/* ---- Valkey: one pipelined connection for every fiber ---- */

struct kvcase {
    struct kiln_kv *kv;
    int n;
    int rc;
    char prefix[32];
};

static void kv_work(void *arg)
{
    struct kvcase *c = arg;
    kiln_arena *a = kiln_arena_new(1024);
    char key[96], val[64];
    snprintf(key, sizeof key, "%s:%d", c->prefix, c->n);
    snprintf(val, sizeof val, "value-%d", c->n);
    kiln_str got;
    int64_t count = 0;
    c->rc = kiln_kv_set(c->kv, kiln_str_c(key), kiln_str_c(val), 60000);
    if (!c->rc)
        c->rc = kiln_kv_get(c->kv, a, kiln_str_c(key), &got);
    if (!c->rc && !kiln_str_eq_c(got, val))
        c->rc = KILN_EPROTO; /* someone else's reply */
    snprintf(key, sizeof key, "%s:count", c->prefix);
    if (!c->rc)
        c->rc = kiln_kv_incr(c->kv, kiln_str_c(key), 60000, &count, NULL);
    if (!c->rc && (count < 1 || count > 1000))
        c->rc = KILN_EPROTO;
    /* A set add is a MULTI ... EXEC of its own: the pipeline must not let
     * another fiber's commands in between. */
    bool added = false;
    snprintf(key, sizeof key, "%s:set", c->prefix);
    if (!c->rc)
        c->rc = kiln_kv_sadd(c->kv, kiln_str_c(key), kiln_str_c(val), 60000, &added);
    if (!c->rc && !added)
        c->rc = KILN_EPROTO;
    kiln_arena_free(a);
}

static void kv_count(void *arg)
{
    struct kvcase *c = arg;
    kiln_arena *a = kiln_arena_new(256);
    char key[96];
    kiln_str got;
    snprintf(key, sizeof key, "%s:count", c->prefix);
    c->rc = kiln_kv_get(c->kv, a, kiln_str_c(key), &got);
    c->n = c->rc ? -1 : atoi(got.p);
    kiln_str *members = NULL;
    size_t n = 0;
    snprintf(key, sizeof key, "%s:set", c->prefix);
    if (!c->rc)
        c->rc = kiln_kv_smembers(c->kv, a, kiln_str_c(key), KILN_KV_SET_LIST_MAX, &members, &n);
    if (!c->rc && n != (size_t)c->n)
        c->rc = KILN_EPROTO; /* every fiber's member, once */
    kiln_arena_free(a);
}

static void run_kv_shared(const struct kiln_kv_config *cfg)
{
    struct rig *r = rig_new();
    struct kiln_kv_store *store = kiln_kv_store_new(cfg);
    struct kiln_kv *kv = kiln_kv_open_shared(store);
    enum { N = 300 };
    struct kvcase *cases = calloc(N, sizeof *cases);
    unsigned char rnd[4];
    kiln_random_bytes(rnd, sizeof rnd);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "fibertest:%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    for (int i = 0; i < N; i++) {
        cases[i] = (struct kvcase){ .kv = kv, .n = i, .rc = -1 };
        snprintf(cases[i].prefix, sizeof cases[i].prefix, "%s", prefix);
        rig_spawn(r, kv_work, &cases[i]);
    }
    rig_run(r);
    for (int i = 0; i < N; i++)
        if (cases[i].rc != 0)
            fail_msg("%s fiber %d: %s (%s)", kiln_kv_driver(store), i,
                     kiln_err_name(cases[i].rc), kiln_kv_last_error(kv));
    struct kvcase total = { .kv = kv };
    snprintf(total.prefix, sizeof total.prefix, "%s", prefix);
    rig_spawn(r, kv_count, &total);
    rig_run(r);
    assert_int_equal(total.rc, 0);
    assert_int_equal(total.n, N); /* every INCR counted once */
    free(cases);
    kiln_kv_close(kv);
    kiln_kv_store_free(store);
    rig_free(r);
}

static void test_kv_shared_handle_pipelines_many_fibers(void **state)
{
    (void)state;
    struct kiln_kv_config mem = { .max_keys = 100000 };
    run_kv_shared(&mem);
    if (!env("KILN_TEST_REDIS_PORT"))
        skip();
    struct kiln_kv_config cfg = {
        .host = env("KILN_TEST_REDIS_HOST") ? env("KILN_TEST_REDIS_HOST") : "127.0.0.1",
        .port = (unsigned)atoi(env("KILN_TEST_REDIS_PORT")),
    };
    run_kv_shared(&cfg);
    if (env("KILN_TEST_REDIS_TLS_PORT") && env("KILN_TEST_REDIS_PASSWORD") &&
        env("KILN_TEST_REDIS_CA")) {
        struct kiln_kv_config tls = cfg;
        tls.port = (unsigned)atoi(env("KILN_TEST_REDIS_TLS_PORT"));
        tls.user = env("KILN_TEST_REDIS_USER");
        tls.password = env("KILN_TEST_REDIS_PASSWORD");
        tls.tls = true;
        tls.ca_file = env("KILN_TEST_REDIS_CA");
        run_kv_shared(&tls);
    }
}

struct kvping {
    struct kiln_kv *kv;
    int rc;
};

static void kv_pinger(void *arg)
{
    struct kvping *c = arg;
    c->rc = kiln_kv_ping(c->kv, 2000);
}

static void test_kv_shared_handle_unreachable(void **state)
{
    (void)state;
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = 1 };
    struct rig *r = rig_new();
    struct kiln_kv_store *store = kiln_kv_store_new(&cfg);
    struct kiln_kv *kv = kiln_kv_open_shared(store);
    struct kvping c[20];
    for (size_t i = 0; i < ARRAY_LEN(c); i++) {
        c[i] = (struct kvping){ kv, -1 };
        rig_spawn(r, kv_pinger, &c[i]);
    }
    rig_run(r);
    for (size_t i = 0; i < ARRAY_LEN(c); i++)
        assert_int_equal(c[i].rc, KILN_EUNAVAILABLE);
    assert_non_null(strstr(kiln_kv_last_error(kv), "connect"));
    kiln_kv_close(kv);
    kiln_kv_store_free(store);
    rig_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_that_never_waits_finishes_at_once),
        cmocka_unit_test(test_parked_fibers_resume_when_woken),
        cmocka_unit_test(test_thousands_of_fibers),
        cmocka_unit_test(test_wait_fd_on_a_fiber_and_off_one),
        cmocka_unit_test(test_pg_pool_pipelines_many_fibers),
        cmocka_unit_test(test_pg_pool_unpipelined_large_statements_through_pgbouncer),
        cmocka_unit_test(test_pg_pool_keeps_transactions_to_their_fiber),
        cmocka_unit_test(test_pg_pool_unreachable_fails_every_fiber_fast),
        cmocka_unit_test(test_kv_shared_handle_pipelines_many_fibers),
        cmocka_unit_test(test_kv_shared_handle_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
