/*
 * Passkeys (docs/AUTHENTICATION.md, "Passkeys"): the WebAuthn ceremonies
 * around auth/webauthn.c's checks.
 *
 * Registration (signed in): POST /api/v1/me/passkeys/options answers the
 * PublicKeyCredentialCreationOptions for navigator.credentials.create
 * (a discoverable credential, attestation "none", ES256, EdDSA, RS256);
 * POST /api/v1/me/passkeys with the browser's credential stores it.
 * Sign-in: POST /auth/passkey/options answers the request options (no
 * allowCredentials: the authenticator offers the passkeys it holds for
 * the RP, so nobody types an address); POST /auth/passkey/login with the
 * assertion starts a session.
 *
 * User verification (a PIN, a fingerprint) is required at both ceremonies:
 * a passkey sign-in asks for no second factor, so the passkey must be two
 * factors itself (something held, and something known or been); an
 * authenticator that only proves presence is refused.
 *
 * A challenge is 32 random bytes kept five minutes in the kv store under
 * its hash, with what it is for (and for a registration, whose); the
 * ceremony takes it (GETDEL), so each works once. A passkey sign-in is a
 * whole sign-in: no second step follows it.
 */
#include <jansson.h>
#include <openssl/sha.h>
#include <string.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/session.h"
#include "auth/webauthn.h"
#include "core/base64.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"
#include "core/uuid.h"

#define CHALLENGE_TTL_S 300
#define MAX_ORIGINS 8

static struct {
    const char *rp_id;
    const char *origins[MAX_ORIGINS];
    size_t norigins;
} W;

void kiln_passkeys_init(const struct kiln_config *cfg)
{
    W.rp_id = cfg->webauthn_rp_id;
    W.norigins = 0;
    for (char *p = cfg->webauthn_origins; p && *p && W.norigins < MAX_ORIGINS;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*p)
            W.origins[W.norigins++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
}

/* The 16 bytes of a UUID's text form. */
static bool uuid_bytes(const char *uuid, uint8_t out[16])
{
    size_t n = 0;
    for (const char *p = uuid; *p && n < 32; p++) {
        if (*p == '-')
            continue;
        int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
              : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
        if (v < 0)
            return false;
        if (n % 2 == 0)
            out[n / 2] = (uint8_t)(v << 4);
        else
            out[n / 2] |= (uint8_t)v;
        n++;
    }
    return n == 32;
}

static struct kiln_webauthn_rp rp(void)
{
    return (struct kiln_webauthn_rp){ W.rp_id, W.origins, W.norigins };
}

static void db_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *what)
{
    kiln_res_fail(req, res, err, "Database", what, kiln_db_last_error(app_db(req)));
}

static const char *challenge_key(kiln_arena *a, const char *challenge)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    char hex[65];
    SHA256((const unsigned char *)challenge, strlen(challenge), d);
    kiln_hex_encode(d, sizeof d, hex);
    return kiln_arena_sprintf(a, "webauthn:%.32s", hex);
}

/* A new challenge for purpose ("create" with the user, or "get"), kept in
 * the kv store; NULL after answering an error. */
static const char *new_challenge(struct kiln_req *req, struct kiln_res *res, const char *purpose,
                                 const char *user)
{
    unsigned char raw[32];
    char *challenge = kiln_arena_alloc(req->arena, 44);
    if (kiln_random_bytes(raw, sizeof raw)) {
        kiln_res_fail(req, res, KILN_EIO, "Randomness", "passkey", "no random bytes");
        return NULL;
    }
    kiln_base64url_encode(raw, sizeof raw, challenge);
    json_t *v = json_pack("{s:s, s:s?}", "for", purpose, "user_id", user);
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    int err = kiln_kv_set(app_kv(req), kiln_str_c(challenge_key(req->arena, challenge)),
                          kiln_str_c(text), CHALLENGE_TTL_S * 1000ull);
    free(text);
    if (err) {
        kiln_res_fail(req, res, err, "Session store", "passkey", kiln_kv_last_error(app_kv(req)));
        return NULL;
    }
    return challenge;
}

/* Bytes of a base64url string field of o into the arena; NULL if absent
 * or not base64url. */
static const uint8_t *b64_field(kiln_arena *a, json_t *o, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(o, name));
    if (!s)
        return NULL;
    size_t n = strlen(s);
    uint8_t *out = kiln_arena_alloc(a, n + 1);
    if (!kiln_base64url_decode(s, n, out, n + 1, len))
        return NULL;
    return out;
}

/*
 * The challenge a clientDataJSON names, taken from the kv store (once):
 * 0 with *purpose and *user (in the arena), KILN_ENOTFOUND when it is not
 * one we issued (or it was used, or expired), kv errors.
 */
static int take_challenge(struct kiln_req *req, const uint8_t *cd, size_t cd_len,
                          const char **challenge, const char **purpose, const char **user)
{
    json_t *c = json_loadb((const char *)cd, cd_len, 0, NULL);
    const char *ch = json_string_value(json_object_get(c, "challenge"));
    if (!ch || strlen(ch) > 128) {
        json_decref(c);
        return KILN_ENOTFOUND;
    }
    *challenge = kiln_arena_strndup(req->arena, ch, strlen(ch));
    json_decref(c);
    kiln_str v;
    int err = kiln_kv_take(app_kv(req), req->arena,
                           kiln_str_c(challenge_key(req->arena, *challenge)), &v);
    if (err)
        return err;
    json_t *o = json_loadb(v.p, v.len, 0, NULL);
    const char *p = json_string_value(json_object_get(o, "for"));
    const char *u = json_string_value(json_object_get(o, "user_id"));
    *purpose = p ? kiln_arena_strndup(req->arena, p, strlen(p)) : "";
    *user = u ? kiln_arena_strndup(req->arena, u, strlen(u)) : NULL;
    json_decref(o);
    return 0;
}

/* ---- registration ----------------------------------------------------------------- */

void api_passkeys_options(struct kiln_req *req, struct kiln_res *res)
{
    const char *user = res_user_id(req);
    const char *challenge = new_challenge(req, res, "create", user);
    if (!challenge)
        return;
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(user);
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT credential_id FROM passkeys WHERE user_id = $1", &id, 1, &rows);
    if (err) {
        db_fail(req, res, err, "passkey options");
        return;
    }
    json_t *exclude = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(exclude, json_pack("{s:s, s:s}", "type", "public-key", "id",
                                                 kiln_db_text(&rows, i, 0).p));
    /* The user handle: the 16 bytes of the user's UUID, no personal data
     * (WebAuthn section 14.6.1). */
    uint8_t handle[16];
    char handle_b64[24];
    if (!uuid_bytes(user, handle)) {
        json_decref(exclude);
        kiln_res_fail(req, res, KILN_EIO, "Session", "passkey options", "user id not a UUID");
        return;
    }
    kiln_base64url_encode(handle, sizeof handle, handle_b64);
    const struct kiln_session *s = kiln_req_session(req);
    json_t *u = json_loadb(s->user_json.p, s->user_json.len, 0, NULL);
    const char *email = json_string_value(json_object_get(u, "email"));
    const char *name = json_string_value(json_object_get(u, "name"));
    json_t *out = json_pack(
        "{s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s}, s:[{s:s, s:i}, {s:s, s:i}, {s:s, s:i}], "
        "s:{s:s, s:b, s:s}, s:s, s:i, s:o}",
        "challenge", challenge, "rp", "id", W.rp_id, "name", W.rp_id, "user", "id", handle_b64,
        "name", email ? email : user, "displayName", name ? name : (email ? email : user),
        "pubKeyCredParams", "type", "public-key", "alg", KILN_WEBAUTHN_ES256, "type", "public-key",
        "alg", KILN_WEBAUTHN_EDDSA, "type", "public-key", "alg", KILN_WEBAUTHN_RS256,
        "authenticatorSelection", "residentKey", "required", "requireResidentKey", 1,
        "userVerification", "required", "attestation", "none", "timeout",
        CHALLENGE_TTL_S * 1000, "excludeCredentials", exclude);
    json_decref(u);
    kiln_res_header(res, "cache-control", "no-store");
    kiln_res_json(req, res, 200, out);
}

static json_t *passkey_json(const struct kiln_db_rows *r, size_t i)
{
    bool be = false, bs = false;
    kiln_db_bool(r, i, 3, &be);
    kiln_db_bool(r, i, 4, &bs);
    return json_pack("{s:s, s:s, s:s, s:s?, s:b, s:b}", "id", kiln_db_text(r, i, 0).p, "name",
                     kiln_db_text(r, i, 1).p, "created_at", kiln_db_text(r, i, 2).p,
                     "last_used_at", kiln_db_is_null(r, i, 5) ? NULL : kiln_db_text(r, i, 5).p,
                     "backup_eligible", be, "backed_up", bs);
}

#define PASSKEY_COLS "id, name, inserted_at, backup_eligible, backed_up, last_used_at"

void api_passkeys_create(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    json_t *resp = json_object_get(in, "response");
    size_t cd_len = 0, ao_len = 0;
    const uint8_t *cd = b64_field(req->arena, resp, "clientDataJSON", &cd_len);
    const uint8_t *ao = b64_field(req->arena, resp, "attestationObject", &ao_len);
    const char *name = json_string_value(json_object_get(in, "name"));
    struct res_errors errs = { NULL };
    if (!cd || !ao)
        res_error(&errs, "response", "needs clientDataJSON and attestationObject (base64url)");
    if (name && (json_string_length(json_object_get(in, "name")) > API_PASSKEY_NAME_MAX ||
                 !kiln_utf8_valid(kiln_str_c(name))))
        res_error(&errs, "name", kiln_arena_sprintf(req->arena, "should be at most %d character(s)",
                                                    API_PASSKEY_NAME_MAX));
    name = name ? kiln_arena_strndup(req->arena, name, strlen(name)) : "";
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    const char *user = res_user_id(req), *challenge = NULL, *purpose = NULL, *owner = NULL;
    int err = take_challenge(req, cd, cd_len, &challenge, &purpose, &owner);
    if (err && err != KILN_ENOTFOUND) {
        kiln_res_fail(req, res, err, "Session store", "passkey", kiln_kv_last_error(app_kv(req)));
        return;
    }
    if (err || strcmp(purpose, "create") || !owner || strcmp(owner, user)) {
        kiln_res_error(req, res, 400, "invalid_challenge",
                       "This ceremony's challenge is unknown, used or expired: ask for new "
                       "options",
                       NULL);
        return;
    }
    struct kiln_webauthn_rp p = rp();
    struct kiln_webauthn_credential c;
    const char *why = NULL;
    err = kiln_webauthn_register(&p, cd, cd_len, ao, ao_len, challenge, true, &c, &why);
    if (err) {
        kiln_audit_record(req, user, "passkey_refused", why);
        if (err == KILN_EINVAL)
            kiln_res_error(req, res, 400, "invalid_credential", why ? why : "refused", NULL);
        else
            kiln_res_fail(req, res, err, "WebAuthn", "passkey registration", why ? why : "");
        return;
    }
    char id[KILN_UUID_LEN + 1], now[KILN_RFC3339_LEN + 1];
    kiln_uuid_v4(id);
    kiln_time_rfc3339_now(now);
    char *cred = kiln_arena_alloc(req->arena, kiln_base64url_len(c.id_len) + 1);
    kiln_base64url_encode(c.id, c.id_len, cred);
    char *key = kiln_arena_alloc(req->arena, kiln_base64url_len(c.public_key_len) + 1);
    kiln_base64url_encode(c.public_key, c.public_key_len, key);
    char aaguid[33];
    kiln_hex_encode(c.aaguid, sizeof c.aaguid, aaguid);
    bool pg = kiln_db_dialect(app_db(req)) == KILN_DB_POSTGRES;
    kiln_str q[11] = {
        kiln_str_c(id),
        kiln_str_c(user),
        kiln_str_c(cred),
        kiln_str_c(key),
        kiln_str_c(kiln_arena_sprintf(req->arena, "%d", c.alg)),
        kiln_str_c(kiln_arena_sprintf(req->arena, "%u", c.sign_count)),
        kiln_str_c(aaguid),
        kiln_str_c(c.backup_eligible ? (pg ? "true" : "1") : (pg ? "false" : "0")),
        kiln_str_c(c.backed_up ? (pg ? "true" : "1") : (pg ? "false" : "0")),
        kiln_str_c(name),
        kiln_str_c(now),
    };
    kiln_webauthn_credential_free(&c);
    struct kiln_db_rows rows;
    err = kiln_db_query(app_db(req), req->arena,
                        "INSERT INTO passkeys (id, user_id, credential_id, public_key, alg, "
                        "sign_count, aaguid, backup_eligible, backed_up, name, inserted_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING " PASSKEY_COLS,
                        q, 11, &rows);
    if (err == KILN_ECONFLICT) {
        kiln_res_error(req, res, 409, "passkey_exists", "This passkey is already registered",
                       NULL);
        return;
    }
    if (err) {
        db_fail(req, res, err, "passkey registration");
        return;
    }
    kiln_audit_record(req, user, "passkey_added", id);
    kiln_res_json(req, res, 201, passkey_json(&rows, 0));
}

void api_passkeys_list(struct kiln_req *req, struct kiln_res *res)
{
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(res_user_id(req));
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT " PASSKEY_COLS " FROM passkeys WHERE user_id = $1 ORDER BY "
                            "inserted_at DESC",
                            &id, 1, &rows);
    if (err) {
        db_fail(req, res, err, "passkeys");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < rows.nrows; i++)
        json_array_append_new(data, passkey_json(&rows, i));
    kiln_res_json(req, res, 200, json_pack("{s:o}", "data", data));
}

void api_passkeys_delete(struct kiln_req *req, struct kiln_res *res)
{
    const char *id = res_id(req, res, "not_found", "Passkey not found");
    if (!id)
        return;
    const char *user = res_user_id(req);
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(user) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 RETURNING id", p,
                            2, &rows);
    if (err) {
        db_fail(req, res, err, "passkeys");
        return;
    }
    if (!rows.nrows) {
        kiln_res_error(req, res, 404, "not_found", "Passkey not found", NULL);
        return;
    }
    kiln_audit_record(req, user, "passkey_removed", id);
    res->status = 204;
}

/* ---- sign-in ---------------------------------------------------------------------- */

void api_passkey_login_options(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    const char *challenge = new_challenge(req, res, "get", NULL);
    if (!challenge)
        return;
    kiln_res_header(res, "cache-control", "no-store");
    kiln_res_json(req, res, 200,
                  json_pack("{s:s, s:s, s:i, s:s, s:[]}", "challenge", challenge, "rpId", W.rp_id,
                            "timeout", CHALLENGE_TTL_S * 1000, "userVerification", "required",
                            "allowCredentials"));
}

static void login_refused(struct kiln_req *req, struct kiln_res *res, const char *user,
                          const char *why)
{
    kiln_audit_record(req, user, "login_failed", kiln_arena_sprintf(req->arena, "passkey: %s", why));
    kiln_res_error(req, res, 401, "invalid_credential", "This passkey does not sign in here",
                   NULL);
}

void api_passkey_login(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    json_t *resp = json_object_get(in, "response");
    size_t cd_len = 0, ad_len = 0, sig_len = 0, cred_len = 0, uh_len = 0;
    const uint8_t *cd = b64_field(req->arena, resp, "clientDataJSON", &cd_len);
    const uint8_t *ad = b64_field(req->arena, resp, "authenticatorData", &ad_len);
    const uint8_t *sig = b64_field(req->arena, resp, "signature", &sig_len);
    const uint8_t *uh = b64_field(req->arena, resp, "userHandle", &uh_len);
    const uint8_t *cred = b64_field(req->arena, in, "rawId", &cred_len);
    json_decref(in);
    if (!cd || !ad || !sig || !cred || !cred_len || cred_len > KILN_WEBAUTHN_MAX_CRED_ID) {
        struct res_errors errs = { NULL };
        res_error(&errs, "response",
                  "needs rawId, clientDataJSON, authenticatorData and signature (base64url)");
        res_errors_answer(req, res, &errs);
        return;
    }
    const char *challenge = NULL, *purpose = NULL, *owner = NULL;
    int err = take_challenge(req, cd, cd_len, &challenge, &purpose, &owner);
    if (err && err != KILN_ENOTFOUND) {
        kiln_res_fail(req, res, err, "Session store", "passkey", kiln_kv_last_error(app_kv(req)));
        return;
    }
    if (err || strcmp(purpose, "get")) {
        kiln_res_error(req, res, 400, "invalid_challenge",
                       "This ceremony's challenge is unknown, used or expired: ask for new "
                       "options",
                       NULL);
        return;
    }
    char *cred_b64 = kiln_arena_alloc(req->arena, kiln_base64url_len(cred_len) + 1);
    kiln_base64url_encode(cred, cred_len, cred_b64);
    struct kiln_db *db = app_db(req);
    struct kiln_db_rows rows;
    kiln_str c = kiln_str_c(cred_b64);
    err = kiln_db_query(db, req->arena,
                        "SELECT p.id, p.user_id, p.public_key, p.alg, p.sign_count, u.email, "
                        "u.name, u.first_name, u.last_name, u.image FROM passkeys p JOIN users u "
                        "ON u.id = p.user_id WHERE p.credential_id = $1",
                        &c, 1, &rows);
    if (err) {
        db_fail(req, res, err, "passkey sign-in");
        return;
    }
    if (!rows.nrows) {
        login_refused(req, res, NULL, "unknown credential");
        return;
    }
    const char *pk_id = kiln_db_text(&rows, 0, 0).p, *user = kiln_db_text(&rows, 0, 1).p;
    /* A user handle, when sent, must be this credential's user's. */
    uint8_t handle[16];
    if (uh && uh_len && (uh_len != 16 || !uuid_bytes(user, handle) ||
                         memcmp(handle, uh, 16))) {
        login_refused(req, res, user, "user handle mismatch");
        return;
    }
    kiln_str keytext = kiln_db_text(&rows, 0, 2);
    uint8_t *spki = kiln_arena_alloc(req->arena, keytext.len + 1);
    size_t spki_len = 0;
    int64_t alg = 0, stored = 0;
    kiln_db_int64(&rows, 0, 3, &alg);
    kiln_db_int64(&rows, 0, 4, &stored);
    if (!kiln_base64url_decode(keytext.p, keytext.len, spki, keytext.len + 1, &spki_len)) {
        login_refused(req, res, user, "stored key unreadable");
        return;
    }
    struct kiln_webauthn_rp p = rp();
    uint32_t count = 0;
    bool uv = false;
    const char *why = NULL;
    err = kiln_webauthn_assert(&p, cd, cd_len, ad, ad_len, sig, sig_len, spki, spki_len, (int)alg,
                               (uint32_t)stored, challenge, true, &count, &uv, &why);
    if (err) {
        if (err == KILN_EINVAL)
            login_refused(req, res, user, why ? why : "refused");
        else
            kiln_res_fail(req, res, err, "WebAuthn", "passkey sign-in", why ? why : "");
        return;
    }
    /* The counter moves forward once: a concurrent use of a cloned
     * authenticator with the same count loses here. */
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    kiln_str q[4] = { kiln_str_c(pk_id), kiln_str_c(kiln_arena_sprintf(req->arena, "%u", count)),
                      kiln_str_c(kiln_arena_sprintf(req->arena, "%lld", (long long)stored)),
                      kiln_str_c(now) };
    struct kiln_db_rows moved;
    err = kiln_db_query(db, req->arena,
                        "UPDATE passkeys SET sign_count = $2, last_used_at = $4 WHERE id = $1 AND "
                        "sign_count = $3 RETURNING id",
                        q, 4, &moved);
    if (err) {
        db_fail(req, res, err, "passkey sign-in");
        return;
    }
    if (!moved.nrows) {
        login_refused(req, res, user, "counter raced");
        return;
    }
#define COL(i) (kiln_db_is_null(&rows, 0, i) ? NULL : kiln_db_text(&rows, 0, i).p)
    struct kiln_session_user u = { user, COL(5), COL(6), COL(7), COL(8), COL(9), "passkey", pk_id };
#undef COL
    if ((err = api_start_session(req, res, &u)) != 0) {
        kiln_res_fail(req, res, err, "Session store", "passkey sign-in",
                      kiln_kv_last_error(app_kv(req)));
        return;
    }
    api_signed_in(req, res, &u);
}

/* ---- the test page ------------------------------------------------------------------ */

/*
 * GET /_test/passkeys (KILN_ENV=test only): a page whose script runs both
 * ceremonies the way a front end would (the options from Kiln, the
 * browser's navigator.credentials, the credential back to Kiln with its
 * binary fields in base64url), for the browser test. It doubles as the
 * smallest example of a front end's side: docs/AUTHENTICATION.md points
 * here.
 */
static const char test_page[] =
    "<!doctype html><meta charset=utf-8><title>Kiln passkeys</title><script>\n"
    "const enc = (b) => btoa(String.fromCharCode(...new Uint8Array(b)))\n"
    "  .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');\n"
    "const dec = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')\n"
    "  + '==='.slice((s.length + 3) % 4)), (c) => c.charCodeAt(0));\n"
    "async function post(path, body) {\n"
    "  const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': "
    "'application/json' },\n"
    "    body: JSON.stringify(body || {}) });\n"
    "  return { status: r.status, body: await r.json().catch(() => null) };\n"
    "}\n"
    "async function kilnRegister(name) {\n"
    "  const o = await post('/api/v1/me/passkeys/options');\n"
    "  if (o.status !== 200) return o;\n"
    "  const p = o.body;\n"
    "  const cred = await navigator.credentials.create({ publicKey: { ...p,\n"
    "    challenge: dec(p.challenge), user: { ...p.user, id: dec(p.user.id) },\n"
    "    excludeCredentials: p.excludeCredentials.map((c) => ({ ...c, id: dec(c.id) })) } });\n"
    "  return post('/api/v1/me/passkeys', { id: cred.id, rawId: enc(cred.rawId), type: "
    "cred.type, name,\n"
    "    response: { clientDataJSON: enc(cred.response.clientDataJSON),\n"
    "      attestationObject: enc(cred.response.attestationObject) } });\n"
    "}\n"
    "async function kilnSignIn() {\n"
    "  const o = await post('/auth/passkey/options');\n"
    "  if (o.status !== 200) return o;\n"
    "  const p = o.body;\n"
    "  const cred = await navigator.credentials.get({ publicKey: { ...p,\n"
    "    challenge: dec(p.challenge), allowCredentials: [] } });\n"
    "  const r = cred.response;\n"
    "  return post('/auth/passkey/login', { id: cred.id, rawId: enc(cred.rawId), type: "
    "cred.type,\n"
    "    response: { clientDataJSON: enc(r.clientDataJSON), authenticatorData: "
    "enc(r.authenticatorData),\n"
    "      signature: enc(r.signature), userHandle: r.userHandle ? enc(r.userHandle) : null } "
    "});\n"
    "}\n"
    "</script><p>Kiln passkeys test page</p>\n";

void api_test_passkeys_page(struct kiln_req *req, struct kiln_res *res)
{
    if (req->config->env != KILN_ENV_TEST) {
        kiln_res_error(req, res, 404, "not_found", "Not found", NULL);
        return;
    }
    res->status = 200;
    res->content_type = KILN_STR("text/html; charset=utf-8");
    res->body = (kiln_str){ test_page, sizeof test_page - 1 };
    kiln_res_header(res, "content-security-policy",
                    "default-src 'none'; script-src 'unsafe-inline'; connect-src 'self'; "
                    "frame-ancestors 'none'");
    kiln_res_header(res, "cache-control", "no-store");
}
