/*
 * Find-or-create through identities. Two logins of a new person racing each
 * other both try to insert; the loser gets a unique violation on
 * (provider, subject), rolls back and reads the winner's row.
 */
#include "auth/users.h"

#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/uuid.h"

static kiln_str s_or_null(const char *s)
{
    return s ? kiln_str_c(s) : KILN_STR_NULL;
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

int kiln_user_login(struct kiln_db *db, kiln_arena *a, const char *provider,
                    const char *subject, const struct kiln_user_profile *pr,
                    const char **user_id, struct kiln_user_profile *stored)
{
    char now[KILN_RFC3339_LEN + 1];
    kiln_time_rfc3339_now(now);
    int err = find(db, a, provider, subject, user_id);
    if (err == 0) {
        kiln_str p[7] = { s_or_null(pr->email), s_or_null(pr->name),
                          s_or_null(pr->first_name), s_or_null(pr->last_name),
                          s_or_null(pr->image), kiln_str_c(now), kiln_str_c(*user_id) };
        /* COALESCE: a provider that omits a field (Apple sends the name
         * once) does not erase what we know; RETURNING gives the session
         * what is stored. */
        struct kiln_db_rows rows;
        err = kiln_db_query(db, a,
                            "UPDATE users SET email = COALESCE($1, email), "
                            "name = COALESCE($2, name), first_name = COALESCE($3, first_name), "
                            "last_name = COALESCE($4, last_name), image = COALESCE($5, image), "
                            "updated_at = $6 WHERE id = $7 "
                            "RETURNING email, name, first_name, last_name, image",
                            p, 7, &rows);
        if (err)
            return err;
        if (rows.nrows != 1)
            return KILN_EDB;
        stored->email = kiln_db_text(&rows, 0, 0).p;
        stored->name = kiln_db_text(&rows, 0, 1).p;
        stored->first_name = kiln_db_text(&rows, 0, 2).p;
        stored->last_name = kiln_db_text(&rows, 0, 3).p;
        stored->image = kiln_db_text(&rows, 0, 4).p;
        return 0;
    }
    if (err != KILN_ENOTFOUND)
        return err;

    char uid[KILN_UUID_LEN + 1], iid[KILN_UUID_LEN + 1];
    kiln_uuid_v4(uid);
    kiln_uuid_v4(iid);
    if ((err = kiln_db_begin(db)))
        return err;
    kiln_str u[8] = { kiln_str_c(uid), s_or_null(pr->email), s_or_null(pr->name),
                      s_or_null(pr->first_name), s_or_null(pr->last_name),
                      s_or_null(pr->image), kiln_str_c(now), kiln_str_c(now) };
    err = kiln_db_query(db, a,
                        "INSERT INTO users (id, email, name, first_name, last_name, image, "
                        "inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        u, 8, NULL);
    if (!err) {
        kiln_str i[5] = { kiln_str_c(iid), kiln_str_c(provider), kiln_str_c(subject),
                          kiln_str_c(uid), kiln_str_c(now) };
        err = kiln_db_query(db, a,
                            "INSERT INTO identities (id, provider, subject, user_id, inserted_at) "
                            "VALUES ($1, $2, $3, $4, $5)",
                            i, 5, NULL);
    }
    if (!err)
        err = kiln_db_commit(db);
    if (err) {
        kiln_db_rollback(db);
        if (err == KILN_ECONFLICT) /* a concurrent first login won: use its user */
            return kiln_user_login(db, a, provider, subject, pr, user_id, stored);
        return err;
    }
    *user_id = kiln_arena_strndup(a, uid, KILN_UUID_LEN);
    *stored = *pr;
    return 0;
}
