/*
 * The change feed's HTTP side (docs/REALTIME.md): GET /api/v1/events, the
 * session user's server-sent event stream, and GET /api/v1/audit, the
 * caller's audit log; plus kiln_audit_record for the audit rows that are
 * not a resource's change (the engine writes those with the change).
 */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/session.h"
#include "core/buf.h"
#include "core/log.h"
#include "events/feed.h"
#include "http/server.h"
#include "http/stream.h"


static void bad_request(struct kiln_req *req, struct kiln_res *res, const char *message)
{
    kiln_res_error(req, res, 400, "invalid_request", message, NULL);
}

void api_events_stream(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_session *session = req->session;
    if (!kiln_feed_running()) {
        kiln_res_error(req, res, 503, "service_unavailable", "Server busy, retry shortly", NULL);
        kiln_res_header(res, "retry-after", "1");
        return;
    }
    if (kiln_server_draining()) {
        /* This instance is going away. A browser's EventSource gives up for
         * good on anything but a 200 event stream, so it gets one that
         * only says when to retry, and ends: its retry opens a new
         * connection, which lands on another instance. */
        kiln_res_header(res, "cache-control", "no-store");
        res->content_type = KILN_STR("text/event-stream");
        res->status = 200;
        res->body = KILN_STR("retry: 1000\n\n");
        res->close = true;
        return;
    }
    uint64_t filter = 0;
    kiln_str list;
    if (kiln_req_query(req, "resources", &list) && list.len) {
        const char *bad = NULL;
        char *text = kiln_arena_strndup(req->arena, list.p, list.len);
        if (!kiln_feed_filter(req->arena, text, &filter, &bad)) {
            bad_request(req, res,
                        kiln_arena_sprintf(req->arena, "Unknown resource in resources: \"%s\"",
                                           bad && strlen(bad) <= 64 ? bad : "..."));
            return;
        }
    }
    /* The header wins over the query: a browser's EventSource opened on
     * ?last_event_id=N keeps that URL and sends its own, newer,
     * Last-Event-ID on every reconnection. */
    kiln_str last = kiln_req_header(req, "last-event-id");
    bool has_last = last.p != NULL;
    if (!has_last)
        has_last = kiln_req_query(req, "last_event_id", &last);
    int64_t last_id = 0;
    if (has_last && !kiln_feed_parse_id(last, &last_id)) {
        bad_request(req, res, "Last-Event-ID must be an event id (digits)");
        return;
    }
    struct kiln_feed_sub *sub = kiln_feed_sub_new();
    snprintf(sub->owner, sizeof sub->owner, "%s", res_user_id(req));
    snprintf(sub->sid, sizeof sub->sid, "%s", session->sid);
    sub->filter = filter;
    struct kiln_db *db = app_db(req);
    int err = 0;
    bool found = false;
    if (has_last && last_id >= 0)
        err = kiln_feed_position(db, req->arena, sub->owner, last_id, &sub->tx, &found);
    if (!err && found)
        sub->id = last_id;
    else if (!err)
        err = kiln_feed_head(db, req->arena, &sub->tx, &sub->id);
    if (err) {
        kiln_feed_sub_free(sub);
        res_store_error(req, res, err, "events");
        return;
    }
    sub->reset = has_last && !found;
    kiln_res_header(res, "cache-control", "no-store");
    /* nginx and some proxies buffer responses unless told not to. */
    kiln_res_header(res, "x-accel-buffering", "no");
    res->content_type = KILN_STR("text/event-stream");
    kiln_res_stream(res, &kiln_feed_stream_ops, sub, kiln_feed_heartbeat_ms());
}

/* ---- audit ---- */

void kiln_audit_record(struct kiln_req *req, const char *actor, const char *action,
                       const char *target)
{
    struct kiln_db *db = app_db(req);
    if (!db)
        return;
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    kiln_str p[7] = {
        kiln_str_c(now),
        actor ? kiln_str_c(actor) : KILN_STR_NULL,
        kiln_str_c(action),
        target ? kiln_str_c(res_audit_text(req->arena, kiln_str_c(target))) : KILN_STR_NULL,
        kiln_str_c(kiln_client_ip(req)),
        kiln_str_c(res_audit_text(req->arena, kiln_req_header(req, "user-agent"))),
        { req->request_id, req->request_id_len },
    };
    if (!p[5].p)
        p[5] = KILN_STR_NULL;
    int err = kiln_db_query(db, req->arena,
                            "INSERT INTO audit (at, actor, action, target, ip, user_agent, "
                            "request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            p, 7, NULL);
    if (err)
        /* The answer stands: a login is not undone because its record
         * failed; the line says what is missing. */
        kiln_log(KILN_LOG_ERROR, "audit: cannot record", "action", action, "request_id",
                 req->request_id, "error", kiln_db_last_error(db), NULL);
}

void api_audit_list(struct kiln_req *req, struct kiln_res *res)
{
    unsigned limit, offset;
    if (!res_query_uint(req, res, "limit", API_AUDIT_PAGE_DEFAULT, 1, API_AUDIT_PAGE_MAX, &limit) ||
        !res_query_uint(req, res, "offset", 0, 0, API_AUDIT_OFFSET_MAX, &offset))
        return;
    kiln_arena *a = req->arena;
    kiln_str p[3] = { kiln_str_c(res_user_id(req)),
                      kiln_str_c(kiln_arena_sprintf(a, "%u", limit)),
                      kiln_str_c(kiln_arena_sprintf(a, "%u", offset)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), a,
                            "SELECT id, at, action, target, ip, user_agent, request_id, "
                            "(SELECT count(*) FROM audit WHERE actor = $1) FROM audit WHERE "
                            "actor = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
                            p, 3, &rows);
    int64_t total = 0;
    if (!err && rows.nrows)
        kiln_db_int64(&rows, 0, 7, &total);
    else if (!err) {
        struct kiln_db_rows count;
        err = kiln_db_query(app_db(req), a, "SELECT count(*) FROM audit WHERE actor = $1", p, 1,
                            &count);
        if (!err && count.nrows)
            kiln_db_int64(&count, 0, 0, &total);
    }
    if (err) {
        res_store_error(req, res, err, "audit");
        return;
    }
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_buf_append_c(&b, "{\"data\":[");
    static const char *const names[] = { "action", "target", "ip", "user_agent", "request_id" };
    for (size_t i = 0; i < rows.nrows; i++) {
        int64_t id = 0;
        kiln_db_int64(&rows, i, 0, &id);
        char at[KILN_RFC3339_LEN + 1];
        if (!res_time_text(&rows, i, 1, at))
            at[0] = '\0';
        kiln_buf_printf(&b, "%s{\"id\":%lld,\"at\":\"%s\"", i ? "," : "", (long long)id, at);
        for (size_t k = 0; k < 5; k++) {
            kiln_str v = kiln_db_text(&rows, i, 2 + k);
            kiln_buf_printf(&b, ",\"%s\":", names[k]);
            if (v.p) {
                kiln_buf_append_c(&b, "\"");
                kiln_buf_append_json_str(&b, v.p, v.len);
                kiln_buf_append_c(&b, "\"");
            } else {
                kiln_buf_append_c(&b, "null");
            }
        }
        kiln_buf_append_c(&b, "}");
    }
    kiln_buf_printf(&b, "],\"meta\":{\"count\":%zu,\"total\":%lld,\"limit\":%u,\"offset\":%u}}",
                    rows.nrows, (long long)total, limit, offset);
    kiln_str out = { kiln_arena_strndup(a, b.p, b.len), b.len };
    kiln_buf_free(&b);
    kiln_res_json_text(res, 200, out);
}
