/*
 * TOTP for two-factor sign-in (totp.h is the design): base32, HOTP/TOTP on
 * OpenSSL's HMAC, the otpauth:// URI, its QR code through the libqrencode
 * loaded at run time (core/dl.h), and recovery codes.
 *
 * Every buffer that held key material or a code is wiped before it goes
 * out of scope: a stack slot reused by a later function must not hand a
 * user's secret to a bug elsewhere.
 */
#include "auth/totp.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/dl.h"
#include "core/err.h"
#include "core/random.h"

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* Without 0/o and 1/l/i, which people misread from a printout. */
static const char RECOVERY_ALPHABET[] = "23456789abcdefghjkmnpqrstuvwxyz";
#define RECOVERY_N (sizeof RECOVERY_ALPHABET - 1) /* 31 */
#define RECOVERY_CHARS 10

/* ---- base32 (RFC 4648 section 6) ---------------------------------------- */

size_t kiln_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t n = kiln_base32_len(len);
    if (cap < n + 1) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = B32[(acc >> bits) & 31];
        }
    }
    /* The last group is padded with zero bits on the right (section 6). */
    if (bits)
        out[o++] = B32[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return o;
}

/* The 5-bit value of c, case-insensitive; -1 outside the alphabet. */
static int b32_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

bool kiln_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t o = 0, chars = 0;
    uint32_t acc = 0;
    int bits = 0;
    bool padding = false;
    if (outlen)
        *outlen = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        /* People copy secrets in groups of four ("gr6d 5br7 ..."), as
         * authenticator apps show them. */
        if (c == ' ')
            continue;
        if (c == '=') {
            padding = true;
            continue;
        }
        int v = b32_value(c);
        /* Padding is only ever at the end: data after it is not base32. */
        if (v < 0 || padding)
            return false;
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        chars++;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return false;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* A last group of 1, 3 or 6 characters cannot come from any byte count
     * (8 bits per byte, 5 per character); the bits left over must be the
     * encoder's zero padding (section 3.5, canonical encoding). */
    size_t rem = chars % 8;
    if (rem == 1 || rem == 3 || rem == 6)
        return false;
    if (acc & ((1u << bits) - 1))
        return false;
    if (outlen)
        *outlen = o;
    return true;
}

/* ---- HOTP and TOTP (RFC 4226, RFC 6238) -------------------------------- */

static const EVP_MD *algo_md(enum kiln_totp_algo algo)
{
    switch (algo) {
    case KILN_TOTP_SHA256:
        return EVP_sha256();
    case KILN_TOTP_SHA512:
        return EVP_sha512();
    case KILN_TOTP_SHA1:
    default:
        return EVP_sha1();
    }
}

uint32_t kiln_hotp(const uint8_t *key, size_t keylen, uint64_t counter, int digits,
                   enum kiln_totp_algo algo)
{
    static const uint32_t pow10[] = { 1000000, 10000000, 100000000 };
    if (digits < 6 || digits > 8)
        kiln_fatal("kiln_hotp: digits must be 6..8");
    /* The counter is hashed as 8 bytes, most significant first (RFC 4226
     * section 5.2). */
    uint8_t msg[8];
    for (int i = 7; i >= 0; i--) {
        msg[i] = (uint8_t)counter;
        counter >>= 8;
    }
    /* HMAC() refuses a NULL key even of length 0. */
    static const uint8_t empty;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    if (!HMAC(algo_md(algo), keylen ? key : &empty, (int)keylen, msg, sizeof msg, mac, &mlen))
        kiln_fatal("HMAC failed"); /* only out of memory: the one OOM policy */
    /* Dynamic truncation (section 5.3): the low nibble of the last byte
     * picks 4 bytes, whose top bit is dropped so that the value is the same
     * signed or unsigned on every implementation. */
    unsigned off = mac[mlen - 1] & 0xf;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | mac[off + 3];
    OPENSSL_cleanse(mac, sizeof mac);
    return bin % pow10[digits - 6];
}

void kiln_totp_code(const uint8_t *key, size_t keylen, int64_t t, unsigned period, int digits,
                    enum kiln_totp_algo algo, char *out)
{
    if (period == 0)
        kiln_fatal("kiln_totp_code: period 0");
    /* T = floor((t - T0) / X) with T0 = 0 (RFC 6238 section 4.2). */
    uint64_t step = t > 0 ? (uint64_t)t / period : 0;
    uint32_t v = kiln_hotp(key, keylen, step, digits, algo);
    snprintf(out, 9, "%0*u", digits, (unsigned)v);
}

int kiln_totp_new_secret(char out[KILN_TOTP_SECRET_B32_LEN + 1])
{
    uint8_t raw[KILN_TOTP_SECRET_BYTES];
    if (kiln_random_bytes(raw, sizeof raw))
        return KILN_EIO;
    kiln_base32_encode(raw, sizeof raw, out, KILN_TOTP_SECRET_B32_LEN + 1);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/*
 * The 6 digits of what a person typed into digits (7 bytes), or false:
 * spaces around are dropped, and one space after the third digit, the way
 * authenticator apps display a code ("123 456").
 */
static bool typed_code(const char *code, char digits[KILN_TOTP_DIGITS + 1])
{
    size_t len = strlen(code), b = 0;
    while (b < len && code[b] == ' ')
        b++;
    while (len > b && code[len - 1] == ' ')
        len--;
    size_t n = 0;
    for (size_t i = b; i < len; i++) {
        char c = code[i];
        /* Trimmed, so a space here has a character after it. */
        if (c == ' ' && n == KILN_TOTP_DIGITS / 2 && code[i + 1] != ' ')
            continue;
        if (c < '0' || c > '9' || n == KILN_TOTP_DIGITS)
            return false;
        digits[n++] = c;
    }
    digits[n] = '\0';
    return n == KILN_TOTP_DIGITS;
}

int64_t kiln_totp_verify(const char *secret_b32, const char *code, int64_t now, int window,
                         int64_t last_step)
{
    /* What the key's buffer holds: more than the 20 bytes Kiln makes, for
     * secrets enrolled elsewhere with SHA-1's 64-byte block. */
    uint8_t key[64];
    size_t keylen = 0;
    char want[KILN_TOTP_DIGITS + 1], got[16];
    int64_t matched = -1;
    if (!secret_b32 || !code || !typed_code(code, want))
        goto out;
    if (!kiln_base32_decode(secret_b32, strlen(secret_b32), key, sizeof key, &keylen) ||
        keylen < 16)
        goto out;
    if (window < 0)
        window = 0;
    if (window > KILN_TOTP_MAX_WINDOW)
        window = KILN_TOTP_MAX_WINDOW;
    int64_t step = now > 0 ? now / KILN_TOTP_PERIOD : 0;
    /* Every step of the window is computed and compared, match or not, so
     * the time taken says nothing about which step (if any) matched. Steps
     * at or before last_step are skipped on public data alone. */
    for (int64_t s = step - window; s <= step + window; s++) {
        if (s < 0 || s <= last_step)
            continue;
        uint32_t v = kiln_hotp(key, keylen, (uint64_t)s, KILN_TOTP_DIGITS, KILN_TOTP_SHA1);
        snprintf(got, sizeof got, "%06u", (unsigned)v);
        /* Without a branch on the result: mask is all ones on a match. A
         * later step wins, so a code that two steps share uses up both. */
        int64_t mask = -(int64_t)(CRYPTO_memcmp(got, want, KILN_TOTP_DIGITS) == 0);
        matched = (s & mask) | (matched & ~mask);
    }
out:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(want, sizeof want);
    OPENSSL_cleanse(got, sizeof got);
    return matched;
}

/* ---- enrolment: the otpauth:// URI and its QR code -------------------- */

/* RFC 3986 section 2.3: the only bytes a URI component carries as they are. */
static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static char *pct_encode(char *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    return o;
}

char *kiln_totp_uri(kiln_arena *a, const char *issuer, const char *account,
                    const char *secret_b32)
{
    static const char tail[] = "&algorithm=SHA1&digits=6&period=30";
    bool has_issuer = issuer && *issuer;
    size_t il = has_issuer ? strlen(issuer) : 0, al = strlen(account),
           sl = strlen(secret_b32);
    /* Every byte is at most 3 once encoded; the fixed parts around them. */
    size_t cap = sizeof "otpauth://totp/:?secret=&issuer=" + sizeof tail + 3 * (2 * il + al + sl);
    char *uri = kiln_arena_alloc(a, cap), *o = uri;
    o = stpcpy(o, "otpauth://totp/");
    /* The label's issuer prefix and the issuer parameter say the same: the
     * Key Uri Format asks for both, apps read one or the other. The ':'
     * between them stays literal, so an encoded ':' inside either part
     * cannot be taken for it. */
    if (has_issuer) {
        o = pct_encode(o, issuer);
        *o++ = ':';
    }
    o = pct_encode(o, account);
    o = stpcpy(o, "?secret=");
    o = pct_encode(o, secret_b32);
    if (has_issuer) {
        o = stpcpy(o, "&issuer=");
        o = pct_encode(o, issuer);
    }
    stpcpy(o, tail);
    return uri;
}

/* The SVG of a 177-module code (version 40) at its worst is under 0.3 MB. */
#define QR_SVG_MAX (1u << 20)
#define QR_QUIET 4 /* modules of light margin (ISO/IEC 18004 section 6.3.8) */

char *kiln_totp_qr_svg(kiln_arena *a, const char *text)
{
    if (kiln_dl_qrencode())
        return NULL;
    /* Version 0: the smallest that holds the text. Level M (15% of the
     * symbol can be lost) is what a phone camera on a screen needs; the
     * hint QR_MODE_8 keeps Kanji mode out, and case-sensitive keeps the
     * secret's and the account's letters as they are. */
    QRcode *qr = kiln_qrencode.QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!qr)
        return NULL;
    int w = qr->width, size = w + 2 * QR_QUIET;
    kiln_buf b;
    kiln_buf_init(&b, QR_SVG_MAX);
    /* A white background under the quiet zone: on a dark page a transparent
     * one would leave the camera light modules on black. */
    int rc = kiln_buf_printf(&b,
                             "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
                             "viewBox=\"0 0 %d %d\"><rect width=\"%d\" height=\"%d\" "
                             "fill=\"#fff\"/><path shape-rendering=\"crispEdges\" "
                             "fill=\"#000\" d=\"",
                             size, size, size, size);
    /* One subpath per horizontal run of dark modules (bit 0 of each byte
     * is the module's colour; the other bits are libqrencode's own). */
    for (int y = 0; y < w && rc == 0; y++) {
        const unsigned char *row = qr->data + (size_t)y * (size_t)w;
        for (int x = 0; x < w && rc == 0;) {
            if (!(row[x] & 1)) {
                x++;
                continue;
            }
            int x0 = x;
            while (x < w && (row[x] & 1))
                x++;
            rc = kiln_buf_printf(&b, "M%d %dh%dv1h-%dz", x0 + QR_QUIET, y + QR_QUIET, x - x0,
                                 x - x0);
        }
    }
    if (rc == 0)
        rc = kiln_buf_append_c(&b, "\"/></svg>\n");
    kiln_qrencode.QRcode_free(qr);
    char *svg = rc == 0 ? kiln_arena_strndup(a, b.p, b.len) : NULL;
    kiln_buf_free(&b);
    return svg;
}

/* ---- recovery codes ----------------------------------------------------- */

int kiln_totp_recovery_code(char out[KILN_TOTP_RECOVERY_LEN + 1])
{
    /* Rejection sampling: a byte below 248 (8 * 31) is uniform modulo 31;
     * the rest (3%) are drawn again instead of favouring the first eight
     * characters. */
    const unsigned limit = 256 - 256 % RECOVERY_N;
    uint8_t pool[32];
    size_t used = sizeof pool, n = 0;
    int rc = 0;
    while (n < RECOVERY_CHARS) {
        if (used == sizeof pool) {
            if (kiln_random_bytes(pool, sizeof pool)) {
                rc = KILN_EIO;
                goto out;
            }
            used = 0;
        }
        uint8_t r = pool[used++];
        if (r >= limit)
            continue;
        /* The dash after five, as the code is printed and read out. */
        out[n < 5 ? n : n + 1] = RECOVERY_ALPHABET[r % RECOVERY_N];
        n++;
    }
    out[5] = '-';
    out[KILN_TOTP_RECOVERY_LEN] = '\0';
out:
    OPENSSL_cleanse(pool, sizeof pool);
    if (rc)
        out[0] = '\0';
    return rc;
}

bool kiln_totp_recovery_hash(const char *typed, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    char norm[RECOVERY_CHARS];
    size_t n = 0;
    bool ok = false;
    out[0] = '\0';
    for (const char *p = typed; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '-' || c == ' ')
            continue;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        /* memchr would also find the alphabet's NUL for a NUL byte, which
         * cannot occur here: c comes from inside the C string. */
        if (n == RECOVERY_CHARS || !memchr(RECOVERY_ALPHABET, c, RECOVERY_N))
            goto out;
        norm[n++] = (char)c;
    }
    if (n != RECOVERY_CHARS)
        goto out;
    unsigned char md[32];
    unsigned int mlen = 0;
    if (!EVP_Digest(norm, n, md, &mlen, EVP_sha256(), NULL))
        kiln_fatal("SHA-256 failed"); /* only out of memory */
    for (unsigned i = 0; i < mlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * mlen] = '\0';
    OPENSSL_cleanse(md, sizeof md);
    ok = true;
out:
    OPENSSL_cleanse(norm, sizeof norm);
    return ok;
}
