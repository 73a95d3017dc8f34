/*
 * libFuzzer target for app/src/auth/jwt.c: bytes from the network meet the
 * JWS parser, the claims checks, the JWKS parser and the PEM reader. The
 * first byte picks the path:
 *   0  the rest is a compact JWS, verified against a fixed JWK set (an RSA
 *      key "r1" and the EC key below as "e1") at a fixed time;
 *   1  the rest is a claims payload, signed here with the EC key and then
 *      verified, so the claims checks see arbitrary JSON behind a valid
 *      signature (a fuzzer cannot forge one);
 *   2  the rest is a JWK set document; a fixed token is verified against it;
 *   3  the rest is an Apple private key (PEM, maybe with literal \n).
 * Keys are fixed so the seeds in corpus/jwt/ stay valid across runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>

#include "auth/jwt.h"
#include "core/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Test key only: it signs nothing but fuzz inputs. */
static const char ec_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUocnyEMLP1PxuBzT\n"
    "lXj6AdkGsr/WAp02OfXUnXcclz2hRANCAASUmRLc8gxBFaNDwf3dMXiETcAv0zRp\n"
    "1OSAHevBzXUP+BBGXUUV0AXY+tC6Akwy0p0URoSq5oj2B6TO6tm2HsOM\n"
    "-----END PRIVATE KEY-----\n";

static const char rsa_jwk[] =
    "{\"kty\":\"RSA\",\"kid\":\"r1\",\"e\":\"AQAB\",\"n\":\""
    "m0M-4hbYeT6Lm-6yLqNI4sOPdMkmYYG-fYtfFCOJvfWIp_VO6bQ5wrw3ACEO8tI2DtTBbgUrsx9jMmEk8aFHf8dDrK"
    "cpgSPpFth_Xl4Nua10lME4x9nB23ZncCzT6Q94VjNhQyEQkEldLWacwx7GxAty3nGmMWQ_Y7ZhIr2tKQxiynR0SMYr"
    "pBGgpDbF82C8EUQLHTM6H1hnxIclqNcNNM5AFIT5LV585IXHUDS6hE8bnWqGHEkxQTTye9sKcXmDsYORLqcQ4mRWjk"
    "HUfVjPJSabRCwM38jX9NX7cyD8PG0zzNcPVmhyE-okVE8GlU-rZtA8Ls3QNkXD1azxdhKnVQ\"}";

static const struct kiln_jwt_expect expect = {
    "https://issuer.example", "client-1", "n-1", 1700000000, NULL
};

static EVP_PKEY *ec_key;
static struct kiln_jwks *jwks;
static char *fixed_token;

static void init(void)
{
    ec_key = kiln_jwt_load_p256_pem(ec_pem, sizeof ec_pem - 1);
    if (!ec_key)
        abort();
    BIGNUM *x = NULL, *y = NULL;
    unsigned char bx[32], by[32];
    char sx[64], sy[64], doc[2048];
    if (EVP_PKEY_get_bn_param(ec_key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(ec_key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
        BN_bn2binpad(x, bx, 32) != 32 || BN_bn2binpad(y, by, 32) != 32)
        abort();
    kiln_base64url_encode(bx, 32, sx);
    kiln_base64url_encode(by, 32, sy);
    snprintf(doc, sizeof doc,
             "{\"keys\":[%s,{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"%s\","
             "\"y\":\"%s\"}]}", rsa_jwk, sx, sy);
    BN_free(x);
    BN_free(y);
    if (kiln_jwks_parse(doc, strlen(doc), &jwks) != 0 || kiln_jwks_count(jwks) != 2)
        abort();
    static const char claims[] =
        "{\"iss\":\"https://issuer.example\",\"aud\":\"client-1\",\"sub\":\"s\","
        "\"exp\":1700000600,\"iat\":1700000000,\"nonce\":\"n-1\"}";
    fixed_token = kiln_jwt_sign_es256(ec_key, "e1", (kiln_str){ claims, sizeof claims - 1 });
    if (!fixed_token)
        abort();
}

static void check(enum kiln_jwt_status st, json_t *claims, const char *detail)
{
    /* OK comes with claims and no detail; a refusal the other way round,
     * and always with a reason code. */
    if (st == KILN_JWT_OK) {
        if (!json_is_object(claims) || detail ||
            !json_is_string(json_object_get(claims, "sub")))
            abort();
    } else if (claims || !detail || !kiln_jwt_reason(st)) {
        abort();
    }
    json_decref(claims);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!jwks)
        init();
    if (size < 1)
        return 0;
    kiln_str rest = { (const char *)data + 1, size - 1 };
    json_t *claims = NULL;
    const char *detail = NULL;
    enum kiln_jwt_status st;

    switch (data[0] % 4) {
    case 0:
        st = kiln_jwt_verify(rest, jwks, &expect, &claims, &detail);
        check(st, claims, detail);
        break;
    case 1: {
        char *tok = kiln_jwt_sign_es256(ec_key, "e1", rest);
        if (!tok) {
            if (rest.len <= KILN_JWT_MAX_LEN)
                abort(); /* signing takes any bytes up to the cap */
            break;
        }
        st = kiln_jwt_verify(kiln_str_c(tok), jwks, &expect, &claims, &detail);
        /* Whatever the claims, the signature itself is good. */
        if (st == KILN_JWT_BAD_SIGNATURE || st == KILN_JWT_UNKNOWN_KEY)
            abort();
        check(st, claims, detail);
        free(tok);
        break;
    }
    case 2: {
        struct kiln_jwks *set = NULL;
        if (kiln_jwks_parse(rest.p, rest.len, &set) == 0) {
            st = kiln_jwt_verify(kiln_str_c(fixed_token), set, &expect, &claims, &detail);
            check(st, claims, detail);
            kiln_jwks_free(set);
        } else if (set) {
            abort();
        }
        break;
    }
    case 3:
        EVP_PKEY_free(kiln_jwt_load_p256_pem(rest.p, rest.len));
        break;
    }
    return 0;
}
