/*
 * Unit tests for app/src/core/buf.c (bounded growable buffer, JSON string
 * escaping) and app/src/core/arena.c (per-request bump allocator). Both sit
 * under everything that touches client bytes, so the limits and the escaping
 * table are checked byte for byte.
 */
#include <stdlib.h>

#include <jansson.h>

#include "test_util.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"

#define assert_buf(b, want) assert_mem_eq((b)->p, (b)->len, (want), strlen(want))

/* ---- kiln_buf ---------------------------------------------------------- */

static void test_append_within_max(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 10);
    assert_null(b.p);
    assert_int_equal(kiln_buf_append(&b, "12345", 5), 0);
    assert_int_equal(kiln_buf_append_c(&b, "67890"), 0);
    assert_buf(&b, "1234567890");
    assert_true(b.cap <= b.max);
    /* Full: nothing more fits, an empty append still succeeds. */
    assert_int_equal(kiln_buf_append(&b, "", 0), 0);
    assert_int_equal(kiln_buf_append(&b, "x", 1), KILN_ETOOBIG);
    assert_buf(&b, "1234567890");
    kiln_buf_free(&b);
}

static void test_append_past_max_leaves_buffer(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 10);
    assert_int_equal(kiln_buf_append_c(&b, "12345"), 0);
    assert_int_equal(kiln_buf_append_c(&b, "678901"), KILN_ETOOBIG);
    assert_buf(&b, "12345");
    assert_int_equal(kiln_buf_append_u64(&b, 123456), KILN_ETOOBIG);
    assert_buf(&b, "12345");
    assert_int_equal(kiln_buf_printf(&b, "%s", "abcdefgh"), KILN_ETOOBIG);
    assert_buf(&b, "12345");
    assert_int_equal(kiln_buf_append_json_str(&b, "\"\"\"", 3), KILN_ETOOBIG);
    assert_buf(&b, "12345");
    /* A huge n cannot wrap the size check. */
    assert_int_equal(kiln_buf_append(&b, "x", SIZE_MAX), KILN_ETOOBIG);
    assert_buf(&b, "12345");
    kiln_buf_free(&b);
}

/* Growth past the first allocation keeps the content. */
static void test_append_grows(void **state)
{
    kiln_buf b;
    char chunk[100];
    kiln_buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        assert_int_equal(kiln_buf_append(&b, chunk, sizeof chunk), 0);
    }
    assert_int_equal(b.len, 100000);
    for (size_t i = 0; i < b.len; i++)
        if (b.p[i] != 'a' + (int)(i / 100) % 26)
            fail_msg("byte %zu is '%c'", i, b.p[i]);
    kiln_buf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    /* Empty again, and usable with the same maximum. */
    assert_int_equal(kiln_buf_append_c(&b, "again"), 0);
    assert_buf(&b, "again");
    kiln_buf_free(&b);
}

static void test_reset_keeps_capacity(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 100);
    kiln_buf_append_c(&b, "hello");
    size_t cap = b.cap;
    kiln_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap);
    kiln_buf_append_c(&b, "x");
    assert_buf(&b, "x");
    kiln_buf_free(&b);
}

static void test_printf(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 1024);
    assert_int_equal(kiln_buf_printf(&b, "%s=%d", "a", 1), 0);
    assert_int_equal(kiln_buf_printf(&b, ";%05.1f;%x", 2.5, 255u), 0);
    assert_int_equal(kiln_buf_printf(&b, "%s", ""), 0);
    assert_buf(&b, "a=1;002.5;ff");
    kiln_buf_free(&b);
}

/* "appending past the maximum fails": output that exactly fills the buffer
 * is not past it, and kiln_buf_append accepts the same bytes. */
static void test_printf_fills_to_max(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 5);
    assert_int_equal(kiln_buf_append_c(&b, "hello"), 0);
    kiln_buf_reset(&b);
    int rc = kiln_buf_printf(&b, "%s", "hello");
    char got[8] = "";
    if (b.p)
        memcpy(got, b.p, b.len < 7 ? b.len : 7);
    kiln_buf_free(&b);
    if (rc != 0)
        fail_msg("printf of 5 bytes into a buffer of max 5: %s, want 0", kiln_err_name(rc));
    assert_string_equal(got, "hello");
}

static void test_consume(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 100);
    kiln_buf_append_c(&b, "hello world");
    kiln_buf_consume(&b, 0);
    assert_buf(&b, "hello world");
    kiln_buf_consume(&b, 6);
    assert_buf(&b, "world");
    kiln_buf_append_c(&b, "!");
    assert_buf(&b, "world!");
    kiln_buf_consume(&b, 6);
    assert_int_equal(b.len, 0);
    kiln_buf_append_c(&b, "abc");
    kiln_buf_consume(&b, 1000);
    assert_int_equal(b.len, 0);
    kiln_buf_free(&b);
}

static const struct u64_case {
    uint64_t v;
    const char *s;
} u64_cases[] = {
    { 0, "0" },
    { 7, "7" },
    { 10, "10" },
    { 200, "200" },
    { 4294967296ull, "4294967296" },
    { UINT64_MAX, "18446744073709551615" },
};

static void test_append_u64(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 100);
    for (size_t i = 0; i < ARRAY_LEN(u64_cases); i++) {
        kiln_buf_reset(&b);
        assert_int_equal(kiln_buf_append_u64(&b, u64_cases[i].v), 0);
        assert_buf(&b, u64_cases[i].s);
    }
    kiln_buf_free(&b);
}

#define S(lit) { (lit), sizeof(lit) - 1 }
#define FFFD "\\ufffd"

static const struct json_case {
    kiln_str in;
    const char *out;
} json_cases[] = {
    { S(""), "" },
    { S("plain text / ok"), "plain text / ok" },
    { S("\""), "\\\"" },
    { S("\\"), "\\\\" },
    { S("\n"), "\\n" },
    { S("\r"), "\\r" },
    { S("\t"), "\\t" },
    { S("\0"), "\\u0000" },
    { S("\x01"), "\\u0001" },
    { S("\x1f"), "\\u001f" },
    { S("\x7f"), "\\u007f" },
    { S("a\"b\\c\nd"), "a\\\"b\\\\c\\nd" },
    /* valid multi-byte sequences are kept as they are */
    { S("caf\xc3\xa9"), "caf\xc3\xa9" },
    { S("\xe2\x82\xac"), "\xe2\x82\xac" },             /* U+20AC */
    { S("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80" },     /* U+1F600 */
    { S("\xef\xbf\xbf"), "\xef\xbf\xbf" },             /* U+FFFF */
    { S("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf" },     /* U+10FFFF, the last */
    { S("\xc2\x80"), "\xc2\x80" },                     /* U+0080, the first 2-byte */
    /* invalid UTF-8: each bad byte becomes U+FFFD */
    { S("\xff"), FFFD },
    { S("\x80"), FFFD },                               /* lone continuation */
    { S("\xc3"), FFFD },                               /* truncated */
    { S("\xe2\x82"), FFFD FFFD },
    { S("a\xe2\x82z"), "a" FFFD FFFD "z" },
    { S("\xc3("), FFFD "(" },
    { S("a\"b\xff" "c"), "a\\\"b" FFFD "c" },
    /* overlong encodings */
    { S("\xc0\xaf"), FFFD FFFD },
    { S("\xc1\xbf"), FFFD FFFD },
    { S("\xe0\x80\xaf"), FFFD FFFD FFFD },
    { S("\xe0\x9f\xbf"), FFFD FFFD FFFD },
    { S("\xf0\x80\x80\xaf"), FFFD FFFD FFFD FFFD },
    { S("\xf0\x8f\xbf\xbf"), FFFD FFFD FFFD FFFD },
    /* UTF-16 surrogates are not characters */
    { S("\xed\xa0\x80"), FFFD FFFD FFFD },
    { S("\xed\xbf\xbf"), FFFD FFFD FFFD },
    { S("\xed\x9f\xbf"), "\xed\x9f\xbf" },             /* U+D7FF, just below */
    /* past U+10FFFF */
    { S("\xf4\x90\x80\x80"), FFFD FFFD FFFD FFFD },
    { S("\xf5\x80\x80\x80"), FFFD FFFD FFFD FFFD },
    { S("\xf8\x88\x80\x80\x80"), FFFD FFFD FFFD FFFD FFFD },
};

static void test_json_str_table(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 1024);
    for (size_t i = 0; i < ARRAY_LEN(json_cases); i++) {
        const struct json_case *tc = &json_cases[i];
        char ctx[128];
        tu_escape(ctx, sizeof ctx, tc->in.p, tc->in.len);
        kiln_buf_reset(&b);
        kiln_buf_append_c(&b, "\"");
        assert_int_equal(kiln_buf_append_json_str(&b, tc->in.p, tc->in.len), 0);
        kiln_buf_append_c(&b, "\"");
        tu_assert_mem_eq(b.p + 1, b.len - 2, tc->out, strlen(tc->out), ctx, __FILE__,
                         __LINE__);
        /* Whatever went in, the result is a valid JSON string. */
        json_error_t err;
        json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!json_is_string(j))
            fail_msg("\"%s\": output is not a JSON string (%s)", ctx, err.text);
        json_decref(j);
    }
    kiln_buf_free(&b);
}

/* A string that does not fit leaves no half-escaped tail behind. */
static void test_json_str_too_big(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 12);
    kiln_buf_append_c(&b, "ab");
    /* 6 input bytes, 12 output bytes: does not fit after "ab". */
    assert_int_equal(kiln_buf_append_json_str(&b, "\"\"\"\"\"\"", 6), KILN_ETOOBIG);
    assert_buf(&b, "ab");
    /* Fails on the last escape, after part of it was written: rolled back. */
    assert_int_equal(kiln_buf_append_json_str(&b, "x\xffyz\xff", 5), KILN_ETOOBIG);
    assert_buf(&b, "ab");
    assert_int_equal(kiln_buf_append_json_str(&b, "\xc3\xa9\n", 3), 0);
    assert_buf(&b, "ab\xc3\xa9\\n");
    kiln_buf_free(&b);
}

/* ---- kiln_arena -------------------------------------------------------- */

static void test_arena_alignment(void **state)
{
    kiln_arena *a = kiln_arena_new(1024);
    static const size_t sizes[] = { 1, 3, 16, 17, 0, 100, 7, 33, 500, 1, 2000, 5 };
    size_t want_used = 0;
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        unsigned char *p = kiln_arena_alloc(a, sizes[i]);
        assert_non_null(p);
        if ((uintptr_t)p % 16 != 0)
            fail_msg("allocation %zu (%zu bytes) at %p is not 16-byte aligned", i, sizes[i],
                     (void *)p);
        memset(p, 0xab, sizes[i]);
        want_used += (sizes[i] + 15) / 16 * 16;
    }
    assert_int_equal(kiln_arena_used(a), want_used);
    kiln_arena_free(a);
}

/* Allocations never overlap, within a chunk or across chunks. */
static void test_arena_no_overlap(void **state)
{
    kiln_arena *a = kiln_arena_new(256);
    unsigned char *p[64];
    for (int i = 0; i < 64; i++) {
        p[i] = kiln_arena_alloc(a, 40);
        memset(p[i], i, 40);
    }
    for (int i = 0; i < 64; i++)
        for (int k = 0; k < 40; k++)
            if (p[i][k] != i)
                fail_msg("allocation %d byte %d overwritten with %d", i, k, p[i][k]);
    kiln_arena_free(a);
}

static void test_arena_large_allocation(void **state)
{
    kiln_arena *a = kiln_arena_new(256);
    char *small1 = kiln_arena_alloc(a, 10);
    size_t n = 100000; /* far bigger than a chunk */
    unsigned char *big = kiln_arena_alloc(a, n);
    assert_true((uintptr_t)big % 16 == 0);
    memset(big, 0x5a, n); /* ASan: the whole block is ours */
    char *small2 = kiln_arena_alloc(a, 10);
    memcpy(small1, "first", 6);
    memcpy(small2, "second", 7);
    assert_int_equal(big[0], 0x5a);
    assert_int_equal(big[n - 1], 0x5a);
    assert_string_equal(small1, "first");
    assert_string_equal(small2, "second");
    assert_true(kiln_arena_used(a) >= n + 32);
    kiln_arena_free(a);
}

/* reset releases everything but the first chunk, which is reused. */
static void test_arena_reset(void **state)
{
    kiln_arena *a = kiln_arena_new(512);
    void *first = kiln_arena_alloc(a, 16);
    for (int i = 0; i < 100; i++)
        memset(kiln_arena_alloc(a, 100), 1, 100);
    kiln_arena_alloc(a, 50000);
    assert_true(kiln_arena_used(a) > 10000);

    for (int round = 0; round < 3; round++) {
        kiln_arena_reset(a);
        assert_int_equal(kiln_arena_used(a), 0);
        void *again = kiln_arena_alloc(a, 16);
        assert_ptr_equal(again, first);
        for (int i = 0; i < 50; i++)
            memset(kiln_arena_alloc(a, 200), 2, 200);
        char *s = kiln_arena_sprintf(a, "round %d", round);
        assert_non_null(s);
        assert_true(strncmp(s, "round ", 6) == 0);
    }
    kiln_arena_free(a);
}

static void test_arena_alloc_z(void **state)
{
    kiln_arena *a = kiln_arena_new(256);
    unsigned char *p = kiln_arena_alloc(a, 64);
    memset(p, 0xff, 64);
    kiln_arena_reset(a);
    unsigned char *z = kiln_arena_alloc_z(a, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    kiln_arena_free(a);
}

static void test_arena_strndup(void **state)
{
    kiln_arena *a = kiln_arena_new(0); /* 0: the default size */
    const char src[] = { 'h', 'e', 'l', 'l', 'o', ' ', 'w' }; /* not NUL-terminated */
    char *s = kiln_arena_strndup(a, src, 5);
    assert_string_equal(s, "hello");
    char *e = kiln_arena_strndup(a, src, 0);
    assert_string_equal(e, "");
    char *n = kiln_arena_strndup(a, "a\0b", 3);
    assert_int_equal(n[0], 'a');
    assert_int_equal(n[1], '\0');
    assert_int_equal(n[2], 'b');
    assert_int_equal(n[3], '\0');
    kiln_arena_free(a);
}

static void test_arena_sprintf(void **state)
{
    kiln_arena *a = kiln_arena_new(128);
    assert_string_equal(kiln_arena_sprintf(a, "%s-%d-%c", "id", 42, 'x'), "id-42-x");
    assert_string_equal(kiln_arena_sprintf(a, "%s", ""), "");
    /* Longer than the chunk. */
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *s = kiln_arena_sprintf(a, "<%s>", big);
    assert_int_equal(strlen(s), sizeof big + 1);
    assert_int_equal(s[0], '<');
    assert_int_equal(s[sizeof big], '>');
    kiln_arena_free(a);
    kiln_arena_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_within_max),
        cmocka_unit_test(test_append_past_max_leaves_buffer),
        cmocka_unit_test(test_append_grows),
        cmocka_unit_test(test_reset_keeps_capacity),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_printf_fills_to_max),
        cmocka_unit_test(test_consume),
        cmocka_unit_test(test_append_u64),
        cmocka_unit_test(test_json_str_table),
        cmocka_unit_test(test_json_str_too_big),
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_no_overlap),
        cmocka_unit_test(test_arena_large_allocation),
        cmocka_unit_test(test_arena_reset),
        cmocka_unit_test(test_arena_alloc_z),
        cmocka_unit_test(test_arena_strndup),
        cmocka_unit_test(test_arena_sprintf),
    };
    return cmocka_run_group_tests_name("core/buf+arena", tests, NULL, NULL);
}
