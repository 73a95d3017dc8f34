/*
 * The user's sessions (GET /sessions, DELETE /sessions/:id, DELETE
 * /sessions): where they are signed in, and ending any of those.
 *
 * The sessions and their per-user index are auth/session.c's. What this
 * file adds is what every end of a session owes beyond its record, the
 * same as a logout: the session's event streams close on every instance
 * (kiln_events_session_ended) and the audit log says who ended it. A
 * session is named by its public id, never by its sid: a list that a
 * page's script reads must not carry half of a cookie.
 */
#include <jansson.h>
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/session.h"
#include "core/clock.h"
#include "core/err.h"
#include "events/feed.h"
#include "http/cookie.h"

/*
 * A session store error, through the one map, as auth.c answers them:
 * the kv store answers EINVAL only for arguments we built (a user id no
 * user has, a key of the wrong type), so anything but an outage is a bug,
 * a 500, never the 422 the map gives EINVAL; the log keeps the real code.
 */
static void store_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *what)
{
    const char *detail = kiln_kv_last_error(app_kv(req));
    if (kiln_err_status(err) != 503) {
        detail = kiln_arena_sprintf(req->arena, "%s: %s", kiln_err_name(err), detail);
        err = KILN_EDB; /* the map's code for "a bug": 500 */
    }
    kiln_res_fail(req, res, err, "Session store", what, detail);
}

/* What ending one session owes, whoever ends it. */
static void session_ended(struct kiln_req *req, const char *user_id, const char *sid,
                          const char *why)
{
    char id[KILN_SESSION_ID_LEN + 1];
    /* Its event streams close, on every instance. */
    kiln_events_session_ended(sid);
    kiln_session_public_id(sid, id);
    kiln_audit_record(req, user_id, "session_ended",
                      kiln_arena_sprintf(req->arena, "session/%s: %s", id, why));
}

struct ending {
    struct kiln_req *req;
    const char *user_id, *why;
};

static void on_ended(void *ctx, const char *sid)
{
    struct ending *e = ctx;
    session_ended(e->req, e->user_id, sid, e->why);
}

int api_sessions_end_all(struct kiln_req *req, const char *user_id, const char *keep_sid,
                         const char *why, size_t *ended)
{
    struct ending e = { req, user_id, why };
    return kiln_session_end_all(app_kv(req), user_id, keep_sid, on_ended, &e, ended);
}

/* Unix seconds as API.md's timestamps; null for 0 (unknown). */
static json_t *time_or_null(int64_t t)
{
    char text[KILN_RFC3339_LEN + 1];
    if (t <= 0)
        return json_null();
    struct timespec ts = { (time_t)t, 0 };
    kiln_time_rfc3339(text, &ts);
    return json_string(text);
}

static json_t *text_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

void api_sessions_list(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_session *s = kiln_req_session(req);
    struct kiln_session_info *list = NULL;
    size_t n = 0;
    int err = kiln_session_list(app_kv(req), req->arena, s->user_id, s->sid, &list, &n);
    if (err) {
        store_fail(req, res, err, "sessions list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            data, json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:b}", "id", list[i].id,
                            "created_at", time_or_null(list[i].created_at), "last_seen_at",
                            time_or_null(list[i].last_seen_at), "ip",
                            text_or_null(list[i].ip), "user_agent",
                            text_or_null(list[i].user_agent), "method",
                            text_or_null(list[i].method), "current", list[i].current));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

void api_sessions_delete(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_session *s = kiln_req_session(req);
    char sid[KILN_SID_LEN + 1];
    /* Another user's session answers as one that does not exist (API.md). */
    int err = kiln_session_end(app_kv(req), s->user_id, kiln_req_param(req, "id"), sid);
    if (err == KILN_ENOTFOUND) {
        kiln_res_error(req, res, 404, "not_found", "Session not found", NULL);
        return;
    }
    if (err) {
        store_fail(req, res, err, "session end");
        return;
    }
    bool current = strcmp(sid, s->sid) == 0;
    session_ended(req, s->user_id, sid,
                  current ? "ended by the user (this session)" : "ended by the user");
    if (current) {
        /* This request's own session: the cookie goes as a logout's does. */
        struct kiln_cookie_attrs at = { "/", 0, true, req->config->cookie_secure, "Lax" };
        kiln_res_header(res, "set-cookie",
                        kiln_cookie_build(req->arena, KILN_SESSION_COOKIE, KILN_STR(""), &at));
    }
    res_no_content(res);
}

void api_sessions_delete_others(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_session *s = kiln_req_session(req);
    size_t ended = 0;
    int err = api_sessions_end_all(req, s->user_id, s->sid,
                                   "ended by the user with every other session", &ended);
    if (err) {
        /* Those ended so far stay ended (and were recorded); the client's
         * retry ends the rest. */
        store_fail(req, res, err, "sessions end");
        return;
    }
    kiln_res_json(req, res, 200, json_pack("{s:I}", "ended", (json_int_t)ended));
}
