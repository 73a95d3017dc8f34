/*
 * SECRET_KEY_BASE: a new random value (64 bytes from getrandom, base64url:
 * 86 characters). Nothing to set or to reach: testSecret checks the shape.
 *
 * Two secret shapes:
 *   - a plain string (SECRET_KEY_BASE_SECRET_ARN=<arn>): the new string.
 *     Kiln's reload keeps the value it replaces as a verification key
 *     (docs/SECRETS.md); a task started afterwards knows the new one only.
 *   - a JSON object (SECRET_KEY_BASE_SECRET_ARN=<arn>#SECRET_KEY_BASE and
 *     SECRET_KEY_BASE_PREVIOUS_SECRET_ARN=<arn>#SECRET_KEY_BASE_PREVIOUS):
 *     SECRET_KEY_BASE gets the new value and SECRET_KEY_BASE_PREVIOUS the
 *     one it replaces (other fields are kept), so tasks of a new deployment
 *     still verify cookies signed before the rotation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/err.h"
#include "core/log.h"
#include "rotate.h"
#include "core/wipe.h"

#define KEY_BYTES 64
#define MIN_LEN 64
#define FIELD "SECRET_KEY_BASE"
#define FIELD_PREVIOUS "SECRET_KEY_BASE_PREVIOUS"

static int make_pending(const struct rot_env *env, const struct rot_event *ev,
                        const char *current, kiln_buf *pending, struct rot_error *e)
{
    (void)env, (void)ev;
    char key[KEY_BYTES * 2];
    if (rot_random_string(KEY_BYTES, key, sizeof key) != 0) {
        rot_fail(e, "RandomError", "getrandom failed");
        return -1;
    }
    json_t *o = json_loads(current, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        kiln_buf_append_c(pending, key);
    } else {
        json_t *old = json_object_get(o, FIELD);
        if (old && !json_is_string(old)) {
            rot_fail(e, "InvalidSecret", "the secret's %s field is not a string", FIELD);
            kiln_json_wipe(o);
            json_decref(o);
            explicit_bzero(key, sizeof key);
            return -1;
        }
        json_object_set_new(o, FIELD_PREVIOUS, json_string(old ? json_string_value(old) : ""));
        json_object_set_new(o, FIELD, json_string(key));
        char *s = json_dumps(o, JSON_COMPACT);
        kiln_buf_append_c(pending, s);
        kiln_free_secret(s);
        kiln_json_wipe(o);
        json_decref(o);
    }
    kiln_buf_append(pending, "", 1);
    pending->len--;
    explicit_bzero(key, sizeof key);
    return 0;
}

static int set(const struct rot_env *env, const struct rot_event *ev, const char *current,
               const char *pending, struct rot_error *e)
{
    (void)env, (void)current, (void)pending, (void)e;
    kiln_log(KILN_LOG_INFO, "setSecret: nothing to set for SECRET_KEY_BASE", "request_id",
             ev->request_id, NULL);
    return 0;
}

static int test(const struct rot_env *env, const struct rot_event *ev, const char *pending,
                struct rot_error *e)
{
    (void)env;
    size_t len;
    json_t *o = json_loads(pending, 0, NULL);
    if (json_is_object(o)) {
        json_t *v = json_object_get(o, FIELD);
        len = json_is_string(v) ? json_string_length(v) : 0;
        kiln_json_wipe(o);
    } else {
        len = strlen(pending);
    }
    json_decref(o);
    if (len < MIN_LEN) {
        rot_fail(e, "TestFailed", "the pending SECRET_KEY_BASE has %zu characters; Kiln needs "
                                  "at least %d", len, MIN_LEN);
        return -1;
    }
    kiln_log(KILN_LOG_INFO, "testSecret: the pending SECRET_KEY_BASE is well formed",
             "request_id", ev->request_id, NULL);
    return 0;
}

const struct rot_kind_ops rot_key_ops = { make_pending, set, test };
