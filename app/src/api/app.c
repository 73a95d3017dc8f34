/*
 * One database connection and one kv handle per worker thread, opened when
 * the worker starts (no I/O yet: both connect on first use) and closed when
 * it stops. Nothing here is shared between workers except the memory kv
 * store, which is thread-safe.
 *
 * Each event loop gets stores of its own when the database is PostgreSQL:
 * a pool of connections lent to its fibers and one shared kv handle
 * (pipelined on Valkey). Handlers then run on the loop's fibers and wait
 * without a thread switch. SQLite has no socket to wait on (its calls block
 * the thread), so with SQLite every handler stays on the worker pool.
 */
#include "api/api.h"
#include "api/app.h"

#include "api/declare.h"
#include "auth/session.h"
#include "events/feed.h"
#include "jobs/builtin.h"
#include "jobs/jobs.h"
#include "webhooks/webhooks.h"
#include "api/engine.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/reload.h"
#include "aws/aws.h"
#include "aws/iam.h"
#include "aws/secrets.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/dl.h"
#include "core/fiber.h"
#include "core/err.h"
#include "core/log.h"
#include "http/server.h"
#include "store/stores.h"
#include "core/wipe.h"

/*
 * Credentials for new connections, asked for at each connect: an IAM token
 * (DB_IAM_AUTH, VALKEY_IAM_AUTH) or the current value of a rotated secret
 * (DB_USERNAME / DB_PASSWORD / VALKEY_USER / VALKEY_PASSWORD from
 * *_SECRET_ARN, re-read by the secret reload). Connections already open keep
 * the credentials they logged in with.
 *
 * An RDS token is valid 15 minutes; one is reused while more than 5 remain
 * (RDS counts logins per token too, so a burst of reconnects after a
 * failover does not sign hundreds), keyed by host, port and user.
 */
#define RDS_TOKEN_REUSE_S (KILN_IAM_TOKEN_TTL_S - 300)

static struct {
    pthread_mutex_t lock;
    char key[600];           /* host:port:user */
    char *token;
    int64_t made_at;         /* seconds */
} rds_token = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int rds_token_for(const char *host, unsigned port, const char *user, char *out,
                         size_t cap, char *err, size_t errcap)
{
    char key[600];
    snprintf(key, sizeof key, "%s:%u:%s", host, port, user);
    int64_t now = (int64_t)kiln_aws_now();
    int rc = 0;
    pthread_mutex_lock(&rds_token.lock);
    if (!rds_token.token || strcmp(rds_token.key, key) != 0 ||
        now - rds_token.made_at >= RDS_TOKEN_REUSE_S || now < rds_token.made_at) {
        kiln_buf t;
        kiln_buf_init(&t, 16 * 1024);
        rc = kiln_rds_token(kiln_aws_region(), host, port, user, &t, err, errcap);
        if (rc == 0) {
            kiln_free_secret(rds_token.token);
            rds_token.token = kiln_strndup(t.p, t.len);
            snprintf(rds_token.key, sizeof rds_token.key, "%s", key);
            rds_token.made_at = now;
        }
        if (t.p)
            explicit_bzero(t.p, t.len);
        kiln_buf_free(&t);
    }
    if (rc == 0 && strlen(rds_token.token) >= cap) {
        snprintf(err, errcap, "RDS auth token too long");
        rc = KILN_EINVAL;
    } else if (rc == 0) {
        memcpy(out, rds_token.token, strlen(rds_token.token) + 1);
    }
    pthread_mutex_unlock(&rds_token.lock);
    return rc;
}

static int db_credentials(void *ctx, const struct kiln_db_target *target, char *user,
                          size_t user_cap, char *password, size_t password_cap, char *err,
                          size_t errcap)
{
    const struct kiln_config *cfg = ctx;
    kiln_secret_vars_copy("DB_USERNAME", user, user_cap);
    if (!cfg->db_iam_auth) {
        kiln_secret_vars_copy("DB_PASSWORD", password, password_cap);
        return 0;
    }
    const char *who = user[0] ? user : target->user;
    if (!target->host || !who) {
        snprintf(err, errcap, "IAM auth needs a host and a user");
        return KILN_EINVAL;
    }
    int rc = rds_token_for(target->host, target->port, who, password, password_cap, err, errcap);
    if (rc && !cfg->require_iam_auth &&
        (kiln_secret_vars_copy("DB_PASSWORD", password, password_cap) ||
         strstr(cfg->db_conninfo, "password="))) {
        /* Without REQUIRE_IAM_AUTH the configured password is the fallback
         * (as in the original); say so, every time. */
        kiln_log(KILN_LOG_WARNING, "database IAM token unavailable; using DB_PASSWORD",
                 "reason", err, NULL);
        return 0;
    }
    return rc;
}

/* Only credentials that come from secrets can have rotated under us. */
static void db_rejected(void *ctx)
{
    (void)ctx;
    if (kiln_secret_vars_has("DB_USERNAME") || kiln_secret_vars_has("DB_PASSWORD"))
        kiln_reload_kick("database");
}

static void kv_rejected(void *ctx)
{
    (void)ctx;
    if (kiln_secret_vars_has("VALKEY_USER") || kiln_secret_vars_has("VALKEY_PASSWORD"))
        kiln_reload_kick("valkey");
}

static unsigned long credentials_version(void *ctx)
{
    (void)ctx;
    return kiln_secret_vars_generation();
}

static int kv_credentials(void *ctx, char *user, size_t user_cap, char *password,
                          size_t password_cap, char *err, size_t errcap)
{
    const struct kiln_config *cfg = ctx;
    if (!kiln_secret_vars_copy("VALKEY_USER", user, user_cap) && cfg->valkey_user)
        snprintf(user, user_cap, "%s", cfg->valkey_user);
    if (!cfg->valkey_iam_auth) {
        if (!kiln_secret_vars_copy("VALKEY_PASSWORD", password, password_cap) &&
            cfg->valkey_password)
            snprintf(password, password_cap, "%s", cfg->valkey_password);
        return 0;
    }
    kiln_buf t;
    kiln_buf_init(&t, 16 * 1024);
    int rc = kiln_elasticache_token(kiln_aws_region(), cfg->valkey_cluster_id, user, &t, err,
                                    errcap);
    if (rc == 0 && t.len >= password_cap) {
        snprintf(err, errcap, "ElastiCache auth token too long");
        rc = KILN_EINVAL;
    } else if (rc == 0) {
        memcpy(password, t.p, t.len + 1);
    }
    if (t.p)
        explicit_bzero(t.p, t.len);
    kiln_buf_free(&t);
    return rc;
}


static void *on_worker_start(void *arg, unsigned index)
{
    struct kiln_app *app = arg;
    (void)index;
    struct kiln_stores *w = kiln_calloc(1, sizeof *w);
    w->db = kiln_db_open(&app->db);
    w->kv = kiln_kv_open(app->kv_store);
    return w;
}

static void on_worker_stop(void *arg, void *context)
{
    struct kiln_stores *w = context;
    (void)arg;
    if (!w)
        return;
    kiln_db_close(w->db);
    kiln_kv_close(w->kv);
    free(w);
}

static void *on_loop_start(void *arg, unsigned index)
{
    struct kiln_app *app = arg;
    (void)index;
    if (app->db.dialect != KILN_DB_POSTGRES)
        return NULL;
    struct kiln_stores *l = kiln_calloc(1, sizeof *l);
    l->db = kiln_db_pool_open(&app->db, app->loop_db_connections);
    l->kv = kiln_kv_open_shared(app->kv_store);
    return l;
}

/*
 * Open the loop's first connections before requests need them: Valkey and
 * the pool's first database connection. The pool opens the others as load
 * needs them (store/db.c, member_load), one at a time. A failure here is
 * left to the request path, which connects later with its usual backoff.
 */
static void on_loop_warm(void *arg, void *context)
{
    struct kiln_app *app = arg;
    struct kiln_stores *l = context;
    /* Nothing here may hold up a drain: its waits end when one starts. */
    kiln_wait_abortable();
    if (l->kv && !kiln_server_draining())
        kiln_kv_ping(l->kv, app->db.connect_timeout_s * 1000);
    int loading = kiln_dl_pq_ready_fd();
    if (loading >= 0) {
        /* libpq still loading on its own thread (core/dl.h): wait for it
         * here, without blocking the loop, instead of in the first connect. */
        struct kiln_fdwatch *watch = NULL;
        kiln_wait_fd(&watch, loading, POLLIN, kiln_now_ms() + 10000);
        kiln_fdwatch_close(&watch);
    }
    if (!kiln_server_draining()) {
        kiln_db_pool_connect(l->db, 0);
        /* The first loop here compares the declarations with the columns,
         * before traffic needs them (engine.h). */
        kiln_resources_verify_once(l->db);
    }
}

void kiln_app_init(struct kiln_app *app, const struct kiln_config *cfg)
{
    memset(app, 0, sizeof *app);
    app->cfg = cfg;
    app->db.dialect = cfg->db_conninfo ? KILN_DB_POSTGRES : KILN_DB_SQLITE;
    app->db.conninfo = cfg->db_conninfo;
    app->db.path = cfg->db_path;
    app->db.prepared_statements = cfg->db_prepared_statements;
    app->db.unpipelined = !cfg->db_pipeline;
    app->db.connect_timeout_s = cfg->db_connect_timeout_s;
    app->db.query_timeout_ms = cfg->db_query_timeout_ms;
    if (cfg->db_iam_auth || kiln_secret_vars_has("DB_USERNAME") ||
        kiln_secret_vars_has("DB_PASSWORD")) {
        app->db.credentials = db_credentials;
        app->db.credentials_ctx = (void *)cfg;
        app->db.credentials_rejected = db_rejected;
        app->db.credentials_version = credentials_version;
    }

    app->kv.host = cfg->valkey_host;
    app->kv.port = cfg->valkey_port;
    app->kv.user = cfg->valkey_user;
    app->kv.password = cfg->valkey_password;
    app->kv.tls = cfg->valkey_tls;
    app->kv.ca_file = cfg->valkey_ca_file;
    app->kv.connect_timeout_ms = cfg->valkey_connect_timeout_ms;
    app->kv.command_timeout_ms = cfg->valkey_command_timeout_ms;
    app->kv.max_keys = cfg->kv_memory_max_keys;
    if (cfg->valkey_iam_auth || kiln_secret_vars_has("VALKEY_USER") ||
        kiln_secret_vars_has("VALKEY_PASSWORD")) {
        app->kv.credentials = kv_credentials;
        app->kv.credentials_ctx = (void *)cfg;
        app->kv.credentials_rejected = kv_rejected;
        app->kv.credentials_version = credentials_version;
        app->kv.reauth_interval_s = cfg->valkey_iam_auth ? cfg->valkey_reauth_s : 0;
    }
    app->kv_store = kiln_kv_store_new(&app->kv);

    app->hooks.start = on_worker_start;
    app->hooks.stop = on_worker_stop;
    app->hooks.arg = app;

    /* DB_POOL_SIZE connections shared out over the loops, at least one each. */
    unsigned loops = cfg->http_loops ? cfg->http_loops : 1;
    app->loop_db_connections = cfg->workers / loops ? cfg->workers / loops : 1;
    app->loop_hooks.start = on_loop_start;
    app->loop_hooks.stop = on_worker_stop;
    app->loop_hooks.warm = on_loop_warm;
    app->loop_hooks.arg = app;
}

int kiln_app_feed_start(struct kiln_app *app)
{
    static const char *names[KILN_FEED_MAX_RESOURCES];
    size_t n = 0;
    for (size_t i = 0; i < kiln_resources_count && n < KILN_FEED_MAX_RESOURCES; i++)
        names[n++] = kiln_resources[i]->name;
    const struct kiln_config *cfg = app->cfg;
    struct kiln_feed_config fc = {
        .db = app->db,
        .kv = app->kv_store,
        .resources = names,
        .nresources = n,
        .heartbeat_ms = cfg->events_heartbeat_s * 1000,
        .poll_ms = cfg->events_poll_ms,
        .session_check_s = cfg->events_session_check_s,
        .session_exists = kiln_session_exists,
        .render = kiln_resource_event_json,
    };
    return kiln_feed_start(&fc);
}

int kiln_app_jobs_start(struct kiln_app *app)
{
    const struct kiln_config *cfg = app->cfg;
    static char instance[128];
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(instance, sizeof instance, "%s/%ld", host[0] ? host : "kiln", (long)getpid());
    kiln_jobs_register_builtin(cfg);
    kiln_webhooks_init(cfg, kiln_resource_event_json);
    kiln_accounts_init(cfg);
    struct kiln_jobs_config jc = {
        .db = app->db,
        .kv = app->kv_store,
        .concurrency = cfg->job_concurrency,
        .lease_s = cfg->job_lease_s,
        .poll_ms = cfg->job_poll_ms,
        .busy_percent = cfg->job_busy_percent,
        .retention_hours = cfg->job_retention_hours,
        .dead_retention_days = cfg->job_dead_retention_days,
        .instance = instance,
        .shutdown_timeout_s = cfg->shutdown_timeout_s,
    };
    return kiln_jobs_start(&jc);
}

void kiln_app_free(struct kiln_app *app)
{
    kiln_kv_store_free(app->kv_store);
    app->kv_store = NULL;
}

struct kiln_db *app_db(const struct kiln_req *req)
{
    const struct kiln_stores *w = req->context;
    return w ? w->db : NULL;
}

struct kiln_kv *app_kv(const struct kiln_req *req)
{
    const struct kiln_stores *w = req->context;
    return w ? w->kv : NULL;
}
