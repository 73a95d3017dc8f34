/*
 * kiln: serve | migrate | healthcheck | openapi | version. The command line takes no options
 * beyond the command: configuration comes from the environment only (see
 * docs/ENVIRONMENT.md), so the container, systemd and a shell behave alike.
 * `kiln gen` is the exception: a developer's tool that writes code into a
 * repository, with arguments of its own (gen/resource.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/app.h"
#include "api/engine.h"
#include "core/err.h"
#include "api/reload.h"
#include "events/feed.h"
#include "jobs/jobs.h"
#include "auth/oidc.h"
#include "aws/aws.h"
#include "aws/secrets.h"
#include "auth/session.h"
#include "gen/resource.h"
#include "store/migrate.h"
#include "core/caps.h"
#include "core/dl.h"
#include "core/config.h"
#include "core/log.h"
#include "core/str.h"
#include "core/version.h"
#include "http/server.h"
#include "http/tls.h"

static const char usage[] =
    "usage: kiln <command>\n"
    "\n"
    "commands:\n"
    "  serve        run the HTTP server (configuration from the environment);\n"
    "               applies pending migrations first when MIGRATE_ON_START is on\n"
    "  migrate      apply pending database migrations, compare every declared\n"
    "               resource with the database's columns, and exit\n"
    "  migrate --check\n"
    "               apply nothing; only compare the declared resources with\n"
    "               the database's columns (exit 1 naming the first mismatch)\n"
    "  healthcheck  exit 0 if the server on $PORT answers GET /livez (for a\n"
    "               container HEALTHCHECK; speaks TLS when SSL_CERTFILE or\n               SSL_SELF_SIGNED is set)\n"
    "  openapi      print the OpenAPI document of the API (no configuration needed)\n"
    "  version      print the version\n"
    "  gen          write code into this repository: `kiln gen resource NAME\n"
    "               FIELD...` adds a resource (kiln gen resource --help)\n"
    "  help         show this help (also -h, --help)\n"
    "\n"
    "Configuration: environment variables, see docs/ENVIRONMENT.md.\n";

static void on_applied(void *ctx, const char *version)
{
    bool *print = ctx;
    if (*print)
        printf("applied %s\n", version);
    kiln_log(KILN_LOG_INFO, "migration applied", "version", version, NULL);
}

/* Compare the declared resources with db's columns (api/engine.h). 0 or
 * 1 (logged, and printed with print). With only_mismatch (the check at
 * start), a database not migrated yet or not reachable is left to the
 * requests (503), and only code and schema that disagree stop the start. */
static int check_resources(struct kiln_db *db, bool print, bool only_mismatch)
{
    char err[1024];
    kiln_arena *a = kiln_arena_new(64 * 1024);
    int rc = kiln_resources_verify(db, a, err, sizeof err);
    kiln_arena_free(a);
    if (rc && only_mismatch && rc != KILN_EINVAL) {
        kiln_log(KILN_LOG_WARNING, "declared resources not compared with the database yet",
                 "error", err, NULL);
        return 0;
    }
    if (rc) {
        kiln_log(KILN_LOG_ERROR,
                 rc == KILN_EINVAL ? "declared resources do not match the database"
                                   : "declared resources not compared with the database",
                 "error", err, NULL);
        if (print)
            fprintf(stderr, "kiln migrate: %s\n", err);
        return 1;
    }
    kiln_resources_verified();
    return 0;
}

/* Apply pending migrations on a connection of our own (none with
 * check_only), then compare the declarations with the columns. 0 or 1
 * (logged). */
static int run_migrations(const struct kiln_app *app, bool print, bool check_only)
{
    struct kiln_db *db = kiln_db_open(&app->db);
    char err[1024];
    size_t applied = 0;
    if (check_only) {
        /* kiln migrate --check fails on anything; the check at start
         * (print off) only on a mismatch. */
        int rc = check_resources(db, print, !print);
        if (!rc && print)
            printf("every declared resource matches the %s database's columns\n",
                   kiln_db_driver(db));
        kiln_db_close(db);
        return rc;
    }
    int rc = kiln_migrate(db, on_applied, &print, &applied, err, sizeof err);
    if (rc) {
        kiln_log(KILN_LOG_ERROR, "migrations failed", "error", err, "driver",
                 kiln_db_driver(db), NULL);
        if (print)
            fprintf(stderr, "kiln migrate: %s\n", err);
    } else {
        char n[24];
        snprintf(n, sizeof n, "%zu", applied);
        kiln_log(KILN_LOG_INFO, applied ? "migrations applied" : "no pending migrations",
                 "applied", n, "driver", kiln_db_driver(db), NULL);
        if (print && !applied)
            printf("nothing to apply: the %s database is up to date\n", kiln_db_driver(db));
        rc = check_resources(db, print, false);
    }
    kiln_db_close(db);
    return rc ? 1 : 0;
}

extern char **environ;

/*
 * Load and validate the configuration; prints problems and returns 2.
 * Variables given as *_SECRET_ARN are fetched from Secrets Manager first
 * (aws/secrets.h), so the configuration reads them like any other; a fetch
 * that fails returns 1 (logged: the variable and AWS's reason, never a
 * value).
 */
static int load_config(struct kiln_config *cfg)
{
    kiln_buf problems;
    kiln_buf_init(&problems, 64 * 1024);
    struct kiln_env_reader aws = { kiln_config_process_env, NULL, &problems, 0 };
    kiln_aws_setup(&aws);
    int n = aws.count + kiln_secret_vars_find(environ, &problems);
    if (n == 0 && kiln_secret_vars_count() > 0) {
        char err[1024];
        if (kiln_secret_vars_resolve(err, sizeof err) != 0) {
            kiln_log(KILN_LOG_ERROR, "cannot read a secret; not starting", "error", err, NULL);
            fprintf(stderr, "kiln: cannot read a secret: %s\n", err);
            kiln_buf_free(&problems);
            kiln_secret_vars_free();
            memset(cfg, 0, sizeof *cfg);
            return 1;
        }
    }
    n += kiln_config_load(cfg, kiln_secret_vars_getenv, NULL, &problems);
    n += kiln_providers_load(kiln_secret_vars_getenv, NULL, cfg, &problems);
    struct kiln_env_reader uploads = { kiln_secret_vars_getenv, NULL, &problems, 0 };
    api_uploads_setup(&uploads);
    n += uploads.count;
    if (n == 0 && (cfg->ssl_certfile || cfg->ssl_self_signed)) {
        /* Load the pair now so that a bad file is a config error (exit 2). */
        char err[512];
        SSL_CTX *ctx = kiln_tls_ctx_new(cfg->ssl_certfile, cfg->ssl_keyfile, err, sizeof err);
        if (!ctx) {
            kiln_buf_printf(&problems, "config: %s\n", err);
            n++;
        }
        kiln_tls_ctx_free(ctx);
    }
    if (n) {
        fwrite(problems.p, 1, problems.len, stderr);
        fprintf(stderr, "kiln: %d configuration problem%s; not starting\n", n, n == 1 ? "" : "s");
        kiln_buf_free(&problems);
        kiln_providers_free();
        api_uploads_free();
        kiln_config_free(cfg);
        kiln_secret_vars_free();
        return 2;
    }
    kiln_buf_free(&problems);
    kiln_log_set_level(cfg->log_level);
    return 0;
}

static int cmd_migrate(bool check_only)
{
    struct kiln_config cfg;
    struct kiln_app app;
    int rc = load_config(&cfg);
    if (rc)
        return rc;
    kiln_app_init(&app, &cfg);
    rc = run_migrations(&app, true, check_only);
    kiln_app_free(&app);
    kiln_providers_free();
    api_uploads_free();
    kiln_config_free(&cfg);
    kiln_secret_vars_free();
    kiln_aws_reset();
    return rc;
}

static int cmd_serve(void)
{
    struct kiln_config cfg;
    struct kiln_app app;
    /* Before any other thread exists, so that every one inherits it. */
    kiln_reload_block_signal();
    int rc = load_config(&cfg);
    if (rc)
        return rc;
    if (cfg.secret_key_base_generated)
        kiln_log(KILN_LOG_WARNING,
                 "SECRET_KEY_BASE not set: using a random key for this run; "
                 "sessions will not survive a restart",
                 "env", kiln_env_name(cfg.env), NULL);
    if (cfg.db_conninfo && !cfg.migrate_on_start)
        kiln_dl_pq_background(); /* migrations would need it at once */
    kiln_auth_init(&cfg);
    kiln_app_init(&app, &cfg);
    if (cfg.db_iam_auth || cfg.valkey_iam_auth) {
        /* Warm the credentials cache: the first connection then signs its
         * token without waiting for the credentials endpoint. */
        struct kiln_aws_creds c;
        char err[512];
        if (kiln_aws_credentials(&c, err, sizeof err) != 0)
            kiln_log(KILN_LOG_ERROR, "no AWS credentials for IAM auth yet", "error", err, NULL);
        explicit_bzero(&c, sizeof c);
    }
    /* With migrations at start, they compare the declarations with the
     * columns too. Without them, SQLite is compared here (a local file:
     * no wait); PostgreSQL on the first loop's warm-up, so a start never
     * waits for the network (api/engine.h). */
    rc = cfg.migrate_on_start ? run_migrations(&app, false, false)
         : !cfg.db_conninfo   ? run_migrations(&app, false, true)
                              : 0;
    if (rc == 0)
        rc = kiln_app_feed_start(&app) ? 1 : 0;
    if (rc == 0 && kiln_app_jobs_start(&app) != 0) {
        kiln_feed_stop();
        rc = 1;
    }
    if (rc == 0) {
        kiln_reload_start(&cfg);
        size_t nroutes;
        const struct kiln_route *routes = api_routes(&nroutes);
        rc = kiln_server_run(&cfg, routes, nroutes, &app.hooks, &app.loop_hooks);
        kiln_reload_stop();
        kiln_jobs_stop();
        kiln_feed_stop();
    }
    kiln_dl_pq_join();
    kiln_app_free(&app);
    kiln_providers_free();
    api_uploads_free();
    kiln_config_free(&cfg);
    kiln_secret_vars_free();
    kiln_aws_reset();
    return rc;
}

/* Reads "HTTP/1.x 200" from the local server, plain or TLS. */
static int cmd_healthcheck(void)
{
    const char *port_s = getenv("PORT");
    uint64_t port = 4000;
    if (port_s && *port_s && !kiln_str_to_u64(kiln_str_c(port_s), 65535, &port)) {
        fprintf(stderr, "healthcheck: PORT is not a port number\n");
        return 2;
    }
    const char *bind = getenv("BIND_ADDRESS");
    bool v6 = bind && strchr(bind, ':');
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    struct timeval tv = { 3, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* connect too */
    int rc;
    if (v6) {
        struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        fprintf(stderr, "healthcheck: cannot connect to port %u: %s\n", (unsigned)port,
                strerror(errno));
        close(fd);
        return 1;
    }
    static const char request[] =
        "GET /livez HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kiln-healthcheck\r\n"
        "Connection: close\r\n\r\n";
    char reply[64] = { 0 };
    int got = 0;
    const char *cert = getenv("SSL_CERTFILE");
    const char *self = getenv("SSL_SELF_SIGNED");
    if ((cert && *cert) || (self && strcmp(self, "true") == 0)) {
        /* Our own process on loopback: liveness, not identity, is checked. */
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL *ssl = ctx ? SSL_new(ctx) : NULL;
        if (ssl && SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1 &&
            SSL_write(ssl, request, sizeof request - 1) > 0) {
            while (got < (int)sizeof reply - 1) {
                int n = SSL_read(ssl, reply + got, (int)sizeof reply - 1 - got);
                if (n <= 0)
                    break;
                got += n;
            }
        }
        SSL_free(ssl);
        SSL_CTX_free(ctx);
    } else if (write(fd, request, sizeof request - 1) == (ssize_t)(sizeof request - 1)) {
        while (got < (int)sizeof reply - 1) {
            ssize_t n = read(fd, reply + got, sizeof reply - 1 - (size_t)got);
            if (n <= 0)
                break;
            got += (int)n;
        }
    }
    close(fd);
    if (got >= 12 && strncmp(reply, "HTTP/1.", 7) == 0 && strncmp(reply + 8, " 200", 4) == 0)
        return 0;
    fprintf(stderr, "healthcheck: /livez did not answer 200\n");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        if (argc > 2)
            goto extra;
        printf("kiln %s\n", kiln_version());
        return 0;
    }
    if (!strcmp(cmd, "openapi")) {
        /* Generated from the route table and the declarations
         * (api/openapi.c): no configuration, database or port. */
        if (argc > 2)
            goto extra;
        kiln_caps_bind_end();
        return api_openapi_write(stdout);
    }
    if (!strcmp(cmd, "serve") || !strcmp(cmd, "healthcheck") || !strcmp(cmd, "migrate")) {
        bool check = cmd[0] == 'm' && argc == 3 && !strcmp(argv[2], "--check");
        if (argc > 2 && !check)
            goto extra;
        /* Only serve binds a port: the others give up the image's file
         * capability before doing anything (core/caps.h). */
        if (cmd[0] != 's')
            kiln_caps_bind_end();
        return cmd[0] == 's' ? cmd_serve() : cmd[0] == 'm' ? cmd_migrate(check) : cmd_healthcheck();
    }
    if (!strcmp(cmd, "gen")) {
        kiln_caps_bind_end();
        return kiln_gen_main(argc - 1, argv + 1);
    }
    fprintf(stderr, "kiln: unknown %s '%s'\n\n%s", cmd[0] == '-' ? "option" : "command", cmd,
            usage);
    return 2;
extra:
    fprintf(stderr, "kiln %s: unknown %s '%s' (configuration comes from the environment)\n",
            cmd, argv[2][0] == '-' ? "option" : "argument", argv[2]);
    return 2;
}
