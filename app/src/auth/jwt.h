/*
 * JSON Web Tokens as OpenID Connect uses them: verifying an ID token (a
 * compact JWS, RFC 7515) against a provider's JWK set (RFC 7517), and
 * signing the ES256 client secret Apple wants.
 *
 * Only RS256 and ES256 are accepted, and the header's alg must agree with
 * the type of the key that verifies it: "none", HMAC and anything else are
 * refused before a key is looked at, which closes the alg-confusion attacks
 * (RFC 8725 section 2.1). Parsing is strict (exactly three base64url parts,
 * no duplicate JSON members, a size cap) because the token comes from the
 * network. Keys are OpenSSL 3 EVP_PKEYs built from the JWK members.
 *
 * Threads: a parsed kiln_jwks is read-only and may be shared; every
 * function is thread-safe.
 */
#ifndef KILN_AUTH_JWT_H
#define KILN_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/str.h"

/* Longest compact token accepted; ID tokens are 1-2 KiB. */
#define KILN_JWT_MAX_LEN 16384
/* Clock skew allowed on exp, iat and nbf, in seconds. */
#define KILN_JWT_SKEW_S 60

/* A parsed JWK set: the signature keys we can use (RSA of 2048 to 8192
 * bits; EC P-256), at most 64. Opaque. */
struct kiln_jwks;

/*
 * Parse a JWK set document ({"keys":[…]}). Keys that are not for
 * signatures ("use" other than "sig"), of another type or curve, with an
 * "alg" other than RS256/ES256, or malformed, are skipped: a provider may
 * publish keys we have no use for. Returns 0 and a new set in *out (free
 * with kiln_jwks_free; it may hold zero keys), or KILN_EPROTO when the
 * document is not a JWK set.
 */
int kiln_jwks_parse(const char *json, size_t len, struct kiln_jwks **out);
void kiln_jwks_free(struct kiln_jwks *keys); /* NULL allowed */
size_t kiln_jwks_count(const struct kiln_jwks *keys);

enum kiln_jwt_status {
    KILN_JWT_OK = 0,
    KILN_JWT_INVALID,        /* malformed, alg refused, claim missing, iat/nbf ahead */
    KILN_JWT_UNKNOWN_KEY,    /* no key in the set has the token's kid */
    KILN_JWT_BAD_SIGNATURE,
    KILN_JWT_WRONG_ISSUER,
    KILN_JWT_WRONG_AUDIENCE, /* aud lacks the client, or azp is not the client */
    KILN_JWT_EXPIRED,
    KILN_JWT_NONCE_MISMATCH,
};

/* The reason code of oidc.h for a status: "invalid_token", "bad_signature"
 * (KILN_JWT_UNKNOWN_KEY too), "wrong_issuer", …; NULL for KILN_JWT_OK. */
const char *kiln_jwt_reason(enum kiln_jwt_status st);

struct kiln_jwt_expect {
    const char *issuer;   /* iss must equal it exactly */
    const char *audience; /* our client_id: in aud; azp, when present, equals it */
    const char *nonce;    /* NULL: not checked; otherwise nonce must equal it */
    time_t now;           /* 0: time(NULL) */
    /* A second accepted iss, or NULL. Google documents that its ID tokens
     * carry "accounts.google.com" or "https://accounts.google.com". */
    const char *issuer_alt;
};

/*
 * Verify a compact JWS and its claims, in this order: shape, header (alg,
 * kid, crit), key, signature, then iss, aud/azp, exp, iat, nbf, nonce, sub.
 * On KILN_JWT_OK *claims (when claims is not NULL) gets a new reference to
 * the payload object; release it with json_decref. *detail (when not NULL)
 * gets a static phrase saying what failed, for logs; never token content.
 */
enum kiln_jwt_status kiln_jwt_verify(kiln_str token, const struct kiln_jwks *keys,
                                     const struct kiln_jwt_expect *want, json_t **claims,
                                     const char **detail);

/*
 * Read a PEM private key that must be EC P-256 (Apple's .p8 file: PKCS#8
 * "BEGIN PRIVATE KEY", or SEC1 "BEGIN EC PRIVATE KEY"). Literal "\n"
 * sequences, as env files write newlines, are read as newlines, and a bare
 * base64 body without the BEGIN/END lines is accepted. Encrypted keys are
 * refused (no passphrase prompt). Returns the key (EVP_PKEY_free) or NULL.
 */
EVP_PKEY *kiln_jwt_load_p256_pem(const char *pem, size_t len);

/*
 * Sign claims (a JSON object's text) as a compact JWS with header
 * {"alg":"ES256","kid":kid}; the signature is JOSE's raw r||s (RFC 7518
 * section 3.4), not DER. key must be a P-256 private key. Returns a
 * malloc'd NUL-terminated token (free) or NULL on failure.
 */
char *kiln_jwt_sign_es256(EVP_PKEY *key, const char *kid, kiln_str claims);

#endif
