/*
 * Unit tests for app/src/auth/totp.c. The expected values come from
 * outside Kiln: the RFCs' own test vectors (RFC 4226 Appendix D, RFC 6238
 * Appendix B, RFC 4648 section 10), Debian's oathtool run on random
 * secrets and times, and Python's hashlib for the recovery code's hash.
 * The QR code is read back from the SVG and compared, module by module,
 * with libqrencode's own matrix.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "test_util.h"

#include "auth/totp.h"
#include "core/arena.h"
#include "core/dl.h"
#include "core/random.h"

/* ---- HOTP and TOTP against the RFCs ------------------------------------- */

static void test_hotp_rfc4226_appendix_d(void **state)
{
    (void)state;
    static const uint32_t want[] = { 755224, 287082, 359152, 969429, 338314,
                                     254676, 287922, 162583, 399871, 520489 };
    const uint8_t *key = (const uint8_t *)"12345678901234567890";
    for (uint64_t c = 0; c < ARRAY_LEN(want); c++) {
        uint32_t got = kiln_hotp(key, 20, c, 6, KILN_TOTP_SHA1);
        if (got != want[c])
            fail_msg("counter %u: got %06u, want %06u", (unsigned)c, got, want[c]);
    }
}

static void test_totp_rfc6238_appendix_b(void **state)
{
    (void)state;
    /* The seeds of the RFC's reference code: the ASCII digits repeated to
     * the hash's size (20, 32 and 64 bytes). */
    static const char seed64[] =
        "1234567890123456789012345678901234567890123456789012345678901234";
    static const struct {
        int64_t t;
        const char *sha1, *sha256, *sha512;
    } rows[] = {
        { 59, "94287082", "46119246", "90693936" },
        { 1111111109, "07081804", "68084774", "25091201" },
        { 1111111111, "14050471", "67062674", "99943326" },
        { 1234567890, "89005924", "91819424", "93441116" },
        { 2000000000, "69279037", "90698825", "38618901" },
        { 20000000000LL, "65353130", "77737706", "47863826" },
    };
    static const struct {
        enum kiln_totp_algo algo;
        size_t keylen;
        const char *name;
    } algos[] = {
        { KILN_TOTP_SHA1, 20, "SHA1" },
        { KILN_TOTP_SHA256, 32, "SHA256" },
        { KILN_TOTP_SHA512, 64, "SHA512" },
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        for (size_t j = 0; j < ARRAY_LEN(algos); j++) {
            const char *want = j == 0 ? rows[i].sha1 : j == 1 ? rows[i].sha256 : rows[i].sha512;
            char got[9];
            memset(got, 'x', sizeof got);
            kiln_totp_code((const uint8_t *)seed64, algos[j].keylen, rows[i].t, 30, 8,
                           algos[j].algo, got);
            if (strcmp(got, want))
                fail_msg("T=%lld %s: got \"%s\", want \"%s\"", (long long)rows[i].t,
                         algos[j].name, got, want);
        }
    }
    /* Six digits are the last six of the eight, zero-padded. */
    char got[9];
    kiln_totp_code((const uint8_t *)seed64, 20, 1111111109, 30, 6, KILN_TOTP_SHA1, got);
    assert_string_equal(got, "081804");
}

/* ---- base32 ------------------------------------------------------------- */

static const struct {
    const char *raw, *padded, *bare;
} b32_vectors[] = {
    /* RFC 4648 section 10 */
    { "", "", "" },
    { "f", "MY======", "MY" },
    { "fo", "MZXQ====", "MZXQ" },
    { "foo", "MZXW6===", "MZXW6" },
    { "foob", "MZXW6YQ=", "MZXW6YQ" },
    { "fooba", "MZXW6YTB", "MZXW6YTB" },
    { "foobar", "MZXW6YTBOI======", "MZXW6YTBOI" },
};

static void expect_decodes(const char *in, const char *want)
{
    uint8_t out[64];
    size_t n = 999;
    if (!kiln_base32_decode(in, strlen(in), out, sizeof out, &n))
        fail_msg("\"%s\" refused, want \"%s\"", in, want);
    assert_mem_eq((const char *)out, n, want, strlen(want));
}

static void test_base32_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(b32_vectors); i++) {
        const char *raw = b32_vectors[i].raw;
        char enc[32];
        memset(enc, 'x', sizeof enc);
        size_t n = kiln_base32_encode((const uint8_t *)raw, strlen(raw), enc, sizeof enc);
        assert_int_equal(n, strlen(b32_vectors[i].bare));
        assert_string_equal(enc, b32_vectors[i].bare);
        assert_int_equal(kiln_base32_len(strlen(raw)), n);

        expect_decodes(b32_vectors[i].padded, raw);
        expect_decodes(b32_vectors[i].bare, raw);
        char lower[32];
        size_t k = 0;
        for (const char *p = b32_vectors[i].padded; *p; p++)
            lower[k++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
        lower[k] = '\0';
        expect_decodes(lower, raw);
    }
    /* Spaces anywhere (the way apps group a secret), mixed case. */
    expect_decodes("mzxw 6Ytb oi", "foobar");
    expect_decodes(" MZXW6YQ= ", "foob");
    expect_decodes("MZXW6YTBOI====== ", "foobar");
}

static void test_base32_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "MZXW6YT1",    /* '1', '0' and '8' are not in the alphabet */
        "MZXW6YT0",
        "MZXW6YT8",
        "MZXW6YT!",
        "MZ=XW6YTB",   /* '=' is padding only at the end */
        "MY======MY",
        "=MY",
        "MZXW6YTB\n",
        "M",           /* 1, 3, 6 characters cannot end an encoding */
        "MZX",
        "MZXW6Y",
        "MZ",          /* non-zero bits after the last byte */
        "MZXR",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        uint8_t out[64];
        size_t n = 999;
        if (kiln_base32_decode(bad[i], strlen(bad[i]), out, sizeof out, &n))
            fail_msg("\"%s\" decoded (%zu bytes), want a refusal", bad[i], n);
    }
    /* An embedded NUL is refused, not taken for the end. */
    uint8_t out[8];
    assert_false(kiln_base32_decode("MY\0A", 4, out, sizeof out, NULL));
    /* Too small an output: refused, whatever the input's length says. */
    assert_false(kiln_base32_decode("MZXW6YTBOI", 10, out, 5, NULL));
    assert_true(kiln_base32_decode("MZXW6YTBOI", 10, out, 6, NULL));
    /* Too small for the encoding: "" and 0. */
    char enc[8];
    assert_int_equal(kiln_base32_encode((const uint8_t *)"foobar", 6, enc, sizeof enc), 0);
    assert_string_equal(enc, "");
}

static void test_base32_round_trips(void **state)
{
    (void)state;
    uint8_t raw[41], back[41];
    char enc[80];
    assert_int_equal(kiln_random_bytes(raw, sizeof raw), 0);
    for (size_t len = 0; len <= sizeof raw; len++) {
        size_t n = kiln_base32_encode(raw, len, enc, sizeof enc);
        assert_int_equal(n, (len * 8 + 4) / 5);
        size_t m = 0;
        assert_true(kiln_base32_decode(enc, n, back, sizeof back, &m));
        assert_mem_eq((const char *)back, m, (const char *)raw, len);
    }
}

/* ---- oathtool: an implementation we did not write ---------------------- */

/* The first line of cmd's output into out; the exit status. */
static int run_line(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        fail_msg("popen failed: %s", cmd);
    out[0] = '\0';
    if (fgets(out, (int)cap, f))
        out[strcspn(out, "\r\n")] = '\0';
    char drain[256];
    while (fgets(drain, sizeof drain, f))
        ;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_totp_matches_oathtool(void **state)
{
    (void)state;
    char line[256];
    if (run_line("oathtool --version 2>&1", line, sizeof line) != 0)
        fail_msg("oathtool is missing (\"%s\"): install it (apt-get install oathtool; it "
                 "is in scripts/debian-packages.txt). This test needs an implementation "
                 "Kiln did not write.",
                 line);
    static const struct {
        enum kiln_totp_algo algo;
        const char *mode;
        size_t keylen;
        int digits;
    } cases[] = {
        { KILN_TOTP_SHA1, "SHA1", KILN_TOTP_SECRET_BYTES, 6 },
        { KILN_TOTP_SHA1, "SHA1", 16, 8 },
        { KILN_TOTP_SHA256, "SHA256", 32, 6 },
        { KILN_TOTP_SHA512, "SHA512", 64, 8 },
    };
    /* Step edges as well as random times up to 2^33 s (the year 2242). */
    int64_t times[8] = { 0, 29, 30, 59 };
    uint64_t r[4];
    assert_int_equal(kiln_random_bytes(r, sizeof r), 0);
    for (size_t i = 4; i < ARRAY_LEN(times); i++)
        times[i] = (int64_t)(r[i - 4] % (1ull << 33));
    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        for (size_t i = 0; i < ARRAY_LEN(times); i++) {
            uint8_t key[64];
            char b32[128], cmd[512], want[9];
            assert_int_equal(kiln_random_bytes(key, cases[c].keylen), 0);
            kiln_base32_encode(key, cases[c].keylen, b32, sizeof b32);
            /* -N takes a date; gnulib's "@<seconds since the epoch>" is
             * one, and needs no time zone. */
            snprintf(cmd, sizeof cmd, "oathtool --totp=%s -b -d %d -N @%lld %s 2>&1",
                     cases[c].mode, cases[c].digits, (long long)times[i], b32);
            int rc = run_line(cmd, line, sizeof line);
            if (rc != 0)
                fail_msg("%s: exit %d: %s", cmd, rc, line);
            kiln_totp_code(key, cases[c].keylen, times[i], 30, cases[c].digits, cases[c].algo,
                           want);
            if (strcmp(line, want))
                fail_msg("%s: oathtool \"%s\", kiln \"%s\"", cmd, line, want);
        }
    }
    /* A secret from kiln_totp_new_secret, as an app would be given it. */
    char secret[KILN_TOTP_SECRET_B32_LEN + 1], cmd[256], want[9];
    assert_int_equal(kiln_totp_new_secret(secret), 0);
    snprintf(cmd, sizeof cmd, "oathtool --totp -b -N @1700000000 %s 2>&1", secret);
    assert_int_equal(run_line(cmd, line, sizeof line), 0);
    uint8_t key[KILN_TOTP_SECRET_BYTES];
    size_t n = 0;
    assert_true(kiln_base32_decode(secret, strlen(secret), key, sizeof key, &n));
    assert_int_equal(n, KILN_TOTP_SECRET_BYTES);
    kiln_totp_code(key, n, 1700000000, 30, 6, KILN_TOTP_SHA1, want);
    assert_string_equal(line, want);
}

static void test_new_secrets(void **state)
{
    (void)state;
    char s1[KILN_TOTP_SECRET_B32_LEN + 1], s2[KILN_TOTP_SECRET_B32_LEN + 1];
    assert_int_equal(kiln_totp_new_secret(s1), 0);
    assert_int_equal(kiln_totp_new_secret(s2), 0);
    assert_int_equal(strlen(s1), KILN_TOTP_SECRET_B32_LEN);
    assert_int_equal(strspn(s1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), KILN_TOTP_SECRET_B32_LEN);
    assert_string_not_equal(s1, s2);
}

/* ---- verification -------------------------------------------------------- */

/* RFC 4226's key; at 1234567890 (step 41152263) its 6-digit code is
 * 005924 (RFC 6238's 89005924, and oathtool). */
#define SECRET "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
#define NOW 1234567890LL
#define STEP (NOW / 30)

static void code_at(int64_t t, char out[9])
{
    kiln_totp_code((const uint8_t *)"12345678901234567890", 20, t, 30, 6, KILN_TOTP_SHA1, out);
}

static void test_verify_window(void **state)
{
    (void)state;
    char before[9], now[9], after[9], after2[9];
    code_at(NOW - 30, before);
    code_at(NOW, now);
    code_at(NOW + 30, after);
    code_at(NOW + 60, after2);
    assert_string_equal(now, "005924");
    /* The four differ, or the window tests below would prove nothing. */
    assert_string_not_equal(before, now);
    assert_string_not_equal(after, now);
    assert_string_not_equal(after2, now);
    assert_string_not_equal(after2, after);
    assert_string_not_equal(after2, before);

    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 1, -1), STEP);
    assert_int_equal(kiln_totp_verify(SECRET, before, NOW, 1, -1), STEP - 1);
    assert_int_equal(kiln_totp_verify(SECRET, after, NOW, 1, -1), STEP + 1);
    assert_int_equal(kiln_totp_verify(SECRET, after2, NOW, 1, -1), -1);
    /* Anywhere inside the step is the same step. */
    assert_int_equal(kiln_totp_verify(SECRET, now, STEP * 30, 1, -1), STEP);
    assert_int_equal(kiln_totp_verify(SECRET, now, STEP * 30 + 29, 1, -1), STEP);
    /* Window 0: this step only; 2: two steps either way. */
    assert_int_equal(kiln_totp_verify(SECRET, before, NOW, 0, -1), -1);
    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 0, -1), STEP);
    assert_int_equal(kiln_totp_verify(SECRET, after2, NOW, 2, -1), STEP + 2);
    /* A huge window is clamped, not looped over for ever. */
    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 1 << 30, -1), STEP);
    /* The secret in lowercase and in groups is the same secret. */
    assert_int_equal(kiln_totp_verify("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", now, NOW, 1, -1),
                     STEP);
}

static void test_verify_refuses_replay(void **state)
{
    (void)state;
    char before[9], now[9], after[9];
    code_at(NOW - 30, before);
    code_at(NOW, now);
    code_at(NOW + 30, after);
    /* The step just accepted, or a later one, was used: refused. */
    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 1, STEP), -1);
    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 1, STEP + 1), -1);
    /* An earlier step than the last one accepted: refused, although it is
     * inside the window. */
    assert_int_equal(kiln_totp_verify(SECRET, before, NOW, 1, STEP), -1);
    assert_int_equal(kiln_totp_verify(SECRET, before, NOW, 1, STEP - 1), -1);
    /* A newer code after an older one: accepted. */
    assert_int_equal(kiln_totp_verify(SECRET, now, NOW, 1, STEP - 1), STEP);
    assert_int_equal(kiln_totp_verify(SECRET, after, NOW, 1, STEP), STEP + 1);
}

static void test_verify_typed_forms(void **state)
{
    (void)state;
    static const struct {
        const char *typed;
        bool ok;
    } cases[] = {
        { "005924", true },
        { "005 924", true },
        { "  005924  ", true },
        { " 005 924 ", true },
        { "12345", false },
        { "1234567", false },
        { "12a456", false },
        { "", false },
        { "   ", false },
        { "00592", false },
        { "0059245", false },
        { "00a924", false },
        { "0059 24", false },
        { "005  924", false },
        { "0 05924", false },
        { "00 59 24", false },
        { "005924\n", false },
        { "\t005924", false },
        { "+005924", false },
        { "005-924", false },
        { "５924", false },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int64_t got = kiln_totp_verify(SECRET, cases[i].typed, NOW, 1, -1);
        int64_t want = cases[i].ok ? STEP : -1;
        if (got != want)
            fail_msg("\"%s\": got %lld, want %lld", cases[i].typed, (long long)got,
                     (long long)want);
    }
}

static void test_verify_refuses_bad_secrets(void **state)
{
    (void)state;
    assert_int_equal(kiln_totp_verify("", "005924", NOW, 1, -1), -1);
    assert_int_equal(kiln_totp_verify("GEZDGNBVGY3TQOJ1", "005924", NOW, 1, -1), -1);
    assert_int_equal(kiln_totp_verify(NULL, "005924", NOW, 1, -1), -1);
    assert_int_equal(kiln_totp_verify(SECRET, NULL, NOW, 1, -1), -1);
    /* 80 bits: under RFC 4226's 128-bit minimum, whatever the code. */
    char code[9];
    kiln_totp_code((const uint8_t *)"1234567890", 10, NOW, 30, 6, KILN_TOTP_SHA1, code);
    assert_int_equal(kiln_totp_verify("GEZDGNBVGY3TQOJQ", code, NOW, 1, -1), -1);
}

/* ---- the enrolment URI ------------------------------------------------- */

static void test_uri(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(1024);
    assert_string_equal(kiln_totp_uri(a, "Kiln Example", "ann@example.com", "JBSWY3DPEHPK3PXP"),
                        "otpauth://totp/Kiln%20Example:ann%40example.com"
                        "?secret=JBSWY3DPEHPK3PXP&issuer=Kiln%20Example"
                        "&algorithm=SHA1&digits=6&period=30");
    /* ':' inside a part is encoded, so only the separator is literal;
     * UTF-8 bytes are encoded one by one; unreserved marks stay. */
    assert_string_equal(kiln_totp_uri(a, "A:B&C", "z\xc3\xa9-._~/?#+", "MZXW6YTB"),
                        "otpauth://totp/A%3AB%26C:z%C3%A9-._~%2F%3F%23%2B"
                        "?secret=MZXW6YTB&issuer=A%3AB%26C"
                        "&algorithm=SHA1&digits=6&period=30");
    assert_string_equal(kiln_totp_uri(a, NULL, "ann", "MZXW6YTB"),
                        "otpauth://totp/ann?secret=MZXW6YTB&algorithm=SHA1&digits=6&period=30");
    assert_string_equal(kiln_totp_uri(a, "", "ann", "MZXW6YTB"),
                        "otpauth://totp/ann?secret=MZXW6YTB&algorithm=SHA1&digits=6&period=30");
    kiln_arena_free(a);
}

/* ---- the QR code --------------------------------------------------------- */

static size_t count(const char *h, const char *needle)
{
    size_t n = 0;
    for (const char *p = h; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/*
 * Read the dark modules back from the path ("M<x> <y>h<n>v1h-<n>z" runs)
 * into grid (size x size) and check them against libqrencode's matrix for
 * text, shifted by the quiet zone.
 */
static void check_svg_against_qrencode(const char *svg, const char *text)
{
    QRcode *qr = kiln_qrencode.QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    assert_non_null(qr);
    int w = qr->width, size = w + 8;
    char vb[64];
    snprintf(vb, sizeof vb, "viewBox=\"0 0 %d %d\"", size, size);
    assert_contains(svg, strlen(svg), vb);

    unsigned char *grid = calloc((size_t)size * (size_t)size, 1);
    assert_non_null(grid);
    const char *d = strstr(svg, " d=\"");
    assert_non_null(d);
    d += 4;
    while (*d == 'M') {
        int x, y, n, n2, used = 0;
        if (sscanf(d, "M%d %dh%dv1h-%dz%n", &x, &y, &n, &n2, &used) != 4 || used == 0)
            fail_msg("unexpected path data at \"%.40s\"", d);
        assert_int_equal(n, n2);
        assert_true(n > 0 && x >= 0 && y >= 0 && x + n <= size && y < size);
        for (int i = 0; i < n; i++) {
            if (grid[y * size + x + i])
                fail_msg("module (%d,%d) drawn twice", x + i, y);
            grid[y * size + x + i] = 1;
        }
        d += used;
    }
    assert_int_equal(*d, '"');
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            bool inside = x >= 4 && y >= 4 && x < w + 4 && y < w + 4;
            int want = inside ? (qr->data[(y - 4) * w + (x - 4)] & 1) : 0;
            if (grid[y * size + x] != want)
                fail_msg("module (%d,%d): svg %d, qrencode %d (width %d)", x, y,
                         grid[y * size + x], want, w);
        }
    }
    free(grid);
    kiln_qrencode.QRcode_free(qr);
}

static void test_qr_svg(void **state)
{
    (void)state;
    if (kiln_dl_qrencode() != 0)
        fail_msg("cannot load " KILN_QRENCODE_SONAME ": install libqrencode4 "
                 "(libqrencode-dev is in scripts/debian-packages.txt)");
    kiln_arena *a = kiln_arena_new(4096);

    /* 5 bytes at level M: version 1, 21 modules, 29 with the quiet zone. */
    const char *svg = kiln_totp_qr_svg(a, "hello");
    assert_non_null(svg);
    assert_memory_equal(svg, "<svg", 4);
    assert_contains(svg, strlen(svg), "viewBox=\"0 0 29 29\"");
    check_svg_against_qrencode(svg, "hello");

    const char *uri = kiln_totp_uri(a, "Kiln Example", "ann@example.com",
                                    "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    const char *s1 = kiln_totp_qr_svg(a, uri);
    const char *s2 = kiln_totp_qr_svg(a, uri);
    assert_non_null(s1);
    assert_non_null(s2);
    size_t len = strlen(s1);
    assert_memory_equal(s1, "<svg", 4);
    assert_int_equal(count(s1, "<path"), 1);
    assert_int_equal(count(s1, "<svg"), 1);
    assert_contains(s1, len, "</svg>");
    assert_contains(s1, len, "xmlns=\"http://www.w3.org/2000/svg\"");
    assert_contains(s1, len, "shape-rendering=\"crispEdges\"");
    assert_not_contains(s1, len, "<script");
    assert_not_contains(s1, len, "href");
    assert_not_contains(s1, len, "url(");
    assert_not_contains(s1, len, " on");
    /* Deterministic: the same text, the same bytes. */
    assert_string_equal(s1, s2);
    check_svg_against_qrencode(s1, uri);
    /* Another text, another symbol. */
    assert_string_not_equal(s1, kiln_totp_qr_svg(a, "hellp"));

    /* Past a version 40 symbol's capacity at level M (2331 bytes): NULL. */
    char *big = malloc(4001);
    assert_non_null(big);
    memset(big, 'x', 4000);
    big[4000] = '\0';
    assert_null(kiln_totp_qr_svg(a, big));
    free(big);
    kiln_arena_free(a);
}

/* ---- recovery codes ------------------------------------------------------ */

#define ALPHABET "23456789abcdefghjkmnpqrstuvwxyz"

static void test_recovery_codes(void **state)
{
    (void)state;
    char codes[KILN_TOTP_RECOVERY_CODES][KILN_TOTP_RECOVERY_LEN + 1];
    for (size_t i = 0; i < KILN_TOTP_RECOVERY_CODES; i++) {
        assert_int_equal(kiln_totp_recovery_code(codes[i]), 0);
        const char *c = codes[i];
        assert_int_equal(strlen(c), KILN_TOTP_RECOVERY_LEN);
        assert_int_equal(c[5], '-');
        assert_int_equal(strspn(c, ALPHABET), 5);
        assert_int_equal(strspn(c + 6, ALPHABET), 5);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(codes[j], c);
        /* What we hand out, we take back. */
        char h[65];
        assert_true(kiln_totp_recovery_hash(c, h));
    }
}

/*
 * Uniform over the 31 characters: a chi-square over 100000 characters.
 * With the modulo bias this module avoids (byte % 31 without rejection,
 * the first 8 characters 9/8 as likely) the statistic is about 280; a
 * uniform source passes the bound of 110 (30 degrees of freedom) with
 * a false failure about once in 10^11 runs.
 */
static void test_recovery_codes_are_uniform(void **state)
{
    (void)state;
    unsigned counts[31] = { 0 };
    size_t total = 0;
    for (int i = 0; i < 10000; i++) {
        char c[KILN_TOTP_RECOVERY_LEN + 1];
        assert_int_equal(kiln_totp_recovery_code(c), 0);
        for (int k = 0; k < KILN_TOTP_RECOVERY_LEN; k++) {
            if (k == 5)
                continue;
            const char *p = strchr(ALPHABET, c[k]);
            assert_non_null(p);
            counts[p - ALPHABET]++;
            total++;
        }
    }
    double e = (double)total / 31, chi = 0;
    for (int i = 0; i < 31; i++)
        chi += (counts[i] - e) * (counts[i] - e) / e;
    if (chi > 110)
        fail_msg("chi-square %.1f over 31 characters: not uniform", chi);
}

static void test_recovery_hash(void **state)
{
    (void)state;
    /* hashlib.sha256(b"abcdefghjk").hexdigest() */
    static const char want[] = "22f3f00d7f9cfe6eeefa9b71bdcb093a9080fcf4981d2dbf932648fa15a2d793";
    static const char *const same[] = {
        "abcde-fghjk", "ABCDE-FGHJK", "abcde fghjk", "abcdefghjk", " AbCdE-fGhJk ", "abc-de-fghjk",
    };
    for (size_t i = 0; i < ARRAY_LEN(same); i++) {
        char h[65];
        memset(h, 'x', sizeof h);
        if (!kiln_totp_recovery_hash(same[i], h))
            fail_msg("\"%s\" refused", same[i]);
        if (strcmp(h, want))
            fail_msg("\"%s\": got %s, want %s", same[i], h, want);
    }
    char other[65], h[65];
    assert_true(kiln_totp_recovery_hash("abcde-fghjm", other));
    assert_string_not_equal(other, want);

    static const char *const bad[] = {
        "",
        "abcde-fghj",    /* 9 */
        "abcde-fghjkm",  /* 11 */
        "abcde-fghj1",   /* look-alikes are not in the alphabet */
        "abcde-fghj0",
        "abcde-fghjo",
        "abcde-fghji",
        "abcde-fghjl",
        "abcde_fghjk",
        "abcde\tfghjk",
        "abcde-fghj\xc3\xa9",
        "abcde-fghjk-abcde-fghjk",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        memset(h, 'x', sizeof h);
        if (kiln_totp_recovery_hash(bad[i], h))
            fail_msg("\"%s\" accepted", bad[i]);
        assert_string_equal(h, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hotp_rfc4226_appendix_d),
        cmocka_unit_test(test_totp_rfc6238_appendix_b),
        cmocka_unit_test(test_base32_rfc4648_vectors),
        cmocka_unit_test(test_base32_refusals),
        cmocka_unit_test(test_base32_round_trips),
        cmocka_unit_test(test_totp_matches_oathtool),
        cmocka_unit_test(test_new_secrets),
        cmocka_unit_test(test_verify_window),
        cmocka_unit_test(test_verify_refuses_replay),
        cmocka_unit_test(test_verify_typed_forms),
        cmocka_unit_test(test_verify_refuses_bad_secrets),
        cmocka_unit_test(test_uri),
        cmocka_unit_test(test_qr_svg),
        cmocka_unit_test(test_recovery_codes),
        cmocka_unit_test(test_recovery_codes_are_uniform),
        cmocka_unit_test(test_recovery_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
