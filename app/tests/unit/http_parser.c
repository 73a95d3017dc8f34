/*
 * Unit tests for app/src/http/parser.c: the llhttp glue. Each test drives
 * the parser exactly as the server does (one arena per request, a zeroed
 * struct kiln_req, kiln_parser_begin, kiln_parser_feed) and checks what a
 * handler would see, or the exact status and API code of a rejection.
 */
#include <stdlib.h>

#include "test_util.h"

#include "core/arena.h"
#include "http/parser.h"
#include "http/request.h"

#define DEFAULT_MAX_BODY (1024 * 1024)

struct fx {
    kiln_arena *arena;
    kiln_arena *arena2; /* for the second request of a pipeline */
    struct kiln_parser parser;
    struct kiln_req req;
    struct kiln_req req2;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->arena = kiln_arena_new(4096);
    f->arena2 = kiln_arena_new(4096);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kiln_arena_free(f->arena);
    kiln_arena_free(f->arena2);
    free(f);
    return 0;
}

/* A fresh connection and request, as the server sets them up. */
static void start(struct fx *f, size_t max_body)
{
    struct kiln_parser_limits limits = { max_body, KILN_MAX_HEADER_BYTES,
                                         KILN_MAX_HEADER_FIELDS };
    kiln_arena_reset(f->arena);
    kiln_arena_reset(f->arena2);
    memset(&f->req, 0, sizeof f->req);
    f->req.arena = f->arena;
    kiln_parser_init(&f->parser, &limits);
    kiln_parser_begin(&f->parser, &f->req);
}

static const char *result_name(enum kiln_parse_result r)
{
    switch (r) {
    case KILN_PARSE_MORE: return "MORE";
    case KILN_PARSE_DONE: return "DONE";
    case KILN_PARSE_ERROR: return "ERROR";
    }
    return "?";
}

/* Feed and check the result; on mismatch print the parser's error too. */
static size_t feed_expect(struct fx *f, const char *data, size_t len,
                          enum kiln_parse_result want, const char *what)
{
    size_t consumed = (size_t)-1;
    enum kiln_parse_result got = kiln_parser_feed(&f->parser, data, len, &consumed);
    if (got != want)
        fail_msg("%s: feed returned %s, want %s (error %d %s: %s)", what, result_name(got),
                 result_name(want), f->parser.error_status,
                 f->parser.error_code ? f->parser.error_code : "-",
                 f->parser.error_message ? f->parser.error_message : "-");
    return consumed;
}

#define FEED(f, s, want) feed_expect((f), (s), strlen(s), (want), #s)

/* ---- successful requests ---------------------------------------------- */

static void test_simple_get(void **state)
{
    struct fx *f = *state;
    const char *raw = "GET /notes/42?x=1&y=%20 HTTP/1.1\r\n"
                      "Host: example.com\r\n"
                      "X-Custom-Header: \t spaced value \t \r\n"
                      "User-Agent:curl/8.0\r\n"
                      "\r\n";
    start(f, DEFAULT_MAX_BODY);
    size_t consumed = FEED(f, raw, KILN_PARSE_DONE);
    struct kiln_req *r = &f->req;

    assert_int_equal(consumed, strlen(raw));
    assert_int_equal(f->parser.state, KILN_PARSER_DONE);
    assert_int_equal(r->method, KILN_GET);
    assert_kstr_eq(r->method_name, "GET");
    assert_kstr_eq(r->target, "/notes/42?x=1&y=%20");
    assert_kstr_eq(r->path, "/notes/42");
    assert_kstr_eq(r->query, "x=1&y=%20");
    assert_int_equal(r->http_major, 1);
    assert_int_equal(r->http_minor, 1);
    assert_true(r->keep_alive);
    assert_false(r->expect_continue);
    assert_false(r->has_body);
    assert_non_null(r->body.p);
    assert_int_equal(r->body.len, 0);

    assert_int_equal(r->nheaders, 3);
    assert_kstr_eq(r->headers[0].name, "host");
    assert_kstr_eq(r->headers[0].value, "example.com");
    assert_kstr_eq(r->headers[1].name, "x-custom-header");
    assert_kstr_eq(r->headers[1].value, "spaced value");
    assert_kstr_eq(r->headers[2].name, "user-agent");
    assert_kstr_eq(r->headers[2].value, "curl/8.0");
    assert_kstr_eq(kiln_req_header(r, "x-custom-header"), "spaced value");
    assert_null(kiln_req_header(r, "X-Custom-Header").p); /* names are lower case */

    assert_int_equal(r->request_id_len, 0);
    assert_null(r->trace_id.p);
}

static void test_no_query(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "DELETE /a/b/ HTTP/1.1\r\nHost: h\r\n\r\n", KILN_PARSE_DONE);
    assert_int_equal(f->req.method, KILN_DELETE);
    assert_kstr_eq(f->req.path, "/a/b/");
    assert_kstr_eq(f->req.query, "");
}

static void test_unknown_method_is_other(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n", KILN_PARSE_DONE);
    assert_int_equal(f->req.method, KILN_METHOD_OTHER);
    assert_kstr_eq(f->req.method_name, "PROPFIND");
}

static const struct target_case {
    const char *target;
    const char *path;
    const char *query;
} target_cases[] = {
    { "/", "/", "" },
    { "/?", "/", "" },
    { "/a?b=c?d", "/a", "b=c?d" },
    { "http://example.com:8080/a/b?c=d", "/a/b", "c=d" },
    { "http://example.com/", "/", "" },
    { "http://example.com", "/", "" },
    { "http://example.com?x=1", "/", "x=1" },
    { "HTTPS://example.com/s", "/s", "" },
    { "http://user@example.com/p/q", "/p/q", "" },
};

static void test_request_targets(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(target_cases); i++) {
        const struct target_case *tc = &target_cases[i];
        char raw[512];
        snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n", tc->target);
        start(f, DEFAULT_MAX_BODY);
        feed_expect(f, raw, strlen(raw), KILN_PARSE_DONE, tc->target);
        assert_kstr_eq_in(tc->target, f->req.target, tc->target);
        assert_kstr_eq_in(tc->target, f->req.path, tc->path);
        assert_kstr_eq_in(tc->target, f->req.query, tc->query);
    }
}

static void test_asterisk_form_options(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", KILN_PARSE_DONE);
    assert_int_equal(f->req.method, KILN_OPTIONS);
    assert_kstr_eq(f->req.path, "*");
    assert_kstr_eq(f->req.query, "");
}

static void test_content_length_body(void **state)
{
    struct fx *f = *state;
    const char *head = "POST /notes HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
                       "Content-Type: application/json\r\n\r\n";
    start(f, DEFAULT_MAX_BODY);
    /* Headers, then the body in two reads, as a slow client sends them. */
    assert_int_equal(FEED(f, head, KILN_PARSE_MORE), strlen(head));
    assert_int_equal(f->parser.state, KILN_PARSER_BODY);
    assert_true(f->req.has_body);
    assert_int_equal(FEED(f, "hello", KILN_PARSE_MORE), 5);
    assert_int_equal(FEED(f, " world", KILN_PARSE_DONE), 6);
    assert_int_equal(f->req.method, KILN_POST);
    assert_kstr_eq(f->req.body, "hello world");
}

static void test_content_length_zero(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", KILN_PARSE_DONE);
    assert_false(f->req.has_body);
    assert_kstr_eq(f->req.body, "");
}

static void test_chunked_body(void **state)
{
    struct fx *f = *state;
    const char *raw = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n"
                      "1\r\n \r\n"
                      "5;ext=1\r\nworld\r\n"
                      "A\r\n0123456789\r\n"
                      "0\r\n\r\n";
    start(f, DEFAULT_MAX_BODY);
    assert_int_equal(FEED(f, raw, KILN_PARSE_DONE), strlen(raw));
    assert_true(f->req.has_body);
    assert_kstr_eq(f->req.body, "hello world0123456789");
}

static void test_chunked_body_exactly_max(void **state)
{
    struct fx *f = *state;
    start(f, 10);
    FEED(f, "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            "4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n", KILN_PARSE_DONE);
    assert_kstr_eq(f->req.body, "abcdefghij");
}

static void assert_same_req(const struct kiln_req *a, const struct kiln_req *b)
{
    assert_int_equal(a->method, b->method);
    assert_kstr_eq(a->method_name, b->method_name.p);
    assert_mem_eq(a->target.p, a->target.len, b->target.p, b->target.len);
    assert_mem_eq(a->path.p, a->path.len, b->path.p, b->path.len);
    assert_mem_eq(a->query.p, a->query.len, b->query.p, b->query.len);
    assert_int_equal(a->http_major, b->http_major);
    assert_int_equal(a->http_minor, b->http_minor);
    assert_int_equal(a->nheaders, b->nheaders);
    for (size_t i = 0; i < a->nheaders; i++) {
        assert_mem_eq(a->headers[i].name.p, a->headers[i].name.len, b->headers[i].name.p,
                      b->headers[i].name.len);
        assert_mem_eq(a->headers[i].value.p, a->headers[i].value.len, b->headers[i].value.p,
                      b->headers[i].value.len);
    }
    assert_mem_eq(a->body.p, a->body.len, b->body.p, b->body.len);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->has_body, b->has_body);
    assert_int_equal(a->expect_continue, b->expect_continue);
    assert_int_equal(a->request_id_len, b->request_id_len);
    assert_string_equal(a->request_id, b->request_id);
    assert_mem_eq(a->trace_id.p, a->trace_id.len, b->trace_id.p, b->trace_id.len);
}

static const char *const split_cases[] = {
    "GET /a/b?c=d&e=f HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: abc.123\r\n"
    "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    "Accept:  */*  \r\nConnection: close\r\n\r\n",
    "POST /api/v1/notes HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\n"
    "Content-Type: application/json\r\n\r\n{\"title\":\"x\"}",
    "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
};

/* Reads split anywhere: one byte at a time must give the same request. */
static void test_byte_by_byte_equals_one_chunk(void **state)
{
    struct fx *f = *state;
    for (size_t c = 0; c < ARRAY_LEN(split_cases); c++) {
        const char *raw = split_cases[c];
        size_t len = strlen(raw);

        start(f, DEFAULT_MAX_BODY);
        assert_int_equal(feed_expect(f, raw, len, KILN_PARSE_DONE, raw), len);

        struct kiln_parser_limits limits = { DEFAULT_MAX_BODY, KILN_MAX_HEADER_BYTES,
                                             KILN_MAX_HEADER_FIELDS };
        struct kiln_parser p2;
        memset(&f->req2, 0, sizeof f->req2);
        f->req2.arena = f->arena2;
        kiln_parser_init(&p2, &limits);
        kiln_parser_begin(&p2, &f->req2);
        for (size_t i = 0; i < len; i++) {
            size_t consumed = 0;
            enum kiln_parse_result r = kiln_parser_feed(&p2, raw + i, 1, &consumed);
            enum kiln_parse_result want = i + 1 == len ? KILN_PARSE_DONE : KILN_PARSE_MORE;
            if (r != want)
                fail_msg("case %zu byte %zu: %s, want %s (error %d %s)", c, i,
                         result_name(r), result_name(want), p2.error_status,
                         p2.error_message ? p2.error_message : "-");
            assert_int_equal(consumed, 1);
        }
        assert_same_req(&f->req, &f->req2);
    }
}

static void test_pipelined_requests(void **state)
{
    struct fx *f = *state;
    const char *first = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
    const char *second = "GET /b?q=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *third = "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    char buf[512];
    size_t n1 = strlen(first), n2 = strlen(second), n3 = strlen(third);
    snprintf(buf, sizeof buf, "%s%s%s", first, second, third);

    start(f, DEFAULT_MAX_BODY);
    size_t c = feed_expect(f, buf, n1 + n2 + n3, KILN_PARSE_DONE, "first");
    assert_int_equal(c, n1);
    assert_kstr_eq(f->req.path, "/a");
    assert_kstr_eq(f->req.body, "xyz");

    memset(&f->req2, 0, sizeof f->req2);
    f->req2.arena = f->arena2;
    kiln_parser_begin(&f->parser, &f->req2);
    c = feed_expect(f, buf + n1, n2 + n3, KILN_PARSE_DONE, "second");
    assert_int_equal(c, n2);
    assert_int_equal(f->req2.method, KILN_GET);
    assert_kstr_eq(f->req2.path, "/b");
    assert_kstr_eq(f->req2.query, "q=1");
    assert_kstr_eq(f->req2.body, "");
    assert_true(f->req2.keep_alive);
    /* The first request's data is untouched by the second. */
    assert_kstr_eq(f->req.body, "xyz");

    struct kiln_req req3;
    memset(&req3, 0, sizeof req3);
    req3.arena = f->arena;
    kiln_parser_begin(&f->parser, &req3);
    c = feed_expect(f, buf + n1 + n2, n3, KILN_PARSE_DONE, "third");
    assert_int_equal(c, n3);
    assert_kstr_eq(req3.path, "/c");
    assert_false(req3.keep_alive);
}

/* The second request arrives in a later read than the first. */
static void test_pipelined_second_request_split(void **state)
{
    struct fx *f = *state;
    const char *buf = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HT";
    size_t n1 = strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    start(f, DEFAULT_MAX_BODY);
    assert_int_equal(FEED(f, buf, KILN_PARSE_DONE), n1);

    memset(&f->req2, 0, sizeof f->req2);
    f->req2.arena = f->arena2;
    kiln_parser_begin(&f->parser, &f->req2);
    assert_int_equal(f->parser.state, KILN_PARSER_IDLE);
    FEED(f, buf + n1, KILN_PARSE_MORE);
    assert_int_equal(f->parser.state, KILN_PARSER_HEADERS);
    FEED(f, "TP/1.1\r\nHost: h\r\n\r\n", KILN_PARSE_DONE);
    assert_kstr_eq(f->req2.path, "/b");
}

static void test_expect_100_continue(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n",
         KILN_PARSE_MORE);
    assert_true(f->req.expect_continue);
    FEED(f, "hello", KILN_PARSE_DONE);
    assert_kstr_eq(f->req.body, "hello");
}

/* RFC 9110 10.1.1: no 100 for a request without a body, or from HTTP/1.0. */
static void test_expect_100_continue_without_body(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "GET /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", KILN_PARSE_DONE);
    assert_false(f->req.expect_continue);

    start(f, DEFAULT_MAX_BODY);
    FEED(f, "POST /x HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
         KILN_PARSE_DONE);
    assert_false(f->req.expect_continue);
}

static const struct keepalive_case {
    const char *raw;
    unsigned char minor;
    bool keep_alive;
} keepalive_cases[] = {
    { "GET / HTTP/1.0\r\n\r\n", 0, false },
    { "GET / HTTP/1.0\r\nHost: h\r\n\r\n", 0, false },
    { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, true },
    { "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, true },
    { "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, true },
    { "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 1, true },
    { "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 1, false },
    { "GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n", 1, false },
    /* Upgrade is not spoken: answer, then close. */
    { "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 1,
      false },
};

static void test_keep_alive(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(keepalive_cases); i++) {
        const struct keepalive_case *tc = &keepalive_cases[i];
        start(f, DEFAULT_MAX_BODY);
        feed_expect(f, tc->raw, strlen(tc->raw), KILN_PARSE_DONE, tc->raw);
        if (f->req.http_minor != tc->minor || f->req.keep_alive != tc->keep_alive)
            fail_msg("%s: minor %u keep_alive %d, want minor %u keep_alive %d", tc->raw,
                     f->req.http_minor, f->req.keep_alive, tc->minor, tc->keep_alive);
    }
}

static const struct request_id_case {
    const char *header;  /* value sent in X-Request-Id */
    bool kept;
} request_id_cases[] = {
    { "abc-DEF_1.2", true },
    { "x", true },
    { "F1a2b3c4d5e6f7g8h9i0", true },
    { "has space", false },
    { "a/b", false },
    { "a\"b", false },
    { "a;b", false },
    { "caf\xc3\xa9", false },
};

static void test_inbound_request_id(void **state)
{
    struct fx *f = *state;
    char raw[512];
    for (size_t i = 0; i < ARRAY_LEN(request_id_cases); i++) {
        const struct request_id_case *tc = &request_id_cases[i];
        snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\nX-Request-ID: %s\r\n\r\n",
                 tc->header);
        start(f, DEFAULT_MAX_BODY);
        feed_expect(f, raw, strlen(raw), KILN_PARSE_DONE, tc->header);
        if (tc->kept) {
            assert_string_equal(f->req.request_id, tc->header);
            assert_int_equal(f->req.request_id_len, strlen(tc->header));
        } else if (f->req.request_id_len != 0 || f->req.request_id[0] != '\0') {
            fail_msg("x-request-id \"%s\" must not be copied (got \"%s\")", tc->header,
                     f->req.request_id);
        }
    }
}

static void test_inbound_request_id_length(void **state)
{
    struct fx *f = *state;
    char id[KILN_REQUEST_ID_MAX + 2];
    char raw[512];

    /* 128 characters: the longest kept. */
    memset(id, 'a', KILN_REQUEST_ID_MAX);
    id[KILN_REQUEST_ID_MAX] = '\0';
    snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\nx-request-id: %s\r\n\r\n", id);
    start(f, DEFAULT_MAX_BODY);
    FEED(f, raw, KILN_PARSE_DONE);
    assert_int_equal(f->req.request_id_len, KILN_REQUEST_ID_MAX);
    assert_string_equal(f->req.request_id, id);

    /* 129: too long, not copied (and no overflow of request_id[]). */
    memset(id, 'b', KILN_REQUEST_ID_MAX + 1);
    id[KILN_REQUEST_ID_MAX + 1] = '\0';
    snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\nx-request-id: %s\r\n\r\n", id);
    start(f, DEFAULT_MAX_BODY);
    FEED(f, raw, KILN_PARSE_DONE);
    assert_int_equal(f->req.request_id_len, 0);
    assert_string_equal(f->req.request_id, "");
}

static const struct trace_case {
    const char *headers;
    const char *trace_id; /* NULL: none */
} trace_cases[] = {
    { "X-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\n",
      "Root=1-67891233-abcdef012345678912345678" },
    { "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    { "traceparent: 00-aa-bb-01\r\nX-Amzn-Trace-Id: Root=1-2-3\r\n", "Root=1-2-3" },
    { "X-Other: 1\r\n", NULL },
};

static void test_trace_id(void **state)
{
    struct fx *f = *state;
    char raw[512];
    for (size_t i = 0; i < ARRAY_LEN(trace_cases); i++) {
        const struct trace_case *tc = &trace_cases[i];
        snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n", tc->headers);
        start(f, DEFAULT_MAX_BODY);
        feed_expect(f, raw, strlen(raw), KILN_PARSE_DONE, tc->headers);
        if (tc->trace_id)
            assert_kstr_eq_in(tc->headers, f->req.trace_id, tc->trace_id);
        else
            assert_null(f->req.trace_id.p);
    }
}

static void test_http10_without_host(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "GET /x HTTP/1.0\r\n\r\n", KILN_PARSE_DONE);
    assert_int_equal(f->req.http_minor, 0);
    assert_kstr_eq(f->req.path, "/x");
}

/* ---- rejections ------------------------------------------------------- */

static const struct error_case {
    const char *name;
    const char *raw;
    size_t max_body;        /* 0: DEFAULT_MAX_BODY */
    int status;
    const char *code;
} error_cases[] = {
    { "missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 0, 400,
      "invalid_request" },
    { "two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400, "invalid_request" },
    { "two identical Host", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 0, 400,
      "invalid_request" },
    { "Content-Length and Transfer-Encoding",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      0, 400, "invalid_request" },
    { "Transfer-Encoding and Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      0, 400, "invalid_request" },
    { "two different Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 0,
      400, "invalid_request" },
    { "Content-Length list",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 0, 400,
      "invalid_request" },
    { "negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 0,
      400, "invalid_request" },
    { "invalid chunk size",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 0,
      400, "invalid_request" },
    { "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 0, 400,
      "invalid_request" },
    { "obs-fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 0, 400,
      "invalid_request" },
    { "Transfer-Encoding gzip",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 0, 400,
      "invalid_request" },
    { "Transfer-Encoding chunked, gzip",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", 0, 400,
      "invalid_request" },
    { "Transfer-Encoding on HTTP/1.0",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 400,
      "invalid_request" },
    { "HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, 505, "http_version_not_supported" },
    { "HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0, 400, "invalid_request" },
    { "CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0, 400,
      "invalid_request" },
    { "Expect other than 100-continue",
      "POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\n", 0,
      417, "expectation_failed" },
    { "Content-Length over max_body (headers only)",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 10, 413,
      "payload_too_large" },
    { "huge Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999\r\n\r\n", 0, 413,
      "payload_too_large" },
    { "chunked body over max_body",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n", 10, 413, "payload_too_large" },
    { "one chunk over max_body",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "b\r\nabcdefghijk\r\n0\r\n\r\n", 10, 413, "payload_too_large" },
    { "relative target", "GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid_request" },
    { "bad method", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid_request" },
    { "space in header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 0, 400,
      "invalid_request" },
    { "bare LF line ending", "GET / HTTP/1.1\nHost: a\n\n", 0, 400, "invalid_request" },
};

static void test_errors(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(error_cases); i++) {
        const struct error_case *tc = &error_cases[i];
        size_t consumed = 0;
        start(f, tc->max_body ? tc->max_body : DEFAULT_MAX_BODY);
        enum kiln_parse_result r =
            kiln_parser_feed(&f->parser, tc->raw, strlen(tc->raw), &consumed);
        if (r != KILN_PARSE_ERROR || f->parser.error_status != tc->status ||
            !f->parser.error_code || strcmp(f->parser.error_code, tc->code) != 0)
            fail_msg("%s: %s %d %s (%s), want ERROR %d %s", tc->name, result_name(r),
                     f->parser.error_status,
                     f->parser.error_code ? f->parser.error_code : "-",
                     f->parser.error_message ? f->parser.error_message : "-", tc->status,
                     tc->code);
        assert_int_equal(f->parser.state, KILN_PARSER_ERROR);
        assert_non_null(f->parser.error_message);
        /* After an error the stream is out of sync: every later feed fails. */
        r = kiln_parser_feed(&f->parser, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, &consumed);
        assert_int_equal(r, KILN_PARSE_ERROR);
        assert_int_equal(consumed, 0);
    }
}

/* A header section of n fields (Host first), each "X-Fnnn: v". */
static char *fields_request(size_t n)
{
    size_t cap = 64 + n * 32;
    char *raw = malloc(cap);
    size_t len = (size_t)snprintf(raw, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (size_t i = 1; i < n; i++)
        len += (size_t)snprintf(raw + len, cap - len, "X-F%zu: v\r\n", i);
    snprintf(raw + len, cap - len, "\r\n");
    return raw;
}

static void test_field_count_limit(void **state)
{
    struct fx *f = *state;
    char *ok = fields_request(KILN_MAX_HEADER_FIELDS);
    char *over = fields_request(KILN_MAX_HEADER_FIELDS + 1);

    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, ok, strlen(ok), KILN_PARSE_DONE, "100 fields");
    assert_int_equal(f->req.nheaders, KILN_MAX_HEADER_FIELDS);
    assert_kstr_eq(kiln_req_header(&f->req, "x-f99"), "v");

    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, over, strlen(over), KILN_PARSE_ERROR, "101 fields");
    assert_int_equal(f->parser.error_status, 431);
    assert_string_equal(f->parser.error_code, "request_header_fields_too_large");

    free(ok);
    free(over);
}

/* One header whose value is `size` bytes of 'a'. */
static char *big_header_request(const char *line_start, size_t size)
{
    size_t cap = size + 256;
    char *raw = malloc(cap);
    size_t len = (size_t)snprintf(raw, cap, "%s", line_start);
    memset(raw + len, 'a', size);
    len += size;
    snprintf(raw + len, cap - len, "\r\n\r\n");
    return raw;
}

static void test_header_bytes_limit(void **state)
{
    struct fx *f = *state;
    /* Well under the limit in total: accepted. */
    char *ok = big_header_request("GET / HTTP/1.1\r\nHost: h\r\nX-Big: ", 15 * 1024);
    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, ok, strlen(ok), KILN_PARSE_DONE, "15 KiB header");
    assert_int_equal(kiln_req_header(&f->req, "x-big").len, 15 * 1024);

    /* One value past 16 KiB. */
    char *over = big_header_request("GET / HTTP/1.1\r\nHost: h\r\nX-Big: ", 16 * 1024 + 1);
    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, over, strlen(over), KILN_PARSE_ERROR, "16 KiB + 1 header");
    assert_int_equal(f->parser.error_status, 431);
    assert_string_equal(f->parser.error_code, "request_header_fields_too_large");

    /* The same, fed in small reads: the limit holds across reads. */
    start(f, DEFAULT_MAX_BODY);
    size_t len = strlen(over), off = 0, consumed;
    enum kiln_parse_result r = KILN_PARSE_MORE;
    while (off < len && r == KILN_PARSE_MORE) {
        size_t n = len - off < 100 ? len - off : 100;
        r = kiln_parser_feed(&f->parser, over + off, n, &consumed);
        off += n;
    }
    assert_int_equal(r, KILN_PARSE_ERROR);
    assert_int_equal(f->parser.error_status, 431);

    free(ok);
    free(over);
}

/* Many fields of 1 KiB each: no single one is big, the section is. */
static void test_header_section_limit_many_fields(void **state)
{
    struct fx *f = *state;
    size_t cap = 40 * 1024;
    char *raw = malloc(cap);
    char value[1001];
    memset(value, 'v', 1000);
    value[1000] = '\0';
    size_t len = (size_t)snprintf(raw, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 20; i++)
        len += (size_t)snprintf(raw + len, cap - len, "X-%d: %s\r\n", i, value);
    snprintf(raw + len, cap - len, "\r\n");

    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, raw, strlen(raw), KILN_PARSE_ERROR, "20 x 1 KiB fields");
    assert_int_equal(f->parser.error_status, 431);
    free(raw);
}

/* The request line counts toward the same limit. */
static void test_long_target_limit(void **state)
{
    struct fx *f = *state;
    size_t n = KILN_MAX_HEADER_BYTES + 10;
    char *raw = malloc(n + 64);
    memcpy(raw, "GET /", 5);
    memset(raw + 5, 'p', n);
    strcpy(raw + 5 + n, " HTTP/1.1\r\nHost: h\r\n\r\n");
    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, raw, strlen(raw), KILN_PARSE_ERROR, "17 KiB target");
    assert_int_equal(f->parser.error_status, 431);
    free(raw);
}

/*
 * RFC 9110 6.5.1: "A recipient MUST NOT merge a received trailer field into
 * the header section unless its corresponding header field definition
 * explicitly permits [it]". Handlers look headers up with kiln_req_header,
 * so a trailer merged into req->headers is indistinguishable from a header
 * a proxy in front has (or has not) vetted.
 */
static void test_trailer_not_merged_into_headers(void **state)
{
    struct fx *f = *state;
    start(f, DEFAULT_MAX_BODY);
    FEED(f, "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\nX-Api-Key: from-the-trailer\r\n\r\n", KILN_PARSE_DONE);
    assert_kstr_eq(f->req.body, "abc");
    assert_kstr_eq(kiln_req_header(&f->req, "x-api-key"), NULL);
}

/*
 * RFC 9112 6.1: a server that receives a transfer coding it does not
 * understand SHOULD answer 501. Kiln decodes only chunked, so with
 * "gzip, chunked" the handler would get still-gzipped bytes as req->body,
 * indistinguishable from a plain one. Plain "gzip" is already refused (400,
 * see test_errors); a coding before chunked must be refused the same way.
 */
static void test_transfer_coding_before_chunked_rejected(void **state)
{
    struct fx *f = *state;
    static const char *const codings[] = { "gzip, chunked", "deflate,chunked",
                                           "identity, chunked" };
    for (size_t i = 0; i < ARRAY_LEN(codings); i++) {
        char raw[256];
        size_t consumed;
        snprintf(raw, sizeof raw,
                 "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: %s\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n", codings[i]);
        start(f, DEFAULT_MAX_BODY);
        enum kiln_parse_result r = kiln_parser_feed(&f->parser, raw, strlen(raw), &consumed);
        if (r != KILN_PARSE_ERROR ||
            (f->parser.error_status != 400 && f->parser.error_status != 501))
            fail_msg("Transfer-Encoding: %s: %s %d, body \"%.*s\"; want ERROR 400 or 501",
                     codings[i], result_name(r), f->parser.error_status,
                     (int)f->req.body.len, f->req.body.p ? f->req.body.p : "");
    }
}

/*
 * RFC 9112 7.1: chunk data ends with CRLF. llhttp's loose build skips the two
 * bytes unchecked; the glue checks them, also when a read splits them.
 * Each input is fed split at every position to cover both halves.
 */
static void test_chunk_data_must_end_with_crlf(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *body;
        enum kiln_parse_result want;
    } cases[] = {
        { "5\r\nhello\r\n0\r\n\r\n", KILN_PARSE_DONE },
        { "5\r\nhelloXX0\r\n\r\n", KILN_PARSE_ERROR },
        { "5\r\nhello\rX0\r\n\r\n", KILN_PARSE_ERROR },
        { "5\r\nhelloX\n0\r\n\r\n", KILN_PARSE_ERROR },
        { "2\r\nab\r\n3\r\ncdeZZ0\r\n\r\n", KILN_PARSE_ERROR },
    };
    static const char head[] = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char raw[256];
        size_t n = (size_t)snprintf(raw, sizeof raw, "%s%s", head, cases[i].body);
        for (size_t cut = sizeof head - 1; cut <= n; cut++) {
            size_t consumed;
            start(f, DEFAULT_MAX_BODY);
            enum kiln_parse_result r = kiln_parser_feed(&f->parser, raw, cut, &consumed);
            if (r == KILN_PARSE_MORE && cut < n)
                r = kiln_parser_feed(&f->parser, raw + cut, n - cut, &consumed);
            if (r != cases[i].want)
                fail_msg("case %zu split at %zu: %s, want %s", i, cut, result_name(r),
                         result_name(cases[i].want));
            if (r == KILN_PARSE_ERROR)
                assert_int_equal(f->parser.error_status, 400);
        }
    }
}

/* ---- HTTP/1.1, strictly (issue 14, point 5) ----------------------------- */

#define CHUNKED_HEAD "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

/*
 * Requests that must be refused with 400 invalid_request wherever the reads
 * split them. Each names what llhttp's loose build did with it before the
 * glue's framing scan (RFC 9112 2.2: a CR not followed by LF is invalid
 * anywhere outside content; 3: request-line = method SP target SP version).
 */
static const struct strict_case {
    const char *name;
    const char *raw;
} strict_cases[] = {
    /* Bare CR. "\r\n\r" plus any byte ended the header section, and what
     * followed was read as a second request: smuggling. */
    { "bare CR ends the header section (smuggling)",
      "GET / HTTP/1.1\r\nHost: a\r\n\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "bare CR then X ends the header section", "GET / HTTP/1.1\r\nHost: a\r\n\rX" },
    { "bare CR twice ends the header section", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n" },
    { "bare CR before the request line", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "bare CR in an empty line before the request line",
      "\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "bare CR ends the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n" },
    { "bare CR in the target", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "bare CR in a header value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n" },
    { "bare CR ends a header line", "GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n" },
    { "bare CR ends a chunk size", CHUNKED_HEAD "5\r\rhello\r\n0\r\n\r\n" },
    { "bare CR then X ends a chunk size", CHUNKED_HEAD "5\rX\nhello\r\n0\r\n\r\n" },
    { "bare CR after a chunk size", CHUNKED_HEAD "5\rhello\r\n0\r\n\r\n" },
    { "bare CR in a chunk extension value", CHUNKED_HEAD "5;a=b\rc\r\nhello\r\n0\r\n\r\n" },
    { "bare CR after a chunk extension name", CHUNKED_HEAD "5;a\r=b\r\nhello\r\n0\r\n\r\n" },
    { "bare CR ends a chunk extension", CHUNKED_HEAD "5;a=b\r\rhello\r\n0\r\n\r\n" },
    { "bare CR in a quoted chunk extension", CHUNKED_HEAD "5;a=\"b\rc\"\r\nhello\r\n0\r\n\r\n" },
    { "bare CR ends the last chunk", CHUNKED_HEAD "0\r\r\n" },
    { "bare CR ends the trailer section (smuggling)",
      CHUNKED_HEAD "0\r\nX-T: y\r\n\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "bare CR ends an empty trailer section", CHUNKED_HEAD "0\r\n\rX" },
    { "bare CR twice ends the trailer section", CHUNKED_HEAD "5\r\nhello\r\n0\r\n\r\r\n" },
    { "bare CR in a trailer value", CHUNKED_HEAD "0\r\nX-T: y\rZ\r\n\r\n" },
    { "bare CR after chunk data", CHUNKED_HEAD "5\r\nhello\rX0\r\n\r\n" },
    /* LF without CR (RFC 9112 2.2 allows a recipient to accept it; kiln does
     * not: see parser.c). */
    { "LF ends the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n" },
    { "LF ends the header section", "GET / HTTP/1.1\r\nHost: a\r\n\n" },
    { "LF ends a header line", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n" },
    { "LF before the request line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "LF ends a chunk size", CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n" },
    { "LF ends the trailer section", CHUNKED_HEAD "0\r\n\n" },
    { "LF ends a trailer line", CHUNKED_HEAD "0\r\nX-T: y\n\r\n" },
    /* The request line is exactly method SP request-target SP HTTP-version. */
    { "two spaces after the method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "two spaces before the version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "space before the method", " GET / HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "space after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n" },
    { "tab after the method", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "tab before the version", "GET /\tHTTP/1.1\r\nHost: a\r\n\r\n" },
    { "tab in the target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "form feed in the target", "GET /a\x0c" "b HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "byte 0xff in the target", "GET /a\xff" "b HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "byte 0x85 (NEL) in the target", "GET /a\x85" "b HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "byte 0xa0 (NBSP) in the target", "GET /a\xa0" "b HTTP/1.1\r\nHost: a\r\n\r\n" },
    { "no version (HTTP/0.9)", "GET /\r\n\r\n" },
    { "protocol other than HTTP", "GET / RTSP/1.0\r\nHost: a\r\n\r\n" },
    { "ICE protocol", "SOURCE / ICE/1.0\r\nHost: a\r\n\r\n" },
    /* Trailers follow the header section's rules. */
    { "obs-fold in a trailer", CHUNKED_HEAD "0\r\nX-T: y\r\n z\r\n\r\n" },
    { "space before a trailer name", CHUNKED_HEAD "0\r\n X-T: y\r\n\r\n" },
    { "empty trailer name", CHUNKED_HEAD "0\r\n: y\r\n\r\n" },
};

/* The request must be refused with 400 invalid_request (no request accepted). */
static bool refused(enum kiln_parse_result r, struct fx *f, const char *name, const char *how,
                    size_t at)
{
    if (r == KILN_PARSE_ERROR && f->parser.error_status == 400 && f->parser.error_code &&
        strcmp(f->parser.error_code, "invalid_request") == 0)
        return true;
    print_error("%s (%s %zu): %s %d %s (%s), want ERROR 400 invalid_request\n", name, how, at,
                result_name(r), f->parser.error_status,
                f->parser.error_code ? f->parser.error_code : "-",
                f->parser.error_message ? f->parser.error_message : "-");
    return false;
}

static void expect_refused(enum kiln_parse_result r, struct fx *f, const char *name,
                           const char *how, size_t at)
{
    if (!refused(r, f, name, how, at))
        fail();
}

/* Feed raw in two reads split at cut (0: one read). */
static enum kiln_parse_result feed_split(struct fx *f, const char *raw, size_t len, size_t cut)
{
    size_t consumed;
    enum kiln_parse_result r;
    start(f, DEFAULT_MAX_BODY);
    if (cut == 0 || cut >= len)
        return kiln_parser_feed(&f->parser, raw, len, &consumed);
    r = kiln_parser_feed(&f->parser, raw, cut, &consumed);
    if (r != KILN_PARSE_MORE)
        return r;
    return kiln_parser_feed(&f->parser, raw + cut, len - cut, &consumed);
}

/* One byte per read: the last result. */
static enum kiln_parse_result feed_bytewise(struct fx *f, const char *raw, size_t len)
{
    size_t consumed;
    enum kiln_parse_result r = KILN_PARSE_MORE;
    start(f, DEFAULT_MAX_BODY);
    for (size_t i = 0; i < len && r == KILN_PARSE_MORE; i++)
        r = kiln_parser_feed(&f->parser, raw + i, 1, &consumed);
    return r;
}

/* Refused in one read, split in two at every byte, and byte by byte; prints
 * the first failure of the case and returns false if there is one. */
static bool refused_every_split(struct fx *f, const char *name, const char *raw, size_t len)
{
    for (size_t cut = 0; cut < len; cut++)
        if (!refused(feed_split(f, raw, len, cut), f, name, "split at", cut))
            return false;
    return refused(feed_bytewise(f, raw, len), f, name, "byte by byte", len);
}

static void test_strict_framing_refused(void **state)
{
    struct fx *f = *state;
    size_t failed = 0;
    for (size_t i = 0; i < ARRAY_LEN(strict_cases); i++)
        if (!refused_every_split(f, strict_cases[i].name, strict_cases[i].raw,
                                 strlen(strict_cases[i].raw)))
            failed++;
    if (failed)
        fail_msg("%zu of %zu cases accepted or answered otherwise", failed,
                 ARRAY_LEN(strict_cases));
}

/* What stays accepted, wherever the reads split it. */
static const struct strict_ok_case {
    const char *name;
    const char *raw;
    const char *body;
} strict_ok_cases[] = {
    /* RFC 9112 2.2: a server SHOULD ignore at least one empty line before
     * the request line. */
    { "CRLF before the request line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "" },
    { "two CRLF before the request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "" },
    { "chunk extension", CHUNKED_HEAD "5;name=value\r\nhello\r\n0\r\n\r\n", "hello" },
    { "two chunk extensions", CHUNKED_HEAD "5;a;b\r\nhello\r\n0;last\r\n\r\n", "hello" },
    { "quoted chunk extension", CHUNKED_HEAD "5;a=\"b c\"\r\nhello\r\n0\r\n\r\n", "hello" },
    { "trailer fields", CHUNKED_HEAD "5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n", "hello" },
    { "CR LF inside chunk data", CHUNKED_HEAD "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n" },
    { "bare CR inside chunk data", CHUNKED_HEAD "3\r\na\rb\r\n0\r\n\r\n", "a\rb" },
    { "bare CR inside a Content-Length body",
      "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n\r\rX", "\r\rX" },
    { "tab and obs-text in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\xe9\r\n\r\n",
      "" },
};

static void test_strict_framing_accepted(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(strict_ok_cases); i++) {
        const struct strict_ok_case *tc = &strict_ok_cases[i];
        size_t len = strlen(tc->raw);
        for (size_t cut = 0; cut <= len; cut++) {
            enum kiln_parse_result r =
                cut < len ? feed_split(f, tc->raw, len, cut) : feed_bytewise(f, tc->raw, len);
            if (r != KILN_PARSE_DONE)
                fail_msg("%s (split at %zu): %s, want DONE (error %d: %s)", tc->name, cut,
                         result_name(r), f->parser.error_status,
                         f->parser.error_message ? f->parser.error_message : "-");
            assert_kstr_eq_in(tc->name, f->req.body, tc->body);
        }
    }
}

/* The pipelined request after a refused one is never parsed. */
static void test_bare_cr_smuggled_request_not_parsed(void **state)
{
    struct fx *f = *state;
    const char *raw = "GET / HTTP/1.1\r\nHost: a\r\n\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    start(f, DEFAULT_MAX_BODY);
    FEED(f, raw, KILN_PARSE_ERROR);
    assert_int_equal(f->parser.error_status, 400);
    assert_int_equal(f->parser.state, KILN_PARSER_ERROR);
    assert_kstr_eq(f->req.target, "/");
}

/* A chunked request whose chunk-size lines are n copies of line. */
static char *chunks_request(const char *line, size_t n, size_t *len)
{
    size_t cap = sizeof CHUNKED_HEAD + n * (strlen(line) + 8) + 16;
    char *raw = malloc(cap);
    size_t o = (size_t)snprintf(raw, cap, "%s", CHUNKED_HEAD);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(raw + o, cap - o, "%s\r\nx\r\n", line);
    o += (size_t)snprintf(raw + o, cap - o, "0\r\n\r\n");
    *len = o;
    return raw;
}

/* "1;n=vvv…" of exactly len bytes (size digit and extension, no CRLF). */
static char *ext_line(size_t len)
{
    char *s = malloc(len + 1);
    memcpy(s, "1;n=", 4);
    memset(s + 4, 'v', len - 4);
    s[len] = '\0';
    return s;
}

/*
 * RFC 9112 7.1.1 leaves chunk extensions unbounded; llhttp reads them
 * without limit. Kiln bounds one chunk-size line (size and extensions) and
 * counts every extension byte of a request toward the header section's
 * limit, so a body cannot carry more metadata than a header section could.
 */
static void test_chunk_extension_limits(void **state)
{
    struct fx *f = *state;
    size_t len;
    char *line, *raw;

    /* One line at the limit: accepted. */
    line = ext_line(KILN_MAX_CHUNK_LINE_BYTES);
    raw = chunks_request(line, 1, &len);
    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, raw, len, KILN_PARSE_DONE, "chunk-size line at the limit");
    assert_kstr_eq(f->req.body, "x");
    free(raw);
    free(line);

    /* One byte over: refused, however the reads fall. */
    line = ext_line(KILN_MAX_CHUNK_LINE_BYTES + 1);
    raw = chunks_request(line, 1, &len);
    if (!refused_every_split(f, "chunk-size line over the limit", raw, len))
        fail();
    free(raw);
    free(line);

    /* Leading zeros count too: a size line is bounded whatever it holds. */
    line = malloc(KILN_MAX_CHUNK_LINE_BYTES + 2);
    memset(line, '0', KILN_MAX_CHUNK_LINE_BYTES);
    strcpy(line + KILN_MAX_CHUNK_LINE_BYTES, "1");
    raw = chunks_request(line, 1, &len);
    start(f, DEFAULT_MAX_BODY);
    expect_refused(kiln_parser_feed(&f->parser, raw, len, &(size_t){ 0 }), f,
                   "leading zeros over the limit", "length", len);
    free(raw);
    free(line);

    /* Each line within its limit, but together more than a header section. */
    size_t per_line = KILN_MAX_CHUNK_LINE_BYTES;
    size_t n = KILN_MAX_HEADER_BYTES / (per_line - 1) + 1;
    line = ext_line(per_line);
    raw = chunks_request(line, n, &len);
    start(f, DEFAULT_MAX_BODY);
    expect_refused(kiln_parser_feed(&f->parser, raw, len, &(size_t){ 0 }), f,
                   "extensions adding up past the header limit", "chunks", n);
    expect_refused(feed_bytewise(f, raw, len), f, "extensions adding up, byte by byte",
                   "chunks", n);
    free(raw);

    /* A few such lines are fine. */
    raw = chunks_request(line, 8, &len);
    start(f, DEFAULT_MAX_BODY);
    feed_expect(f, raw, len, KILN_PARSE_DONE, "8 long chunk-size lines");
    assert_kstr_eq(f->req.body, "xxxxxxxx");
    free(raw);
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_simple_get),
        T(test_no_query),
        T(test_unknown_method_is_other),
        T(test_request_targets),
        T(test_asterisk_form_options),
        T(test_content_length_body),
        T(test_content_length_zero),
        T(test_chunked_body),
        T(test_chunked_body_exactly_max),
        T(test_byte_by_byte_equals_one_chunk),
        T(test_pipelined_requests),
        T(test_pipelined_second_request_split),
        T(test_expect_100_continue),
        T(test_expect_100_continue_without_body),
        T(test_keep_alive),
        T(test_inbound_request_id),
        T(test_inbound_request_id_length),
        T(test_trace_id),
        T(test_http10_without_host),
        T(test_errors),
        T(test_field_count_limit),
        T(test_header_bytes_limit),
        T(test_header_section_limit_many_fields),
        T(test_long_target_limit),
        T(test_trailer_not_merged_into_headers),
        T(test_transfer_coding_before_chunked_rejected),
        T(test_chunk_data_must_end_with_crlf),
        T(test_strict_framing_refused),
        T(test_strict_framing_accepted),
        T(test_bare_cr_smuggled_request_not_parsed),
        T(test_chunk_extension_limits),
#undef T
    };
    return cmocka_run_group_tests_name("http/parser", tests, NULL, NULL);
}
