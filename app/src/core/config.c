/*
 * Environment → struct kiln_config. Every variable is parsed by a bounded
 * helper (no atoi), and every problem is recorded instead of stopping at the
 * first one.
 */
#include "core/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sched.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/random.h"
#include "core/str.h"

const char *kiln_config_process_env(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

const char *kiln_env_name(enum kiln_env env)
{
    switch (env) {
    case KILN_ENV_DEVELOPMENT: return "development";
    case KILN_ENV_TEST: return "test";
    case KILN_ENV_PRODUCTION: return "production";
    }
    return "development";
}

void kiln_env_problem(struct kiln_env_reader *e, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (e->problems)
        kiln_buf_printf(e->problems, "config: %s\n", line);
    e->count++;
}

const char *kiln_env_value(struct kiln_env_reader *e, const char *name)
{
    const char *v = e->get(e->ctx, name);
    return (v && *v) ? v : NULL;
}

/*
 * Unsigned integer in [min, max]; unset keeps *out (the default). The value
 * is quoted in the problem line, cut to 40 bytes: these are not secrets.
 */
static void uint_var(struct kiln_env_reader *l, const char *name, unsigned long long min,
                     unsigned long long max, unsigned long long *out)
{
    const char *v = kiln_env_value(l, name);
    uint64_t n;
    if (!v)
        return;
    if (!kiln_str_to_u64(kiln_str_c(v), UINT64_MAX, &n) || n < min || n > max) {
        kiln_env_problem(l, "%s must be an integer from %llu to %llu (got \"%.40s\")",
                name, min, max, v);
        return;
    }
    *out = n;
}

static void unsigned_var(struct kiln_env_reader *l, const char *name, unsigned min,
                         unsigned max, unsigned *out)
{
    unsigned long long v = *out;
    uint_var(l, name, min, max, &v);
    *out = (unsigned)v;
}

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static char *hex_secret(size_t nbytes)
{
    unsigned char raw[64];
    char *out = kiln_malloc(nbytes * 2 + 1);
    if (nbytes > sizeof raw || kiln_random_bytes(raw, nbytes) != 0)
        kiln_fatal("cannot generate a SECRET_KEY_BASE");
    kiln_hex_encode(raw, nbytes, out);
    explicit_bzero(raw, sizeof raw);
    return out;
}

static void file_var(struct kiln_env_reader *l, const char *name, char **out);
static char *str_var(struct kiln_env_reader *l, const char *name, const char *def);

static void bool_var(struct kiln_env_reader *l, const char *name, bool *out)
{
    const char *v = kiln_env_value(l, name);
    if (!v)
        return;
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
        *out = false;
    else
        kiln_env_problem(l, "%s must be true or false (got \"%.40s\")", name, v);
}

static char *str_var(struct kiln_env_reader *l, const char *name, const char *def)
{
    const char *v = kiln_env_value(l, name);
    return v ? kiln_strdup(v) : def ? kiln_strdup(def) : NULL;
}

/* "5s,5m,30m,2h": each a whole number and a unit (ms, s, m, h, d), at most
 * KILN_WEBHOOK_MAX_RETRIES, each at most 7 days. */
int kiln_config_parse_durations(const char *v, unsigned *out, unsigned cap, unsigned *n)
{
    *n = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ')
            p++;
        unsigned long long x = 0;
        const char *d = p;
        while (*p >= '0' && *p <= '9' && p - d < 9)
            x = x * 10 + (unsigned long long)(*p++ - '0');
        if (p == d)
            return KILN_EINVAL;
        unsigned long long mul;
        if (!strncmp(p, "ms", 2)) { mul = 1; p += 2; }
        else if (*p == 's') { mul = 1000; p++; }
        else if (*p == 'm') { mul = 60000; p++; }
        else if (*p == 'h') { mul = 3600000; p++; }
        else if (*p == 'd') { mul = 86400000; p++; }
        else return KILN_EINVAL;
        x *= mul;
        if (x > 7ull * 86400000 || *n == cap)
            return KILN_EINVAL;
        out[(*n)++] = (unsigned)x;
        while (*p == ' ')
            p++;
        if (!*p)
            return 0;
        if (*p++ != ',')
            return KILN_EINVAL;
    }
}

static void retry_schedule_var(struct kiln_env_reader *l, struct kiln_config *cfg)
{
    const char *v = kiln_env_value(l, "WEBHOOK_RETRY_SCHEDULE");
    if (kiln_config_parse_durations(KILN_WEBHOOK_RETRY_DEFAULT, cfg->webhook_retry_ms,
                                    KILN_WEBHOOK_MAX_RETRIES, &cfg->webhook_retries))
        kiln_fatal("config: the default WEBHOOK_RETRY_SCHEDULE does not parse");
    if (!v)
        return;
    unsigned tmp[KILN_WEBHOOK_MAX_RETRIES], n = 0;
    if (!*v) {
        cfg->webhook_retries = 0; /* no retries */
        return;
    }
    if (kiln_config_parse_durations(v, tmp, KILN_WEBHOOK_MAX_RETRIES, &n)) {
        kiln_env_problem(l,
                         "WEBHOOK_RETRY_SCHEDULE must be comma-separated delays such as "
                         "5s,5m,30m,2h (units ms, s, m, h, d; at most %d, each at most 7d; got "
                         "\"%.60s\")",
                         KILN_WEBHOOK_MAX_RETRIES, v);
        return;
    }
    memcpy(cfg->webhook_retry_ms, tmp, sizeof tmp);
    cfg->webhook_retries = n;
}

/* One libpq key=value pair; values quoted as libpq wants (\\ and \'). */
static void conninfo_add(kiln_buf *b, const char *key, const char *v)
{
    if (!v)
        return;
    kiln_buf_printf(b, "%s%s='", b->len ? " " : "", key);
    for (const char *c = v; *c; c++) {
        if (*c == '\\' || *c == '\'')
            kiln_buf_append(b, "\\", 1);
        kiln_buf_append(b, c, 1);
    }
    kiln_buf_append(b, "'", 1);
}

static void db_vars(struct kiln_env_reader *l, struct kiln_config *cfg)
{
    const char *url = kiln_env_value(l, "DATABASE_URL");
    const char *host = kiln_env_value(l, "DB_HOST");
    const char *sslmode = kiln_env_value(l, "DB_SSLMODE");
    bool_var(l, "DB_IAM_AUTH", &cfg->db_iam_auth);
    bool_var(l, "REQUIRE_IAM_AUTH", &cfg->require_iam_auth);
    if (cfg->require_iam_auth && !cfg->db_iam_auth)
        kiln_env_problem(l, "REQUIRE_IAM_AUTH=true needs DB_IAM_AUTH=true");
    if (cfg->require_iam_auth && kiln_env_value(l, "DB_PASSWORD"))
        kiln_env_problem(l, "DB_PASSWORD is set but REQUIRE_IAM_AUTH=true forbids password "
                            "authentication; unset it");
    if (cfg->db_iam_auth) {
        /* An IAM token is a password sent in the clear inside the
         * connection: RDS accepts it over TLS only. */
        if (!sslmode)
            sslmode = "require";
        else if (!strcmp(sslmode, "disable") || !strcmp(sslmode, "allow") ||
                 !strcmp(sslmode, "prefer"))
            kiln_env_problem(l, "DB_IAM_AUTH=true needs DB_SSLMODE require, verify-ca or "
                                "verify-full (got \"%.40s\")", sslmode);
        if (!host)
            kiln_env_problem(l, "DB_IAM_AUTH=true needs DB_HOST (the token is signed for "
                                "the host and port)");
        if (!kiln_env_value(l, "DB_USERNAME"))
            kiln_env_problem(l, "DB_IAM_AUTH=true needs DB_USERNAME (the database user the "
                                "token is for)");
        if (!kiln_env_value(l, "AWS_REGION") && !kiln_env_value(l, "AWS_DEFAULT_REGION"))
            kiln_env_problem(l, "DB_IAM_AUTH=true needs AWS_REGION");
    }
    if (sslmode && strcmp(sslmode, "disable") && strcmp(sslmode, "allow") &&
        strcmp(sslmode, "prefer") && strcmp(sslmode, "require") &&
        strcmp(sslmode, "verify-ca") && strcmp(sslmode, "verify-full"))
        kiln_env_problem(l, "DB_SSLMODE must be disable, allow, prefer, require, verify-ca or "
                "verify-full (got \"%.40s\")", sslmode);
    if (url && cfg->db_iam_auth) {
        kiln_env_problem(l, "DB_IAM_AUTH=true takes DB_HOST, DB_PORT, DB_NAME and DB_USERNAME, "
                            "not DATABASE_URL");
    } else if (url) {
        if (strncmp(url, "postgres://", 11) && strncmp(url, "postgresql://", 13))
            kiln_env_problem(l, "DATABASE_URL must start with postgres:// or postgresql://");
        cfg->db_conninfo = kiln_strdup(url);
    } else if (host) {
        unsigned port = 5432;
        char portbuf[16];
        kiln_buf b;
        unsigned_var(l, "DB_PORT", 1, 65535, &port);
        snprintf(portbuf, sizeof portbuf, "%u", port);
        kiln_buf_init(&b, 16 * 1024);
        conninfo_add(&b, "host", host);
        conninfo_add(&b, "port", portbuf);
        conninfo_add(&b, "dbname", kiln_env_value(l, "DB_NAME") ? kiln_env_value(l, "DB_NAME") : "kiln");
        conninfo_add(&b, "user", kiln_env_value(l, "DB_USERNAME"));
        if (!cfg->require_iam_auth)
            conninfo_add(&b, "password", kiln_env_value(l, "DB_PASSWORD"));
        conninfo_add(&b, "sslmode", sslmode);
        conninfo_add(&b, "sslrootcert", kiln_env_value(l, "DB_SSLROOTCERT"));
        conninfo_add(&b, "application_name", "kiln");
        cfg->db_conninfo = kiln_strndup(b.p ? b.p : "", b.len);
        kiln_buf_free(&b);
    }
    cfg->db_path = str_var(l, "DB_PATH", "./var/kiln.db");
    bool_var(l, "DB_PREPARED_STATEMENTS", &cfg->db_prepared_statements);
    cfg->db_pipeline = true;
    bool_var(l, "DB_PIPELINE", &cfg->db_pipeline);
    unsigned_var(l, "DB_CONNECT_TIMEOUT_SECONDS", 1, 300, &cfg->db_connect_timeout_s);
    {
        unsigned q = cfg->db_query_timeout_ms / 1000;
        unsigned_var(l, "DB_QUERY_TIMEOUT_SECONDS", 1, 3600, &q);
        cfg->db_query_timeout_ms = q * 1000;
    }
    cfg->migrate_on_start = cfg->env != KILN_ENV_PRODUCTION;
    bool_var(l, "MIGRATE_ON_START", &cfg->migrate_on_start);
}

static void kv_vars(struct kiln_env_reader *l, struct kiln_config *cfg)
{
    cfg->valkey_host = str_var(l, "VALKEY_HOST", NULL);
    unsigned_var(l, "VALKEY_PORT", 1, 65535, &cfg->valkey_port);
    cfg->valkey_user = str_var(l, "VALKEY_USER", NULL);
    cfg->valkey_password = str_var(l, "VALKEY_PASSWORD", NULL);
    const char *ssl = kiln_env_value(l, "VALKEY_SSL");
    bool_var(l, "VALKEY_SSL", &cfg->valkey_tls);
    file_var(l, "VALKEY_CA_FILE", &cfg->valkey_ca_file);
    unsigned_var(l, "VALKEY_CONNECT_TIMEOUT_MS", 1, 600000, &cfg->valkey_connect_timeout_ms);
    unsigned_var(l, "VALKEY_COMMAND_TIMEOUT_MS", 1, 600000, &cfg->valkey_command_timeout_ms);
    {
        unsigned long long n = cfg->kv_memory_max_keys;
        uint_var(l, "KV_MEMORY_MAX_KEYS", 1, 100000000, &n);
        cfg->kv_memory_max_keys = (unsigned long)n;
    }
    bool_var(l, "VALKEY_IAM_AUTH", &cfg->valkey_iam_auth);
    cfg->valkey_cluster_id = str_var(l, "VALKEY_CLUSTER_ID", NULL);
    unsigned_var(l, "VALKEY_REAUTH_INTERVAL_SECONDS", 0, 43000, &cfg->valkey_reauth_s);
    if (cfg->valkey_iam_auth) {
        if (!cfg->valkey_user)
            kiln_env_problem(l, "VALKEY_IAM_AUTH=true needs VALKEY_USER (the ElastiCache user "
                                "the token is for)");
        if (!cfg->valkey_cluster_id)
            kiln_env_problem(l, "VALKEY_IAM_AUTH=true needs VALKEY_CLUSTER_ID (the cache the "
                                "token is signed for)");
        /* ElastiCache accepts IAM tokens over TLS only, so IAM implies TLS,
         * as it did in the original (whose task definitions set no
         * VALKEY_SSL); only an explicit VALKEY_SSL=false contradicts it. */
        if (!ssl)
            cfg->valkey_tls = true;
        else if (!cfg->valkey_tls)
            kiln_env_problem(l, "VALKEY_IAM_AUTH=true needs TLS (ElastiCache accepts IAM "
                                "tokens over TLS only): unset VALKEY_SSL=%.10s or set it "
                                "to true", ssl);
        if (cfg->valkey_password)
            kiln_env_problem(l, "VALKEY_PASSWORD is set with VALKEY_IAM_AUTH=true; unset one");
        if (!kiln_env_value(l, "AWS_REGION") && !kiln_env_value(l, "AWS_DEFAULT_REGION"))
            kiln_env_problem(l, "VALKEY_IAM_AUTH=true needs AWS_REGION");
    } else if (cfg->valkey_user && !cfg->valkey_password) {
        kiln_env_problem(l, "VALKEY_USER is set but VALKEY_PASSWORD is not");
    }
    bool_var(l, "ENABLE_SECRET_RELOAD", &cfg->secret_reload);
    unsigned_var(l, "SECRET_RELOAD_INTERVAL_SECONDS", 0, 86400 * 7, &cfg->secret_reload_interval_s);
}

static void auth_vars(struct kiln_env_reader *l, struct kiln_config *cfg)
{
    const char *v;
    if ((v = kiln_env_value(l, "SECRET_KEY_BASE_PREVIOUS"))) {
        cfg->secret_key_base_previous = kiln_strdup(v);
        cfg->secret_key_base_previous_len = strlen(v);
    }
    if ((v = kiln_env_value(l, "PUBLIC_URL"))) {
        if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
            kiln_env_problem(l, "PUBLIC_URL must start with http:// or https:// (got \"%.60s\")", v);
        cfg->public_url = kiln_strdup(v);
        size_t n = strlen(cfg->public_url);
        while (n > 8 && cfg->public_url[n - 1] == '/')
            cfg->public_url[--n] = '\0';
    } else {
        char url[64];
        snprintf(url, sizeof url, "http://localhost:%u", cfg->port);
        cfg->public_url = kiln_strdup(url);
    }
    cfg->allowed_origins = str_var(l, "ALLOWED_ORIGINS", NULL);
    unsigned_var(l, "TRUSTED_PROXY_HOPS", 0, 16, &cfg->trusted_proxy_hops);
    cfg->rate_limit_public = 180;
    cfg->rate_limit_protected = 120;
    unsigned_var(l, "RATE_LIMIT_PUBLIC", 0, 1000000, &cfg->rate_limit_public);
    unsigned_var(l, "RATE_LIMIT_PROTECTED", 0, 1000000, &cfg->rate_limit_protected);
    cfg->cache_ttl_s = 300;
    unsigned_var(l, "CACHE_TTL_SECONDS", 0, 86400, &cfg->cache_ttl_s);
    /* The change feed (docs/REALTIME.md). Three days of events let a phone
     * that was off over a weekend resume instead of refetching; the
     * heartbeat stays well inside the ALB's 60 s idle timeout. */
    cfg->events_retention_hours = 72;
    unsigned_var(l, "EVENTS_RETENTION_HOURS", 1, 24 * 366, &cfg->events_retention_hours);
    cfg->events_heartbeat_s = 15;
    unsigned_var(l, "EVENTS_HEARTBEAT_SECONDS", 1, 3600, &cfg->events_heartbeat_s);
    cfg->events_poll_ms = 1000;
    unsigned_var(l, "EVENTS_POLL_MS", 10, 600000, &cfg->events_poll_ms);
    cfg->events_session_check_s = 15;
    unsigned_var(l, "EVENTS_SESSION_CHECK_SECONDS", 1, 3600, &cfg->events_session_check_s);
    cfg->events_prune_s = 60;
    unsigned_var(l, "EVENTS_PRUNE_SECONDS", 0, 86400, &cfg->events_prune_s);
    cfg->audit_retention_days = 90;
    unsigned_var(l, "AUDIT_RETENTION_DAYS", 1, 36600, &cfg->audit_retention_days);
    cfg->job_concurrency = 4;
    unsigned_var(l, "JOB_CONCURRENCY", 0, 256, &cfg->job_concurrency);
    cfg->job_lease_s = 60;
    unsigned_var(l, "JOB_LEASE_SECONDS", 1, 86400, &cfg->job_lease_s);
    cfg->job_poll_ms = 1000;
    unsigned_var(l, "JOB_POLL_MS", 10, 600000, &cfg->job_poll_ms);
    /* A tenth of each background thread's time: a backlog of deliveries
     * still drains (some hundreds a second) while the requests keep the
     * CPUs busy, and costs them under a tenth of their throughput
     * (docs/JOBS.md, "Yielding to requests"; bench/README.md). */
    cfg->job_busy_percent = 10;
    unsigned_var(l, "JOB_BUSY_PERCENT", 1, 100, &cfg->job_busy_percent);
    cfg->job_retention_hours = 24;
    unsigned_var(l, "JOB_RETENTION_HOURS", 1, 24 * 366, &cfg->job_retention_hours);
    cfg->job_dead_retention_days = 30;
    unsigned_var(l, "JOB_DEAD_RETENTION_DAYS", 1, 3660, &cfg->job_dead_retention_days);
    retry_schedule_var(l, cfg);
    bool_var(l, "WEBHOOK_ALLOW_PRIVATE", &cfg->webhook_allow_private);
    cfg->webhook_timeout_s = 10;
    unsigned_var(l, "WEBHOOK_TIMEOUT_SECONDS", 1, 120, &cfg->webhook_timeout_s);
    cfg->webhook_retention_days = 30;
    unsigned_var(l, "WEBHOOK_RETENTION_DAYS", 1, 3660, &cfg->webhook_retention_days);
    /* A load balancer that polls every few seconds still sees a change
     * within a second; a minute is the most that could still be called
     * health. */
    cfg->health_cache_ms = 1000;
    unsigned_var(l, "HEALTH_CACHE_MS", 0, 60000, &cfg->health_cache_ms);
    cfg->auth_success_redirect = str_var(l, "AUTH_SUCCESS_REDIRECT", "/");
    cfg->auth_failure_redirect = str_var(l, "AUTH_FAILURE_REDIRECT", "/");
    cfg->auth_logout_redirect = str_var(l, "AUTH_LOGOUT_REDIRECT", "/");
    /* Secure cookies except plain-HTTP development (a browser would drop a
     * Secure cookie sent over http://localhost in some versions). */
    cfg->cookie_secure = strncmp(cfg->public_url, "https://", 8) == 0 ||
                         cfg->env == KILN_ENV_PRODUCTION;
}

static char *joined(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = kiln_malloc(la + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* Accounts: password rules and hashing, and the mail that carries links
 * and codes (docs/AUTHENTICATION.md). */
static void account_vars(struct kiln_env_reader *l, struct kiln_config *cfg)
{
    cfg->password_min_length = 8;
    unsigned_var(l, "PASSWORD_MIN_LENGTH", 8, 64, &cfg->password_min_length);
    unsigned_var(l, "PASSWORD_HASH_CONCURRENCY", 0, 64, &cfg->password_hash_concurrency);
    cfg->smtp_url = str_var(l, "SMTP_URL", NULL);
    cfg->email_from = str_var(l, "EMAIL_FROM", NULL);
    cfg->email_provider = str_var(l, "EMAIL_PROVIDER", cfg->smtp_url ? "smtp" : "log");
    if (strcmp(cfg->email_provider, "log") && strcmp(cfg->email_provider, "smtp") &&
        strcmp(cfg->email_provider, "ses"))
        kiln_env_problem(l, "EMAIL_PROVIDER must be log, smtp or ses (got \"%.40s\")",
                         cfg->email_provider);
    /* SES signs for a region and sends from an identity verified there
     * (aws/aws.h reads the region, credentials and AWS_ENDPOINT_URL_SES). */
    if (!strcmp(cfg->email_provider, "ses")) {
        if (!cfg->email_from)
            kiln_env_problem(l, "EMAIL_PROVIDER=ses needs EMAIL_FROM (an address or domain "
                                "verified in SES, e.g. \"Example <no-reply@example.com>\")");
        if (!kiln_env_value(l, "AWS_REGION") && !kiln_env_value(l, "AWS_DEFAULT_REGION"))
            kiln_env_problem(l, "EMAIL_PROVIDER=ses needs AWS_REGION (the SES region)");
    }
    if (!strcmp(cfg->email_provider, "smtp")) {
        if (!cfg->smtp_url)
            kiln_env_problem(l, "EMAIL_PROVIDER=smtp needs SMTP_URL (smtp:// or smtps://)");
        else if (strncmp(cfg->smtp_url, "smtp://", 7) && strncmp(cfg->smtp_url, "smtps://", 8))
            kiln_env_problem(l, "SMTP_URL must start with smtp:// or smtps://");
        if (!cfg->email_from)
            kiln_env_problem(l, "EMAIL_PROVIDER=smtp needs EMAIL_FROM (e.g. "
                                "\"Example <no-reply@example.com>\")");
    }
    if (cfg->email_from && strpbrk(cfg->email_from, "\r\n"))
        kiln_env_problem(l, "EMAIL_FROM must be one line");
    bool_var(l, "AUTH_EMAIL_CODE_SIGNUP", &cfg->auth_email_code_signup);
    /* Passkeys belong to a relying party: a registrable domain the
     * origins are on (WebAuthn 5.1.2); by default PUBLIC_URL's host and
     * PUBLIC_URL itself. */
    cfg->webauthn_origins = str_var(l, "WEBAUTHN_ORIGINS", cfg->public_url);
    cfg->webauthn_rp_id = str_var(l, "WEBAUTHN_RP_ID", NULL);
    if (!cfg->webauthn_rp_id) {
        const char *h = strstr(cfg->public_url, "://");
        h = h ? h + 3 : cfg->public_url;
        cfg->webauthn_rp_id = kiln_strdup(h);
        char *end = strpbrk(cfg->webauthn_rp_id, ":/");
        if (end)
            *end = '\0';
    }
    if (strpbrk(cfg->webauthn_rp_id, ":/ ") || !*cfg->webauthn_rp_id)
        kiln_env_problem(l, "WEBAUTHN_RP_ID must be a host name (e.g. example.com)");
    /* The issuer an authenticator app lists the account under: by default
     * the public host (what a person recognises), without the scheme. */
    cfg->totp_issuer = str_var(l, "TOTP_ISSUER", NULL);
    if (!cfg->totp_issuer) {
        const char *h = strstr(cfg->public_url, "://");
        h = h ? h + 3 : cfg->public_url;
        cfg->totp_issuer = kiln_strdup(h);
        char *end = strpbrk(cfg->totp_issuer, ":/");
        if (end)
            *end = '\0';
    }
    cfg->auth_verify_url = str_var(l, "AUTH_VERIFY_URL", NULL);
    if (!cfg->auth_verify_url)
        cfg->auth_verify_url = joined(cfg->public_url, "/auth/password/verify");
    cfg->auth_reset_url = str_var(l, "AUTH_RESET_URL", NULL);
    if (!cfg->auth_reset_url)
        cfg->auth_reset_url = joined(cfg->public_url, "/auth/password/reset");
    if (strncmp(cfg->auth_verify_url, "https://", 8) && strncmp(cfg->auth_verify_url, "http://", 7))
        kiln_env_problem(l, "AUTH_VERIFY_URL must be an http(s) URL");
    if (strncmp(cfg->auth_reset_url, "https://", 8) && strncmp(cfg->auth_reset_url, "http://", 7))
        kiln_env_problem(l, "AUTH_RESET_URL must be an http(s) URL");
}

static void file_var(struct kiln_env_reader *l, const char *name, char **out)
{
    const char *v = kiln_env_value(l, name);
    if (!v)
        return;
    if (access(v, R_OK) != 0)
        kiln_env_problem(l, "%s: cannot read \"%.200s\"", name, v);
    *out = kiln_strdup(v);
}

int kiln_config_load(struct kiln_config *cfg, kiln_getenv_fn get, void *ctx,
                     kiln_buf *problems)
{
    struct kiln_env_reader l = { get, ctx, problems, 0 };
    const char *v;

    memset(cfg, 0, sizeof *cfg);
    cfg->env = KILN_ENV_DEVELOPMENT;
    cfg->port = 4000;
    cfg->max_request_body = 2000000;
    cfg->log_level = KILN_LOG_INFO;
    cfg->shutdown_timeout_s = 25;
    cfg->shutdown_idle_grace_ms = 1000;
    cfg->http_loops = cpu_count();
    cfg->max_connections = 16384;
    cfg->keepalive_timeout_s = 75;
    cfg->header_timeout_s = 10;
    cfg->body_timeout_s = 30;
    cfg->workers = 10;
    cfg->worker_queue = 1024;
    cfg->db_connect_timeout_s = 5;
    cfg->db_query_timeout_ms = 15000;
    cfg->valkey_port = 6379;
    cfg->valkey_connect_timeout_ms = 2000;
    cfg->valkey_command_timeout_ms = 2000;
    cfg->kv_memory_max_keys = 100000;
    cfg->valkey_reauth_s = 39600;          /* 11 h: under ElastiCache's 12 h limit */
    cfg->secret_reload_interval_s = 300;

    if ((v = kiln_env_value(&l, "KILN_ENV"))) {
        if (strcmp(v, "development") == 0) cfg->env = KILN_ENV_DEVELOPMENT;
        else if (strcmp(v, "test") == 0) cfg->env = KILN_ENV_TEST;
        else if (strcmp(v, "production") == 0) cfg->env = KILN_ENV_PRODUCTION;
        else kiln_env_problem(&l, "KILN_ENV must be development, test or production (got \"%.40s\")", v);
    } else if ((v = kiln_env_value(&l, "MIX_ENV"))) {
        /* The original's task definitions say MIX_ENV=prod and nothing
         * else about it: read as development it would bind 127.0.0.1
         * (unreachable in a container), allow the development login and
         * accept a missing SECRET_KEY_BASE. An unknown name is refused
         * rather than guessed: a custom Mix environment could be either. */
        if (strcmp(v, "dev") == 0) cfg->env = KILN_ENV_DEVELOPMENT;
        else if (strcmp(v, "test") == 0) cfg->env = KILN_ENV_TEST;
        else if (strcmp(v, "prod") == 0) cfg->env = KILN_ENV_PRODUCTION;
        else kiln_env_problem(&l, "MIX_ENV must be dev, test or prod when KILN_ENV is unset "
                                  "(got \"%.40s\"); or set KILN_ENV", v);
    }

    unsigned_var(&l, "PORT", 1, 65535, &cfg->port);

    v = kiln_env_value(&l, "BIND_ADDRESS");
    if (!v)
        v = cfg->env == KILN_ENV_PRODUCTION ? "0.0.0.0" : "127.0.0.1";
    {
        unsigned char addr[16];
        if (inet_pton(AF_INET, v, addr) != 1 && inet_pton(AF_INET6, v, addr) != 1)
            kiln_env_problem(&l, "BIND_ADDRESS must be an IPv4 or IPv6 address (got \"%.60s\")", v);
        cfg->bind_address = kiln_strdup(v);
    }

    if ((v = kiln_env_value(&l, "SECRET_KEY_BASE"))) {
        cfg->secret_key_base = kiln_strdup(v);
        cfg->secret_key_base_len = strlen(v);
        if (cfg->env == KILN_ENV_PRODUCTION &&
            cfg->secret_key_base_len < KILN_SECRET_KEY_BASE_MIN)
            kiln_env_problem(&l, "SECRET_KEY_BASE must be at least %d bytes in production (got %zu bytes)",
                    KILN_SECRET_KEY_BASE_MIN, cfg->secret_key_base_len);
    } else if (cfg->env == KILN_ENV_PRODUCTION) {
        kiln_env_problem(&l, "SECRET_KEY_BASE is required in production (at least %d bytes; "
                "e.g. openssl rand -hex 64)", KILN_SECRET_KEY_BASE_MIN);
    } else {
        cfg->secret_key_base = hex_secret(64);
        cfg->secret_key_base_len = 128;
        cfg->secret_key_base_generated = true;
    }

    {
        unsigned long long n = cfg->max_request_body;
        uint_var(&l, "MAX_REQUEST_BODY_BYTES", 1, 1ull << 30, &n);
        cfg->max_request_body = (size_t)n;
    }

    if ((v = kiln_env_value(&l, "LOG_LEVEL")) && kiln_log_level_parse(v, &cfg->log_level) != 0)
        kiln_env_problem(&l, "LOG_LEVEL must be debug, info, warning or error (got \"%.40s\")", v);

    file_var(&l, "SSL_CERTFILE", &cfg->ssl_certfile);
    file_var(&l, "SSL_KEYFILE", &cfg->ssl_keyfile);
    bool_var(&l, "SSL_SELF_SIGNED", &cfg->ssl_self_signed);
    if (cfg->ssl_self_signed && cfg->ssl_certfile)
        kiln_env_problem(&l, "SSL_SELF_SIGNED=true and SSL_CERTFILE are both set; set one");
    if (!cfg->ssl_certfile != !cfg->ssl_keyfile)
        kiln_env_problem(&l, "SSL_CERTFILE and SSL_KEYFILE must be set together (only %s is set)",
                cfg->ssl_certfile ? "SSL_CERTFILE" : "SSL_KEYFILE");

    unsigned_var(&l, "SHUTDOWN_TIMEOUT_SECONDS", 0, 3600, &cfg->shutdown_timeout_s);
    unsigned_var(&l, "SHUTDOWN_IDLE_GRACE_MS", 0, 60000, &cfg->shutdown_idle_grace_ms);
    unsigned_var(&l, "HTTP_LOOPS", 1, 256, &cfg->http_loops);
    unsigned_var(&l, "MAX_CONNECTIONS", 1, 1000000, &cfg->max_connections);
    unsigned_var(&l, "KEEPALIVE_TIMEOUT_SECONDS", 1, 3600, &cfg->keepalive_timeout_s);
    unsigned_var(&l, "HEADER_TIMEOUT_SECONDS", 1, 3600, &cfg->header_timeout_s);
    unsigned_var(&l, "BODY_TIMEOUT_SECONDS", 1, 3600, &cfg->body_timeout_s);
    unsigned_var(&l, "DB_POOL_SIZE", 1, 1024, &cfg->workers);
    unsigned_var(&l, "WORKER_QUEUE_SIZE", 1, 1000000, &cfg->worker_queue);
    db_vars(&l, cfg);
    kv_vars(&l, cfg);
    auth_vars(&l, cfg);
    account_vars(&l, cfg);

    return l.count;
}

void kiln_config_free(struct kiln_config *cfg)
{
    if (cfg->secret_key_base) {
        /* Do not leave key material in freed heap memory. */
        explicit_bzero(cfg->secret_key_base, cfg->secret_key_base_len);
        free(cfg->secret_key_base);
    }
    if (cfg->db_conninfo) {
        explicit_bzero(cfg->db_conninfo, strlen(cfg->db_conninfo));
        free(cfg->db_conninfo);
    }
    if (cfg->valkey_password) {
        explicit_bzero(cfg->valkey_password, strlen(cfg->valkey_password));
        free(cfg->valkey_password);
    }
    if (cfg->smtp_url) {
        explicit_bzero(cfg->smtp_url, strlen(cfg->smtp_url));
        free(cfg->smtp_url);
    }
    free(cfg->email_provider);
    free(cfg->email_from);
    free(cfg->auth_verify_url);
    free(cfg->auth_reset_url);
    free(cfg->totp_issuer);
    free(cfg->webauthn_rp_id);
    free(cfg->webauthn_origins);
    if (cfg->secret_key_base_previous) {
        explicit_bzero(cfg->secret_key_base_previous, cfg->secret_key_base_previous_len);
        free(cfg->secret_key_base_previous);
    }
    free(cfg->public_url);
    free(cfg->allowed_origins);
    free(cfg->auth_success_redirect);
    free(cfg->auth_failure_redirect);
    free(cfg->auth_logout_redirect);
    free(cfg->db_path);
    free(cfg->valkey_host);
    free(cfg->valkey_cluster_id);
    free(cfg->valkey_user);
    free(cfg->valkey_ca_file);
    free(cfg->bind_address);
    free(cfg->ssl_certfile);
    free(cfg->ssl_keyfile);
    memset(cfg, 0, sizeof *cfg);
}
