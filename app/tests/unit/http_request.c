/*
 * Unit tests for app/src/http/request.c: percent-decoding, query lookup,
 * header and parameter lookup, the inbound request-id rule and method names.
 */
#include <stdlib.h>

#include "test_util.h"

#include "core/arena.h"
#include "http/request.h"

static int setup(void **state)
{
    *state = kiln_arena_new(1024);
    return 0;
}

static int teardown(void **state)
{
    kiln_arena_free(*state);
    return 0;
}

/* Inputs are kiln_str with explicit lengths so that a case can hold NUL. */
#define S(lit) { (lit), sizeof(lit) - 1 }

static const struct decode_case {
    kiln_str in;
    bool plus_is_space;
    bool ok;
    kiln_str out;
} decode_cases[] = {
    { S(""), false, true, S("") },
    { S("abc"), false, true, S("abc") },
    { S("a+b"), true, true, S("a b") },
    { S("a+b"), false, true, S("a+b") },
    { S("%20"), false, true, S(" ") },
    { S("%2b%2B"), true, true, S("++") },        /* an encoded '+' is never a space */
    { S("%41%62%7a%7A"), false, true, S("Abzz") }, /* upper and lower hex */
    { S("caf%c3%A9"), false, true, S("caf\xc3\xa9") },
    { S("%ff"), false, true, S("\xff") },
    { S("x%41"), false, true, S("xA") },          /* escape ending the input */
    { S("100%25"), false, true, S("100%") },
    { S("%25%32%30"), false, true, S("%20") },    /* decoded once, not twice */
    { S("a=b&c"), false, true, S("a=b&c") },
    /* an encoded NUL would cut C strings short: rejected */
    { S("%00"), false, false, S("") },
    { S("a%00b"), true, false, S("") },
    /* truncated and malformed escapes */
    { S("%"), false, false, S("") },
    { S("%4"), false, false, S("") },
    { S("a%"), false, false, S("") },
    { S("ab%4"), false, false, S("") },
    { S("%4g"), false, false, S("") },
    { S("%g4"), false, false, S("") },
    { S("%%41"), false, false, S("") },
    { S("% 41"), false, false, S("") },
    { S("%-1"), false, false, S("") },
};

static void test_url_decode(void **state)
{
    kiln_arena *a = *state;
    for (size_t i = 0; i < ARRAY_LEN(decode_cases); i++) {
        const struct decode_case *tc = &decode_cases[i];
        char ctx[128];
        kiln_str out = { NULL, 12345 };
        tu_escape(ctx, sizeof ctx, tc->in.p, tc->in.len);
        bool ok = kiln_url_decode(a, tc->in, tc->plus_is_space, &out);
        if (ok != tc->ok)
            fail_msg("\"%s\" (plus_is_space %d): returned %d, want %d", ctx, tc->plus_is_space,
                     ok, tc->ok);
        if (!ok)
            continue;
        assert_mem_eq(out.p, out.len, tc->out.p, tc->out.len);
        /* The copy is NUL-terminated for callers that need a C string. */
        assert_int_equal(out.p[out.len], '\0');
    }
}

static struct kiln_req query_req(kiln_arena *a, const char *query)
{
    struct kiln_req req;
    memset(&req, 0, sizeof req);
    req.arena = a;
    req.query = kiln_str_c(query);
    return req;
}

static const struct query_case {
    const char *query;
    const char *name;
    const char *value; /* NULL: kiln_req_query returns false */
} query_cases[] = {
    { "a=1&b=2&a=3", "a", "1" },  /* first occurrence wins */
    { "a=1&b=2&a=3", "b", "2" },
    { "a=1&b=2&a=3", "c", NULL },
    { "ab=1&a=2", "a", "2" },     /* whole keys only */
    { "a=1", "ab", NULL },
    { "e=&f", "e", "" },          /* empty value */
    { "e=&f", "f", "" },          /* no '=' at all */
    { "&&a=1&", "a", "1" },
    { "a=1=2", "a", "1=2" },
    { "detail%65d=true", "detailed", "true" }, /* keys compared decoded */
    { "a+b=1", "a b", "1" },
    { "q=hello+world%21", "q", "hello world!" },
    { "q=%2B1", "q", "+1" },
    { "x=%zz", "x", NULL },       /* badly encoded value */
    { "x=%00", "x", NULL },
    { "%zz=1&k=2", "k", "2" },    /* a badly encoded key is skipped */
    { "", "a", NULL },
    { "=1", "", "1" },
};

static void test_query(void **state)
{
    kiln_arena *a = *state;
    for (size_t i = 0; i < ARRAY_LEN(query_cases); i++) {
        const struct query_case *tc = &query_cases[i];
        struct kiln_req req = query_req(a, tc->query);
        kiln_str out = KILN_STR_NULL;
        bool found = kiln_req_query(&req, tc->name, &out);
        if (found != (tc->value != NULL))
            fail_msg("query \"%s\" name \"%s\": returned %d, want %d", tc->query, tc->name,
                     found, tc->value != NULL);
        if (tc->value) {
            char ctx[128];
            snprintf(ctx, sizeof ctx, "query \"%s\" name \"%s\"", tc->query, tc->name);
            assert_kstr_eq_in(ctx, out, tc->value);
        }
    }
}

/* A request that never had a query (zeroed struct): absent, no crash. */
static void test_query_unset(void **state)
{
    struct kiln_req req;
    kiln_str out = KILN_STR_NULL;
    memset(&req, 0, sizeof req);
    req.arena = *state;
    assert_false(kiln_req_query(&req, "a", &out));
}

static void test_header_lookup(void **state)
{
    struct kiln_header headers[] = {
        { KILN_STR("host"), KILN_STR("example.com") },
        { KILN_STR("accept"), KILN_STR("a") },
        { KILN_STR("accept"), KILN_STR("b") },
        { KILN_STR("x-empty"), KILN_STR("") },
    };
    struct kiln_req req;
    memset(&req, 0, sizeof req);
    req.arena = *state;
    req.headers = headers;
    req.nheaders = ARRAY_LEN(headers);

    assert_kstr_eq(kiln_req_header(&req, "host"), "example.com");
    assert_kstr_eq(kiln_req_header(&req, "accept"), "a");
    assert_kstr_eq(kiln_req_header(&req, "x-empty"), "");
    assert_non_null(kiln_req_header(&req, "x-empty").p); /* present, empty */
    assert_null(kiln_req_header(&req, "missing").p);
    assert_null(kiln_req_header(&req, "acc").p);
}

static const struct id_case {
    kiln_str id;
    bool valid;
} id_cases[] = {
    { S("a"), true },
    { S("abc-DEF_123.xyz"), true },
    { S("F1a2b3c4d5e6f7g8h9i0"), true },
    { S("..."), true },
    { S(""), false },
    { S("a b"), false },
    { S("a/b"), false },
    { S("a:b"), false },
    { S("a+b"), false },
    { S("a=b"), false },
    { S("a\"b"), false },
    { S("a\\b"), false },
    { S("a\nb"), false },
    { S("a\0b"), false },
    { S("caf\xc3\xa9"), false },
    { S("\x7f"), false },
};

static void test_request_id_valid(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(id_cases); i++) {
        char ctx[128];
        bool got = kiln_request_id_valid(id_cases[i].id);
        if (got != id_cases[i].valid)
            fail_msg("\"%s\": %d, want %d",
                     tu_escape(ctx, sizeof ctx, id_cases[i].id.p, id_cases[i].id.len), got,
                     id_cases[i].valid);
    }
    assert_false(kiln_request_id_valid(KILN_STR_NULL));
}

static void test_request_id_length(void **state)
{
    char id[KILN_REQUEST_ID_MAX + 1];
    memset(id, 'x', sizeof id);
    assert_true(kiln_request_id_valid((kiln_str){ id, KILN_REQUEST_ID_MAX }));
    assert_false(kiln_request_id_valid((kiln_str){ id, KILN_REQUEST_ID_MAX + 1 }));
}

static const struct method_case {
    const char *name;
    enum kiln_method m;
} method_cases[] = {
    { "GET", KILN_GET },         { "HEAD", KILN_HEAD },
    { "POST", KILN_POST },       { "PUT", KILN_PUT },
    { "PATCH", KILN_PATCH },     { "DELETE", KILN_DELETE },
    { "OPTIONS", KILN_OPTIONS },
    /* RFC 9110 9.1: method names are case-sensitive */
    { "get", KILN_METHOD_OTHER }, { "Get", KILN_METHOD_OTHER },
    { "GE", KILN_METHOD_OTHER },  { "GETS", KILN_METHOD_OTHER },
    { "", KILN_METHOD_OTHER },    { "CONNECT", KILN_METHOD_OTHER },
    { "TRACE", KILN_METHOD_OTHER }, { "PROPFIND", KILN_METHOD_OTHER },
};

static void test_method_parse(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(method_cases); i++) {
        enum kiln_method got = kiln_method_parse(kiln_str_c(method_cases[i].name));
        if (got != method_cases[i].m)
            fail_msg("\"%s\": %d, want %d", method_cases[i].name, got, method_cases[i].m);
        if (method_cases[i].m != KILN_METHOD_OTHER)
            assert_string_equal(kiln_method_name(got), method_cases[i].name);
    }
    /* Only len bytes are the name (request data is not NUL-terminated). */
    assert_int_equal(kiln_method_parse((kiln_str){ "GETX", 3 }), KILN_GET);
    assert_string_equal(kiln_method_name(KILN_METHOD_OTHER), "OTHER");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_url_decode),
        T(test_query),
        T(test_header_lookup),
        T(test_request_id_valid),
        T(test_request_id_length),
        T(test_method_parse),
        /* Last: under UBSan a failure here aborts the program. */
        T(test_query_unset),
#undef T
    };
    return cmocka_run_group_tests_name("http/request", tests, NULL, NULL);
}
