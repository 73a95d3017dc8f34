/*
 * Unit tests for app/src/http/response.c: the exact bytes kiln_res_serialize
 * writes (every response's framing and common headers), and the error
 * envelope, read back with jansson as a client would.
 */
#include <stdlib.h>

#include <jansson.h>

#include "test_util.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "http/request.h"
#include "http/response.h"

#define DATE "Wed, 25 Nov 2026 17:06:14 GMT"
#define JSON_CT "content-type: application/json; charset=utf-8\r\n"
#define COMMON(id) "x-request-id: " id "\r\nx-content-type-options: nosniff\r\ndate: " DATE

struct fx {
    kiln_arena *arena;
    struct kiln_req req;
    struct kiln_res res;
    kiln_buf out;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->arena = kiln_arena_new(4096);
    f->req.arena = f->arena;
    f->req.method = KILN_GET;
    f->req.method_name = KILN_STR("GET");
    f->req.http_major = 1;
    f->req.http_minor = 1;
    strcpy(f->req.request_id, "req-123");
    f->req.request_id_len = 7;
    kiln_buf_init(&f->out, 1 << 20);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kiln_buf_free(&f->out);
    kiln_arena_free(f->arena);
    free(f);
    return 0;
}

static void serialize(struct fx *f, bool keep_alive)
{
    int rc = kiln_res_serialize(&f->req, &f->res, keep_alive, DATE, &f->out);
    assert_int_equal(rc, 0);
}

#define assert_out(f, want) assert_mem_eq((f)->out.p, (f)->out.len, (want), strlen(want))

static void test_200_json(void **state)
{
    struct fx *f = *state;
    kiln_res_json_text(&f->res, 200, KILN_STR("{\"ok\":true}"));
    serialize(f, true);
    assert_out(f, "HTTP/1.1 200 OK\r\n"
                  JSON_CT
                  "content-length: 11\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n"
                  "{\"ok\":true}");
}

/* RFC 9110 9.3.2: HEAD gets GET's headers, content-length included, and no body. */
static void test_head_omits_body(void **state)
{
    struct fx *f = *state;
    f->req.method = KILN_HEAD;
    f->req.method_name = KILN_STR("HEAD");
    kiln_res_json_text(&f->res, 200, KILN_STR("{\"ok\":true}"));
    serialize(f, true);
    assert_out(f, "HTTP/1.1 200 OK\r\n"
                  JSON_CT
                  "content-length: 11\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n");
}

/* RFC 9110 8.6: no content-length in a 204; and never a body. */
static void test_204_no_length_no_body(void **state)
{
    struct fx *f = *state;
    f->res.status = 204;
    f->res.body = KILN_STR("ignored");
    serialize(f, true);
    assert_out(f, "HTTP/1.1 204 No Content\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n");
}

static void test_304_no_length_no_body(void **state)
{
    struct fx *f = *state;
    f->res.status = 304;
    serialize(f, true);
    assert_out(f, "HTTP/1.1 304 Not Modified\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n");
}

static void test_empty_body_has_zero_length(void **state)
{
    struct fx *f = *state;
    f->res.status = 200;
    serialize(f, true);
    assert_out(f, "HTTP/1.1 200 OK\r\n"
                  "content-length: 0\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n");
}

static const struct conn_case {
    unsigned char minor;
    bool keep_alive;
    const char *connection; /* the line after date, "" for none */
} conn_cases[] = {
    { 1, true, "" },
    { 1, false, "\r\nconnection: close" },
    { 0, true, "\r\nconnection: keep-alive" },
    { 0, false, "\r\nconnection: close" },
};

static void test_connection_header(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(conn_cases); i++) {
        const struct conn_case *tc = &conn_cases[i];
        char want[512];
        kiln_buf_reset(&f->out);
        f->req.http_minor = tc->minor;
        kiln_res_json_text(&f->res, 404, KILN_STR("{}"));
        serialize(f, tc->keep_alive);
        snprintf(want, sizeof want,
                 "HTTP/1.1 404 Not Found\r\n" JSON_CT "content-length: 2\r\n" COMMON("req-123")
                 "%s\r\n\r\n{}", tc->connection);
        assert_out(f, want);
    }
}

static void test_extra_headers(void **state)
{
    struct fx *f = *state;
    kiln_res_json_text(&f->res, 405, KILN_STR("{}"));
    kiln_res_header(&f->res, "allow", "GET, HEAD, POST");
    kiln_res_header(&f->res, "retry-after", "1");
    serialize(f, false);
    assert_out(f, "HTTP/1.1 405 Method Not Allowed\r\n"
                  JSON_CT
                  "content-length: 2\r\n"
                  COMMON("req-123") "\r\n"
                  "connection: close\r\n"
                  "allow: GET, HEAD, POST\r\n"
                  "retry-after: 1\r\n"
                  "\r\n{}");
}

/* Past KILN_RES_MAX_HEADERS a header is dropped, never written past the array. */
static void test_header_overflow_ignored(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < KILN_RES_MAX_HEADERS + 3; i++)
        kiln_res_header(&f->res, "x-h", "v");
    assert_int_equal(f->res.nheaders, KILN_RES_MAX_HEADERS);
}

static void test_status_unset_is_500(void **state)
{
    struct fx *f = *state;
    serialize(f, true);
    assert_out(f, "HTTP/1.1 500 Internal Server Error\r\n"
                  "content-length: 0\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n");
}

/* Serialization appends (pipelined responses share one buffer). */
static void test_appends_to_buffer(void **state)
{
    struct fx *f = *state;
    kiln_buf_append_c(&f->out, "previous");
    kiln_res_json_text(&f->res, 201, KILN_STR("{}"));
    serialize(f, true);
    assert_out(f, "previous"
                  "HTTP/1.1 201 Created\r\n"
                  JSON_CT
                  "content-length: 2\r\n"
                  COMMON("req-123") "\r\n"
                  "\r\n{}");
}

/* A response that does not fit leaves the buffer as it was. */
static void test_too_big_leaves_buffer_unchanged(void **state)
{
    struct fx *f = *state;
    kiln_buf small;
    kiln_buf_init(&small, 100);
    kiln_buf_append_c(&small, "kept");
    kiln_res_json_text(&f->res, 200, KILN_STR("{\"ok\":true}"));
    assert_int_not_equal(kiln_res_serialize(&f->req, &f->res, true, DATE, &small), 0);
    assert_mem_eq(small.p, small.len, "kept", 4);
    kiln_buf_free(&small);
}

static const struct reason_case {
    int status;
    const char *reason;
} reason_cases[] = {
    { 200, "OK" },
    { 201, "Created" },
    { 204, "No Content" },
    { 400, "Bad Request" },
    { 404, "Not Found" },
    { 405, "Method Not Allowed" },
    { 413, "Content Too Large" },
    { 417, "Expectation Failed" },
    { 431, "Request Header Fields Too Large" },
    { 503, "Service Unavailable" },
    { 505, "HTTP Version Not Supported" },
    { 299, "Unknown" },
    { 0, "Unknown" },
};

static void test_status_reason(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(reason_cases); i++)
        assert_string_equal(kiln_status_reason(reason_cases[i].status), reason_cases[i].reason);
}

/* Parse res->body as JSON; fails the test if it is not a JSON object. */
static json_t *body_json(const struct kiln_res *res)
{
    json_error_t err;
    json_t *j = json_loadb(res->body.p, res->body.len, 0, &err);
    if (!j || !json_is_object(j)) {
        char esc[1024];
        fail_msg("body is not a JSON object (%s): \"%s\"", err.text,
                 tu_escape(esc, sizeof esc, res->body.p, res->body.len));
    }
    return j;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        fail_msg("\"%s\" is missing or not a string", key);
    return json_string_value(v);
}

static void test_error_envelope(void **state)
{
    struct fx *f = *state;
    kiln_res_error(&f->req, &f->res, 404, "not_found", "Not found", NULL);
    assert_int_equal(f->res.status, 404);
    assert_kstr_eq(f->res.content_type, "application/json; charset=utf-8");

    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "error"), "Not found");
    assert_string_equal(jstr(j, "code"), "not_found");
    assert_string_equal(jstr(j, "message"), "Not found");
    assert_string_equal(jstr(j, "request_id"), "req-123");
    assert_null(json_object_get(j, "details"));
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
}

static void test_error_envelope_details(void **state)
{
    struct fx *f = *state;
    json_t *details = json_pack("{s:[s,s],s:i}", "title", "is required", "too long", "max", 200);
    kiln_res_error(&f->req, &f->res, 422, "validation_failed", "Validation failed", details);
    assert_int_equal(f->res.status, 422);

    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "code"), "validation_failed");
    json_t *d = json_object_get(j, "details");
    assert_true(json_is_object(d));
    json_t *title = json_object_get(d, "title");
    assert_int_equal(json_array_size(title), 2);
    assert_string_equal(json_string_value(json_array_get(title, 0)), "is required");
    assert_int_equal(json_integer_value(json_object_get(d, "max")), 200);
    json_decref(j);
}

/* Whatever the message holds, the envelope stays valid JSON. */
static void test_error_envelope_escapes(void **state)
{
    struct fx *f = *state;
    const char *msg = "bad \"x\"\\\n\x01 caf\xc3\xa9";
    kiln_res_error(&f->req, &f->res, 400, "invalid_request", msg, NULL);
    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "error"), msg);
    assert_string_equal(jstr(j, "message"), msg);
    json_decref(j);
}

/*
 * details may echo client data (a validation error quoting the input), so it
 * can be large; the body must stay one valid JSON object whatever its size.
 */
static void test_error_envelope_large_details(void **state)
{
    struct fx *f = *state;
    size_t n = 70 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    json_t *details = json_pack("{s:s}", "title", big);
    kiln_res_error(&f->req, &f->res, 422, "validation_failed", "Validation failed", details);
    free(big);
    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "code"), "validation_failed");
    json_decref(j);
}

static void test_error_envelope_empty_request_id(void **state)
{
    struct fx *f = *state;
    f->req.request_id[0] = '\0';
    f->req.request_id_len = 0;
    kiln_res_error(&f->req, &f->res, 500, "internal_error", "Internal server error", NULL);
    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "request_id"), "");
    json_decref(j);
}

static void test_res_json(void **state)
{
    struct fx *f = *state;
    kiln_res_json(&f->req, &f->res, 201, json_pack("{s:s,s:i}", "title", "x", "id", 7));
    assert_int_equal(f->res.status, 201);
    assert_kstr_eq(f->res.content_type, "application/json; charset=utf-8");
    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "title"), "x");
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 7);
    json_decref(j);
}

/* No object (jansson ran out of memory building it): a 500 envelope. */
static void test_res_json_null_is_500(void **state)
{
    struct fx *f = *state;
    kiln_res_json(&f->req, &f->res, 200, NULL);
    assert_int_equal(f->res.status, 500);
    json_t *j = body_json(&f->res);
    assert_string_equal(jstr(j, "code"), "internal_error");
    json_decref(j);
}

/* THE map from errors to answers: each kiln_err's status, code, and
 * retry-after on every 503. */
static const struct fail_case {
    int err;
    int status;
    const char *code;
    bool retry_after;
} fail_cases[] = {
    { KILN_EUNAVAILABLE, 503, "service_unavailable", true },
    { KILN_ETIMEDOUT, 503, "service_unavailable", true },
    { KILN_ECLOSED, 503, "service_unavailable", true },
    { KILN_EIO, 503, "service_unavailable", true },
    { KILN_ETLS, 503, "service_unavailable", true },
    { KILN_EPROTO, 503, "service_unavailable", true },
    { KILN_EAUTH, 503, "service_unavailable", true },
    { KILN_EBUSY, 503, "service_unavailable", true },
    { KILN_ENOTFOUND, 404, "not_found", false },
    { KILN_ECONFLICT, 409, "conflict", false },
    { KILN_ETOOBIG, 413, "payload_too_large", false },
    { KILN_EINVAL, 422, "validation_failed", false },
    { KILN_EDB, 500, "internal_error", false },
    { -999, 500, "internal_error", false },
};

static void test_fail_map(void **state)
{
    struct fx *f = *state;
    kiln_log_set_level(KILN_LOG_ERROR + 1); /* the lines are core_log.c's to test */
    for (size_t i = 0; i < ARRAY_LEN(fail_cases); i++) {
        const struct fail_case *tc = &fail_cases[i];
        memset(&f->res, 0, sizeof f->res);
        kiln_res_fail(&f->req, &f->res, tc->err, "Database", "test", "detail text");
        assert_int_equal(f->res.status, tc->status);
        assert_int_equal(kiln_err_status(tc->err), tc->status);
        json_t *j = json_loadb(f->res.body.p, f->res.body.len, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "code")), tc->code);
        /* The driver's words never reach the client. */
        assert_null(strstr(json_string_value(json_object_get(j, "message")), "detail"));
        if (tc->status == 503)
            assert_string_equal(json_string_value(json_object_get(j, "message")),
                                "Database unavailable");
        json_decref(j);
        bool has_retry = false;
        for (size_t h = 0; h < f->res.nheaders; h++)
            if (kiln_str_eq_c(f->res.headers[h].name, "retry-after"))
                has_retry = kiln_str_eq_c(f->res.headers[h].value, "1");
        if (has_retry != tc->retry_after)
            fail_msg("%s: retry-after %d, want %d", kiln_err_name(tc->err), has_retry,
                     tc->retry_after);
    }
    kiln_log_set_level(KILN_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_200_json),
        T(test_head_omits_body),
        T(test_204_no_length_no_body),
        T(test_304_no_length_no_body),
        T(test_empty_body_has_zero_length),
        T(test_connection_header),
        T(test_extra_headers),
        T(test_header_overflow_ignored),
        T(test_status_unset_is_500),
        T(test_appends_to_buffer),
        T(test_too_big_leaves_buffer_unchanged),
        T(test_status_reason),
        T(test_error_envelope),
        T(test_error_envelope_details),
        T(test_error_envelope_escapes),
        T(test_error_envelope_large_details),
        T(test_error_envelope_empty_request_id),
        T(test_res_json),
        T(test_res_json_null_is_500),
        T(test_fail_map),
#undef T
    };
    return cmocka_run_group_tests_name("http/response", tests, NULL, NULL);
}
