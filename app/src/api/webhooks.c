/*
 * /api/v1/webhooks: a user's webhook endpoints, their deliveries, tests,
 * retries and secret rotation (docs/WEBHOOKS.md; webhooks/webhooks.h is
 * the machinery). Every route is the session user's own: another user's
 * endpoint is 404 webhook_not_found, as if it did not exist.
 */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/app.h"
#include "api/declare.h"
#include "api/resource.h"
#include "core/egress.h"
#include "core/err.h"
#include "core/random.h"
#include "core/uuid.h"
#include "jobs/jobs.h"
#include "webhooks/webhooks.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define COLUMNS "id, url, events, description, enabled, disabled_reason, inserted_at, updated_at"

/* Whether a pattern names something that can happen: "*", or a declared
 * resource with ".*" or one of its actions (created, updated, deleted, or
 * a declared action's event). */
static bool pattern_valid(const char *pattern)
{
    if (!strcmp(pattern, "*"))
        return true;
    const char *dot = strchr(pattern, '.');
    if (!dot)
        return false;
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        size_t n = strlen(r->name);
        if ((size_t)(dot - pattern) != n || strncmp(pattern, r->name, n))
            continue;
        const char *act = dot + 1;
        if (!strcmp(act, "*") || !strcmp(act, "created") || !strcmp(act, "updated") ||
            !strcmp(act, "deleted"))
            return true;
        for (size_t k = 0; k < r->nactions; k++) {
            const struct kiln_action *ac = &r->actions[k];
            if (!strcmp(act, ac->event ? ac->event : ac->name))
                return true;
        }
    }
    return false;
}

/* Endpoints decide where a user's data goes: their changes are in the
 * audit log (after the answer's write, like a login's record). */
static void audit(struct kiln_req *req, const char *action, const char *id)
{
    kiln_audit_record(req, res_user_id(req), action,
                      kiln_arena_sprintf(req->arena, "webhooks/%s", id));
}

static json_t *text_or_null(kiln_str s)
{
    return s.p ? json_stringn(s.p, s.len) : json_null();
}

static json_t *webhook_json(const struct kiln_db_rows *r, size_t i, const char *secret)
{
    char ins[KILN_RFC3339_LEN + 1] = "", upd[KILN_RFC3339_LEN + 1] = "";
    res_time_text(r, i, 6, ins);
    res_time_text(r, i, 7, upd);
    kiln_str id = kiln_db_text(r, i, 0), url = kiln_db_text(r, i, 1), ev = kiln_db_text(r, i, 2),
             desc = kiln_db_text(r, i, 3), why = kiln_db_text(r, i, 5);
    bool enabled = false;
    int64_t v = 0;
    if (!kiln_db_bool(r, i, 4, &enabled) && kiln_db_int64(r, i, 4, &v))
        enabled = v != 0;
    json_t *events = json_loadb(ev.p ? ev.p : "[]", ev.p ? ev.len : 2, 0, NULL);
    json_t *o = json_pack("{s:s#, s:s#, s:o, s:s#, s:b, s:o, s:s, s:s}", "id", id.p, id.len,
                          "url", url.p, url.len, "events", events ? events : json_array(),
                          "description", desc.p ? desc.p : "", desc.p ? desc.len : 0, "enabled",
                          enabled, "disabled_reason", text_or_null(why), "inserted_at", ins,
                          "updated_at", upd);
    if (secret)
        json_object_set_new(o, "secret", json_string(secret));
    return o;
}

/* url, events, description from a body; required ones on create. The
 * events list is stored as given (JSON text). */
static bool read_fields(struct kiln_req *req, json_t *in, bool create, struct res_errors *errs,
                        const char **url, const char **events, const char **desc)
{
    *url = *events = *desc = NULL;
    const struct kiln_config *cfg = req->config;
    if (res_string(in, "url", false, 1, KILN_EGRESS_MAX_URL, errs, url)) {
        struct kiln_egress_policy pol = { .allow_http = cfg->env != KILN_ENV_PRODUCTION,
                                          .allow_private = cfg->webhook_allow_private };
        char why[512];
        if (kiln_egress_check_url(*url, &pol, why, sizeof why))
            res_error(errs, "url", why);
    } else if (create && !json_object_get(in, "url")) {
        res_error(errs, "url", "can't be blank");
    }
    json_t *ev = json_object_get(in, "events");
    if (ev) {
        size_t i;
        json_t *p;
        if (!json_is_array(ev) || json_array_size(ev) == 0 ||
            json_array_size(ev) > KILN_WEBHOOK_MAX_PATTERNS) {
            res_error(errs, "events", "should be a list of 1 to 50 event types");
        } else {
            json_array_foreach (ev, i, p) {
                if (!json_is_string(p) || !pattern_valid(json_string_value(p))) {
                    res_error(errs, "events",
                              "has an unknown event type (use \"resource.action\", "
                              "\"resource.*\" or \"*\")");
                    break;
                }
            }
            char *t = json_dumps(ev, JSON_COMPACT);
            *events = kiln_arena_strndup(req->arena, t, strlen(t));
            free(t);
        }
    } else if (create) {
        res_error(errs, "events", "can't be blank");
    }
    res_string(in, "description", true, 0, KILN_WEBHOOK_MAX_DESCRIPTION, errs, desc);
    return !errs->details;
}

static const char *own_id(struct kiln_req *req, struct kiln_res *res, const char *param)
{
    kiln_str s = kiln_req_param(req, param);
    const char *id = res_uuid(req->arena, s);
    if (!id)
        res_not_found(req, res, "webhook_not_found", "Webhook not found");
    return id;
}

/* A statement on one of the user's webhooks (err its result, n the rows
 * it answered or changed): true when it found the webhook, else false
 * after answering (the store's error, or 404 as if it did not exist). */
static bool found(struct kiln_req *req, struct kiln_res *res, int err, size_t n)
{
    if (err) {
        res_store_error(req, res, err, "webhook");
        return false;
    }
    if (n != 1) {
        res_not_found(req, res, "webhook_not_found", "Webhook not found");
        return false;
    }
    return true;
}

/* The user's webhook row (COLUMNS), or false after answering. */
static bool load(struct kiln_req *req, struct kiln_res *res, const char *id,
                 struct kiln_db_rows *rows)
{
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT " COLUMNS " FROM webhooks WHERE id = $1 AND user_id = $2", p,
                            2, rows);
    return found(req, res, err, err ? 0 : rows->nrows);
}

void api_webhooks_create(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *url, *events, *desc;
    read_fields(req, in, true, &errs, &url, &events, &desc);
    url = url ? kiln_arena_strndup(req->arena, url, strlen(url)) : NULL;
    desc = desc ? kiln_arena_strndup(req->arena, desc, strlen(desc)) : "";
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    char id[KILN_UUID_LEN + 1], secret[KILN_WEBHOOK_SECRET_LEN + 1];
    kiln_uuid_v4(id);
    if (kiln_webhook_new_secret(secret)) {
        kiln_res_fail(req, res, KILN_EIO, NULL, "webhook secret", "no randomness");
        return;
    }
    const char *now = res_now(req->arena);
    kiln_str p[7] = { kiln_str_c(id),     kiln_str_c(res_user_id(req)), kiln_str_c(url),
                      kiln_str_c(events), kiln_str_c(desc),             kiln_str_c(secret),
                      kiln_str_c(now) };
    struct kiln_db_rows rows;
    /* The per-user bound is checked by the same statement that inserts. */
    int err = kiln_db_query(
        app_db(req), req->arena,
        "INSERT INTO webhooks (id, user_id, url, events, description, secret, enabled, "
        "inserted_at, updated_at) SELECT $1, $2, $3, $4, $5, $6, true, $7, $7 WHERE (SELECT "
        "count(*) FROM webhooks WHERE user_id = $2) < " STR(KILN_WEBHOOKS_PER_USER)
        " RETURNING " COLUMNS,
        p, 7, &rows);
    if (err) {
        res_store_error(req, res, err, "webhook");
        return;
    }
    if (rows.nrows != 1) {
        kiln_res_error(req, res, 422, "validation_failed", "Validation failed",
                       json_pack("{s:[s]}", "base",
                                 "has reached the limit of " STR(
                                     KILN_WEBHOOKS_PER_USER) " webhooks"));
        return;
    }
    audit(req, "webhooks.created", id);
    kiln_webhooks_changed();
    kiln_res_json(req, res, 201, json_pack("{s:o}", "data", webhook_json(&rows, 0, secret)));
}

void api_webhooks_list(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str p[1] = { kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT " COLUMNS " FROM webhooks WHERE user_id = $1 ORDER BY "
                            "inserted_at DESC, id DESC",
                            p, 1, &rows);
    if (err) {
        res_store_error(req, res, err, "webhooks");
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(list, webhook_json(&rows, i, NULL));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", list));
}

void api_webhooks_show(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    struct kiln_db_rows rows;
    if (!id || !load(req, res, id, &rows))
        return;
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", webhook_json(&rows, 0, NULL)));
}

void api_webhooks_update(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    if (!id)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *url, *events, *desc;
    read_fields(req, in, false, &errs, &url, &events, &desc);
    bool enabled = false, have_enabled = res_bool(in, "enabled", &errs, &enabled);
    url = url ? kiln_arena_strndup(req->arena, url, strlen(url)) : NULL;
    desc = desc ? kiln_arena_strndup(req->arena, desc, strlen(desc)) : NULL;
    bool desc_null = json_is_null(json_object_get(in, "description"));
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    /* NULL parameters keep the stored value; turning an endpoint on again
     * clears why it was off and its run of failures. SQLite gets $6 as
     * text, which never equals the integer 1 uncast. */
    kiln_str p[7] = {
        kiln_str_c(id),
        kiln_str_c(res_user_id(req)),
        url ? kiln_str_c(url) : (kiln_str){ NULL, 0 },
        events ? kiln_str_c(events) : (kiln_str){ NULL, 0 },
        desc ? kiln_str_c(desc) : desc_null ? kiln_str_c("") : (kiln_str){ NULL, 0 },
        have_enabled ? kiln_str_c(enabled ? "1" : "0") : (kiln_str){ NULL, 0 },
        kiln_str_c(res_now(req->arena)),
    };
    bool pg = kiln_db_dialect(app_db(req)) == KILN_DB_POSTGRES;
    struct kiln_db_rows rows;
    int err = kiln_db_query(
        app_db(req), req->arena,
        pg ? "UPDATE webhooks SET url = coalesce($3, url), events = coalesce($4, events), "
             "description = coalesce($5, description), enabled = coalesce($6::int::boolean, "
             "enabled), disabled_reason = CASE WHEN $6::int = 1 THEN NULL ELSE disabled_reason "
             "END, failing_since = CASE WHEN $6::int = 1 THEN NULL ELSE failing_since END, "
             "updated_at = $7 WHERE id = $1 AND user_id = $2 RETURNING " COLUMNS
           : "UPDATE webhooks SET url = coalesce($3, url), events = coalesce($4, events), "
             "description = coalesce($5, description), enabled = coalesce($6, enabled), "
             "disabled_reason = CASE WHEN CAST($6 AS INTEGER) = 1 THEN NULL ELSE "
             "disabled_reason END, failing_since = CASE WHEN CAST($6 AS INTEGER) = 1 THEN NULL "
             "ELSE failing_since END, updated_at = $7 WHERE id = $1 AND user_id = $2 "
             "RETURNING " COLUMNS,
        p, 7, &rows);
    if (!found(req, res, err, err ? 0 : rows.nrows))
        return;
    audit(req, "webhooks.updated", id);
    kiln_webhooks_changed();
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", webhook_json(&rows, 0, NULL)));
}

void api_webhooks_delete(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    if (!id)
        return;
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "DELETE FROM webhooks WHERE id = $1 AND user_id = $2", p, 2, &rows);
    if (!found(req, res, err, err ? 0 : rows.affected))
        return;
    audit(req, "webhooks.deleted", id);
    res_no_content(res);
}

void api_webhooks_rotate(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    if (!id)
        return;
    char secret[KILN_WEBHOOK_SECRET_LEN + 1];
    if (kiln_webhook_new_secret(secret)) {
        kiln_res_fail(req, res, KILN_EIO, NULL, "webhook secret", "no randomness");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
                 (int64_t)KILN_WEBHOOK_PREVIOUS_SECRET_MS;
    struct timespec until = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    char exp[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339(exp, &until);
    kiln_str p[5] = { kiln_str_c(id), kiln_str_c(res_user_id(req)), kiln_str_c(secret),
                      kiln_str_c(exp), kiln_str_c(res_now(req->arena)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "UPDATE webhooks SET previous_secret = secret, secret = $3, "
                            "previous_expires_at = $4, updated_at = $5 WHERE id = $1 AND "
                            "user_id = $2 RETURNING " COLUMNS,
                            p, 5, &rows);
    if (!found(req, res, err, err ? 0 : rows.nrows))
        return;
    audit(req, "webhooks.secret_rotated", id);
    json_t *o = webhook_json(&rows, 0, secret);
    json_object_set_new(o, "previous_secret_expires_at", json_string(exp));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", o));
}

static json_t *delivery_json(kiln_arena *a, const struct kiln_db_rows *d, size_t i,
                             const struct kiln_db_rows *at)
{
    char ins[KILN_RFC3339_LEN + 1] = "";
    res_time_text(d, i, 6, ins);
    kiln_str id = kiln_db_text(d, i, 0), ev = kiln_db_text(d, i, 1), msg = kiln_db_text(d, i, 2),
             type = kiln_db_text(d, i, 3), state = kiln_db_text(d, i, 4);
    int64_t n = 0, nid = 0;
    kiln_db_int64(d, i, 5, &n);
    kiln_db_int64(d, i, 0, &nid);
    json_t *attempts = json_array();
    for (size_t k = 0; at && k < at->nrows; k++) {
        int64_t of = 0;
        kiln_db_int64(at, k, 0, &of);
        if (of != nid)
            continue;
        char t[KILN_RFC3339_LEN + 1] = "";
        res_time_text(at, k, 1, t);
        int64_t st = 0, lat = 0;
        bool has_st = kiln_db_int64(at, k, 2, &st);
        kiln_db_int64(at, k, 3, &lat);
        kiln_str err = kiln_db_text(at, k, 4);
        json_array_append_new(attempts,
                              json_pack("{s:s, s:o, s:I, s:o}", "at", t, "status",
                                        has_st ? json_integer(st) : json_null(), "latency_ms",
                                        (json_int_t)lat, "error", text_or_null(err)));
    }
    (void)a;
    (void)id;
    int64_t evn = 0;
    bool has_ev = kiln_db_int64(d, i, 1, &evn);
    (void)ev;
    return json_pack("{s:I, s:o, s:s#, s:s#, s:s#, s:I, s:s, s:o}", "id", (json_int_t)nid,
                     "event_id", has_ev ? json_integer(evn) : json_null(), "msg_id", msg.p,
                     msg.len, "type", type.p, type.len, "state", state.p, state.len, "attempts",
                     (json_int_t)n, "inserted_at", ins, "attempt_log", attempts);
}

void api_webhooks_deliveries(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    struct kiln_db_rows w;
    if (!id || !load(req, res, id, &w))
        return;
    unsigned limit;
    if (!res_query_uint(req, res, "limit", API_WEBHOOK_DELIVERIES_DEFAULT, 1,
                        API_WEBHOOK_DELIVERIES_MAX, &limit))
        return;
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(kiln_arena_sprintf(req->arena, "%u", limit)) };
    struct kiln_db_rows d, at;
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT id, event_id, msg_id, type, state, attempts, inserted_at "
                            "FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC "
                            "LIMIT $2",
                            p, 2, &d);
    if (!err)
        err = kiln_db_query(app_db(req), req->arena,
                            "SELECT a.delivery_id, a.at, a.status, a.latency_ms, a.error FROM "
                            "webhook_attempts a WHERE a.delivery_id IN (SELECT id FROM "
                            "webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2) "
                            "ORDER BY a.id",
                            p, 2, &at);
    if (err) {
        res_store_error(req, res, err, "deliveries");
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < d.nrows; i++)
        json_array_append_new(list, delivery_json(req->arena, &d, i, &at));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", list));
}

/* A new delivery of a test message, or a delivery sent again: its job
 * enqueued in the same transaction. */
static void enqueue_answer(struct kiln_req *req, struct kiln_res *res, const char *wid,
                           const char *delivery)
{
    struct kiln_db *db = app_db(req);
    int err = kiln_db_begin(db);
    int64_t did = 0;
    if (!err && !delivery) {
        char msg[40], rnd[12], hex[25];
        kiln_random_bytes(rnd, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(hex + 2 * i, 3, "%02x", (unsigned char)rnd[i]);
        snprintf(msg, sizeof msg, "msg_test_%s", hex);
        char now[KILN_RFC3339_LEN + 1];
        kiln_time_rfc3339_now(now);
        json_t *pl = json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "webhook.test", "timestamp",
                               now, "data", "webhook_id", wid, "message",
                               "A test delivery from Kiln.");
        char *text = json_dumps(pl, JSON_COMPACT);
        json_decref(pl);
        kiln_str p[4] = { kiln_str_c(wid), kiln_str_c(msg),
                          kiln_str_c(kiln_arena_strndup(req->arena, text, strlen(text))),
                          kiln_str_c(res_now(req->arena)) };
        free(text);
        struct kiln_db_rows r;
        err = kiln_db_query(db, req->arena,
                            "INSERT INTO webhook_deliveries (webhook_id, msg_id, type, payload, "
                            "state, attempts, inserted_at, updated_at) VALUES ($1, $2, "
                            "'webhook.test', $3, 'pending', 0, $4, $4) RETURNING id",
                            p, 4, &r);
        if (!err && !(r.nrows == 1 && kiln_db_int64(&r, 0, 0, &did)))
            err = KILN_EDB;
    } else if (!err) {
        kiln_str p[3] = { kiln_str_c(delivery), kiln_str_c(wid),
                          kiln_str_c(res_now(req->arena)) };
        struct kiln_db_rows r;
        err = kiln_db_query(db, req->arena,
                            "UPDATE webhook_deliveries SET state = 'pending', updated_at = $3 "
                            "WHERE id = $1 AND webhook_id = $2 RETURNING id",
                            p, 3, &r);
        if (!err && r.nrows != 1) {
            kiln_db_rollback(db);
            kiln_res_error(req, res, 404, "delivery_not_found", "Delivery not found", NULL);
            return;
        }
        if (!err)
            kiln_db_int64(&r, 0, 0, &did);
    }
    if (!err)
        err = kiln_webhook_enqueue_delivery(db, req->arena, (long long)did);
    if (!err)
        err = kiln_db_commit(db);
    else
        kiln_db_rollback(db);
    if (err) {
        res_store_error(req, res, err, "delivery");
        return;
    }
    kiln_jobs_notify();
    kiln_res_json(req, res, 202,
                  json_pack("{s:{s:I, s:s}}", "data", "id", (json_int_t)did, "state", "pending"));
}

void api_webhooks_test(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    struct kiln_db_rows w;
    if (!id || !load(req, res, id, &w))
        return;
    enqueue_answer(req, res, id, NULL);
}

void api_webhooks_retry(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = own_id(req, res, "id");
    struct kiln_db_rows w;
    if (!id || !load(req, res, id, &w))
        return;
    kiln_str d = kiln_req_param(req, "delivery_id");
    uint64_t n = 0;
    if (!kiln_str_to_u64(d, INT64_MAX, &n) || n == 0) {
        kiln_res_error(req, res, 404, "delivery_not_found", "Delivery not found", NULL);
        return;
    }
    enqueue_answer(req, res, id, kiln_arena_sprintf(req->arena, "%llu", (unsigned long long)n));
}
