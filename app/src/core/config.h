/*
 * Configuration: the environment, read once at start into one struct and
 * validated as a whole, so an operator sees every problem in one go (one
 * line each) instead of fixing them one restart at a time. Secret values
 * never appear in those lines. After kiln_config_load the struct is
 * read-only and may be shared by every thread.
 */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/log.h"

enum kiln_env {
    KILN_ENV_DEVELOPMENT,
    KILN_ENV_TEST,
    KILN_ENV_PRODUCTION,
};

/* Production requires at least this many bytes of SECRET_KEY_BASE. */
#define KILN_SECRET_KEY_BASE_MIN 64

#define KILN_WEBHOOK_MAX_RETRIES 20
#define KILN_WEBHOOK_RETRY_DEFAULT "5s,5m,30m,2h,5h,10h,10h"

struct kiln_config {
    enum kiln_env env;
    unsigned port;
    char *bind_address;
    char *secret_key_base;         /* owned; never logged */
    size_t secret_key_base_len;
    bool secret_key_base_generated; /* throwaway key, outside production */
    size_t max_request_body;
    enum kiln_log_level log_level;
    char *ssl_certfile;            /* both NULL, or both set */
    char *ssl_keyfile;
    bool ssl_self_signed;          /* SSL_SELF_SIGNED: HTTPS, in-memory certificate */
    unsigned shutdown_timeout_s;
    unsigned shutdown_idle_grace_ms; /* drain: idle keep-alive connections stay open this long */
    unsigned http_loops;
    unsigned max_connections;
    unsigned keepalive_timeout_s;
    unsigned header_timeout_s;
    unsigned body_timeout_s;
    unsigned workers;              /* DB_POOL_SIZE */
    unsigned worker_queue;         /* WORKER_QUEUE_SIZE */

    /* database: PostgreSQL when db_conninfo is set, SQLite at db_path otherwise */
    char *db_conninfo;             /* owned; contains the password: never log */
    char *db_path;
    bool db_prepared_statements;
    bool db_pipeline;              /* DB_PIPELINE (default true) */
    unsigned db_connect_timeout_s;
    unsigned db_query_timeout_ms;
    bool migrate_on_start;
    bool db_iam_auth;              /* DB_IAM_AUTH: RDS IAM token as the password */
    bool require_iam_auth;         /* REQUIRE_IAM_AUTH: never a password */

    /* kv: Valkey when valkey_host is set, in-process memory otherwise */
    char *valkey_host;
    unsigned valkey_port;
    char *valkey_user;
    char *valkey_password;         /* owned; never log */
    bool valkey_tls;
    char *valkey_ca_file;
    unsigned valkey_connect_timeout_ms;
    unsigned valkey_command_timeout_ms;
    unsigned long kv_memory_max_keys;
    bool valkey_iam_auth;          /* VALKEY_IAM_AUTH: ElastiCache IAM token */
    char *valkey_cluster_id;       /* VALKEY_CLUSTER_ID */
    unsigned valkey_reauth_s;      /* VALKEY_REAUTH_INTERVAL_SECONDS; 0: never */

    /* ENABLE_SECRET_RELOAD: *_SECRET_ARN variables re-read on SIGHUP and
     * every secret_reload_interval_s (0: SIGHUP only) */
    bool secret_reload;
    unsigned secret_reload_interval_s;

    /* sessions and login */
    char *secret_key_base_previous; /* owned; never log; NULL if unset */
    size_t secret_key_base_previous_len;
    char *public_url;              /* no trailing slash */
    char *allowed_origins;         /* comma-separated, or NULL */
    unsigned trusted_proxy_hops;
    char *auth_success_redirect;
    char *auth_failure_redirect;
    char *auth_logout_redirect;
    bool cookie_secure;            /* Secure attribute on cookies */
    unsigned rate_limit_public;    /* requests per 60 s; 0: off */
    unsigned rate_limit_protected;
    unsigned cache_ttl_s;          /* CACHE_TTL_SECONDS; 0: no caching */
    unsigned events_retention_hours;  /* EVENTS_RETENTION_HOURS (72) */
    unsigned events_heartbeat_s;   /* EVENTS_HEARTBEAT_SECONDS (15) */
    unsigned events_poll_ms;       /* EVENTS_POLL_MS (1000) */
    unsigned events_session_check_s; /* EVENTS_SESSION_CHECK_SECONDS (15) */
    unsigned events_prune_s;       /* EVENTS_PRUNE_SECONDS (60; 0: never) */
    unsigned audit_retention_days; /* AUDIT_RETENTION_DAYS (90) */
    unsigned job_concurrency;      /* JOB_CONCURRENCY (4; 0: run none here) */
    unsigned job_lease_s;          /* JOB_LEASE_SECONDS (60) */
    unsigned job_poll_ms;          /* JOB_POLL_MS (1000) */
    /* Accounts (docs/AUTHENTICATION.md, "Email and password") */
    unsigned password_min_length;  /* PASSWORD_MIN_LENGTH (8) */
    unsigned password_hash_concurrency; /* PASSWORD_HASH_CONCURRENCY (0: the CPUs) */
    char *email_provider;          /* EMAIL_PROVIDER: "log", "smtp" or "ses" */
    char *email_from;              /* EMAIL_FROM */
    char *smtp_url;                /* SMTP_URL: a secret (its password) */
    char *auth_verify_url;         /* AUTH_VERIFY_URL: the link a verification mail carries */
    char *auth_reset_url;          /* AUTH_RESET_URL: the link a reset mail carries */
    char *totp_issuer;             /* TOTP_ISSUER: the name authenticator apps show */
    char *webauthn_rp_id;          /* WEBAUTHN_RP_ID: passkeys' relying party (PUBLIC_URL's host) */
    char *webauthn_origins;        /* WEBAUTHN_ORIGINS: comma-separated (PUBLIC_URL) */
    bool auth_email_code_signup;   /* AUTH_EMAIL_CODE_SIGNUP: a code may create a user (false) */
    unsigned job_busy_percent;     /* JOB_BUSY_PERCENT (10; 100: never yield) */
    unsigned job_retention_hours;  /* JOB_RETENTION_HOURS (24) */
    unsigned job_dead_retention_days; /* JOB_DEAD_RETENTION_DAYS (30) */
    /* WEBHOOK_RETRY_SCHEDULE: the delay before each retry, in ms */
    unsigned webhook_retry_ms[KILN_WEBHOOK_MAX_RETRIES];
    unsigned webhook_retries;
    bool webhook_allow_private;    /* WEBHOOK_ALLOW_PRIVATE (false) */
    unsigned webhook_timeout_s;    /* WEBHOOK_TIMEOUT_SECONDS (10) */
    unsigned webhook_retention_days; /* WEBHOOK_RETENTION_DAYS (30) */

    /* HEALTH_CACHE_MS: how long a finished /healthz, /readyz check of the
     * stores answers later requests too (0: only requests that arrive
     * while it runs share it) */
    unsigned health_cache_ms;
};

/* Returns the value of a variable or NULL; ctx is passed through. */
typedef const char *(*kiln_getenv_fn)(void *ctx, const char *name);

/*
 * Reading variables with every problem collected, for kiln_config_load and
 * for modules that read variables of their own (auth/oidc.c): problems are
 * appended to problems (may be NULL) as "config: …\n" lines and counted.
 */
struct kiln_env_reader {
    kiln_getenv_fn get;
    void *ctx;
    kiln_buf *problems;
    int count;
};
void kiln_env_problem(struct kiln_env_reader *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The value, or NULL when unset or empty (empty counts as unset). */
const char *kiln_env_value(struct kiln_env_reader *e, const char *name);

/* The process environment, for kiln_config_load. */
const char *kiln_config_process_env(void *ctx, const char *name);

/*
 * Fill cfg from the environment. Returns the number of problems found; each
 * is appended to problems as one line "config: …\n". cfg must be released
 * with kiln_config_free whatever the result.
 */
int kiln_config_load(struct kiln_config *cfg, kiln_getenv_fn get, void *ctx,
                     kiln_buf *problems);
void kiln_config_free(struct kiln_config *cfg);

const char *kiln_env_name(enum kiln_env env);

/* Comma-separated durations ("5s,5m,2h": units ms, s, m, h, d) into out
 * (ms); 0 or KILN_EINVAL. */
int kiln_config_parse_durations(const char *v, unsigned *out, unsigned cap, unsigned *n);

#endif
