/*
 * The second factor: TOTP (RFC 6238) with recovery codes, and the second
 * step of a sign-in (docs/AUTHENTICATION.md, "Second factor").
 *
 * Enrolment: POST /api/v1/me/totp makes a secret (answered once, with its
 * otpauth:// URI and a QR code as SVG); POST /api/v1/me/totp/confirm with
 * a code from the app turns it on and answers ten recovery codes, once;
 * POST /api/v1/me/totp/disable with a fresh code (or a recovery code)
 * turns it off. GET /api/v1/me/totp says whether it is on.
 *
 * Sign-in: a password or email-code sign-in of a user with a confirmed
 * factor does not start a session. It answers 202 {"status":
 * "mfa_required", "mfa_token"} (also set as the HttpOnly `_kiln_mfa`
 * cookie for browsers): five minutes in the kv store, five tries. POST
 * /auth/mfa {mfa_token?, code | recovery_code} then starts the session.
 * So nothing but that route accepts the first factor alone.
 *
 * The secret is stored sealed (AES-256-GCM, a key derived from
 * SECRET_KEY_BASE; the previous key opens too during a rotation, and a
 * secret opened with it is sealed again with the current one at its next
 * use). A code is used once: the step it matched is stored, atomically
 * with the use, and no step at or before it is accepted again.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/session.h"
#include "auth/totp.h"
#include "core/base64.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"
#include "http/cookie.h"

#define MFA_COOKIE "_kiln_mfa"
#define MFA_TTL_S 300
#define MFA_TRIES 5
#define TOTP_WINDOW 1
#define SEAL_PREFIX "v1."

static unsigned char seal_key[2][32]; /* current, previous */
static bool have_previous;

static void derive(const char *secret, size_t len, unsigned char out[32])
{
    static const char label[] = "kiln totp secret v1";
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)len, (const unsigned char *)label, sizeof label - 1, out, &n);
}

void kiln_factors_init(const struct kiln_config *cfg)
{
    derive(cfg->secret_key_base, cfg->secret_key_base_len, seal_key[0]);
    have_previous = cfg->secret_key_base_previous != NULL;
    if (have_previous)
        derive(cfg->secret_key_base_previous, cfg->secret_key_base_previous_len, seal_key[1]);
}

/* ---- sealing ----------------------------------------------------------------- */

/* "v1." + base64url(nonce 12 | ciphertext | tag 16), in the arena. */
static const char *seal(kiln_arena *a, const char *plain)
{
    unsigned char buf[12 + 64 + 16];
    size_t len = strlen(plain);
    if (len > 64 || kiln_random_bytes(buf, 12))
        return NULL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0;
    bool ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, seal_key[0], buf) == 1 &&
              EVP_EncryptUpdate(c, buf + 12, &n, (const unsigned char *)plain, (int)len) == 1 &&
              EVP_EncryptFinal_ex(c, buf + 12 + n, &m) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, buf + 12 + n + m) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return NULL;
    size_t total = 12 + (size_t)(n + m) + 16;
    char *out = kiln_arena_alloc(a, 3 + kiln_base64url_len(total) + 1);
    memcpy(out, SEAL_PREFIX, 3);
    kiln_base64url_encode(buf, total, out + 3);
    return out;
}

static bool open_with(const unsigned char key[32], const unsigned char *buf, size_t total,
                      char *out, size_t cap)
{
    size_t clen = total - 12 - 16;
    if (clen + 1 > cap)
        return false;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0;
    bool ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, buf) == 1 &&
              EVP_DecryptUpdate(c, (unsigned char *)out, &n, buf + 12, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(buf + 12 + clen)) == 1 &&
              EVP_DecryptFinal_ex(c, (unsigned char *)out + n, &m) == 1;
    EVP_CIPHER_CTX_free(c);
    if (ok)
        out[n + m] = '\0';
    return ok;
}

/* The base32 secret of a sealed one into out; *old: opened with the
 * previous key (seal it again). false when it opens with neither. */
static bool unseal(const char *sealed, char *out, size_t cap, bool *old)
{
    unsigned char buf[12 + 64 + 16];
    size_t total = 0;
    *old = false;
    if (strncmp(sealed, SEAL_PREFIX, 3) ||
        !kiln_base64url_decode(sealed + 3, strlen(sealed + 3), buf, sizeof buf, &total) ||
        total < 12 + 16 + 1)
        return false;
    if (open_with(seal_key[0], buf, total, out, cap))
        return true;
    if (have_previous && open_with(seal_key[1], buf, total, out, cap)) {
        *old = true;
        return true;
    }
    return false;
}

/* ---- the factor --------------------------------------------------------------- */

struct factor {
    bool found, confirmed;
    char secret[KILN_TOTP_SECRET_B32_LEN + 1];
    bool sealed_old;
    int64_t last_step;
};

static int load_factor(struct kiln_db *db, kiln_arena *a, const char *user, struct factor *f)
{
    memset(f, 0, sizeof *f);
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(user);
    int err = kiln_db_query(db, a,
                            "SELECT secret, confirmed_at IS NOT NULL, last_step FROM "
                            "totp_factors WHERE user_id = $1",
                            &id, 1, &rows);
    if (err || !rows.nrows)
        return err;
    const char *c = kiln_db_text(&rows, 0, 1).p;
    f->found = unseal(kiln_db_text(&rows, 0, 0).p, f->secret, sizeof f->secret, &f->sealed_old);
    if (!f->found)
        kiln_log(KILN_LOG_ERROR, "a TOTP secret does not open with SECRET_KEY_BASE (or its "
                                 "previous value)",
                 "user_id", user, NULL);
    f->confirmed = c[0] == 't' || c[0] == '1';
    kiln_db_int64(&rows, 0, 2, &f->last_step);
    return 0;
}

/*
 * Check a TOTP code (or, with recovery, a recovery code) of user and use
 * it: the step stored, or the recovery code marked, in one statement that
 * a concurrent use of the same code loses. *ok.
 */
static int use_code(struct kiln_db *db, kiln_arena *a, const char *user, const struct factor *f,
                    const char *code, bool recovery, bool *ok)
{
    *ok = false;
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    struct kiln_db_rows rows;
    if (recovery) {
        char hash[65];
        if (!kiln_totp_recovery_hash(code, hash))
            return 0;
        kiln_str p[3] = { kiln_str_c(user), kiln_str_c(hash), kiln_str_c(now) };
        int err = kiln_db_query(db, a,
                                "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND "
                                "code_hash = $2 AND used_at IS NULL RETURNING code_hash",
                                p, 3, &rows);
        *ok = !err && rows.nrows == 1;
        return err;
    }
    int64_t step = kiln_totp_verify(f->secret, code, (int64_t)time(NULL), TOTP_WINDOW,
                                    f->last_step);
    if (step < 0)
        return 0;
    kiln_str p[2] = { kiln_str_c(user),
                      kiln_str_c(kiln_arena_sprintf(a, "%lld", (long long)step)) };
    int err = kiln_db_query(db, a,
                            "UPDATE totp_factors SET last_step = $2 WHERE user_id = $1 AND "
                            "last_step < $2 RETURNING user_id",
                            p, 2, &rows);
    *ok = !err && rows.nrows == 1;
    if (*ok && f->sealed_old) {
        const char *again = seal(a, f->secret);
        kiln_str q[2] = { kiln_str_c(user), kiln_str_c(again ? again : "") };
        if (again)
            kiln_db_query(db, a, "UPDATE totp_factors SET secret = $2 WHERE user_id = $1", q, 2,
                          NULL);
    }
    return err;
}

static void db_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *what)
{
    kiln_res_fail(req, res, err, "Database", what, kiln_db_last_error(app_db(req)));
}

/* The code of a body: "code" (TOTP) or "recovery_code"; NULL after a 422. */
static const char *body_code(struct kiln_req *req, struct kiln_res *res, json_t *in,
                             bool allow_recovery, bool *recovery)
{
    json_t *c = json_object_get(in, "code"), *r = json_object_get(in, "recovery_code");
    *recovery = false;
    if (json_is_string(c))
        return kiln_arena_strndup(req->arena, json_string_value(c), json_string_length(c));
    if (allow_recovery && json_is_string(r)) {
        *recovery = true;
        return kiln_arena_strndup(req->arena, json_string_value(r), json_string_length(r));
    }
    struct res_errors errs = { NULL };
    res_error(&errs, "code", c ? "is invalid" : "can't be blank");
    res_errors_answer(req, res, &errs);
    return NULL;
}

/* ---- routes: enrolment ---------------------------------------------------------- */

void api_totp_show(struct kiln_req *req, struct kiln_res *res)
{
    const char *user = res_user_id(req);
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(user);
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT f.confirmed_at, (SELECT count(*) FROM recovery_codes r WHERE "
                            "r.user_id = $1 AND r.used_at IS NULL) FROM totp_factors f WHERE "
                            "f.user_id = $1",
                            &id, 1, &rows);
    if (err) {
        db_fail(req, res, err, "TOTP");
        return;
    }
    bool on = rows.nrows && !kiln_db_is_null(&rows, 0, 0);
    int64_t left = 0;
    if (on)
        kiln_db_int64(&rows, 0, 1, &left);
    kiln_res_json(req, res, 200,
                  json_pack("{s:b, s:I}", "enabled", on, "recovery_codes_left", (json_int_t)left));
}

void api_totp_enrol(struct kiln_req *req, struct kiln_res *res)
{
    const char *user = res_user_id(req);
    const struct kiln_session *s = kiln_req_session(req);
    struct kiln_db *db = app_db(req);
    struct factor f;
    int err = load_factor(db, req->arena, user, &f);
    if (err) {
        db_fail(req, res, err, "TOTP enrolment");
        return;
    }
    if (f.found && f.confirmed) {
        kiln_res_error(req, res, 409, "totp_enabled",
                       "TOTP is already on: turn it off first to enrol another device", NULL);
        return;
    }
    char secret[KILN_TOTP_SECRET_B32_LEN + 1], now[KILN_RFC3339_LEN + 1];
    if (kiln_totp_new_secret(secret)) {
        kiln_res_fail(req, res, KILN_EIO, "Randomness", "TOTP enrolment", "no random bytes");
        return;
    }
    const char *sealed = seal(req->arena, secret);
    kiln_time_rfc3339_now(now);
    kiln_str p[3] = { kiln_str_c(user), kiln_str_c(sealed ? sealed : ""), kiln_str_c(now) };
    /* A pending enrolment is replaced: only the last QR code shown works. */
    err = sealed ? kiln_db_query(db, req->arena,
                                 "INSERT INTO totp_factors (user_id, secret, inserted_at) VALUES "
                                 "($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET secret = "
                                 "excluded.secret, inserted_at = excluded.inserted_at, last_step "
                                 "= -1 WHERE totp_factors.confirmed_at IS NULL",
                                 p, 3, NULL)
                 : KILN_EIO;
    if (err) {
        db_fail(req, res, err, "TOTP enrolment");
        return;
    }
    /* The account name in the app: the address, or the user id. */
    const char *account = user;
    json_t *u = json_loadb(s->user_json.p, s->user_json.len, 0, NULL);
    const char *email = json_string_value(json_object_get(u, "email"));
    if (email)
        account = kiln_arena_strndup(req->arena, email, strlen(email));
    json_decref(u);
    const char *issuer = req->config->totp_issuer;
    const char *uri = kiln_totp_uri(req->arena, issuer, account, secret);
    const char *svg = kiln_totp_qr_svg(req->arena, uri);
    kiln_audit_record(req, user, "totp_enrolment_started", NULL);
    kiln_res_header(res, "cache-control", "no-store");
    kiln_res_json(req, res, 201,
                  json_pack("{s:s, s:s, s:s?}", "secret", secret, "otpauth_uri", uri, "qr_svg",
                            svg));
    OPENSSL_cleanse(secret, sizeof secret);
}

void api_totp_confirm(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    bool recovery;
    const char *code = body_code(req, res, in, false, &recovery);
    json_decref(in);
    if (!code)
        return;
    const char *user = res_user_id(req);
    struct kiln_db *db = app_db(req);
    struct factor f;
    int err = load_factor(db, req->arena, user, &f);
    if (err) {
        db_fail(req, res, err, "TOTP confirmation");
        return;
    }
    if (!f.found || f.confirmed) {
        kiln_res_error(req, res, 409, f.confirmed ? "totp_enabled" : "totp_not_enrolled",
                       f.confirmed ? "TOTP is already on" : "Enrol first (POST /api/v1/me/totp)",
                       NULL);
        return;
    }
    bool ok = false;
    if ((err = use_code(db, req->arena, user, &f, code, false, &ok))) {
        db_fail(req, res, err, "TOTP confirmation");
        return;
    }
    if (!ok) {
        kiln_res_error(req, res, 422, "invalid_code",
                       "The code does not match: check the device's clock and try the next one",
                       NULL);
        return;
    }
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    json_t *codes = json_array();
    kiln_str id = kiln_str_c(user);
    err = kiln_db_begin_write(db);
    if (!err)
        err = kiln_db_query(db, req->arena, "DELETE FROM recovery_codes WHERE user_id = $1", &id,
                            1, NULL);
    for (int i = 0; !err && i < KILN_TOTP_RECOVERY_CODES; i++) {
        char c[KILN_TOTP_RECOVERY_LEN + 1], h[65];
        if (kiln_totp_recovery_code(c) || !kiln_totp_recovery_hash(c, h)) {
            err = KILN_EIO;
            break;
        }
        kiln_str p[2] = { id, kiln_str_c(h) };
        err = kiln_db_query(db, req->arena,
                            "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)", p, 2,
                            NULL);
        json_array_append_new(codes, json_string(c));
        OPENSSL_cleanse(c, sizeof c);
    }
    if (!err) {
        kiln_str p[2] = { id, kiln_str_c(now) };
        err = kiln_db_query(db, req->arena,
                            "UPDATE totp_factors SET confirmed_at = $2 WHERE user_id = $1", p, 2,
                            NULL);
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        json_decref(codes);
        db_fail(req, res, err, "TOTP confirmation");
        return;
    }
    kiln_audit_record(req, user, "totp_enabled", NULL);
    kiln_res_header(res, "cache-control", "no-store");
    kiln_res_json(req, res, 200,
                  json_pack("{s:b, s:o}", "enabled", 1, "recovery_codes", codes));
}

void api_totp_disable(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    bool recovery;
    const char *code = body_code(req, res, in, true, &recovery);
    json_decref(in);
    if (!code)
        return;
    const char *user = res_user_id(req);
    struct kiln_db *db = app_db(req);
    struct factor f;
    int err = load_factor(db, req->arena, user, &f);
    if (err) {
        db_fail(req, res, err, "TOTP");
        return;
    }
    if (!f.found || !f.confirmed) {
        kiln_res_error(req, res, 409, "totp_not_enabled", "TOTP is not on", NULL);
        return;
    }
    bool ok = false;
    if ((err = use_code(db, req->arena, user, &f, code, recovery, &ok))) {
        db_fail(req, res, err, "TOTP");
        return;
    }
    if (!ok) {
        kiln_audit_record(req, user, "mfa_failed", "turning TOTP off");
        kiln_res_error(req, res, 403, "invalid_code", "The code does not match", NULL);
        return;
    }
    kiln_str id = kiln_str_c(user);
    err = kiln_db_begin_write(db);
    if (!err)
        err = kiln_db_query(db, req->arena, "DELETE FROM recovery_codes WHERE user_id = $1", &id,
                            1, NULL);
    if (!err)
        err = kiln_db_query(db, req->arena, "DELETE FROM totp_factors WHERE user_id = $1", &id, 1,
                            NULL);
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        db_fail(req, res, err, "TOTP");
        return;
    }
    kiln_audit_record(req, user, "totp_disabled", recovery ? "with a recovery code" : NULL);
    kiln_res_json(req, res, 200, json_pack("{s:b}", "enabled", 0));
}

/* ---- the second step ---------------------------------------------------------------- */

static const char *pending_key(kiln_arena *a, const char *token, const char *what)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    char hex[65];
    SHA256((const unsigned char *)token, strlen(token), d);
    kiln_hex_encode(d, sizeof d, hex);
    return kiln_arena_sprintf(a, "mfa_%s:%.32s", what, hex);
}

int api_mfa_required(struct kiln_req *req, struct kiln_res *res, const char *user,
                     const char *method, const char *provider_uid)
{
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(user);
    int err = kiln_db_query(app_db(req), req->arena,
                            "SELECT 1 FROM totp_factors WHERE user_id = $1 AND confirmed_at IS "
                            "NOT NULL",
                            &id, 1, &rows);
    if (err) {
        db_fail(req, res, err, "second factor");
        return 1;
    }
    if (!rows.nrows)
        return 0;
    unsigned char raw[32];
    char token[44];
    if (kiln_random_bytes(raw, sizeof raw)) {
        kiln_res_fail(req, res, KILN_EIO, "Randomness", "second factor", "no random bytes");
        return 1;
    }
    kiln_base64url_encode(raw, sizeof raw, token);
    json_t *p = json_pack("{s:s, s:s, s:s}", "user_id", user, "method", method, "provider_uid",
                          provider_uid);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    err = kiln_kv_set(app_kv(req), kiln_str_c(pending_key(req->arena, token, "pending")),
                      kiln_str_c(text), MFA_TTL_S * 1000ull);
    free(text);
    if (err) {
        kiln_res_fail(req, res, err, "Session store", "second factor",
                      kiln_kv_last_error(app_kv(req)));
        return 1;
    }
    struct kiln_cookie_attrs at = { "/auth", MFA_TTL_S, true, req->config->cookie_secure, "Lax" };
    kiln_res_header(res, "set-cookie",
                    kiln_cookie_build(req->arena, MFA_COOKIE, kiln_str_c(token), &at));
    kiln_res_header(res, "cache-control", "no-store");
    kiln_res_json(req, res, 202,
                  json_pack("{s:s, s:[s, s], s:s, s:i}", "status", "mfa_required", "methods",
                            "totp", "recovery_code", "mfa_token", token, "expires_in", MFA_TTL_S));
    return 1;
}

/* POST /auth/mfa {mfa_token?, code | recovery_code}: the session. */
void api_mfa_verify(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    bool recovery;
    const char *code = body_code(req, res, in, true, &recovery);
    const char *token = json_string_value(json_object_get(in, "mfa_token"));
    if (token)
        token = kiln_arena_strndup(req->arena, token, strlen(token));
    json_decref(in);
    if (!code)
        return;
    if (!token) {
        kiln_str c;
        if (kiln_cookie_get(req, MFA_COOKIE, &c))
            token = kiln_arena_strndup(req->arena, c.p, c.len);
    }
    struct kiln_kv *kv = app_kv(req);
    kiln_str pending = { NULL, 0 };
    int err = token ? kiln_kv_get(kv, req->arena,
                                  kiln_str_c(pending_key(req->arena, token, "pending")), &pending)
                    : KILN_ENOTFOUND;
    if (err && err != KILN_ENOTFOUND) {
        kiln_res_fail(req, res, err, "Session store", "second factor", kiln_kv_last_error(kv));
        return;
    }
    json_t *p = err ? NULL : json_loadb(pending.p, pending.len, 0, NULL);
    const char *user = json_string_value(json_object_get(p, "user_id"));
    if (!user) {
        json_decref(p);
        kiln_res_error(req, res, 401, "mfa_expired",
                       "The sign-in waiting for its second step is unknown or expired: sign in "
                       "again",
                       NULL);
        return;
    }
    user = kiln_arena_strndup(req->arena, user, strlen(user));
    const char *method = kiln_arena_strndup(req->arena,
                                            json_string_value(json_object_get(p, "method")),
                                            strlen(json_string_value(json_object_get(p, "method"))));
    const char *puid = json_string_value(json_object_get(p, "provider_uid"));
    puid = puid ? kiln_arena_strndup(req->arena, puid, strlen(puid)) : NULL;
    json_decref(p);
    int64_t tries = 0;
    if (kiln_kv_incr(kv, kiln_str_c(pending_key(req->arena, token, "tries")),
                     MFA_TTL_S * 1000ull, &tries, NULL) == 0 &&
        tries > MFA_TRIES) {
        bool gone;
        kiln_kv_del(kv, kiln_str_c(pending_key(req->arena, token, "pending")), &gone);
        kiln_res_error(req, res, 401, "mfa_expired",
                       "Too many wrong codes: sign in again", NULL);
        return;
    }
    struct kiln_db *db = app_db(req);
    struct factor f;
    bool ok = false;
    err = load_factor(db, req->arena, user, &f);
    if (!err && f.found && f.confirmed)
        err = use_code(db, req->arena, user, &f, code, recovery, &ok);
    if (err) {
        db_fail(req, res, err, "second factor");
        return;
    }
    if (!ok) {
        kiln_audit_record(req, user, "mfa_failed", recovery ? "recovery code" : "totp");
        kiln_res_error(req, res, 401, "invalid_code", "The code does not match", NULL);
        return;
    }
    /* One use of the first step: whoever holds the token now has nothing. */
    bool taken = false;
    if ((err = kiln_kv_del(kv, kiln_str_c(pending_key(req->arena, token, "pending")), &taken))) {
        kiln_res_fail(req, res, err, "Session store", "second factor", kiln_kv_last_error(kv));
        return;
    }
    if (!taken) {
        kiln_res_error(req, res, 401, "mfa_expired",
                       "The sign-in waiting for its second step is unknown or expired: sign in "
                       "again",
                       NULL);
        return;
    }
    if (recovery)
        kiln_audit_record(req, user, "recovery_code_used", NULL);
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(user);
    err = kiln_db_query(db, req->arena,
                        "SELECT email, name, first_name, last_name, image FROM users WHERE id = $1",
                        &id, 1, &rows);
    if (err || !rows.nrows) {
        db_fail(req, res, err ? err : KILN_EDB, "second factor");
        return;
    }
#define COL(i) (kiln_db_is_null(&rows, 0, i) ? NULL : kiln_db_text(&rows, 0, i).p)
    struct kiln_session_user u = { user, COL(0), COL(1), COL(2), COL(3), COL(4), method, puid };
#undef COL
    if ((err = api_start_session(req, res, &u)) != 0) {
        kiln_res_fail(req, res, err, "Session store", "second factor", kiln_kv_last_error(kv));
        return;
    }
    struct kiln_cookie_attrs at = { "/auth", 0, true, req->config->cookie_secure, "Lax" };
    kiln_res_header(res, "set-cookie", kiln_cookie_build(req->arena, MFA_COOKIE, KILN_STR(""), &at));
    api_signed_in(req, res, &u);
}
