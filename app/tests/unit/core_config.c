/*
 * Unit tests for app/src/core/config.c through a fake environment: each case
 * is a NULL-terminated list of name/value pairs that kiln_config_load reads
 * via its kiln_getenv_fn, so no test touches the process environment.
 */
#include <stdlib.h>

#include "test_util.h"

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"

/* name, value, name, value, ..., NULL */
typedef const char *const env_t[];

static const char *fake_getenv(void *ctx, const char *name)
{
    const char *const *kv = ctx;
    for (; kv[0]; kv += 2)
        if (strcmp(kv[0], name) == 0)
            return kv[1];
    return NULL;
}

struct fx {
    struct kiln_config cfg;
    kiln_buf problems;
    int count;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    kiln_buf_init(&f->problems, 64 * 1024);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kiln_config_free(&f->cfg);
    kiln_buf_free(&f->problems);
    free(f);
    return 0;
}

static void load(struct fx *f, const char *const *env)
{
    kiln_config_free(&f->cfg);
    kiln_buf_reset(&f->problems);
    f->count = kiln_config_load(&f->cfg, fake_getenv, (void *)env, &f->problems);
}

static size_t count_lines(const kiln_buf *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->p[i] == '\n';
    return n;
}

/* Every problem is one line "config: …\n"; count matches the return value. */
static void assert_problem_lines(const struct fx *f, int want, const char *ctx)
{
    char esc[2048];
    const kiln_buf *b = &f->problems;
    if (f->count != want || count_lines(b) != (size_t)want)
        fail_msg("%s: %d problems in %zu lines, want %d: \"%s\"", ctx, f->count,
                 count_lines(b), want, tu_escape(esc, sizeof esc, b->p, b->len));
    if (want == 0)
        return;
    assert_true(b->p[b->len - 1] == '\n');
    for (size_t i = 0; i < b->len;) {
        const char *nl = memchr(b->p + i, '\n', b->len - i);
        if (strncmp(b->p + i, "config: ", 8) != 0)
            fail_msg("%s: line does not start with \"config: \": \"%s\"", ctx,
                     tu_escape(esc, sizeof esc, b->p + i, (size_t)(nl - (b->p + i))));
        i = (size_t)(nl - b->p) + 1;
    }
}

static void test_defaults(void **state)
{
    struct fx *f = *state;
    static env_t env = { NULL };
    load(f, env);
    assert_problem_lines(f, 0, "defaults");
    assert_int_equal(f->cfg.env, KILN_ENV_DEVELOPMENT);
    assert_int_equal(f->cfg.port, 4000);
    assert_string_equal(f->cfg.bind_address, "127.0.0.1");
    assert_int_equal(f->cfg.max_request_body, 2000000);
    assert_int_equal(f->cfg.log_level, KILN_LOG_INFO);
    assert_null(f->cfg.ssl_certfile);
    assert_null(f->cfg.ssl_keyfile);
    assert_int_equal(f->cfg.shutdown_timeout_s, 25);
    assert_int_equal(f->cfg.shutdown_idle_grace_ms, 1000);
    assert_int_equal(f->cfg.max_connections, 16384);
    assert_int_equal(f->cfg.keepalive_timeout_s, 75);
    assert_int_equal(f->cfg.header_timeout_s, 10);
    assert_int_equal(f->cfg.body_timeout_s, 30);
    assert_int_equal(f->cfg.workers, 10);
    assert_int_equal(f->cfg.worker_queue, 1024);
    assert_true(f->cfg.http_loops >= 1);

    /* Outside production a throwaway secret: 64 random bytes in hex. */
    assert_true(f->cfg.secret_key_base_generated);
    assert_non_null(f->cfg.secret_key_base);
    assert_int_equal(f->cfg.secret_key_base_len, 128);
    assert_int_equal(strlen(f->cfg.secret_key_base), 128);
    assert_int_equal(strspn(f->cfg.secret_key_base, "0123456789abcdef"), 128);
}

static void test_generated_secret_differs(void **state)
{
    struct fx *f = *state;
    static env_t env = { "KILN_ENV", "test", NULL };
    char first[129];
    load(f, env);
    assert_int_equal(f->cfg.env, KILN_ENV_TEST);
    assert_true(f->cfg.secret_key_base_generated);
    memcpy(first, f->cfg.secret_key_base, sizeof first);
    load(f, env);
    assert_string_not_equal(first, f->cfg.secret_key_base);
}

#define SECRET64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_production_defaults(void **state)
{
    struct fx *f = *state;
    static env_t env = { "KILN_ENV", "production", "SECRET_KEY_BASE", SECRET64, NULL };
    load(f, env);
    assert_problem_lines(f, 0, "production");
    assert_int_equal(f->cfg.env, KILN_ENV_PRODUCTION);
    assert_string_equal(f->cfg.bind_address, "0.0.0.0");
    assert_int_equal(f->cfg.port, 4000);
    assert_false(f->cfg.secret_key_base_generated);
    assert_string_equal(f->cfg.secret_key_base, SECRET64);
    assert_int_equal(f->cfg.secret_key_base_len, 64);
}

static void test_production_without_secret(void **state)
{
    struct fx *f = *state;
    static env_t unset = { "KILN_ENV", "production", NULL };
    static env_t empty = { "KILN_ENV", "production", "SECRET_KEY_BASE", "", NULL };
    const char *const *envs[] = { unset, empty };
    for (size_t i = 0; i < ARRAY_LEN(envs); i++) {
        load(f, envs[i]);
        assert_problem_lines(f, 1, i ? "empty SECRET_KEY_BASE" : "no SECRET_KEY_BASE");
        assert_contains(f->problems.p, f->problems.len, "SECRET_KEY_BASE");
        assert_null(f->cfg.secret_key_base);
        assert_false(f->cfg.secret_key_base_generated);
    }
}

/* The problem line gives the length, never the value. */
static void test_production_short_secret(void **state)
{
    struct fx *f = *state;
    static env_t env = { "KILN_ENV", "production", "SECRET_KEY_BASE",
                         "hunter2-Sup3rS3cret-value", NULL };
    load(f, env);
    assert_problem_lines(f, 1, "short secret");
    assert_contains(f->problems.p, f->problems.len, "SECRET_KEY_BASE");
    assert_not_contains(f->problems.p, f->problems.len, "hunter2");
    assert_not_contains(f->problems.p, f->problems.len, "Sup3rS3cret");
}

/* The minimum applies in production only. */
static void test_short_secret_outside_production(void **state)
{
    struct fx *f = *state;
    static env_t env = { "SECRET_KEY_BASE", "short", NULL };
    load(f, env);
    assert_problem_lines(f, 0, "short secret in development");
    assert_string_equal(f->cfg.secret_key_base, "short");
    assert_int_equal(f->cfg.secret_key_base_len, 5);
    assert_false(f->cfg.secret_key_base_generated);
}

static const char *const bad_ports[] = {
    "abc", "0", "70000", "65536", "-1", "1e3", " 80", "80 ", "+80", "0x50", "8o",
    "99999999999999999999999", "18446744073709551617",
};

static void test_bad_port(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(bad_ports); i++) {
        const char *env[] = { "PORT", bad_ports[i], NULL };
        char ctx[64];
        snprintf(ctx, sizeof ctx, "PORT=\"%s\"", bad_ports[i]);
        load(f, env);
        assert_problem_lines(f, 1, ctx);
        assert_contains(f->problems.p, f->problems.len, "PORT");
        assert_int_equal(f->cfg.port, 4000);
    }
}

static const struct port_case {
    const char *value;
    unsigned port;
} good_ports[] = {
    { "1", 1 }, { "80", 80 }, { "8080", 8080 }, { "65535", 65535 }, { "", 4000 },
};

static void test_good_port(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(good_ports); i++) {
        const char *env[] = { "PORT", good_ports[i].value, NULL };
        load(f, env);
        assert_problem_lines(f, 0, good_ports[i].value);
        assert_int_equal(f->cfg.port, good_ports[i].port);
    }
}

/* All problems in one go, one line each. */
static void test_several_problems(void **state)
{
    struct fx *f = *state;
    static env_t env = {
        "PORT", "abc",
        "KILN_ENV", "staging",
        "LOG_LEVEL", "verbose",
        "BIND_ADDRESS", "localhost",
        "DB_POOL_SIZE", "0",
        "KEEPALIVE_TIMEOUT_SECONDS", "-5",
        NULL,
    };
    load(f, env);
    assert_problem_lines(f, 6, "six bad variables");
    static const char *const names[] = { "PORT", "KILN_ENV", "LOG_LEVEL", "BIND_ADDRESS",
                                         "DB_POOL_SIZE", "KEEPALIVE_TIMEOUT_SECONDS" };
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        assert_contains(f->problems.p, f->problems.len, names[i]);
}

/* A long bad value is cut in the problem line. */
static void test_problem_line_bounded(void **state)
{
    struct fx *f = *state;
    char value[1001];
    memset(value, '9', 1000);
    value[0] = 'x';
    value[1000] = '\0';
    const char *env[] = { "PORT", value, NULL };
    load(f, env);
    assert_problem_lines(f, 1, "long PORT");
    assert_true(f->problems.len < 200);
}

static const struct level_case {
    const char *value;
    enum kiln_log_level level;
} level_cases[] = {
    { "debug", KILN_LOG_DEBUG }, { "info", KILN_LOG_INFO },     { "warning", KILN_LOG_WARNING },
    { "warn", KILN_LOG_WARNING }, { "error", KILN_LOG_ERROR }, { "", KILN_LOG_INFO },
};

static void test_log_level(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(level_cases); i++) {
        const char *env[] = { "LOG_LEVEL", level_cases[i].value, NULL };
        load(f, env);
        assert_problem_lines(f, 0, level_cases[i].value);
        assert_int_equal(f->cfg.log_level, level_cases[i].level);
    }
    static env_t bad = { "LOG_LEVEL", "verbose", NULL };
    load(f, bad);
    assert_problem_lines(f, 1, "LOG_LEVEL=verbose");
    assert_contains(f->problems.p, f->problems.len, "LOG_LEVEL");
}

static void test_tls_files(void **state)
{
    struct fx *f = *state;
    static env_t cert_only = { "SSL_CERTFILE", "/dev/null", NULL };
    static env_t key_only = { "SSL_KEYFILE", "/dev/null", NULL };
    static env_t both = { "SSL_CERTFILE", "/dev/null", "SSL_KEYFILE", "/dev/null", NULL };
    static env_t unreadable = { "SSL_CERTFILE", "/nonexistent/kiln-cert.pem", "SSL_KEYFILE",
                                "/dev/null", NULL };

    load(f, cert_only);
    assert_problem_lines(f, 1, "SSL_CERTFILE only");
    assert_contains(f->problems.p, f->problems.len, "SSL_KEYFILE");

    load(f, key_only);
    assert_problem_lines(f, 1, "SSL_KEYFILE only");
    assert_contains(f->problems.p, f->problems.len, "SSL_CERTFILE");

    load(f, both);
    assert_problem_lines(f, 0, "both");
    assert_string_equal(f->cfg.ssl_certfile, "/dev/null");
    assert_string_equal(f->cfg.ssl_keyfile, "/dev/null");

    load(f, unreadable);
    assert_problem_lines(f, 1, "unreadable cert");
    assert_contains(f->problems.p, f->problems.len, "SSL_CERTFILE");
    assert_contains(f->problems.p, f->problems.len, "/nonexistent/kiln-cert.pem");
}

/* An empty value is the same as an unset one: the default, no problem. */
static void test_empty_is_unset(void **state)
{
    struct fx *f = *state;
    static env_t env = {
        "KILN_ENV", "", "PORT", "", "BIND_ADDRESS", "", "LOG_LEVEL", "",
        "MAX_REQUEST_BODY_BYTES", "", "SSL_CERTFILE", "", "SSL_KEYFILE", "",
        "DB_POOL_SIZE", "", "WORKER_QUEUE_SIZE", "", NULL,
    };
    load(f, env);
    assert_problem_lines(f, 0, "all empty");
    assert_int_equal(f->cfg.env, KILN_ENV_DEVELOPMENT);
    assert_int_equal(f->cfg.port, 4000);
    assert_string_equal(f->cfg.bind_address, "127.0.0.1");
    assert_int_equal(f->cfg.log_level, KILN_LOG_INFO);
    assert_int_equal(f->cfg.max_request_body, 2000000);
    assert_null(f->cfg.ssl_certfile);
    assert_int_equal(f->cfg.workers, 10);
    assert_int_equal(f->cfg.worker_queue, 1024);
}

static const struct var_case {
    const char *name;
    const char *value;
    int problems;
} var_cases[] = {
    { "BIND_ADDRESS", "::1", 0 },
    { "BIND_ADDRESS", "::", 0 },
    { "BIND_ADDRESS", "10.0.0.1", 0 },
    { "BIND_ADDRESS", "256.0.0.1", 1 },
    { "BIND_ADDRESS", "example.com", 1 },
    { "MAX_REQUEST_BODY_BYTES", "1", 0 },
    { "MAX_REQUEST_BODY_BYTES", "1073741824", 0 },
    { "MAX_REQUEST_BODY_BYTES", "1073741825", 1 },
    { "MAX_REQUEST_BODY_BYTES", "0", 1 },
    { "MAX_REQUEST_BODY_BYTES", "2MB", 1 },
    { "SHUTDOWN_TIMEOUT_SECONDS", "0", 0 },
    { "SHUTDOWN_TIMEOUT_SECONDS", "3601", 1 },
    { "SHUTDOWN_IDLE_GRACE_MS", "0", 0 },
    { "SHUTDOWN_IDLE_GRACE_MS", "60000", 0 },
    { "SHUTDOWN_IDLE_GRACE_MS", "60001", 1 },
    { "HTTP_LOOPS", "0", 1 },
    { "HTTP_LOOPS", "4", 0 },
    { "MAX_CONNECTIONS", "1000001", 1 },
    { "HEADER_TIMEOUT_SECONDS", "0", 1 },
    { "BODY_TIMEOUT_SECONDS", "x", 1 },
    { "DB_POOL_SIZE", "1025", 1 },
    { "WORKER_QUEUE_SIZE", "0", 1 },
    { "KILN_ENV", "Production", 1 },
};

static void test_variables(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(var_cases); i++) {
        const struct var_case *tc = &var_cases[i];
        const char *env[] = { tc->name, tc->value, NULL };
        char ctx[128];
        snprintf(ctx, sizeof ctx, "%s=\"%s\"", tc->name, tc->value);
        load(f, env);
        assert_problem_lines(f, tc->problems, ctx);
        if (tc->problems)
            assert_contains(f->problems.p, f->problems.len, tc->name);
    }
    static env_t body = { "MAX_REQUEST_BODY_BYTES", "1024", NULL };
    load(f, body);
    assert_int_equal(f->cfg.max_request_body, 1024);
}

static void test_env_name(void **state)
{
    assert_string_equal(kiln_env_name(KILN_ENV_DEVELOPMENT), "development");
    assert_string_equal(kiln_env_name(KILN_ENV_TEST), "test");
    assert_string_equal(kiln_env_name(KILN_ENV_PRODUCTION), "production");
}

/* Free returns the struct to an empty state; freeing twice is harmless. */
static void test_config_free(void **state)
{
    struct fx *f = *state;
    static env_t env = { "SSL_CERTFILE", "/dev/null", "SSL_KEYFILE", "/dev/null", NULL };
    load(f, env);
    kiln_config_free(&f->cfg);
    assert_null(f->cfg.secret_key_base);
    assert_null(f->cfg.bind_address);
    assert_null(f->cfg.ssl_certfile);
    assert_int_equal(f->cfg.secret_key_base_len, 0);
    kiln_config_free(&f->cfg);
}

/* IAM auth: what it needs, what it refuses, and TLS on by default. */
static void test_iam_auth(void **state)
{
    struct fx *f = *state;
    static env_t ok = { "DB_IAM_AUTH", "true", "REQUIRE_IAM_AUTH", "true", "DB_HOST", "db.example",
                        "DB_USERNAME", "app", "AWS_REGION", "eu-west-1", NULL };
    load(f, ok);
    assert_problem_lines(f, 0, "iam ok");
    assert_true(f->cfg.db_iam_auth && f->cfg.require_iam_auth);
    assert_non_null(strstr(f->cfg.db_conninfo, "sslmode='require'"));
    assert_null(strstr(f->cfg.db_conninfo, "password"));

    static env_t weak_tls = { "DB_IAM_AUTH", "true", "DB_HOST", "db", "DB_USERNAME", "app",
                              "AWS_REGION", "eu-west-1", "DB_SSLMODE", "prefer", NULL };
    load(f, weak_tls);
    assert_problem_lines(f, 1, "iam prefer");
    assert_contains(f->problems.p, f->problems.len, "DB_SSLMODE");

    static env_t with_password = { "DB_IAM_AUTH", "true", "REQUIRE_IAM_AUTH", "true",
                                   "DB_HOST", "db", "DB_USERNAME", "app", "AWS_REGION", "x",
                                   "DB_PASSWORD", "hunter2-secret", NULL };
    load(f, with_password);
    assert_problem_lines(f, 1, "require with password");
    assert_contains(f->problems.p, f->problems.len, "REQUIRE_IAM_AUTH");
    assert_null(memmem(f->problems.p, f->problems.len, "hunter2", 7));

    static env_t require_alone = { "REQUIRE_IAM_AUTH", "true", NULL };
    load(f, require_alone);
    assert_problem_lines(f, 1, "require without iam");

    static env_t missing = { "DB_IAM_AUTH", "true", NULL };
    load(f, missing);
    assert_problem_lines(f, 3, "iam without host, user, region");

    static env_t url = { "DB_IAM_AUTH", "true", "DATABASE_URL", "postgres://a@b/c",
                         "DB_USERNAME", "app", "AWS_REGION", "x", NULL };
    load(f, url);
    assert_contains(f->problems.p, f->problems.len, "DATABASE_URL");
}

static void test_valkey_iam_auth(void **state)
{
    struct fx *f = *state;
    static env_t ok = { "VALKEY_HOST", "cache", "VALKEY_IAM_AUTH", "true", "VALKEY_USER", "app",
                        "VALKEY_CLUSTER_ID", "kiln-cache", "VALKEY_SSL", "true",
                        "AWS_REGION", "eu-west-1", NULL };
    load(f, ok);
    assert_problem_lines(f, 0, "valkey iam ok");
    assert_true(f->cfg.valkey_iam_auth);
    assert_string_equal(f->cfg.valkey_cluster_id, "kiln-cache");
    assert_int_equal(f->cfg.valkey_reauth_s, 39600);

    static env_t bad = { "VALKEY_HOST", "cache", "VALKEY_IAM_AUTH", "true", NULL };
    load(f, bad);
    /* user, cluster id, region; TLS is implied */
    assert_problem_lines(f, 3, "valkey iam missing");
    assert_true(f->cfg.valkey_tls);

    /* The original's task definitions set no VALKEY_SSL: IAM implies TLS. */
    static env_t no_ssl = { "VALKEY_HOST", "cache", "VALKEY_IAM_AUTH", "true",
                            "VALKEY_USER", "app", "VALKEY_CLUSTER_ID", "kiln-cache",
                            "AWS_REGION", "eu-west-1", NULL };
    load(f, no_ssl);
    assert_problem_lines(f, 0, "valkey iam without VALKEY_SSL");
    assert_true(f->cfg.valkey_tls);

    /* An explicit VALKEY_SSL=false contradicts it: one line naming both. */
    static const char *const falses[] = { "false", "0", "no", "off" };
    for (size_t i = 0; i < ARRAY_LEN(falses); i++) {
        const char *env[] = { "VALKEY_HOST", "cache", "VALKEY_IAM_AUTH", "true",
                              "VALKEY_USER", "app", "VALKEY_CLUSTER_ID", "kiln-cache",
                              "AWS_REGION", "eu-west-1", "VALKEY_SSL", falses[i], NULL };
        load(f, env);
        assert_problem_lines(f, 1, falses[i]);
        assert_contains(f->problems.p, f->problems.len, "VALKEY_IAM_AUTH");
        assert_contains(f->problems.p, f->problems.len, "VALKEY_SSL");
        assert_contains(f->problems.p, f->problems.len, "TLS");
    }

    /* Without IAM, VALKEY_SSL keeps its default: plain TCP. */
    static env_t plain = { "VALKEY_HOST", "cache", NULL };
    load(f, plain);
    assert_problem_lines(f, 0, "valkey plain");
    assert_false(f->cfg.valkey_tls);

    static env_t reload = { "ENABLE_SECRET_RELOAD", "true", "SECRET_RELOAD_INTERVAL_SECONDS", "0",
                            NULL };
    load(f, reload);
    assert_problem_lines(f, 0, "reload");
    assert_true(f->cfg.secret_reload);
    assert_int_equal(f->cfg.secret_reload_interval_s, 0);
}

/* MIX_ENV (the original's) picks the environment when KILN_ENV is unset. */
static void test_mix_env(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *mix, *kiln;
        enum kiln_env want;
        int problems;
    } cases[] = {
        { "prod", NULL, KILN_ENV_PRODUCTION, 0 },
        { "dev", NULL, KILN_ENV_DEVELOPMENT, 0 },
        { "test", NULL, KILN_ENV_TEST, 0 },
        { "staging", NULL, KILN_ENV_DEVELOPMENT, 1 },
        { "production", NULL, KILN_ENV_DEVELOPMENT, 1 },
        /* KILN_ENV wins, whatever MIX_ENV says */
        { "prod", "development", KILN_ENV_DEVELOPMENT, 0 },
        { "staging", "test", KILN_ENV_TEST, 0 },
        { "", NULL, KILN_ENV_DEVELOPMENT, 0 },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *env[] = { "SECRET_KEY_BASE", SECRET64, "MIX_ENV", cases[i].mix,
                              cases[i].kiln ? "KILN_ENV" : NULL, cases[i].kiln, NULL };
        char ctx[96];
        snprintf(ctx, sizeof ctx, "MIX_ENV=%s KILN_ENV=%s", cases[i].mix,
                 cases[i].kiln ? cases[i].kiln : "(unset)");
        load(f, env);
        assert_problem_lines(f, cases[i].problems, ctx);
        if (cases[i].problems)
            assert_contains(f->problems.p, f->problems.len, "MIX_ENV");
        else
            assert_int_equal(f->cfg.env, cases[i].want);
    }
    /* Production by MIX_ENV is production in full: all interfaces, and a
     * SECRET_KEY_BASE is required. */
    static env_t prod = { "MIX_ENV", "prod", "SECRET_KEY_BASE", SECRET64, NULL };
    load(f, prod);
    assert_string_equal(f->cfg.bind_address, "0.0.0.0");
    assert_false(f->cfg.migrate_on_start);
    static env_t prod_no_secret = { "MIX_ENV", "prod", NULL };
    load(f, prod_no_secret);
    assert_problem_lines(f, 1, "MIX_ENV=prod without SECRET_KEY_BASE");
    assert_contains(f->problems.p, f->problems.len, "SECRET_KEY_BASE");
}

/* The variables of the original's ECS task definition (issue 14), as they
 * are: no VALKEY_SSL, no DB_SSLMODE, MIX_ENV instead of KILN_ENV, PORT=443,
 * and the region from ECS (AWS_REGION). */
static void test_original_task_definition(void **state)
{
    struct fx *f = *state;
    static env_t env = {
        "MIX_ENV", "prod", "PORT", "443", "SECRET_KEY_BASE", SECRET64,
        "DB_HOST", "kiln.proxy-abc.eu-west-1.rds.amazonaws.com", "DB_PORT", "5432",
        "DB_NAME", "kiln", "DB_USERNAME", "kiln_app", "DB_IAM_AUTH", "true",
        "REQUIRE_IAM_AUTH", "true",
        "VALKEY_HOST", "kiln-abc.serverless.euw1.cache.amazonaws.com", "VALKEY_PORT", "6379",
        "VALKEY_IAM_AUTH", "true", "VALKEY_CLUSTER_ID", "kiln-cache", "VALKEY_USER", "kiln-app",
        "UPLOADS_BUCKET", "kiln-uploads", "UPLOADS_REGION", "eu-west-1",
        "UPLOADS_MAX_SIZE_MB", "25", "UPLOADS_PRESIGNED_URL_EXPIRY", "900",
        "AWS_REGION", "eu-west-1", "AWS_DEFAULT_REGION", "eu-west-1",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x", NULL,
    };
    load(f, env);
    assert_problem_lines(f, 0, "original task definition");
    assert_int_equal(f->cfg.env, KILN_ENV_PRODUCTION);
    assert_int_equal(f->cfg.port, 443);
    assert_string_equal(f->cfg.bind_address, "0.0.0.0");
    assert_true(f->cfg.db_iam_auth && f->cfg.require_iam_auth);
    assert_non_null(strstr(f->cfg.db_conninfo, "sslmode='require'"));
    assert_true(f->cfg.valkey_iam_auth && f->cfg.valkey_tls);
    assert_false(f->cfg.migrate_on_start);
}

static void test_health_cache(void **state)
{
    struct fx *f = *state;
    static env_t none = { NULL };
    load(f, none);
    assert_int_equal(f->cfg.health_cache_ms, 1000);
    static const struct var_case cases[] = {
        { "HEALTH_CACHE_MS", "0", 0 },
        { "HEALTH_CACHE_MS", "60000", 0 },
        { "HEALTH_CACHE_MS", "60001", 1 },
        { "HEALTH_CACHE_MS", "1s", 1 },
        { "HEALTH_CACHE_MS", "-1", 1 },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *env[] = { cases[i].name, cases[i].value, NULL };
        load(f, env);
        assert_problem_lines(f, cases[i].problems, cases[i].value);
        if (cases[i].problems)
            assert_contains(f->problems.p, f->problems.len, "HEALTH_CACHE_MS");
    }
    static env_t off = { "HEALTH_CACHE_MS", "0", NULL };
    load(f, off);
    assert_int_equal(f->cfg.health_cache_ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_defaults),
        T(test_generated_secret_differs),
        T(test_production_defaults),
        T(test_production_without_secret),
        T(test_production_short_secret),
        T(test_short_secret_outside_production),
        T(test_bad_port),
        T(test_good_port),
        T(test_several_problems),
        T(test_problem_line_bounded),
        T(test_log_level),
        T(test_tls_files),
        T(test_empty_is_unset),
        T(test_variables),
        T(test_env_name),
        T(test_config_free),
        T(test_iam_auth),
        T(test_valkey_iam_auth),
        T(test_mix_env),
        T(test_original_task_definition),
        T(test_health_cache),
#undef T
    };
    return cmocka_run_group_tests_name("core/config", tests, NULL, NULL);
}
