/*
 * WebAuthn registration and assertion verification; see webauthn.h.
 *
 * The one design decision: no byte reaches libcbor before our own walk
 * (cbor_walk) has measured it. libcbor 0.8 allocates what a header declares
 * before it looks for the items (nine bytes declaring an array of 2^36
 * items are a 512 GiB malloc), takes indefinite lengths, duplicate keys and
 * trailing bytes without a word, and frees nested items recursively. The
 * walk refuses anything that is not one well-formed, definite-length,
 * untagged item at most MAX_DEPTH deep, with no count or length beyond the
 * bytes that are left; libcbor then decodes exactly the bytes the walk
 * measured, and every map it returns is checked for repeated keys.
 */
#include "auth/webauthn.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "core/alloc.h"
#include "core/dl.h"
#include "core/err.h"

#define MAX_CLIENT_DATA 16384
#define MAX_ATT_OBJ 65536
#define MAX_AUTH_DATA 16384
#define MAX_SPKI 2048         /* an RSA-8192 SubjectPublicKeyInfo is 1 KiB */
#define MAX_DEPTH 8           /* attStmt formats nest 3 deep (map, x5c array, bytes) */
#define MAX_MAP_PAIRS 64      /* bounds the duplicate-key check's n^2 */
#define RP_ID_HASH_LEN 32
#define AUTH_DATA_MIN 37      /* rpIdHash, flags, signCount (section 6.1) */
#define CRED_DATA_HEADER 18   /* aaguid, credentialIdLength (section 6.5.1) */
#define P256_BYTES 32
#define ED25519_BYTES 32
#define ED25519_SIG_BYTES 64
#define ECDSA_DER_MIN 8       /* SEQUENCE { INTEGER r, INTEGER s }, one byte each */
#define ECDSA_DER_MAX 72      /* 33-byte r and s with their headers */
#define MIN_RSA_BITS 2048
#define MAX_RSA_BITS 8192
#define MAX_RSA_E 8

/* authenticatorData flags (section 6.1; BE and BS from Level 3). */
enum {
    FLAG_UP = 0x01,
    FLAG_UV = 0x04,
    FLAG_BE = 0x08,
    FLAG_BS = 0x10,
    FLAG_AT = 0x40,
    FLAG_ED = 0x80,
};

/* COSE_Key labels and values (RFC 9052 section 7, RFC 9053 section 7,
 * RFC 8230 section 4): -1 is crv for EC2 and OKP keys but n for RSA. */
enum { COSE_KTY = 1, COSE_ALG = 3, COSE_M1 = -1, COSE_M2 = -2, COSE_M3 = -3 };
enum { KTY_OKP = 1, KTY_EC2 = 2, KTY_RSA = 3 };
enum { CRV_P256 = 1, CRV_ED25519 = 6 };

static const char BAD_AUTH_DATA[] = "bad authenticator data";

/* ---- CBOR ------------------------------------------------------------------ */

/*
 * The length of the one CBOR item at p[0..n), or 0 when it is not
 * well-formed (RFC 8949 section 3) or breaks our rules: indefinite lengths,
 * tags (CTAP 2.0 section 6's canonical encoding has none), simple values other
 * than false, true, null and undefined, nesting deeper than MAX_DEPTH, a map
 * of more than MAX_MAP_PAIRS pairs. A count or length larger than what is
 * left is refused here, before libcbor allocates for it: every item takes
 * at least one byte. Recursion is bounded by MAX_DEPTH, the work by n.
 */
static size_t cbor_walk(const uint8_t *p, size_t n, int depth)
{
    if (n == 0 || depth > MAX_DEPTH)
        return 0;
    unsigned major = p[0] >> 5, ai = p[0] & 0x1f;
    size_t off = 1;
    uint64_t arg = ai;
    if (ai >= 24) {
        if (ai > 27) /* 28-30 reserved; 31 indefinite length, or break */
            return 0;
        size_t w = (size_t)1 << (ai - 24);
        if (n - 1 < w)
            return 0;
        arg = 0;
        for (size_t i = 0; i < w; i++)
            arg = arg << 8 | p[1 + i];
        off += w;
    }
    size_t left = n - off;
    switch (major) {
    case 0: /* unsigned integer */
    case 1: /* negative integer */
        return off;
    case 2: /* byte string */
    case 3: /* text string */
        return arg <= left ? off + (size_t)arg : 0;
    case 4: /* array */
    case 5: /* map */
        if (major == 5 && arg > MAX_MAP_PAIRS)
            return 0;
        if (major == 5)
            arg *= 2;
        if (arg > left)
            return 0;
        for (uint64_t i = 0; i < arg; i++) {
            size_t len = cbor_walk(p + off, n - off, depth + 1);
            if (!len)
                return 0;
            off += len;
        }
        return off;
    case 7: /* false, true, null, undefined; half, single, double floats */
        return (ai >= 20 && ai <= 23) || (ai >= 25 && ai <= 27) ? off : 0;
    default: /* 6: tag */
        return 0;
    }
}

/* The bytes of a definite byte string; false for anything else. */
static bool cbor_bytes(const cbor_item_t *it, const uint8_t **p, size_t *n)
{
    if (!it || !kiln_cbor.cbor_isa_bytestring(it) || !kiln_cbor.cbor_bytestring_is_definite(it))
        return false;
    *n = kiln_cbor.cbor_bytestring_length(it);
    *p = kiln_cbor.cbor_bytestring_handle(it);
    return *n == 0 || *p;
}

/* The bytes of a definite text string (not checked for UTF-8). */
static bool cbor_text(const cbor_item_t *it, const uint8_t **p, size_t *n)
{
    if (!it || !kiln_cbor.cbor_isa_string(it) || !kiln_cbor.cbor_string_is_definite(it))
        return false;
    *n = kiln_cbor.cbor_string_length(it);
    *p = kiln_cbor.cbor_string_handle(it);
    return *n == 0 || *p;
}

static bool cbor_text_is(const cbor_item_t *it, const char *s)
{
    const uint8_t *p;
    size_t n, want = strlen(s);
    return cbor_text(it, &p, &n) && n == want && (n == 0 || memcmp(p, s, n) == 0);
}

/* An integer that fits int64_t (COSE labels and values are small). */
static bool cbor_int(const cbor_item_t *it, int64_t *v)
{
    if (!it)
        return false;
    bool neg = kiln_cbor.cbor_isa_negint(it);
    if (!neg && !kiln_cbor.cbor_isa_uint(it))
        return false;
    uint64_t u = kiln_cbor.cbor_get_int(it);
    if (u > INT64_MAX)
        return false;
    /* A negative integer encodes -1 - u (RFC 8949 section 3.1). */
    *v = neg ? -1 - (int64_t)u : (int64_t)u;
    return true;
}

static bool same_key(const cbor_item_t *a, const cbor_item_t *b)
{
    cbor_type t = kiln_cbor.cbor_typeof(a);
    const uint8_t *pa, *pb;
    size_t na, nb;
    if (t != kiln_cbor.cbor_typeof(b))
        return false;
    switch (t) {
    case CBOR_TYPE_UINT:
    case CBOR_TYPE_NEGINT:
        return kiln_cbor.cbor_get_int(a) == kiln_cbor.cbor_get_int(b);
    case CBOR_TYPE_BYTESTRING:
        return cbor_bytes(a, &pa, &na) && cbor_bytes(b, &pb, &nb) && na == nb &&
               (na == 0 || memcmp(pa, pb, na) == 0);
    case CBOR_TYPE_STRING:
        return cbor_text(a, &pa, &na) && cbor_text(b, &pb, &nb) && na == nb &&
               (na == 0 || memcmp(pa, pb, na) == 0);
    default:
        return false;
    }
}

/*
 * Every map in the tree has integer or string keys, none twice: a map with
 * a repeated key is not valid CBOR (RFC 8949 section 5.6), and two parsers
 * that keep different copies (the first, the last) would see two different
 * credentials in the same bytes. Depth is bounded by cbor_walk.
 */
static bool cbor_keys_ok(const cbor_item_t *it)
{
    if (kiln_cbor.cbor_isa_array(it)) {
        cbor_item_t **items = kiln_cbor.cbor_array_handle(it);
        for (size_t i = 0; i < kiln_cbor.cbor_array_size(it); i++)
            if (!cbor_keys_ok(items[i]))
                return false;
        return true;
    }
    if (!kiln_cbor.cbor_isa_map(it))
        return true;
    struct cbor_pair *pairs = kiln_cbor.cbor_map_handle(it);
    size_t n = kiln_cbor.cbor_map_size(it);
    for (size_t i = 0; i < n; i++) {
        cbor_type t = kiln_cbor.cbor_typeof(pairs[i].key);
        if (t != CBOR_TYPE_UINT && t != CBOR_TYPE_NEGINT && t != CBOR_TYPE_BYTESTRING &&
            t != CBOR_TYPE_STRING)
            return false;
        for (size_t j = 0; j < i; j++)
            if (same_key(pairs[i].key, pairs[j].key))
                return false;
        if (!cbor_keys_ok(pairs[i].value))
            return false;
    }
    return true;
}

/* libcbor's tree of p[0..n), which cbor_walk measured as one item; NULL
 * when libcbor disagrees or a map repeats a key. cbor_decref it. */
static cbor_item_t *cbor_decode(const uint8_t *p, size_t n)
{
    struct cbor_load_result res;
    cbor_item_t *item = kiln_cbor.cbor_load(p, n, &res);
    if (item && (res.error.code != CBOR_ERR_NONE || res.read != n || !cbor_keys_ok(item)))
        kiln_cbor.cbor_decref(&item); /* sets item to NULL */
    return item;
}

static void cbor_free(cbor_item_t **item)
{
    if (*item)
        kiln_cbor.cbor_decref(item);
}

/* ---- client data ------------------------------------------------------------ */

static bool json_str_is(json_t *s, const char *want)
{
    size_t n = strlen(want);
    return json_string_length(s) == n && memcmp(json_string_value(s), want, n) == 0;
}

static bool origin_allowed(const struct kiln_webauthn_rp *rp, json_t *origin)
{
    for (size_t i = 0; i < rp->norigins; i++)
        if (rp->origins[i] && json_str_is(origin, rp->origins[i]))
            return true;
    return false;
}

/*
 * Registration steps 5-10, assertion steps 10-14. jansson refuses bytes
 * that are not UTF-8 (steps 5 and 10 decode before parsing), and
 * JSON_REJECT_DUPLICATES a second "challenge" or "origin" that another
 * parser might have taken instead of the first. The comparisons are exact:
 * no case folding, no default ports, no trailing slash. tokenBinding is
 * ignored: browsers no longer send it and Kiln's TLS has none to match.
 */
static const char *check_client_data(const struct kiln_webauthn_rp *rp, const uint8_t *cd,
                                     size_t len, const char *type, const char *challenge)
{
    if (!cd || len == 0 || len > MAX_CLIENT_DATA)
        return "bad client data";
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)cd, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *t = json_object_get(doc, "type"), *c = json_object_get(doc, "challenge");
    json_t *o = json_object_get(doc, "origin"), *x = json_object_get(doc, "crossOrigin");
    const char *why = NULL;
    if (!json_is_object(doc) || !json_is_string(t) || !json_is_string(c) || !json_is_string(o) ||
        (x && !json_is_boolean(x)))
        why = "bad client data";
    else if (!json_str_is(t, type))
        why = "wrong type";
    /* An empty challenge is a server that lost its own (an expired
     * session), never one it issued. */
    else if (!challenge || !*challenge || !json_str_is(c, challenge))
        why = "challenge mismatch";
    else if (!origin_allowed(rp, o))
        why = "origin not allowed";
    /* Section 5.8.1: the ceremony ran in an iframe of another origin.
     * Kiln's pages are embedded nowhere, so it was someone else's page. */
    else if (json_is_true(x))
        why = "cross-origin";
    json_decref(doc);
    return why;
}

/* ---- authenticator data ----------------------------------------------------- */

struct auth_data {
    const uint8_t *rp_id_hash;
    uint8_t flags;
    uint32_t count;
    /* Attested credential data, when FLAG_AT. */
    const uint8_t *aaguid, *cred_id, *cose;
    size_t cred_id_len, cose_len;
};

/*
 * Section 6.1's layout: rpIdHash (32), flags (1), signCount (4, big-endian);
 * when AT is set, the attested credential data (aaguid 16,
 * credentialIdLength 2, credentialId, the COSE key: one CBOR item); when ED
 * is set, the extensions (one CBOR map); then nothing. Each part is measured
 * against what is left, and bytes after the last part are refused whatever
 * they are: the authenticator signed them, and we would never read them.
 */
static const char *parse_auth_data(const uint8_t *p, size_t n, struct auth_data *ad)
{
    memset(ad, 0, sizeof *ad);
    if (!p || n < AUTH_DATA_MIN)
        return BAD_AUTH_DATA;
    ad->rp_id_hash = p;
    ad->flags = p[32];
    ad->count = (uint32_t)p[33] << 24 | (uint32_t)p[34] << 16 | (uint32_t)p[35] << 8 | p[36];
    size_t off = AUTH_DATA_MIN;
    if (ad->flags & FLAG_AT) {
        if (n - off < CRED_DATA_HEADER)
            return BAD_AUTH_DATA;
        ad->aaguid = p + off;
        size_t id_len = (size_t)p[off + 16] << 8 | p[off + 17];
        off += CRED_DATA_HEADER;
        if (id_len == 0 || id_len > KILN_WEBAUTHN_MAX_CRED_ID || id_len > n - off)
            return BAD_AUTH_DATA;
        ad->cred_id = p + off;
        ad->cred_id_len = id_len;
        off += id_len;
        size_t key_len = cbor_walk(p + off, n - off, 0);
        if (!key_len)
            return BAD_AUTH_DATA;
        ad->cose = p + off;
        ad->cose_len = key_len;
        off += key_len;
    }
    if (ad->flags & FLAG_ED) {
        /* Nothing reads the extensions (Kiln requests none), but they are
         * held to the same rules as every other CBOR here. */
        size_t ext_len = cbor_walk(p + off, n - off, 0);
        if (!ext_len || p[off] >> 5 != 5)
            return BAD_AUTH_DATA;
        cbor_item_t *ext = cbor_decode(p + off, ext_len);
        if (!ext)
            return BAD_AUTH_DATA;
        cbor_free(&ext);
        off += ext_len;
    }
    return off == n ? NULL : BAD_AUTH_DATA;
}

static bool sha256(const void *p, size_t n, uint8_t out[32])
{
    return EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL) == 1;
}

/* Registration steps 13-15, assertion steps 15-17, and Level 3's backup
 * flags. */
static const char *check_auth_data(const struct kiln_webauthn_rp *rp, const struct auth_data *ad,
                                   bool require_uv)
{
    uint8_t h[RP_ID_HASH_LEN];
    if (!rp->rp_id || !sha256(rp->rp_id, strlen(rp->rp_id), h) ||
        CRYPTO_memcmp(h, ad->rp_id_hash, sizeof h) != 0)
        return "rp id mismatch";
    if (!(ad->flags & FLAG_UP))
        return "user not present";
    if (require_uv && !(ad->flags & FLAG_UV))
        return "user not verified";
    /* Level 3 section 6.1.3: a credential that may not be backed up
     * cannot be backed up; the pair is a broken or lying authenticator. */
    if ((ad->flags & FLAG_BS) && !(ad->flags & FLAG_BE))
        return "bad backup flags";
    return NULL;
}

/* ---- keys ------------------------------------------------------------------- */

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

/* P-256 from the COSE coordinates, which must be a point on the curve:
 * anything else is an invalid-curve attack, not a key. */
static EVP_PKEY *ec_key(const uint8_t *x, const uint8_t *y)
{
    uint8_t pub[1 + 2 * P256_BYTES];
    pub[0] = 0x04; /* uncompressed point (SEC 1 section 2.3.3) */
    memcpy(pub + 1, x, P256_BYTES);
    memcpy(pub + 1 + P256_BYTES, y, P256_BYTES);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *pkey = pkey_fromdata("EC", params);
    EVP_PKEY_CTX *ctx = pkey ? EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL) : NULL;
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

/* RSA from n and e (RFC 8230 section 4): big-endian, odd, e at least 3,
 * a modulus of MIN_RSA_BITS to MAX_RSA_BITS. */
static EVP_PKEY *rsa_key(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len)
{
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    if (n_len == 0 || n_len > MAX_RSA_BITS / 8 || e_len == 0 || e_len > MAX_RSA_E ||
        !(n[n_len - 1] & 1) || !(e[e_len - 1] & 1))
        goto out;
    bn_n = BN_bin2bn(n, (int)n_len, NULL);
    bn_e = BN_bin2bn(e, (int)e_len, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!bn_n || !bn_e || !bld || BN_num_bits(bn_e) < 2 || BN_num_bits(bn_n) < MIN_RSA_BITS ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)))
        goto out;
    pkey = pkey_fromdata("RSA", params);
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

/*
 * The credential public key (section 6.5.1.1): a COSE_Key map with integer
 * labels, whose alg is one of ours and whose kty, curve and coordinates are
 * that alg's. Labels we do not use (kid, key_ops) are allowed. A key that
 * could never verify an assertion fails here, at registration, rather than
 * at every sign-in.
 */
static const char *cose_key(const uint8_t *p, size_t n, int *alg_out, EVP_PKEY **out)
{
    cbor_item_t *key = cbor_decode(p, n);
    const cbor_item_t *kty = NULL, *alg = NULL, *m1 = NULL, *m2 = NULL, *m3 = NULL;
    const uint8_t *a, *b;
    size_t a_len, b_len;
    int64_t v_kty, v_alg, crv;
    const char *why = "bad key";

    *out = NULL;
    if (!key || !kiln_cbor.cbor_isa_map(key))
        goto out;
    struct cbor_pair *pairs = kiln_cbor.cbor_map_handle(key);
    for (size_t i = 0; i < kiln_cbor.cbor_map_size(key); i++) {
        int64_t label;
        if (!cbor_int(pairs[i].key, &label))
            goto out;
        const cbor_item_t *v = pairs[i].value;
        switch (label) {
        case COSE_KTY: kty = v; break;
        case COSE_ALG: alg = v; break;
        case COSE_M1: m1 = v; break;
        case COSE_M2: m2 = v; break;
        case COSE_M3: m3 = v; break;
        default: break;
        }
    }
    if (!cbor_int(kty, &v_kty) || !cbor_int(alg, &v_alg))
        goto out;
    switch (v_alg) {
    case KILN_WEBAUTHN_ES256:
        if (v_kty == KTY_EC2 && cbor_int(m1, &crv) && crv == CRV_P256 &&
            cbor_bytes(m2, &a, &a_len) && a_len == P256_BYTES && cbor_bytes(m3, &b, &b_len) &&
            b_len == P256_BYTES)
            *out = ec_key(a, b);
        break;
    case KILN_WEBAUTHN_RS256:
        if (v_kty == KTY_RSA && cbor_bytes(m1, &a, &a_len) && cbor_bytes(m2, &b, &b_len))
            *out = rsa_key(a, a_len, b, b_len);
        break;
    case KILN_WEBAUTHN_EDDSA:
        /* Ed25519 only: Ed448 (crv 7) is allowed by RFC 8037 but by no
         * authenticator we know of. */
        if (v_kty == KTY_OKP && cbor_int(m1, &crv) && crv == CRV_ED25519 &&
            cbor_bytes(m2, &a, &a_len) && a_len == ED25519_BYTES)
            *out = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, a, a_len);
        break;
    default:
        why = "unsupported algorithm";
        goto out;
    }
    if (*out) {
        *alg_out = (int)v_alg;
        why = NULL;
    }
out:
    cbor_free(&key);
    return why;
}

/* The key as SubjectPublicKeyInfo DER, in a kiln_malloc'd buffer. */
static bool spki_of(EVP_PKEY *pkey, uint8_t **der, size_t *len)
{
    int n = i2d_PUBKEY(pkey, NULL);
    if (n <= 0 || n > MAX_SPKI)
        return false;
    uint8_t *buf = kiln_malloc((size_t)n), *q = buf;
    if (i2d_PUBKEY(pkey, &q) != n) {
        free(buf);
        return false;
    }
    *der = buf;
    *len = (size_t)n;
    return true;
}

/*
 * The stored key, which must be of the stored algorithm's type: the
 * algorithm comes from the credential record, never from the request, so a
 * P-256 key cannot be made to check an RS256 signature.
 */
static EVP_PKEY *stored_key(const uint8_t *spki, size_t len, int alg)
{
    if (!spki || len == 0 || len > MAX_SPKI)
        return NULL;
    const unsigned char *q = spki;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &q, (long)len);
    char group[32];
    bool ok = pkey && q == spki + len;
    if (ok && alg == KILN_WEBAUTHN_ES256)
        ok = EVP_PKEY_is_a(pkey, "EC") &&
             EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof group, NULL) == 1 &&
             strcmp(group, "prime256v1") == 0;
    else if (ok && alg == KILN_WEBAUTHN_RS256)
        ok = EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= MIN_RSA_BITS &&
             EVP_PKEY_get_bits(pkey) <= MAX_RSA_BITS;
    else if (ok)
        ok = EVP_PKEY_is_a(pkey, "ED25519");
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

/* Assertion steps 19-20: the signature over authenticatorData ||
 * SHA-256(clientDataJSON). */
static const char *check_signature(EVP_PKEY *pkey, int alg, const uint8_t *ad, size_t ad_len,
                                   const uint8_t *cd, size_t cd_len, const uint8_t *sig,
                                   size_t sig_len)
{
    bool len_ok = alg == KILN_WEBAUTHN_ES256 ? sig_len >= ECDSA_DER_MIN && sig_len <= ECDSA_DER_MAX
                  : alg == KILN_WEBAUTHN_RS256 ? sig_len == (size_t)EVP_PKEY_get_size(pkey)
                                               : sig_len == ED25519_SIG_BYTES;
    if (!sig || !len_ok)
        return "bad signature";
    size_t tbs_len = ad_len + 32;
    uint8_t *tbs = kiln_malloc(tbs_len);
    memcpy(tbs, ad, ad_len);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    /* Ed25519 hashes internally (PureEdDSA): no digest is named for it. */
    const EVP_MD *h = alg == KILN_WEBAUTHN_EDDSA ? NULL : EVP_sha256();
    bool ok = sha256(cd, cd_len, tbs + ad_len) && md &&
              EVP_DigestVerifyInit(md, NULL, h, NULL, pkey) == 1 &&
              EVP_DigestVerify(md, sig, sig_len, tbs, tbs_len) == 1;
    EVP_MD_CTX_free(md);
    free(tbs);
    return ok ? NULL : "bad signature";
}

/* ---- attestation object ----------------------------------------------------- */

/*
 * Registration step 12 and, for "none", step 20: the attestationObject is
 * one CBOR map of "fmt" (text), "attStmt" (a map) and "authData" (bytes),
 * and nothing else (section 6.5.4). Any format is taken as it comes: an RP
 * that asked for "none" evaluates no trust path (section 7.1 step 21), but
 * a "none" that carries a statement is not "none".
 */
static const char *decode_att_obj(const uint8_t *p, size_t n, cbor_item_t **att, char *fmt,
                                  size_t fmt_cap, const uint8_t **ad, size_t *ad_len)
{
    const cbor_item_t *f = NULL, *stmt = NULL, *data = NULL;
    const uint8_t *fp;
    size_t fn;

    if (!p || n == 0 || n > MAX_ATT_OBJ || cbor_walk(p, n, 0) != n || !(*att = cbor_decode(p, n)))
        return "bad cbor";
    if (!kiln_cbor.cbor_isa_map(*att))
        return "bad attestation";
    struct cbor_pair *pairs = kiln_cbor.cbor_map_handle(*att);
    for (size_t i = 0; i < kiln_cbor.cbor_map_size(*att); i++) {
        if (cbor_text_is(pairs[i].key, "fmt"))
            f = pairs[i].value;
        else if (cbor_text_is(pairs[i].key, "attStmt"))
            stmt = pairs[i].value;
        else if (cbor_text_is(pairs[i].key, "authData"))
            data = pairs[i].value;
        else
            return "bad attestation";
    }
    if (!cbor_text(f, &fp, &fn) || fn == 0 || fn >= fmt_cap || !stmt ||
        !kiln_cbor.cbor_isa_map(stmt) || !cbor_bytes(data, ad, ad_len))
        return "bad attestation";
    /* Format identifiers are registered ASCII names (RFC 8809); this one
     * ends up in logs and the database. */
    for (size_t i = 0; i < fn; i++)
        if (fp[i] < 0x21 || fp[i] > 0x7e)
            return "bad attestation";
    memcpy(fmt, fp, fn);
    fmt[fn] = '\0';
    if (strcmp(fmt, "none") == 0 && kiln_cbor.cbor_map_size(stmt) != 0)
        return "bad attestation";
    return NULL;
}

/* ---- the ceremonies --------------------------------------------------------- */

void kiln_webauthn_credential_free(struct kiln_webauthn_credential *c)
{
    if (!c)
        return;
    free(c->public_key);
    c->public_key = NULL;
    c->public_key_len = 0;
}

int kiln_webauthn_register(const struct kiln_webauthn_rp *rp, const uint8_t *client_data,
                           size_t client_data_len, const uint8_t *att_obj, size_t att_obj_len,
                           const char *challenge, bool require_uv,
                           struct kiln_webauthn_credential *out, const char **why)
{
    cbor_item_t *att = NULL;
    EVP_PKEY *pkey = NULL;
    struct auth_data ad;
    const uint8_t *ad_p = NULL;
    size_t ad_len = 0;
    const char *reason = NULL;
    int rc = KILN_EINVAL;

    memset(out, 0, sizeof *out);
    *why = NULL;
    if (kiln_dl_cbor() != 0) {
        *why = "libcbor unavailable";
        return KILN_EIO;
    }
    if ((reason = check_client_data(rp, client_data, client_data_len, "webauthn.create",
                                    challenge)) ||
        (reason = decode_att_obj(att_obj, att_obj_len, &att, out->fmt, sizeof out->fmt, &ad_p,
                                 &ad_len)) ||
        (reason = parse_auth_data(ad_p, ad_len, &ad)) ||
        (reason = check_auth_data(rp, &ad, require_uv)))
        goto out;
    if (!(ad.flags & FLAG_AT)) {
        reason = "no credential data";
        goto out;
    }
    if ((reason = cose_key(ad.cose, ad.cose_len, &out->alg, &pkey)))
        goto out;
    if (!spki_of(pkey, &out->public_key, &out->public_key_len)) {
        reason = "bad key";
        goto out;
    }
    memcpy(out->id, ad.cred_id, ad.cred_id_len);
    out->id_len = ad.cred_id_len;
    memcpy(out->aaguid, ad.aaguid, sizeof out->aaguid);
    out->sign_count = ad.count;
    out->user_verified = ad.flags & FLAG_UV;
    out->backup_eligible = ad.flags & FLAG_BE;
    out->backed_up = ad.flags & FLAG_BS;
    rc = 0;
out:
    cbor_free(&att);
    EVP_PKEY_free(pkey);
    /* Whatever OpenSSL queued about the client's bytes is not for the next
     * TLS call on this thread to find. */
    ERR_clear_error();
    if (rc) {
        kiln_webauthn_credential_free(out);
        memset(out, 0, sizeof *out);
        *why = reason;
    }
    return rc;
}

int kiln_webauthn_assert(const struct kiln_webauthn_rp *rp, const uint8_t *client_data,
                         size_t client_data_len, const uint8_t *auth_data, size_t auth_data_len,
                         const uint8_t *sig, size_t sig_len, const uint8_t *spki, size_t spki_len,
                         int alg, uint32_t stored_count, const char *challenge, bool require_uv,
                         uint32_t *new_count, bool *uv, const char **why)
{
    EVP_PKEY *pkey = NULL;
    struct auth_data ad;
    const char *reason = NULL;
    int rc = KILN_EINVAL;

    *new_count = stored_count;
    *uv = false;
    *why = NULL;
    if (kiln_dl_cbor() != 0) {
        *why = "libcbor unavailable";
        return KILN_EIO;
    }
    if ((reason = check_client_data(rp, client_data, client_data_len, "webauthn.get",
                                    challenge)))
        goto out;
    if (auth_data_len > MAX_AUTH_DATA) {
        reason = BAD_AUTH_DATA;
        goto out;
    }
    if ((reason = parse_auth_data(auth_data, auth_data_len, &ad)))
        goto out;
    /* Attested credential data belongs to attestation objects only
     * (section 6.5.1); an assertion that carries some is not one. */
    if (ad.flags & FLAG_AT) {
        reason = BAD_AUTH_DATA;
        goto out;
    }
    if ((reason = check_auth_data(rp, &ad, require_uv)))
        goto out;
    if (alg != KILN_WEBAUTHN_ES256 && alg != KILN_WEBAUTHN_RS256 && alg != KILN_WEBAUTHN_EDDSA) {
        reason = "unsupported algorithm";
        goto out;
    }
    if (!(pkey = stored_key(spki, spki_len, alg))) {
        reason = "bad key";
        goto out;
    }
    if ((reason = check_signature(pkey, alg, auth_data, auth_data_len, client_data,
                                  client_data_len, sig, sig_len)))
        goto out;
    /* Step 21. Both zero: the authenticator keeps no counter, as synced
     * passkeys do not. Otherwise a count that did not move forward means
     * two authenticators answer for this credential: one is a clone. */
    if ((ad.count != 0 || stored_count != 0) && ad.count <= stored_count) {
        reason = "counter went back";
        goto out;
    }
    *new_count = ad.count;
    *uv = ad.flags & FLAG_UV;
    rc = 0;
out:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    if (rc)
        *why = reason;
    return rc;
}
