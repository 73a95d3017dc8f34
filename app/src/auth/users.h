/*
 * Users and their identities: a person keeps one internal id across
 * providers and logins. (provider, subject) → users.id through the
 * identities table; the first login creates both rows in one transaction,
 * or joins the identity to the user who already has its address when both
 * sides have proven that address (docs/AUTHENTICATION.md, "Login flow").
 * Worker threads.
 */
#ifndef KILN_AUTH_USERS_H
#define KILN_AUTH_USERS_H

#include <stdbool.h>

#include "core/arena.h"
#include "store/db.h"

struct kiln_user_profile {
    const char *email, *name, *first_name, *last_name, *image;
    /* Given: the provider vouches for email (an ID token's email_verified).
     * Stored: users.email_verified_at is set. */
    bool email_verified;
};

/* What a first login may do when its address already belongs to a user. */
enum kiln_user_link {
    /* Never look: the identity gets a user of its own, its address is never
     * marked verified, and nothing is refused (the development login,
     * whose address anyone may type). */
    KILN_USER_LINK_NEVER,
    /* Join that user when the provider vouches for the address and the
     * user's address is verified; refuse otherwise (OIDC providers). */
    KILN_USER_LINK_VERIFIED,
};

enum kiln_user_outcome {
    KILN_USER_KNOWN,    /* (provider, subject) was known */
    KILN_USER_CREATED,  /* a new user with this identity */
    KILN_USER_LINKED,   /* this identity joined the user who has its address */
    KILN_USER_REFUSED,  /* that user exists and one side has not proven the
                         * address: nothing was written, *user_id is NULL */
};

/* "known", "created", "linked", "refused" (for logs). */
const char *kiln_user_outcome_name(enum kiln_user_outcome o);

/*
 * The user id for (provider, subject), creating the user on first login (or
 * linking it, see link) and refreshing the stored profile fields that the
 * provider sent (NULL fields keep the stored value). Addresses compare
 * without regard to case. users.email_verified_at always speaks for
 * users.email: set when a provider vouches for the stored address; an
 * address the provider vouches for replaces the stored one with its proof;
 * one it does not vouch for never replaces a verified one.
 *
 * *user_id and *stored (the profile as stored afterwards: what a session
 * should show) are in the arena; when *outcome is KILN_USER_REFUSED the
 * return is 0, *user_id NULL and *stored untouched. Database errors as db.h
 * (KILN_EUNAVAILABLE: answer 503).
 */
int kiln_user_login(struct kiln_db *db, kiln_arena *a, const char *provider,
                    const char *subject, const struct kiln_user_profile *p,
                    enum kiln_user_link link, const char **user_id,
                    struct kiln_user_profile *stored, enum kiln_user_outcome *outcome);

#endif
