/*
 * Session guard, CSRF checks and rate limits.
 *
 * Rate limits are fixed 60-second windows counted in the kv store
 * (kiln_kv_incr creates the counter with its TTL), so on Valkey every kiln
 * instance shares them. A kv failure does not block public routes (the
 * limit is skipped and logged); protected routes already answered 503.
 */
#include "auth/guard.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/err.h"
#include "core/log.h"
#include "http/cookie.h"
#include "http/router.h"
#include "store/stores.h"

#define WINDOW_S 60

static struct kiln_kv *kv_of(const struct kiln_req *req)
{
    const struct kiln_stores *s = req->context;
    return s ? s->kv : NULL;
}

const struct kiln_session *kiln_req_session(const struct kiln_req *req)
{
    return req->session;
}

/* RFC 9110 5.3: several X-Forwarded-For field lines are one list, in
 * order. Joined into the arena; p NULL when there is none. */
static kiln_str forwarded_for(const struct kiln_req *req)
{
    kiln_str all = KILN_STR_NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!kiln_str_eq_c(req->headers[i].name, "x-forwarded-for"))
            continue;
        kiln_str v = req->headers[i].value;
        if (!all.p) {
            all = v;
            continue;
        }
        char *joined = kiln_arena_alloc(req->arena, all.len + 1 + v.len);
        memcpy(joined, all.p, all.len);
        joined[all.len] = ',';
        memcpy(joined + all.len + 1, v.p, v.len);
        all = (kiln_str){ joined, all.len + 1 + v.len };
    }
    return all;
}

/* An entry is used only if it is an IP address: anything else (a name, a
 * port, garbage) would let a client pick an arbitrary rate-limit key. */
static bool ip_literal(kiln_str s)
{
    char text[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];
    if (s.len == 0 || s.len > INET6_ADDRSTRLEN)
        return false;
    memcpy(text, s.p, s.len);
    text[s.len] = '\0';
    return inet_pton(AF_INET, text, addr) == 1 || inet_pton(AF_INET6, text, addr) == 1;
}

const char *kiln_client_ip(const struct kiln_req *req)
{
    unsigned hops = req->config->trusted_proxy_hops;
    if (hops == 0)
        return req->remote_ip;
    kiln_str xff = forwarded_for(req);
    if (!xff.p)
        return req->remote_ip;
    /* Walk entries from the right: the last one was added by our nearest
     * proxy, and so on. */
    const char *end = xff.p + xff.len;
    for (unsigned i = 1;; i++) {
        const char *comma = end;
        while (comma > xff.p && comma[-1] != ',')
            comma--;
        kiln_str entry = kiln_str_trim((kiln_str){ comma, (size_t)(end - comma) });
        if (i == hops)
            return ip_literal(entry) ? kiln_arena_strndup(req->arena, entry.p, entry.len)
                                     : req->remote_ip;
        if (comma == xff.p)
            return req->remote_ip; /* fewer entries than hops */
        end = comma - 1;
    }
}

/*
 * The counter's key names the route the router matched (method and
 * pattern), never the bytes of the path: "/api/notes", "//api/v1/notes/"
 * and "/api/v1/%6eotes" are one route and share one bucket, and a key's
 * length is bounded by the route table whatever the request looks like.
 * The /api alias counts with its canonical /api/v1 route.
 */
static const char *limit_key(struct kiln_req *req, const char *who)
{
    const struct kiln_route *r = req->route;
    if (!r)
        return kiln_arena_sprintf(req->arena, "rate:%s:-", who);
    return kiln_arena_sprintf(req->arena, "rate:%s:%s %s%s", who, kiln_method_name(r->method),
                              r->scope == KILN_SCOPE_API ? "/api/v1" : "", r->path);
}

static int rate_limit(struct kiln_req *req, struct kiln_res *res, unsigned limit,
                      const char *who)
{
    struct kiln_kv *kv = kv_of(req);
    if (limit == 0 || !kv)
        return 0;
    const char *key = limit_key(req, who);
    int64_t count = 0;
    uint64_t ttl_ms = 0;
    int err = kiln_kv_incr(kv, kiln_str_c(key), WINDOW_S * 1000, &count, &ttl_ms);
    if (err) {
        /* Fail open: a limiter outage must not take the API down. */
        kiln_log_outage("Session store", kiln_kv_last_error(kv));
        return 0;
    }
    uint64_t reset_in = ttl_ms ? (ttl_ms + 999) / 1000 : WINDOW_S;
    long long remaining = (long long)limit - (long long)count;
    kiln_res_header(res, "x-ratelimit-limit", kiln_arena_sprintf(req->arena, "%u", limit));
    kiln_res_header(res, "x-ratelimit-remaining",
                    kiln_arena_sprintf(req->arena, "%lld", remaining > 0 ? remaining : 0));
    kiln_res_header(res, "x-ratelimit-reset",
                    kiln_arena_sprintf(req->arena, "%lld",
                                       (long long)time(NULL) + (long long)reset_in));
    if (count <= (int64_t)limit)
        return 0;
    kiln_res_header(res, "retry-after",
                    kiln_arena_sprintf(req->arena, "%llu", (unsigned long long)reset_in));
    kiln_res_error(req, res, 429, "rate_limit_exceeded", "Rate limit exceeded",
                   json_pack("{s:i, s:i}", "limit", (int)limit, "window_seconds", WINDOW_S));
    return -1;
}

int kiln_guard_public(struct kiln_req *req, struct kiln_res *res)
{
    const char *ip = kiln_client_ip(req);
    return rate_limit(req, res, req->config->rate_limit_public,
                      kiln_arena_sprintf(req->arena, "ip:%s", ip));
}

kiln_str kiln_session_token_of(const struct kiln_req *req, bool *via_cookie)
{
    kiln_str v;
    kiln_str auth = kiln_req_header(req, "authorization");
    if (auth.p && auth.len > 7 && kiln_str_caseeq((kiln_str){ auth.p, 7 }, KILN_STR("Bearer "))) {
        *via_cookie = false;
        return kiln_str_trim((kiln_str){ auth.p + 7, auth.len - 7 });
    }
    if (kiln_cookie_get(req, KILN_SESSION_COOKIE, &v)) {
        *via_cookie = true;
        return v;
    }
    return KILN_STR_NULL;
}

static bool origin_allowed(const struct kiln_req *req, kiln_str origin)
{
    const struct kiln_config *cfg = req->config;
    if (kiln_str_eq_c(origin, cfg->public_url))
        return true;
    const char *list = cfg->allowed_origins;
    while (list && *list) {
        const char *comma = strchr(list, ',');
        size_t n = comma ? (size_t)(comma - list) : strlen(list);
        kiln_str item = kiln_str_trim((kiln_str){ list, n });
        while (item.len && item.p[item.len - 1] == '/')
            item.len--;
        if (item.len && kiln_str_eq(item, origin))
            return true;
        list = comma ? comma + 1 : NULL;
    }
    return false;
}

/*
 * CSRF for cookie-authenticated writes: browsers send cookies on
 * cross-site form posts, but a form cannot send application/json, and a
 * cross-site fetch carries an Origin we do not allow. Bearer clients are
 * not browsers acting on ambient credentials, so they are not checked.
 *
 * A write with no body and no Content-Type (POST /notes/:id/archive as
 * the original's clients send it) has no type to check: it passes, and
 * the Origin rule, which every browser applies to such a request, is what
 * stands between it and another site. A body, or a declared type, must be
 * JSON: an empty HTML form still declares its type and is refused.
 */
static int csrf(struct kiln_req *req, struct kiln_res *res)
{
    if (!(req->method & (KILN_POST | KILN_PUT | KILN_PATCH | KILN_DELETE)))
        return 0;
    kiln_str mime = kiln_req_header(req, "content-type");
    if (mime.p) {
        const char *semi = memchr(mime.p, ';', mime.len);
        if (semi)
            mime.len = (size_t)(semi - mime.p);
        mime = kiln_str_trim(mime);
    }
    bool has_body = req->has_body || req->body.len;
    if ((has_body || mime.p) &&
        (!mime.p || !kiln_str_caseeq(mime, KILN_STR("application/json")))) {
        kiln_res_error(req, res, 415, "unsupported_media_type",
                       "Content-Type must be application/json", NULL);
        return -1;
    }
    kiln_str origin = kiln_req_header(req, "origin");
    if (origin.p && !origin_allowed(req, origin)) {
        kiln_res_error(req, res, 403, "forbidden", "Origin not allowed", NULL);
        return -1;
    }
    return 0;
}

/* No valid session: limited per client IP before the 401 (API.md), so
 * that guessing tokens costs the same as any other anonymous traffic. */
static int refuse_anonymous(struct kiln_req *req, struct kiln_res *res)
{
    if (rate_limit(req, res, req->config->rate_limit_protected,
                   kiln_arena_sprintf(req->arena, "ip:%s", kiln_client_ip(req))) != 0)
        return -1;
    kiln_res_error(req, res, 401, "authentication_required", "Authentication required", NULL);
    return -1;
}

int kiln_guard_session(struct kiln_req *req, struct kiln_res *res)
{
    bool via_cookie = false;
    char sid[KILN_SID_LEN + 1];
    kiln_str token = kiln_session_token_of(req, &via_cookie);
    if (!token.p || !kiln_session_token_verify(token, sid))
        return refuse_anonymous(req, res);
    struct kiln_kv *kv = kv_of(req);
    struct kiln_session *s = kiln_arena_alloc_z(req->arena, sizeof *s);
    int err = kv ? kiln_session_load(kv, req->arena, sid, s) : KILN_EUNAVAILABLE;
    if (err == KILN_ENOTFOUND)
        return refuse_anonymous(req, res);
    if (err) {
        /* A session store outage is not a logout (DESIGN.md). */
        kiln_res_fail(req, res, err, "Session store", "session load",
                      kv ? kiln_kv_last_error(kv) : "no kv store");
        return -1;
    }
    s->via_cookie = via_cookie;
    req->session = s;
    req->user_id = s->user_id;
    if (via_cookie && csrf(req, res) != 0)
        return -1;
    return rate_limit(req, res, req->config->rate_limit_protected,
                      kiln_arena_sprintf(req->arena, "user:%s", s->user_id));
}

/*
 * For handlers of public routes that act on the session cookie
 * (POST /auth/dev/login, DELETE /auth/logout in api/auth.c): the rules of
 * the session guard's CSRF check above, called rather than copied, so that
 * a change to them reaches those routes too.
 */
int kiln_guard_csrf(struct kiln_req *req, struct kiln_res *res)
{
    return csrf(req, res);
}

bool kiln_origin_allowed(const struct kiln_req *req, kiln_str origin)
{
    return origin_allowed(req, origin);
}
