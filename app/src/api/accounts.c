/*
 * Email and password accounts (docs/AUTHENTICATION.md, "Email and
 * password"): sign-up, the verification link, sign-in with throttling,
 * and a password change. Every way in ends in the same session and the
 * same user id as OIDC (api_start_session).
 *
 * No account enumeration. Sign-up answers 202 whatever the address: a new
 * one gets an account and a verification link; one with an unverified
 * account gets a new link (and the password just given: nobody has shown
 * they own the address yet); a verified one gets nothing changed and its
 * owner a mail saying someone tried. Each path hashes the password once
 * and enqueues one mail, so they take the same time. Sign-in with an
 * unknown address checks the password against a hash nobody knows the
 * password of (auth/password.h), so unknown address and wrong password
 * answer the same 401 in the same time.
 *
 * The secrets mailed (a link's token) never reach the database in clear:
 * the request stores a token row without one, and the mail job makes the
 * secret when it sends, keeping only its SHA-256. A retried mail makes a
 * new one, which voids the last.
 *
 * Hashing blocks for tens of milliseconds: these routes run on the worker
 * pool (KILN_ROUTE_BLOCKING), never on a loop.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "auth/password.h"
#include "auth/session.h"
#include "core/base64.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"
#include "core/uuid.h"
#include "jobs/jobs.h"
#include "mail/mail.h"

#define MAIL_KIND "accounts.mail"
#define VERIFY_TTL_S (24 * 3600)
#define RESET_TTL_S 3600
#define CODE_TTL_S 600
#define CODE_TRIES 5
/* Codes one address may be sent per hour: with CODE_TRIES each, 25
 * guesses an hour of a million codes. */
#define CODE_SENDS_PER_HOUR 5

/* Sign-in throttling (docs/AUTHENTICATION.md, "Brute force"). Failures
 * are counted in the kv store over THROTTLE_WINDOW_S; past a threshold
 * each further failure makes the next attempt wait, doubling up to a cap:
 *   - one address from one IP: from the 5th failure, up to 15 minutes;
 *   - one IP, any address (credential stuffing): from the 50th;
 *   - one address from anywhere (many IPs): from the 20th, capped at 30 s,
 *     so that nobody can lock an owner out: at worst they wait 30 s. */
#define THROTTLE_WINDOW_S 900
struct throttle {
    const char *prefix;
    unsigned after, cap_s;
};
static const struct throttle PAIR = { "login_fail:pair:", 5, 900 };
static const struct throttle IP = { "login_fail:ip:", 50, 900 };
static const struct throttle ACCOUNT = { "login_fail:acct:", 20, 30 };

/* ---- small helpers ---------------------------------------------------------- */

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(data, len, d);
    kiln_hex_encode(d, sizeof d, out);
}

/* A sign-in code is six digits: unkeyed, its hash would fall to a million
 * guesses by anyone holding a copy of the table. So codes are kept as
 * HMAC-SHA256 under a key derived from SECRET_KEY_BASE (its rotation
 * voids the codes of the last ten minutes: they ask for a new one). */
static unsigned char code_key[32];

static void code_hash(const char *token_id, const char *code, char out[65])
{
    unsigned char mac[32];
    unsigned int n = 0;
    char msg[96];
    int len = snprintf(msg, sizeof msg, "%s:%s", token_id, code);
    HMAC(EVP_sha256(), code_key, sizeof code_key, (const unsigned char *)msg, (size_t)len, mac,
         &n);
    kiln_hex_encode(mac, sizeof mac, out);
}

/* The address as stored and looked up: trimmed, lowercased (addresses are
 * case-insensitive in practice, and an account must not exist twice). NULL
 * when it is not one Kiln would mail. */
static const char *norm_email(kiln_arena *a, const char *in)
{
    while (*in == ' ' || *in == '\t')
        in++;
    size_t len = strlen(in);
    while (len && (in[len - 1] == ' ' || in[len - 1] == '\t'))
        len--;
    char *e = kiln_arena_strndup(a, in, len);
    for (char *p = e; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return kiln_mail_address_ok(e, len) ? e : NULL;
}

static const char *later(kiln_arena *a, unsigned seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    char *out = kiln_arena_alloc(a, KILN_RFC3339_LEN + 1);
    kiln_time_rfc3339(out, &ts);
    return out;
}

static const char *now_text(kiln_arena *a)
{
    return later(a, 0);
}

static void db_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *what)
{
    kiln_res_fail(req, res, err, "Database", what, kiln_db_last_error(app_db(req)));
}

/* ---- mail --------------------------------------------------------------------- */

/* A token row for purpose ("verify", "reset") and its mail job, in the
 * caller's transaction. */
static int mail_token(struct kiln_db *db, kiln_arena *a, const char *purpose,
                      const char *user_id, const char *email, unsigned ttl_s)
{
    char id[KILN_UUID_LEN + 1];
    kiln_uuid_v4(id);
    kiln_str p[6] = { kiln_str_c(id), kiln_str_c(purpose),
                      user_id ? kiln_str_c(user_id) : KILN_STR_NULL,
                      kiln_str_c(email), kiln_str_c(later(a, ttl_s)), kiln_str_c(now_text(a)) };
    int err = kiln_db_query(db, a,
                            "INSERT INTO account_tokens (id, purpose, user_id, email, expires_at, "
                            "inserted_at, secret_hash) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
                            p, 6, NULL);
    if (err)
        return err;
    char *args = kiln_arena_sprintf(a, "{\"mail\":\"%s\",\"token\":\"%s\"}", purpose, id);
    return kiln_job_enqueue(db, a, MAIL_KIND, args, NULL, NULL);
}

/* A notice without a secret: "taken" (someone tried to sign up again with
 * the address), "no_account" (a code asked for an address without one). */
static int mail_notice(struct kiln_db *db, kiln_arena *a, const char *kind, const char *email)
{
    json_t *o = json_pack("{s:s, s:s}", "mail", kind, "to", email);
    char *args = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    int err = kiln_job_enqueue(db, a, MAIL_KIND, args, NULL, NULL);
    free(args);
    return err;
}

static const char *link_to(kiln_arena *a, const char *base, const char *token)
{
    return kiln_arena_sprintf(a, "%s%stoken=%s", base, strchr(base, '?') ? "&" : "?", token);
}

static const struct kiln_config *CFG;

/* The job: render and send one mail. For a link, make its secret now and
 * keep only the hash (see the top of the file). */
static enum kiln_job_result run_mail(struct kiln_job_run *job)
{
    kiln_arena *a = job->arena;
    json_t *args = json_loads(job->args, 0, NULL);
    const char *kind = json_string_value(json_object_get(args, "mail"));
    const char *token_id = json_string_value(json_object_get(args, "token"));
    const char *to = json_string_value(json_object_get(args, "to"));
    struct kiln_mail m = { 0 };
    enum kiln_job_result result = KILN_JOB_OK;
    if (!kind) {
        snprintf(job->error, sizeof job->error, "bad args");
        result = KILN_JOB_DEAD;
        goto out;
    }
    if (!strcmp(kind, "taken") && to) {
        m.to = kiln_arena_strndup(a, to, strlen(to));
        m.subject = "Someone tried to sign up with your address";
        m.text = kiln_arena_sprintf(
            a,
            "Someone (perhaps you) tried to create an account with this address,\n"
            "which already has one. Nothing was changed.\n\n"
            "If it was you, sign in instead; if you forgot your password, ask for a\n"
            "reset on the sign-in page.\n\n"
            "If it was not you, you can ignore this message.\n");
    } else if ((!strcmp(kind, "verify") || !strcmp(kind, "reset")) && token_id) {
        kiln_str id = kiln_str_c(token_id);
        struct kiln_db_rows rows;
        int err = kiln_db_query(job->db, a,
                                "SELECT email FROM account_tokens WHERE id = $1 AND "
                                "used_at IS NULL",
                                &id, 1, &rows);
        if (err) {
            snprintf(job->error, sizeof job->error, "database: %s",
                     kiln_db_last_error(job->db));
            result = KILN_JOB_RETRY;
            goto out;
        }
        if (!rows.nrows)
            goto out; /* used meanwhile, or the user is gone: nothing to send */
        m.to = kiln_db_text(&rows, 0, 0).p;
        unsigned char raw[32];
        char secret[44], hash[65];
        if (kiln_random_bytes(raw, sizeof raw)) {
            result = KILN_JOB_RETRY;
            goto out;
        }
        kiln_base64url_encode(raw, sizeof raw, secret);
        sha256_hex(secret, strlen(secret), hash);
        kiln_str p[2] = { kiln_str_c(hash), id };
        err = kiln_db_query(job->db, a,
                            "UPDATE account_tokens SET secret_hash = $1 WHERE id = $2 AND "
                            "used_at IS NULL",
                            p, 2, NULL);
        if (err) {
            snprintf(job->error, sizeof job->error, "database: %s",
                     kiln_db_last_error(job->db));
            result = KILN_JOB_RETRY;
            goto out;
        }
        m.secret = kiln_arena_strndup(a, secret, strlen(secret));
        bool verify = !strcmp(kind, "verify");
        const char *link = link_to(a, verify ? CFG->auth_verify_url : CFG->auth_reset_url,
                                   m.secret);
        m.subject = verify ? "Confirm your email address" : "Reset your password";
        m.text = verify ? kiln_arena_sprintf(a,
                                             "Confirm that this address is yours by opening:\n\n"
                                             "%s\n\nThe link works once, for 24 hours.\n\n"
                                             "If you did not sign up, ignore this message.\n",
                                             link)
                        : kiln_arena_sprintf(a,
                                             "Choose a new password by opening:\n\n%s\n\n"
                                             "The link works once, for an hour. Every session "
                                             "of your account ends when you set it.\n\n"
                                             "If you did not ask for this, ignore this "
                                             "message: your password is unchanged.\n",
                                             link);
    } else if (!strcmp(kind, "code") && token_id) {
        kiln_str id = kiln_str_c(token_id);
        struct kiln_db_rows rows;
        int err = kiln_db_query(job->db, a,
                                "SELECT email FROM account_tokens WHERE id = $1 AND "
                                "used_at IS NULL",
                                &id, 1, &rows);
        if (err) {
            snprintf(job->error, sizeof job->error, "database: %s",
                     kiln_db_last_error(job->db));
            result = KILN_JOB_RETRY;
            goto out;
        }
        if (!rows.nrows)
            goto out;
        m.to = kiln_db_text(&rows, 0, 0).p;
        /* Six digits, uniform: rejection below the largest multiple of a
         * million that fits. */
        uint32_t r;
        do {
            if (kiln_random_bytes(&r, sizeof r)) {
                result = KILN_JOB_RETRY;
                goto out;
            }
        } while (r >= 4294000000u);
        char code[8], hash[65];
        snprintf(code, sizeof code, "%06u", r % 1000000u);
        code_hash(token_id, code, hash);
        kiln_str p[2] = { kiln_str_c(hash), id };
        err = kiln_db_query(job->db, a,
                            "UPDATE account_tokens SET secret_hash = $1, tries = 0 WHERE id = $2 "
                            "AND used_at IS NULL",
                            p, 2, NULL);
        if (err) {
            snprintf(job->error, sizeof job->error, "database: %s",
                     kiln_db_last_error(job->db));
            result = KILN_JOB_RETRY;
            goto out;
        }
        m.secret = kiln_arena_strndup(a, code, 6);
        m.subject = "Your sign-in code";
        m.text = kiln_arena_sprintf(a,
                                    "Your sign-in code is %s\n\nIt works once, for 10 minutes.\n\n"
                                    "If you did not ask for it, ignore this message: nobody can "
                                    "sign in without it.\n",
                                    m.secret);
    } else if (!strcmp(kind, "reset_no_account") && to) {
        m.to = kiln_arena_strndup(a, to, strlen(to));
        m.subject = "Password reset attempt";
        m.text = kiln_arena_sprintf(a,
                                    "Someone (perhaps you) asked to reset the password of this "
                                    "address,\nwhich has no account here. Nothing was changed.\n\n"
                                    "If it was not you, you can ignore this message.\n");
    } else if (!strcmp(kind, "no_account") && to) {
        m.to = kiln_arena_strndup(a, to, strlen(to));
        m.subject = "Sign-in attempt";
        m.text = kiln_arena_sprintf(a,
                                    "Someone (perhaps you) asked for a sign-in code for this "
                                    "address,\nwhich has no account here. No code was made.\n\n"
                                    "If it was not you, you can ignore this message.\n");
    } else {
        snprintf(job->error, sizeof job->error, "bad args");
        result = KILN_JOB_DEAD;
        goto out;
    }
    char why[256];
    int err = kiln_mail_send(a, &m, why, sizeof why);
    if (err) {
        snprintf(job->error, sizeof job->error, "%s", why);
        result = err == KILN_EINVAL ? KILN_JOB_DEAD : KILN_JOB_RETRY;
    }
out:
    json_decref(args);
    return result;
}

void kiln_accounts_init(const struct kiln_config *cfg)
{
    CFG = cfg;
    unsigned int n = 0;
    static const char label[] = "kiln account code v1";
    HMAC(EVP_sha256(), cfg->secret_key_base, (int)cfg->secret_key_base_len,
         (const unsigned char *)label, sizeof label - 1, code_key, &n);
    kiln_password_init(cfg->password_min_length, cfg->password_hash_concurrency);
    kiln_factors_init(cfg);
    kiln_passkeys_init(cfg);
    kiln_mail_init(cfg);
    /* Mail retries for about a day (1 s doubling to an hour, 30 tries). */
    kiln_job_register(&(struct kiln_job_kind){ .name = MAIL_KIND, .run = run_mail,
                                               .max_attempts = 30 });
}

/* ---- input ------------------------------------------------------------------ */

static const char *throttle_key(kiln_arena *a, const struct throttle *t, const char *what,
                                bool wait);

/* The body's "email", normalised; NULL with the field's error added. */
static const char *body_email(struct kiln_req *req, json_t *in, struct res_errors *errs)
{
    const char *e = NULL, *email = NULL;
    if (!res_string(in, "email", false, 1, KILN_MAIL_ADDRESS_MAX, errs, &e) &&
        !json_object_get(in, "email"))
        res_error(errs, "email", "can't be blank");
    if (e && !(email = norm_email(req->arena, e)))
        res_error(errs, "email", "is invalid");
    return email;
}

/* Mails of one kind (prefix) to one address: at most CODE_SENDS_PER_HOUR
 * an hour. true after answering 429 (what names them in the message). A
 * kv store that cannot count refuses nothing. */
static bool too_many_sends(struct kiln_req *req, struct kiln_res *res, const char *prefix,
                           const char *email, const char *what)
{
    const struct throttle sends = { prefix, 0, 0 };
    int64_t n = 0;
    uint64_t left = 0;
    if (kiln_kv_incr(app_kv(req), kiln_str_c(throttle_key(req->arena, &sends, email, false)),
                     3600 * 1000ull, &n, &left) != 0 ||
        n <= CODE_SENDS_PER_HOUR)
        return false;
    kiln_res_header(res, "retry-after",
                    kiln_arena_sprintf(req->arena, "%llu", (unsigned long long)(left / 1000 + 1)));
    kiln_res_error(req, res, 429, "too_many_attempts",
                   kiln_arena_sprintf(req->arena,
                                      "Too many %s asked for this address: wait before asking "
                                      "again",
                                      what),
                   NULL);
    return true;
}

/* email and password from the body, checked; NULL after answering. */
static json_t *credentials(struct kiln_req *req, struct kiln_res *res, const char **email,
                           const char **password, size_t *password_len)
{
    if (kiln_guard_csrf(req, res) != 0)
        return NULL;
    json_t *in = res_body_object(req, res);
    if (!in)
        return NULL;
    struct res_errors errs = { NULL };
    json_t *pw = json_object_get(in, "password");
    *email = body_email(req, in, &errs);
    if (!pw)
        res_error(&errs, "password", "can't be blank");
    else if (!json_is_string(pw))
        res_error(&errs, "password", "is invalid");
    if (res_errors_answer(req, res, &errs)) {
        json_decref(in);
        return NULL;
    }
    *password = json_string_value(pw);
    *password_len = json_string_length(pw);
    return in;
}

static bool password_ok(struct kiln_req *req, struct kiln_res *res, const char *field,
                        const char *pw, size_t len, const char *email)
{
    enum kiln_password_problem p = kiln_password_check(pw, len, email);
    if (p == KILN_PASSWORD_OK)
        return true;
    struct res_errors errs = { NULL };
    const char *text = kiln_password_problem_text(p);
    if (p == KILN_PASSWORD_TOO_SHORT)
        text = kiln_arena_sprintf(req->arena, "should be at least %u character(s)",
                                  req->config->password_min_length);
    res_error(&errs, field, text);
    res_errors_answer(req, res, &errs);
    return false;
}

/* ---- sign-up ------------------------------------------------------------------ */

/* One attempt of the sign-up transaction; KILN_ECONFLICT when a
 * concurrent sign-up of the same address won the insert. */
static int register_tx(struct kiln_db *db, kiln_arena *a, const char *email, const char *name,
                       const char *hash, const char **outcome)
{
    int err = kiln_db_begin_write(db);
    if (err)
        return err;
    struct kiln_db_rows rows;
    kiln_str e = kiln_str_c(email);
    /* An account with this address: a password identity, or any user
     * whose address is verified (signed up another way). */
    err = kiln_db_query(db, a,
                        "SELECT u.id, u.email_verified_at IS NOT NULL, 1 FROM identities i "
                        "JOIN users u ON u.id = i.user_id WHERE i.provider = 'password' AND "
                        "i.subject = $1 UNION ALL SELECT id, true, 2 FROM users WHERE "
                        "lower(email) = $1 AND email_verified_at IS NOT NULL ORDER BY 3 LIMIT 1",
                        &e, 1, &rows);
    const char *now = now_text(a);
    /* PostgreSQL answers t or f, SQLite 1 or 0. */
    const char *verified = !err && rows.nrows ? kiln_db_text(&rows, 0, 1).p : "";
    if (!err && rows.nrows && (verified[0] == 't' || verified[0] == '1')) {
        *outcome = "taken";
        err = mail_notice(db, a, "taken", email);
    } else if (!err && rows.nrows) {
        /* Unverified: nobody has shown they own the address, so the latest
         * sign-up's password and name stand, and a new link goes out. */
        const char *uid = kiln_db_text(&rows, 0, 0).p;
        kiln_str p[3] = { kiln_str_c(uid), kiln_str_c(hash), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE passwords SET hash = $2, updated_at = $3 WHERE user_id = $1",
                            p, 3, NULL);
        if (!err && name) {
            kiln_str q[3] = { kiln_str_c(uid), kiln_str_c(name), kiln_str_c(now) };
            err = kiln_db_query(db, a, "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1",
                                q, 3, NULL);
        }
        if (!err)
            err = mail_token(db, a, "verify", uid, email, VERIFY_TTL_S);
        *outcome = "unverified";
    } else if (!err) {
        char uid[KILN_UUID_LEN + 1], iid[KILN_UUID_LEN + 1];
        kiln_uuid_v4(uid);
        kiln_uuid_v4(iid);
        kiln_str u[4] = { kiln_str_c(uid), e, name ? kiln_str_c(name) : KILN_STR_NULL,
                          kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "INSERT INTO users (id, email, name, inserted_at, updated_at) "
                            "VALUES ($1, $2, $3, $4, $4)",
                            u, 4, NULL);
        if (!err) {
            kiln_str i[4] = { kiln_str_c(iid), e, kiln_str_c(uid), kiln_str_c(now) };
            err = kiln_db_query(db, a,
                                "INSERT INTO identities (id, provider, subject, user_id, "
                                "inserted_at) VALUES ($1, 'password', $2, $3, $4)",
                                i, 4, NULL);
        }
        if (!err) {
            kiln_str p[3] = { kiln_str_c(uid), kiln_str_c(hash), kiln_str_c(now) };
            err = kiln_db_query(db, a,
                                "INSERT INTO passwords (user_id, hash, updated_at) VALUES "
                                "($1, $2, $3)",
                                p, 3, NULL);
        }
        if (!err)
            err = mail_token(db, a, "verify", uid, email, VERIFY_TTL_S);
        *outcome = "new";
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err)
        kiln_db_rollback(db);
    return err;
}

void api_password_register(struct kiln_req *req, struct kiln_res *res)
{
    const char *email = NULL, *pw = NULL, *name = NULL;
    size_t pwlen = 0;
    json_t *in = credentials(req, res, &email, &pw, &pwlen);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    res_string(in, "name", true, 0, API_ACCOUNT_NAME_MAX, &errs, &name);
    if (res_errors_answer(req, res, &errs) || !password_ok(req, res, "password", pw, pwlen, email)) {
        json_decref(in);
        return;
    }
    if (name)
        name = kiln_arena_strndup(req->arena, name, strlen(name));
    const char *hash = NULL;
    int err = kiln_password_hash(req->arena, pw, pwlen, &hash);
    json_decref(in);
    if (err) {
        kiln_res_fail(req, res, err, "Password hashing", "sign-up", "no turn or no libargon2");
        return;
    }
    const char *outcome = NULL;
    struct kiln_db *db = app_db(req);
    err = register_tx(db, req->arena, email, name, hash, &outcome);
    if (err == KILN_ECONFLICT) /* a concurrent sign-up of the address won */
        err = register_tx(db, req->arena, email, name, hash, &outcome);
    if (err) {
        db_fail(req, res, err, "sign-up");
        return;
    }
    kiln_jobs_notify();
    kiln_audit_record(req, NULL, "signup", kiln_arena_sprintf(req->arena, "password: %s", outcome));
    kiln_res_json(req, res, 202,
                  json_pack("{s:s, s:s}", "status", "pending_verification", "message",
                            "If this address can receive mail, a message to continue is on "
                            "its way."));
}

/* ---- verification --------------------------------------------------------------- */

/* Use a verification token: 0 with *user set, KILN_ENOTFOUND when it is
 * unknown, used or expired. */
static int use_verify_token(struct kiln_db *db, kiln_arena *a, const char *token,
                            const char **user)
{
    char hash[65];
    sha256_hex(token, strlen(token), hash);
    const char *now = now_text(a);
    int err = kiln_db_begin_write(db);
    if (err)
        return err;
    struct kiln_db_rows rows;
    kiln_str p[2] = { kiln_str_c(hash), kiln_str_c(now) };
    err = kiln_db_query(db, a,
                        "UPDATE account_tokens SET used_at = $2 WHERE purpose = 'verify' AND "
                        "secret_hash = $1 AND used_at IS NULL AND expires_at > $2 "
                        "RETURNING user_id",
                        p, 2, &rows);
    if (!err && !rows.nrows)
        err = KILN_ENOTFOUND;
    if (!err) {
        *user = kiln_db_text(&rows, 0, 0).p;
        kiln_str q[2] = { kiln_str_c(*user), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), "
                            "updated_at = $2 WHERE id = $1",
                            q, 2, NULL);
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err)
        kiln_db_rollback(db);
    return err;
}

/*
 * POST {token} answers JSON; GET ?token= (the mailed link opened in a
 * browser, when AUTH_VERIFY_URL points here) redirects to
 * AUTH_SUCCESS_REDIRECT?verified=true or AUTH_FAILURE_REDIRECT?error=
 * invalid_token. A link scanner that opens the link first verifies the
 * address, which is what opening it means; it signs nobody in.
 */
void api_password_verify(struct kiln_req *req, struct kiln_res *res)
{
    bool browser = req->method == KILN_GET;
    const char *token = NULL;
    json_t *in = NULL;
    if (browser) {
        kiln_str t;
        if (kiln_req_query(req, "token", &t))
            token = kiln_arena_strndup(req->arena, t.p, t.len);
    } else {
        if (kiln_guard_csrf(req, res) != 0)
            return;
        if (!(in = res_body_object(req, res)))
            return;
        token = json_string_value(json_object_get(in, "token"));
        if (token)
            token = kiln_arena_strndup(req->arena, token, strlen(token));
        json_decref(in);
    }
    const char *user = NULL;
    int err = token && *token ? use_verify_token(app_db(req), req->arena, token, &user)
                              : KILN_ENOTFOUND;
    if (err && err != KILN_ENOTFOUND) {
        db_fail(req, res, err, "email verification");
        return;
    }
    if (!err)
        kiln_audit_record(req, user, "email_verified", "password");
    if (browser) {
        const char *base = err ? req->config->auth_failure_redirect
                               : req->config->auth_success_redirect;
        res->status = 302;
        kiln_res_header(res, "location",
                        kiln_arena_sprintf(req->arena, "%s%s%s", base, strchr(base, '?') ? "&" : "?",
                                           err ? "error=invalid_token" : "verified=true"));
        kiln_res_header(res, "cache-control", "no-store");
        return;
    }
    if (err) {
        kiln_res_error(req, res, 400, "invalid_token",
                       "This link is unknown, used or expired", NULL);
        return;
    }
    kiln_res_json(req, res, 200, json_pack("{s:s}", "status", "verified"));
}

/* ---- sign-in ------------------------------------------------------------------ */

static const char *throttle_key(kiln_arena *a, const struct throttle *t, const char *what,
                                bool wait)
{
    char h[65];
    sha256_hex(what, strlen(what), h);
    /* Hashed: the kv store never holds the addresses tried. */
    return kiln_arena_sprintf(a, "%s%s%.32s", t->prefix, wait ? "wait:" : "", h);
}

/* Seconds the attempt must still wait under t, or 0. */
static long throttle_wait(struct kiln_req *req, const struct throttle *t, const char *what)
{
    kiln_str v;
    if (kiln_kv_get(app_kv(req), req->arena, kiln_str_c(throttle_key(req->arena, t, what, true)),
                    &v))
        return 0; /* none, or the store is down: never refuse for that */
    long long until = atoll(v.p);
    long long now = (long long)time(NULL);
    return until > now ? (long)(until - now) : 0;
}

static void throttle_fail(struct kiln_req *req, const struct throttle *t, const char *what)
{
    int64_t n = 0;
    struct kiln_kv *kv = app_kv(req);
    if (kiln_kv_incr(kv, kiln_str_c(throttle_key(req->arena, t, what, false)),
                     THROTTLE_WINDOW_S * 1000ull, &n, NULL))
        return;
    if (n < (int64_t)t->after)
        return;
    unsigned shift = (unsigned)(n - t->after);
    unsigned wait = shift >= 20 ? t->cap_s : 1u << shift;
    if (wait > t->cap_s)
        wait = t->cap_s;
    char until[24];
    snprintf(until, sizeof until, "%lld", (long long)time(NULL) + wait);
    kiln_kv_set(kv, kiln_str_c(throttle_key(req->arena, t, what, true)), kiln_str_c(until),
                wait * 1000ull);
}

void api_password_login(struct kiln_req *req, struct kiln_res *res)
{
    const char *email = NULL, *pw = NULL;
    size_t pwlen = 0;
    json_t *in = credentials(req, res, &email, &pw, &pwlen);
    if (!in)
        return;
    const char *pair = kiln_arena_sprintf(req->arena, "%s|%s", email, kiln_client_ip(req));
    long wait = throttle_wait(req, &PAIR, pair);
    long w2 = throttle_wait(req, &IP, kiln_client_ip(req));
    long w3 = throttle_wait(req, &ACCOUNT, email);
    if (w2 > wait)
        wait = w2;
    if (w3 > wait)
        wait = w3;
    if (wait) {
        json_decref(in);
        kiln_res_header(res, "retry-after", kiln_arena_sprintf(req->arena, "%ld", wait));
        kiln_res_error(req, res, 429, "too_many_attempts",
                       "Too many failed sign-ins: wait before trying again", NULL);
        return;
    }
    struct kiln_db *db = app_db(req);
    struct kiln_db_rows rows;
    kiln_str e = kiln_str_c(email);
    int err = kiln_db_query(db, req->arena,
                            "SELECT u.id, p.hash, u.email_verified_at, u.email, u.name, "
                            "u.first_name, u.last_name, u.image FROM identities i JOIN users u "
                            "ON u.id = i.user_id LEFT JOIN passwords p ON p.user_id = u.id "
                            "WHERE i.provider = 'password' AND i.subject = $1",
                            &e, 1, &rows);
    if (err) {
        json_decref(in);
        db_fail(req, res, err, "sign-in");
        return;
    }
    const char *stored = rows.nrows && !kiln_db_is_null(&rows, 0, 1) ? kiln_db_text(&rows, 0, 1).p
                                                                     : NULL;
    bool ok = false, rehash = false;
    err = kiln_password_verify(stored, pw, pwlen, &ok, &rehash);
    const char *new_hash = NULL;
    if (!err && ok && rehash && kiln_password_hash(req->arena, pw, pwlen, &new_hash))
        new_hash = NULL; /* the old hash still works; upgrade next time */
    json_decref(in);
    if (err) {
        kiln_res_fail(req, res, err, "Password hashing", "sign-in", "no turn or no libargon2");
        return;
    }
    const char *uid = rows.nrows ? kiln_db_text(&rows, 0, 0).p : NULL;
    if (!ok) {
        throttle_fail(req, &PAIR, pair);
        throttle_fail(req, &IP, kiln_client_ip(req));
        throttle_fail(req, &ACCOUNT, email);
        kiln_audit_record(req, uid, "login_failed", "password: invalid credentials");
        kiln_res_error(req, res, 401, "invalid_credentials", "Email or password is wrong", NULL);
        return;
    }
    if (kiln_db_is_null(&rows, 0, 2)) {
        kiln_audit_record(req, uid, "login_failed", "password: email not verified");
        kiln_res_error(req, res, 403, "email_not_verified",
                       "Confirm your email address first: open the link we sent you", NULL);
        return;
    }
    bool deleted;
    kiln_kv_del(app_kv(req), kiln_str_c(throttle_key(req->arena, &PAIR, pair, false)), &deleted);
    if (new_hash) {
        kiln_str p[3] = { kiln_str_c(uid), kiln_str_c(new_hash), kiln_str_c(now_text(req->arena)) };
        if (kiln_db_query(db, req->arena,
                          "UPDATE passwords SET hash = $2, updated_at = $3 WHERE user_id = $1", p,
                          3, NULL) == 0)
            kiln_log(KILN_LOG_INFO, "password hash upgraded", "user_id", uid, NULL);
    }
    if (api_mfa_required(req, res, uid, "password", email))
        return;
    struct kiln_session_user u = { uid,
                                   kiln_db_text(&rows, 0, 3).p,
                                   kiln_db_is_null(&rows, 0, 4) ? NULL : kiln_db_text(&rows, 0, 4).p,
                                   kiln_db_is_null(&rows, 0, 5) ? NULL : kiln_db_text(&rows, 0, 5).p,
                                   kiln_db_is_null(&rows, 0, 6) ? NULL : kiln_db_text(&rows, 0, 6).p,
                                   kiln_db_is_null(&rows, 0, 7) ? NULL : kiln_db_text(&rows, 0, 7).p,
                                   "password",
                                   email };
    if ((err = api_start_session(req, res, &u)) != 0) {
        kiln_res_fail(req, res, err, "Session store", "sign-in", kiln_kv_last_error(app_kv(req)));
        return;
    }
    api_signed_in(req, res, &u);
}

/* ---- change ------------------------------------------------------------------ */

void api_password_change(struct kiln_req *req, struct kiln_res *res)
{
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    json_t *cur = json_object_get(in, "current_password"), *neu = json_object_get(in, "password");
    struct res_errors errs = { NULL };
    if (!json_is_string(cur))
        res_error(&errs, "current_password", cur ? "is invalid" : "can't be blank");
    if (!json_is_string(neu))
        res_error(&errs, "password", neu ? "is invalid" : "can't be blank");
    if (res_errors_answer(req, res, &errs)) {
        json_decref(in);
        return;
    }
    const char *uid = res_user_id(req);
    struct kiln_db *db = app_db(req);
    struct kiln_db_rows rows;
    kiln_str id = kiln_str_c(uid);
    int err = kiln_db_query(db, req->arena,
                            "SELECT p.hash, u.email FROM users u LEFT JOIN passwords p ON "
                            "p.user_id = u.id WHERE u.id = $1",
                            &id, 1, &rows);
    if (err) {
        json_decref(in);
        db_fail(req, res, err, "password change");
        return;
    }
    if (!rows.nrows || kiln_db_is_null(&rows, 0, 0)) {
        json_decref(in);
        kiln_res_error(req, res, 409, "no_password",
                       "This account has no password: ask for a reset to set one", NULL);
        return;
    }
    const char *email = kiln_db_is_null(&rows, 0, 1) ? NULL : kiln_db_text(&rows, 0, 1).p;
    bool ok = false;
    err = kiln_password_verify(kiln_db_text(&rows, 0, 0).p, json_string_value(cur),
                               json_string_length(cur), &ok, NULL);
    if (!err && !ok) {
        json_decref(in);
        kiln_audit_record(req, uid, "password_change_failed", "wrong current password");
        kiln_res_error(req, res, 403, "invalid_credentials", "The current password is wrong",
                       NULL);
        return;
    }
    const char *hash = NULL;
    if (!err && !password_ok(req, res, "password", json_string_value(neu),
                             json_string_length(neu), email)) {
        json_decref(in);
        return;
    }
    if (!err)
        err = kiln_password_hash(req->arena, json_string_value(neu), json_string_length(neu),
                                 &hash);
    json_decref(in);
    if (err) {
        kiln_res_fail(req, res, err, "Password hashing", "password change",
                      "no turn or no libargon2");
        return;
    }
    kiln_str p[3] = { id, kiln_str_c(hash), kiln_str_c(now_text(req->arena)) };
    if ((err = kiln_db_query(db, req->arena,
                             "UPDATE passwords SET hash = $2, updated_at = $3 WHERE user_id = $1",
                             p, 3, NULL))) {
        db_fail(req, res, err, "password change");
        return;
    }
    kiln_audit_record(req, uid, "password_changed", NULL);
    /* The other sessions end: someone who knew the old password, or a
     * device left signed in, is out; this one goes on. */
    size_t ended = 0;
    if ((err = api_sessions_end_all(req, uid, kiln_req_session(req)->sid, "password changed",
                                    &ended)) != 0) {
        kiln_res_fail(req, res, err, "Session store", "password change: ending sessions",
                      kiln_kv_last_error(app_kv(req)));
        return;
    }
    kiln_res_json(req, res, 200,
                  json_pack("{s:s, s:I}", "status", "changed", "sessions_ended", (json_int_t)ended));
}

/* ---- codes by email ------------------------------------------------------------ */

/* The user an address signs in as: its email identity, else its password
 * identity, else a user whose address is verified. *unverified_password:
 * the user found is a password account nobody has verified (see
 * sign_in_by_code). NULL when none. */
static int user_for_address(struct kiln_db *db, kiln_arena *a, const char *email,
                            const char **user, bool *unverified_password)
{
    struct kiln_db_rows rows;
    kiln_str e = kiln_str_c(email);
    int err = kiln_db_query(db, a,
                            "SELECT u.id, u.email_verified_at IS NULL, 1 FROM identities i JOIN "
                            "users u ON u.id = i.user_id WHERE i.provider = 'email' AND "
                            "i.subject = $1 UNION ALL SELECT u.id, u.email_verified_at IS NULL, 2 "
                            "FROM identities i JOIN users u ON u.id = i.user_id WHERE "
                            "i.provider = 'password' AND i.subject = $1 UNION ALL SELECT id, "
                            "false, 3 FROM users WHERE lower(email) = $1 AND email_verified_at "
                            "IS NOT NULL ORDER BY 3 LIMIT 1",
                            &e, 1, &rows);
    *user = NULL;
    *unverified_password = false;
    if (err || !rows.nrows)
        return err;
    const char *unv = kiln_db_text(&rows, 0, 1).p, *rank = kiln_db_text(&rows, 0, 2).p;
    *user = kiln_db_text(&rows, 0, 0).p;
    *unverified_password = rank[0] == '2' && (unv[0] == 't' || unv[0] == '1');
    return 0;
}

/*
 * POST /auth/email/code {email}: 202 whatever the address. With an
 * account, or with AUTH_EMAIL_CODE_SIGNUP=true, a six-digit code is mailed
 * (10 minutes, CODE_TRIES tries, only the newest one counts); without
 * either, the address's owner gets a notice instead. At most
 * CODE_SENDS_PER_HOUR codes an hour per address (429 after, for any
 * address alike).
 */
void api_email_code(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *email = NULL;
    email = body_email(req, in, &errs);
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    if (too_many_sends(req, res, "code_sends:", email, "codes"))
        return;
    struct kiln_db *db = app_db(req);
    const char *user = NULL;
    bool unverified = false;
    int err = kiln_db_begin_write(db);
    if (!err)
        err = user_for_address(db, req->arena, email, &user, &unverified);
    if (!err && (user || req->config->auth_email_code_signup))
        err = mail_token(db, req->arena, "code", user, email, CODE_TTL_S);
    else if (!err)
        err = mail_notice(db, req->arena, "no_account", email);
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        db_fail(req, res, err, "sign-in code");
        return;
    }
    kiln_jobs_notify();
    kiln_res_json(req, res, 202,
                  json_pack("{s:s, s:s}", "status", "code_sent", "message",
                            "If this address can sign in, a code is on its way."));
}

/*
 * The code's user, signed in: the one the token names, or (sign-up by
 * code) a new one. The code proves the address: it becomes verified, and
 * an email identity joins the user. A password account nobody had
 * verified loses its password: whoever set it never showed they own the
 * address, and the address's owner is the one signing in now.
 */
static int sign_in_by_code(struct kiln_db *db, kiln_arena *a, const char *email,
                           const char *token_user, const char **user, bool *created)
{
    const char *now = now_text(a);
    *created = false;
    bool unverified = false;
    int err = kiln_db_begin_write(db);
    if (err)
        return err;
    const char *found = NULL;
    err = user_for_address(db, a, email, &found, &unverified);
    if (!err && !found && token_user)
        found = token_user; /* an account without that identity: the code's user */
    if (!err && !found) {
        char uid[KILN_UUID_LEN + 1];
        kiln_uuid_v4(uid);
        kiln_str u[3] = { kiln_str_c(uid), kiln_str_c(email), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "INSERT INTO users (id, email, inserted_at, updated_at) VALUES ($1, "
                            "$2, $3, $3)",
                            u, 3, NULL);
        found = kiln_arena_strndup(a, uid, KILN_UUID_LEN);
        *created = true;
    }
    if (!err && unverified) {
        kiln_str id = kiln_str_c(found);
        err = kiln_db_query(db, a, "DELETE FROM passwords WHERE user_id = $1", &id, 1, NULL);
    }
    if (!err) {
        char iid[KILN_UUID_LEN + 1];
        kiln_uuid_v4(iid);
        kiln_str i[4] = { kiln_str_c(iid), kiln_str_c(email), kiln_str_c(found), kiln_str_c(now) };
        /* Once per user and address; a second sign-in finds it. */
        err = kiln_db_query(db, a,
                            "INSERT INTO identities (id, provider, subject, user_id, inserted_at) "
                            "SELECT $1, 'email', $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM "
                            "identities WHERE provider = 'email' AND subject = $2)",
                            i, 4, NULL);
    }
    if (!err) {
        kiln_str q[2] = { kiln_str_c(found), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), "
                            "updated_at = $2 WHERE id = $1",
                            q, 2, NULL);
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err)
        kiln_db_rollback(db);
    *user = found;
    return err;
}

/* POST /auth/email/verify {email, code}: a session, or 401 invalid_code
 * (wrong, used, expired, or its tries spent: alike). */
void api_email_verify(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *email = NULL, *code = NULL;
    email = body_email(req, in, &errs);
    if (!res_string(in, "code", false, 1, API_EMAIL_CODE_MAX, &errs, &code) && !json_object_get(in, "code"))
        res_error(&errs, "code", "can't be blank");
    if (code)
        code = kiln_arena_strndup(req->arena, code, strlen(code));
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    long wait = throttle_wait(req, &IP, kiln_client_ip(req));
    if (wait) {
        kiln_res_header(res, "retry-after", kiln_arena_sprintf(req->arena, "%ld", wait));
        kiln_res_error(req, res, 429, "too_many_attempts",
                       "Too many failed sign-ins: wait before trying again", NULL);
        return;
    }
    struct kiln_db *db = app_db(req);
    const char *now = now_text(req->arena);
    kiln_str p[3] = { kiln_str_c(email), kiln_str_c(now),
                      kiln_str_c(kiln_arena_sprintf(req->arena, "%d", CODE_TRIES)) };
    struct kiln_db_rows rows;
    /* Count the try first, on the newest live code only: a guess costs a
     * try whether or not it is right. */
    int err = kiln_db_query(db, req->arena,
                            "UPDATE account_tokens SET tries = tries + 1 WHERE id = (SELECT id "
                            "FROM account_tokens WHERE purpose = 'code' AND email = $1 AND "
                            "used_at IS NULL AND expires_at > $2 AND secret_hash IS NOT NULL "
                            "ORDER BY inserted_at DESC LIMIT 1) AND tries < $3 RETURNING id, secret_hash, "
                            "user_id",
                            p, 3, &rows);
    if (err) {
        db_fail(req, res, err, "sign-in code");
        return;
    }
    bool ok = false;
    const char *token_id = NULL, *token_user = NULL;
    if (rows.nrows) {
        char want[65];
        token_id = kiln_db_text(&rows, 0, 0).p;
        token_user = kiln_db_is_null(&rows, 0, 2) ? NULL : kiln_db_text(&rows, 0, 2).p;
        code_hash(token_id, code, want);
        ok = strlen(kiln_db_text(&rows, 0, 1).p) == 64 &&
             CRYPTO_memcmp(want, kiln_db_text(&rows, 0, 1).p, 64) == 0;
    }
    if (ok) {
        /* Single use, also against a concurrent right guess. */
        kiln_str q[2] = { kiln_str_c(token_id), kiln_str_c(now) };
        struct kiln_db_rows used;
        err = kiln_db_query(db, req->arena,
                            "UPDATE account_tokens SET used_at = $2 WHERE id = $1 AND used_at IS "
                            "NULL RETURNING id",
                            q, 2, &used);
        if (err) {
            db_fail(req, res, err, "sign-in code");
            return;
        }
        ok = used.nrows == 1;
    }
    if (!ok) {
        throttle_fail(req, &IP, kiln_client_ip(req));
        kiln_audit_record(req, token_user, "login_failed", "email: invalid code");
        kiln_res_error(req, res, 401, "invalid_code",
                       "The code is wrong, used or expired: ask for a new one", NULL);
        return;
    }
    if (!token_user && !req->config->auth_email_code_signup) {
        /* Made while sign-up by code was on, used after it went off. */
        kiln_res_error(req, res, 401, "invalid_code",
                       "The code is wrong, used or expired: ask for a new one", NULL);
        return;
    }
    const char *user = NULL;
    bool created = false;
    if ((err = sign_in_by_code(db, req->arena, email, token_user, &user, &created))) {
        db_fail(req, res, err, "sign-in code");
        return;
    }
    if (created)
        kiln_audit_record(req, user, "signup", "email code");
    if (api_mfa_required(req, res, user, "email", email))
        return;
    kiln_str id = kiln_str_c(user);
    err = kiln_db_query(db, req->arena,
                        "SELECT email, name, first_name, last_name, image FROM users WHERE id = $1",
                        &id, 1, &rows);
    if (err || !rows.nrows) {
        db_fail(req, res, err ? err : KILN_EDB, "sign-in code");
        return;
    }
#define COL(i) (kiln_db_is_null(&rows, 0, i) ? NULL : kiln_db_text(&rows, 0, i).p)
    struct kiln_session_user u = { user, COL(0), COL(1), COL(2), COL(3), COL(4), "email", email };
#undef COL
    if ((err = api_start_session(req, res, &u)) != 0) {
        kiln_res_fail(req, res, err, "Session store", "sign-in code",
                      kiln_kv_last_error(app_kv(req)));
        return;
    }
    api_signed_in(req, res, &u);
}

/* ---- reset ---------------------------------------------------------------------- */

/*
 * POST /auth/password/reset {email}: 202 whatever the address. An address
 * that can sign in (a password account, or a user verified another way,
 * who may set a first password this way) gets a link to AUTH_RESET_URL
 * (?token=, once, for an hour); another address's owner gets a notice.
 * At most CODE_SENDS_PER_HOUR an hour per address.
 */
void api_password_reset(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    const char *email = NULL;
    email = body_email(req, in, &errs);
    json_decref(in);
    if (res_errors_answer(req, res, &errs))
        return;
    if (too_many_sends(req, res, "reset_sends:", email, "resets"))
        return;
    struct kiln_db *db = app_db(req);
    const char *user = NULL;
    bool unverified = false;
    int err = kiln_db_begin_write(db);
    if (!err)
        err = user_for_address(db, req->arena, email, &user, &unverified);
    if (!err && user)
        err = mail_token(db, req->arena, "reset", user, email, RESET_TTL_S);
    else if (!err)
        err = mail_notice(db, req->arena, "reset_no_account", email);
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        db_fail(req, res, err, "password reset");
        return;
    }
    kiln_jobs_notify();
    kiln_res_json(req, res, 202,
                  json_pack("{s:s, s:s}", "status", "reset_sent", "message",
                            "If this address has an account, a link to choose a new password is "
                            "on its way."));
}

/*
 * Use a reset token and set the password, in one transaction: the user
 * gets (or keeps) a password identity, and the address is verified (the
 * link proved it). 0 with *user; KILN_ENOTFOUND for a token unknown, used
 * or expired.
 */
static int reset_tx(struct kiln_db *db, kiln_arena *a, const char *token_hash, const char *hash,
                    const char **user, const char **email)
{
    const char *now = now_text(a);
    int err = kiln_db_begin_write(db);
    if (err)
        return err;
    struct kiln_db_rows rows;
    kiln_str p[2] = { kiln_str_c(token_hash), kiln_str_c(now) };
    err = kiln_db_query(db, a,
                        "UPDATE account_tokens SET used_at = $2 WHERE purpose = 'reset' AND "
                        "secret_hash = $1 AND used_at IS NULL AND expires_at > $2 AND user_id IS "
                        "NOT NULL RETURNING user_id, email",
                        p, 2, &rows);
    if (!err && !rows.nrows)
        err = KILN_ENOTFOUND;
    if (!err) {
        *user = kiln_db_text(&rows, 0, 0).p;
        *email = kiln_db_text(&rows, 0, 1).p;
        kiln_str q[3] = { kiln_str_c(*user), kiln_str_c(hash), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "INSERT INTO passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) "
                            "ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, updated_at "
                            "= excluded.updated_at",
                            q, 3, NULL);
    }
    if (!err) {
        char iid[KILN_UUID_LEN + 1];
        kiln_uuid_v4(iid);
        kiln_str i[4] = { kiln_str_c(iid), kiln_str_c(*email), kiln_str_c(*user), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "INSERT INTO identities (id, provider, subject, user_id, inserted_at) "
                            "SELECT $1, 'password', $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM "
                            "identities WHERE provider = 'password' AND subject = $2)",
                            i, 4, NULL);
    }
    if (!err) {
        kiln_str q[2] = { kiln_str_c(*user), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2), "
                            "updated_at = $2 WHERE id = $1",
                            q, 2, NULL);
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err)
        kiln_db_rollback(db);
    return err;
}

/* POST /auth/password/reset/confirm {token, password}: 200, and every
 * session of the user ends (whoever knew the old password is out). */
void api_password_reset_confirm(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_guard_csrf(req, res) != 0)
        return;
    json_t *in = res_body_object(req, res);
    if (!in)
        return;
    struct res_errors errs = { NULL };
    json_t *tok = json_object_get(in, "token"), *pw = json_object_get(in, "password");
    if (!json_is_string(tok))
        res_error(&errs, "token", tok ? "is invalid" : "can't be blank");
    if (!json_is_string(pw))
        res_error(&errs, "password", pw ? "is invalid" : "can't be blank");
    if (res_errors_answer(req, res, &errs)) {
        json_decref(in);
        return;
    }
    char token_hash[65];
    sha256_hex(json_string_value(tok), json_string_length(tok), token_hash);
    /* The rules need the address: the token's, read before the hash is
     * made (an unknown token costs no hash). */
    struct kiln_db_rows rows;
    kiln_str th = kiln_str_c(token_hash);
    struct kiln_db *db = app_db(req);
    int err = kiln_db_query(db, req->arena,
                            "SELECT email FROM account_tokens WHERE purpose = 'reset' AND "
                            "secret_hash = $1 AND used_at IS NULL",
                            &th, 1, &rows);
    if (err) {
        json_decref(in);
        db_fail(req, res, err, "password reset");
        return;
    }
    if (!rows.nrows) {
        json_decref(in);
        kiln_res_error(req, res, 400, "invalid_token", "This link is unknown, used or expired",
                       NULL);
        return;
    }
    if (!password_ok(req, res, "password", json_string_value(pw), json_string_length(pw),
                     kiln_db_text(&rows, 0, 0).p)) {
        json_decref(in);
        return;
    }
    const char *hash = NULL, *user = NULL, *email = NULL;
    err = kiln_password_hash(req->arena, json_string_value(pw), json_string_length(pw), &hash);
    json_decref(in);
    if (err) {
        kiln_res_fail(req, res, err, "Password hashing", "password reset",
                      "no turn or no libargon2");
        return;
    }
    err = reset_tx(db, req->arena, token_hash, hash, &user, &email);
    if (err == KILN_ENOTFOUND) {
        kiln_res_error(req, res, 400, "invalid_token", "This link is unknown, used or expired",
                       NULL);
        return;
    }
    if (err) {
        db_fail(req, res, err, "password reset");
        return;
    }
    kiln_audit_record(req, user, "password_reset", NULL);
    size_t ended = 0;
    if ((err = api_sessions_end_all(req, user, NULL, "password reset", &ended)) != 0) {
        /* The password is set; a session left would outlive the reset. */
        kiln_res_fail(req, res, err, "Session store", "password reset: ending sessions",
                      kiln_kv_last_error(app_kv(req)));
        return;
    }
    kiln_res_json(req, res, 200,
                  json_pack("{s:s, s:I}", "status", "reset", "sessions_ended", (json_int_t)ended));
}
