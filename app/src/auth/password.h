/*
 * Passwords: the rules a new one must meet (NIST SP 800-63B section
 * 3.1.1.2) and its Argon2id hash (OWASP Password Storage Cheat Sheet:
 * 19 MiB, 2 passes, 1 lane). Hashes are made and checked on request
 * workers, never on an event loop, and at most PASSWORD_HASH_CONCURRENCY
 * at once: each takes 19 MiB for some tens of milliseconds, so a flood of
 * logins queues (then answers 503) instead of taking the memory.
 * libargon2 is loaded on the first hash (core/dl.h).
 */
#ifndef KILN_AUTH_PASSWORD_H
#define KILN_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

/* The one set of hash parameters. A stored hash made with others is
 * verified with its own and reported for rehashing at the next login. */
#define KILN_ARGON2_M_KIB 19456u
#define KILN_ARGON2_T 2u
#define KILN_ARGON2_P 1u
#define KILN_ARGON2_SALT_BYTES 16u
#define KILN_ARGON2_HASH_BYTES 32u

/* Length bounds, in Unicode code points (NIST counts each as one
 * character). The floor is NIST's; PASSWORD_MIN_LENGTH may raise it. The
 * ceiling is well over NIST's "at least 64" and keeps a hash's input
 * small. */
#define KILN_PASSWORD_MIN_FLOOR 8u
#define KILN_PASSWORD_MAX_CHARS 256u

/* How long a hash waits for its turn before the request answers 503. */
#define KILN_PASSWORD_WAIT_MS 5000u

/* scripts/gen-common-passwords.sh: lowercased, sorted bytewise, each ended
 * by a newline in the blob, kiln_common_password_at[i] its offset. */
extern const char kiln_common_passwords[];
extern const uint32_t kiln_common_password_at[];
extern const size_t kiln_common_passwords_count;

/* PASSWORD_MIN_LENGTH and PASSWORD_HASH_CONCURRENCY (0: the CPUs online).
 * Once at start; without it the defaults hold (8, the CPUs). */
void kiln_password_init(unsigned min_chars, unsigned concurrency);

/* Why a proposed password is refused, or NULL when it is acceptable. */
enum kiln_password_problem {
    KILN_PASSWORD_OK = 0,
    KILN_PASSWORD_NOT_UTF8,
    KILN_PASSWORD_TOO_SHORT,
    KILN_PASSWORD_TOO_LONG,
    KILN_PASSWORD_COMMON,      /* on the list, ignoring ASCII case */
    KILN_PASSWORD_IS_EMAIL,    /* the account's email or its local part */
};
enum kiln_password_problem kiln_password_check(const char *pw, size_t len, const char *email);
/* The problem in words for the API's error detail (English, no secret). */
const char *kiln_password_problem_text(enum kiln_password_problem p);
/* The list check alone. */
bool kiln_password_is_common(const char *pw, size_t len);

/*
 * A new salted hash in the PHC string form ($argon2id$v=19$m=...), in the
 * arena. 0, KILN_EUNAVAILABLE (no turn within KILN_PASSWORD_WAIT_MS, or
 * libargon2 cannot be loaded: answer 503) or KILN_EIO.
 */
int kiln_password_hash(kiln_arena *a, const char *pw, size_t len, const char **encoded);
/*
 * Check pw against a stored hash; encoded NULL (no such account, or no
 * password on it) checks against a fixed hash of the same parameters, so
 * that the answer takes as long either way, and says no. *ok: it matched;
 * *rehash (may be NULL): it matched and the hash was made with other
 * parameters than today's. Errors as kiln_password_hash; a stored hash
 * that does not parse is a mismatch, logged.
 */
int kiln_password_verify(const char *encoded, const char *pw, size_t len, bool *ok,
                         bool *rehash);

/* The most hashes that ran at once since start (tests, metrics). */
unsigned kiln_password_peak(void);

#endif
