/*
 * Users and their identities: a person keeps one internal id across
 * providers and logins. (provider, subject) → users.id through the
 * identities table; the first login creates both rows in one transaction.
 * Worker threads.
 */
#ifndef KILN_AUTH_USERS_H
#define KILN_AUTH_USERS_H

#include "core/arena.h"
#include "store/db.h"

struct kiln_user_profile {
    const char *email, *name, *first_name, *last_name, *image;
};

/*
 * The user id for (provider, subject), creating the user on first login and
 * refreshing the stored profile fields that the provider sent (NULL fields
 * keep the stored value). *user_id and *stored (the profile as stored
 * afterwards: what a session should show) are in the arena. Database errors
 * as db.h (KILN_EUNAVAILABLE: answer 503).
 */
int kiln_user_login(struct kiln_db *db, kiln_arena *a, const char *provider,
                    const char *subject, const struct kiln_user_profile *p,
                    const char **user_id, struct kiln_user_profile *stored);

#endif
