/*
 * Unit tests for app/src/store/db*.c and migrate.c: one table of behaviour
 * run against every database available. SQLite always (a fresh file in a
 * temporary folder); PostgreSQL when KILN_TEST_PG_URL is set and the same
 * through pgbouncer (transaction mode) when KILN_TEST_PGBOUNCER_URL is set
 * (scripts/test-services.sh provides both). Each PostgreSQL run works in
 * tables with a random suffix, so runs never collide.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

#include "core/arena.h"
#include "core/err.h"
#include "core/random.h"
#include "store/db.h"
#include "store/migrate.h"

struct target {
    const char *name;
    struct kiln_db_config cfg;
    char suffix[16];
    char tmpdir[64];
};

static struct target targets[4];
static size_t ntargets;

static void add_sqlite(void)
{
    struct target *t = &targets[ntargets++];
    t->name = "sqlite";
    snprintf(t->tmpdir, sizeof t->tmpdir, "/tmp/kiln-db-test-XXXXXX");
    if (!mkdtemp(t->tmpdir))
        abort();
    /* A nested folder: the driver creates missing folders. */
    char *path = malloc(128);
    snprintf(path, 128, "%s/nested/kiln.db", t->tmpdir);
    t->cfg = (struct kiln_db_config){ KILN_DB_SQLITE, NULL, path, false, 5, 5000, NULL, NULL, NULL, NULL, false };
}

static void add_pg(const char *name, const char *env, bool prepared)
{
    const char *url = getenv(env);
    if (!url || !*url)
        return;
    struct target *t = &targets[ntargets++];
    t->name = name;
    t->cfg = (struct kiln_db_config){ KILN_DB_POSTGRES, url, NULL, prepared, 5, 5000, NULL, NULL, NULL, NULL, false };
}

static void suffix(struct target *t)
{
    unsigned char r[4];
    kiln_random_bytes(r, sizeof r);
    snprintf(t->suffix, sizeof t->suffix, "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
}

/* printf into a static buffer: table names carry the run's suffix. */
static const char *sqlf(const char *fmt, const char *sfx)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, fmt, sfx, sfx, sfx);
    return buf;
}

#define CHECK(call, want)                                                                 \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != (want))                                                                \
            fail_msg("%s: %s = %s (%s), want %s", t->name, #call, kiln_err_name(rc_),      \
                     kiln_db_last_error(db), kiln_err_name(want));                        \
    } while (0)

static void test_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < ntargets; i++) {
        struct target *t = &targets[i];
        struct kiln_db *db = kiln_db_open(&t->cfg);
        kiln_arena *a = kiln_arena_new(4096);
        struct kiln_db_rows rows;
        suffix(t);
        CHECK(kiln_db_exec(db, sqlf("CREATE TABLE t_%s (id INTEGER PRIMARY KEY, v TEXT, "
                                    "flag BOOLEAN)", t->suffix)), 0);
        /* Values that break naive SQL building; all travel as parameters. */
        size_t big_len = 1024 * 1024;
        char *big = malloc(big_len);
        for (size_t k = 0; k < big_len; k++)
            big[k] = (char)('a' + k % 26);
        const kiln_str values[] = {
            KILN_STR("plain"), KILN_STR("it's \"quoted\""), KILN_STR("'; DROP TABLE x; --"),
            KILN_STR("back\\slash $1 ?"), KILN_STR("ünïcødé ✓ 𝄞"), KILN_STR(""),
            { big, big_len },
        };
        for (size_t k = 0; k < ARRAY_LEN(values); k++) {
            char id[16];
            snprintf(id, sizeof id, "%zu", k + 1);
            kiln_str p[3] = { kiln_str_c(id), values[k], KILN_STR("true") };
            CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v, flag) VALUES ($1, $2, $3)",
                                            t->suffix), p, 3, &rows), 0);
            assert_int_equal(rows.affected, 1);
            CHECK(kiln_db_query(db, a, sqlf("SELECT v, flag, id FROM t_%s WHERE id = $1",
                                            t->suffix), p, 1, &rows), 0);
            assert_int_equal(rows.nrows, 1);
            kiln_str got = kiln_db_text(&rows, 0, 0);
            if (got.len != values[k].len || memcmp(got.p, values[k].p, got.len) != 0)
                fail_msg("%s: value %zu did not come back byte for byte (%zu vs %zu bytes)",
                         t->name, k, got.len, values[k].len);
            bool flag = false;
            int64_t idv = 0;
            assert_true(kiln_db_bool(&rows, 0, 1, &flag));
            assert_true(flag);
            assert_true(kiln_db_int64(&rows, 0, 2, &idv));
            assert_int_equal(idv, (int64_t)k + 1);
        }
        free(big);

        /* NULL in, NULL out. */
        kiln_str pn[2] = { KILN_STR("100"), KILN_STR_NULL };
        CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v) VALUES ($1, $2)", t->suffix),
                            pn, 2, NULL), 0);
        CHECK(kiln_db_query(db, a, sqlf("SELECT v FROM t_%s WHERE id = $1", t->suffix), pn, 1,
                            &rows), 0);
        assert_true(kiln_db_is_null(&rows, 0, 0));

        /* NUL bytes and invalid UTF-8 are refused, not truncated or mangled. */
        kiln_str bad[] = { { "a\0b", 3 }, KILN_STR("\xff\xfe"), KILN_STR("\xc0\xaf"),
                           KILN_STR("\xed\xa0\x80") };
        for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
            kiln_str p[2] = { KILN_STR("200"), bad[k] };
            CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v) VALUES ($1, $2)",
                                            t->suffix), p, 2, NULL), KILN_EINVAL);
        }

        /* Unique violation → ECONFLICT; the connection stays usable. */
        kiln_str dup[2] = { KILN_STR("1"), KILN_STR("again") };
        CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v) VALUES ($1, $2)", t->suffix),
                            dup, 2, NULL), KILN_ECONFLICT);
        /* Bad SQL → EDB, also without killing the connection. */
        CHECK(kiln_db_query(db, a, "SELEC nonsense", NULL, 0, NULL), KILN_EDB);
        CHECK(kiln_db_ping(db, 2000), 0);

        /* Transactions: rollback undoes, commit keeps. */
        kiln_str tx[2] = { KILN_STR("300"), KILN_STR("tx") };
        CHECK(kiln_db_begin(db), 0);
        CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v) VALUES ($1, $2)", t->suffix),
                            tx, 2, NULL), 0);
        CHECK(kiln_db_rollback(db), 0);
        CHECK(kiln_db_query(db, a, sqlf("SELECT count(*) FROM t_%s WHERE id = $1", t->suffix),
                            tx, 1, &rows), 0);
        assert_kstr_eq_in(t->name, kiln_db_text(&rows, 0, 0), "0");
        CHECK(kiln_db_begin(db), 0);
        CHECK(kiln_db_query(db, a, sqlf("INSERT INTO t_%s (id, v) VALUES ($1, $2)", t->suffix),
                            tx, 2, NULL), 0);
        CHECK(kiln_db_commit(db), 0);
        CHECK(kiln_db_query(db, a, sqlf("SELECT count(*) FROM t_%s WHERE id = $1", t->suffix),
                            tx, 1, &rows), 0);
        assert_kstr_eq_in(t->name, kiln_db_text(&rows, 0, 0), "1");

        CHECK(kiln_db_exec(db, sqlf("DROP TABLE t_%s", t->suffix)), 0);
        kiln_arena_free(a);
        kiln_db_close(db);
    }
}

static void test_timestamp_getter(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool ok;
        int64_t us;
    } cases[] = {
        { "1970-01-01 00:00:00+00", true, 0 },
        { "2026-02-13 17:54:34.599935+00", true, 1771005274599935 },
        { "2026-02-13T17:54:34.599935Z", true, 1771005274599935 },
        { "2026-02-13T17:54:34.5Z", true, 1771005274500000 },
        { "2026-02-13 18:54:34.599935+01", true, 1771005274599935 },
        { "2026-02-13 12:24:34.599935-05:30", true, 1771005274599935 },
        { "2026-02-13 17:54:34", true, 1771005274000000 },
        { "2026-13-13 17:54:34Z", false, 0 },
        { "2026-02-13", false, 0 },
        { "2026-02-13 17:54:34Zjunk", false, 0 },
        { "", false, 0 },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        kiln_str cell = kiln_str_c(cases[i].text);
        struct kiln_db_rows rows = { 1, 1, &cell, NULL, 0 };
        int64_t us = -1;
        bool ok = kiln_db_timestamp(&rows, 0, 0, &us);
        if (ok != cases[i].ok || (ok && us != cases[i].us))
            fail_msg("\"%s\": ok=%d us=%lld, want ok=%d us=%lld", cases[i].text, ok,
                     (long long)us, cases[i].ok, (long long)cases[i].us);
    }
    kiln_str null_cell = KILN_STR_NULL;
    struct kiln_db_rows rows = { 1, 1, &null_cell, NULL, 0 };
    int64_t v;
    assert_false(kiln_db_timestamp(&rows, 0, 0, &v));
    assert_false(kiln_db_int64(&rows, 0, 0, &v));
    assert_false(kiln_db_int64(&rows, 5, 0, &v)); /* out of range row */
}

static void test_server_timestamps_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < ntargets; i++) {
        struct target *t = &targets[i];
        struct kiln_db *db = kiln_db_open(&t->cfg);
        kiln_arena *a = kiln_arena_new(4096);
        struct kiln_db_rows rows;
        const char *sql = t->cfg.dialect == KILN_DB_POSTGRES
                              ? "SELECT now()"
                              : "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
        CHECK(kiln_db_query(db, a, sql, NULL, 0, &rows), 0);
        int64_t us = 0;
        if (!kiln_db_timestamp(&rows, 0, 0, &us))
            fail_msg("%s: cannot parse the server's timestamp \"%s\"", t->name,
                     kiln_db_text(&rows, 0, 0).p);
        assert_true(us > 1700000000000000ll);
        kiln_arena_free(a);
        kiln_db_close(db);
    }
}

/* Migrations of a private list, so tests do not touch the real schema. */
static struct kiln_migration test_migrations[2];
static char mig_sql[2][256];
static char mig_ver[2][64];

static void make_migrations(const struct target *t)
{
    snprintf(mig_ver[0], sizeof mig_ver[0], "0001_m_%s", t->suffix);
    snprintf(mig_ver[1], sizeof mig_ver[1], "0002_m_%s", t->suffix);
    snprintf(mig_sql[0], sizeof mig_sql[0], "CREATE TABLE m1_%s (id INTEGER); "
             "CREATE TABLE m1b_%s (id INTEGER);", t->suffix, t->suffix);
    snprintf(mig_sql[1], sizeof mig_sql[1], "CREATE TABLE m2_%s (id INTEGER);", t->suffix);
    for (int i = 0; i < 2; i++)
        test_migrations[i] = (struct kiln_migration){ mig_ver[i], mig_sql[i], strlen(mig_sql[i]) };
}

struct racer {
    struct target *t;
    int rc;
    size_t applied;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct kiln_db *db = kiln_db_open(&r->t->cfg);
    char err[512];
    r->rc = kiln_migrate_list(db, test_migrations, 2, NULL, NULL, &r->applied, err, sizeof err);
    if (r->rc)
        fprintf(stderr, "racer: %s\n", err);
    kiln_db_close(db);
    return NULL;
}

static void test_migrations_apply_once(void **state)
{
    (void)state;
    for (size_t i = 0; i < ntargets; i++) {
        struct target *t = &targets[i];
        suffix(t);
        make_migrations(t);
        /* Five at once (SQLite's BEGIN IMMEDIATE waits on busy_timeout;
         * PostgreSQL's advisory lock serializes them). */
        struct racer r[5];
        pthread_t th[5];
        for (int k = 0; k < 5; k++) {
            r[k] = (struct racer){ t, -1, 0 };
            pthread_create(&th[k], NULL, race, &r[k]);
        }
        size_t total = 0;
        for (int k = 0; k < 5; k++) {
            pthread_join(th[k], NULL);
            if (r[k].rc != 0)
                fail_msg("%s: racer %d failed: %s", t->name, k, kiln_err_name(r[k].rc));
            total += r[k].applied;
        }
        if (total != 2)
            fail_msg("%s: %zu migrations applied in all, want exactly 2", t->name, total);

        struct kiln_db *db = kiln_db_open(&t->cfg);
        kiln_arena *a = kiln_arena_new(4096);
        struct kiln_db_rows rows;
        kiln_str p[1] = { kiln_str_c(mig_ver[0]) };
        CHECK(kiln_db_query(db, a, "SELECT count(*) FROM schema_migrations WHERE version = $1",
                            p, 1, &rows), 0);
        assert_kstr_eq_in(t->name, kiln_db_text(&rows, 0, 0), "1");

        /* An edited, applied migration is an error naming it. */
        char err[512];
        size_t applied = 9;
        snprintf(mig_sql[1], sizeof mig_sql[1], "CREATE TABLE m2_%s (id INTEGER, x TEXT);",
                 t->suffix);
        test_migrations[1].len = strlen(mig_sql[1]);
        CHECK(kiln_migrate_list(db, test_migrations, 2, NULL, NULL, &applied, err, sizeof err),
              KILN_ECONFLICT);
        assert_non_null(strstr(err, mig_ver[1]));
        assert_int_equal(applied, 0);

        /* A failing migration rolls back entirely: nothing recorded. */
        struct kiln_migration broken[1] = { { "0003_broken", "CREATE TABLE x (", 16 } };
        char ver3[64];
        snprintf(ver3, sizeof ver3, "0003_broken_%s", t->suffix);
        broken[0].version = ver3;
        CHECK(kiln_migrate_list(db, broken, 1, NULL, NULL, &applied, err, sizeof err), KILN_EDB);
        assert_non_null(strstr(err, ver3));
        kiln_str p3[1] = { kiln_str_c(ver3) };
        CHECK(kiln_db_query(db, a, "SELECT count(*) FROM schema_migrations WHERE version = $1",
                            p3, 1, &rows), 0);
        assert_kstr_eq_in(t->name, kiln_db_text(&rows, 0, 0), "0");

        CHECK(kiln_db_exec(db, sqlf("DROP TABLE m1_%s; DROP TABLE m1b_%s; DROP TABLE m2_%s",
                                    t->suffix)), 0);
        kiln_str vs[2] = { kiln_str_c(mig_ver[0]), kiln_str_c(mig_ver[1]) };
        CHECK(kiln_db_query(db, a, "DELETE FROM schema_migrations WHERE version IN ($1, $2)", vs,
                            2, NULL), 0);
        kiln_arena_free(a);
        kiln_db_close(db);
    }
}

static void test_real_schema(void **state)
{
    (void)state;
    /* The embedded migrations apply on a fresh SQLite file and give the
     * identities uniqueness the login flow relies on. */
    struct target *t = &targets[0];
    char path[128];
    snprintf(path, sizeof path, "%s/schema.db", t->tmpdir);
    struct kiln_db_config cfg = { KILN_DB_SQLITE, NULL, path, false, 5, 5000, NULL, NULL, NULL, NULL, false };
    struct kiln_db *db = kiln_db_open(&cfg);
    kiln_arena *a = kiln_arena_new(4096);
    char err[512];
    size_t applied = 0;
    CHECK(kiln_migrate(db, NULL, NULL, &applied, err, sizeof err), 0);
    assert_int_equal(applied, kiln__migrations_sqlite_count);
    CHECK(kiln_migrate(db, NULL, NULL, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 0);
    kiln_str u[2] = { KILN_STR("8d0c6a1e-0000-4000-8000-000000000001"), KILN_STR("a@b.c") };
    CHECK(kiln_db_query(db, a, "INSERT INTO users (id, email) VALUES ($1, $2)", u, 2, NULL), 0);
    kiln_str id1[4] = { KILN_STR("i1"), KILN_STR("google"), KILN_STR("sub-1"), u[0] };
    kiln_str id2[4] = { KILN_STR("i2"), KILN_STR("google"), KILN_STR("sub-1"), u[0] };
    const char *ins = "INSERT INTO identities (id, provider, subject, user_id) "
                      "VALUES ($1, $2, $3, $4)";
    CHECK(kiln_db_query(db, a, ins, id1, 4, NULL), 0);
    CHECK(kiln_db_query(db, a, ins, id2, 4, NULL), KILN_ECONFLICT);
    /* Foreign keys are on: an identity of no user is refused. */
    kiln_str id3[4] = { KILN_STR("i3"), KILN_STR("apple"), KILN_STR("sub-2"),
                        KILN_STR("no-such-user") };
    CHECK(kiln_db_query(db, a, ins, id3, 4, NULL), KILN_ECONFLICT);
    kiln_arena_free(a);
    kiln_db_close(db);
}

static void test_unreachable_postgres(void **state)
{
    (void)state;
    /* A closed port: fast EUNAVAILABLE, then backoff answers at once. */
    struct kiln_db_config cfg = { KILN_DB_POSTGRES,
                                  "postgresql://kiln:secret-pw@127.0.0.1:1/kiln", NULL, false,
                                  2, 2000, NULL, NULL, NULL, NULL, false };
    struct kiln_db *db = kiln_db_open(&cfg);
    struct target tt = { .name = "unreachable" };
    struct target *t = &tt;
    CHECK(kiln_db_ping(db, 2000), KILN_EUNAVAILABLE);
    assert_null(strstr(kiln_db_last_error(db), "secret-pw"));
    CHECK(kiln_db_ping(db, 2000), KILN_EUNAVAILABLE);
    kiln_db_close(db);
}

int main(void)
{
    add_sqlite();
    add_pg("postgres", "KILN_TEST_PG_URL", false);
    add_pg("postgres+prepared", "KILN_TEST_PG_URL", true);
    add_pg("pgbouncer", "KILN_TEST_PGBOUNCER_URL", false);
    if (ntargets == 1)
        printf("store_db: KILN_TEST_PG_URL not set: SQLite only\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_timestamp_getter),
        cmocka_unit_test(test_server_timestamps_parse),
        cmocka_unit_test(test_migrations_apply_once),
        cmocka_unit_test(test_real_schema),
        cmocka_unit_test(test_unreachable_postgres),
    };
    int rc = cmocka_run_group_tests_name("store/db", tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", targets[0].tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    free((char *)targets[0].cfg.path);
    return rc;
}
