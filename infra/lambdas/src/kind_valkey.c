/*
 * The Valkey (ElastiCache) user's password. The secret is {"username",
 * "password", …}; Kiln reads it as VALKEY_USER_SECRET_ARN=<arn>#username
 * and VALKEY_PASSWORD_SECRET_ARN=<arn>#password. An ElastiCache user holds
 * two passwords and accepts either:
 *
 *   createSecret  pending = current with a new random password (32 bytes
 *                 from getrandom, base64url: 43 characters)
 *   setSecret     ModifyUser UserId=<ELASTICACHE_USER_ID, default the
 *                 username> Passwords=[current, pending]: both work from
 *                 now on (retried while the user is "modifying"); skipped
 *                 when the pending password works already (a retry)
 *   testSecret    connect to VALKEY_HOST:VALKEY_PORT (TLS unless
 *                 VALKEY_SSL=false), AUTH <user> <pending>, PING; retried
 *                 for up to VALKEY_TEST_TIMEOUT_SECONDS, since ElastiCache
 *                 applies ModifyUser asynchronously
 *   finishSecret  (the contract's stage move and deployment)
 *
 * The previous password is NOT removed at finishSecret: a Kiln task that has
 * not reloaded yet (up to SECRET_RELOAD_INTERVAL_SECONDS, or until the new
 * deployment replaced it) still opens connections with it. It is dropped by
 * the next rotation's setSecret, which sets [its current, its pending]: the
 * same "valid for one whole rotation period" as the database's alternating
 * users.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "aws/elasticache.h"
#include "core/err.h"
#include "core/log.h"
#include "rotate.h"
#include "store/kv.h"
#include "core/wipe.h"

#define PASSWORD_BYTES 32
#define RETRY_MS 1000

struct vk_login {
    char *username;
    char *password;
};

static void login_free(struct vk_login *l)
{
    free(l->username);
    kiln_free_secret(l->password);
    memset(l, 0, sizeof *l);
}

static int parse_login(const char *secret, const char *which, struct vk_login *out,
                       struct rot_error *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = json_loads(secret, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        rot_fail(e, "InvalidSecret", "the %s secret is not a JSON object", which);
        return -1;
    }
    const char *u = json_string_value(json_object_get(o, "username"));
    const char *p = json_string_value(json_object_get(o, "password"));
    if (u && *u)
        out->username = strdup(u);
    if (p && *p)
        out->password = strdup(p);
    kiln_json_wipe(o);
    json_decref(o);
    if (!out->username || !out->password) {
        rot_fail(e, "InvalidSecret", "the %s secret has no \"%s\"", which,
                 out->username ? "password" : "username");
        login_free(out);
        return -1;
    }
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* AUTH and PING on a fresh connection. 0, or a kiln_err with why set. */
static int try_auth(const struct rot_env *env, const struct vk_login *l, char *why, size_t cap)
{
    struct kiln_kv_config cfg = {
        .host = env->valkey_host, .port = env->valkey_port, .user = l->username,
        .password = l->password, .tls = env->valkey_tls, .ca_file = env->valkey_ca_file,
        .connect_timeout_ms = 5000, .command_timeout_ms = 5000,
    };
    struct kiln_kv_store *store = kiln_kv_store_new(&cfg);
    struct kiln_kv *kv = kiln_kv_open(store);
    int rc = kiln_kv_ping(kv, 5000);
    if (rc)
        snprintf(why, cap, "%s", kiln_kv_last_error(kv)[0] ? kiln_kv_last_error(kv)
                                                            : kiln_err_message(rc));
    kiln_kv_close(kv);
    kiln_kv_store_free(store);
    return rc;
}

static int make_pending(const struct rot_env *env, const struct rot_event *ev,
                        const char *current, kiln_buf *pending, struct rot_error *e)
{
    (void)env, (void)ev;
    struct vk_login cur;
    if (parse_login(current, "current", &cur, e))
        return -1;
    login_free(&cur);
    char password[PASSWORD_BYTES * 2];
    if (rot_random_string(PASSWORD_BYTES, password, sizeof password) != 0) {
        rot_fail(e, "RandomError", "getrandom failed");
        return -1;
    }
    json_t *o = json_loads(current, 0, NULL);
    json_object_set_new(o, "password", json_string(password));
    char *s = json_dumps(o, JSON_COMPACT);
    kiln_buf_append_c(pending, s);
    kiln_buf_append(pending, "", 1);
    pending->len--;
    kiln_free_secret(s);
    kiln_json_wipe(o);
    json_decref(o);
    explicit_bzero(password, sizeof password);
    return 0;
}

static int set(const struct rot_env *env, const struct rot_event *ev, const char *current,
               const char *pending, struct rot_error *e)
{
    struct vk_login cur, pend;
    char why[1024];
    if (parse_login(current, "current", &cur, e))
        return -1;
    if (parse_login(pending, "pending", &pend, e)) {
        login_free(&cur);
        return -1;
    }
    int rc = -1;
    const char *user_id = env->elasticache_user_id ? env->elasticache_user_id : pend.username;
    if (strcmp(cur.username, pend.username) != 0) {
        rot_fail(e, "InvalidSecret", "the pending user (%s) is not the current one (%s): this "
                                     "rotation changes passwords only", pend.username,
                 cur.username);
    } else if (try_auth(env, &pend, why, sizeof why) == 0) {
        kiln_log(KILN_LOG_INFO, "setSecret: the pending password works already", "request_id",
                 ev->request_id, "user", pend.username, NULL);
        rc = 0;
    } else {
        const char *pw[2] = { cur.password, pend.password };
        uint64_t left = rot_time_left_ms(ev, 5000, 120000);
        for (;;) {
            int m = kiln_elasticache_set_passwords(user_id, pw, 2, why, sizeof why);
            if (m == 0) {
                kiln_log(KILN_LOG_INFO, "setSecret: ElastiCache user now takes the current and "
                                        "the pending password", "request_id", ev->request_id,
                         "user_id", user_id, NULL);
                rc = 0;
                break;
            }
            /* InvalidUserState: an earlier modification is still being
             * applied. */
            if (m != KILN_EBUSY || left < RETRY_MS) {
                rot_fail(e, "SetSecretFailed", "ElastiCache ModifyUser %s: %s", user_id, why);
                break;
            }
            sleep_ms(RETRY_MS);
            left -= RETRY_MS;
        }
    }
    login_free(&cur);
    login_free(&pend);
    return rc;
}

static int test(const struct rot_env *env, const struct rot_event *ev, const char *pending,
                struct rot_error *e)
{
    struct vk_login pend;
    char why[1024] = "";
    if (parse_login(pending, "pending", &pend, e))
        return -1;
    uint64_t left = env->valkey_test_timeout_s
                        ? rot_time_left_ms(ev, 5000, (uint64_t)env->valkey_test_timeout_s * 1000u)
                        : 0;
    int rc, tries = 0;
    for (;;) {
        tries++;
        rc = try_auth(env, &pend, why, sizeof why);
        if (rc == 0 || left < RETRY_MS)
            break;
        sleep_ms(RETRY_MS);
        left -= RETRY_MS;
    }
    char n[16];
    snprintf(n, sizeof n, "%d", tries);
    if (rc)
        rot_fail(e, "TestFailed", "AUTH as %s with the pending password failed (%d tries): %s",
                 pend.username, tries, why);
    else
        kiln_log(KILN_LOG_INFO, "testSecret: AUTH and PING with the pending password",
                 "request_id", ev->request_id, "user", pend.username, "tries", n, NULL);
    login_free(&pend);
    return rc ? -1 : 0;
}

const struct rot_kind_ops rot_valkey_ops = { make_pending, set, test };
