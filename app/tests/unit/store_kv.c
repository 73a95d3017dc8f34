/*
 * Unit tests for app/src/store/kv*.c. One table of behaviour tests runs
 * against every driver this machine can reach, because callers must not be
 * able to tell the drivers apart:
 *   - memory, always;
 *   - valkey over plain TCP when KILN_TEST_REDIS_PORT is set;
 *   - valkey over TLS with a password when KILN_TEST_REDIS_TLS_PORT,
 *     KILN_TEST_REDIS_PASSWORD and KILN_TEST_REDIS_CA are set
 *     (KILN_TEST_REDIS_USER optional).
 * (KILN_TEST_REDIS_HOST, default 127.0.0.1, for both.) Every key carries a
 * random per-run prefix, and tests delete what they make or give it a TTL:
 * the server may be shared, so nothing is ever flushed.
 *
 * Then memory-only tests (eviction policy, reclaiming expired keys, threads)
 * and valkey-only failure tests, most against small fake servers started
 * here (a closed port, a server that never answers, one that hangs up, one
 * that speaks garbage), and a few that need the real ones.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#include "core/arena.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "store/kv.h"
#include "store/kv_internal.h"

#define assert_rc(got, want)                                                            \
    do {                                                                                \
        int g_ = (got), w_ = (want);                                                    \
        if (g_ != w_)                                                                   \
            fail_msg("%s = %s, want %s (last error: \"%s\")", #got, kiln_err_name(g_),  \
                     kiln_err_name(w_), kiln_kv_last_error(f->kv));                    \
    } while (0)

static char key_prefix[64];

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- drivers and fixtures ------------------------------------------------ */

struct driver {
    const char *name;
    const char *skip_reason;   /* non-NULL: the environment does not offer it */
    struct kiln_kv_config cfg;
};

static struct driver drivers[3];
static size_t ndrivers;

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static const char *redis_host(void)
{
    return env("KILN_TEST_REDIS_HOST") ? env("KILN_TEST_REDIS_HOST") : "127.0.0.1";
}

static void setup_drivers(void)
{
    struct driver *d = &drivers[ndrivers++];
    d->name = "memory";
    d->cfg.max_keys = 100000;

    d = &drivers[ndrivers++];
    d->name = "valkey-tcp";
    if (!env("KILN_TEST_REDIS_PORT")) {
        d->skip_reason = "KILN_TEST_REDIS_PORT not set";
    } else {
        d->cfg.host = redis_host();
        d->cfg.port = (unsigned)atoi(env("KILN_TEST_REDIS_PORT"));
        d->cfg.connect_timeout_ms = 1000;
        d->cfg.command_timeout_ms = 2000;
    }

    d = &drivers[ndrivers++];
    d->name = "valkey-tls";
    if (!env("KILN_TEST_REDIS_TLS_PORT") || !env("KILN_TEST_REDIS_PASSWORD") ||
        !env("KILN_TEST_REDIS_CA")) {
        d->skip_reason = "KILN_TEST_REDIS_TLS_PORT, _PASSWORD or _CA not set";
    } else {
        d->cfg.host = redis_host();
        d->cfg.port = (unsigned)atoi(env("KILN_TEST_REDIS_TLS_PORT"));
        d->cfg.tls = true;
        d->cfg.ca_file = env("KILN_TEST_REDIS_CA");
        d->cfg.user = env("KILN_TEST_REDIS_USER");
        d->cfg.password = env("KILN_TEST_REDIS_PASSWORD");
        d->cfg.connect_timeout_ms = 1000;
        d->cfg.command_timeout_ms = 2000;
    }
}

struct fixture {
    const struct driver *d;
    struct kiln_kv_store *store;
    struct kiln_kv *kv;
    kiln_arena *arena;
};

static int fixture_setup(void **state)
{
    const struct driver *d = *state;
    struct fixture *f = calloc(1, sizeof *f);
    f->d = d;
    f->arena = kiln_arena_new(4096);
    if (!d->skip_reason) {
        f->store = kiln_kv_store_new(&d->cfg);
        f->kv = kiln_kv_open(f->store);
    }
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    kiln_kv_close(f->kv);
    kiln_kv_store_free(f->store);
    kiln_arena_free(f->arena);
    free(f);
    return 0;
}

#define FIXTURE(state)                                                          \
    struct fixture *f = *(state);                                               \
    if (f->d->skip_reason) {                                                    \
        print_message("[  SKIP    ] %s: %s\n", f->d->name, f->d->skip_reason);  \
        skip();                                                                 \
    }

/* prefix + name, in the fixture's arena. */
static kiln_str key(struct fixture *f, const char *name)
{
    return kiln_str_c(kiln_arena_sprintf(f->arena, "%s%s", key_prefix, name));
}

static kiln_str key_bytes(struct fixture *f, const char *p, size_t n)
{
    size_t plen = strlen(key_prefix);
    char *k = kiln_arena_alloc(f->arena, plen + n);
    memcpy(k, key_prefix, plen);
    memcpy(k + plen, p, n);
    return (kiln_str){ k, plen + n };
}

static void del_key(struct fixture *f, kiln_str k)
{
    assert_rc(kiln_kv_del(f->kv, k, NULL), 0);
}

#define assert_value(f, k, want)                                                \
    do {                                                                        \
        kiln_str v_;                                                            \
        assert_rc(kiln_kv_get((f)->kv, (f)->arena, (k), &v_), 0);               \
        assert_kstr_eq(v_, (want));                                             \
    } while (0)

/* ---- the shared behaviour table ----------------------------------------- */

static void t_get_set(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "get_set");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("hello"), 0), 0);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), 0);
    assert_kstr_eq(v, "hello");
    assert_int_equal(v.p[v.len], '\0'); /* the convenience NUL */
    assert_string_equal(kiln_kv_last_error(f->kv), "");
    del_key(f, k);
}

static void t_overwrite(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "overwrite");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("first, longer value"), 0), 0);
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("second"), 0), 0);
    assert_value(f, k, "second");
    del_key(f, k);
}

static void t_binary(void **state)
{
    FIXTURE(state);
    static const char kb[] = "bin\0key\r\n";
    static const char vb[] = "\0v\0\xff\r\n$3\r\n*1\0";
    kiln_str k = key_bytes(f, kb, sizeof kb - 1);
    kiln_str other = key_bytes(f, kb, 3); /* "bin": must be a different key */
    assert_rc(kiln_kv_set(f->kv, k, (kiln_str){ vb, sizeof vb - 1 }, 0), 0);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), 0);
    assert_mem_eq(v.p, v.len, vb, sizeof vb - 1);
    assert_rc(kiln_kv_get(f->kv, f->arena, other, &v), KILN_ENOTFOUND);
    del_key(f, k);
}

static void t_empty_value(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "empty");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR(""), 0), 0);
    kiln_str v = KILN_STR("x");
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), 0);
    assert_non_null(v.p);
    assert_int_equal(v.len, 0);
    assert_int_equal(v.p[0], '\0');
    /* A NULL pointer with length 0 is an empty value too. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR_NULL, 0), 0);
    assert_value(f, k, "");
    del_key(f, k);
}

static void t_missing_key(void **state)
{
    FIXTURE(state);
    kiln_str v = KILN_STR("stale");
    assert_rc(kiln_kv_get(f->kv, f->arena, key(f, "never-set"), &v), KILN_ENOTFOUND);
    assert_null(v.p);
    assert_int_equal(v.len, 0);
}

static void t_ttl_expiry(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "ttl");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("soon gone"), 50), 0);
    assert_value(f, k, "soon gone");
    sleep_ms(120);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    /* Expired means absent for every operation, not only get. */
    assert_rc(kiln_kv_expire(f->kv, k, 1000), KILN_ENOTFOUND);
    bool deleted = true;
    assert_rc(kiln_kv_del(f->kv, k, &deleted), 0);
    assert_false(deleted);
}

/* Like Redis SET: a write without a TTL removes the old TTL. */
static void t_overwrite_clears_ttl(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "ttl_cleared");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("a"), 50), 0);
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("b"), 0), 0);
    sleep_ms(120);
    assert_value(f, k, "b");
    /* And a new TTL replaces the old one. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("c"), 60000), 0);
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("d"), 50), 0);
    sleep_ms(120);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
}

static void t_del(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "del");
    bool deleted = false;
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("v"), 0), 0);
    assert_rc(kiln_kv_del(f->kv, k, &deleted), 0);
    assert_true(deleted);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    deleted = true;
    assert_rc(kiln_kv_del(f->kv, k, &deleted), 0);
    assert_false(deleted);
    assert_rc(kiln_kv_del(f->kv, k, NULL), 0); /* NULL allowed */
}

static void t_expire_existing(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "expire");
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("v"), 0), 0);
    assert_rc(kiln_kv_expire(f->kv, k, 50), 0);
    assert_value(f, k, "v");
    sleep_ms(120);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    /* Extending a TTL (a rolling session) keeps the key alive. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("w"), 50), 0);
    assert_rc(kiln_kv_expire(f->kv, k, 60000), 0);
    sleep_ms(120);
    assert_value(f, k, "w");
    del_key(f, k);
}

static void t_expire_missing(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "expire_missing");
    assert_rc(kiln_kv_expire(f->kv, k, 1000), KILN_ENOTFOUND);
    /* 0 would mean "delete" to PEXPIRE and "no expiry" to us: refused. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("v"), 0), 0);
    assert_rc(kiln_kv_expire(f->kv, k, 0), KILN_EINVAL);
    assert_value(f, k, "v");
    del_key(f, k);
}

static void t_incr_sets_ttl(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "incr_ttl");
    int64_t n = 0;
    uint64_t left = 0, left2 = 0;
    assert_rc(kiln_kv_incr(f->kv, k, 10000, &n, &left), 0);
    assert_int_equal(n, 1);
    assert_in_range(left, 9000, 10000);
    sleep_ms(20);
    assert_rc(kiln_kv_incr(f->kv, k, 10000, &n, &left2), 0);
    assert_int_equal(n, 2);
    /* Kept, not renewed: a fixed window. */
    assert_in_range(left2, 8000, left - 10);
    assert_value(f, k, "2");
    /* NULL outputs are allowed. */
    assert_rc(kiln_kv_incr(f->kv, k, 10000, NULL, NULL), 0);
    assert_value(f, k, "3");
    del_key(f, k);
}

static void t_incr_window_expires(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "incr_window");
    int64_t n = 0;
    uint64_t left = 0;
    assert_rc(kiln_kv_incr(f->kv, k, 50, &n, &left), 0);
    assert_rc(kiln_kv_incr(f->kv, k, 50, &n, &left), 0);
    assert_int_equal(n, 2);
    sleep_ms(120);
    assert_rc(kiln_kv_incr(f->kv, k, 50, &n, &left), 0);
    assert_int_equal(n, 1);
    assert_in_range(left, 1, 50);
    del_key(f, k);
}

/* The TTL is set only when the increment creates the key. */
static void t_incr_existing_keys(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "incr_plain");
    int64_t n = 0;
    uint64_t left = 99;
    assert_rc(kiln_kv_incr(f->kv, k, 0, &n, &left), 0);
    assert_int_equal(n, 1);
    assert_int_equal(left, 0);
    /* An existing key without a TTL does not get one. */
    assert_rc(kiln_kv_incr(f->kv, k, 50, &n, &left), 0);
    assert_int_equal(n, 2);
    assert_int_equal(left, 0);
    sleep_ms(120);
    assert_value(f, k, "2");
    /* An existing key's TTL is kept, whatever the new one. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("-5"), 60000), 0);
    assert_rc(kiln_kv_incr(f->kv, k, 50, &n, &left), 0);
    assert_int_equal(n, -4);
    assert_in_range(left, 50000, 60000);
    del_key(f, k);
}

static void t_incr_not_integer(void **state)
{
    FIXTURE(state);
    /* What Redis's INCR refuses; the memory driver must agree. */
    static const char *const bad[] = {
        "abc", "", " 1", "1 ", "01", "+1", "1.5", "-0", "-", "0x10", "1e3",
        "99999999999999999999", "9223372036854775808", "-9223372036854775809",
    };
    kiln_str k = key(f, "incr_nan");
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        int64_t n = 42;
        assert_rc(kiln_kv_set(f->kv, k, kiln_str_c(bad[i]), 0), 0);
        int rc = kiln_kv_incr(f->kv, k, 50, &n, NULL);
        if (rc != KILN_EINVAL)
            fail_msg("incr on \"%s\": %s, want EINVAL", bad[i], kiln_err_name(rc));
        assert_true(strlen(kiln_kv_last_error(f->kv)) > 0);
        assert_value(f, k, bad[i]);
    }
    /* Untouched: the refused incr added no TTL either. */
    sleep_ms(120);
    assert_value(f, k, bad[ARRAY_LEN(bad) - 1]);
    /* A value with a NUL in it is not an integer either. */
    assert_rc(kiln_kv_set(f->kv, k, (kiln_str){ "1\0", 2 }, 0), 0);
    assert_rc(kiln_kv_incr(f->kv, k, 0, NULL, NULL), KILN_EINVAL);
    del_key(f, k);
}

static void t_incr_limits(void **state)
{
    FIXTURE(state);
    static const struct {
        const char *start;
        int rc;
        int64_t want;
    } cases[] = {
        { "0", 0, 1 },
        { "-1", 0, 0 },
        { "9223372036854775806", 0, INT64_MAX },
        { "9223372036854775807", KILN_EINVAL, 0 }, /* overflow */
        { "-9223372036854775808", 0, INT64_MIN + 1 },
    };
    kiln_str k = key(f, "incr_limits");
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int64_t n = 0;
        assert_rc(kiln_kv_set(f->kv, k, kiln_str_c(cases[i].start), 0), 0);
        int rc = kiln_kv_incr(f->kv, k, 0, &n, NULL);
        if (rc != cases[i].rc)
            fail_msg("incr on %s: %s, want %s", cases[i].start, kiln_err_name(rc),
                     kiln_err_name(cases[i].rc));
        if (rc == 0 && n != cases[i].want)
            fail_msg("incr on %s: %lld", cases[i].start, (long long)n);
    }
    assert_value(f, k, "-9223372036854775807");
    del_key(f, k);
}

/* Replace writes only over a live key (SET XX): a rolling session refresh
 * must never bring back a session deleted in the meantime. */
static void t_replace(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "replace");
    kiln_str v;
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("ghost"), 60000), KILN_ENOTFOUND);
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("first"), 50), 0);
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("second"), 60000), 0);
    /* The new TTL replaced the short one. */
    sleep_ms(120);
    assert_value(f, k, "second");
    /* Deleted: gone for good, whatever is replaced afterwards. */
    del_key(f, k);
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("third"), 60000), KILN_ENOTFOUND);
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    /* Expired counts as deleted. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("brief"), 50), 0);
    sleep_ms(120);
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("late"), 60000), KILN_ENOTFOUND);
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    /* Like SET: a replace without a TTL leaves none. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("a"), 50), 0);
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("b"), 0), 0);
    sleep_ms(120);
    assert_value(f, k, "b");
    del_key(f, k);
}

/* Take is get and delete in one step: single use. */
static void t_take(void **state)
{
    FIXTURE(state);
    static const char vb[] = "pending\0login\r\n";
    kiln_str k = key(f, "take");
    kiln_str v = KILN_STR("stale");
    assert_rc(kiln_kv_take(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    assert_null(v.p);
    assert_rc(kiln_kv_set(f->kv, k, (kiln_str){ vb, sizeof vb - 1 }, 60000), 0);
    assert_rc(kiln_kv_take(f->kv, f->arena, k, &v), 0);
    assert_mem_eq(v.p, v.len, vb, sizeof vb - 1);
    assert_int_equal(v.p[v.len], '\0');
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    assert_rc(kiln_kv_take(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
    /* An expired key is not taken. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("brief"), 50), 0);
    sleep_ms(120);
    assert_rc(kiln_kv_take(f->kv, f->arena, k, &v), KILN_ENOTFOUND);
}

/* Many handles race to take one key: exactly one gets it, every round. */
struct take_race {
    struct kiln_kv_store *store;
    kiln_str key;
    pthread_barrier_t start, done;
    atomic_int winners, errors;
    int rounds;
};

static void *take_racer(void *arg)
{
    struct take_race *r = arg;
    struct kiln_kv *kv = kiln_kv_open(r->store);
    kiln_arena *a = kiln_arena_new(1024);
    for (int i = 0; i < r->rounds; i++) {
        kiln_str v;
        pthread_barrier_wait(&r->start);
        int rc = kiln_kv_take(kv, a, r->key, &v);
        if (rc == 0)
            r->winners++;
        else if (rc != KILN_ENOTFOUND)
            r->errors++;
        kiln_arena_reset(a);
        pthread_barrier_wait(&r->done);
    }
    kiln_arena_free(a);
    kiln_kv_close(kv);
    return NULL;
}

static void t_take_races(void **state)
{
    FIXTURE(state);
    enum { THREADS = 6, ROUNDS = 40 };
    struct take_race r = { .store = f->store, .key = key(f, "take_race"), .rounds = ROUNDS };
    pthread_t t[THREADS];
    pthread_barrier_init(&r.start, NULL, THREADS + 1);
    pthread_barrier_init(&r.done, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, take_racer, &r), 0);
    for (int i = 0; i < ROUNDS; i++) {
        assert_rc(kiln_kv_set(f->kv, r.key, KILN_STR("once"), 60000), 0);
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.done);
        if (r.winners != i + 1)
            fail_msg("round %d: %d winners so far, want %d", i, (int)r.winners, i + 1);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.done);
    assert_int_equal(r.errors, 0);
}

static void t_ping(void **state)
{
    FIXTURE(state);
    assert_rc(kiln_kv_ping(f->kv, 1000), 0);
    assert_rc(kiln_kv_ping(f->kv, 0), 0);
}

static void t_large_value(void **state)
{
    FIXTURE(state);
    size_t n = 1 << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 251);
    kiln_str k = key(f, "large");
    assert_rc(kiln_kv_set(f->kv, k, (kiln_str){ big, n }, 60000), 0);
    kiln_str v;
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), 0);
    assert_int_equal(v.len, n);
    assert_memory_equal(v.p, big, n);
    /* The connection is still in step after a large reply. */
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("small"), 60000), 0);
    assert_value(f, k, "small");
    del_key(f, k);
    free(big);
}

static void t_many_keys(void **state)
{
    FIXTURE(state);
    enum { N = 1000 };
    char name[32], val[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "many:%d", i);
        snprintf(val, sizeof val, "value %d", i * 3);
        assert_rc(kiln_kv_set(f->kv, key(f, name), kiln_str_c(val), i % 2 ? 60000 : 0), 0);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "many:%d", i);
        snprintf(val, sizeof val, "value %d", i * 3);
        assert_value(f, key(f, name), val);
        kiln_arena_reset(f->arena);
    }
    for (int i = 0; i < N; i++) {
        bool deleted = false;
        snprintf(name, sizeof name, "many:%d", i);
        assert_rc(kiln_kv_del(f->kv, key(f, name), &deleted), 0);
        assert_true(deleted);
        kiln_arena_reset(f->arena);
    }
}

/* Limits are checked in kv.c, before either driver sees the call. */
static void t_argument_limits(void **state)
{
    FIXTURE(state);
    size_t n = KILN__KV_MAX_KEY + 1;
    char *big = calloc(1, n);
    kiln_str k = { big, n }, v;
    assert_rc(kiln_kv_set(f->kv, k, KILN_STR("v"), 0), KILN_EINVAL);
    assert_rc(kiln_kv_get(f->kv, f->arena, k, &v), KILN_EINVAL);
    assert_rc(kiln_kv_incr(f->kv, k, 0, NULL, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_replace(f->kv, k, KILN_STR("v"), 0), KILN_EINVAL);
    assert_rc(kiln_kv_take(f->kv, f->arena, k, &v), KILN_EINVAL);
    assert_rc(kiln_kv_set(f->kv, key(f, "limits"), KILN_STR("v"), KILN__KV_MAX_TTL_MS + 1),
              KILN_EINVAL);
    assert_rc(kiln_kv_replace(f->kv, key(f, "limits"), KILN_STR("v"), KILN__KV_MAX_TTL_MS + 1),
              KILN_EINVAL);
    assert_rc(kiln_kv_take(f->kv, NULL, key(f, "limits"), &v), KILN_EINVAL);
    assert_rc(kiln_kv_get(f->kv, NULL, key(f, "limits"), &v), KILN_EINVAL);
    assert_rc(kiln_kv_get(NULL, f->arena, key(f, "limits"), &v), KILN_EINVAL);
    free(big);
}

/* ---- sets ------------------------------------------------------------------- */

/* Is want among the n members? */
static bool has_member(const kiln_str *m, size_t n, kiln_str want)
{
    for (size_t i = 0; i < n; i++)
        if (kiln_str_eq(m[i], want))
            return true;
    return false;
}

static size_t set_size(struct fixture *f, kiln_str k)
{
    kiln_str *m = NULL;
    size_t n = 99;
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, KILN_KV_SET_LIST_MAX, &m, &n), 0);
    return n;
}

static void t_set_add_remove_list(void **state)
{
    FIXTURE(state);
    static const char bin[] = "nul\0inside";
    kiln_str k = key(f, "set");
    kiln_str a = KILN_STR("alpha"), b = KILN_STR("beta"), c = { bin, sizeof bin - 1 };
    kiln_str e = KILN_STR("");
    kiln_str *m = NULL;
    size_t n = 99, removed = 99;
    bool added = false;

    /* A missing set lists as empty and has nothing to remove. */
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 10, &m, &n), 0);
    assert_int_equal(n, 0);
    assert_rc(kiln_kv_srem(f->kv, k, &a, 1, &removed), 0);
    assert_int_equal(removed, 0);

    assert_rc(kiln_kv_sadd(f->kv, k, a, 60000, &added), 0);
    assert_true(added);
    assert_rc(kiln_kv_sadd(f->kv, k, a, 60000, &added), 0);
    assert_false(added); /* members are distinct */
    assert_rc(kiln_kv_sadd(f->kv, k, b, 60000, &added), 0);
    assert_rc(kiln_kv_sadd(f->kv, k, c, 60000, NULL), 0);
    assert_rc(kiln_kv_sadd(f->kv, k, e, 60000, &added), 0);
    assert_true(added);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 10, &m, &n), 0);
    assert_int_equal(n, 4);
    assert_true(has_member(m, n, a) && has_member(m, n, b) && has_member(m, n, c) &&
                has_member(m, n, e));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(m[i].p[m[i].len], '\0'); /* the convenience NUL */

    kiln_str gone[] = { a, c, KILN_STR("never there") };
    assert_rc(kiln_kv_srem(f->kv, k, gone, ARRAY_LEN(gone), &removed), 0);
    assert_int_equal(removed, 2);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 10, &m, &n), 0);
    assert_int_equal(n, 2);
    assert_true(has_member(m, n, b) && has_member(m, n, e));
    /* Removing none does nothing. */
    assert_rc(kiln_kv_srem(f->kv, k, NULL, 0, &removed), 0);
    assert_int_equal(removed, 0);

    /* The last member out takes the key with it, as on Valkey. */
    kiln_str rest[] = { b, e };
    assert_rc(kiln_kv_srem(f->kv, k, rest, 2, &removed), 0);
    assert_int_equal(removed, 2);
    bool deleted = true;
    assert_rc(kiln_kv_del(f->kv, k, &deleted), 0);
    assert_false(deleted);

    /* del deletes a whole set. */
    assert_rc(kiln_kv_sadd(f->kv, k, a, 60000, NULL), 0);
    assert_rc(kiln_kv_del(f->kv, k, &deleted), 0);
    assert_true(deleted);
    assert_int_equal(set_size(f, k), 0);
}

/* An index lives as long as the TTL its latest add gave it. */
static void t_set_ttl(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "set_ttl");
    assert_rc(kiln_kv_sadd(f->kv, k, KILN_STR("m1"), 50, NULL), 0);
    sleep_ms(120);
    assert_int_equal(set_size(f, k), 0);

    /* Each add with a TTL renews it, for the whole set. */
    assert_rc(kiln_kv_sadd(f->kv, k, KILN_STR("m1"), 50, NULL), 0);
    assert_rc(kiln_kv_sadd(f->kv, k, KILN_STR("m2"), 60000, NULL), 0);
    sleep_ms(120);
    assert_int_equal(set_size(f, k), 2);
    /* Re-adding a member renews it too. */
    assert_rc(kiln_kv_expire(f->kv, k, 50), 0);
    assert_rc(kiln_kv_sadd(f->kv, k, KILN_STR("m1"), 60000, NULL), 0);
    sleep_ms(120);
    assert_int_equal(set_size(f, k), 2);
    /* Without a TTL the add leaves the set's alone. */
    assert_rc(kiln_kv_expire(f->kv, k, 50), 0);
    assert_rc(kiln_kv_sadd(f->kv, k, KILN_STR("m3"), 0, NULL), 0);
    sleep_ms(120);
    assert_int_equal(set_size(f, k), 0);
    /* Expired, it is gone for every operation, as any key. */
    assert_rc(kiln_kv_expire(f->kv, k, 50), KILN_ENOTFOUND);
}

/* A listing never gives more than asked, and never twice the same. */
static void t_set_bounded_listing(void **state)
{
    FIXTURE(state);
    enum { N = 40 };
    kiln_str k = key(f, "set_bounded");
    char name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "member-%02d", i);
        assert_rc(kiln_kv_sadd(f->kv, k, kiln_str_c(name), 60000, NULL), 0);
    }
    kiln_str *m = NULL;
    size_t n = 0;
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 7, &m, &n), 0);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++) {
        assert_true(m[i].len == 9 && memcmp(m[i].p, "member-", 7) == 0);
        for (size_t j = 0; j < i; j++)
            assert_false(kiln_str_eq(m[i], m[j]));
    }
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 1, &m, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(set_size(f, k), N);

    /* A removal of the most members one call takes. */
    kiln_str *all = kiln_arena_alloc(f->arena, KILN_KV_SET_LIST_MAX * sizeof *all);
    for (size_t i = 0; i < KILN_KV_SET_LIST_MAX; i++) {
        snprintf(name, sizeof name, "member-%02zu", i);
        all[i] = kiln_str_c(kiln_arena_strndup(f->arena, name, strlen(name)));
    }
    size_t removed = 0;
    assert_rc(kiln_kv_srem(f->kv, k, all, KILN_KV_SET_LIST_MAX, &removed), 0);
    assert_int_equal(removed, N);
    assert_int_equal(set_size(f, k), 0);
}

/* A string where a set is wanted, or the reverse: KILN_EINVAL on both
 * drivers (Valkey's WRONGTYPE), and the handle works on. */
static void t_set_wrong_type(void **state)
{
    FIXTURE(state);
    kiln_str str = key(f, "wrongtype_string"), set = key(f, "wrongtype_set"), v;
    kiln_str m = KILN_STR("m");
    kiln_str *list = NULL;
    size_t n = 0;
    assert_rc(kiln_kv_set(f->kv, str, KILN_STR("text"), 60000), 0);
    assert_rc(kiln_kv_sadd(f->kv, set, m, 60000, NULL), 0);

    assert_rc(kiln_kv_sadd(f->kv, str, m, 0, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_srem(f->kv, str, &m, 1, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, str, 10, &list, &n), KILN_EINVAL);
    assert_rc(kiln_kv_get(f->kv, f->arena, set, &v), KILN_EINVAL);
    assert_rc(kiln_kv_take(f->kv, f->arena, set, &v), KILN_EINVAL);
    assert_rc(kiln_kv_incr(f->kv, set, 0, NULL, NULL), KILN_EINVAL);
    assert_value(f, str, "text");
    assert_int_equal(set_size(f, set), 1);

    /* A set replaced by a string, as SET does. */
    assert_rc(kiln_kv_set(f->kv, set, KILN_STR("now text"), 60000), 0);
    assert_value(f, set, "now text");
    del_key(f, str);
    del_key(f, set);
}

static void t_set_argument_limits(void **state)
{
    FIXTURE(state);
    kiln_str k = key(f, "set_limits");
    kiln_str *m = NULL;
    size_t n = 0;
    char *big = calloc(1, KILN__KV_MAX_KEY + 1);
    kiln_str huge = { big, KILN__KV_MAX_KEY + 1 }, one = KILN_STR("x");
    assert_rc(kiln_kv_sadd(f->kv, k, huge, 0, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_sadd(f->kv, huge, one, 0, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_sadd(f->kv, k, one, KILN__KV_MAX_TTL_MS + 1, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_srem(f->kv, k, &huge, 1, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_srem(f->kv, k, NULL, 1, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_srem(f->kv, k, &one, KILN_KV_SET_LIST_MAX + 1, NULL), KILN_EINVAL);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 0, &m, &n), KILN_EINVAL);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, KILN_KV_SET_LIST_MAX + 1, &m, &n),
              KILN_EINVAL);
    assert_rc(kiln_kv_smembers(f->kv, NULL, k, 1, &m, &n), KILN_EINVAL);
    assert_rc(kiln_kv_smembers(f->kv, f->arena, k, 1, NULL, &n), KILN_EINVAL);
    assert_int_equal(set_size(f, k), 0); /* nothing was written */
    free(big);
}

static const struct {
    const char *name;
    CMUnitTestFunction fn;
} shared_tests[] = {
    { "get_set", t_get_set },
    { "overwrite", t_overwrite },
    { "binary", t_binary },
    { "empty_value", t_empty_value },
    { "missing_key", t_missing_key },
    { "ttl_expiry", t_ttl_expiry },
    { "overwrite_clears_ttl", t_overwrite_clears_ttl },
    { "del", t_del },
    { "expire_existing", t_expire_existing },
    { "expire_missing", t_expire_missing },
    { "incr_sets_ttl", t_incr_sets_ttl },
    { "incr_window_expires", t_incr_window_expires },
    { "incr_existing_keys", t_incr_existing_keys },
    { "incr_not_integer", t_incr_not_integer },
    { "incr_limits", t_incr_limits },
    { "replace", t_replace },
    { "take", t_take },
    { "take_races", t_take_races },
    { "ping", t_ping },
    { "large_value", t_large_value },
    { "many_keys", t_many_keys },
    { "argument_limits", t_argument_limits },
    { "set_add_remove_list", t_set_add_remove_list },
    { "set_ttl", t_set_ttl },
    { "set_bounded_listing", t_set_bounded_listing },
    { "set_wrong_type", t_set_wrong_type },
    { "set_argument_limits", t_set_argument_limits },
};

/* ---- memory only ------------------------------------------------------------ */

static struct kiln_kv_store *memory_store(unsigned long max_keys)
{
    struct kiln_kv_config cfg = { .max_keys = max_keys };
    return kiln_kv_store_new(&cfg);
}

static size_t stored_keys(struct kiln_kv_store *s)
{
    struct kiln__kv_memory_stats st;
    kiln__kv_memory_stats(s, &st);
    return st.keys;
}

static bool has(struct kiln_kv *kv, kiln_arena *a, const char *k)
{
    kiln_str v;
    return kiln_kv_get(kv, a, kiln_str_c(k), &v) == 0;
}

/* Count the log lines written to fd since it was opened. */
static int count_lines(int fd, const char *needle)
{
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    int lines = 0;
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (char *p = buf; (p = strstr(p, needle)); p++)
        lines++;
    return lines;
}

static void t_mem_driver_choice(void **state)
{
    struct kiln_kv_store *s = kiln_kv_store_new(NULL);
    assert_string_equal(kiln_kv_driver(s), "memory");
    assert_true(kiln_kv_is_memory(s));
    kiln_kv_store_free(s);
    struct kiln_kv_config cfg = { .host = "" }; /* empty host: still memory */
    s = kiln_kv_store_new(&cfg);
    assert_true(kiln_kv_is_memory(s));
    kiln_kv_store_free(s);
    cfg.host = "127.0.0.1";
    s = kiln_kv_store_new(&cfg);
    assert_string_equal(kiln_kv_driver(s), "valkey");
    assert_false(kiln_kv_is_memory(s));
    kiln_kv_store_free(s);
    kiln_kv_store_free(NULL);
    kiln_kv_close(NULL);
}

/*
 * A set is one key towards max_keys however many members it has; it is
 * evicted, expired and swept like any other key, with all its members.
 */
static void t_mem_sets(void **state)
{
    struct kiln_kv_store *s = memory_store(3);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    FILE *log = tmpfile();
    kiln_log_set_fd(fileno(log));
    char name[16];
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "m%d", i);
        assert_int_equal(kiln_kv_sadd(kv, KILN_STR("big"), kiln_str_c(name), 60000, NULL), 0);
    }
    assert_int_equal(kiln_kv_set(kv, KILN_STR("s"), KILN_STR("1"), 0), 0);
    assert_int_equal(stored_keys(s), 2);
    /* Removing members one by one keeps the rest findable as the table
     * changes under them. */
    for (int i = 0; i < 500; i += 2) {
        snprintf(name, sizeof name, "m%d", i);
        kiln_str m = kiln_str_c(name);
        size_t removed = 0;
        assert_int_equal(kiln_kv_srem(kv, KILN_STR("big"), &m, 1, &removed), 0);
        assert_int_equal(removed, 1);
    }
    kiln_str *list = NULL;
    size_t n = 0;
    assert_int_equal(kiln_kv_smembers(kv, a, KILN_STR("big"), KILN_KV_SET_LIST_MAX, &list, &n),
                     0);
    assert_int_equal(n, 250);
    for (size_t i = 0; i < n; i++)
        assert_true(list[i].p[0] == 'm' && atoi(list[i].p + 1) % 2 == 1);
    /* A full store evicts the set that expires soonest, members and all. */
    assert_int_equal(kiln_kv_sadd(kv, KILN_STR("small"), KILN_STR("x"), 30000, NULL), 0);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("t"), KILN_STR("1"), 0), 0);
    assert_int_equal(stored_keys(s), 3);
    assert_int_equal(kiln_kv_smembers(kv, a, KILN_STR("small"), 10, &list, &n), 0);
    assert_int_equal(n, 0);
    /* And the sweep frees an expired one. */
    assert_int_equal(kiln_kv_expire(kv, KILN_STR("big"), 10), 0);
    sleep_ms(30);
    size_t freed = 0;
    assert_int_equal(kiln_kv_sweep(kv, &freed), 0);
    assert_int_equal(freed, 1);
    assert_int_equal(stored_keys(s), 2);
    assert_int_equal(count_lines(fileno(log), "kv memory store full"), 1);
    kiln_log_set_fd(1);
    fclose(log);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s); /* with the sets left in it: ASan checks */
}

/*
 * Full store: expired keys go first; then the key that expires soonest;
 * only when no key has a TTL, the least recently written one. One warning
 * line, however many evictions follow within the minute.
 */
static void t_mem_eviction_policy(void **state)
{
    struct kiln_kv_store *s = memory_store(4);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    FILE *log = tmpfile();
    kiln_log_set_fd(fileno(log));

    assert_int_equal(kiln_kv_set(kv, KILN_STR("a"), KILN_STR("1"), 0), 0);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("b"), KILN_STR("1"), 0), 0);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("late"), KILN_STR("1"), 60000), 0);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("soon"), KILN_STR("1"), 30000), 0);
    assert_int_equal(stored_keys(s), 4);
    /* Overwriting an existing key needs no room. */
    assert_int_equal(kiln_kv_set(kv, KILN_STR("a"), KILN_STR("2"), 0), 0);
    assert_int_equal(count_lines(fileno(log), "kv memory store full"), 0);

    assert_int_equal(kiln_kv_set(kv, KILN_STR("c"), KILN_STR("1"), 0), 0);
    assert_false(has(kv, a, "soon"));
    assert_true(has(kv, a, "late") && has(kv, a, "a") && has(kv, a, "b") && has(kv, a, "c"));
    assert_int_equal(count_lines(fileno(log), "kv memory store full"), 1);

    /* incr creating a key makes room the same way. */
    assert_int_equal(kiln_kv_incr(kv, KILN_STR("d"), 0, NULL, NULL), 0);
    assert_false(has(kv, a, "late"));
    /* No TTL left anywhere: the least recently written goes ("b": "a" was
     * rewritten after it). */
    assert_int_equal(kiln_kv_set(kv, KILN_STR("e"), KILN_STR("1"), 0), 0);
    assert_false(has(kv, a, "b"));
    assert_true(has(kv, a, "a") && has(kv, a, "c") && has(kv, a, "d") && has(kv, a, "e"));
    assert_int_equal(stored_keys(s), 4);

    /* An expired key is reclaimed before any live key is evicted. */
    assert_int_equal(kiln_kv_expire(kv, KILN_STR("c"), 10), 0);
    sleep_ms(30);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("f"), KILN_STR("1"), 0), 0);
    assert_true(has(kv, a, "a") && has(kv, a, "d") && has(kv, a, "e") && has(kv, a, "f"));

    struct kiln__kv_memory_stats st;
    kiln__kv_memory_stats(s, &st);
    assert_int_equal(st.evicted, 3);
    assert_int_equal(st.reclaimed, 1);
    assert_int_equal(count_lines(fileno(log), "kv memory store full"), 1); /* once a minute */

    kiln_log_set_fd(1);
    fclose(log);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

/* kiln_kv_sweep frees every expired entry at once, with no write passing
 * by (the sessions.sweep job on an idle instance), and leaves live ones. */
static void t_mem_sweep(void **state)
{
    struct kiln_kv_store *s = memory_store(5000);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    char key[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof key, "s%d", i);
        assert_int_equal(kiln_kv_set(kv, kiln_str_c(key), KILN_STR("x"), 10), 0);
    }
    assert_int_equal(kiln_kv_set(kv, KILN_STR("live"), KILN_STR("1"), 60000), 0);
    assert_int_equal(kiln_kv_set(kv, KILN_STR("forever"), KILN_STR("1"), 0), 0);
    sleep_ms(30);
    assert_int_equal(stored_keys(s), 3002);
    size_t freed = 0;
    assert_int_equal(kiln_kv_sweep(kv, &freed), 0);
    assert_int_equal(freed, 3000);
    assert_int_equal(stored_keys(s), 2);
    assert_true(has(kv, a, "live") && has(kv, a, "forever"));
    assert_int_equal(kiln_kv_sweep(kv, &freed), 0);
    assert_int_equal(freed, 0);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

static void t_mem_max_keys_one(void **state)
{
    struct kiln_kv_store *s = memory_store(1);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    kiln_log_set_fd(open("/dev/null", O_WRONLY));
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(kiln_kv_set(kv, kiln_str_c(k), KILN_STR("v"), i % 3 ? 1000 : 0), 0);
        assert_true(has(kv, a, k));
        assert_int_equal(stored_keys(s), 1);
    }
    kiln_log_set_fd(1);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

/* Expired keys nobody reads again are freed by later writes. */
static void t_mem_expired_reclaimed(void **state)
{
    struct kiln_kv_store *s = memory_store(100000);
    struct kiln_kv *kv = kiln_kv_open(s);
    char k[32];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "tmp:%d", i);
        assert_int_equal(kiln_kv_set(kv, kiln_str_c(k), KILN_STR("v"), 50), 0);
    }
    assert_int_equal(kiln_kv_set(kv, KILN_STR("keep"), KILN_STR("v"), 0), 0);
    assert_int_equal(stored_keys(s), 201);
    sleep_ms(120);
    /* Reads of other keys and time alone free nothing... */
    assert_int_equal(stored_keys(s), 201);
    /* ...each write reclaims a few, so a steady trickle of writes keeps up. */
    int writes = 0;
    while (stored_keys(s) > 1 && writes < 200) {
        assert_int_equal(kiln_kv_set(kv, KILN_STR("keep"), KILN_STR("v"), 0), 0);
        writes++;
    }
    assert_int_equal(stored_keys(s), 1);
    assert_in_range(writes, 2, 50);
    struct kiln__kv_memory_stats st;
    kiln__kv_memory_stats(s, &st);
    assert_int_equal(st.reclaimed, 200);
    assert_int_equal(st.evicted, 0);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

/* A full store of expired keys makes room from them: no live key is
 * evicted while an expired one is left. */
static void t_mem_full_store_reclaims_first(void **state)
{
    struct kiln_kv_store *s = memory_store(50);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    char k[32];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "tmp:%d", i);
        assert_int_equal(kiln_kv_set(kv, kiln_str_c(k), KILN_STR("v"), 50), 0);
    }
    sleep_ms(120);
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "new:%d", i);
        assert_int_equal(kiln_kv_incr(kv, kiln_str_c(k), 0, NULL, NULL), 0);
    }
    assert_int_equal(stored_keys(s), 50);
    struct kiln__kv_memory_stats st;
    kiln__kv_memory_stats(s, &st);
    assert_int_equal(st.evicted, 0);
    assert_int_equal(st.reclaimed, 50);
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "new:%d", i);
        assert_true(has(kv, a, k));
    }
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

struct incr_job {
    struct kiln_kv_store *s;
    int n;
};

static void *incr_thread(void *arg)
{
    struct incr_job *job = arg;
    struct kiln_kv *kv = kiln_kv_open(job->s);
    for (int i = 0; i < job->n; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i % 50);
        if (kiln_kv_incr(kv, KILN_STR("shared"), 60000, NULL, NULL) != 0 ||
            kiln_kv_set(kv, kiln_str_c(k), KILN_STR("v"), 1 + (uint64_t)(i % 3)) != 0)
            abort();
    }
    kiln_kv_close(kv);
    return NULL;
}

/* One store, one handle per thread, no lost updates. */
static void t_mem_threads(void **state)
{
    enum { THREADS = 4, N = 5000 };
    struct kiln_kv_store *s = memory_store(30);
    struct incr_job job = { s, N };
    pthread_t t[THREADS];
    kiln_log_set_fd(open("/dev/null", O_WRONLY));
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, incr_thread, &job), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    kiln_log_set_fd(1);
    struct kiln_kv *kv = kiln_kv_open(s);
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str v;
    /* Every other key expires within 3 ms, so "shared" (60 s) is never the
     * key that expires soonest, and outlives every eviction. */
    assert_int_equal(kiln_kv_get(kv, a, KILN_STR("shared"), &v), 0);
    assert_kstr_eq(v, "20000");
    assert_true(stored_keys(s) <= 30);
    kiln_arena_free(a);
    kiln_kv_close(kv);
    kiln_kv_store_free(s);
}

/* ---- valkey: fake servers --------------------------------------------------- */

struct fake {
    int lfd;
    unsigned port;
    pthread_t thread;
    atomic_bool stop;
    const char *reply;        /* sent for each read; NULL: never answer */
    bool hang_up;             /* close the connection after each reply */
    atomic_int accepted;
    char received[512];       /* the start of the last connection's bytes */
    atomic_size_t received_len;
};

static void *fake_main(void *arg)
{
    struct fake *fk = arg;
    while (!fk->stop) {
        struct pollfd p = { fk->lfd, POLLIN, 0 };
        if (poll(&p, 1, 10) <= 0)
            continue;
        int c = accept(fk->lfd, NULL, NULL);
        if (c < 0)
            continue;
        fk->accepted++;
        fk->received_len = 0;
        while (!fk->stop) {
            struct pollfd q = { c, POLLIN, 0 };
            if (poll(&q, 1, 10) <= 0)
                continue;
            char buf[4096];
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            size_t have = fk->received_len;
            size_t take = (size_t)n < sizeof fk->received - have ? (size_t)n
                                                                   : sizeof fk->received - have;
            memcpy(fk->received + have, buf, take);
            fk->received_len = have + take;
            if (!fk->reply)
                continue;
            if (send(c, fk->reply, strlen(fk->reply), MSG_NOSIGNAL) < 0 || fk->hang_up)
                break;
        }
        close(c);
    }
    return NULL;
}

/* Listen on 127.0.0.1:port (0: any) and serve in a thread. */
static void fake_start(struct fake *fk, unsigned port, const char *reply, bool hang_up)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    socklen_t len = sizeof sa;
    int one = 1;
    memset(fk, 0, sizeof *fk);
    fk->reply = reply;
    fk->hang_up = hang_up;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fk->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fk->lfd >= 0);
    setsockopt(fk->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(fk->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fk->lfd, 16), 0);
    getsockname(fk->lfd, (struct sockaddr *)&sa, &len);
    fk->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&fk->thread, NULL, fake_main, fk), 0);
}

static void fake_stop(struct fake *fk)
{
    fk->stop = true;
    pthread_join(fk->thread, NULL);
    close(fk->lfd);
}

/* A port nothing listens on (for a moment, at least). */
static unsigned closed_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

struct vfix {
    struct kiln_kv_store *store;
    struct kiln_kv *kv;
};

static void vopen(struct vfix *v, const struct kiln_kv_config *cfg)
{
    v->store = kiln_kv_store_new(cfg);
    v->kv = kiln_kv_open(v->store);
}

static void vclose(struct vfix *v)
{
    kiln_kv_close(v->kv);
    kiln_kv_store_free(v->store);
}

#define assert_err_contains(kv, needle)                                         \
    do {                                                                        \
        const char *err_ = kiln_kv_last_error(kv);                              \
        assert_contains(err_, strlen(err_), needle);                            \
    } while (0)

/* Connection refused fails fast; then backoff answers at once; a server
 * that appears (or comes back) is picked up after the backoff window. */
static void t_valkey_closed_port_backoff(void **state)
{
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = closed_port(),
                                  .connect_timeout_ms = 500, .command_timeout_ms = 500 };
    struct vfix v;
    struct fake fk;
    vopen(&v, &cfg);

    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    assert_true(kiln_now_ms() - t0 < 500);
    assert_err_contains(v.kv, "Connection refused");
    assert_err_contains(v.kv, "127.0.0.1:");
    t0 = kiln_now_ms();
    assert_int_equal(kiln_kv_set(v.kv, KILN_STR("k"), KILN_STR("v"), 0), KILN_EUNAVAILABLE);
    assert_true(kiln_now_ms() - t0 < 50);
    assert_err_contains(v.kv, "next attempt in");

    fake_start(&fk, cfg.port, "+PONG\r\n", false);
    sleep_ms(150); /* past the first backoff step (100 ms) */
    assert_int_equal(kiln_kv_ping(v.kv, 0), 0);
    assert_int_equal(kiln_kv_ping(v.kv, 0), 0);
    assert_int_equal(fk.accepted, 1); /* one connection, reused */

    /* The server restarts: the dead connection is noticed before use, and
     * the new server is picked up once reachable. */
    fake_stop(&fk);
    sleep_ms(20);
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    fake_start(&fk, cfg.port, "+PONG\r\n", false);
    sleep_ms(150);
    assert_int_equal(kiln_kv_ping(v.kv, 0), 0);
    fake_stop(&fk);
    vclose(&v);
}

/* Repeated failures double the backoff up to its cap. */
static void t_valkey_backoff_grows(void **state)
{
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = closed_port(),
                                  .connect_timeout_ms = 200, .command_timeout_ms = 200 };
    struct vfix v;
    vopen(&v, &cfg);
    unsigned waits[] = { 100, 200, 400 };
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    for (size_t i = 0; i < ARRAY_LEN(waits); i++) {
        sleep_ms(waits[i] / 2);
        assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
        assert_err_contains(v.kv, "next attempt in"); /* still inside the window */
        sleep_ms(waits[i] / 2 + 20);
        assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE); /* a real attempt */
        const char *e = kiln_kv_last_error(v.kv);
        assert_not_contains(e, strlen(e), "next attempt in");
    }
    vclose(&v);
}

static void t_valkey_command_timeout(void **state)
{
    struct fake fk;
    fake_start(&fk, 0, NULL, false); /* accepts, reads, never answers */
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = fk.port,
                                  .connect_timeout_ms = 1000, .command_timeout_ms = 200 };
    struct vfix v;
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str out;
    vopen(&v, &cfg);
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_kv_get(v.kv, a, KILN_STR("k"), &out), KILN_EUNAVAILABLE);
    uint64_t took = kiln_now_ms() - t0;
    assert_in_range(took, 190, 700);
    assert_err_contains(v.kv, "no reply within 200 ms");
    /* ping's own timeout bounds it too. */
    t0 = kiln_now_ms();
    assert_int_equal(kiln_kv_ping(v.kv, 100), KILN_EUNAVAILABLE);
    assert_in_range(kiln_now_ms() - t0, 90, 600);
    /* The command did reach the server, as RESP. */
    assert_true(fk.received_len > 0);
    assert_mem_eq(fk.received, 14, "*1\r\n$4\r\nPING\r\n", 14);
    fake_stop(&fk);
    kiln_arena_free(a);
    vclose(&v);
}

/* The server closes idle connections: the next command reconnects without
 * failing. */
static void t_valkey_server_hangs_up(void **state)
{
    struct fake fk;
    fake_start(&fk, 0, "+PONG\r\n", true);
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = fk.port,
                                  .connect_timeout_ms = 500, .command_timeout_ms = 500 };
    struct vfix v;
    vopen(&v, &cfg);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kiln_kv_ping(v.kv, 0), 0);
        sleep_ms(30);
    }
    assert_int_equal(fk.accepted, 3);
    fake_stop(&fk);
    vclose(&v);
}

static void t_valkey_bad_replies(void **state)
{
    static const struct {
        const char *reply;
        int rc;
    } cases[] = {
        { "hello\r\n", KILN_EPROTO },                   /* not RESP */
        { ":1\r\n", KILN_EPROTO },                      /* wrong type for PING */
        { "-ERR unknown command\r\n", KILN_EPROTO },
        { "-LOADING Redis is loading\r\n", KILN_EUNAVAILABLE },
        { "-READONLY You can't write against a read only replica.\r\n", KILN_EUNAVAILABLE },
        { "-NOAUTH Authentication required.\r\n", KILN_EAUTH },
        { "*2147483647\r\n", KILN_EPROTO },             /* no 16 GiB allocation */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct fake fk;
        fake_start(&fk, 0, cases[i].reply, false);
        struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = fk.port,
                                      .connect_timeout_ms = 500, .command_timeout_ms = 300 };
        struct vfix v;
        vopen(&v, &cfg);
        int rc = kiln_kv_ping(v.kv, 0);
        if (rc != cases[i].rc)
            fail_msg("reply \"%s\": %s, want %s (%s)", cases[i].reply, kiln_err_name(rc),
                     kiln_err_name(cases[i].rc), kiln_kv_last_error(v.kv));
        vclose(&v);
        fake_stop(&fk);
    }
}

/* Replies read from bytes, as the driver reads them (no socket). */
static size_t read_replies_from(const char *bytes, redisReply **out, size_t max)
{
    redisReader *r = kiln__kv_reader_new();
    size_t n = 0;
    assert_int_equal(redisReaderFeed(r, bytes, strlen(bytes)), REDIS_OK);
    while (n < max) {
        void *reply = NULL;
        if (redisReaderGetReply(r, &reply) != REDIS_OK || !reply)
            break;
        out[n++] = reply;
    }
    redisReaderFree(r);
    return n;
}

/* What the set commands' replies mean, and what they must not be taken
 * for: more members than asked, a transaction that did not run. */
static void t_valkey_set_replies(void **state)
{
    struct kiln_kv kv;
    kiln_arena *a = kiln_arena_new(1024);
    redisReply *r[5];
    kiln_str *m = NULL;
    size_t n = 0, removed = 0;
    bool added = false;
    memset(&kv, 0, sizeof kv);

    assert_int_equal(read_replies_from("*2\r\n$1\r\na\r\n$0\r\n\r\n", r, 5), 1);
    assert_int_equal(kiln__kv_reply_members(&kv, r[0], a, 2, &m, &n), 0);
    assert_int_equal(n, 2);
    assert_kstr_eq(m[0], "a");
    assert_kstr_eq(m[1], "");
    assert_int_equal(kiln__kv_reply_members(&kv, r[0], a, 1, &m, &n), KILN_EPROTO);
    freeReplyObject(r[0]);
    assert_int_equal(read_replies_from("*1\r\n:1\r\n", r, 5), 1);
    assert_int_equal(kiln__kv_reply_members(&kv, r[0], a, 5, &m, &n), KILN_EPROTO);
    freeReplyObject(r[0]);
    assert_int_equal(read_replies_from("-WRONGTYPE Operation against a key holding the wrong "
                                       "kind of value\r\n", r, 5), 1);
    assert_int_equal(kiln__kv_reply_members(&kv, r[0], a, 5, &m, &n), KILN_EINVAL);
    assert_int_equal(kiln__kv_reply_srem(&kv, r[0], &removed), KILN_EINVAL);
    freeReplyObject(r[0]);
    /* An array longer than any we ask for is refused by the reader itself. */
    char big[32];
    snprintf(big, sizeof big, "*%d\r\n", KILN_KV_SET_LIST_MAX + 1);
    assert_int_equal(read_replies_from(big, r, 5), 0);

    assert_int_equal(read_replies_from("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:1\r\n",
                                       r, 5), 4);
    assert_int_equal(kiln__kv_reply_sadd(&kv, r, 4, true, &added), 0);
    assert_true(added);
    assert_int_equal(kiln__kv_reply_sadd(&kv, r, 3, true, &added), KILN_EPROTO);
    for (int i = 0; i < 4; i++)
        freeReplyObject(r[i]);
    /* EXEC nil: the transaction was discarded, nothing was added. */
    assert_int_equal(read_replies_from("+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n", r, 5), 4);
    assert_int_equal(kiln__kv_reply_sadd(&kv, r, 4, true, &added), KILN_EPROTO);
    for (int i = 0; i < 4; i++)
        freeReplyObject(r[i]);
    /* SADD on a string inside the transaction: WRONGTYPE in EXEC's array. */
    assert_int_equal(read_replies_from("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-WRONGTYPE x\r\n"
                                       ":1\r\n", r, 5), 4);
    assert_int_equal(kiln__kv_reply_sadd(&kv, r, 4, true, &added), KILN_EINVAL);
    for (int i = 0; i < 4; i++)
        freeReplyObject(r[i]);
    assert_int_equal(read_replies_from(":0\r\n", r, 5), 1);
    assert_int_equal(kiln__kv_reply_sadd(&kv, r, 1, false, &added), 0);
    assert_false(added);
    assert_int_equal(kiln__kv_reply_srem(&kv, r[0], &removed), 0);
    assert_int_equal(removed, 0);
    freeReplyObject(r[0]);
    kiln_arena_free(a);
}

/* A server that echoes the password in its error: never in our text. */
static void t_valkey_auth_error_hides_password(void **state)
{
    static const char *const replies[] = {
        "-WRONGPASS invalid password 'hunter2-secret'\r\n",
        "-ERR hunter2-secret\r\n",
        "-ERR invalid password\r\n",
        "-ERR AUTH <password> called without any password configured\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(replies); i++) {
        struct fake fk;
        fake_start(&fk, 0, replies[i], false);
        struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = fk.port,
                                      .password = "hunter2-secret", .user = "kiln",
                                      .connect_timeout_ms = 500, .command_timeout_ms = 300 };
        struct vfix v;
        vopen(&v, &cfg);
        assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EAUTH);
        const char *e = kiln_kv_last_error(v.kv);
        assert_contains(e, strlen(e), "AUTH refused");
        assert_not_contains(e, strlen(e), "hunter2");
        /* The AUTH command carried user and password. */
        assert_contains(fk.received, fk.received_len, "$4\r\nkiln\r\n$14\r\nhunter2-secret");
        /* In backoff the code stays EAUTH, and the text stays clean. */
        assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EAUTH);
        e = kiln_kv_last_error(v.kv);
        assert_not_contains(e, strlen(e), "hunter2");
        vclose(&v);
        fake_stop(&fk);
    }
}

/* TLS to something that does not speak TLS: an error, not a hang or crash. */
static void t_valkey_tls_to_plain_server(void **state)
{
    struct fake fk;
    fake_start(&fk, 0, "-ERR Protocol error\r\n", true);
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = fk.port, .tls = true,
                                  .connect_timeout_ms = 500, .command_timeout_ms = 500 };
    struct vfix v;
    vopen(&v, &cfg);
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    assert_err_contains(v.kv, "TLS handshake");
    vclose(&v);
    fake_stop(&fk);
}

static void t_valkey_tls_bad_ca_file(void **state)
{
    struct kiln_kv_config cfg = { .host = "127.0.0.1", .port = closed_port(), .tls = true,
                                  .ca_file = "/nonexistent/ca.pem" };
    struct vfix v;
    int devnull = open("/dev/null", O_WRONLY);
    kiln_log_set_fd(devnull); /* the setup failure is logged once */
    vopen(&v, &cfg);
    kiln_log_set_fd(1);
    close(devnull);
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    assert_err_contains(v.kv, "cannot load the CA file /nonexistent/ca.pem");
    vclose(&v);
}

/* ---- valkey: against the real servers ---------------------------------------- */

#define NEED_ENV(...)                                                            \
    do {                                                                         \
        const char *vars_[] = { __VA_ARGS__ };                                   \
        for (size_t i_ = 0; i_ < ARRAY_LEN(vars_); i_++)                         \
            if (!env(vars_[i_])) {                                               \
                print_message("[  SKIP    ] %s not set\n", vars_[i_]);           \
                skip();                                                          \
            }                                                                    \
    } while (0)

static struct kiln_kv_config tls_config(void)
{
    struct kiln_kv_config cfg = {
        .host = redis_host(),
        .port = (unsigned)atoi(env("KILN_TEST_REDIS_TLS_PORT")),
        .tls = true,
        .ca_file = env("KILN_TEST_REDIS_CA"),
        .user = env("KILN_TEST_REDIS_USER"),
        .password = env("KILN_TEST_REDIS_PASSWORD"),
        .connect_timeout_ms = 1000,
        .command_timeout_ms = 1000,
    };
    return cfg;
}

static void t_valkey_wrong_password(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_TLS_PORT", "KILN_TEST_REDIS_PASSWORD", "KILN_TEST_REDIS_CA");
    struct kiln_kv_config cfg = tls_config();
    char wrong[128];
    snprintf(wrong, sizeof wrong, "not-%s-either", cfg.password);
    cfg.password = wrong;
    struct vfix v;
    vopen(&v, &cfg);
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EAUTH);
    const char *e = kiln_kv_last_error(v.kv);
    assert_contains(e, strlen(e), "AUTH refused");
    assert_not_contains(e, strlen(e), wrong);
    assert_not_contains(e, strlen(e), env("KILN_TEST_REDIS_PASSWORD"));
    vclose(&v);

    /* No password at all: the server's NOAUTH is an auth error too. */
    cfg = tls_config();
    cfg.password = NULL;
    cfg.user = NULL;
    vopen(&v, &cfg);
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str out;
    assert_int_equal(kiln_kv_get(v.kv, a, KILN_STR("k"), &out), KILN_EAUTH);
    kiln_arena_free(a);
    vclose(&v);
}

static void t_valkey_password_on_open_server(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_PORT");
    struct kiln_kv_config cfg = { .host = redis_host(),
                                  .port = (unsigned)atoi(env("KILN_TEST_REDIS_PORT")),
                                  .password = "unneeded-pw", .connect_timeout_ms = 1000,
                                  .command_timeout_ms = 1000 };
    struct vfix v;
    vopen(&v, &cfg);
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EAUTH);
    const char *e = kiln_kv_last_error(v.kv);
    assert_not_contains(e, strlen(e), "unneeded-pw");
    vclose(&v);
}

/* The system store does not trust the test CA: refused, and the reason
 * says so. */
static void t_valkey_tls_untrusted_cert(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_TLS_PORT", "KILN_TEST_REDIS_PASSWORD", "KILN_TEST_REDIS_CA");
    /* The system store, then a CA file of other CAs. */
    static const char *const cas[] = { NULL, "/etc/ssl/certs/ca-certificates.crt" };
    for (size_t i = 0; i < ARRAY_LEN(cas); i++) {
        if (cas[i] && access(cas[i], R_OK) != 0)
            continue;
        struct kiln_kv_config cfg = tls_config();
        cfg.ca_file = cas[i];
        struct vfix v;
        vopen(&v, &cfg);
        uint64_t t0 = kiln_now_ms();
        assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
        assert_true(kiln_now_ms() - t0 < 1000);
        assert_err_contains(v.kv, "certificate");
        vclose(&v);
    }
}

/* The certificate is trusted but names another host. */
static void t_valkey_tls_wrong_host(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_TLS_PORT", "KILN_TEST_REDIS_PASSWORD", "KILN_TEST_REDIS_CA");
    struct kiln_kv_config cfg = tls_config();
    /* 127.0.0.2 reaches the same loopback server (Linux routes 127/8), but
     * is not in the certificate. */
    if (strcmp(cfg.host, "127.0.0.1") != 0) {
        print_message("[  SKIP    ] needs KILN_TEST_REDIS_HOST=127.0.0.1\n");
        skip();
    }
    cfg.host = "127.0.0.2";
    struct vfix v;
    vopen(&v, &cfg);
    int rc = kiln_kv_ping(v.kv, 0);
    const char *e = kiln_kv_last_error(v.kv);
    if (rc == KILN_EUNAVAILABLE && strstr(e, "Connection refused")) {
        vclose(&v);
        print_message("[  SKIP    ] server bound to 127.0.0.1 only\n");
        skip();
    }
    assert_int_equal(rc, KILN_EUNAVAILABLE);
    assert_err_contains(v.kv, "certificate");
    vclose(&v);
}

static void t_valkey_plain_to_tls_port(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_TLS_PORT", "KILN_TEST_REDIS_PASSWORD", "KILN_TEST_REDIS_CA");
    struct kiln_kv_config cfg = tls_config();
    cfg.tls = false;
    struct vfix v;
    vopen(&v, &cfg);
    int rc = kiln_kv_ping(v.kv, 0);
    assert_true(rc == KILN_EUNAVAILABLE || rc == KILN_EPROTO);
    vclose(&v);
}

static void t_valkey_tls_to_plain_port(void **state)
{
    NEED_ENV("KILN_TEST_REDIS_PORT");
    struct kiln_kv_config cfg = { .host = redis_host(),
                                  .port = (unsigned)atoi(env("KILN_TEST_REDIS_PORT")),
                                  .tls = true, .connect_timeout_ms = 300,
                                  .command_timeout_ms = 300 };
    struct vfix v;
    vopen(&v, &cfg);
    /* Redis waits for the end of an inline command that never comes: the
     * handshake times out. */
    uint64_t t0 = kiln_now_ms();
    assert_int_equal(kiln_kv_ping(v.kv, 0), KILN_EUNAVAILABLE);
    assert_true(kiln_now_ms() - t0 < 1000);
    assert_err_contains(v.kv, "TLS");
    vclose(&v);
}

/* ---- main -------------------------------------------------------------------- */

int main(void)
{
    static const struct CMUnitTest own[] = {
        cmocka_unit_test(t_mem_driver_choice),
        cmocka_unit_test(t_mem_eviction_policy),
        cmocka_unit_test(t_mem_sets),
        cmocka_unit_test(t_mem_sweep),
        cmocka_unit_test(t_mem_max_keys_one),
        cmocka_unit_test(t_mem_expired_reclaimed),
        cmocka_unit_test(t_mem_full_store_reclaims_first),
        cmocka_unit_test(t_mem_threads),
        cmocka_unit_test(t_valkey_closed_port_backoff),
        cmocka_unit_test(t_valkey_backoff_grows),
        cmocka_unit_test(t_valkey_command_timeout),
        cmocka_unit_test(t_valkey_server_hangs_up),
        cmocka_unit_test(t_valkey_bad_replies),
        cmocka_unit_test(t_valkey_set_replies),
        cmocka_unit_test(t_valkey_auth_error_hides_password),
        cmocka_unit_test(t_valkey_tls_to_plain_server),
        cmocka_unit_test(t_valkey_tls_bad_ca_file),
        cmocka_unit_test(t_valkey_wrong_password),
        cmocka_unit_test(t_valkey_password_on_open_server),
        cmocka_unit_test(t_valkey_tls_untrusted_cert),
        cmocka_unit_test(t_valkey_tls_wrong_host),
        cmocka_unit_test(t_valkey_plain_to_tls_port),
        cmocka_unit_test(t_valkey_tls_to_plain_port),
    };
    unsigned char rnd[8];
    char hex[17];

    if (kiln_random_bytes(rnd, sizeof rnd) != 0)
        return 1;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    snprintf(key_prefix, sizeof key_prefix, "kiln-test:%s:", hex);
    setup_drivers();

    size_t nshared = ARRAY_LEN(shared_tests) * ndrivers;
    size_t n = nshared + ARRAY_LEN(own);
    struct CMUnitTest *tests = calloc(n, sizeof *tests);
    char **names = calloc(nshared, sizeof *names);
    size_t t = 0;
    for (size_t d = 0; d < ndrivers; d++) {
        for (size_t i = 0; i < ARRAY_LEN(shared_tests); i++, t++) {
            size_t len = strlen(drivers[d].name) + strlen(shared_tests[i].name) + 2;
            names[t] = malloc(len);
            snprintf(names[t], len, "%s/%s", drivers[d].name, shared_tests[i].name);
            tests[t] = (struct CMUnitTest){
                .name = names[t],
                .test_func = shared_tests[i].fn,
                .setup_func = fixture_setup,
                .teardown_func = fixture_teardown,
                .initial_state = &drivers[d],
            };
        }
    }
    for (size_t i = 0; i < ARRAY_LEN(own); i++)
        tests[t++] = own[i];

    int failed = _cmocka_run_group_tests("store_kv", tests, n, NULL, NULL);
    for (size_t i = 0; i < nshared; i++)
        free(names[i]);
    free(names);
    free(tests);
    return failed;
}
