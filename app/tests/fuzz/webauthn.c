/*
 * libFuzzer target for app/src/auth/webauthn.c: the bytes a browser posts
 * for a passkey registration or sign-in. The first byte picks the path and
 * its settings; the rest is split into parts, each but the last preceded by
 * its length (two bytes, big-endian, cut to what is left):
 *   bit 0 clear  registration: clientDataJSON, attestationObject; bit 4:
 *                user verification required;
 *   bit 0 set    assertion: clientDataJSON, authenticatorData, signature,
 *                SPKI. Bits 1-2: the stored algorithm (ES256, RS256, EdDSA,
 *                or -35, which is none of ours); bit 3: the SPKI part is the
 *                stored key, else the fixed key of that algorithm below;
 *                bit 4: UV required; bits 5-7: the stored count.
 * The rp, the challenge and the keys are fixed, and are those of the unit
 * test's vectors: the seeds in corpus/webauthn/ (written by
 * app/tests/unit/webauthn_vectors.py --corpus) are valid ceremonies, signed
 * with the private halves of these keys, for the fuzzer to mutate from.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/webauthn.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHALLENGE "dGhlLXNlcnZlci1pc3N1ZWQtY2hhbGxlbmdlLTE"

static const char *const origins[] = { "https://example.com", "https://login.example.com" };
static const struct kiln_webauthn_rp rp = { "example.com", origins, 2 };

/* Public keys only (SubjectPublicKeyInfo DER); webauthn_vectors.py has
 * the private halves. */
static const uint8_t spki_es256[91] =
    "\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d"
    "\x03\x01\x07\x03\x42\x00\x04\x66\xa1\x30\x8f\x41\xad\x52\x3b\x93\x45\x19\xae\xd9"
    "\x57\xac\x19\x23\x1b\x77\xe9\x16\x89\xe7\x75\x8e\x78\x06\x13\x09\x6c\xb0\x8e\x17"
    "\xff\xbc\x4a\x8c\x6e\xa1\x0d\x8a\x32\x69\xbc\xf2\xb5\xd9\x9f\xa5\xeb\x00\x45\x13"
    "\xf6\x8c\xa6\x35\xcb\x64\xe5\x5e\xc0\xda\x3a";

static const uint8_t spki_rs256[294] =
    "\x30\x82\x01\x22\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00\x03"
    "\x82\x01\x0f\x00\x30\x82\x01\x0a\x02\x82\x01\x01\x00\xce\xd6\x36\x02\xd0\xe4\x20"
    "\x9b\x81\xc9\x69\x67\xe5\xff\x5e\xa3\xd6\x3e\x48\x95\xac\xf5\xdc\xe3\x4e\x03\xac"
    "\xe3\x59\xdf\x4b\x4c\x06\xf2\x4b\xb4\x78\xad\xfc\x56\x38\xad\xf0\xf9\xe5\x94\x39"
    "\x52\x7a\xe6\x9c\x77\x07\xd6\x8d\x5f\xe2\x3c\x49\xd6\xb3\xcb\xf7\x37\x14\xb4\xf7"
    "\x0d\x82\x6b\x95\x9e\x2d\x92\x0d\x06\x58\x45\xaa\x15\x76\xa2\x57\x66\xcb\x7a\x68"
    "\xc4\xf2\xec\x26\xeb\x68\x21\x87\x7a\xe0\x3b\x83\x08\x8a\xc8\xea\xd0\xc8\xea\xaa"
    "\x82\xff\xca\x92\xa0\x07\x19\x67\x33\xc0\x34\x88\xe1\xeb\x84\x6a\x4b\x41\x93\xf3"
    "\x93\x2a\x19\x4b\x72\x2b\xed\xb0\xd5\x7e\x8b\xf7\x24\x4d\x46\x20\xfe\x94\x16\x10"
    "\x51\x4d\x61\x08\x4a\xcc\x33\x58\xa7\xdd\xcf\x6f\x79\x02\x83\x42\x79\x29\x85\xae"
    "\x1b\xd6\x0e\x32\x89\x27\xb2\x81\x19\xb1\x01\x76\x59\x8b\x26\x00\x99\x48\x48\x33"
    "\xd0\x23\xea\x87\x42\xea\xed\x5b\xb2\x27\x3c\x30\xba\x36\xe5\xce\x47\x63\x3d\x35"
    "\xce\x68\x6f\x76\xff\x94\x45\x15\x79\xf4\xb5\x1a\x46\x5b\x3a\x7a\x4d\x22\x2e\x69"
    "\xf8\x05\x72\x50\x75\x79\xc7\x4a\x0d\xec\x70\x4d\x4c\x59\xdd\xdf\xc8\x74\x7a\xd6"
    "\xbf\xda\x86\xe8\x9b\xc2\xd4\x0c\x3f\x02\x03\x01\x00\x01";

static const uint8_t spki_eddsa[44] =
    "\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00\xe8\xf4\xf0\xc1\x82\xf8\x29\x45"
    "\xbc\x59\xeb\x54\x56\xb7\x32\x78\x96\x21\x24\x86\xed\xf5\xda\x88\xca\x03\x1b\x04"
    "\xaa\xc5\x54\x02";

static const int algs[4] = { KILN_WEBAUTHN_ES256, KILN_WEBAUTHN_RS256, KILN_WEBAUTHN_EDDSA, -35 };

struct part {
    const uint8_t *p;
    size_t len;
};

/* The next part of data[0..size): length-prefixed, or the rest when last. */
static struct part next(const uint8_t **data, size_t *size, bool last)
{
    struct part out = { *data, *size };
    if (!last) {
        size_t n = *size >= 2 ? (size_t)(*data)[0] << 8 | (*data)[1] : 0;
        size_t skip = *size >= 2 ? 2 : *size;
        out.p = *data + skip;
        out.len = n < *size - skip ? n : *size - skip;
        skip += out.len;
        *data += skip;
        *size -= skip;
    } else {
        *data += *size;
        *size = 0;
    }
    return out;
}

/* An assertion no key signed, for checking a registered key is usable. */
static const char junk_cd[] = "{\"type\":\"webauthn.get\",\"challenge\":\"" CHALLENGE
                              "\",\"origin\":\"https://example.com\"}";

static void registration(uint8_t flags, const uint8_t *data, size_t size)
{
    struct part cd = next(&data, &size, false), att = next(&data, &size, true);
    struct kiln_webauthn_credential c;
    const char *why = NULL;
    int rc = kiln_webauthn_register(&rp, cd.p, cd.len, att.p, att.len, CHALLENGE, flags & 0x10,
                                    &c, &why);
    if (rc != 0) {
        if (rc != KILN_EINVAL || !why || c.public_key || c.id_len)
            abort();
        return;
    }
    /* What a success promises the caller. */
    if (why || !c.public_key || c.public_key_len == 0 || c.id_len == 0 ||
        c.id_len > KILN_WEBAUTHN_MAX_CRED_ID || !memchr(c.fmt, '\0', sizeof c.fmt) || !c.fmt[0] ||
        (c.alg != KILN_WEBAUTHN_ES256 && c.alg != KILN_WEBAUTHN_RS256 &&
         c.alg != KILN_WEBAUTHN_EDDSA) ||
        (c.backed_up && !c.backup_eligible))
        abort();
    /* The key it made loads as a stored key of its algorithm: an unsigned
     * assertion gets as far as the signature. */
    static const uint8_t ad[37] = {
        /* SHA-256("example.com"), UP, count 1 */
        0xa3, 0x79, 0xa6, 0xf6, 0xee, 0xaf, 0xb9, 0xa5, 0x5e, 0x37, 0x8c, 0x11, 0x80,
        0x34, 0xe2, 0x75, 0x1e, 0x68, 0x2f, 0xab, 0x9f, 0x2d, 0x30, 0xab, 0x13, 0xd2,
        0x12, 0x55, 0x86, 0xce, 0x19, 0x47, 0x01, 0x00, 0x00, 0x00, 0x01,
    };
    static const uint8_t sig[64];
    uint32_t count;
    bool uv;
    rc = kiln_webauthn_assert(&rp, (const uint8_t *)junk_cd, sizeof junk_cd - 1, ad, sizeof ad, sig,
                              sizeof sig, c.public_key, c.public_key_len, c.alg, 0, CHALLENGE,
                              false, &count, &uv, &why);
    if (rc != KILN_EINVAL || !why || strcmp(why, "bad signature") != 0)
        abort();
    kiln_webauthn_credential_free(&c);
}

static void assertion(uint8_t flags, const uint8_t *data, size_t size)
{
    struct part cd = next(&data, &size, false), ad = next(&data, &size, false);
    struct part sig = next(&data, &size, false), key = next(&data, &size, true);
    int alg = algs[flags >> 1 & 3];
    uint32_t stored = flags >> 5, count = 0;
    bool uv = true;
    const char *why = NULL;
    if (!(flags & 0x08)) {
        key.p = alg == KILN_WEBAUTHN_RS256 ? spki_rs256
                : alg == KILN_WEBAUTHN_EDDSA ? spki_eddsa
                                             : spki_es256;
        key.len = alg == KILN_WEBAUTHN_RS256 ? sizeof spki_rs256
                  : alg == KILN_WEBAUTHN_EDDSA ? sizeof spki_eddsa
                                               : sizeof spki_es256;
    }
    int rc = kiln_webauthn_assert(&rp, cd.p, cd.len, ad.p, ad.len, sig.p, sig.len, key.p, key.len,
                                  alg, stored, CHALLENGE, flags & 0x10, &count, &uv, &why);
    if (rc != 0) {
        if (rc != KILN_EINVAL || !why || count != stored || uv)
            abort();
        return;
    }
    /* Accepted: the counter moved forward, or both are zero. */
    if (why || (count <= stored && (count != 0 || stored != 0)) || ((flags & 0x10) && !uv))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        assertion(data[0], data + 1, size - 1);
    else
        registration(data[0], data + 1, size - 1);
    return 0;
}
