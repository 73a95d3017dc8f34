/*
 * JWS verification against a JWK set, and ES256 signing; see jwt.h.
 *
 * The one rule a reader must keep in mind: the algorithm is decided by the
 * key, never by the token. The header's alg only has to agree with the key
 * the kid names (RSA ↔ RS256, EC P-256 ↔ ES256); a token cannot make us use
 * an RSA public key as an HMAC secret, or skip the signature.
 */
#include "auth/jwt.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "core/alloc.h"
#include "core/base64.h"
#include "core/buf.h"
#include "core/err.h"

enum alg { ALG_RS256, ALG_ES256 };

#define MAX_KEYS 64
#define MAX_KID 256
#define MAX_HEADER_B64 2048   /* a JOSE header is ~100 bytes */
#define MAX_RSA_BYTES 1024    /* 8192-bit modulus */
#define MIN_RSA_BITS 2048
#define P256_BYTES 32

struct jwk {
    char *kid;      /* NULL when the JWK has none */
    enum alg alg;   /* from kty (and crv): the only alg this key verifies */
    EVP_PKEY *pkey;
};

struct kiln_jwks {
    size_t n;
    struct jwk keys[MAX_KEYS];
};

/* --- JWK set ------------------------------------------------------------ */

/* Decode the base64url string member name of obj into out[0..cap). */
static bool b64_member(json_t *obj, const char *name, unsigned char *out, size_t cap,
                       size_t *len)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return false;
    return kiln_base64url_decode(json_string_value(v), json_string_length(v), out, cap, len) &&
           *len > 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* RFC 7518 section 6.3.1: n and e, big-endian unsigned. */
static EVP_PKEY *rsa_from_jwk(json_t *jwk)
{
    unsigned char n[MAX_RSA_BYTES], e[8];
    size_t nlen, elen;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;

    if (!b64_member(jwk, "n", n, sizeof n, &nlen) || !b64_member(jwk, "e", e, sizeof e, &elen))
        goto out;
    /* An even modulus or exponent, or e < 3, is no RSA key. */
    if (!(n[nlen - 1] & 1) || !(e[elen - 1] & 1))
        goto out;
    bn_n = BN_bin2bn(n, (int)nlen, NULL);
    bn_e = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!bn_n || !bn_e || !bld || BN_num_bits(bn_e) < 2 ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)))
        goto out;
    pkey = pkey_fromdata("RSA", params);
    if (pkey && EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

/* RFC 7518 section 6.2.1: crv P-256, x and y of exactly 32 bytes. */
static EVP_PKEY *ec_from_jwk(json_t *jwk)
{
    unsigned char pub[1 + 2 * P256_BYTES];
    size_t xlen, ylen;
    json_t *crv = json_object_get(jwk, "crv");
    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0)
        return NULL;
    pub[0] = 0x04; /* uncompressed point (SEC 1 section 2.3.3) */
    if (!b64_member(jwk, "x", pub + 1, P256_BYTES, &xlen) || xlen != P256_BYTES ||
        !b64_member(jwk, "y", pub + 1 + P256_BYTES, P256_BYTES, &ylen) || ylen != P256_BYTES)
        return NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *pkey = pkey_fromdata("EC", params);
    if (!pkey)
        return NULL;
    /* A point off the curve is an invalid-curve attack, not a key. */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

/* One JWK → a usable key, or false to skip it. */
static bool parse_jwk(json_t *o, struct jwk *out)
{
    if (!json_is_object(o))
        return false;
    json_t *kty = json_object_get(o, "kty");
    json_t *use = json_object_get(o, "use");
    json_t *alg = json_object_get(o, "alg");
    json_t *kid = json_object_get(o, "kid");
    if (!json_is_string(kty))
        return false;
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return false;
    if (kid && (!json_is_string(kid) || json_string_length(kid) == 0 ||
                json_string_length(kid) > MAX_KID))
        return false;
    const char *want_alg;
    if (strcmp(json_string_value(kty), "RSA") == 0) {
        out->alg = ALG_RS256;
        want_alg = "RS256";
    } else if (strcmp(json_string_value(kty), "EC") == 0) {
        out->alg = ALG_ES256;
        want_alg = "ES256";
    } else {
        return false;
    }
    /* A key pinned to another alg (PS256, RSA-OAEP …) is not for us. */
    if (alg && (!json_is_string(alg) || strcmp(json_string_value(alg), want_alg) != 0))
        return false;
    out->pkey = out->alg == ALG_RS256 ? rsa_from_jwk(o) : ec_from_jwk(o);
    if (!out->pkey) {
        ERR_clear_error();
        return false;
    }
    out->kid = kid ? kiln_strdup(json_string_value(kid)) : NULL;
    return true;
}

int kiln_jwks_parse(const char *json, size_t len, struct kiln_jwks **out)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_is_object(doc) ? json_object_get(doc, "keys") : NULL;
    *out = NULL;
    if (!json_is_array(keys)) {
        json_decref(doc);
        return KILN_EPROTO;
    }
    struct kiln_jwks *set = kiln_calloc(1, sizeof *set);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        if (set->n == MAX_KEYS)
            break;
        if (parse_jwk(k, &set->keys[set->n]))
            set->n++;
    }
    json_decref(doc);
    *out = set;
    return 0;
}

void kiln_jwks_free(struct kiln_jwks *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        free(set->keys[i].kid);
        EVP_PKEY_free(set->keys[i].pkey);
    }
    free(set);
}

size_t kiln_jwks_count(const struct kiln_jwks *set)
{
    return set ? set->n : 0;
}

/* --- verification --------------------------------------------------------- */

const char *kiln_jwt_reason(enum kiln_jwt_status st)
{
    switch (st) {
    case KILN_JWT_OK: return NULL;
    case KILN_JWT_INVALID: return "invalid_token";
    case KILN_JWT_UNKNOWN_KEY: return "bad_signature";
    case KILN_JWT_BAD_SIGNATURE: return "bad_signature";
    case KILN_JWT_WRONG_ISSUER: return "wrong_issuer";
    case KILN_JWT_WRONG_AUDIENCE: return "wrong_audience";
    case KILN_JWT_EXPIRED: return "token_expired";
    case KILN_JWT_NONCE_MISMATCH: return "nonce_mismatch";
    }
    return "invalid_token";
}

#define FAIL(st, why)       \
    do {                    \
        if (detail)         \
            *detail = (why); \
        return (st);        \
    } while (0)

/* base64url part → a JSON object (strict: no duplicate members). */
static json_t *decode_json_part(const char *p, size_t n)
{
    size_t cap = n / 4 * 3 + 3, len;
    unsigned char *raw = kiln_malloc(cap);
    json_t *obj = NULL;
    if (kiln_base64url_decode(p, n, raw, cap, &len)) {
        json_error_t jerr;
        obj = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, &jerr);
        if (obj && !json_is_object(obj)) {
            json_decref(obj);
            obj = NULL;
        }
    }
    free(raw);
    return obj;
}

static enum kiln_jwt_status find_key(const struct kiln_jwks *set, const char *kid, enum alg alg,
                                     const struct jwk **out, const char **detail)
{
    const struct jwk *hit = NULL;
    size_t named = 0, candidates = 0;
    for (size_t i = 0; set && i < set->n; i++) {
        const struct jwk *k = &set->keys[i];
        if (kid) {
            if (!k->kid || strcmp(k->kid, kid) != 0)
                continue;
            named++;
            if (k->alg == alg && !hit)
                hit = k;
        } else if (k->alg == alg) {
            candidates++;
            hit = k;
        }
    }
    if (kid && !named)
        FAIL(KILN_JWT_UNKNOWN_KEY, "no key with the token's kid");
    if (kid && !hit)
        FAIL(KILN_JWT_INVALID, "alg does not match the key type");
    if (!kid && candidates == 0)
        FAIL(KILN_JWT_UNKNOWN_KEY, "no key for the token's alg");
    /* Without a kid we take the provider's only key of the type; picking
     * among several would be guessing. */
    if (!kid && candidates > 1)
        FAIL(KILN_JWT_INVALID, "token has no kid and the set has several keys");
    *out = hit;
    return KILN_JWT_OK;
}

static bool verify_signature(const struct jwk *k, const char *tbs, size_t tbs_len,
                             const unsigned char *sig, size_t sig_len)
{
    unsigned char der[80]; /* a P-256 ECDSA-Sig-Value is at most 72 bytes */
    const unsigned char *s = sig;
    size_t s_len = sig_len;
    bool ok = false;

    if (k->alg == ALG_ES256) {
        /* JOSE sends r||s (RFC 7518 section 3.4); OpenSSL verifies DER. */
        if (sig_len != 2 * P256_BYTES)
            return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, P256_BYTES, NULL);
        BIGNUM *ss = BN_bin2bn(sig + P256_BYTES, P256_BYTES, NULL);
        if (!es || !r || !ss || !ECDSA_SIG_set0(es, r, ss)) {
            BN_free(r);
            BN_free(ss);
            ECDSA_SIG_free(es);
            return false;
        }
        int n = i2d_ECDSA_SIG(es, NULL);
        unsigned char *p = der;
        if (n <= 0 || (size_t)n > sizeof der || i2d_ECDSA_SIG(es, &p) != n) {
            ECDSA_SIG_free(es);
            return false;
        }
        ECDSA_SIG_free(es);
        s = der;
        s_len = (size_t)n;
    } else if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey)) {
        /* RFC 8017 section 8.2.2: exactly the modulus length. */
        return false;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
         EVP_DigestVerify(md, s, s_len, (const unsigned char *)tbs, tbs_len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error(); /* a failed verify leaves entries on this thread's queue */
    return ok;
}

/* A NumericDate (RFC 7519 section 2): a finite JSON number. */
static bool numeric_date(json_t *claims, const char *name, double *out)
{
    json_t *v = json_object_get(claims, name);
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return isfinite(*out);
}

static bool str_eq_const_time(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* OpenID Connect Core 1.0 section 3.1.3.7, in its order. */
static enum kiln_jwt_status check_claims(json_t *c, const struct kiln_jwt_expect *want,
                                         const char **detail)
{
    double now = (double)(want->now ? want->now : time(NULL));
    double exp, iat, nbf;

    json_t *iss = json_object_get(c, "iss");
    if (!json_is_string(iss) || !want->issuer ||
        (strcmp(json_string_value(iss), want->issuer) != 0 &&
         (!want->issuer_alt || strcmp(json_string_value(iss), want->issuer_alt) != 0)))
        FAIL(KILN_JWT_WRONG_ISSUER, "iss is not the provider's issuer");

    json_t *aud = json_object_get(c, "aud");
    size_t naud = 0;
    bool ours = false;
    if (json_is_string(aud)) {
        naud = 1;
        ours = strcmp(json_string_value(aud), want->audience) == 0;
    } else if (json_is_array(aud)) {
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a) {
            if (!json_is_string(a))
                FAIL(KILN_JWT_INVALID, "aud holds a non-string");
            naud++;
            ours = ours || strcmp(json_string_value(a), want->audience) == 0;
        }
    }
    if (!ours)
        FAIL(KILN_JWT_WRONG_AUDIENCE, "aud does not contain the client id");
    json_t *azp = json_object_get(c, "azp");
    if (naud > 1 && !azp)
        FAIL(KILN_JWT_WRONG_AUDIENCE, "several audiences and no azp");
    if (azp && (!json_is_string(azp) || strcmp(json_string_value(azp), want->audience) != 0))
        FAIL(KILN_JWT_WRONG_AUDIENCE, "azp is not the client id");

    if (!numeric_date(c, "exp", &exp))
        FAIL(KILN_JWT_INVALID, "exp missing");
    if (!(exp > now - KILN_JWT_SKEW_S))
        FAIL(KILN_JWT_EXPIRED, "exp has passed");
    if (!numeric_date(c, "iat", &iat))
        FAIL(KILN_JWT_INVALID, "iat missing");
    if (!(iat < now + KILN_JWT_SKEW_S))
        FAIL(KILN_JWT_INVALID, "iat is in the future");
    if (json_object_get(c, "nbf") &&
        (!numeric_date(c, "nbf", &nbf) || !(nbf < now + KILN_JWT_SKEW_S)))
        FAIL(KILN_JWT_INVALID, "nbf is in the future");

    if (want->nonce) {
        json_t *nonce = json_object_get(c, "nonce");
        if (!json_is_string(nonce) || !str_eq_const_time(json_string_value(nonce), want->nonce))
            FAIL(KILN_JWT_NONCE_MISMATCH, "nonce does not match the login attempt");
    }

    /* sub: "locally unique … MUST NOT exceed 255 ASCII characters" (3.1.3.7
     * via section 2). */
    json_t *sub = json_object_get(c, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0 || json_string_length(sub) > 255)
        FAIL(KILN_JWT_INVALID, "sub missing or too long");
    return KILN_JWT_OK;
}

enum kiln_jwt_status kiln_jwt_verify(kiln_str token, const struct kiln_jwks *keys,
                                     const struct kiln_jwt_expect *want, json_t **claims,
                                     const char **detail)
{
    json_t *header = NULL, *payload = NULL;
    enum kiln_jwt_status st = KILN_JWT_INVALID;
    const char *why = "malformed token";
    unsigned char sig[MAX_RSA_BYTES];
    size_t sig_len;
    const struct jwk *key = NULL;

    if (claims)
        *claims = NULL;
    if (!token.p || token.len == 0 || token.len > KILN_JWT_MAX_LEN) {
        why = token.len ? "token too long" : "empty token";
        goto out;
    }
    /* Compact serialization: exactly three non-empty base64url parts
     * (RFC 7515 section 7.1); padding is not part of it. */
    const char *d1 = memchr(token.p, '.', token.len);
    const char *end = token.p + token.len;
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)) || memchr(token.p, '=', token.len)) {
        why = "not three base64url parts";
        goto out;
    }
    size_t hlen = (size_t)(d1 - token.p), plen = (size_t)(d2 - d1 - 1);
    size_t slen = (size_t)(end - d2 - 1);
    if (hlen == 0 || plen == 0 || slen == 0 || hlen > MAX_HEADER_B64) {
        why = "empty or oversized part";
        goto out;
    }

    if (!kiln_base64url_decode(d2 + 1, slen, sig, sizeof sig, &sig_len)) {
        why = "signature is not base64url";
        goto out;
    }
    header = decode_json_part(token.p, hlen);
    if (!header) {
        why = "header is not base64url JSON";
        goto out;
    }
    json_t *alg = json_object_get(header, "alg");
    enum alg a;
    if (json_is_string(alg) && strcmp(json_string_value(alg), "RS256") == 0) {
        a = ALG_RS256;
    } else if (json_is_string(alg) && strcmp(json_string_value(alg), "ES256") == 0) {
        a = ALG_ES256;
    } else {
        why = "alg not allowed (RS256 or ES256 only)";
        goto out;
    }
    /* We implement no extension, so any critical one is not understood
     * (RFC 7515 section 4.1.11). */
    if (json_object_get(header, "crit")) {
        why = "crit header not supported";
        goto out;
    }
    json_t *kid = json_object_get(header, "kid");
    if (kid && (!json_is_string(kid) || json_string_length(kid) > MAX_KID)) {
        why = "kid is not a short string";
        goto out;
    }
    st = find_key(keys, kid ? json_string_value(kid) : NULL, a, &key, &why);
    if (st != KILN_JWT_OK)
        goto out;

    st = KILN_JWT_BAD_SIGNATURE;
    why = "signature does not verify";
    if (!verify_signature(key, token.p, (size_t)(d2 - token.p), sig, sig_len))
        goto out;

    /* Only now is the payload the provider's: parse and check it. */
    st = KILN_JWT_INVALID;
    payload = decode_json_part(d1 + 1, plen);
    if (!payload) {
        why = "payload is not base64url JSON";
        goto out;
    }
    st = check_claims(payload, want, &why);
    if (st == KILN_JWT_OK && claims) {
        *claims = payload;
        payload = NULL;
    }
out:
    if (detail)
        *detail = st == KILN_JWT_OK ? NULL : why;
    json_decref(header);
    json_decref(payload);
    return st;
}

/* --- ES256 signing (Apple's client secret) -------------------------------- */

static bool is_p256(EVP_PKEY *k)
{
    char group[64];
    size_t n;
    return k && EVP_PKEY_is_a(k, "EC") &&
           EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                          &n) == 1 &&
           (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0);
}

/* Never prompt for a passphrase: an encrypted key simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

#define MAX_PEM 16384

EVP_PKEY *kiln_jwt_load_p256_pem(const char *pem, size_t len)
{
    kiln_buf b;
    EVP_PKEY *key = NULL;
    if (!pem || len == 0 || len > MAX_PEM)
        return NULL;
    kiln_buf_init(&b, 2 * MAX_PEM);
    bool armored = memmem(pem, len, "-----BEGIN", 10) != NULL;
    size_t col = 0;
    if (!armored)
        kiln_buf_append_c(&b, "-----BEGIN PRIVATE KEY-----\n");
    for (size_t i = 0; i < len; i++) {
        char c = pem[i];
        /* Env files write newlines as the two characters \ and n. */
        if (c == '\\' && i + 1 < len && (pem[i + 1] == 'n' || pem[i + 1] == 'r')) {
            c = pem[++i] == 'n' ? '\n' : '\r';
        }
        if (armored) {
            kiln_buf_append(&b, &c, 1);
        } else if (c != '\n' && c != '\r' && c != ' ' && c != '\t' && c != '"') {
            /* A bare body: rewrap at 64 columns as PEM (RFC 7468) wants. */
            kiln_buf_append(&b, &c, 1);
            if (++col == 64) {
                kiln_buf_append_c(&b, "\n");
                col = 0;
            }
        }
    }
    if (!armored)
        kiln_buf_append_c(&b, "\n-----END PRIVATE KEY-----\n");

    BIO *bio = b.p ? BIO_new_mem_buf(b.p, (int)b.len) : NULL;
    if (bio)
        key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (b.p)
        explicit_bzero(b.p, b.len);
    kiln_buf_free(&b);
    if (key && !is_p256(key)) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    ERR_clear_error();
    return key;
}

char *kiln_jwt_sign_es256(EVP_PKEY *key, const char *kid, kiln_str claims)
{
    json_t *hdr = NULL;
    char *htxt = NULL, *out = NULL;
    EVP_MD_CTX *md = NULL;
    ECDSA_SIG *es = NULL;
    unsigned char der[80], raw[2 * P256_BYTES];
    size_t der_len = sizeof der;

    if (!is_p256(key) || !claims.p || claims.len > KILN_JWT_MAX_LEN)
        goto fail;
    hdr = kid ? json_pack("{s:s, s:s}", "alg", "ES256", "kid", kid)
              : json_pack("{s:s}", "alg", "ES256");
    htxt = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    if (!htxt)
        goto fail;
    size_t hl = strlen(htxt);
    size_t cap = kiln_base64url_len(hl) + 1 + kiln_base64url_len(claims.len) + 1 +
                 kiln_base64url_len(sizeof raw) + 1;
    out = kiln_malloc(cap);
    kiln_base64url_encode(htxt, hl, out);
    size_t pos = strlen(out);
    out[pos++] = '.';
    kiln_base64url_encode(claims.p, claims.len, out + pos);
    pos += strlen(out + pos);

    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &der_len, (const unsigned char *)out, pos) != 1)
        goto fail;
    const unsigned char *p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *s;
    if (!es)
        goto fail;
    ECDSA_SIG_get0(es, &r, &s);
    /* Fixed-width big-endian halves (RFC 7518 section 3.4). */
    if (BN_bn2binpad(r, raw, P256_BYTES) != P256_BYTES ||
        BN_bn2binpad(s, raw + P256_BYTES, P256_BYTES) != P256_BYTES)
        goto fail;
    out[pos++] = '.';
    kiln_base64url_encode(raw, sizeof raw, out + pos);

    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    free(htxt);
    json_decref(hdr);
    return out;

fail:
    ERR_clear_error();
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    free(htxt);
    json_decref(hdr);
    free(out);
    return NULL;
}
