/*
 * WebAuthn Level 2 (https://www.w3.org/TR/webauthn-2/), the relying party's
 * side of passkeys: verifying a registration (section 7.1) and an
 * authentication assertion (section 7.2). Pure functions over the bytes the
 * browser sent; storing credentials, issuing challenges and finding the
 * credential an assertion names are the caller's.
 *
 * Kiln asks for attestation "none": an attestation statement is parsed (it
 * must be a CBOR map, and empty for fmt "none") but its trust path is never
 * evaluated, so a registration proves possession of the key, not the make
 * of the authenticator. Algorithms: ES256 (P-256), RS256 (2048 to 8192
 * bits) and EdDSA (Ed25519); what the authenticator's COSE key names must
 * be one of them.
 *
 * Everything here is untrusted input: clientDataJSON is capped at 16 KiB,
 * an attestationObject at 64 KiB, authenticatorData at 16 KiB (all far
 * above what browsers send), CBOR must be definite-length, well-formed,
 * without tags, at most 8 levels deep and without duplicate map keys.
 * Refusals come back as KILN_EINVAL and a short static reason, for the
 * log: a client is better told only that the passkey was refused, as the
 * reasons help an attacker more than a user.
 *
 * Threads: any thread; no shared state but libcbor's one-time load. The
 * work is a SHA-256 or two, a CBOR decode and one signature check (at
 * worst RSA-8192 with a 64-bit exponent, about a millisecond), small enough
 * for a fiber.
 * Needs libcbor at run time (core/dl.h): without it both functions return
 * KILN_EIO, why "libcbor unavailable".
 */
#ifndef KILN_AUTH_WEBAUTHN_H
#define KILN_AUTH_WEBAUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The relying party: borrowed for the call. */
struct kiln_webauthn_rp {
    const char *rp_id;          /* e.g. "example.com" */
    const char *const *origins; /* allowed origins, exact match, e.g. "https://example.com" */
    size_t norigins;
};

/* COSE algorithm identifiers (RFC 9053, RFC 8812). */
enum { KILN_WEBAUTHN_ES256 = -7, KILN_WEBAUTHN_RS256 = -257, KILN_WEBAUTHN_EDDSA = -8 };

/* Longest credential id (WebAuthn Level 3, section 7.1 step 23). */
#define KILN_WEBAUTHN_MAX_CRED_ID 1023

/* A registered credential: what the caller stores with the user. */
struct kiln_webauthn_credential {
    uint8_t id[KILN_WEBAUTHN_MAX_CRED_ID];
    size_t id_len;                    /* 1..KILN_WEBAUTHN_MAX_CRED_ID */
    int alg;                          /* COSE algorithm: one of the enum above */
    uint8_t *public_key;              /* SubjectPublicKeyInfo DER; kiln_webauthn_credential_free */
    size_t public_key_len;
    uint32_t sign_count;              /* 0: the authenticator keeps no counter */
    bool user_verified, backup_eligible, backed_up;
    uint8_t aaguid[16];               /* as sent; not attested ("none") */
    char fmt[32];                     /* attestation format as sent, NUL-terminated */
};

/* Frees c->public_key and empties it; c itself is the caller's. NULL allowed. */
void kiln_webauthn_credential_free(struct kiln_webauthn_credential *c);

/*
 * Registration ceremony, section 7.1 steps 5-26 as they apply to an RP
 * that asks for attestation "none". client_data: clientDataJSON as the
 * browser sent it (base64url-decoded by the caller); att_obj: the
 * attestationObject (raw CBOR); challenge: the one the server issued for
 * this ceremony, base64url as sent to the browser, compared exactly with
 * clientData.challenge; require_uv: whether the UV flag must be set.
 *
 * Returns 0 and fills *out (overwritten whole: free a previous key first;
 * the caller must still check that out->id is not registered yet, step
 * 25), or KILN_EINVAL with *why a static reason ("wrong type", "challenge
 * mismatch", "origin not allowed", "cross-origin", "bad client data",
 * "bad cbor", "bad attestation", "bad authenticator data", "rp id
 * mismatch", "user not present", "user not verified", "bad backup flags",
 * "no credential data", "unsupported algorithm", "bad key"), or KILN_EIO
 * without libcbor. On failure *out holds no key.
 */
int kiln_webauthn_register(const struct kiln_webauthn_rp *rp, const uint8_t *client_data,
                           size_t client_data_len, const uint8_t *att_obj, size_t att_obj_len,
                           const char *challenge, bool require_uv,
                           struct kiln_webauthn_credential *out, const char **why);

/*
 * Authentication ceremony, section 7.2 steps 10-21: client_data
 * (clientDataJSON, type "webauthn.get"), auth_data (authenticatorData),
 * sig (DER ECDSA for ES256, PKCS#1 v1.5 with SHA-256 for RS256, the raw 64
 * bytes for EdDSA) over authenticatorData || SHA-256(clientDataJSON),
 * checked with the stored key (spki, SubjectPublicKeyInfo DER as
 * registration produced it) and its algorithm.
 *
 * Signature counter (step 21): when the stored or the new count is not
 * zero, the new one must be greater, else KILN_EINVAL "counter went back":
 * two authenticators hold the same key, one of them a clone. Returns 0,
 * *new_count the count to store and *uv the UV flag; or KILN_EINVAL with
 * *why as for registration, or "bad signature", "counter went back"; or
 * KILN_EIO without libcbor. On failure *new_count is stored_count and *uv
 * false.
 */
int kiln_webauthn_assert(const struct kiln_webauthn_rp *rp, const uint8_t *client_data,
                         size_t client_data_len, const uint8_t *auth_data, size_t auth_data_len,
                         const uint8_t *sig, size_t sig_len, const uint8_t *spki, size_t spki_len,
                         int alg, uint32_t stored_count, const char *challenge, bool require_uv,
                         uint32_t *new_count, bool *uv, const char **why);

#endif
