/*
 * OpenID Connect providers and the authorization-code flow; see oidc.h.
 *
 * The registry is built once at start and read-only after. What changes at
 * run time (the discovery document, the JWKS, Apple's client secret) lives
 * in each provider behind its own mutex, as refcounted snapshots that a
 * request holds while it uses them, so a refresh never frees a document
 * under a reader. No lock is held across the network: a fetch marks itself
 * in flight, drops the lock, and installs its result afterwards. Threads
 * that need a document nobody has yet wait for the fetch in flight rather
 * than send their own (bounded by its 5 s timeout), so a burst of logins
 * costs the provider one request, and a slow provider never blocks another.
 */
#include "auth/oidc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "auth/jwt.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/wipe.h"

#define MAX_PROVIDERS 16            /* OIDC_PROVIDERS entries, besides google/apple */
#define MAX_NAME 32
#define DISCOVERY_TTL_MS (3600u * 1000u)
#define DISCOVERY_RETRY_MS (60u * 1000u) /* after a failed refresh, with a stale copy */
#define JWKS_REFETCH_MS (60u * 1000u) /* at most one refetch per minute on unknown kid */
#define APPLE_SECRET_TTL_S 3600
#define APPLE_SECRET_RENEW_S 300    /* make a new one when less than this remains */
#define MAX_URL 8192
#define MAX_FORM 32768
#define GOOGLE_ISSUER "https://accounts.google.com"
#define APPLE_ISSUER "https://appleid.apple.com"

enum kind { KIND_GOOGLE, KIND_APPLE, KIND_GENERIC };

/* The parts of the discovery document we use. Refcounted under p->lock. */
struct discovery {
    int refs;
    char *authorization_endpoint;
    char *token_endpoint;
    char *jwks_uri;
    bool basic_auth; /* client_secret_basic rather than client_secret_post */
};

struct keyset {
    int refs;
    struct kiln_jwks *jwks;
};

struct kiln_provider {
    char *name;
    enum kind kind;
    char *issuer;          /* exactly as configured: iss must equal it */
    char *client_id;
    char *client_secret;   /* NULL when Apple's key signs one */
    char *scopes;
    char *team_id;         /* Apple with a key */
    char *key_id;
    EVP_PKEY *apple_key;

    pthread_mutex_t lock;  /* guards everything below */
    pthread_cond_t fetched; /* broadcast when a fetch finishes */
    struct discovery *disc;
    uint64_t disc_at_ms;
    bool disc_busy;
    struct keyset *keys;
    bool keys_busy;
    bool keys_refetched;   /* a refetch on unknown kid happened … */
    uint64_t keys_refetch_ms; /* … at this time */
    char *apple_secret;    /* the current ES256 client secret */
    time_t apple_secret_exp;
};

static struct {
    struct kiln_provider *v[MAX_PROVIDERS + 2];
    size_t n;
    char *list;
} reg;

/* --- small helpers ------------------------------------------------------- */

static bool host_is_local(const char *h)
{
    static const char *const local[] = { "localhost", "127.0.0.1", "[::1]" };
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        size_t n = strlen(local[i]);
        if (strncmp(h, local[i], n) == 0 && (h[n] == '\0' || h[n] == ':' || h[n] == '/'))
            return true;
    }
    return false;
}

/*
 * https://, or http:// to this machine (a test or development provider).
 * Nothing that could break out of a URL or a Location header: no spaces,
 * controls or non-ASCII bytes, no fragment.
 */
static bool url_allowed(const char *u)
{
    for (const unsigned char *c = (const unsigned char *)u; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f || *c == '#')
            return false;
    if (strncmp(u, "https://", 8) == 0)
        return u[8] != '\0' && u[8] != '/';
    return strncmp(u, "http://", 7) == 0 && host_is_local(u + 7);
}

static bool issuer_allowed(const char *u)
{
    /* OpenID Connect Discovery section 2: no query or fragment. */
    return url_allowed(u) && !strchr(u, '?');
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* Percent-encode everything but RFC 3986 unreserved characters; a space is
 * %20, which both query strings and form bodies decode. */
static int append_encoded(kiln_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c && rc == 0; c++) {
        if (unreserved(*c)) {
            rc = kiln_buf_append(b, c, 1);
        } else {
            char e[3] = { '%', hex[*c >> 4], hex[*c & 15] };
            rc = kiln_buf_append(b, e, 3);
        }
    }
    return rc;
}

/* "&name=value" (no "&" for the first). */
static int append_param(kiln_buf *b, bool *first, const char *name, const char *value)
{
    int rc = kiln_buf_append_c(b, *first ? "" : "&");
    *first = false;
    rc |= kiln_buf_append_c(b, name);
    rc |= kiln_buf_append_c(b, "=");
    rc |= append_encoded(b, value);
    return rc;
}

static void buf_wipe_free(kiln_buf *b)
{
    if (b->p)
        explicit_bzero(b->p, b->cap);
    kiln_buf_free(b);
}

static char *json_str_dup(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? kiln_strdup(json_string_value(v)) : NULL;
}

static const char *arena_str(kiln_arena *a, json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) && json_string_length(v)
               ? kiln_arena_strndup(a, json_string_value(v), json_string_length(v))
               : NULL;
}

/* --- cached documents ------------------------------------------------------ */

static void discovery_unref_locked(struct discovery *d)
{
    if (d && --d->refs == 0) {
        free(d->authorization_endpoint);
        free(d->token_endpoint);
        free(d->jwks_uri);
        free(d);
    }
}

static void discovery_release(struct kiln_provider *p, struct discovery *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&p->lock);
    discovery_unref_locked(d);
    pthread_mutex_unlock(&p->lock);
}

static void keyset_unref_locked(struct keyset *k)
{
    if (k && --k->refs == 0) {
        kiln_jwks_free(k->jwks);
        free(k);
    }
}

static void keyset_release(struct kiln_provider *p, struct keyset *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&p->lock);
    keyset_unref_locked(k);
    pthread_mutex_unlock(&p->lock);
}

static void fetch_failed(const struct kiln_provider *p, const char *what, const char *detail)
{
    kiln_log(KILN_LOG_WARNING, "oidc: fetch failed", "provider", p->name, "document", what,
             "detail", detail, NULL);
}

/* GET url; the body on a 2xx answer, NULL (logged) otherwise. */
static bool get_json(const struct kiln_provider *p, const char *what, const char *url,
                     struct kiln_http_response *res)
{
    struct kiln_http_request req = { .url = url };
    int rc = kiln_http_fetch(&req, res);
    if (rc != 0) {
        fetch_failed(p, what, res->error);
        return false;
    }
    if (res->status < 200 || res->status > 299) {
        char s[32];
        snprintf(s, sizeof s, "HTTP %ld", res->status);
        fetch_failed(p, what, s);
        return false;
    }
    return true;
}

/* <issuer>/.well-known/openid-configuration (Discovery section 4), checked. */
static struct discovery *fetch_discovery(const struct kiln_provider *p)
{
    struct kiln_http_response res;
    struct discovery *d = NULL;
    json_t *doc = NULL;
    char url[MAX_URL];
    size_t n = strlen(p->issuer);
    /* "any terminating / MUST be removed before appending" (section 4). */
    while (n > 0 && p->issuer[n - 1] == '/')
        n--;
    snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration", (int)n, p->issuer);

    if (!get_json(p, "discovery", url, &res))
        goto out;
    json_error_t jerr;
    doc = json_loadb(res.body.p, res.body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        fetch_failed(p, "discovery", "not a JSON object");
        goto out;
    }
    /* Section 4.3: the issuer in the document must be the one we asked;
     * otherwise tokens could be checked against someone else's iss. */
    json_t *iss = json_object_get(doc, "issuer");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer) != 0) {
        fetch_failed(p, "discovery", "issuer in the document differs from the configured one");
        goto out;
    }
    d = kiln_calloc(1, sizeof *d);
    d->authorization_endpoint = json_str_dup(doc, "authorization_endpoint");
    d->token_endpoint = json_str_dup(doc, "token_endpoint");
    d->jwks_uri = json_str_dup(doc, "jwks_uri");
    if (!d->authorization_endpoint || !d->token_endpoint || !d->jwks_uri ||
        !url_allowed(d->authorization_endpoint) || !url_allowed(d->token_endpoint) ||
        !url_allowed(d->jwks_uri)) {
        fetch_failed(p, "discovery", "endpoints missing or not https");
        d->refs = 1;
        discovery_unref_locked(d); /* not shared yet */
        d = NULL;
        goto out;
    }
    /*
     * client_secret_post when the provider lists it; HTTP Basic when it
     * lists client_secret_basic without post, or lists nothing: Discovery
     * section 3 makes client_secret_basic the default, and RFC 6749 section
     * 2.3.1 requires every server to support it.
     */
    json_t *methods = json_object_get(doc, "token_endpoint_auth_methods_supported");
    if (json_is_array(methods)) {
        bool post = false, basic = false;
        size_t i;
        json_t *m;
        json_array_foreach(methods, i, m) {
            if (json_is_string(m) && strcmp(json_string_value(m), "client_secret_post") == 0)
                post = true;
            if (json_is_string(m) && strcmp(json_string_value(m), "client_secret_basic") == 0)
                basic = true;
        }
        d->basic_auth = basic && !post;
    } else {
        d->basic_auth = true;
    }
out:
    json_decref(doc);
    kiln_http_response_free(&res);
    return d;
}

static struct keyset *fetch_keys(const struct kiln_provider *p, const char *jwks_uri)
{
    struct kiln_http_response res;
    struct keyset *k = NULL;
    struct kiln_jwks *jwks = NULL;
    if (!get_json(p, "jwks", jwks_uri, &res))
        goto out;
    if (kiln_jwks_parse(res.body.p, res.body.len, &jwks) != 0) {
        fetch_failed(p, "jwks", "not a JWK set");
        goto out;
    }
    if (kiln_jwks_count(jwks) == 0)
        kiln_log(KILN_LOG_WARNING, "oidc: JWK set has no usable RS256/ES256 key", "provider",
                 p->name, NULL);
    k = kiln_calloc(1, sizeof *k);
    k->jwks = jwks;
out:
    kiln_http_response_free(&res);
    return k;
}

static void wait_while(struct kiln_provider *p, const bool *busy)
{
    /* The fetcher's own timeouts bound this wait. */
    while (*busy)
        pthread_cond_wait(&p->fetched, &p->lock);
}

/* The discovery document, fetched when missing or older than an hour. A
 * stale copy is served while a refresh is in flight or when it fails. */
static struct discovery *discovery_get(struct kiln_provider *p)
{
    struct discovery *d;
    pthread_mutex_lock(&p->lock);
    if (p->disc_busy) {
        if (!p->disc)
            wait_while(p, &p->disc_busy);
    } else if (!p->disc || kiln_now_ms() - p->disc_at_ms >= DISCOVERY_TTL_MS) {
        p->disc_busy = true;
        pthread_mutex_unlock(&p->lock);
        struct discovery *fresh = fetch_discovery(p);
        pthread_mutex_lock(&p->lock);
        p->disc_busy = false;
        if (fresh) {
            discovery_unref_locked(p->disc);
            fresh->refs = 1; /* the provider's reference */
            p->disc = fresh;
            p->disc_at_ms = kiln_now_ms();
        } else if (p->disc) {
            /* Keep serving the stale copy; try again in a minute rather
             * than on every login. (Unsigned arithmetic wraps consistently.) */
            p->disc_at_ms = kiln_now_ms() - DISCOVERY_TTL_MS + DISCOVERY_RETRY_MS;
        }
        pthread_cond_broadcast(&p->fetched);
    }
    d = p->disc;
    if (d)
        d->refs++;
    pthread_mutex_unlock(&p->lock);
    return d;
}

/*
 * The JWK set. With seen == NULL: the cached set, fetched if there is none.
 * With seen = a set that lacked a token's kid: a newer set if one exists or
 * can be fetched (at most once per JWKS_REFETCH_MS, so random kids cannot
 * make us hammer the provider); otherwise seen itself again.
 */
static struct keyset *keys_get(struct kiln_provider *p, const struct discovery *d,
                               const struct keyset *seen)
{
    struct keyset *k;
    pthread_mutex_lock(&p->lock);
    bool fetch;
    if (p->keys_busy) {
        wait_while(p, &p->keys_busy);
        fetch = false;
    } else if (!seen) {
        fetch = p->keys == NULL;
    } else {
        uint64_t now = kiln_now_ms();
        fetch = p->keys == seen &&
                (!p->keys_refetched || now - p->keys_refetch_ms >= JWKS_REFETCH_MS);
        if (fetch) {
            p->keys_refetched = true;
            p->keys_refetch_ms = now;
        }
    }
    if (fetch) {
        if (seen)
            kiln_log(KILN_LOG_INFO, "oidc: token names an unknown kid, refetching the JWKS",
                     "provider", p->name, NULL);
        p->keys_busy = true;
        pthread_mutex_unlock(&p->lock);
        struct keyset *fresh = fetch_keys(p, d->jwks_uri);
        pthread_mutex_lock(&p->lock);
        p->keys_busy = false;
        if (fresh) {
            keyset_unref_locked(p->keys);
            fresh->refs = 1;
            p->keys = fresh;
        }
        pthread_cond_broadcast(&p->fetched);
    }
    k = p->keys;
    if (k)
        k->refs++;
    pthread_mutex_unlock(&p->lock);
    return k;
}

/*
 * Apple's client secret: an ES256 JWT {iss: team id, iat, exp, aud: the
 * issuer, sub: client id} with kid = key id, made anew when less than five
 * minutes of it remain. Returns a malloc'd copy (wipe and free), or NULL.
 */
static char *apple_secret(struct kiln_provider *p)
{
    char *copy = NULL;
    time_t now = time(NULL);
    pthread_mutex_lock(&p->lock);
    if (!p->apple_secret || p->apple_secret_exp - now < APPLE_SECRET_RENEW_S) {
        json_t *claims = json_pack("{s:s, s:I, s:I, s:s, s:s}", "iss", p->team_id, "iat",
                                   (json_int_t)now, "exp", (json_int_t)(now + APPLE_SECRET_TTL_S),
                                   "aud", p->issuer, "sub", p->client_id);
        char *text = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
        char *jwt = text ? kiln_jwt_sign_es256(p->apple_key, p->key_id, kiln_str_c(text)) : NULL;
        if (jwt) {
            kiln_free_secret(p->apple_secret);
            p->apple_secret = jwt;
            p->apple_secret_exp = now + APPLE_SECRET_TTL_S;
        } else {
            kiln_log(KILN_LOG_ERROR, "oidc: cannot sign the Apple client secret", "provider",
                     p->name, NULL);
        }
        free(text);
        json_decref(claims);
    }
    /* A failed renewal keeps the old secret while it is still valid. */
    if (p->apple_secret && p->apple_secret_exp > now)
        copy = kiln_strdup(p->apple_secret);
    pthread_mutex_unlock(&p->lock);
    return copy;
}

/* --- the flow ------------------------------------------------------------- */

int kiln_oidc_authorize_url(const struct kiln_provider *cp, kiln_arena *a,
                            const char *redirect_uri, const char *state, const char *nonce,
                            const char *code_challenge, const char **url, const char **reason)
{
    /* The registry is read-only; only the mutex-guarded cache changes. */
    struct kiln_provider *p = (struct kiln_provider *)cp;
    struct discovery *d = NULL;
    kiln_buf b;
    int rc = KILN_EINVAL;
    bool first = true;

    kiln_buf_init(&b, MAX_URL);
    *url = NULL;
    *reason = "invalid_request";
    if (!p || !redirect_uri || !state || !nonce || !code_challenge)
        goto out;
    d = discovery_get(p);
    if (!d) {
        *reason = "provider_unreachable";
        rc = KILN_EUNAVAILABLE;
        goto out;
    }
    int e = kiln_buf_append_c(&b, d->authorization_endpoint);
    /* The endpoint may carry a query of its own (RFC 6749 section 3.1). */
    e |= kiln_buf_append_c(&b, strchr(d->authorization_endpoint, '?') ? "&" : "?");
    e |= append_param(&b, &first, "response_type", "code");
    e |= append_param(&b, &first, "client_id", p->client_id);
    e |= append_param(&b, &first, "redirect_uri", redirect_uri);
    e |= append_param(&b, &first, "scope", p->scopes);
    e |= append_param(&b, &first, "state", state);
    e |= append_param(&b, &first, "nonce", nonce);
    e |= append_param(&b, &first, "code_challenge", code_challenge);
    e |= append_param(&b, &first, "code_challenge_method", "S256");
    /* Apple posts the answer (with the user's name, first login only)
     * instead of redirecting when name or email is asked for. */
    if (p->kind == KIND_APPLE)
        e |= append_param(&b, &first, "response_mode", "form_post");
    if (e) {
        *reason = "invalid_request";
        goto out;
    }
    *url = kiln_arena_strndup(a, b.p, b.len);
    *reason = NULL;
    rc = 0;
out:
    discovery_release(p, d);
    kiln_buf_free(&b);
    return rc;
}

/* Authorization: Basic with id and secret form-encoded first (RFC 6749
 * section 2.3.1). Returns a malloc'd header value. */
static char *basic_auth(const char *id, const char *secret)
{
    kiln_buf raw;
    kiln_buf_init(&raw, MAX_FORM);
    int e = append_encoded(&raw, id);
    e |= kiln_buf_append_c(&raw, ":");
    e |= append_encoded(&raw, secret);
    char *out = NULL;
    if (e == 0) {
        out = kiln_malloc(sizeof "Basic " + (raw.len + 2) / 3 * 4);
        memcpy(out, "Basic ", 6);
        EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)raw.p, (int)raw.len);
    }
    buf_wipe_free(&raw);
    return out;
}

/* The "error" code of an OAuth error answer (RFC 6749 section 5.2), for the
 * log: a short token such as invalid_grant; never the description, which a
 * provider may fill with request data. */
static void log_token_error(const struct kiln_provider *p, const struct kiln_http_response *res)
{
    char status[32], code[64] = "";
    json_error_t jerr;
    json_t *doc = json_loadb(res->body.p, res->body.len, 0, &jerr);
    json_t *err = json_is_object(doc) ? json_object_get(doc, "error") : NULL;
    if (json_is_string(err)) {
        size_t i = 0;
        for (const char *c = json_string_value(err); *c && i + 1 < sizeof code; c++)
            if ((*c >= 'a' && *c <= 'z') || *c == '_')
                code[i++] = *c;
        code[i] = '\0';
    }
    snprintf(status, sizeof status, "%ld", res->status);
    kiln_log(KILN_LOG_INFO, "oidc: token endpoint refused the code", "provider", p->name,
             "status", status, "error", code[0] ? code : NULL, NULL);
    json_decref(doc);
}

int kiln_oidc_exchange(const struct kiln_provider *cp, kiln_arena *a, const char *code,
                       const char *code_verifier, const char *redirect_uri, const char *nonce,
                       struct kiln_oidc_identity *out, const char **reason)
{
    struct kiln_provider *p = (struct kiln_provider *)cp;
    struct discovery *d = NULL;
    struct keyset *keys = NULL, *newer = NULL;
    struct kiln_http_response res;
    json_t *tok = NULL, *claims = NULL;
    char *secret = NULL, *authz = NULL;
    const char *detail = NULL;
    kiln_buf form;
    bool first = true;
    int rc = KILN_EAUTH;

    memset(out, 0, sizeof *out);
    memset(&res, 0, sizeof res);
    kiln_buf_init(&form, MAX_FORM);
    *reason = "token_exchange_failed";
    if (!p || !code || !code_verifier || !redirect_uri) {
        rc = KILN_EINVAL;
        goto out;
    }
    /* No nonce to compare is a caller bug; fail closed. */
    if (!nonce || !*nonce) {
        *reason = "nonce_mismatch";
        goto out;
    }
    d = discovery_get(p);
    if (!d) {
        *reason = "provider_unreachable";
        rc = KILN_EUNAVAILABLE;
        goto out;
    }
    secret = p->apple_key ? apple_secret(p) : kiln_strdup(p->client_secret);
    if (!secret)
        goto out;

    /* RFC 6749 section 4.1.3, with the PKCE verifier (RFC 7636 section 4.5). */
    int e = append_param(&form, &first, "grant_type", "authorization_code");
    e |= append_param(&form, &first, "code", code);
    e |= append_param(&form, &first, "redirect_uri", redirect_uri);
    e |= append_param(&form, &first, "code_verifier", code_verifier);
    if (d->basic_auth) {
        authz = basic_auth(p->client_id, secret);
        e |= authz ? 0 : KILN_ETOOBIG;
    } else {
        e |= append_param(&form, &first, "client_id", p->client_id);
        e |= append_param(&form, &first, "client_secret", secret);
    }
    if (e) {
        kiln_log(KILN_LOG_WARNING, "oidc: token request too large", "provider", p->name, NULL);
        goto out;
    }
    struct kiln_http_request req = {
        .url = d->token_endpoint, .form = form.p, .form_len = form.len, .authorization = authz,
    };
    if (kiln_http_fetch(&req, &res) != 0) {
        fetch_failed(p, "token", res.error);
        *reason = "provider_unreachable";
        rc = KILN_EUNAVAILABLE;
        goto out;
    }
    if (res.status < 200 || res.status > 299) {
        /* invalid_grant (a replayed or expired code), invalid_client … */
        log_token_error(p, &res);
        goto out;
    }
    json_error_t jerr;
    tok = json_loadb(res.body.p, res.body.len, 0, &jerr);
    json_t *id_token = json_is_object(tok) ? json_object_get(tok, "id_token") : NULL;
    if (!json_is_string(id_token)) {
        kiln_log(KILN_LOG_INFO, "oidc: token answer has no id_token", "provider", p->name,
                 NULL);
        goto out;
    }

    keys = keys_get(p, d, NULL);
    if (!keys) {
        *reason = "provider_unreachable";
        rc = KILN_EUNAVAILABLE;
        goto out;
    }
    kiln_str token = { json_string_value(id_token), json_string_length(id_token) };
    struct kiln_jwt_expect want = { p->issuer, p->client_id, nonce, 0, NULL };
    if (p->kind == KIND_GOOGLE && strcmp(p->issuer, GOOGLE_ISSUER) == 0)
        want.issuer_alt = "accounts.google.com";
    enum kiln_jwt_status st = kiln_jwt_verify(token, keys->jwks, &want, &claims, &detail);
    if (st == KILN_JWT_UNKNOWN_KEY) {
        /* The provider may have rotated its keys since we fetched them. */
        newer = keys_get(p, d, keys);
        if (newer && newer != keys)
            st = kiln_jwt_verify(token, newer->jwks, &want, &claims, &detail);
    }
    if (st != KILN_JWT_OK) {
        *reason = kiln_jwt_reason(st);
        /* Info, not warning: the caller logs the one warning line of a
         * failed login, with its request id; this adds what exactly failed. */
        kiln_log(KILN_LOG_INFO, "oidc: ID token refused", "provider", p->name, "detail", detail,
                 NULL);
        goto out;
    }

    out->subject = arena_str(a, claims, "sub");
    out->email = arena_str(a, claims, "email");
    /* Apple sends email_verified as the string "true". */
    json_t *ev = json_object_get(claims, "email_verified");
    out->email_verified = json_is_true(ev) ||
                          (json_is_string(ev) && strcmp(json_string_value(ev), "true") == 0);
    out->name = arena_str(a, claims, "name");
    out->first_name = arena_str(a, claims, "given_name");
    out->last_name = arena_str(a, claims, "family_name");
    out->picture = arena_str(a, claims, "picture");
    *reason = NULL;
    rc = 0;
out:
    json_decref(claims);
    json_decref(tok); /* holds the tokens: jansson frees, we cannot wipe */
    if (res.body.p)
        explicit_bzero(res.body.p, res.body.cap);
    kiln_http_response_free(&res);
    buf_wipe_free(&form);
    kiln_free_secret(authz);
    kiln_free_secret(secret);
    keyset_release(p, newer);
    keyset_release(p, keys);
    discovery_release(p, d);
    return rc;
}

/* --- registry ------------------------------------------------------------- */

const char *kiln_provider_name(const struct kiln_provider *p)
{
    return p->name;
}

bool kiln_provider_form_post(const struct kiln_provider *p)
{
    return p->kind == KIND_APPLE;
}

const char *kiln_providers_list(void)
{
    return reg.list ? reg.list : "";
}

const struct kiln_provider *kiln_provider_find(kiln_str name)
{
    for (size_t i = 0; i < reg.n; i++)
        if (kiln_str_eq_c(name, reg.v[i]->name))
            return reg.v[i];
    return NULL;
}

static void provider_free(struct kiln_provider *p)
{
    free(p->name);
    free(p->issuer);
    free(p->client_id);
    kiln_free_secret(p->client_secret);
    free(p->scopes);
    free(p->team_id);
    free(p->key_id);
    EVP_PKEY_free(p->apple_key);
    discovery_unref_locked(p->disc);
    keyset_unref_locked(p->keys);
    kiln_free_secret(p->apple_secret);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->fetched);
    free(p);
}

void kiln_providers_free(void)
{
    for (size_t i = 0; i < reg.n; i++)
        provider_free(reg.v[i]);
    free(reg.list);
    memset(&reg, 0, sizeof reg);
}

/*
 * All of names[0..n) set, none, or some: then one problem line per missing
 * variable, naming the first one that is set. anchor, when set, counts as
 * "some" (an optional variable that only makes sense with the group).
 * Returns 1 (all), 0 (none) or -1 (problems recorded). Values never appear
 * in the lines: some are secrets.
 */
static int all_or_none(struct kiln_env_reader *l, const char *const *names, const char **vals, size_t n,
                       const char *anchor)
{
    size_t set = 0;
    const char *first = anchor;
    for (size_t i = 0; i < n; i++) {
        vals[i] = kiln_env_value(l, names[i]);
        if (vals[i]) {
            set++;
            if (!first)
                first = names[i];
        }
    }
    if (set == n)
        return 1;
    if (!first)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!vals[i])
            kiln_env_problem(l, "%s is required when %s is set", names[i], first);
    return -1;
}

static bool check_issuer(struct kiln_env_reader *l, const char *var, const char *v)
{
    if (issuer_allowed(v))
        return true;
    kiln_env_problem(l, "%s must be an https:// URL (http:// only for localhost or 127.0.0.1), "
               "without query or fragment (got \"%.80s\")", var, v);
    return false;
}

/* RFC 6749 section 3.3 scope tokens, and openid among them (we need the
 * ID token). */
static bool check_scopes(struct kiln_env_reader *l, const char *var, const char *v)
{
    bool openid = false;
    const char *s = v;
    while (*s) {
        while (*s == ' ')
            s++;
        const char *t = s;
        while (*s && *s != ' ') {
            unsigned char c = (unsigned char)*s;
            if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
                kiln_env_problem(l, "%s holds a character not allowed in a scope", var);
                return false;
            }
            s++;
        }
        if (s - t == 6 && strncmp(t, "openid", 6) == 0)
            openid = true;
    }
    if (!openid)
        kiln_env_problem(l, "%s must include openid", var);
    return openid;
}

static struct kiln_provider *provider_new(const char *name, enum kind kind, const char *issuer,
                                          const char *client_id, const char *secret,
                                          const char *scopes)
{
    struct kiln_provider *p = kiln_calloc(1, sizeof *p);
    p->name = kiln_strdup(name);
    p->kind = kind;
    p->issuer = kiln_strdup(issuer);
    p->client_id = kiln_strdup(client_id);
    p->client_secret = secret ? kiln_strdup(secret) : NULL;
    p->scopes = kiln_strdup(scopes);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->fetched, NULL);
    return p;
}

static void add(struct kiln_provider *p)
{
    reg.v[reg.n++] = p;
}

static void load_google(struct kiln_env_reader *l)
{
    static const char *const names[] = { "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET" };
    const char *v[2];
    const char *issuer = kiln_env_value(l, "GOOGLE_ISSUER");
    if (all_or_none(l, names, v, 2, issuer ? "GOOGLE_ISSUER" : NULL) != 1)
        return;
    if (!issuer)
        issuer = GOOGLE_ISSUER;
    if (!check_issuer(l, "GOOGLE_ISSUER", issuer))
        return;
    add(provider_new("google", KIND_GOOGLE, issuer, v[0], v[1], "openid email profile"));
}

static void load_apple(struct kiln_env_reader *l)
{
    static const char *const key_names[] = { "APPLE_TEAM_ID", "APPLE_KEY_ID",
                                             "APPLE_PRIVATE_KEY" };
    const char *id = kiln_env_value(l, "APPLE_CLIENT_ID");
    const char *secret = kiln_env_value(l, "APPLE_CLIENT_SECRET");
    const char *issuer = kiln_env_value(l, "APPLE_ISSUER");
    const char *k[3];
    int keyed = all_or_none(l, key_names, k, 3, NULL);
    if (keyed < 0)
        return;
    if (keyed && secret) {
        kiln_env_problem(l, "APPLE_CLIENT_SECRET and APPLE_PRIVATE_KEY are alternatives: set one");
        return;
    }
    if (!id) {
        if (keyed || secret || issuer)
            kiln_env_problem(l, "APPLE_CLIENT_ID is required when %s is set",
                    keyed ? "APPLE_PRIVATE_KEY" : secret ? "APPLE_CLIENT_SECRET" : "APPLE_ISSUER");
        return;
    }
    if (!keyed && !secret) {
        kiln_env_problem(l, "APPLE_PRIVATE_KEY (with APPLE_TEAM_ID and APPLE_KEY_ID) or "
                   "APPLE_CLIENT_SECRET is required when APPLE_CLIENT_ID is set");
        return;
    }
    if (!issuer)
        issuer = APPLE_ISSUER;
    if (!check_issuer(l, "APPLE_ISSUER", issuer))
        return;
    EVP_PKEY *key = NULL;
    if (keyed) {
        key = kiln_jwt_load_p256_pem(k[2], strlen(k[2]));
        if (!key) {
            kiln_env_problem(l, "APPLE_PRIVATE_KEY is not a PEM EC P-256 private key (Apple's .p8 file)");
            return;
        }
    }
    /* Apple's scopes; openid is implied (its ID token always comes). */
    struct kiln_provider *p = provider_new("apple", KIND_APPLE, issuer, id, secret, "name email");
    if (key) {
        p->team_id = kiln_strdup(k[0]);
        p->key_id = kiln_strdup(k[1]);
        p->apple_key = key;
    }
    add(p);
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

static void load_generic(struct kiln_env_reader *l, const char *name)
{
    char prefix[8 + MAX_NAME], vars[3][64], scopes_var[64];
    /* Env names cannot hold '-': OIDC_MY_IDP_ISSUER for my-idp. */
    size_t n = strlen(name);
    memcpy(prefix, "OIDC_", 5);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        prefix[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    prefix[5 + n] = '\0';
    snprintf(vars[0], sizeof vars[0], "%s_ISSUER", prefix);
    snprintf(vars[1], sizeof vars[1], "%s_CLIENT_ID", prefix);
    snprintf(vars[2], sizeof vars[2], "%s_CLIENT_SECRET", prefix);
    snprintf(scopes_var, sizeof scopes_var, "%s_SCOPES", prefix);
    const char *const names[] = { vars[0], vars[1], vars[2] };
    const char *v[3];
    const char *scopes = kiln_env_value(l, scopes_var);
    int all = all_or_none(l, names, v, 3, scopes ? scopes_var : NULL);
    if (all == 0)
        kiln_env_problem(l, "%s, %s and %s are required (OIDC_PROVIDERS names %s)", vars[0], vars[1],
                vars[2], name);
    if (all != 1)
        return;
    if (!scopes)
        scopes = "openid email profile";
    if (!check_issuer(l, vars[0], v[0]) || !check_scopes(l, scopes_var, scopes))
        return;
    add(provider_new(name, KIND_GENERIC, v[0], v[1], v[2], scopes));
}

static void load_list(struct kiln_env_reader *l, const char *list)
{
    char seen[MAX_PROVIDERS][8 + MAX_NAME];
    size_t nseen = 0;
    const char *s = list;
    while (*s) {
        const char *comma = strchr(s, ',');
        kiln_str item = kiln_str_trim(
            (kiln_str){ s, comma ? (size_t)(comma - s) : strlen(s) });
        s = comma ? comma + 1 : s + strlen(s);
        if (item.len == 0)
            continue;
        if (!name_ok(item.p, item.len)) {
            kiln_env_problem(l, "OIDC_PROVIDERS: \"%.*s\" is not a provider name "
                       "(1-32 of a-z, 0-9, _ and -)",
                    (int)(item.len > 40 ? 40 : item.len), item.p);
            continue;
        }
        char name[MAX_NAME + 1];
        memcpy(name, item.p, item.len);
        name[item.len] = '\0';
        /* google and apple have their own variables; dev is the
         * development login's path (/auth/dev/login). */
        if (!strcmp(name, "google") || !strcmp(name, "apple") || !strcmp(name, "dev")) {
            kiln_env_problem(l, "OIDC_PROVIDERS: \"%s\" is reserved (google and apple use "
                       "GOOGLE_* and APPLE_*)", name);
            continue;
        }
        /* my-idp and my_idp would read the same variables. */
        char key[MAX_NAME + 1];
        for (size_t i = 0; i <= item.len; i++)
            key[i] = name[i] == '-' ? '_' : name[i];
        bool dup = false;
        for (size_t i = 0; i < nseen; i++)
            dup = dup || strcmp(seen[i], key) == 0;
        if (dup) {
            kiln_env_problem(l, "OIDC_PROVIDERS names \"%s\" twice", name);
            continue;
        }
        if (nseen == MAX_PROVIDERS) {
            kiln_env_problem(l, "OIDC_PROVIDERS: more than %d providers", MAX_PROVIDERS);
            return;
        }
        memcpy(seen[nseen++], key, item.len + 1);
        load_generic(l, name);
    }
}

int kiln_providers_load(kiln_getenv_fn get, void *ctx, const struct kiln_config *cfg,
                        kiln_buf *problems)
{
    struct kiln_env_reader l = { get, ctx, problems, 0 };
    kiln_providers_free();
    load_google(&l);
    load_apple(&l);
    const char *list = kiln_env_value(&l, "OIDC_PROVIDERS");
    if (list)
        load_list(&l, list);

    kiln_buf names;
    kiln_buf_init(&names, (MAX_PROVIDERS + 2) * (MAX_NAME + 1) + 1);
    for (size_t i = 0; i < reg.n; i++) {
        kiln_buf_append_c(&names, i ? "," : "");
        kiln_buf_append_c(&names, reg.v[i]->name);
    }
    kiln_buf_append(&names, "", 1);
    reg.list = kiln_strdup(names.p);
    kiln_buf_free(&names);

    /* libcurl's global init is not for worker threads to race on. */
    if (reg.n && kiln_http_client_init() != 0)
        kiln_env_problem(&l, "cannot initialise libcurl for login providers");
    kiln_log(KILN_LOG_INFO, "oidc: login providers", "providers",
             reg.n ? reg.list : "none (no credentials configured)", NULL);
    return l.count;
}
