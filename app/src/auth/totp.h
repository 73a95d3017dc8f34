/*
 * Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP) for
 * two-factor sign-in, and what enrolment needs around them: base32
 * secrets (RFC 4648), the otpauth:// URI authenticator apps read, its QR
 * code as SVG, and recovery codes.
 *
 * The one decision to know: what authenticator apps actually implement is
 * 6 digits, HMAC-SHA-1 and 30-second steps (Google Authenticator ignores
 * the URI's algorithm and digits), so kiln_totp_verify and kiln_totp_uri
 * fix those; the general kiln_hotp / kiln_totp_code are for the RFC's test
 * vectors and tests. Replay is the caller's to store: kiln_totp_verify
 * returns the step it accepted, and the caller keeps it as the user's
 * last_step (RFC 6238 section 5.2: a code is used once).
 *
 * Threads: every function may be called from any thread (the QR code's
 * library is loaded once, under pthread_once); an arena belongs to one
 * thread at a time. Nothing here blocks on I/O except the first QR code,
 * which loads libqrencode.
 */
#ifndef KILN_AUTH_TOTP_H
#define KILN_AUTH_TOTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

#define KILN_TOTP_SECRET_BYTES 20            /* 160 bits, RFC 4226's recommendation */
#define KILN_TOTP_SECRET_B32_LEN 32          /* base32 of 20 bytes, no padding */
#define KILN_TOTP_DIGITS 6
#define KILN_TOTP_PERIOD 30
#define KILN_TOTP_RECOVERY_CODES 10
#define KILN_TOTP_RECOVERY_LEN 11            /* "xxxxx-xxxxx" */
/* kiln_totp_verify looks at most this many steps either side of now: a
 * misconfigured window must not turn one request into thousands of HMACs. */
#define KILN_TOTP_MAX_WINDOW 10

/* Encoded length of n bytes in base32 without padding (no NUL). */
static inline size_t kiln_base32_len(size_t n)
{
    return (n * 8 + 4) / 5;
}

/*
 * RFC 4648 base32 (A-Z2-7). encode: no padding, NUL-terminated, returns
 * the length; out needs kiln_base32_len(len) + 1 bytes, and with less it
 * writes "" (when cap > 0) and returns 0.
 * decode: case-insensitive, ignores spaces anywhere and a run of '='
 * padding at the end only (spaces may follow it); refuses any other
 * character, an impossible length (1, 3 or 6 characters past a multiple
 * of 8) and non-zero bits after the last byte (RFC 4648 section 3.5: only
 * one spelling decodes to a given key, so a typo is not silently taken).
 * false on bad input or when out (cap bytes) is too small. outlen may be
 * NULL.
 */
size_t kiln_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap);
bool kiln_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen);

enum kiln_totp_algo { KILN_TOTP_SHA1, KILN_TOTP_SHA256, KILN_TOTP_SHA512 };

/* RFC 4226 HOTP value truncated to digits (6..8; anything else is a caller
 * bug and aborts). */
uint32_t kiln_hotp(const uint8_t *key, size_t keylen, uint64_t counter, int digits,
                   enum kiln_totp_algo algo);
/* The code for unix time t (t < 0 counts as 0; period > 0) as digits
 * characters, zero-padded and NUL-terminated, into out (>= 9 bytes). */
void kiln_totp_code(const uint8_t *key, size_t keylen, int64_t t, unsigned period, int digits,
                    enum kiln_totp_algo algo, char *out);
/* A new random secret, base32 (KILN_TOTP_SECRET_B32_LEN chars + NUL).
 * 0 or KILN_EIO. */
int kiln_totp_new_secret(char out[KILN_TOTP_SECRET_B32_LEN + 1]);
/*
 * Check a 6-digit SHA-1 30 s code typed by a person against the base32
 * secret at unix time now, accepting the steps now-window..now+window
 * (window 1 = one step of clock drift either way; clamped to
 * 0..KILN_TOTP_MAX_WINDOW). A step at or before last_step (the last step
 * accepted for this user, -1 if none) is refused: a code is single-use
 * (RFC 6238 section 5.2). The caller stores the returned step as the new
 * last_step, atomically with the sign-in (two requests racing with one
 * code must not both win).
 * Leading/trailing spaces and one space in the middle ("123 456") are
 * tolerated; anything but 6 digits is refused. A secret that does not
 * decode, or is shorter than 128 bits (RFC 4226 section 4, R6), matches
 * nothing. Comparisons are constant-time, and every step of the window is
 * computed whatever matches.
 * Returns the matched step (>= 0; the latest one if the code matches
 * several) or -1.
 */
int64_t kiln_totp_verify(const char *secret_b32, const char *code, int64_t now, int window,
                         int64_t last_step);
/*
 * otpauth://totp/<issuer>:<account>?secret=<s>&issuer=<issuer>&algorithm=SHA1&digits=6&period=30
 * with issuer and account percent-encoded per the Key Uri Format (RFC 3986
 * unreserved kept, everything else %XX, including ':' '@' and spaces).
 * issuer may be NULL or "": then neither the label's prefix nor the
 * parameter. In the arena (never NULL).
 */
char *kiln_totp_uri(kiln_arena *a, const char *issuer, const char *account,
                    const char *secret_b32);
/*
 * The text as a QR code (error correction level M, 8-bit mode,
 * case-sensitive), as a standalone SVG document: a white background, a
 * 4-module quiet zone, one <path> of the dark modules
 * (shape-rendering="crispEdges"), viewBox in modules, no scripts or
 * external refs. Deterministic: the same text gives the same bytes. In the
 * arena; NULL when libqrencode cannot be loaded (logged once by core/dl.c)
 * or encoding fails (text too long for a QR code).
 */
char *kiln_totp_qr_svg(kiln_arena *a, const char *text);
/*
 * A new recovery code "xxxxx-xxxxx" from 23456789abcdefghjkmnpqrstuvwxyz
 * (no 0/o, 1/l/i look-alikes; lowercase), each character uniformly random
 * (rejection sampling, no modulo bias): about 49.5 bits. 0 or KILN_EIO.
 */
int kiln_totp_recovery_code(char out[KILN_TOTP_RECOVERY_LEN + 1]);
/*
 * The form a recovery code is stored and compared in: lowercase, without
 * dashes or spaces, then SHA-256 as 64 lowercase hex chars into out (65
 * bytes, NUL-terminated). false (out "") when what remains is not 10
 * characters of the alphabet, so a typo is refused before any lookup.
 * Unsalted, so that a stored code is found by equality. The ~50 random
 * bits make online guessing hopeless, but not a search of a leaked table
 * (2^50 SHA-256 is days of one GPU): the hashes deserve the same care as
 * the TOTP secrets stored beside them.
 */
bool kiln_totp_recovery_hash(const char *typed, char out[65]);

#endif
