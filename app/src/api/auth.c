/*
 * Login, logout and the current user (API.md public routes, /me).
 *
 * The login flow: GET /auth/:provider makes state, nonce and a PKCE
 * verifier and keeps the pending login on the server, in the kv store at
 * login_state:<state> (provider, nonce, verifier; single use, 10 minutes);
 * a signed `_kiln_login` cookie binds the attempt to this browser with the
 * provider, the state and an expiry only, so the cookie alone redeems
 * nothing. The callback checks the state against the cookie, takes the kv
 * entry (get and delete in one step: of concurrent replays exactly one
 * wins), exchanges the code with its verifier (auth/oidc.c verifies the ID
 * token against its nonce), finds or creates the user (auth/users.c: a
 * first login joins the account that has its address only when the
 * provider and the account have both proven it, and is refused with
 * account_exists otherwise), and starts a brand-new session. Every
 * failure redirects to AUTH_FAILURE_REDIRECT with ?error=<reason> and logs
 * one warning line, never a token; a store that failed is logged as
 * kiln_res_fail would (an outage line, or an error line for a bug).
 *
 * The JSON routes answer every store error through kiln_res_fail.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/oidc.h"
#include "auth/session.h"
#include "auth/users.h"
#include "core/base64.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/wipe.h"
#include "events/feed.h"
#include "http/cookie.h"

#define LOGIN_TTL_S 600

static void redirect(struct kiln_res *res, const char *location)
{
    res->status = 302;
    kiln_res_header(res, "location", location);
    kiln_res_header(res, "cache-control", "no-store");
}

static void set_cookie(struct kiln_req *req, struct kiln_res *res, const char *name,
                       kiln_str value, const char *path, long max_age, const char *same_site)
{
    struct kiln_cookie_attrs at = { path, max_age, true, req->config->cookie_secure, same_site };
    kiln_res_header(res, "set-cookie", kiln_cookie_build(req->arena, name, value, &at));
}

static void set_session_cookie(struct kiln_req *req, struct kiln_res *res, const char *token)
{
    set_cookie(req, res, KILN_SESSION_COOKIE, kiln_str_c(token), "/", KILN_SESSION_TTL_S, "Lax");
}

/*
 * The pending-login cookie. Apple posts its callback from its own site, and
 * browsers only send SameSite=None cookies on such a POST (and only with
 * Secure), so over HTTPS the cookie is None; over plain-HTTP development it
 * stays Lax.
 */
static const char *login_same_site(const struct kiln_req *req)
{
    return req->config->cookie_secure ? "None" : "Lax";
}

static void random_token(char out[44])
{
    unsigned char raw[32];
    kiln_random_bytes(raw, sizeof raw);
    kiln_base64url_encode(raw, sizeof raw, out);
}

static const char *redirect_uri(const struct kiln_req *req, const char *provider)
{
    /* From configuration only: a Host header must not choose where codes go. */
    return kiln_arena_sprintf(req->arena, "%s/auth/%s/callback", req->config->public_url,
                              provider);
}

static void fail_login(struct kiln_req *req, struct kiln_res *res, const char *provider,
                       const char *reason)
{
    const char *base = req->config->auth_failure_redirect;
    kiln_log(KILN_LOG_WARNING, "login failed", "provider", provider, "reason", reason,
             "request_id", req->request_id, NULL);
    kiln_audit_record(req, NULL, "login_failed",
                      kiln_arena_sprintf(req->arena, "%s: %s", provider, reason));
    redirect(res, kiln_arena_sprintf(req->arena, "%s%serror=%s", base,
                                     strchr(base, '?') ? "&" : "?", reason));
    /* The attempt is over either way. */
    set_cookie(req, res, KILN_LOGIN_COOKIE, KILN_STR(""), "/auth", 0, login_same_site(req));
}

/*
 * A store failed during the browser flow: the browser still goes to the
 * failure page, and the log says what failed the way kiln_res_fail does
 * for the JSON routes: an outage line per dependency, or, for anything else
 * (a bug), an error line naming what failed and why.
 */
static void fail_login_store(struct kiln_req *req, struct kiln_res *res, const char *provider,
                             int err, const char *dependency, const char *what,
                             const char *detail)
{
    if (kiln_err_status(err) == 503) {
        kiln_log_outage(dependency, detail);
        fail_login(req, res, provider, "service_unavailable");
        return;
    }
    kiln_log(KILN_LOG_ERROR, "internal error", "dependency", dependency, "what", what, "code",
             kiln_err_name(err), "error", detail, "request_id", req->request_id, NULL);
    fail_login(req, res, provider, "internal_error");
}

/*
 * A session store error on a JSON route, through the one map. The kv store
 * answers EINVAL only for arguments we built, and session.c only for a
 * record it could not encode: our bugs, never the client's data. So what
 * is not an outage is answered as a bug, a 500, and not as the 422 (or 404)
 * the map gives those codes; the log keeps the real code.
 */
static void session_store_fail(struct kiln_req *req, struct kiln_res *res, int err,
                               const char *what)
{
    const char *detail = kiln_kv_last_error(app_kv(req));
    if (kiln_err_status(err) != 503) {
        detail = kiln_arena_sprintf(req->arena, "%s: %s", kiln_err_name(err), detail);
        err = KILN_EDB; /* the map's code for "a bug": 500 */
    }
    kiln_res_fail(req, res, err, "Session store", what, detail);
}

static const struct kiln_provider *provider_or_404(struct kiln_req *req, struct kiln_res *res)
{
    kiln_str name = kiln_req_param(req, "provider");
    const struct kiln_provider *p = kiln_provider_find(name);
    if (!p) {
        char *msg = kiln_arena_sprintf(req->arena, "Login provider '%.*s' is not configured",
                                       (int)(name.len > 64 ? 64 : name.len), name.p);
        kiln_res_error(req, res, 404, "not_found", msg, NULL);
    }
    return p;
}

void api_auth_request(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_provider *p = provider_or_404(req, res);
    if (!p)
        return;
    const char *name = kiln_provider_name(p);
    char state[44], nonce[44], verifier[44], challenge[44];
    unsigned char md[32];
    unsigned int mdlen = 0;
    random_token(state);
    random_token(nonce);
    random_token(verifier);
    /* PKCE S256 (RFC 7636 4.2): base64url(SHA-256(verifier)). */
    EVP_Digest(verifier, strlen(verifier), md, &mdlen, EVP_sha256(), NULL);
    kiln_base64url_encode(md, 32, challenge);

    const char *url = NULL, *reason = NULL;
    if (kiln_oidc_authorize_url(p, req->arena, redirect_uri(req, name), state, nonce, challenge,
                                &url, &reason) != 0) {
        fail_login(req, res, name, reason ? reason : "provider_unreachable");
        return;
    }
    /*
     * The pending login. Nonce and verifier stay here, on the server: a
     * cookie can leak (a shared machine, a proxy's log, an extension) and
     * with the verifier in it, whoever holds it and the code could redeem
     * the login. Every value is base64url or a provider name ([a-z0-9_-]),
     * so no JSON escaping is needed.
     */
    char *key = kiln_arena_sprintf(req->arena, "login_state:%s", state);
    char *value = kiln_arena_sprintf(req->arena, "{\"p\":\"%s\",\"n\":\"%s\",\"v\":\"%s\"}",
                                     name, nonce, verifier);
    int err = kiln_kv_set(app_kv(req), kiln_str_c(key), kiln_str_c(value),
                          LOGIN_TTL_S * 1000ull);
    explicit_bzero(verifier, sizeof verifier);
    explicit_bzero(value, strlen(value));
    if (err) {
        session_store_fail(req, res, err, "login start");
        return;
    }
    /* What binds the attempt to this browser, and nothing that redeems it. */
    const char *pending = kiln_arena_sprintf(req->arena, "{\"p\":\"%s\",\"s\":\"%s\",\"e\":%lld}",
                                             name, state, (long long)time(NULL) + LOGIN_TTL_S);
    const char *sealed = kiln_login_cookie_seal(req->arena, kiln_str_c(pending));
    set_cookie(req, res, KILN_LOGIN_COOKIE, kiln_str_c(sealed), "/auth", LOGIN_TTL_S,
               login_same_site(req));
    redirect(res, url);
}

/* A callback parameter from the query (GET) or the form body (Apple's POST). */
static const char *param(struct kiln_req *req, const char *name)
{
    kiln_str v;
    if (kiln_req_query(req, name, &v) ||
        (req->method == KILN_POST && kiln_form_value(req->arena, req->body, name, &v)))
        return memchr(v.p, '\0', v.len) ? NULL : v.p;
    return NULL;
}

/* Apple sends the name once, as JSON in the "user" form field. */
static void apple_name(struct kiln_req *req, struct kiln_user_profile *pr)
{
    const char *user = param(req, "user");
    json_t *u = user ? json_loads(user, 0, NULL) : NULL;
    json_t *name = json_object_get(u, "name");
    const char *first = json_string_value(json_object_get(name, "firstName"));
    const char *last = json_string_value(json_object_get(name, "lastName"));
    if (first)
        pr->first_name = kiln_arena_strndup(req->arena, first, strlen(first));
    if (last)
        pr->last_name = kiln_arena_strndup(req->arena, last, strlen(last));
    if (first || last)
        pr->name = kiln_arena_sprintf(req->arena, "%s%s%s", first ? first : "",
                                      first && last ? " " : "", last ? last : "");
    json_decref(u);
}

/* End any session the browser already had: every login gets a new sid. */
/* The user of session sid, for the audit log (NULL when it is gone). */
static const char *session_user(struct kiln_req *req, const char *sid)
{
    struct kiln_session s;
    return kiln_session_load(app_kv(req), req->arena, sid, &s) == 0 ? s.user_id : NULL;
}

static void end_old_session(struct kiln_req *req)
{
    bool via_cookie;
    char sid[KILN_SID_LEN + 1];
    kiln_str token = kiln_session_token_of(req, &via_cookie);
    if (!token.p || !kiln_session_token_verify(token, sid))
        return;
    const char *user = session_user(req, sid);
    bool deleted = false;
    if (kiln_session_delete(app_kv(req), sid, &deleted) == 0 && deleted) {
        kiln_events_session_ended(sid);
        kiln_audit_record(req, user, "session_ended", "replaced by a new login");
    }
}

int api_start_session(struct kiln_req *req, struct kiln_res *res, struct kiln_session_user *u)
{
    char token[KILN_SESSION_TOKEN_LEN + 1];
    /* What the user's list of sessions shows of this one; the way in is
     * the provider ("password", "dev", an OIDC provider's name). */
    struct kiln_session_client client = { kiln_client_ip(req),
                                          kiln_req_header(req, "user-agent"), u->provider };
    end_old_session(req);
    int err = kiln_session_create(app_kv(req), u, &client, token);
    if (!err) {
        set_session_cookie(req, res, token);
        kiln_audit_record(req, u->user_id, "login", u->provider);
    }
    return err;
}

void api_auth_callback(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_provider *p = provider_or_404(req, res);
    if (!p)
        return;
    const char *name = kiln_provider_name(p);
    const char *error = param(req, "error");
    if (error) {
        fail_login(req, res, name, strcmp(error, "access_denied") ? "provider_error"
                                                                  : "access_denied");
        return;
    }
    const char *code = param(req, "code"), *state = param(req, "state");
    kiln_str cookie, payload;
    json_t *bound = NULL;
    if (!code || !state || !kiln_cookie_get(req, KILN_LOGIN_COOKIE, &cookie) ||
        !kiln_login_cookie_open(req->arena, cookie, &payload) ||
        !(bound = json_loadb(payload.p, payload.len, 0, NULL))) {
        fail_login(req, res, name, "invalid_state");
        return;
    }
    /* This browser started this attempt, at this provider, not long ago. */
    const char *c_provider = json_string_value(json_object_get(bound, "p"));
    const char *c_state = json_string_value(json_object_get(bound, "s"));
    json_int_t expires = json_integer_value(json_object_get(bound, "e"));
    bool ok = c_provider && c_state && !strcmp(c_provider, name) &&
              strlen(c_state) == strlen(state) &&
              CRYPTO_memcmp(c_state, state, strlen(state)) == 0 && expires > time(NULL);
    json_decref(bound);
    if (!ok) {
        fail_login(req, res, name, "invalid_state");
        return;
    }
    /* Single use: taken (read and deleted at once), so of any number of
     * replays, concurrent or not, one at most finds it. */
    kiln_str value;
    char *key = kiln_arena_sprintf(req->arena, "login_state:%s", state);
    int err = kiln_kv_take(app_kv(req), req->arena, kiln_str_c(key), &value);
    if (err == KILN_ENOTFOUND) { /* replayed or expired */
        fail_login(req, res, name, "invalid_state");
        return;
    }
    if (err) {
        fail_login_store(req, res, name, err, "Session store", "login callback",
                         kiln_kv_last_error(app_kv(req)));
        return;
    }
    json_t *pending = json_loadb(value.p, value.len, 0, NULL);
    const char *s_provider = json_string_value(json_object_get(pending, "p"));
    const char *s_nonce = json_string_value(json_object_get(pending, "n"));
    const char *s_verifier = json_string_value(json_object_get(pending, "v"));
    char *nonce = s_nonce ? kiln_arena_strndup(req->arena, s_nonce, strlen(s_nonce)) : NULL;
    char *verifier =
        s_verifier ? kiln_arena_strndup(req->arena, s_verifier, strlen(s_verifier)) : NULL;
    ok = s_provider && nonce && verifier && !strcmp(s_provider, name);
    kiln_json_wipe(pending); /* the verifier is a secret until the exchange */
    json_decref(pending);
    if (value.len)
        explicit_bzero((char *)value.p, value.len);
    if (!ok) { /* not a pending login of ours (an older format, or damaged) */
        fail_login(req, res, name, "invalid_state");
        return;
    }

    struct kiln_oidc_identity id;
    const char *reason = NULL;
    memset(&id, 0, sizeof id);
    err = kiln_oidc_exchange(p, req->arena, code, verifier, redirect_uri(req, name), nonce, &id,
                             &reason);
    explicit_bzero(verifier, strlen(verifier));
    if (err != 0) {
        fail_login(req, res, name, reason ? reason : "invalid_token");
        return;
    }
    struct kiln_user_profile pr = { id.email,     id.name,    id.first_name,
                                    id.last_name, id.picture, id.email_verified };
    if (kiln_provider_form_post(p))
        apple_name(req, &pr);
    const char *user_id = NULL;
    struct kiln_user_profile st;
    enum kiln_user_outcome outcome;
    err = kiln_user_login(app_db(req), req->arena, name, id.subject, &pr, KILN_USER_LINK_VERIFIED,
                          &user_id, &st, &outcome);
    if (err) {
        fail_login_store(req, res, name, err, "Database", "login: user",
                         kiln_db_last_error(app_db(req)));
        return;
    }
    if (outcome == KILN_USER_REFUSED) {
        /* Someone has an account with this address, and the provider did
         * not vouch for it or the account never proved it: no takeover
         * through an unchecked address. The reason says so; the log line
         * and the audit row carry no address. */
        fail_login(req, res, name, "account_exists");
        return;
    }
    struct kiln_session_user u = { user_id, st.email, st.name, st.first_name, st.last_name,
                                   st.image, name, id.subject };
    if ((err = api_start_session(req, res, &u)) != 0) {
        fail_login_store(req, res, name, err, "Session store", "login: session",
                         kiln_kv_last_error(app_kv(req)));
        return;
    }
    set_cookie(req, res, KILN_LOGIN_COOKIE, KILN_STR(""), "/auth", 0, login_same_site(req));
    kiln_log(KILN_LOG_INFO, "login", "provider", name, "user_id", user_id, "identity",
             kiln_user_outcome_name(outcome), "request_id", req->request_id, NULL);
    redirect(res, req->config->auth_success_redirect);
}

/* scheme://host[:port] at the start of a Referer, or a NULL string. */
static kiln_str referer_origin(kiln_str referer)
{
    const char *p = referer.p, *end = referer.p + referer.len;
    const char *sep = referer.len >= 3 ? memmem(p, referer.len, "://", 3) : NULL;
    if (!sep || sep == p)
        return KILN_STR_NULL;
    const char *q = sep + 3;
    while (q < end && *q != '/' && *q != '?' && *q != '#')
        q++;
    return q == sep + 3 ? KILN_STR_NULL : (kiln_str){ p, (size_t)(q - p) };
}

/*
 * May this GET end the session? A browser sends the session cookie on a
 * top-level navigation from any site (SameSite=Lax lets those through), so
 * without this another site could log the user out with a link or a
 * redirect. What the browser tells us, strongest first:
 *   - Origin (some browsers send it on navigations): must be allowed.
 *   - Sec-Fetch-Site (every current browser): "same-origin", or "none" (a
 *     typed URL, a bookmark), is ours. "cross-site" is not, and neither is
 *     "same-site": a sibling host under the same registrable domain may be
 *     someone else's (user content, a forgotten subdomain). Either is
 *     accepted only with a Referer naming an allowed origin, which is how
 *     a front end on its own host (ALLOWED_ORIGINS) logs out with a link:
 *     browsers send at least the origin as the Referer by default.
 *   - Neither (older browsers, other clients): a Referer, if any, must
 *     name an allowed origin.
 */
static bool logout_from_here(const struct kiln_req *req)
{
    kiln_str origin = kiln_req_header(req, "origin");
    if (origin.p)
        return kiln_origin_allowed(req, origin);
    kiln_str site = kiln_req_header(req, "sec-fetch-site");
    if (site.p && (kiln_str_caseeq(site, KILN_STR("same-origin")) ||
                   kiln_str_caseeq(site, KILN_STR("none"))))
        return true;
    kiln_str referer = kiln_req_header(req, "referer");
    if (!referer.p)
        return !site.p;
    kiln_str from = referer_origin(referer);
    return from.p && kiln_origin_allowed(req, from);
}

void api_auth_logout(struct kiln_req *req, struct kiln_res *res)
{
    bool via_cookie = false;
    char sid[KILN_SID_LEN + 1];
    kiln_str token = kiln_session_token_of(req, &via_cookie);
    /* Only the cookie rides along on requests another site makes; a Bearer
     * token was sent on purpose. */
    if (token.p && via_cookie) {
        if (req->method == KILN_DELETE) {
            if (kiln_guard_csrf(req, res) != 0)
                return;
        } else if (!logout_from_here(req)) {
            /* The browser goes where a logout goes; the session and its
             * cookie stay. */
            kiln_log(KILN_LOG_INFO, "logout ignored: request from another site", "request_id",
                     req->request_id, NULL);
            redirect(res, req->config->auth_logout_redirect);
            return;
        }
    }
    if (token.p && kiln_session_token_verify(token, sid)) {
        const char *user = session_user(req, sid);
        int err = kiln_session_delete(app_kv(req), sid, NULL);
        if (err) {
            /* Not gone: telling the browser it is would be a lie. */
            session_store_fail(req, res, err, "logout");
            return;
        }
        /* Its event streams close, on every instance. */
        kiln_events_session_ended(sid);
        if (user)
            kiln_audit_record(req, user, "logout", "session");
    }
    set_cookie(req, res, KILN_SESSION_COOKIE, KILN_STR(""), "/", 0, "Lax");
    redirect(res, req->config->auth_logout_redirect);
}

void api_signed_in(struct kiln_req *req, struct kiln_res *res, const struct kiln_session_user *u)
{
    json_t *user = json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:s, s:s?}", "email", u->email,
                             "name", u->name, "first_name", u->first_name, "last_name",
                             u->last_name, "image", u->image, "provider", u->provider,
                             "provider_uid", u->provider_uid);
    kiln_res_json(req, res, 200, json_pack("{s:o, s:b}", "user", user, "authenticated", 1));
}

static void me_body(struct kiln_req *req, struct kiln_res *res, kiln_str user_json)
{
    char *body = kiln_arena_sprintf(req->arena, "{\"user\":%.*s,\"authenticated\":true}",
                                    (int)user_json.len, user_json.p);
    kiln_res_json_text(res, 200, kiln_str_c(body));
}

/*
 * The development login: a login CSRF (another site signing the browser in
 * as its own user) is as possible here as anywhere, so the CSRF rules of
 * cookie-authenticated writes apply: a JSON body, an allowed Origin.
 */
void api_dev_login(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env == KILN_ENV_PRODUCTION) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *email = NULL, *name = NULL;
    if (!res_string(in, "email", false, 1, 255, &errs, &email) &&
        !json_object_get(in, "email"))
        res_error(&errs, "email", "can't be blank");
    res_string(in, "name", true, 0, 255, &errs, &name);
    if (res_errors_answer(req, res, &errs)) {
        json_decref(in);
        return;
    }
    /* The address is whatever was typed: never verified, never joined to
     * an account that has it (KILN_USER_LINK_NEVER), so the development
     * login reaches only users of its own. */
    struct kiln_user_profile pr = { kiln_arena_strndup(req->arena, email, strlen(email)),
                                    name ? kiln_arena_strndup(req->arena, name, strlen(name))
                                         : NULL,
                                    NULL, NULL, NULL, false };
    json_decref(in);
    if (pr.name) {
        const char *sp = strchr(pr.name, ' ');
        pr.first_name = sp ? kiln_arena_strndup(req->arena, pr.name, (size_t)(sp - pr.name))
                           : pr.name;
        pr.last_name = sp ? sp + 1 : NULL;
    }
    const char *user_id = NULL;
    struct kiln_user_profile st;
    enum kiln_user_outcome outcome;
    int err = kiln_user_login(app_db(req), req->arena, "dev", pr.email, &pr, KILN_USER_LINK_NEVER,
                              &user_id, &st, &outcome);
    if (err == KILN_EINVAL) {
        kiln_res_error(req, res, 422, "validation_failed", "Validation failed",
                       json_pack("{s:[s]}", "email", "is invalid"));
        return;
    }
    if (err) {
        kiln_res_fail(req, res, err, "Database", "dev login", kiln_db_last_error(app_db(req)));
        return;
    }
    struct kiln_session_user u = { user_id, st.email, st.name, st.first_name, st.last_name,
                                   st.image, "dev", pr.email };
    if ((err = api_start_session(req, res, &u)) != 0) {
        session_store_fail(req, res, err, "dev login");
        return;
    }
    api_signed_in(req, res, &u);
}

void api_me(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_session *s = kiln_req_session(req);
    me_body(req, res, s->user_json);
}

void api_test_protected(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env != KILN_ENV_TEST) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    kiln_res_json_text(res, 200, KILN_STR("{\"ok\":true}"));
}
