/*
 * Login, logout and the current user (API.md public routes, /me).
 *
 * The login flow: GET /auth/:provider makes state, nonce and a PKCE
 * verifier, remembers the state in the kv store (single use, 10 minutes)
 * and binds the attempt to this browser with a signed `_kiln_login` cookie
 * holding all three; the callback checks the state against both, exchanges
 * the code (auth/oidc.c verifies the ID token), finds or creates the user,
 * and starts a brand-new session. Every failure redirects to
 * AUTH_FAILURE_REDIRECT with ?error=<reason> and logs one warning line:
 * never a 500, never a token in the log.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/app.h"
#include "auth/guard.h"
#include "auth/oidc.h"
#include "auth/session.h"
#include "auth/users.h"
#include "core/base64.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
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
    redirect(res, kiln_arena_sprintf(req->arena, "%s%serror=%s", base,
                                     strchr(base, '?') ? "&" : "?", reason));
    /* The attempt is over either way. */
    set_cookie(req, res, KILN_LOGIN_COOKIE, KILN_STR(""), "/auth", 0, login_same_site(req));
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
    /* Single use: the callback deletes it, a replay finds nothing. */
    char *key = kiln_arena_sprintf(req->arena, "login_state:%s", state);
    if (kiln_kv_set(app_kv(req), kiln_str_c(key), kiln_str_c(name),
                    LOGIN_TTL_S * 1000ull) != 0) {
        kiln_res_error(req, res, 503, "service_unavailable", "Session store unavailable", NULL);
        return;
    }
    json_t *pending = json_pack("{s:s, s:s, s:s, s:s, s:I}", "p", name, "s", state, "n", nonce,
                                "v", verifier, "e", (json_int_t)(time(NULL) + LOGIN_TTL_S));
    char *text = json_dumps(pending, JSON_COMPACT);
    json_decref(pending);
    const char *sealed = kiln_login_cookie_seal(req->arena, kiln_str_c(text ? text : "{}"));
    free(text);
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
static void end_old_session(struct kiln_req *req)
{
    bool via_cookie;
    char sid[KILN_SID_LEN + 1];
    kiln_str token = kiln_session_token_of(req, &via_cookie);
    if (token.p && kiln_session_token_verify(token, sid))
        kiln_session_delete(app_kv(req), sid);
}

static int start_session(struct kiln_req *req, struct kiln_res *res,
                         struct kiln_session_user *u)
{
    char token[KILN_SESSION_TOKEN_LEN + 1];
    end_old_session(req);
    int err = kiln_session_create(app_kv(req), u, token);
    if (!err)
        set_session_cookie(req, res, token);
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
    json_t *pending = NULL;
    if (!code || !state || !kiln_cookie_get(req, KILN_LOGIN_COOKIE, &cookie) ||
        !kiln_login_cookie_open(req->arena, cookie, &payload) ||
        !(pending = json_loadb(payload.p, payload.len, 0, NULL))) {
        fail_login(req, res, name, "invalid_state");
        return;
    }
    const char *c_provider = json_string_value(json_object_get(pending, "p"));
    const char *c_state = json_string_value(json_object_get(pending, "s"));
    const char *c_nonce = json_string_value(json_object_get(pending, "n"));
    const char *c_verifier = json_string_value(json_object_get(pending, "v"));
    json_int_t expires = json_integer_value(json_object_get(pending, "e"));
    bool ok = c_provider && c_state && c_nonce && c_verifier && !strcmp(c_provider, name) &&
              strlen(c_state) == strlen(state) &&
              CRYPTO_memcmp(c_state, state, strlen(state)) == 0 && expires > time(NULL);
    char *nonce = c_nonce ? kiln_arena_strndup(req->arena, c_nonce, strlen(c_nonce)) : NULL;
    char *verifier =
        c_verifier ? kiln_arena_strndup(req->arena, c_verifier, strlen(c_verifier)) : NULL;
    json_decref(pending);
    if (!ok) {
        fail_login(req, res, name, "invalid_state");
        return;
    }
    bool existed = false;
    char *key = kiln_arena_sprintf(req->arena, "login_state:%s", state);
    int err = kiln_kv_del(app_kv(req), kiln_str_c(key), &existed);
    if (err) {
        fail_login(req, res, name, "service_unavailable");
        return;
    }
    if (!existed) { /* replayed or expired */
        fail_login(req, res, name, "invalid_state");
        return;
    }

    struct kiln_oidc_identity id;
    const char *reason = NULL;
    memset(&id, 0, sizeof id);
    if (kiln_oidc_exchange(p, req->arena, code, verifier, redirect_uri(req, name), nonce, &id,
                           &reason) != 0) {
        fail_login(req, res, name, reason ? reason : "invalid_token");
        return;
    }
    struct kiln_user_profile pr = { id.email, id.name, id.first_name, id.last_name, id.picture };
    if (kiln_provider_form_post(p))
        apple_name(req, &pr);
    const char *user_id = NULL;
    struct kiln_user_profile st;
    if (kiln_user_login(app_db(req), req->arena, name, id.subject, &pr, &user_id, &st) != 0) {
        kiln_log(KILN_LOG_ERROR, "login: user store failed", "error",
                 kiln_db_last_error(app_db(req)), "request_id", req->request_id, NULL);
        fail_login(req, res, name, "service_unavailable");
        return;
    }
    struct kiln_session_user u = { user_id, st.email, st.name, st.first_name, st.last_name,
                                   st.image, name, id.subject };
    if (start_session(req, res, &u) != 0) {
        fail_login(req, res, name, "service_unavailable");
        return;
    }
    set_cookie(req, res, KILN_LOGIN_COOKIE, KILN_STR(""), "/auth", 0, login_same_site(req));
    kiln_log(KILN_LOG_INFO, "login", "provider", name, "user_id", user_id, "request_id",
             req->request_id, NULL);
    redirect(res, req->config->auth_success_redirect);
}

void api_auth_logout(struct kiln_req *req, struct kiln_res *res)
{
    bool via_cookie;
    char sid[KILN_SID_LEN + 1];
    kiln_str token = kiln_session_token_of(req, &via_cookie);
    if (token.p && kiln_session_token_verify(token, sid) &&
        kiln_session_delete(app_kv(req), sid) != 0) {
        /* Not gone: telling the browser it is would be a lie. */
        kiln_res_error(req, res, 503, "service_unavailable", "Session store unavailable", NULL);
        return;
    }
    set_cookie(req, res, KILN_SESSION_COOKIE, KILN_STR(""), "/", 0, "Lax");
    redirect(res, req->config->auth_logout_redirect);
}

static void me_body(struct kiln_req *req, struct kiln_res *res, kiln_str user_json)
{
    char *body = kiln_arena_sprintf(req->arena, "{\"user\":%.*s,\"authenticated\":true}",
                                    (int)user_json.len, user_json.p);
    kiln_res_json_text(res, 200, kiln_str_c(body));
}

void api_dev_login(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env == KILN_ENV_PRODUCTION) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    json_error_t jerr;
    json_t *in = json_loadb(req->body.p, req->body.len, 0, &jerr);
    if (!in || !json_is_object(in)) {
        json_decref(in);
        kiln_res_error(req, res, 400, in ? "invalid_request" : "invalid_json",
                       in ? "Body must be a JSON object" : "Invalid JSON", NULL);
        return;
    }
    const char *email = json_string_value(json_object_get(in, "email"));
    const char *name = json_string_value(json_object_get(in, "name"));
    if (!email || !*email || strlen(email) > 255 || (name && strlen(name) > 255)) {
        json_decref(in);
        kiln_res_error(req, res, 422, "validation_failed", "Validation failed",
                       json_pack("{s:[s]}", "email", "can't be blank"));
        return;
    }
    struct kiln_user_profile pr = { kiln_arena_strndup(req->arena, email, strlen(email)),
                                    name ? kiln_arena_strndup(req->arena, name, strlen(name))
                                         : NULL,
                                    NULL, NULL, NULL };
    json_decref(in);
    if (pr.name) {
        const char *sp = strchr(pr.name, ' ');
        pr.first_name = sp ? kiln_arena_strndup(req->arena, pr.name, (size_t)(sp - pr.name))
                           : pr.name;
        pr.last_name = sp ? sp + 1 : NULL;
    }
    const char *user_id = NULL;
    struct kiln_user_profile st;
    int err = kiln_user_login(app_db(req), req->arena, "dev", pr.email, &pr, &user_id, &st);
    if (err == KILN_EINVAL) {
        kiln_res_error(req, res, 422, "validation_failed", "Validation failed",
                       json_pack("{s:[s]}", "email", "is invalid"));
        return;
    }
    if (err) {
        kiln_res_error(req, res, 503, "service_unavailable", "Database unavailable", NULL);
        return;
    }
    struct kiln_session_user u = { user_id, st.email, st.name, st.first_name, st.last_name,
                                   st.image, "dev", pr.email };
    if (start_session(req, res, &u) != 0) {
        kiln_res_error(req, res, 503, "service_unavailable", "Session store unavailable", NULL);
        return;
    }
    json_t *user = json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:s, s:s}", "email", st.email,
                             "name", st.name, "first_name", st.first_name, "last_name",
                             st.last_name, "image", st.image, "provider", "dev", "provider_uid",
                             pr.email);
    kiln_res_json(req, res, 200,
                  json_pack("{s:o, s:b}", "user", user, "authenticated", 1));
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
