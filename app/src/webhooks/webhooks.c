/*
 * Webhooks: the dispatcher (outbox → deliveries) and the delivery job
 * (webhooks.h is the design, docs/WEBHOOKS.md the contract).
 */
#include "webhooks/webhooks.h"

#include <jansson.h>
#include <stdatomic.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/egress.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/random.h"
#include "events/feed.h"
#include "jobs/jobs.h"

#define DISPATCH_BATCH 500
#define DELIVER_KIND "webhooks.deliver"

static const struct kiln_config *C;
static kiln_webhook_render_fn render;

/* ---- secrets and signatures ---------------------------------------------- */

int kiln_webhook_new_secret(char out[KILN_WEBHOOK_SECRET_LEN + 1])
{
    unsigned char raw[KILN_WEBHOOK_SECRET_BYTES];
    if (kiln_random_bytes(raw, sizeof raw))
        return KILN_EIO;
    memcpy(out, "whsec_", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, raw, sizeof raw);
    out[KILN_WEBHOOK_SECRET_LEN] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

static bool sign_one(kiln_buf *out, const char *secret, const char *msg_id, long long ts,
                     const char *body, size_t len)
{
    if (strncmp(secret, "whsec_", 6))
        return false;
    const char *b64 = secret + 6;
    size_t blen = strlen(b64);
    unsigned char key[128];
    if (blen == 0 || blen % 4 || blen / 4 * 3 > sizeof key)
        return false;
    int klen = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)blen);
    if (klen < 0)
        return false;
    /* EVP_DecodeBlock counts the padding's zero bytes: take them off. */
    if (blen >= 1 && b64[blen - 1] == '=')
        klen--;
    if (blen >= 2 && b64[blen - 2] == '=')
        klen--;
    char head[96];
    int hl = snprintf(head, sizeof head, "%s.%lld.", msg_id, ts);
    unsigned char mac[32];
    unsigned int mlen = 0;
    /* The signed content is "msg_id.timestamp.body" (Standard Webhooks). */
    kiln_buf m;
    kiln_buf_init(&m, (size_t)hl + len + 1);
    kiln_buf_append(&m, head, (size_t)hl);
    kiln_buf_append(&m, body, len);
    bool ok = HMAC(EVP_sha256(), key, klen, (const unsigned char *)m.p, m.len, mac, &mlen) != NULL;
    kiln_buf_free(&m);
    OPENSSL_cleanse(key, sizeof key);
    if (!ok)
        return false;
    char sig[48];
    EVP_EncodeBlock((unsigned char *)sig, mac, (int)mlen);
    kiln_buf_printf(out, "%sv1,%s", out->len ? " " : "", sig);
    return true;
}

bool kiln_webhook_sign(kiln_arena *a, const char *secret, const char *previous,
                       const char *msg_id, long long timestamp, const char *body, size_t len,
                       const char **out)
{
    kiln_buf b;
    kiln_buf_init(&b, 4096);
    bool ok = sign_one(&b, secret, msg_id, timestamp, body, len) &&
              (!previous || sign_one(&b, previous, msg_id, timestamp, body, len));
    *out = ok ? kiln_arena_strndup(a, b.p, b.len) : NULL;
    kiln_buf_free(&b);
    return ok;
}

/* ---- patterns ------------------------------------------------------------- */

bool kiln_webhook_pattern_matches(const char *pattern, const char *type)
{
    if (!strcmp(pattern, "*") || !strcmp(pattern, type))
        return true;
    size_t pl = strlen(pattern);
    return pl >= 2 && !strcmp(pattern + pl - 2, ".*") && !strncmp(pattern, type, pl - 1);
}

/* ---- dispatch: the outbox into deliveries ------------------------------- */

struct hook {
    char id[37], owner[37];
    int64_t since_us; /* inserted_at */
    json_t *patterns;
};

static bool hook_wants(const struct hook *h, const char *type)
{
    size_t i;
    json_t *p;
    json_array_foreach (h->patterns, i, p)
        if (json_is_string(p) && kiln_webhook_pattern_matches(json_string_value(p), type))
            return true;
    return false;
}

int kiln_webhook_enqueue_delivery(struct kiln_db *db, kiln_arena *a, long long delivery_id)
{
    struct kiln_job_options o = { .max_attempts = (int)C->webhook_retries + 1 };
    return kiln_job_enqueue(db, a, DELIVER_KIND,
                            kiln_arena_sprintf(a, "{\"delivery\":%lld}", delivery_id), &o, NULL);
}

/* The payload of an event's delivery: {"type", "timestamp", "data"}, data
 * being the event as the change feed's stream shows it. */
static char *event_payload(kiln_arena *a, const struct kiln_db_rows *r, size_t i,
                           const char *type)
{
    kiln_str id = kiln_db_text(r, i, 0), resource = kiln_db_text(r, i, 2),
             action = kiln_db_text(r, i, 3), row_id = kiln_db_text(r, i, 4),
             owner = kiln_db_text(r, i, 5), data = kiln_db_text(r, i, 6);
    char at[KILN_RFC3339_LEN + 1] = "";
    int64_t us = 0;
    if (kiln_db_timestamp(r, i, 7, &us)) {
        struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
        kiln_time_rfc3339(at, &ts);
    }
    json_t *row = NULL;
    if (data.p) {
        kiln_buf b;
        kiln_buf_init(&b, 1 << 24);
        char *res_name = kiln_arena_strndup(a, resource.p, resource.len);
        if (render && render(res_name, data, &b))
            row = json_loadb(b.p, b.len, 0, NULL);
        kiln_buf_free(&b);
        if (!row)
            row = json_loadb(data.p, data.len, 0, NULL);
    }
    json_t *ev = json_pack("{s:s#, s:s, s:s#, s:s#, s:s#, s:o, s:s#, s:s}", "id", id.p, id.len,
                           "type", type, "resource", resource.p, resource.len, "action", action.p,
                           action.len, "row_id", row_id.p, row_id.len, "data",
                           row ? row : json_null(), "owner", owner.p, owner.len, "at", at);
    /* The stream's id is a number. */
    long long nid = strtoll(kiln_arena_strndup(a, id.p, id.len), NULL, 10);
    json_object_set_new(ev, "id", json_integer(nid));
    json_t *msg = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", at, "data", ev);
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    char *out = text ? kiln_arena_strndup(a, text, strlen(text)) : NULL;
    free(text);
    return out;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

static char *buf_text(kiln_arena *a, const kiln_buf *b)
{
    return kiln_arena_strndup(a, b->p ? b->p : "", b->len);
}

/* While no endpoint is enabled anywhere, the dispatcher looks again only
 * at the poll (or when one is made or turned on here): a write then costs
 * it nothing. (monotonic ms; written and read on the pumps' thread, reset
 * from any thread) */
#define IDLE_MS 900
static _Atomic uint64_t idle_until;

void kiln_webhooks_changed(void)
{
    atomic_store(&idle_until, 0);
    kiln_jobs_pump_due();
}

/* One batch; true when more may be waiting. */
static bool dispatch_batch(struct kiln_db *db)
{
    kiln_arena *a = kiln_arena_new(64 * 1024);
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES, more = false, notify = false;
    struct kiln_db_rows cur, any, ev;
    bool begun = false;
    int err = kiln_db_begin(db);
    if (err)
        goto fail;
    begun = true;
    err = kiln_db_query(db, a,
                        pg ? "SELECT tx, eid FROM webhook_cursor WHERE id = 1 FOR UPDATE SKIP "
                             "LOCKED"
                           : "SELECT tx, eid FROM webhook_cursor WHERE id = 1",
                        NULL, 0, &cur);
    if (err)
        goto fail;
    if (cur.nrows != 1) { /* another instance is dispatching */
        kiln_db_rollback(db);
        kiln_arena_free(a);
        return false;
    }
    int64_t ctx = 0, cid = 0;
    kiln_db_int64(&cur, 0, 0, &ctx);
    kiln_db_int64(&cur, 0, 1, &cid);
    err = kiln_db_query(db, a,
                        pg ? "SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled), (" KILN_FEED_HORIZON ")"
                           : "SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled), "
                             "(SELECT coalesce(max(id), 0) FROM events)",
                        NULL, 0, &any);
    if (err || any.nrows != 1)
        goto fail;
    bool have = false;
    int64_t head = 0;
    kiln_db_bool(&any, 0, 0, &have);
    if (!have) {
        int64_t one = 0;
        if (kiln_db_int64(&any, 0, 0, &one))
            have = one != 0; /* SQLite answers 0/1 */
    }
    kiln_db_int64(&any, 0, 1, &head);
    int64_t ntx = ctx, nid = cid;
    if (!have) {
        atomic_store(&idle_until, kiln_now_ms() + IDLE_MS);
        /* Nobody listens: the cursor moves to the head without reading. On
         * PostgreSQL the head is the horizon: every event below it has
         * committed (or never will), and nothing at or above it is behind
         * the cursor. */
        if (pg && head > ctx) {
            ntx = head;
            nid = 0;
        } else if (!pg && head > cid) {
            nid = head;
        }
    } else {
        kiln_str p[2] = { kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)ctx)),
                          kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)cid)) };
        err = kiln_db_query(
            db, a,
            pg ? "SELECT id, tx, resource, action, row_id, owner, data, at, (" KILN_FEED_HORIZON
                 ") FROM events WHERE (tx, id) > ($1, $2) ORDER BY tx, id LIMIT 500"
               : "SELECT id, tx, resource, action, row_id, owner, data, at, NULL FROM events "
                 "WHERE tx = $1 AND id > $2 ORDER BY id LIMIT 500",
            p, 2, &ev);
        if (err)
            goto fail;
        size_t upto = 0;
        for (; upto < ev.nrows; upto++) {
            int64_t tx = 0, hz = 0;
            kiln_db_int64(&ev, upto, 1, &tx);
            if (pg && kiln_db_int64(&ev, upto, 8, &hz) && tx >= hz)
                break; /* may have a smaller id still to commit before it */
        }
        more = upto == DISPATCH_BATCH;
        /* The batch's owners' enabled endpoints. */
        json_t *owners = json_array();
        for (size_t i = 0; i < upto; i++) {
            kiln_str o = kiln_db_text(&ev, i, 5);
            json_array_append_new(owners, json_stringn(o.p, o.len));
        }
        char *ojs = json_dumps(owners, JSON_COMPACT);
        json_decref(owners);
        struct kiln_db_rows hk = { 0 };
        if (upto) {
            kiln_str p1[1] = { kiln_str_c(kiln_arena_strndup(a, ojs, strlen(ojs))) };
            err = kiln_db_query(
                db, a,
                pg ? "SELECT id, user_id, events, inserted_at FROM webhooks WHERE enabled AND "
                     "user_id IN (SELECT json_array_elements_text($1::json)::uuid)"
                   : "SELECT id, user_id, events, inserted_at FROM webhooks WHERE enabled AND "
                     "user_id IN (SELECT value FROM json_each($1))",
                p1, 1, &hk);
        }
        free(ojs);
        if (err)
            goto fail;
        struct hook *hooks = kiln_arena_alloc_z(a, (hk.nrows + 1) * sizeof *hooks);
        for (size_t k = 0; k < hk.nrows; k++) {
            kiln_str hid = kiln_db_text(&hk, k, 0), uid = kiln_db_text(&hk, k, 1),
                     pats = kiln_db_text(&hk, k, 2);
            snprintf(hooks[k].id, sizeof hooks[k].id, "%.*s", (int)hid.len, hid.p);
            snprintf(hooks[k].owner, sizeof hooks[k].owner, "%.*s", (int)uid.len, uid.p);
            kiln_db_timestamp(&hk, k, 3, &hooks[k].since_us);
            hooks[k].patterns = json_loadb(pats.p ? pats.p : "[]", pats.p ? pats.len : 2, 0, NULL);
        }
        char now[KILN_RFC3339_LEN + 1];
        kiln_time_rfc3339_now(now);
        /* Every match of the batch, then two statements: the delivery rows,
         * and a job for each one made (an event already dispatched makes
         * none: the unique index), in commit order. */
        json_t *rows_in = json_array();
        for (size_t i = 0; i < upto; i++) {
            kiln_str o = kiln_db_text(&ev, i, 5), res = kiln_db_text(&ev, i, 2),
                     act = kiln_db_text(&ev, i, 3), eid = kiln_db_text(&ev, i, 0);
            const char *type = kiln_arena_sprintf(a, "%.*s.%.*s", (int)res.len, res.p,
                                                  (int)act.len, act.p);
            int64_t at_us = 0, enum_id = 0;
            kiln_db_timestamp(&ev, i, 7, &at_us);
            kiln_db_int64(&ev, i, 0, &enum_id);
            const char *payload = NULL;
            for (size_t k = 0; k < hk.nrows; k++) {
                if (strlen(hooks[k].owner) != o.len || memcmp(hooks[k].owner, o.p, o.len) ||
                    at_us < hooks[k].since_us || !hooks[k].patterns ||
                    !hook_wants(&hooks[k], type))
                    continue;
                if (!payload)
                    payload = event_payload(a, &ev, i, type);
                if (!payload)
                    continue;
                json_array_append_new(
                    rows_in, json_pack("{s:s, s:I, s:s, s:s, s:s}", "w", hooks[k].id, "e",
                                       (json_int_t)enum_id, "m",
                                       kiln_arena_sprintf(a, "msg_%.*s", (int)eid.len, eid.p),
                                       "t", type, "p", payload));
            }
        }
        for (size_t k = 0; k < hk.nrows; k++)
            json_decref(hooks[k].patterns);
        size_t enq = 0;
        if (json_array_size(rows_in)) {
            char *text = json_dumps(rows_in, JSON_COMPACT);
            kiln_str q[2] = { kiln_str_c(kiln_arena_strndup(a, text, strlen(text))),
                              kiln_str_c(now) };
            free(text);
            struct kiln_db_rows d;
            err = kiln_db_query(
                db, a,
                pg ? "INSERT INTO webhook_deliveries (webhook_id, event_id, msg_id, type, payload, "
                     "state, attempts, inserted_at, updated_at) SELECT (x->>'w')::uuid, "
                     "(x->>'e')::bigint, x->>'m', x->>'t', x->>'p', 'pending', 0, $2, $2 FROM "
                     "json_array_elements($1::json) WITH ORDINALITY AS r(x, n) ORDER BY r.n "
                     "ON CONFLICT (webhook_id, event_id) WHERE event_id IS NOT NULL DO NOTHING "
                     "RETURNING id"
                   : "INSERT INTO webhook_deliveries (webhook_id, event_id, msg_id, type, "
                     "payload, state, attempts, inserted_at, updated_at) SELECT "
                     "json_extract(x.value, '$.w'), json_extract(x.value, '$.e'), "
                     "json_extract(x.value, '$.m'), json_extract(x.value, '$.t'), "
                     "json_extract(x.value, '$.p'), 'pending', 0, $2, $2 FROM json_each($1) AS "
                     "x WHERE true ORDER BY x.key ON CONFLICT (webhook_id, event_id) WHERE "
                     "event_id IS NOT NULL DO NOTHING RETURNING id",
                q, 2, &d);
            if (!err && d.nrows) {
                kiln_buf ids;
                kiln_buf_init(&ids, 1 << 24);
                kiln_buf_append_c(&ids, "[");
                /* RETURNING's order is not promised: sorted, the ids are
                 * the commit order (a sequence, one statement). */
                int64_t *v = kiln_arena_alloc(a, d.nrows * sizeof *v);
                for (size_t i = 0; i < d.nrows; i++)
                    kiln_db_int64(&d, i, 0, &v[i]);
                qsort(v, d.nrows, sizeof *v, cmp_i64);
                for (size_t i = 0; i < d.nrows; i++)
                    kiln_buf_printf(&ids, "%s%lld", i ? "," : "", (long long)v[i]);
                kiln_buf_append_c(&ids, "]");
                err = kiln_job_enqueue_batch(db, a, DELIVER_KIND, buf_text(a, &ids),
                                             "{\"delivery\":", "}",
                                             (int)C->webhook_retries + 1);
                kiln_buf_free(&ids);
                enq = d.nrows;
            }
        }
        json_decref(rows_in);
        if (err)
            goto fail;
        if (upto) {
            kiln_db_int64(&ev, upto - 1, 1, &ntx);
            kiln_db_int64(&ev, upto - 1, 0, &nid);
        }
        notify = enq > 0;
    }
    if (ntx != ctx || nid != cid) {
        kiln_str p[2] = { kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)ntx)),
                          kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)nid)) };
        err = kiln_db_query(db, a, "UPDATE webhook_cursor SET tx = $1, eid = $2 WHERE id = 1",
                            p, 2, NULL);
        if (err)
            goto fail;
    }
    err = kiln_db_commit(db);
    if (err)
        goto fail;
    if (notify)
        kiln_jobs_notify(); /* after the commit: the jobs are there to claim */
    kiln_arena_free(a);
    return more;
fail:
    /* Retried at the next wake-up or poll; during an outage one line a
     * second, its own (not the requests' line). */
    kiln_log_outage("Database (webhooks)", kiln_db_last_error(db));
    if (begun)
        kiln_db_rollback(db);
    kiln_arena_free(a);
    return false;
}

static void dispatch(struct kiln_db *db, void *arg)
{
    (void)arg;
    if (kiln_now_ms() < atomic_load(&idle_until))
        return;
    /* One batch at a time: the manager thread that runs this also claims
     * the deliveries it makes, so a backlog of events must not hold its
     * claims back (with 20 batches a call, under 3,000 writes/s the
     * runners delivered almost nothing until the writes stopped). More
     * waiting: due again at once. */
    if (!dispatch_batch(db))
        return;
    kiln_jobs_pump_due();
}

/* ---- delivery ------------------------------------------------------------- */

static uint64_t schedule_total_ms(void)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < C->webhook_retries; i++)
        t += C->webhook_retry_ms[i];
    return t;
}

/* The outcome of one attempt, recorded with the delivery's and the
 * endpoint's state at once: on PostgreSQL in one statement (what every
 * delivery pays: one round trip instead of five with BEGIN and COMMIT),
 * which ends the job too when the delivery succeeded (*ended: the job
 * returns KILN_JOB_ENDED); else, and when the endpoint may have to be
 * disabled, in a transaction. */
static int record(struct kiln_job_run *job, long long did, const char *wid, long status,
                  long latency_ms, const char *error, const char *state, bool failed_for_good,
                  bool *ended)
{
    *ended = false;
    kiln_arena *a = job->arena;
    struct kiln_db *db = job->db;
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    kiln_str p[10] = {
        kiln_str_c(kiln_arena_sprintf(a, "%lld", did)),
        kiln_str_c(now),
        status ? kiln_str_c(kiln_arena_sprintf(a, "%ld", status)) : (kiln_str){ NULL, 0 },
        kiln_str_c(kiln_arena_sprintf(a, "%ld", latency_ms)),
        error ? kiln_str_c(error) : (kiln_str){ NULL, 0 },
        kiln_str_c(state),
        kiln_str_c(wid),
    };
    if (kiln_db_dialect(db) == KILN_DB_POSTGRES && !failed_for_good) {
        /* failing_since: cleared by a success, set by the first failure. */
        bool done = !strcmp(state, "succeeded");
        const char *end = done ? kiln_arena_sprintf(a, ", j AS (%s)",
                                                    kiln_job_done_sql(a, job, 8, p + 7))
                               : "";
        int err = kiln_db_query(
            db, a,
            kiln_arena_sprintf(
                a,
                "WITH a AS (INSERT INTO webhook_attempts (delivery_id, at, status, latency_ms, "
                "error) VALUES ($1, $2::timestamptz, $3, $4, $5)), d AS (UPDATE "
                "webhook_deliveries SET state = $6::text, attempts = attempts + 1, updated_at = "
                "$2::timestamptz WHERE id = $1)%s UPDATE webhooks SET failing_since = CASE WHEN "
                "$6::text = 'succeeded' THEN NULL ELSE $2::timestamptz END WHERE id = $7 AND CASE "
                "WHEN $6::text = 'succeeded' THEN failing_since IS NOT NULL ELSE failing_since IS "
                "NULL END",
                end),
            p, done ? 10 : 7, NULL);
        *ended = done && !err;
        return err;
    }
    int err = kiln_db_begin(db);
    if (err)
        return err;
    err = kiln_db_query(db, a,
                        "INSERT INTO webhook_attempts (delivery_id, at, status, latency_ms, error) "
                        "VALUES ($1, $2, $3, $4, $5)",
                        p, 5, NULL);
    if (!err) {
        kiln_str q[3] = { p[0], kiln_str_c(state), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, "
                            "updated_at = $3 WHERE id = $1",
                            q, 3, NULL);
    }
    if (!err && !strcmp(state, "succeeded")) {
        kiln_str q[1] = { kiln_str_c(wid) };
        err = kiln_db_query(db, a,
                            "UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND "
                            "failing_since IS NOT NULL",
                            q, 1, NULL);
    } else if (!err) {
        kiln_str q[2] = { kiln_str_c(wid), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE webhooks SET failing_since = $2 WHERE id = $1 AND "
                            "failing_since IS NULL",
                            q, 2, NULL);
        if (!err && failed_for_good) {
            /* Everything has failed since failing_since: past the whole
             * retry schedule, the endpoint is off until its owner turns it
             * back on (PATCH enabled: true). */
            uint64_t span = schedule_total_ms();
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t cut_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - (int64_t)span;
            struct timespec cts = { (time_t)(cut_ms / 1000), (long)(cut_ms % 1000) * 1000000 };
            char cut[KILN_RFC3339_LEN + 1];
            kiln_time_rfc3339(cut, &cts);
            /* In seconds, or in ms when that is not whole (a schedule of
             * "200ms,200ms,200ms" is not "0 s"). */
            const char *spans = span % 1000
                                    ? kiln_arena_sprintf(a, "%llu ms", (unsigned long long)span)
                                    : kiln_arena_sprintf(a, "%llu s",
                                                         (unsigned long long)(span / 1000));
            const char *why = kiln_arena_sprintf(
                a,
                "Disabled at %s: every delivery has failed since its failures began, for longer "
                "than the retry schedule (%s). Last error: %s",
                now, spans, error ? error : "?");
            kiln_str r[4] = { kiln_str_c(wid), kiln_str_c(cut), kiln_str_c(why),
                              kiln_str_c(now) };
            struct kiln_db_rows rows;
            err = kiln_db_query(db, a,
                                "UPDATE webhooks SET enabled = false, disabled_reason = $3, "
                                "updated_at = $4 WHERE id = $1 AND enabled AND failing_since "
                                "IS NOT NULL AND failing_since <= $2 RETURNING id",
                                r, 4, &rows);
            if (!err && rows.nrows)
                kiln_log(KILN_LOG_WARNING, "webhooks: an endpoint was disabled", "webhook", wid,
                         "reason", why, NULL);
        }
    }
    if (err) {
        kiln_db_rollback(db);
        return err;
    }
    return kiln_db_commit(db);
}

static enum kiln_job_result deliver(struct kiln_job_run *job)
{
    kiln_arena *a = job->arena;
    json_t *args = json_loads(job->args, 0, NULL);
    long long did = (long long)json_integer_value(json_object_get(args, "delivery"));
    json_decref(args);
    kiln_str p[1] = { kiln_str_c(kiln_arena_sprintf(a, "%lld", did)) };
    struct kiln_db_rows r;
    int err = kiln_db_query(job->db, a,
                            "SELECT d.msg_id, d.payload, w.id, w.url, w.secret, "
                            "w.previous_secret, w.previous_expires_at, w.enabled FROM "
                            "webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE "
                            "d.id = $1",
                            p, 1, &r);
    if (err) {
        snprintf(job->error, sizeof job->error, "reading the delivery: %s",
                 kiln_db_last_error(job->db));
        return KILN_JOB_RETRY;
    }
    if (r.nrows != 1)
        return KILN_JOB_OK; /* the endpoint (and its deliveries) was deleted */
    const char *msg_id = kiln_db_text(&r, 0, 0).p, *payload = kiln_db_text(&r, 0, 1).p,
               *wid = kiln_db_text(&r, 0, 2).p, *url = kiln_db_text(&r, 0, 3).p,
               *secret = kiln_db_text(&r, 0, 4).p, *previous = kiln_db_text(&r, 0, 5).p;
    int64_t prev_until = 0;
    bool enabled = true;
    kiln_db_bool(&r, 0, 7, &enabled);
    {
        int64_t v = 1;
        if (kiln_db_int64(&r, 0, 7, &v))
            enabled = v != 0;
    }
    bool ended;
    if (!enabled) {
        record(job, did, wid, 0, 0, "the endpoint is disabled", "failed", false, &ended);
        return KILN_JOB_OK;
    }
    struct timespec now_ts;
    clock_gettime(CLOCK_REALTIME, &now_ts);
    if (previous && (!kiln_db_timestamp(&r, 0, 6, &prev_until) ||
                     prev_until <= (int64_t)now_ts.tv_sec * 1000000 + now_ts.tv_nsec / 1000))
        previous = NULL;

    struct kiln_egress_policy pol = { .allow_http = C->env != KILN_ENV_PRODUCTION,
                                      .allow_private = C->webhook_allow_private };
    char pin[KILN_EGRESS_PIN_LEN], why[512];
    const char *error = NULL;
    long status = 0, latency = 0;
    bool retryable = false;
    err = kiln_egress_resolve(url, &pol, pin, sizeof pin, why, sizeof why);
    if (err) {
        error = kiln_arena_sprintf(a, "%s", why);
        retryable = err == KILN_EIO; /* a name that does not resolve may later */
    } else {
        long long ts = (long long)now_ts.tv_sec;
        const char *sig = NULL;
        size_t blen = strlen(payload);
        if (!kiln_webhook_sign(a, secret, previous, msg_id, ts, payload, blen, &sig)) {
            snprintf(job->error, sizeof job->error, "the endpoint's secret is not a whsec_ one");
            return KILN_JOB_DEAD;
        }
        const char *headers[] = {
            kiln_arena_sprintf(a, "webhook-id: %s", msg_id),
            kiln_arena_sprintf(a, "webhook-timestamp: %lld", ts),
            kiln_arena_sprintf(a, "webhook-signature: %s", sig),
            "user-agent: Kiln-Webhooks/1",
        };
        struct kiln_http_request req = {
            .url = url,
            .method = "POST",
            .body = payload,
            .body_len = blen,
            .content_type = "application/json",
            .headers = headers,
            .nheaders = sizeof headers / sizeof headers[0],
            .connect_timeout_ms = C->webhook_timeout_s * 1000 < 5000 ? C->webhook_timeout_s * 1000
                                                                     : 5000,
            .timeout_ms = C->webhook_timeout_s * 1000,
            .max_body = KILN_WEBHOOK_MAX_RESPONSE,
            .resolve_pin = pin,
            .https_only = !pol.allow_http,
            .truncate_body = true,
            .keep_alive = true,
        };
        struct kiln_http_response res;
        uint64_t t0 = kiln_now_ms();
        err = kiln_http_fetch(&req, &res);
        latency = (long)(kiln_now_ms() - t0);
        status = err ? 0 : res.status;
        if (err) {
            error = kiln_arena_sprintf(a, "%.*s", KILN_WEBHOOK_MAX_ERROR,
                                       res.error[0] ? res.error : "request failed");
            retryable = true;
        } else if (status < 200 || status > 299) {
            error = kiln_arena_sprintf(a, "HTTP %ld", status);
            retryable = status == 429 || status >= 500;
        }
        kiln_http_response_free(&res);
    }
    bool spent = job->attempt >= job->max_attempts;
    bool for_good = error && (!retryable || spent);
    const char *state = !error ? "succeeded" : for_good ? "failed" : "pending";
    if ((err = record(job, did, wid, status, latency, error, state, for_good, &ended)) != 0) {
        /* Not recorded: run again (the receiver drops the repeat by its
         * webhook-id). */
        snprintf(job->error, sizeof job->error, "recording the attempt: %s",
                 kiln_db_last_error(job->db));
        return KILN_JOB_RETRY;
    }
    if (!error)
        return ended ? KILN_JOB_ENDED : KILN_JOB_OK;
    snprintf(job->error, sizeof job->error, "%s", error);
    if (!retryable)
        return KILN_JOB_DEAD;
    unsigned i = (unsigned)job->attempt - 1;
    job->retry_in_ms = i < C->webhook_retries ? C->webhook_retry_ms[i] : 0;
    return KILN_JOB_RETRY;
}

static enum kiln_job_result prune(struct kiln_job_run *job)
{
    long n = kiln_prune_rows(job->db, "webhook_deliveries", "inserted_at", NULL,
                             C->webhook_retention_days * 86400000ull, job->stopping);
    if (n < 0) {
        snprintf(job->error, sizeof job->error, "pruning failed: %s",
                 kiln_db_last_error(job->db));
        return KILN_JOB_RETRY;
    }
    return KILN_JOB_OK;
}

void kiln_webhooks_init(const struct kiln_config *cfg, kiln_webhook_render_fn fn)
{
    C = cfg;
    render = fn;
    kiln_job_register(&(struct kiln_job_kind){
        .name = DELIVER_KIND,
        .run = deliver,
        .max_attempts = (int)cfg->webhook_retries + 1,
    });
    if (cfg->events_prune_s)
        kiln_job_register(&(struct kiln_job_kind){
            .name = "webhooks.prune", .run = prune, .every_s = cfg->events_prune_s,
            .max_attempts = 3 });
    kiln_jobs_add_pump(dispatch, NULL);
}
