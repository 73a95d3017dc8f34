/*
 * Server-side sessions. A session is JSON in the kv store at
 * backend_session:<sid> (TTL 7 days, rolling: refreshed on use at most once
 * a minute, and only while it exists). sid = 32 random bytes, base64url. The cookie
 * `_backend_session` (or `Authorization: Bearer`) carries sid "." tag, where
 * tag = HMAC-SHA256(key, sid) with a key derived from SECRET_KEY_BASE: a
 * forged or tampered cookie is refused without a kv lookup. While
 * SECRET_KEY_BASE_PREVIOUS is set, tags made with it still verify, so a key
 * rotation logs nobody out.
 *
 * The same keys sign the short-lived pending-login cookie (`_kiln_login`),
 * under a different derivation label, so neither can stand for the other.
 *
 * Threads: kiln_auth_init once at start; everything else on workers.
 */
#ifndef KILN_AUTH_SESSION_H
#define KILN_AUTH_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/str.h"
#include "store/kv.h"

#define KILN_SESSION_COOKIE "_backend_session"
#define KILN_LOGIN_COOKIE "_kiln_login"
#define KILN_SESSION_TTL_S (7 * 24 * 3600)
#define KILN_SID_LEN 43                       /* base64url of 32 bytes */
#define KILN_SESSION_TOKEN_LEN (KILN_SID_LEN + 1 + 43)

/* Use cfg's SECRET_KEY_BASE[_PREVIOUS] for signing keys (derived on first
 * use). The secret strings must outlive every call below. Calling it again
 * (tests) starts over with the new keys; not while other threads sign. */
void kiln_auth_init(const struct kiln_config *cfg);
/*
 * A new SECRET_KEY_BASE (secret reload): it signs from now on, and the key
 * that signed until now still verifies, so no session or login in flight is
 * lost. Safe while other threads sign and verify. The secret is used at
 * once and not kept.
 */
void kiln_auth_rotate_secret(const char *secret, size_t len);

/* What the guard attaches to req->session. Strings in the request arena. */
struct kiln_session {
    char sid[KILN_SID_LEN + 1];
    const char *user_id;
    kiln_str user_json;   /* the session user object, as JSON text */
    bool via_cookie;      /* false: Authorization: Bearer (no CSRF check) */
};

/* The session user, what login stores and /me returns (API.md). */
struct kiln_session_user {
    const char *user_id;
    const char *email, *name, *first_name, *last_name, *image;
    const char *provider, *provider_uid;
};

/* sid "." tag for a sid; out gets KILN_SESSION_TOKEN_LEN chars and a NUL. */
void kiln_session_token(const char *sid, char out[KILN_SESSION_TOKEN_LEN + 1]);
/* Check a token's tag (current key, then the previous one); sets sid. */
bool kiln_session_token_verify(kiln_str token, char sid[KILN_SID_LEN + 1]);

/*
 * Create a session for user in kv: a fresh sid (never reused), saved with
 * the 7-day TTL. token gets the cookie value. 0 or a kv error.
 */
int kiln_session_create(struct kiln_kv *kv, const struct kiln_session_user *user,
                        char token[KILN_SESSION_TOKEN_LEN + 1]);
/*
 * Load the session of a verified sid into out. KILN_ENOTFOUND when it does
 * not exist (expired, logged out), also when it was deleted between the
 * read and the refresh; kv errors as they come. Refreshes the TTL when the
 * last refresh is a minute old or more, only while the record still exists
 * (kiln_kv_replace), so a refresh never brings back a deleted session.
 */
int kiln_session_load(struct kiln_kv *kv, kiln_arena *a, const char *sid,
                      struct kiln_session *out);
/* *deleted (may be NULL): the session existed. */
int kiln_session_delete(struct kiln_kv *kv, const char *sid, bool *deleted);
/* 0 while the session exists, KILN_ENOTFOUND once it has ended; kv errors
 * as they come. Does not refresh it. */
int kiln_session_exists(struct kiln_kv *kv, const char *sid);

/* Signed, expiring payload for the pending-login cookie (base64url text). */
const char *kiln_login_cookie_seal(kiln_arena *a, kiln_str payload);
/* Verify and return the payload; false when tampered or malformed. */
bool kiln_login_cookie_open(kiln_arena *a, kiln_str value, kiln_str *payload);

#endif
