/* Password rules and Argon2id hashes; see password.h. */
#include "auth/password.h"

#include <errno.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dl.h"
#include "core/err.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    unsigned min_chars, slots, busy, peak;
} P = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, KILN_PASSWORD_MIN_FLOOR, 0, 0, 0 };

static unsigned cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

void kiln_password_init(unsigned min_chars, unsigned concurrency)
{
    pthread_mutex_lock(&P.lock);
    P.min_chars = min_chars < KILN_PASSWORD_MIN_FLOOR ? KILN_PASSWORD_MIN_FLOOR : min_chars;
    P.slots = concurrency ? concurrency : cpus();
    pthread_mutex_unlock(&P.lock);
}

/* ---- rules ---------------------------------------------------------------- */

static int cmp_lower(const char *pw, size_t len, const char *entry)
{
    for (size_t i = 0;; i++) {
        unsigned char e = (unsigned char)entry[i];
        if (i == len)
            return e == '\n' ? 0 : -1;
        if (e == '\n')
            return 1;
        unsigned char c = (unsigned char)pw[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != e)
            return c < e ? -1 : 1;
    }
}

bool kiln_password_is_common(const char *pw, size_t len)
{
    size_t lo = 0, hi = kiln_common_passwords_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_lower(pw, len, kiln_common_passwords + kiln_common_password_at[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

static bool same_ci(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

enum kiln_password_problem kiln_password_check(const char *pw, size_t len, const char *email)
{
    size_t chars = 0;
    for (size_t i = 0; i < len; chars++) {
        size_t n = kiln_utf8_len((const unsigned char *)pw + i, len - i);
        if (!n)
            return KILN_PASSWORD_NOT_UTF8;
        i += n;
    }
    pthread_mutex_lock(&P.lock);
    unsigned min = P.min_chars;
    pthread_mutex_unlock(&P.lock);
    if (chars < min)
        return KILN_PASSWORD_TOO_SHORT;
    if (chars > KILN_PASSWORD_MAX_CHARS)
        return KILN_PASSWORD_TOO_LONG;
    if (kiln_password_is_common(pw, len))
        return KILN_PASSWORD_COMMON;
    /* NIST also lists context words: the account's own address, or the
     * part before the @, is the first guess of anyone who knows it. */
    if (email && *email) {
        const char *at = strchr(email, '@');
        if (same_ci(pw, len, email, strlen(email)) ||
            (at && same_ci(pw, len, email, (size_t)(at - email))))
            return KILN_PASSWORD_IS_EMAIL;
    }
    return KILN_PASSWORD_OK;
}

const char *kiln_password_problem_text(enum kiln_password_problem p)
{
    switch (p) {
    case KILN_PASSWORD_OK:
        return "acceptable";
    case KILN_PASSWORD_NOT_UTF8:
        return "must be valid UTF-8";
    case KILN_PASSWORD_TOO_SHORT:
        return "is too short";
    case KILN_PASSWORD_TOO_LONG:
        return "is too long (at most 256 characters)";
    case KILN_PASSWORD_COMMON:
        return "is too common: it appears in lists of leaked passwords";
    case KILN_PASSWORD_IS_EMAIL:
        return "must not be the email address";
    }
    return "is not acceptable";
}

/* ---- turns ---------------------------------------------------------------- */

static int take_turn(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += KILN_PASSWORD_WAIT_MS / 1000;
    until.tv_nsec += (long)(KILN_PASSWORD_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&P.lock);
    if (!P.slots)
        P.slots = cpus();
    int rc = 0;
    while (P.busy >= P.slots && rc == 0)
        rc = pthread_cond_timedwait(&P.freed, &P.lock, &until);
    if (P.busy < P.slots) {
        if (++P.busy > P.peak)
            P.peak = P.busy;
        rc = 0;
    }
    pthread_mutex_unlock(&P.lock);
    if (rc) {
        kiln_log(KILN_LOG_WARNING, "password hashing saturated: a request waited too long",
                 NULL);
        return KILN_EUNAVAILABLE;
    }
    return 0;
}

static void end_turn(void)
{
    pthread_mutex_lock(&P.lock);
    P.busy--;
    pthread_cond_signal(&P.freed);
    pthread_mutex_unlock(&P.lock);
}

/* ---- hashes --------------------------------------------------------------- */

/*
 * libargon2 takes its 19 MiB with malloc. glibc serves a block that large
 * by mmap, but after freeing one it raises its mmap threshold to that
 * size, and from then on every worker thread's arena keeps 19 MiB of its
 * own after each hash: the bound on hashes at once then bounds nothing
 * (bench/accounts.sh measured 211-249 MiB over idle at 16 and 64
 * connections with two hashes at a time). A fixed threshold keeps large
 * blocks mapped and unmapped, so the memory leaves with the hash. Set at
 * the first hash, so that an instance nobody signs in to by password
 * keeps glibc's defaults; nothing else Kiln allocates comes near 1 MiB on
 * a hot path.
 */
static pthread_once_t threshold_once = PTHREAD_ONCE_INIT;

static void fix_threshold(void)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

static int load(void)
{
    pthread_once(&threshold_once, fix_threshold);
    return kiln_dl_argon2() ? KILN_EUNAVAILABLE : 0;
}

/* Hash under a turn already taken. */
static int hash_now(const char *pw, size_t len, char *out, size_t cap)
{
    unsigned char salt[KILN_ARGON2_SALT_BYTES];
    if (kiln_random_bytes(salt, sizeof salt))
        return KILN_EIO;
    int rc = kiln_argon2.argon2id_hash_encoded(KILN_ARGON2_T, KILN_ARGON2_M_KIB, KILN_ARGON2_P,
                                               pw, len, salt, sizeof salt,
                                               KILN_ARGON2_HASH_BYTES, out, cap);
    if (rc != ARGON2_OK) {
        kiln_log(KILN_LOG_ERROR, "password hash failed", "error",
                 kiln_argon2.argon2_error_message(rc), NULL);
        return KILN_EIO;
    }
    return 0;
}

static size_t encoded_cap(void)
{
    return kiln_argon2.argon2_encodedlen(KILN_ARGON2_T, KILN_ARGON2_M_KIB, KILN_ARGON2_P,
                                         KILN_ARGON2_SALT_BYTES, KILN_ARGON2_HASH_BYTES,
                                         Argon2_id);
}

int kiln_password_hash(kiln_arena *a, const char *pw, size_t len, const char **encoded)
{
    int err = load();
    if (err || (err = take_turn()))
        return err;
    size_t cap = encoded_cap();
    char *out = kiln_arena_alloc(a, cap);
    err = hash_now(pw, len, out, cap);
    end_turn();
    if (!err)
        *encoded = out;
    return err;
}

/* The hash an unknown account is checked against: made once, of a random
 * password nobody knows, with today's parameters. */
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy[160];
static bool dummy_ok;

static void make_dummy(void)
{
    unsigned char pw[24];
    if (kiln_random_bytes(pw, sizeof pw) == 0 && encoded_cap() <= sizeof dummy)
        dummy_ok = hash_now((const char *)pw, sizeof pw, dummy, sizeof dummy) == 0;
    OPENSSL_cleanse(pw, sizeof pw);
}

/* "$argon2id$v=19$m=19456,t=2,p=1$": what today's hashes start with. */
static bool current_params(const char *encoded)
{
    char want[64];
    int n = snprintf(want, sizeof want, "$argon2id$v=%d$m=%u,t=%u,p=%u$", ARGON2_VERSION_NUMBER,
                     KILN_ARGON2_M_KIB, KILN_ARGON2_T, KILN_ARGON2_P);
    return n > 0 && strncmp(encoded, want, (size_t)n) == 0;
}

int kiln_password_verify(const char *encoded, const char *pw, size_t len, bool *ok,
                         bool *rehash)
{
    *ok = false;
    if (rehash)
        *rehash = false;
    int err = load();
    if (err || (err = take_turn()))
        return err;
    const char *against = encoded;
    if (!against) {
        pthread_once(&dummy_once, make_dummy);
        against = dummy_ok ? dummy : NULL;
    }
    int rc = against ? kiln_argon2.argon2id_verify(against, pw, len) : ARGON2_VERIFY_MISMATCH;
    end_turn();
    if (!encoded)
        return against ? 0 : KILN_EIO;
    if (rc == ARGON2_OK) {
        *ok = true;
        if (rehash)
            *rehash = !current_params(encoded);
    } else if (rc != ARGON2_VERIFY_MISMATCH) {
        /* Not a wrong password: a stored hash we cannot read (another
         * algorithm, or damaged). The person cannot sign in with it; a
         * reset gives the account a fresh one. */
        kiln_log(KILN_LOG_ERROR, "stored password hash unreadable", "error",
                 kiln_argon2.argon2_error_message(rc), NULL);
    }
    return 0;
}

unsigned kiln_password_peak(void)
{
    pthread_mutex_lock(&P.lock);
    unsigned n = P.peak;
    pthread_mutex_unlock(&P.lock);
    return n;
}
