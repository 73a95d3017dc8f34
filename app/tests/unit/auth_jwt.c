/*
 * Unit tests for app/src/auth/jwt.c. Keys are generated here with OpenSSL
 * (RSA-2048, P-256); JWKs and signed tokens are built by this file's own
 * code, independent of the signer under test, so a mistake shared by
 * signer and verifier (r||s order, base64 flavour) cannot hide. Every
 * refusal is checked for its reason code, not just for failing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "test_util.h"

#include "auth/jwt.h"
#include "core/base64.h"
#include "core/err.h"

#define ISS "https://issuer.example"
#define AUD "client-1"
#define NONCE "n-0123456789"
#define NOW 1700000000L

static EVP_PKEY *rsa1, *rsa2, *ec1, *ec2;
static struct kiln_jwks *jwks; /* rsa1 as "r1", ec1 as "e1" */

/* --- building blocks --------------------------------------------------------- */

static char *b64(const void *p, size_t n)
{
    char *out = malloc(kiln_base64url_len(n) + 1);
    kiln_base64url_encode(p, n, out);
    return out;
}

static char *b64_bn(const BIGNUM *bn, int pad)
{
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    assert_true(n > 0);
    return b64(buf, (size_t)n);
}

/* A public JWK for key; extra is spliced in verbatim (",\"use\":\"enc\""). */
static char *jwk_of(EVP_PKEY *key, const char *kid, const char *extra)
{
    char *out = malloc(4096);
    BIGNUM *a = NULL, *b = NULL;
    if (EVP_PKEY_is_a(key, "RSA")) {
        assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &a), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &b), 1);
        char *n = b64_bn(a, 0), *e = b64_bn(b, 0);
        snprintf(out, 4096, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n,
                 e, extra ? extra : "");
        free(n);
        free(e);
    } else {
        assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &a), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &b), 1);
        int width = (EVP_PKEY_get_bits(key) + 7) / 8;
        char *x = b64_bn(a, width), *y = b64_bn(b, width);
        snprintf(out, 4096,
                 "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s}",
                 kid, x, y, extra ? extra : "");
        free(x);
        free(y);
    }
    BN_free(a);
    BN_free(b);
    return out;
}

static struct kiln_jwks *jwks_of(const char *keys_json)
{
    char doc[16384];
    struct kiln_jwks *set = NULL;
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", keys_json);
    assert_int_equal(kiln_jwks_parse(doc, strlen(doc), &set), 0);
    return set;
}

/* Sign header.payload with key: RS256 for RSA, ES256 (raw r||s) for EC. */
static char *sign_raw(EVP_PKEY *key, const char *header, const char *payload)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + 2;
    char *input = malloc(n);
    snprintf(input, n, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    if (EVP_PKEY_is_a(key, "EC")) {
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sig_len);
        assert_non_null(es);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
        sig_len = 64;
        ECDSA_SIG_free(es);
    }
    char *s = b64(sig, sig_len);
    n = strlen(input) + strlen(s) + 2;
    char *tok = malloc(n);
    snprintf(tok, n, "%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return tok;
}

static char *claims_json(const char *iss, const char *aud, const char *azp, long exp, long iat,
                         const char *nonce)
{
    char *out = malloc(1024);
    char azp_s[128] = "", nonce_s[128] = "";
    if (azp)
        snprintf(azp_s, sizeof azp_s, ",\"azp\":\"%s\"", azp);
    if (nonce)
        snprintf(nonce_s, sizeof nonce_s, ",\"nonce\":\"%s\"", nonce);
    snprintf(out, 1024,
             "{\"iss\":\"%s\",\"aud\":%s%s,\"sub\":\"user-42\",\"exp\":%ld,\"iat\":%ld%s,"
             "\"email\":\"ada@example.com\",\"email_verified\":true}",
             iss, aud, azp_s, NOW + exp, NOW + iat, nonce_s);
    return out;
}

static const char *good_claims(void)
{
    static char *c;
    if (!c)
        c = claims_json(ISS, "\"" AUD "\"", NULL, 600, 0, NONCE);
    return c;
}

static const struct kiln_jwt_expect expect = { ISS, AUD, NONCE, NOW, NULL };

static enum kiln_jwt_status verify_in(const struct kiln_jwks *set, const char *tok,
                                      const struct kiln_jwt_expect *want)
{
    json_t *claims = NULL;
    const char *detail = NULL;
    enum kiln_jwt_status st = kiln_jwt_verify(kiln_str_c(tok), set, want, &claims, &detail);
    if (st == KILN_JWT_OK) {
        assert_non_null(claims);
        assert_null(detail);
        json_decref(claims);
    } else {
        assert_null(claims);
        assert_non_null(detail);
    }
    return st;
}

static enum kiln_jwt_status verify(const char *tok)
{
    return verify_in(jwks, tok, &expect);
}

#define ASSERT_STATUS(ctx, got, want)                                                   \
    do {                                                                                \
        enum kiln_jwt_status g_ = (got), w_ = (want);                                   \
        if (g_ != w_)                                                                   \
            fail_msg("[%s] status %d (%s), want %d (%s)", (ctx), g_,                    \
                     kiln_jwt_reason(g_) ? kiln_jwt_reason(g_) : "ok", w_,             \
                     kiln_jwt_reason(w_) ? kiln_jwt_reason(w_) : "ok");               \
    } while (0)

static int setup(void **state)
{
    (void)state;
    rsa1 = EVP_RSA_gen(2048);
    rsa2 = EVP_RSA_gen(2048);
    ec1 = EVP_EC_gen("P-256");
    ec2 = EVP_EC_gen("P-256");
    if (!rsa1 || !rsa2 || !ec1 || !ec2)
        return -1;
    char keys[8192];
    char *a = jwk_of(rsa1, "r1", NULL), *b = jwk_of(ec1, "e1", ",\"use\":\"sig\",\"alg\":\"ES256\"");
    snprintf(keys, sizeof keys, "%s,%s", a, b);
    free(a);
    free(b);
    jwks = jwks_of(keys);
    return kiln_jwks_count(jwks) == 2 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kiln_jwks_free(jwks);
    EVP_PKEY_free(rsa1);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec1);
    EVP_PKEY_free(ec2);
    return 0;
}

/* --- tests ---------------------------------------------------------------- */

static void test_valid_rs256_es256(void **state)
{
    (void)state;
    char *t1 = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWT\"}", good_claims());
    char *t2 = sign_raw(ec1, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", good_claims());
    ASSERT_STATUS("rs256", verify(t1), KILN_JWT_OK);
    ASSERT_STATUS("es256", verify(t2), KILN_JWT_OK);

    /* The claims come back to the caller. */
    json_t *claims = NULL;
    assert_int_equal(kiln_jwt_verify(kiln_str_c(t2), jwks, &expect, &claims, NULL), KILN_JWT_OK);
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "user-42");
    assert_string_equal(json_string_value(json_object_get(claims, "email")), "ada@example.com");
    json_decref(claims);
    free(t1);
    free(t2);
}

/* Claims checks, each through both algorithms. */
struct claims_case {
    const char *name;
    const char *iss;
    const char *aud; /* JSON text */
    const char *azp; /* NULL: absent */
    long exp, iat;   /* seconds from NOW */
    const char *nonce;
    enum kiln_jwt_status want;
};

static const struct claims_case claims_cases[] = {
    { "valid", ISS, "\"" AUD "\"", NULL, 600, 0, NONCE, KILN_JWT_OK },
    { "wrong iss", "https://evil.example", "\"" AUD "\"", NULL, 600, 0, NONCE,
      KILN_JWT_WRONG_ISSUER },
    { "iss with a trailing slash", ISS "/", "\"" AUD "\"", NULL, 600, 0, NONCE,
      KILN_JWT_WRONG_ISSUER },
    { "wrong aud", ISS, "\"client-2\"", NULL, 600, 0, NONCE, KILN_JWT_WRONG_AUDIENCE },
    { "aud array, one entry", ISS, "[\"" AUD "\"]", NULL, 600, 0, NONCE, KILN_JWT_OK },
    { "aud array with azp", ISS, "[\"other\",\"" AUD "\"]", AUD, 600, 0, NONCE, KILN_JWT_OK },
    { "aud array without azp", ISS, "[\"" AUD "\",\"other\"]", NULL, 600, 0, NONCE,
      KILN_JWT_WRONG_AUDIENCE },
    { "aud array, azp another client", ISS, "[\"" AUD "\",\"other\"]", "other", 600, 0, NONCE,
      KILN_JWT_WRONG_AUDIENCE },
    { "aud array without us", ISS, "[\"a\",\"b\"]", "a", 600, 0, NONCE,
      KILN_JWT_WRONG_AUDIENCE },
    { "single aud, azp another client", ISS, "\"" AUD "\"", "other", 600, 0, NONCE,
      KILN_JWT_WRONG_AUDIENCE },
    { "aud not a string", ISS, "42", NULL, 600, 0, NONCE, KILN_JWT_WRONG_AUDIENCE },
    { "expired", ISS, "\"" AUD "\"", NULL, -61, -700, NONCE, KILN_JWT_EXPIRED },
    { "expired within skew", ISS, "\"" AUD "\"", NULL, -30, -700, NONCE, KILN_JWT_OK },
    { "iat in the future", ISS, "\"" AUD "\"", NULL, 600, 120, NONCE, KILN_JWT_INVALID },
    { "iat ahead within skew", ISS, "\"" AUD "\"", NULL, 600, 30, NONCE, KILN_JWT_OK },
    { "wrong nonce", ISS, "\"" AUD "\"", NULL, 600, 0, "n-other", KILN_JWT_NONCE_MISMATCH },
    { "nonce prefix", ISS, "\"" AUD "\"", NULL, 600, 0, "n-01234", KILN_JWT_NONCE_MISMATCH },
    { "no nonce", ISS, "\"" AUD "\"", NULL, 600, 0, NULL, KILN_JWT_NONCE_MISMATCH },
};

static void test_claims(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(claims_cases); i++) {
        const struct claims_case *c = &claims_cases[i];
        char *claims = claims_json(c->iss, c->aud, c->azp, c->exp, c->iat, c->nonce);
        char *t1 = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims);
        char *t2 = sign_raw(ec1, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims);
        char ctx[128];
        snprintf(ctx, sizeof ctx, "%s, RS256", c->name);
        ASSERT_STATUS(ctx, verify(t1), c->want);
        snprintf(ctx, sizeof ctx, "%s, ES256", c->name);
        ASSERT_STATUS(ctx, verify(t2), c->want);
        free(claims);
        free(t1);
        free(t2);
    }
}

/* Claims that are missing or of the wrong type, straight JSON. */
static void test_claims_shape(void **state)
{
    (void)state;
    static const struct {
        const char *name, *claims;
        enum kiln_jwt_status want;
    } cases[] = {
        { "no exp", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"s\",\"iat\":1700000000,"
                    "\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "exp a string", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"s\",\"exp\":\"9\","
                          "\"iat\":1700000000,\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "no iat", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"s\",\"exp\":1700000600,"
                    "\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "no sub", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1700000600,"
                    "\"iat\":1700000000,\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "no iss", "{\"aud\":\"" AUD "\",\"sub\":\"s\",\"exp\":1700000600,"
                    "\"iat\":1700000000,\"nonce\":\"" NONCE "\"}", KILN_JWT_WRONG_ISSUER },
        { "no aud", "{\"iss\":\"" ISS "\",\"sub\":\"s\",\"exp\":1700000600,"
                    "\"iat\":1700000000,\"nonce\":\"" NONCE "\"}", KILN_JWT_WRONG_AUDIENCE },
        { "nbf ahead", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"s\","
                       "\"exp\":1700000600,\"iat\":1700000000,\"nbf\":1700000300,"
                       "\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "real numbers", "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"s\","
                          "\"exp\":1700000600.5,\"iat\":1699999999.5,\"nbf\":1699999990,"
                          "\"nonce\":\"" NONCE "\"}", KILN_JWT_OK },
        { "duplicate member", "{\"iss\":\"" ISS "\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
                              "\"sub\":\"s\",\"exp\":1700000600,\"iat\":1700000000,"
                              "\"nonce\":\"" NONCE "\"}", KILN_JWT_INVALID },
        { "payload an array", "[1,2]", KILN_JWT_INVALID },
        { "payload not JSON", "not json", KILN_JWT_INVALID },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *t = sign_raw(ec1, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", cases[i].claims);
        ASSERT_STATUS(cases[i].name, verify(t), cases[i].want);
        free(t);
    }
}

static char *replace_part(const char *tok, int part, const char *text)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    char *enc = b64(text, strlen(text));
    char *out = malloc(strlen(tok) + strlen(enc) + 4);
    if (part == 0)
        sprintf(out, "%s%s", enc, d1);
    else
        sprintf(out, "%.*s%s%s", (int)(d1 - tok + 1), tok, enc, d2);
    free(enc);
    return out;
}

static void test_signature_refusals(void **state)
{
    (void)state;
    const char *rs = "{\"alg\":\"RS256\",\"kid\":\"r1\"}", *es = "{\"alg\":\"ES256\",\"kid\":\"e1\"}";
    char *good_rs = sign_raw(rsa1, rs, good_claims());
    char *good_es = sign_raw(ec1, es, good_claims());

    /* Tampered payload: same signature, a different subject. */
    char *evil = claims_json(ISS, "\"" AUD "\"", NULL, 600, 0, NONCE);
    evil[strlen(evil) - 1] = '\0';
    char evil_claims[1200];
    snprintf(evil_claims, sizeof evil_claims, "%s,\"admin\":true}", evil);
    char *t = replace_part(good_rs, 1, evil_claims);
    ASSERT_STATUS("tampered payload RS256", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);
    t = replace_part(good_es, 1, evil_claims);
    ASSERT_STATUS("tampered payload ES256", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);
    free(evil);

    /* Tampered signature: first signature character changed. */
    char *s1 = strdup(good_rs), *s2 = strdup(good_es);
    char *sig = strrchr(s1, '.') + 1;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    sig = strrchr(s2, '.') + 1;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    ASSERT_STATUS("tampered signature RS256", verify(s1), KILN_JWT_BAD_SIGNATURE);
    ASSERT_STATUS("tampered signature ES256", verify(s2), KILN_JWT_BAD_SIGNATURE);
    free(s1);
    free(s2);

    /* Tampered header: the kid swapped for an equal-type key's would be
     * bad_signature; adding a member changes the signing input. */
    t = replace_part(good_es, 0, "{\"alg\":\"ES256\",\"kid\":\"e1\",\"x\":1}");
    ASSERT_STATUS("tampered header", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);

    /* Signed by another key under our kid. */
    t = sign_raw(rsa2, rs, good_claims());
    ASSERT_STATUS("wrong RSA key", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);
    t = sign_raw(ec2, es, good_claims());
    ASSERT_STATUS("wrong EC key", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);

    /* ES256 signature of the wrong length (DER instead of r||s). */
    t = replace_part(good_es, 1, good_claims()); /* same token */
    char *dot = strrchr(t, '.');
    strcpy(dot + 1, "MEUCIQ");
    ASSERT_STATUS("short ES256 signature", verify(t), KILN_JWT_BAD_SIGNATURE);
    free(t);

    /* Unknown kid: reason bad_signature, status lets the caller refetch. */
    t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r9\"}", good_claims());
    ASSERT_STATUS("unknown kid", verify(t), KILN_JWT_UNKNOWN_KEY);
    assert_string_equal(kiln_jwt_reason(KILN_JWT_UNKNOWN_KEY), "bad_signature");
    free(t);

    /* alg must match the key the kid names. */
    t = sign_raw(ec1, "{\"alg\":\"ES256\",\"kid\":\"r1\"}", good_claims());
    ASSERT_STATUS("ES256 against an RSA kid", verify(t), KILN_JWT_INVALID);
    free(t);
    t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"e1\"}", good_claims());
    ASSERT_STATUS("RS256 against an EC kid", verify(t), KILN_JWT_INVALID);
    free(t);

    /* No kid: the only key of the type is used. */
    t = sign_raw(rsa1, "{\"alg\":\"RS256\"}", good_claims());
    ASSERT_STATUS("no kid, one RSA key", verify(t), KILN_JWT_OK);
    free(t);
    char *a = jwk_of(rsa1, "r1", NULL), *b = jwk_of(rsa2, "r2", NULL), two[8192];
    snprintf(two, sizeof two, "%s,%s", a, b);
    struct kiln_jwks *set = jwks_of(two);
    t = sign_raw(rsa1, "{\"alg\":\"RS256\"}", good_claims());
    ASSERT_STATUS("no kid, two RSA keys", verify_in(set, t, &expect), KILN_JWT_INVALID);
    free(t);
    t = sign_raw(ec1, "{\"alg\":\"ES256\"}", good_claims());
    ASSERT_STATUS("no kid, no EC key", verify_in(set, t, &expect), KILN_JWT_UNKNOWN_KEY);
    free(t);
    ASSERT_STATUS("empty set", verify_in(NULL, good_rs, &expect), KILN_JWT_UNKNOWN_KEY);
    kiln_jwks_free(set);
    free(a);
    free(b);

    free(good_rs);
    free(good_es);
}

/* The algorithm attacks (RFC 8725 section 2.1). */
static void test_alg_refusals(void **state)
{
    (void)state;
    char *h, *p, tok[4096];

    /* alg none, empty signature and a non-empty one. */
    h = b64("{\"alg\":\"none\"}", 14);
    p = b64(good_claims(), strlen(good_claims()));
    snprintf(tok, sizeof tok, "%s.%s.", h, p);
    ASSERT_STATUS("alg none, no signature", verify(tok), KILN_JWT_INVALID);
    snprintf(tok, sizeof tok, "%s.%s.AAAA", h, p);
    ASSERT_STATUS("alg none, a signature", verify(tok), KILN_JWT_INVALID);
    free(h);
    h = b64("{\"alg\":\"None\",\"kid\":\"r1\"}", 26);
    snprintf(tok, sizeof tok, "%s.%s.AAAA", h, p);
    ASSERT_STATUS("alg None", verify(tok), KILN_JWT_INVALID);
    free(h);

    /* HS256 keyed with the RSA public key (as PEM, the classic attack). */
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, rsa1);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    const char *hs = "{\"alg\":\"HS256\",\"kid\":\"r1\"}";
    h = b64(hs, strlen(hs));
    char input[4096];
    snprintf(input, sizeof input, "%s.%s", h, p);
    unsigned char mac[32];
    unsigned mac_len = sizeof mac;
    HMAC(EVP_sha256(), pem, (int)pem_len, (unsigned char *)input, strlen(input), mac, &mac_len);
    char *m = b64(mac, mac_len);
    snprintf(tok, sizeof tok, "%s.%s", input, m);
    ASSERT_STATUS("HS256 with the public key", verify(tok), KILN_JWT_INVALID);
    free(m);
    free(h);
    BIO_free(bio);

    /* Other asymmetric algs are not ours either. */
    static const char *const others[] = {
        "{\"alg\":\"PS256\",\"kid\":\"r1\"}", "{\"alg\":\"RS512\",\"kid\":\"r1\"}",
        "{\"alg\":\"ES384\",\"kid\":\"e1\"}", "{\"alg\":\"rs256\",\"kid\":\"r1\"}",
        "{\"kid\":\"r1\"}", "{\"alg\":256,\"kid\":\"r1\"}",
    };
    for (size_t i = 0; i < ARRAY_LEN(others); i++) {
        char *t = sign_raw(rsa1, others[i], good_claims());
        ASSERT_STATUS(others[i], verify(t), KILN_JWT_INVALID);
        free(t);
    }
    /* crit: an extension we do not understand. */
    char *t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"exp\"],\"exp\":1}",
                       good_claims());
    ASSERT_STATUS("crit", verify(t), KILN_JWT_INVALID);
    free(t);
    t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":7}", good_claims());
    ASSERT_STATUS("kid a number", verify(t), KILN_JWT_INVALID);
    free(t);
    t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"alg\":\"RS256\",\"kid\":\"r1\"}", good_claims());
    ASSERT_STATUS("duplicate alg", verify(t), KILN_JWT_INVALID);
    free(t);
    free(p);
}

static void test_malformed(void **state)
{
    (void)state;
    char *good = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r1\"}", good_claims());
    const char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    char buf[8192];
    struct {
        const char *name;
        char *tok;
    } cases[16];
    size_t n = 0;
#define CASE(label, ...)                         \
    do {                                         \
        snprintf(buf, sizeof buf, __VA_ARGS__);  \
        cases[n].name = (label);                 \
        cases[n++].tok = strdup(buf);            \
    } while (0)
    CASE("empty", "%s", "");
    CASE("one part", "%.*s", (int)(d1 - good), good);
    CASE("two parts", "%.*s", (int)(d2 - good), good);
    CASE("four parts", "%s.AAAA", good);
    CASE("empty header", "%s", d1);
    CASE("empty payload", "%.*s.%s", (int)(d1 - good), good, d2);
    CASE("empty signature", "%.*s.", (int)(d2 - good), good);
    CASE("bad base64 header", "!!%s", good);
    CASE("standard base64 in signature", "%s+/", good);
    CASE("padding", "%s==", good);
    CASE("header not JSON", "bm90IGpzb24%s", d1);
    CASE("header an array", "WzFd%s", d1);
    CASE("spaces", " %s", good);
    CASE("dots only", "%s", "..");
#undef CASE
    for (size_t i = 0; i < n; i++) {
        ASSERT_STATUS(cases[i].name, verify(cases[i].tok), KILN_JWT_INVALID);
        free(cases[i].tok);
    }
    /* Huge: one byte over the cap, otherwise a valid token shape. */
    size_t big = KILN_JWT_MAX_LEN + 1;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    memcpy(huge, good, strlen(good));
    huge[big] = '\0';
    ASSERT_STATUS("huge", verify(huge), KILN_JWT_INVALID);
    /* Embedded NUL: the length says more than strlen. */
    kiln_str with_nul = { good, strlen(good) + 1 };
    ASSERT_STATUS("NUL inside", kiln_jwt_verify(with_nul, jwks, &expect, NULL, NULL),
                  KILN_JWT_INVALID);
    ASSERT_STATUS("NULL token", kiln_jwt_verify(KILN_STR_NULL, jwks, &expect, NULL, NULL),
                  KILN_JWT_INVALID);
    free(huge);
    free(good);
}

static void test_jwks_parse(void **state)
{
    (void)state;
    struct kiln_jwks *set = NULL;
    static const char *const not_sets[] = { "", "[]", "{}", "{\"keys\":{}}", "null", "{\"keys\":[" };
    for (size_t i = 0; i < ARRAY_LEN(not_sets); i++) {
        assert_int_equal(kiln_jwks_parse(not_sets[i], strlen(not_sets[i]), &set), KILN_EPROTO);
        assert_null(set);
    }

    EVP_PKEY *small = EVP_RSA_gen(1024);
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    assert_non_null(small);
    assert_non_null(p384);
    char *k[8];
    k[0] = jwk_of(rsa1, "ok-rsa", ",\"use\":\"sig\",\"alg\":\"RS256\"");
    k[1] = jwk_of(rsa1, "enc", ",\"use\":\"enc\"");
    k[2] = jwk_of(rsa1, "ps", ",\"alg\":\"PS256\"");
    k[3] = jwk_of(small, "small", NULL);
    k[4] = jwk_of(ec1, "ok-ec", NULL);
    /* P-384 key labelled as such: x and y are 48 bytes. */
    k[5] = jwk_of(p384, "p384", NULL);
    char *crv = strstr(k[5], "P-256");
    memcpy(crv, "P-384", 5);
    /* A point off the curve: y of another key. */
    char *a = jwk_of(ec1, "offcurve", NULL), *b = jwk_of(ec2, "x", NULL);
    char *ya = strstr(a, "\"y\":\""), *yb = strstr(b, "\"y\":\"");
    memcpy(ya, yb, strlen(yb) < strlen(ya) ? strlen(yb) : strlen(ya));
    k[6] = a;
    k[7] = strdup("{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"}");
    char doc[32768] = "{\"keys\":[";
    for (size_t i = 0; i < 8; i++) {
        strcat(doc, k[i]);
        strcat(doc, i < 7 ? "," : "]}");
    }
    assert_int_equal(kiln_jwks_parse(doc, strlen(doc), &set), 0);
    assert_int_equal(kiln_jwks_count(set), 2); /* ok-rsa, ok-ec */

    char *t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"ok-rsa\"}", good_claims());
    ASSERT_STATUS("usable RSA key", verify_in(set, t, &expect), KILN_JWT_OK);
    free(t);
    t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"enc\"}", good_claims());
    ASSERT_STATUS("encryption key skipped", verify_in(set, t, &expect), KILN_JWT_UNKNOWN_KEY);
    free(t);
    t = sign_raw(small, "{\"alg\":\"RS256\",\"kid\":\"small\"}", good_claims());
    ASSERT_STATUS("1024-bit key skipped", verify_in(set, t, &expect), KILN_JWT_UNKNOWN_KEY);
    free(t);
    t = sign_raw(ec1, "{\"alg\":\"ES256\",\"kid\":\"offcurve\"}", good_claims());
    ASSERT_STATUS("off-curve key skipped", verify_in(set, t, &expect), KILN_JWT_UNKNOWN_KEY);
    free(t);
    kiln_jwks_free(set);
    for (size_t i = 0; i < 8; i++)
        free(k[i]);
    free(b);
    EVP_PKEY_free(small);
    EVP_PKEY_free(p384);
}

static char *pem_of(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

/* Newlines as the two characters \ and n, as env files carry them. */
static char *escape_newlines(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

static void test_pem_load(void **state)
{
    (void)state;
    char *pem = pem_of(ec1);
    assert_non_null(strstr(pem, "BEGIN PRIVATE KEY"));
    EVP_PKEY *k = kiln_jwt_load_p256_pem(pem, strlen(pem));
    assert_non_null(k);
    assert_int_equal(EVP_PKEY_eq(k, ec1), 1);
    EVP_PKEY_free(k);

    char *esc = escape_newlines(pem);
    k = kiln_jwt_load_p256_pem(esc, strlen(esc));
    assert_non_null(k);
    EVP_PKEY_free(k);

    /* The bare base64 body, on one line. */
    char body[1024] = "";
    const char *s = strchr(pem, '\n') + 1, *e = strstr(pem, "-----END");
    for (; s < e; s++)
        if (*s != '\n')
            strncat(body, s, 1);
    k = kiln_jwt_load_p256_pem(body, strlen(body));
    assert_non_null(k);
    EVP_PKEY_free(k);

    /* SEC1 "EC PRIVATE KEY" form. */
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, ec1, NULL, NULL, 0, NULL, NULL), 1);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    assert_non_null(memmem(data, (size_t)n, "EC PRIVATE KEY", 14));
    k = kiln_jwt_load_p256_pem(data, (size_t)n);
    assert_non_null(k);
    EVP_PKEY_free(k);
    BIO_free(bio);

    /* Refused: RSA, P-384, encrypted, garbage, empty, public only. */
    char *rsa = pem_of(rsa1);
    assert_null(kiln_jwt_load_p256_pem(rsa, strlen(rsa)));
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    char *p = pem_of(p384);
    assert_null(kiln_jwt_load_p256_pem(p, strlen(p)));
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, ec1, EVP_aes_128_cbc(), NULL, 0, NULL, (void *)"pass");
    n = BIO_get_mem_data(bio, &data);
    assert_null(kiln_jwt_load_p256_pem(data, (size_t)n));
    BIO_free(bio);
    assert_null(kiln_jwt_load_p256_pem("not a key", 9));
    assert_null(kiln_jwt_load_p256_pem("", 0));
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, ec1);
    n = BIO_get_mem_data(bio, &data);
    assert_null(kiln_jwt_load_p256_pem(data, (size_t)n));
    BIO_free(bio);

    free(pem);
    free(esc);
    free(rsa);
    free(p);
    EVP_PKEY_free(p384);
}

/* Apple's client secret: sign with our signer, verify with our verifier,
 * and check the header and the raw signature form by hand. */
static void test_es256_sign_roundtrip(void **state)
{
    (void)state;
    char claims[512];
    time_t now = time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"TEAM123456\",\"iat\":%lld,\"exp\":%lld,"
             "\"aud\":\"https://appleid.apple.com\",\"sub\":\"com.example.web\"}",
             (long long)now, (long long)now + 3600);
    char *jwt = kiln_jwt_sign_es256(ec1, "KEY1234567", kiln_str_c(claims));
    assert_non_null(jwt);

    /* Header exactly {"alg":"ES256","kid":…}; signature 64 raw bytes. */
    const char *d1 = strchr(jwt, '.'), *d2 = strrchr(jwt, '.');
    unsigned char raw[256];
    size_t n;
    assert_true(kiln_base64url_decode(jwt, (size_t)(d1 - jwt), raw, sizeof raw, &n));
    assert_mem_eq((char *)raw, n, "{\"alg\":\"ES256\",\"kid\":\"KEY1234567\"}", 34);
    assert_true(kiln_base64url_decode(d2 + 1, strlen(d2 + 1), raw, sizeof raw, &n));
    assert_int_equal(n, 64);

    char *k = jwk_of(ec1, "KEY1234567", NULL);
    struct kiln_jwks *set = jwks_of(k);
    struct kiln_jwt_expect apple = { "TEAM123456", "https://appleid.apple.com", NULL, 0, NULL };
    json_t *c = NULL;
    /* The client secret has no sub-as-user semantics, but sub is present. */
    assert_int_equal(kiln_jwt_verify(kiln_str_c(jwt), set, &apple, &c, NULL), KILN_JWT_OK);
    assert_string_equal(json_string_value(json_object_get(c, "sub")), "com.example.web");
    json_decref(c);
    /* Another key does not verify it. */
    char *k2 = jwk_of(ec2, "KEY1234567", NULL);
    struct kiln_jwks *other = jwks_of(k2);
    assert_int_equal(kiln_jwt_verify(kiln_str_c(jwt), other, &apple, NULL, NULL),
                     KILN_JWT_BAD_SIGNATURE);
    /* Signing refuses keys that are not P-256. */
    assert_null(kiln_jwt_sign_es256(rsa1, "K", kiln_str_c(claims)));
    kiln_jwks_free(set);
    kiln_jwks_free(other);
    free(k);
    free(k2);
    free(jwt);
}

/* Google's two spellings of its issuer, and nothing else. */
static void test_issuer_alt(void **state)
{
    (void)state;
    struct kiln_jwt_expect google = { "https://accounts.google.com", AUD, NONCE, NOW,
                                      "accounts.google.com" };
    static const struct {
        const char *iss;
        enum kiln_jwt_status want;
    } cases[] = {
        { "https://accounts.google.com", KILN_JWT_OK },
        { "accounts.google.com", KILN_JWT_OK },
        { "http://accounts.google.com", KILN_JWT_WRONG_ISSUER },
        { "accounts.google.com.evil", KILN_JWT_WRONG_ISSUER },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *claims = claims_json(cases[i].iss, "\"" AUD "\"", NULL, 600, 0, NONCE);
        char *t = sign_raw(rsa1, "{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims);
        ASSERT_STATUS(cases[i].iss, verify_in(jwks, t, &google), cases[i].want);
        free(claims);
        free(t);
    }
}

static void test_reasons(void **state)
{
    (void)state;
    assert_null(kiln_jwt_reason(KILN_JWT_OK));
    assert_string_equal(kiln_jwt_reason(KILN_JWT_INVALID), "invalid_token");
    assert_string_equal(kiln_jwt_reason(KILN_JWT_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(kiln_jwt_reason(KILN_JWT_WRONG_ISSUER), "wrong_issuer");
    assert_string_equal(kiln_jwt_reason(KILN_JWT_WRONG_AUDIENCE), "wrong_audience");
    assert_string_equal(kiln_jwt_reason(KILN_JWT_EXPIRED), "token_expired");
    assert_string_equal(kiln_jwt_reason(KILN_JWT_NONCE_MISMATCH), "nonce_mismatch");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_rs256_es256),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_claims_shape),
        cmocka_unit_test(test_signature_refusals),
        cmocka_unit_test(test_alg_refusals),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_jwks_parse),
        cmocka_unit_test(test_pem_load),
        cmocka_unit_test(test_es256_sign_roundtrip),
        cmocka_unit_test(test_issuer_alt),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
