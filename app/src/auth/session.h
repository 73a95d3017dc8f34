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
 * Each user's sessions are indexed in the set user_sessions:<user id> (the
 * sids), so that they can be listed and ended (kiln_session_list, _end,
 * _end_all). A session's record is the truth and the index may lag behind
 * it: sids whose record is gone (expired, evicted) stay in the set until a
 * listing or an ending finds them and removes them, and the set's TTL is
 * renewed with every write of a record it indexes, so it outlives them. A
 * listing names a session by a public id, never by its sid: the sid is
 * half of the cookie, and the listing must not hand out a usable secret.
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

/* Where and how a session was opened, for the user's list of sessions. */
#define KILN_SESSION_USER_AGENT_MAX 256
struct kiln_session_client {
    const char *ip;          /* the client's address (kiln_client_ip); NULL: unknown */
    kiln_str user_agent;     /* the header as sent (p NULL: none); kept as printable
                                ASCII (anything else '?'), the first
                                KILN_SESSION_USER_AGENT_MAX bytes */
    const char *method;      /* the way in: "google", "password", "dev"...; NULL:
                                the user's provider */
};

/*
 * Create a session for user in kv: a fresh sid (never reused), saved with
 * the 7-day TTL and added to the user's index. client (NULL: nothing known)
 * is recorded with it, with the time. token gets the cookie value. 0 or a
 * kv error (then no session exists).
 */
int kiln_session_create(struct kiln_kv *kv, const struct kiln_session_user *user,
                        const struct kiln_session_client *client,
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
/* *deleted (may be NULL): the session existed. Removes it from its user's
 * index too. */
int kiln_session_delete(struct kiln_kv *kv, const char *sid, bool *deleted);
/* 0 while the session exists, KILN_ENOTFOUND once it has ended; kv errors
 * as they come. Does not refresh it. */
int kiln_session_exists(struct kiln_kv *kv, const char *sid);

/*
 * A session's public id: base64url of the first 16 bytes of
 * HMAC-SHA256(K, sid), K = HMAC-SHA256(SECRET_KEY_BASE, "kiln session
 * public id v1"). It names a session in listings and in DELETE
 * /sessions/:id; nothing leads back from it to the sid. After a key
 * rotation a session's id changes, and the id made with the previous key
 * still finds it while SECRET_KEY_BASE_PREVIOUS is set.
 */
#define KILN_SESSION_ID_LEN 22
void kiln_session_public_id(const char *sid, char out[KILN_SESSION_ID_LEN + 1]);

/* One of a user's sessions, as the list shows it. Strings in the arena. */
struct kiln_session_info {
    char id[KILN_SESSION_ID_LEN + 1];     /* the public id */
    int64_t created_at;                   /* Unix seconds; 0: unknown (a session
                                             made before the index existed) */
    int64_t last_seen_at;                 /* Unix seconds: the latest use, to the
                                             minute (the rolling refresh) */
    const char *ip, *user_agent, *method; /* NULL: unknown */
    bool current;                         /* the session given as current_sid */
};

/* Most sessions one listing shows; a user with more (a client that logs in
 * again and again) sees this many of them, which ones unspecified. */
#define KILN_SESSION_LIST_MAX 100

/*
 * The user's live sessions, newest first (created_at, then last_seen_at),
 * in *out (an array of *n in the arena). current_sid (may be NULL) is the
 * one flagged current. Reads each record without refreshing it; sids whose
 * record is gone are removed from the index on the way (best effort: a
 * failure to remove them only leaves them for the next time). 0 or a kv
 * error.
 */
int kiln_session_list(struct kiln_kv *kv, kiln_arena *a, const char *user_id,
                      const char *current_sid, struct kiln_session_info **out, size_t *n);

/*
 * End the user's session whose public id is public_id: its record is
 * deleted, so it is over on every instance at once, and it leaves the
 * index. sid gets its sid (for the change feed). KILN_ENOTFOUND when it is
 * not one of the user's live sessions (another user's, ended, expired, or
 * no such id); kv errors as they come. A user with more than
 * KILN_KV_SET_LIST_MAX sessions indexed: only that many are looked at.
 */
int kiln_session_end(struct kiln_kv *kv, const char *user_id, kiln_str public_id,
                     char sid[KILN_SID_LEN + 1]);

/*
 * End every session of the user but keep_sid (NULL: every one, e.g. after a
 * password reset). on_ended (may be NULL) is called with the sid of each
 * session that existed and is now gone, as it goes (for the change feed
 * and the audit log); *ended (may be NULL) counts them. 0 once the index
 * holds nothing else; a kv error stops it where it is (what was ended
 * stays ended and was reported). Sessions are taken from the index in
 * batches until none is left, so this sees every one of them; a session
 * created while it runs may survive it.
 */
typedef void (*kiln_session_ended_cb)(void *ctx, const char *sid);
int kiln_session_end_all(struct kiln_kv *kv, const char *user_id, const char *keep_sid,
                         kiln_session_ended_cb on_ended, void *ctx, size_t *ended);

/* Signed, expiring payload for the pending-login cookie (base64url text). */
const char *kiln_login_cookie_seal(kiln_arena *a, kiln_str payload);
/* Verify and return the payload; false when tampered or malformed. */
bool kiln_login_cookie_open(kiln_arena *a, kiln_str value, kiln_str *payload);

#endif
