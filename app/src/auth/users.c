/*
 * Find-or-create through identities, and the one rule that joins a new way
 * in to a person who already has an account (docs/AUTHENTICATION.md,
 * "Login flow", step 3): a first login whose address belongs to a user (by
 * users.email, or a password or email-code identity) joins that user only
 * when the provider vouches for the address and the user has proven it
 * too (users.email_verified_at); otherwise it is refused, so an address a
 * provider did not check takes over nobody's account.
 *
 * Races. Two first logins of one identity both try to insert it; the loser
 * gets a unique violation on (provider, subject), rolls back and reads the
 * winner's row. First logins of one address through two providers are
 * serialized, so the second sees the first's user: SQLite's write
 * transaction is exclusive, and on PostgreSQL the transaction takes an
 * advisory lock on the address before it looks.
 */
#include "auth/users.h"

#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/str.h"
#include "core/uuid.h"

/* pg_advisory_xact_lock's first key: this module's lock space ("kiln"),
 * the second being the address's hash. */
#define LOCK_SPACE "1802071150"
/* A unique violation means another login inserted the identity first; the
 * retry finds it. More than a few in a row would be a bug, not a race. */
#define LOGIN_TRIES 3

static kiln_str s_or_null(const char *s)
{
    return s ? kiln_str_c(s) : KILN_STR_NULL;
}

const char *kiln_user_outcome_name(enum kiln_user_outcome o)
{
    switch (o) {
    case KILN_USER_KNOWN:
        return "known";
    case KILN_USER_CREATED:
        return "created";
    case KILN_USER_LINKED:
        return "linked";
    case KILN_USER_REFUSED:
        return "refused";
    }
    return "unknown";
}

/* The address as accounts store and look it up (api/accounts.c):
 * trimmed, ASCII lowercased. NULL when there is none. */
static const char *address_of(kiln_arena *a, const char *email)
{
    kiln_str s = kiln_str_trim(kiln_str_c(email));
    if (!s.len)
        return NULL;
    char *out = kiln_arena_strndup(a, s.p, s.len);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return out;
}

static int find(struct kiln_db *db, kiln_arena *a, const char *provider, const char *subject,
                const char **user_id)
{
    struct kiln_db_rows rows;
    kiln_str p[2] = { kiln_str_c(provider), kiln_str_c(subject) };
    int err = kiln_db_query(db, a,
                            "SELECT user_id FROM identities WHERE provider = $1 AND subject = $2",
                            p, 2, &rows);
    if (err)
        return err;
    if (rows.nrows == 0)
        return KILN_ENOTFOUND;
    *user_id = kiln_db_text(&rows, 0, 0).p;
    return 0;
}

/*
 * First logins of one address take turns, until the caller's transaction
 * ends: the second one (of this identity or through another provider)
 * sees the first one's rows. SQLite's write transaction already is the
 * turn.
 */
static int lock_address(struct kiln_db *db, kiln_arena *a, const char *address)
{
    if (kiln_db_dialect(db) != KILN_DB_POSTGRES)
        return 0;
    kiln_str e = kiln_str_c(address);
    return kiln_db_query(db, a, "SELECT pg_advisory_xact_lock(" LOCK_SPACE ", hashtext($1))",
                         &e, 1, NULL);
}

/*
 * The user who has this address, if any, inside the caller's write
 * transaction: an email-code or password identity of it, or users.email.
 * A verified one wins over an unverified one (an address may sit on
 * several users made before linking existed); *verified says which it is.
 */
static int account_of(struct kiln_db *db, kiln_arena *a, const char *address,
                      const char **user_id, bool *verified)
{
    kiln_str e = kiln_str_c(address);
    *user_id = NULL;
    *verified = false;
    struct kiln_db_rows rows;
    int err = kiln_db_query(db, a,
                            "SELECT u.id, u.email_verified_at IS NOT NULL, 1 FROM identities i "
                            "JOIN users u ON u.id = i.user_id WHERE i.provider IN ('email', "
                            "'password') AND i.subject = $1 UNION ALL SELECT id, "
                            "email_verified_at IS NOT NULL, 2 FROM users WHERE lower(email) = "
                            "lower($1) ORDER BY 2 DESC, 3, 1 LIMIT 1",
                            &e, 1, &rows);
    if (err || rows.nrows == 0)
        return err;
    *user_id = kiln_db_text(&rows, 0, 0).p;
    if (!kiln_db_bool(&rows, 0, 1, verified))
        return KILN_EDB;
    return 0;
}

/*
 * The refresh of every login: the provider's fields replace the stored
 * ones (COALESCE: a provider that omits a field, as Apple omits the name
 * after the first login, does not erase what we know), and
 * email_verified_at keeps speaking for the stored address:
 *   - the same address (any case): verified from now if the provider
 *     vouches for it and it was not;
 *   - another address the provider vouches for: it replaces the stored
 *     one, verified now;
 *   - another one it does not vouch for: it replaces an unverified (or no)
 *     address, still unverified, but never a verified one.
 * Otherwise a provider account whose address changed, unchecked, to
 * someone else's would carry the old proof over to it, and that person's
 * first login anywhere would join this user.
 * $8 says whether the provider vouches ('t'/'f', compared as text) and $9
 * is the time of the proof or NULL: PostgreSQL types an untyped parameter
 * from where it stands, and $9 stands only where a timestamp goes.
 */
static int refresh(struct kiln_db *db, kiln_arena *a, const char *user_id,
                   const struct kiln_user_profile *pr, bool vouched, const char *now,
                   struct kiln_user_profile *stored)
{
    kiln_str p[9] = { s_or_null(pr->email),     s_or_null(pr->name),
                      s_or_null(pr->first_name), s_or_null(pr->last_name),
                      s_or_null(pr->image),      kiln_str_c(now),
                      kiln_str_c(user_id),       kiln_str_c(vouched ? "t" : "f"),
                      vouched ? kiln_str_c(now) : KILN_STR_NULL };
    const char *sql =
        pr->email
            ? "UPDATE users SET updated_at = $6, "
              "email = CASE WHEN email IS NOT NULL AND lower(email) <> lower($1) AND "
              "email_verified_at IS NOT NULL AND $8 <> 't' THEN email ELSE $1 END, "
              "email_verified_at = CASE "
              "WHEN email IS NOT NULL AND lower(email) = lower($1) THEN "
              "COALESCE(email_verified_at, $9) "
              "WHEN $8 = 't' THEN $9 "
              "WHEN email IS NOT NULL AND email_verified_at IS NOT NULL THEN email_verified_at "
              "END, "
              "name = COALESCE($2, name), first_name = COALESCE($3, first_name), "
              "last_name = COALESCE($4, last_name), image = COALESCE($5, image) WHERE id = $7 "
              "RETURNING email, name, first_name, last_name, image, "
              "email_verified_at IS NOT NULL"
            : "UPDATE users SET updated_at = $6, email = COALESCE($1, email), "
              "name = COALESCE($2, name), first_name = COALESCE($3, first_name), "
              "last_name = COALESCE($4, last_name), image = COALESCE($5, image) WHERE id = $7 "
              "RETURNING email, name, first_name, last_name, image, "
              "email_verified_at IS NOT NULL";
    struct kiln_db_rows rows;
    /* The second form has no $8 nor $9: it gets seven parameters. */
    int err = kiln_db_query(db, a, sql, p, pr->email ? 9 : 7, &rows);
    if (err)
        return err;
    if (rows.nrows != 1)
        return KILN_EDB;
    stored->email = kiln_db_text(&rows, 0, 0).p;
    stored->name = kiln_db_text(&rows, 0, 1).p;
    stored->first_name = kiln_db_text(&rows, 0, 2).p;
    stored->last_name = kiln_db_text(&rows, 0, 3).p;
    stored->image = kiln_db_text(&rows, 0, 4).p;
    if (!kiln_db_bool(&rows, 0, 5, &stored->email_verified))
        return KILN_EDB;
    return 0;
}

static int add_identity(struct kiln_db *db, kiln_arena *a, const char *provider,
                        const char *subject, const char *user_id, const char *now)
{
    char iid[KILN_UUID_LEN + 1];
    kiln_uuid_v4(iid);
    kiln_str i[5] = { kiln_str_c(iid), kiln_str_c(provider), kiln_str_c(subject),
                      kiln_str_c(user_id), kiln_str_c(now) };
    return kiln_db_query(db, a,
                         "INSERT INTO identities (id, provider, subject, user_id, inserted_at) "
                         "VALUES ($1, $2, $3, $4, $5)",
                         i, 5, NULL);
}

/* One attempt; KILN_ECONFLICT when a concurrent login inserted the
 * identity first (or deleted the user it was joining): the next attempt
 * finds it. */
static int login_once(struct kiln_db *db, kiln_arena *a, const char *provider,
                      const char *subject, const struct kiln_user_profile *pr,
                      enum kiln_user_link link, const char **user_id,
                      struct kiln_user_profile *stored, enum kiln_user_outcome *outcome)
{
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    bool may_link = link == KILN_USER_LINK_VERIFIED;
    const char *address = may_link && pr->email ? address_of(a, pr->email) : NULL;
    bool vouched = address && pr->email_verified;

    const char *uid = NULL;
    int err = find(db, a, provider, subject, &uid);
    if (err == 0) {
        if ((err = refresh(db, a, uid, pr, vouched, now, stored)))
            return err;
        *user_id = uid;
        *outcome = KILN_USER_KNOWN;
        return 0;
    }
    if (err != KILN_ENOTFOUND)
        return err;

    /* First login. The write transaction from the start: it reads first. */
    if ((err = kiln_db_begin_write(db)))
        return err;
    bool verified = false;
    if (address) {
        err = lock_address(db, a, address);
        /* A concurrent first login of this very identity may have had the
         * turn: its user has the address now, and is this login's. */
        if (!err && (err = find(db, a, provider, subject, &uid)) == 0) {
            kiln_db_rollback(db);
            return KILN_ECONFLICT;
        }
        if (err == KILN_ENOTFOUND)
            err = account_of(db, a, address, &uid, &verified);
    }
    if (!err && uid && !(vouched && verified)) {
        /* The address is someone's, and either the provider did not check
         * it or its owner never proved it: joining would hand the account
         * to whoever typed the address at the provider. */
        kiln_db_rollback(db);
        *user_id = NULL;
        *outcome = KILN_USER_REFUSED;
        return 0;
    }
    if (!err && uid) {
        err = add_identity(db, a, provider, subject, uid, now);
        if (!err)
            err = refresh(db, a, uid, pr, vouched, now, stored);
        *outcome = KILN_USER_LINKED;
    } else if (!err) {
        char id[KILN_UUID_LEN + 1];
        kiln_uuid_v4(id);
        uid = kiln_arena_strndup(a, id, KILN_UUID_LEN);
        kiln_str u[9] = { kiln_str_c(uid), s_or_null(pr->email), s_or_null(pr->name),
                          s_or_null(pr->first_name), s_or_null(pr->last_name),
                          s_or_null(pr->image), kiln_str_c(now), kiln_str_c(now),
                          vouched ? kiln_str_c(now) : KILN_STR_NULL };
        err = kiln_db_query(db, a,
                            "INSERT INTO users (id, email, name, first_name, last_name, image, "
                            "inserted_at, updated_at, email_verified_at) "
                            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                            u, 9, NULL);
        if (!err)
            err = add_identity(db, a, provider, subject, uid, now);
        *stored = *pr;
        stored->email_verified = vouched;
        *outcome = KILN_USER_CREATED;
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        return err;
    }
    *user_id = uid;
    return 0;
}

int kiln_user_login(struct kiln_db *db, kiln_arena *a, const char *provider,
                    const char *subject, const struct kiln_user_profile *pr,
                    enum kiln_user_link link, const char **user_id,
                    struct kiln_user_profile *stored, enum kiln_user_outcome *outcome)
{
    int err = KILN_ECONFLICT;
    /* A concurrent first login of this identity won: the next try finds
     * its row and uses its user. */
    for (int i = 0; i < LOGIN_TRIES && err == KILN_ECONFLICT; i++)
        err = login_once(db, a, provider, subject, pr, link, user_id, stored, outcome);
    return err;
}
