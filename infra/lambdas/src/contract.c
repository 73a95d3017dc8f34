/*
 * Secrets Manager's rotation contract, for every kind
 * (docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_lambda-functions.html):
 *
 * Before any step: DescribeSecret; rotation must be enabled and the token
 * (ClientRequestToken, the version this rotation makes) must be a version
 * of the secret. A token already AWSCURRENT means the rotation is done
 * (finishSecret still makes sure the deployment happened); otherwise it
 * must hold AWSPENDING.
 *
 *   createSecret  unless the token's version already has a value: read
 *                 AWSCURRENT, make the new value (the kind), PutSecretValue
 *                 with ClientRequestToken=token, VersionStages=[AWSPENDING]
 *   setSecret     the kind makes the service accept the pending value
 *   testSecret    the kind proves the pending value works
 *   finishSecret  UpdateSecretVersionStage AWSCURRENT → token (off the
 *                 current version, which Secrets Manager marks
 *                 AWSPREVIOUS), then an ECS deployment unless HOT_RELOAD
 *
 * Each step is idempotent: Secrets Manager retries a step that failed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/ecs.h"
#include "aws/secrets.h"
#include "core/base64.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "rotate.h"
#include "core/wipe.h"

#define MAX_SECRET (64 * 1024)

void rot_fail(struct rot_error *e, const char *type, const char *fmt, ...)
{
    snprintf(e->type, sizeof e->type, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

int rot_random_string(size_t n, char *out, size_t cap)
{
    unsigned char raw[256];
    if (n > sizeof raw || kiln_base64url_len(n) + 1 > cap || kiln_random_bytes(raw, n) != 0)
        return KILN_EIO;
    kiln_base64url_encode(raw, n, out);
    explicit_bzero(raw, sizeof raw);
    return 0;
}

uint64_t rot_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t rot_time_left_ms(const struct rot_event *ev, uint64_t margin_ms, uint64_t cap_ms)
{
    if (!ev->deadline_ms)
        return cap_ms;
    uint64_t now = rot_now_ms();
    uint64_t left = ev->deadline_ms > now + margin_ms ? ev->deadline_ms - now - margin_ms : 0;
    return cap_ms && left > cap_ms ? cap_ms : left;
}

static void buf_wipe(kiln_buf *b)
{
    if (b->p)
        explicit_bzero(b->p, b->len);
    kiln_buf_free(b);
}

static const struct rot_kind_ops *ops_of(enum rot_kind k)
{
    switch (k) {
    case ROT_SECRET_KEY_BASE:
        return &rot_key_ops;
    case ROT_DB_USER:
        return &rot_db_ops;
    case ROT_VALKEY_USER:
        return &rot_valkey_ops;
    }
    return NULL;
}

/* One version's SecretString into b (initialised here). */
static int get_value(const struct rot_event *ev, const char *version, const char *stage,
                     kiln_buf *b, struct rot_error *e)
{
    char why[768];
    kiln_buf_init(b, MAX_SECRET + 1);
    int rc = kiln_secrets_get_version(ev->secret_id, version, stage, b, NULL, 0, why, sizeof why);
    if (rc)
        rot_fail(e, "SecretsManagerError", "GetSecretValue %s%s%s: %s", stage,
                 version ? " of version " : "", version ? version : "", why);
    return rc;
}

/* After the stage moved: a new ECS deployment, so that the service's tasks
 * start with the new value, unless Kiln reloads secrets itself. */
static int after_finish(const struct rot_env *env, const struct rot_event *ev,
                        struct rot_error *e)
{
    if (env->hot_reload) {
        kiln_log(KILN_LOG_INFO, "HOT_RELOAD=true: no deployment; Kiln picks the new value up "
                                "at its next reload", "request_id", ev->request_id, NULL);
        return 0;
    }
    char why[768], deployment[128];
    int rc = kiln_ecs_force_deployment(env->ecs_cluster, env->ecs_service, deployment,
                                       sizeof deployment, why, sizeof why);
    if (rc) {
        rot_fail(e, "DeploymentFailed", "ecs:UpdateService (forceNewDeployment) of %s in %s: %s",
                 env->ecs_service, env->ecs_cluster, why);
        return -1;
    }
    kiln_log(KILN_LOG_INFO, "ECS deployment forced", "request_id", ev->request_id, "cluster",
             env->ecs_cluster, "service", env->ecs_service, "deployment",
             deployment[0] ? deployment : NULL, NULL);
    return 0;
}

static int create_secret(const struct rot_env *env, const struct rot_kind_ops *ops,
                         const struct rot_event *ev, struct rot_error *e)
{
    kiln_buf current, pending;
    if (get_value(ev, NULL, "AWSCURRENT", &current, e)) {
        buf_wipe(&current);
        return -1;
    }
    /* A value for the token already: an earlier attempt got this far. */
    char why[768];
    kiln_buf_init(&pending, MAX_SECRET + 1);
    int rc = kiln_secrets_get_version(ev->secret_id, ev->token, "AWSPENDING", &pending, NULL, 0,
                                      why, sizeof why);
    if (rc == 0) {
        kiln_log(KILN_LOG_INFO, "createSecret: the pending version has its value already",
                 "request_id", ev->request_id, NULL);
        buf_wipe(&current);
        buf_wipe(&pending);
        return 0;
    }
    buf_wipe(&pending);
    if (rc != KILN_ENOTFOUND) {
        rot_fail(e, "SecretsManagerError", "GetSecretValue AWSPENDING of version %s: %s",
                 ev->token, why);
        buf_wipe(&current);
        return -1;
    }
    kiln_buf_init(&pending, MAX_SECRET + 1);
    rc = ops->make_pending(env, ev, current.p, &pending, e);
    if (rc == 0) {
        rc = kiln_secrets_put_value(ev->secret_id, ev->token, pending.p, "AWSPENDING", why,
                                    sizeof why);
        if (rc)
            rot_fail(e, "SecretsManagerError", "PutSecretValue AWSPENDING: %s", why);
        else
            kiln_log(KILN_LOG_INFO, "createSecret: new value stored as AWSPENDING",
                     "request_id", ev->request_id, NULL);
    }
    buf_wipe(&current);
    buf_wipe(&pending);
    return rc ? -1 : 0;
}

static int set_secret(const struct rot_env *env, const struct rot_kind_ops *ops,
                      const struct rot_event *ev, struct rot_error *e)
{
    kiln_buf current, pending;
    int rc = get_value(ev, NULL, "AWSCURRENT", &current, e);
    kiln_buf_init(&pending, 1);
    if (rc == 0)
        rc = get_value(ev, ev->token, "AWSPENDING", &pending, e);
    if (rc == 0)
        rc = ops->set(env, ev, current.p, pending.p, e);
    buf_wipe(&current);
    buf_wipe(&pending);
    return rc ? -1 : 0;
}

static int test_secret(const struct rot_env *env, const struct rot_kind_ops *ops,
                       const struct rot_event *ev, struct rot_error *e)
{
    kiln_buf pending;
    int rc = get_value(ev, ev->token, "AWSPENDING", &pending, e);
    if (rc == 0)
        rc = ops->test(env, ev, pending.p, e);
    buf_wipe(&pending);
    return rc ? -1 : 0;
}

static int finish_secret(const struct rot_env *env, const struct kiln_secret_info *info,
                         const struct rot_event *ev, struct rot_error *e);

int rot_handle(const struct rot_env *env, const struct rot_event *ev, struct rot_error *e)
{
    const struct rot_kind_ops *ops = ops_of(env->kind);
    kiln_log(KILN_LOG_INFO, "rotation step", "request_id", ev->request_id, "kind",
             env->kind_name, "step", ev->step, "secret_id", ev->secret_id, "token", ev->token,
             NULL);
    enum { CREATE, SET, TEST, FINISH } step;
    if (strcmp(ev->step, "createSecret") == 0)
        step = CREATE;
    else if (strcmp(ev->step, "setSecret") == 0)
        step = SET;
    else if (strcmp(ev->step, "testSecret") == 0)
        step = TEST;
    else if (strcmp(ev->step, "finishSecret") == 0)
        step = FINISH;
    else {
        rot_fail(e, "InvalidEvent", "unknown Step \"%.64s\"", ev->step);
        return -1;
    }

    struct kiln_secret_info info;
    char why[768];
    if (kiln_secrets_describe(ev->secret_id, &info, why, sizeof why) != 0) {
        rot_fail(e, "SecretsManagerError", "DescribeSecret: %s", why);
        return -1;
    }
    int rc = -1;
    if (!info.rotation_enabled) {
        rot_fail(e, "InvalidState", "secret %s is not enabled for rotation", ev->secret_id);
    } else if (!kiln_secret_info_knows(&info, ev->token)) {
        rot_fail(e, "InvalidState", "version %s has no stage for rotation of secret %s",
                 ev->token, ev->secret_id);
    } else if (kiln_secret_info_has(&info, ev->token, "AWSCURRENT")) {
        kiln_log(KILN_LOG_INFO, "the version is AWSCURRENT already", "request_id",
                 ev->request_id, NULL);
        /* A finishSecret that moved the stage but failed to deploy is
         * retried: deploy now. */
        rc = step == FINISH ? after_finish(env, ev, e) : 0;
    } else if (!kiln_secret_info_has(&info, ev->token, "AWSPENDING")) {
        rot_fail(e, "InvalidState", "version %s of secret %s is not AWSPENDING", ev->token,
                 ev->secret_id);
    } else {
        switch (step) {
        case CREATE:
            rc = create_secret(env, ops, ev, e);
            break;
        case SET:
            rc = set_secret(env, ops, ev, e);
            break;
        case TEST:
            rc = test_secret(env, ops, ev, e);
            break;
        case FINISH:
            rc = finish_secret(env, &info, ev, e);
            break;
        }
    }
    kiln_secret_info_free(&info);
    return rc;
}

static int finish_secret(const struct rot_env *env, const struct kiln_secret_info *info,
                         const struct rot_event *ev, struct rot_error *e)
{
    char why[768];
    const char *current = kiln_secret_info_version_of(info, "AWSCURRENT");
    if (kiln_secrets_move_stage(ev->secret_id, "AWSCURRENT", ev->token, current, why,
                                sizeof why) != 0) {
        rot_fail(e, "SecretsManagerError", "UpdateSecretVersionStage AWSCURRENT: %s", why);
        return -1;
    }
    kiln_log(KILN_LOG_INFO, "finishSecret: AWSCURRENT moved", "request_id", ev->request_id,
             "version", ev->token, "previous", current, NULL);
    return after_finish(env, ev, e);
}
