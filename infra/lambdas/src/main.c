/*
 * kiln-rotate: the secret rotation functions of Kiln as one AWS Lambda
 * custom runtime (provided.al2023). The zip's bootstrap script execs this
 * program, which reads its configuration from the environment, then loops
 * over the Runtime API: next invocation, one rotation step, response or
 * error. See infra/lambdas/README.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "aws/aws.h"
#include "core/config.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/version.h"
#include "rotate.h"

static const char usage[] =
    "usage: kiln-rotate [--help | version]\n"
    "\n"
    "Secrets Manager rotation function for Kiln, run as an AWS Lambda custom\n"
    "runtime: it serves the Runtime API at $AWS_LAMBDA_RUNTIME_API, one rotation\n"
    "step (createSecret, setSecret, testSecret, finishSecret) per invocation.\n"
    "\n"
    "environment:\n"
    "  ROTATION_KIND            secret-key-base | db-user | valkey-user (each zip's\n"
    "                           bootstrap sets its own kind unless this is set)\n"
    "  HOT_RELOAD               true: no ECS deployment after finishSecret (Kiln runs\n"
    "                           with ENABLE_SECRET_RELOAD=true); default false\n"
    "  ECS_CLUSTER, ECS_SERVICE the service to redeploy (needed unless HOT_RELOAD)\n"
    "  MASTER_SECRET_ARN        db-user: the secret of the admin login\n"
    "  DB_SSLMODE               db-user: libpq sslmode, default require\n"
    "  DB_SSLROOTCERT           db-user: CA file (verify-ca, verify-full)\n"
    "  DB_CONNECT_TIMEOUT_SECONDS  db-user: default 10\n"
    "  VALKEY_HOST, VALKEY_PORT valkey-user: where testSecret connects (port 6379)\n"
    "  VALKEY_SSL               valkey-user: TLS, default true; VALKEY_CA_FILE\n"
    "  ELASTICACHE_USER_ID      valkey-user: the user's id, default its name\n"
    "  VALKEY_TEST_TIMEOUT_SECONDS  valkey-user: how long testSecret retries, 60\n"
    "  AWS_REGION, AWS_ACCESS_KEY_ID… (set by Lambda), AWS_ENDPOINT_URL_*\n"
    "  SSL_CERT_FILE            CA bundle for HTTPS (the bootstrap finds the system's)\n"
    "  LOG_LEVEL                debug | info | warning | error (info)\n";

static bool env_bool(struct kiln_env_reader *r, const char *name, bool def)
{
    const char *v = kiln_env_value(r, name);
    if (!v)
        return def;
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes"))
        return true;
    if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no"))
        return false;
    kiln_env_problem(r, "%s must be true or false (got \"%.40s\")", name, v);
    return def;
}

static unsigned env_uint(struct kiln_env_reader *r, const char *name, unsigned def,
                         unsigned min, unsigned max)
{
    const char *v = kiln_env_value(r, name);
    if (!v)
        return def;
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*end || end == v || n < min || n > max) {
        kiln_env_problem(r, "%s must be an integer from %u to %u (got \"%.40s\")", name, min,
                         max, v);
        return def;
    }
    return (unsigned)n;
}

static void read_env(struct kiln_env_reader *r, struct rot_env *env)
{
    memset(env, 0, sizeof *env);
    const char *kind = kiln_env_value(r, "ROTATION_KIND");
    env->kind_name = kind;
    if (!kind)
        kiln_env_problem(r, "ROTATION_KIND is not set (secret-key-base, db-user or valkey-user)");
    else if (!strcmp(kind, "secret-key-base"))
        env->kind = ROT_SECRET_KEY_BASE;
    else if (!strcmp(kind, "db-user"))
        env->kind = ROT_DB_USER;
    else if (!strcmp(kind, "valkey-user"))
        env->kind = ROT_VALKEY_USER;
    else
        kiln_env_problem(r, "ROTATION_KIND must be secret-key-base, db-user or valkey-user "
                            "(got \"%.40s\")", kind);

    env->hot_reload = env_bool(r, "HOT_RELOAD", false);
    env->ecs_cluster = kiln_env_value(r, "ECS_CLUSTER");
    env->ecs_service = kiln_env_value(r, "ECS_SERVICE");
    if (!env->hot_reload && (!env->ecs_cluster || !env->ecs_service))
        kiln_env_problem(r, "ECS_CLUSTER and ECS_SERVICE name the service to redeploy after a "
                            "rotation; set them, or HOT_RELOAD=true");

    env->master_arn = kiln_env_value(r, "MASTER_SECRET_ARN");
    env->db_sslmode = kiln_env_value(r, "DB_SSLMODE");
    if (!env->db_sslmode)
        env->db_sslmode = "require";
    else if (strcmp(env->db_sslmode, "disable") && strcmp(env->db_sslmode, "allow") &&
             strcmp(env->db_sslmode, "prefer") && strcmp(env->db_sslmode, "require") &&
             strcmp(env->db_sslmode, "verify-ca") && strcmp(env->db_sslmode, "verify-full"))
        kiln_env_problem(r, "DB_SSLMODE must be disable, allow, prefer, require, verify-ca or "
                            "verify-full (got \"%.40s\")", env->db_sslmode);
    env->db_sslrootcert = kiln_env_value(r, "DB_SSLROOTCERT");
    env->db_connect_timeout_s = env_uint(r, "DB_CONNECT_TIMEOUT_SECONDS", 10, 1, 300);
    if (env->kind == ROT_DB_USER && kind && !env->master_arn)
        kiln_env_problem(r, "ROTATION_KIND=db-user needs MASTER_SECRET_ARN (the admin login "
                            "that sets the other user's password)");

    env->valkey_host = kiln_env_value(r, "VALKEY_HOST");
    env->valkey_port = env_uint(r, "VALKEY_PORT", 6379, 1, 65535);
    env->valkey_tls = env_bool(r, "VALKEY_SSL", true);
    env->valkey_ca_file = kiln_env_value(r, "VALKEY_CA_FILE");
    env->elasticache_user_id = kiln_env_value(r, "ELASTICACHE_USER_ID");
    env->valkey_test_timeout_s = env_uint(r, "VALKEY_TEST_TIMEOUT_SECONDS", 60, 0, 900);
    if (env->kind == ROT_VALKEY_USER && kind && !env->valkey_host)
        kiln_env_problem(r, "ROTATION_KIND=valkey-user needs VALKEY_HOST (testSecret logs in "
                            "there)");
    if (!kiln_aws_region())
        kiln_env_problem(r, "AWS_REGION is not set");
}

/* Parse the event; its strings point into *doc. */
static int parse_event(const struct rt_invocation *inv, json_t **doc, struct rot_event *ev,
                       struct rot_error *e)
{
    *doc = json_loadb(inv->event.p ? inv->event.p : "", inv->event.len, 0, NULL);
    memset(ev, 0, sizeof *ev);
    ev->request_id = inv->request_id;
    ev->deadline_ms = inv->deadline_ms;
    ev->secret_id = json_string_value(json_object_get(*doc, "SecretId"));
    ev->token = json_string_value(json_object_get(*doc, "ClientRequestToken"));
    ev->step = json_string_value(json_object_get(*doc, "Step"));
    if (!json_is_object(*doc)) {
        rot_fail(e, "InvalidEvent", "the event is not a JSON object");
        return -1;
    }
    const char *missing = !ev->secret_id || !*ev->secret_id ? "SecretId"
                        : !ev->token || !*ev->token     ? "ClientRequestToken"
                        : !ev->step || !*ev->step       ? "Step"
                                                        : NULL;
    if (missing) {
        rot_fail(e, "InvalidEvent", "the event has no %s (a Secrets Manager rotation event "
                                    "has SecretId, ClientRequestToken and Step)", missing);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
            printf("kiln-rotate %s\n", kiln_version());
            return 0;
        }
        fputs(usage, strcmp(argv[1], "--help") && strcmp(argv[1], "-h") && strcmp(argv[1], "help")
                         ? stderr : stdout);
        return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") && strcmp(argv[1], "help") ? 2
                                                                                             : 0;
    }
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    if (!api || !*api) {
        fputs("kiln-rotate: AWS_LAMBDA_RUNTIME_API is not set: this runs inside AWS Lambda "
              "(or next to a Runtime API emulator)\n\n", stderr);
        fputs(usage, stderr);
        return 2;
    }
    /* HTTPS trust: Debian's libcurl looks for
     * /etc/ssl/certs/ca-certificates.crt, which Amazon Linux 2023 does not
     * have; the bootstrap exports its bundle as SSL_CERT_FILE (which
     * OpenSSL itself honours for the Valkey TLS connection). */
    const char *cert = getenv("SSL_CERT_FILE");
    if (cert && *cert && access(cert, R_OK) == 0)
        kiln_http_client_set_ca_file(cert);
    enum kiln_log_level level = KILN_LOG_INFO;
    const char *lv = getenv("LOG_LEVEL");
    if (lv && *lv)
        kiln_log_level_parse(lv, &level);
    kiln_log_set_level(level);
    if (kiln_http_client_init() != 0) {
        fputs("kiln-rotate: curl_global_init failed\n", stderr);
        return 1;
    }

    kiln_buf problems;
    kiln_buf_init(&problems, 64 * 1024);
    struct kiln_env_reader r = { kiln_config_process_env, NULL, &problems, 0 };
    struct rot_env env;
    kiln_aws_setup(&r);
    read_env(&r, &env);
    char err[1024];
    if (r.count) {
        struct rot_error e;
        /* One line for the Runtime API; every problem in the log. */
        kiln_buf_append(&problems, "", 1);
        for (char *line = problems.p; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            kiln_log(KILN_LOG_ERROR, "configuration problem", "problem", line, NULL);
            line = nl ? nl + 1 : NULL;
        }
        rot_fail(&e, "Runtime.ConfigurationError", "%d configuration problem%s: %s", r.count,
                 r.count == 1 ? "" : "s", problems.p ? problems.p : "");
        if (rt_init_error(api, &e, err, sizeof err) != 0)
            kiln_log(KILN_LOG_ERROR, "cannot report the init error", "error", err, NULL);
        kiln_buf_free(&problems);
        return 1;
    }
    kiln_buf_free(&problems);
    kiln_log(KILN_LOG_INFO, "kiln-rotate ready", "kind", env.kind_name, "version",
             kiln_version(), "hot_reload", env.hot_reload ? "true" : "false", NULL);

    for (;;) {
        struct rt_invocation inv;
        int rc = rt_next(api, &inv, err, sizeof err);
        if (rc) {
            /* The Runtime API does not fail in Lambda; when it does, exit and
             * let Lambda start a fresh environment. */
            kiln_log(KILN_LOG_ERROR, "runtime API unavailable; exiting", "error", err, NULL);
            rt_invocation_free(&inv);
            return 1;
        }
        struct rot_event ev;
        struct rot_error e = { "", "" };
        json_t *doc;
        rc = parse_event(&inv, &doc, &ev, &e);
        if (rc == 0)
            rc = rot_handle(&env, &ev, &e);
        if (rc == 0) {
            kiln_log(KILN_LOG_INFO, "rotation step done", "request_id", inv.request_id, "step",
                     ev.step, NULL);
            if (rt_respond(api, inv.request_id, "null", err, sizeof err) != 0)
                kiln_log(KILN_LOG_ERROR, "cannot post the response", "error", err, NULL);
        } else {
            kiln_log(KILN_LOG_ERROR, "rotation step failed", "request_id", inv.request_id,
                     "step", ev.step, "error_type", e.type, "error", e.message, NULL);
            if (rt_error(api, inv.request_id, &e, err, sizeof err) != 0)
                kiln_log(KILN_LOG_ERROR, "cannot post the error", "error", err, NULL);
        }
        json_decref(doc);
        rt_invocation_free(&inv);
    }
}
