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
                 ") FROM events WHERE (tx, id) > ($1, $2) AND owner IN (SELECT user_id FROM "
                 "webhooks WHERE enabled) ORDER BY tx, id LIMIT 500"
               : "SELECT id, tx, resource, action, row_id, owner, data, at, NULL FROM events "
                 "WHERE tx = $1 AND id > $2 AND owner IN (SELECT user_id FROM webhooks WHERE "
                 "enabled) ORDER BY id LIMIT 500",
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
        /* Only the events of owners with an endpoint were read: when the
         * batch was not full, every event below the head (read before
         * them, so all committed and in this read) has been looked at, as
         * when nobody listens. */
        if (!more && pg && head > ntx) {
            ntx = head;
            nid = 0;
        } else if (!more && !pg && head > nid) {
            nid = head;
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

/* What one delivery's attempt came to. */
struct outcome {
    long long did;
    const char *wid;     /* the endpoint; NULL: nothing to record */
    long status, latency;
    const char *error;   /* NULL: succeeded */
    const char *state;   /* succeeded, pending (retried), failed */
    bool for_good;       /* failed with no retry left: may disable the endpoint */
};

/* Past the retry schedule since failing_since, the endpoint is off until
 * its owner turns it back on (PATCH enabled: true). */
static int maybe_disable(struct kiln_db *db, kiln_arena *a, const struct outcome *o,
                         const char *now)
{
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
                            : kiln_arena_sprintf(a, "%llu s", (unsigned long long)(span / 1000));
    const char *why = kiln_arena_sprintf(
        a,
        "Disabled at %s: every delivery has failed since its failures began, for longer than "
        "the retry schedule (%s). Last error: %s",
        now, spans, o->error ? o->error : "?");
    kiln_str r[4] = { kiln_str_c(o->wid), kiln_str_c(cut), kiln_str_c(why), kiln_str_c(now) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(db, a,
                            "UPDATE webhooks SET enabled = false, disabled_reason = $3, "
                            "updated_at = $4 WHERE id = $1 AND enabled AND failing_since IS NOT "
                            "NULL AND failing_since <= $2 RETURNING id",
                            r, 4, &rows);
    if (!err && rows.nrows)
        kiln_log(KILN_LOG_WARNING, "webhooks: an endpoint was disabled", "webhook", o->wid,
                 "reason", why, NULL);
    return err;
}

/*
 * The outcomes of a batch's attempts, recorded with the deliveries' and
 * the endpoints' state at once (a delivery deleted meanwhile with its
 * endpoint is skipped: it does not fail the others' record). On PostgreSQL, when no endpoint may have
 * to be disabled: one statement for the whole batch (what every delivery
 * pays: a share of one round trip), which also ends the jobs of the
 * deliveries that succeeded (ended[i]: job i returns KILN_JOB_ENDED).
 * Else in one transaction, in delivery order. An endpoint's failing_since
 * follows its last attempt in the batch: cleared by a success, set by the
 * first failure.
 */
static int record(struct kiln_job_run *jobs, const struct outcome *o, size_t n, bool *ended)
{
    kiln_arena *a = jobs[0].arena;
    struct kiln_db *db = jobs[0].db;
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    bool any = false, disable = false;
    for (size_t i = 0; i < n; i++) {
        ended[i] = false;
        any |= o[i].wid != NULL;
        disable |= o[i].wid && o[i].for_good;
    }
    if (!any)
        return 0;
    if (kiln_db_dialect(db) == KILN_DB_POSTGRES && !disable) {
        kiln_buf b;
        kiln_buf_init(&b, (size_t)n * (KILN_WEBHOOK_MAX_ERROR * 6 + 256) + 16);
        kiln_buf_append_c(&b, "[");
        for (size_t i = 0, k = 0; i < n; i++) {
            if (!o[i].wid)
                continue;
            kiln_buf_printf(&b, "%s{\"n\":%zu,\"did\":%lld,\"status\":", k++ ? "," : "", i,
                            o[i].did);
            if (o[i].status)
                kiln_buf_printf(&b, "%ld", o[i].status);
            else
                kiln_buf_append_c(&b, "null");
            kiln_buf_printf(&b, ",\"latency\":%ld,\"error\":", o[i].latency);
            if (o[i].error) {
                kiln_buf_append_c(&b, "\"");
                kiln_buf_append_json_str(&b, o[i].error, strlen(o[i].error));
                kiln_buf_append_c(&b, "\"");
            } else
                kiln_buf_append_c(&b, "null");
            kiln_buf_printf(&b, ",\"state\":\"%s\",\"wid\":\"%s\",\"job\":%lld,\"attempt\":%d}",
                            o[i].state, o[i].wid, (long long)jobs[i].id, jobs[i].attempt);
        }
        kiln_buf_append_c(&b, "]");
        kiln_str p[3] = { kiln_str_c(kiln_arena_strndup(a, b.p, b.len)), kiln_str_c(now) };
        kiln_buf_free(&b);
        const char *end = kiln_job_done_many_sql(a, "v", "v.state = 'succeeded'", 3, p + 2);
        int err = kiln_db_query(
            db, a,
            kiln_arena_sprintf(
                a,
                "WITH v AS (SELECT * FROM json_to_recordset($1::json) AS x(n int, did bigint, "
                "status int, latency int, error text, state text, wid uuid, job bigint, attempt "
                "int)), a AS (INSERT INTO webhook_attempts (delivery_id, at, status, latency_ms, "
                "error) SELECT did, $2::timestamptz, status, latency, error FROM v WHERE EXISTS (SELECT "
                "FROM webhook_deliveries WHERE id = v.did) ORDER BY n), d "
                "AS (UPDATE webhook_deliveries SET state = v.state, attempts = "
                "webhook_deliveries.attempts + 1, updated_at = $2::timestamptz FROM v WHERE "
                "webhook_deliveries.id = v.did), j AS (%s) UPDATE webhooks SET failing_since = "
                "CASE WHEN x.state = 'succeeded' THEN NULL ELSE $2::timestamptz END FROM (SELECT "
                "DISTINCT ON (wid) wid, state FROM v ORDER BY wid, n DESC) AS x WHERE webhooks.id "
                "= x.wid AND CASE WHEN x.state = 'succeeded' THEN webhooks.failing_since IS NOT "
                "NULL ELSE webhooks.failing_since IS NULL END",
                end),
            p, 3, NULL);
        for (size_t i = 0; !err && i < n; i++)
            ended[i] = o[i].wid && !o[i].error;
        return err;
    }
    int err = kiln_db_begin(db);
    if (err)
        return err;
    for (size_t i = 0; !err && i < n; i++) {
        if (!o[i].wid)
            continue;
        kiln_str p[5] = {
            kiln_str_c(kiln_arena_sprintf(a, "%lld", o[i].did)),
            kiln_str_c(now),
            o[i].status ? kiln_str_c(kiln_arena_sprintf(a, "%ld", o[i].status))
                        : (kiln_str){ NULL, 0 },
            kiln_str_c(kiln_arena_sprintf(a, "%ld", o[i].latency)),
            o[i].error ? kiln_str_c(o[i].error) : (kiln_str){ NULL, 0 },
        };
        kiln_str q[3] = { p[0], kiln_str_c(o[i].state), kiln_str_c(now) };
        struct kiln_db_rows rows;
        err = kiln_db_query(db, a,
                            "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, "
                            "updated_at = $3 WHERE id = $1 RETURNING id",
                            q, 3, &rows);
        if (!err && !rows.nrows)
            continue; /* deleted with its endpoint */
        if (!err)
            err = kiln_db_query(db, a,
                                "INSERT INTO webhook_attempts (delivery_id, at, status, "
                                "latency_ms, error) VALUES ($1, $2, $3, $4, $5)",
                                p, 5, NULL);
        if (!err) {
            kiln_str w[2] = { kiln_str_c(o[i].wid), kiln_str_c(now) };
            err = kiln_db_query(db, a,
                                o[i].error ? "UPDATE webhooks SET failing_since = $2 WHERE id = "
                                             "$1 AND failing_since IS NULL"
                                           : "UPDATE webhooks SET failing_since = NULL WHERE id "
                                             "= $1 AND failing_since IS NOT NULL",
                                w, o[i].error ? 2 : 1, NULL);
        }
        if (!err && o[i].for_good)
            err = maybe_disable(db, a, &o[i], now);
    }
    if (err) {
        kiln_db_rollback(db);
        return err;
    }
    return kiln_db_commit(db);
}

/* A delivery as read for its attempt. */
struct delivery {
    long long did;
    const char *msg_id, *payload, *wid, *url, *secret, *previous;
    int64_t previous_until;
    bool found, enabled;
};

/* The batch's deliveries and their endpoints, in one statement. */
#define READ_DELIVERIES(IDS)                                                                      \
    "SELECT d.id, d.msg_id, d.payload, w.id, w.url, w.secret, w.previous_secret, "              \
    "w.previous_expires_at, w.enabled FROM webhook_deliveries d JOIN webhooks w ON w.id = "      \
    "d.webhook_id WHERE d.id IN (" IDS ")"

static int read_deliveries(struct kiln_job_run *jobs, size_t n, struct delivery *d)
{
    kiln_arena *a = jobs[0].arena;
    kiln_buf b;
    kiln_buf_init(&b, (size_t)n * 24 + 4);
    kiln_buf_append_c(&b, "[");
    for (size_t i = 0; i < n; i++)
        kiln_buf_printf(&b, "%s%lld", i ? "," : "", d[i].did);
    kiln_buf_append_c(&b, "]");
    kiln_str p[1] = { kiln_str_c(kiln_arena_strndup(a, b.p, b.len)) };
    kiln_buf_free(&b);
    struct kiln_db_rows r;
    int err = kiln_db_query(
        jobs[0].db, a,
        kiln_db_dialect(jobs[0].db) == KILN_DB_POSTGRES
            ? READ_DELIVERIES("SELECT json_array_elements_text($1::json)::bigint")
            : READ_DELIVERIES("SELECT value FROM json_each($1)"),
        p, 1, &r);
    if (err)
        return err;
    for (size_t row = 0; row < r.nrows; row++) {
        int64_t id = 0;
        kiln_db_int64(&r, row, 0, &id);
        for (size_t i = 0; i < n; i++) {
            if (d[i].did != id || d[i].found)
                continue;
            d[i].found = true;
            d[i].msg_id = kiln_db_text(&r, row, 1).p;
            d[i].payload = kiln_db_text(&r, row, 2).p;
            d[i].wid = kiln_db_text(&r, row, 3).p;
            d[i].url = kiln_db_text(&r, row, 4).p;
            d[i].secret = kiln_db_text(&r, row, 5).p;
            d[i].previous = kiln_db_text(&r, row, 6).p;
            if (d[i].previous && !kiln_db_timestamp(&r, row, 7, &d[i].previous_until))
                d[i].previous = NULL;
            d[i].enabled = true;
            kiln_db_bool(&r, row, 8, &d[i].enabled);
            int64_t v = 1;
            if (kiln_db_int64(&r, row, 8, &v))
                d[i].enabled = v != 0;
            break;
        }
    }
    return 0;
}

/* One delivery's request. o gets its outcome; *retryable whether a
 * failure may be retried. false: the endpoint's secret is unusable (the
 * job is dead, nothing recorded). */
static bool attempt(struct kiln_job_run *job, const struct delivery *d, struct outcome *o,
                    bool *retryable)
{
    kiln_arena *a = job->arena;
    struct timespec now_ts;
    clock_gettime(CLOCK_REALTIME, &now_ts);
    const char *previous = d->previous;
    if (previous && d->previous_until <= (int64_t)now_ts.tv_sec * 1000000 + now_ts.tv_nsec / 1000)
        previous = NULL;
    struct kiln_egress_policy pol = { .allow_http = C->env != KILN_ENV_PRODUCTION,
                                      .allow_private = C->webhook_allow_private };
    char pin[KILN_EGRESS_PIN_LEN], why[512];
    *retryable = false;
    int err = kiln_egress_resolve(d->url, &pol, pin, sizeof pin, why, sizeof why);
    if (err) {
        o->error = kiln_arena_sprintf(a, "%s", why);
        *retryable = err == KILN_EIO; /* a name that does not resolve may later */
        return true;
    }
    long long ts = (long long)now_ts.tv_sec;
    const char *sig = NULL;
    size_t blen = strlen(d->payload);
    if (!kiln_webhook_sign(a, d->secret, previous, d->msg_id, ts, d->payload, blen, &sig)) {
        snprintf(job->error, sizeof job->error, "the endpoint's secret is not a whsec_ one");
        return false;
    }
    const char *headers[] = {
        kiln_arena_sprintf(a, "webhook-id: %s", d->msg_id),
        kiln_arena_sprintf(a, "webhook-timestamp: %lld", ts),
        kiln_arena_sprintf(a, "webhook-signature: %s", sig),
        "user-agent: Kiln-Webhooks/1",
    };
    struct kiln_http_request req = {
        .url = d->url,
        .method = "POST",
        .body = d->payload,
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
    o->latency = (long)(kiln_now_ms() - t0);
    o->status = err ? 0 : res.status;
    if (err) {
        o->error = kiln_arena_sprintf(a, "%.*s", KILN_WEBHOOK_MAX_ERROR,
                                      res.error[0] ? res.error : "request failed");
        *retryable = true;
    } else if (o->status < 200 || o->status > 299) {
        o->error = kiln_arena_sprintf(a, "HTTP %ld", o->status);
        *retryable = o->status == 429 || o->status >= 500;
    }
    kiln_http_response_free(&res);
    return true;
}

/*
 * Up to KILN_WEBHOOK_BATCH deliveries on one runner: one statement reads
 * them all, the requests go one after the other (the runner's connection
 * to an endpoint kept between them), one statement records them all.
 * A batch that has taken KILN_WEBHOOK_BATCH_MS hands the deliveries it
 * has not started back to the queue (a slow endpoint does not hold the
 * others' for a whole batch of timeouts), as does a drain.
 */
static void deliver(struct kiln_job_run *jobs, size_t n, enum kiln_job_result *res)
{
    kiln_arena *a = jobs[0].arena;
    struct delivery *d = kiln_arena_alloc(a, n * sizeof *d);
    struct outcome *o = kiln_arena_alloc(a, n * sizeof *o);
    bool *retryable = kiln_arena_alloc(a, n * sizeof *retryable);
    bool *ended = kiln_arena_alloc(a, n * sizeof *ended);
    memset(d, 0, n * sizeof *d);
    memset(o, 0, n * sizeof *o);
    for (size_t i = 0; i < n; i++) {
        json_t *args = json_loads(jobs[i].args, 0, NULL);
        d[i].did = (long long)json_integer_value(json_object_get(args, "delivery"));
        json_decref(args);
        o[i].did = d[i].did;
        res[i] = KILN_JOB_OK;
    }
    if (read_deliveries(jobs, n, d)) {
        for (size_t i = 0; i < n; i++) {
            snprintf(jobs[i].error, sizeof jobs[i].error, "reading the delivery: %s",
                     kiln_db_last_error(jobs[0].db));
            res[i] = KILN_JOB_RETRY;
        }
        return;
    }
    uint64_t t0 = kiln_now_ms();
    for (size_t i = 0; i < n; i++) {
        if (!d[i].found)
            continue; /* the endpoint (and its deliveries) was deleted: done */
        bool again = false; /* one batch records a delivery once */
        for (size_t k = 0; k < i; k++)
            again |= d[k].did == d[i].did;
        if (again || *jobs[i].stopping || (i && kiln_now_ms() - t0 >= KILN_WEBHOOK_BATCH_MS)) {
            res[i] = KILN_JOB_RELEASE;
            continue;
        }
        o[i].wid = d[i].wid;
        if (!d[i].enabled) {
            o[i].error = "the endpoint is disabled";
            o[i].state = "failed";
            continue; /* recorded; the job is done */
        }
        if (!attempt(&jobs[i], &d[i], &o[i], &retryable[i])) {
            o[i].wid = NULL;
            res[i] = KILN_JOB_DEAD;
            continue;
        }
        bool spent = jobs[i].attempt >= jobs[i].max_attempts;
        o[i].for_good = o[i].error && (!retryable[i] || spent);
        o[i].state = !o[i].error ? "succeeded" : o[i].for_good ? "failed" : "pending";
    }
    if (record(jobs, o, n, ended)) {
        /* Not recorded: run again (the receiver drops a repeat by its
         * webhook-id). */
        for (size_t i = 0; i < n; i++)
            if (o[i].wid) {
                snprintf(jobs[i].error, sizeof jobs[i].error, "recording the attempt: %s",
                         kiln_db_last_error(jobs[0].db));
                res[i] = KILN_JOB_RETRY;
            }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!o[i].wid || !d[i].enabled)
            continue;
        if (!o[i].error) {
            res[i] = ended[i] ? KILN_JOB_ENDED : KILN_JOB_OK;
            continue;
        }
        snprintf(jobs[i].error, sizeof jobs[i].error, "%s", o[i].error);
        if (!retryable[i]) {
            res[i] = KILN_JOB_DEAD;
            continue;
        }
        unsigned k = (unsigned)jobs[i].attempt - 1;
        jobs[i].retry_in_ms = k < C->webhook_retries ? C->webhook_retry_ms[k] : 0;
        res[i] = KILN_JOB_RETRY;
    }
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
        .run_batch = deliver,
        .batch = KILN_WEBHOOK_BATCH,
        .max_attempts = (int)cfg->webhook_retries + 1,
    });
    if (cfg->events_prune_s)
        kiln_job_register(&(struct kiln_job_kind){
            .name = "webhooks.prune", .run = prune, .every_s = cfg->events_prune_s,
            .max_attempts = 3 });
    kiln_jobs_add_pump(dispatch, NULL);
}
