/*
 * Unit tests for app/src/http/router.c over a route table of their own, so
 * that they do not change when the real one (api/routes.c) grows. A case
 * names the route it expects by its index in that table.
 */
#include <stdlib.h>

#include "test_util.h"

#include "core/arena.h"
#include "http/request.h"
#include "http/router.h"

static void handler(struct kiln_req *req, struct kiln_res *res) {}

enum {
    R_ROOT,
    R_LIVEZ,
    R_NOTES_LIST,
    R_NOTES_CREATE,
    R_NOTE_GET,
    R_NOTE_DELETE,
    R_COMMENT,
    R_PUT_ONLY,
    R_DEEP,
    R_OPTIONS,
    R_KEY,
    R_KEY_DOWNLOAD,
    R_NONE = -1,
};

/* 32 segments: the most a path may have. */
#define DEEP_PATH \
    "/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s"

static const struct kiln_route routes[] = {
    [R_ROOT] = { KILN_GET, KILN_SCOPE_ROOT, "/", NULL, handler, 0, NULL },
    [R_LIVEZ] = { KILN_GET, KILN_SCOPE_ROOT, "/livez", NULL, handler, KILN_ROUTE_LOOP, NULL },
    [R_NOTES_LIST] = { KILN_GET, KILN_SCOPE_API, "/notes", NULL, handler, 0, NULL },
    [R_NOTES_CREATE] = { KILN_POST, KILN_SCOPE_API, "/notes", NULL, handler, 0, NULL },
    [R_NOTE_GET] = { KILN_GET, KILN_SCOPE_API, "/notes/:id", NULL, handler, 0, NULL },
    [R_NOTE_DELETE] = { KILN_DELETE, KILN_SCOPE_API, "/notes/:id", NULL, handler, 0, NULL },
    [R_COMMENT] = { KILN_GET, KILN_SCOPE_API, "/notes/:note_id/comments/:comment_id", NULL,
                    handler, 0, NULL },
    [R_PUT_ONLY] = { KILN_PUT, KILN_SCOPE_ROOT, "/put-only/", NULL, handler, 0, NULL },
    [R_DEEP] = { KILN_GET, KILN_SCOPE_ROOT, DEEP_PATH, NULL, handler, 0, NULL },
    [R_OPTIONS] = { KILN_OPTIONS, KILN_SCOPE_API, "/notes", NULL, handler, 0, NULL },
    [R_KEY] = { KILN_GET, KILN_SCOPE_API, "/files/*key", NULL, handler, 0, NULL },
    [R_KEY_DOWNLOAD] = { KILN_GET, KILN_SCOPE_API, "/files/*key/download", NULL, handler, 0, NULL },
};

struct fx {
    kiln_arena *arena;
    struct kiln_router *router;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->arena = kiln_arena_new(4096);
    f->router = kiln_router_new(routes, ARRAY_LEN(routes), true);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kiln_router_free(f->router);
    kiln_arena_free(f->arena);
    free(f);
    return 0;
}

static const char *match_name(enum kiln_match m)
{
    switch (m) {
    case KILN_MATCH_OK: return "OK";
    case KILN_MATCH_NOT_FOUND: return "NOT_FOUND";
    case KILN_MATCH_METHOD: return "METHOD";
    case KILN_MATCH_BAD_PATH: return "BAD_PATH";
    case KILN_MATCH_BAD_QUERY: return "BAD_QUERY";
    }
    return "?";
}

static const struct match_case {
    const char *method;
    const char *path;
    enum kiln_match match;
    int route;              /* index into routes[] on OK */
    unsigned allow;         /* on METHOD */
    const char *params[4];  /* name, value, name, value (NULL-terminated) */
} match_cases[] = {
    /* exact matches; empty segments and a trailing slash do not count */
    { "GET", "/", KILN_MATCH_OK, R_ROOT, 0, { NULL } },
    { "GET", "//", KILN_MATCH_OK, R_ROOT, 0, { NULL } },
    { "GET", "/livez", KILN_MATCH_OK, R_LIVEZ, 0, { NULL } },
    { "GET", "/livez/", KILN_MATCH_OK, R_LIVEZ, 0, { NULL } },
    { "GET", "//livez//", KILN_MATCH_OK, R_LIVEZ, 0, { NULL } },
    { "GET", "/put-only", KILN_MATCH_METHOD, R_NONE, KILN_PUT, { NULL } },
    { "PUT", "/put-only", KILN_MATCH_OK, R_PUT_ONLY, 0, { NULL } },
    { "GET", "/%6civez", KILN_MATCH_OK, R_LIVEZ, 0, { NULL } },
    { "GET", "/LIVEZ", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/livez/x", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/nope", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },

    /* API scope: /api/v1<path> and /api<path>, never <path> alone */
    { "GET", "/api/v1/notes", KILN_MATCH_OK, R_NOTES_LIST, 0, { NULL } },
    { "GET", "/api/notes", KILN_MATCH_OK, R_NOTES_LIST, 0, { NULL } },
    { "GET", "/api/v1/notes/", KILN_MATCH_OK, R_NOTES_LIST, 0, { NULL } },
    { "POST", "/api/v1/notes", KILN_MATCH_OK, R_NOTES_CREATE, 0, { NULL } },
    { "POST", "/api/notes", KILN_MATCH_OK, R_NOTES_CREATE, 0, { NULL } },
    { "GET", "/notes", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/v1/notes", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/api/v2/notes", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/api/v1", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/api", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    /* ROOT scope is not mounted under /api */
    { "GET", "/api/livez", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/livez", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },

    /* parameters, percent-decoded ('+' stays '+' in a path) */
    { "GET", "/api/v1/notes/42", KILN_MATCH_OK, R_NOTE_GET, 0, { "id", "42" } },
    { "GET", "/api/notes/42/", KILN_MATCH_OK, R_NOTE_GET, 0, { "id", "42" } },
    { "DELETE", "/api/v1/notes/42", KILN_MATCH_OK, R_NOTE_DELETE, 0, { "id", "42" } },
    { "GET", "/api/v1/notes/hello%20world", KILN_MATCH_OK, R_NOTE_GET, 0,
      { "id", "hello world" } },
    { "GET", "/api/v1/notes/a+b%2b%2Bc", KILN_MATCH_OK, R_NOTE_GET, 0, { "id", "a+b++c" } },
    { "GET", "/api/v1/notes/caf%C3%A9", KILN_MATCH_OK, R_NOTE_GET, 0,
      { "id", "caf\xc3\xa9" } },
    { "GET", "/api/v1/notes/7/comments/x%3Ay", KILN_MATCH_OK, R_COMMENT, 0,
      { "note_id", "7", "comment_id", "x:y" } },
    { "GET", "/api/notes/v1", KILN_MATCH_OK, R_NOTE_GET, 0, { "id", "v1" } },

    /* 405: the path exists; HEAD is allowed wherever GET is */
    { "PATCH", "/api/v1/notes/1", KILN_MATCH_METHOD, R_NONE,
      KILN_GET | KILN_HEAD | KILN_DELETE, { NULL } },
    { "PUT", "/api/notes", KILN_MATCH_METHOD, R_NONE,
      KILN_GET | KILN_HEAD | KILN_POST | KILN_OPTIONS, { NULL } },
    { "POST", "/livez", KILN_MATCH_METHOD, R_NONE, KILN_GET | KILN_HEAD, { NULL } },
    { "BREW", "/livez", KILN_MATCH_METHOD, R_NONE, KILN_GET | KILN_HEAD, { NULL } },
    { "HEAD", "/put-only", KILN_MATCH_METHOD, R_NONE, KILN_PUT, { NULL } },

    /* HEAD is answered by the GET route */
    { "HEAD", "/livez", KILN_MATCH_OK, R_LIVEZ, 0, { NULL } },
    { "HEAD", "/api/v1/notes/9", KILN_MATCH_OK, R_NOTE_GET, 0, { "id", "9" } },
    { "OPTIONS", "/api/v1/notes", KILN_MATCH_OK, R_OPTIONS, 0, { NULL } },

    /* malformed percent-encoding, encoded NUL, encoded '/' */
    { "GET", "/api/v1/notes/%zz", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/notes/%4", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/notes/abc%", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/notes/%00", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/notes/a%2Fb", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/notes/a%2fb", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/nope/%2F", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },

    /* "*key" takes one segment that may hold an encoded '/'; ":id" never */
    { "GET", "/api/v1/files/users%2F7%2Fa.txt", KILN_MATCH_OK, R_KEY, 0,
      { "key", "users/7/a.txt" } },
    { "GET", "/api/files/users%2f7%2fa.txt/download", KILN_MATCH_OK, R_KEY_DOWNLOAD, 0,
      { "key", "users/7/a.txt" } },
    { "GET", "/api/v1/files/plain", KILN_MATCH_OK, R_KEY, 0, { "key", "plain" } },
    { "GET", "/api/v1/files/a/b", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", "/api/v1/files/a%2Fb/c", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "GET", "/api%2Fv1/files/a", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },
    { "DELETE", "/api/v1/files/a%2Fb", KILN_MATCH_METHOD, R_NONE, KILN_GET | KILN_HEAD,
      { NULL } },
    { "GET", "/api/v1/notes/a%2Fb/comments/1", KILN_MATCH_BAD_PATH, R_NONE, 0, { NULL } },

    /* KILN_ROUTER_MAX_SEGMENTS: 32 segments match, 33 are never found */
    { "GET", DEEP_PATH, KILN_MATCH_OK, R_DEEP, 0, { NULL } },
    { "GET", DEEP_PATH "/", KILN_MATCH_OK, R_DEEP, 0, { NULL } },
    { "GET", DEEP_PATH "/s", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
    { "GET", DEEP_PATH "/%zz", KILN_MATCH_NOT_FOUND, R_NONE, 0, { NULL } },
};

static void test_match_table(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(match_cases); i++) {
        const struct match_case *tc = &match_cases[i];
        struct kiln_req req;
        unsigned allow = 12345;
        char ctx[256];

        kiln_arena_reset(f->arena);
        memset(&req, 0, sizeof req);
        req.arena = f->arena;
        req.method_name = kiln_str_c(tc->method);
        req.method = kiln_method_parse(req.method_name);
        req.path = kiln_str_c(tc->path);
        snprintf(ctx, sizeof ctx, "%s %s", tc->method, tc->path);

        enum kiln_match m = kiln_router_match(f->router, &req, &allow);
        if (m != tc->match)
            fail_msg("%s: %s, want %s", ctx, match_name(m), match_name(tc->match));
        if (m == KILN_MATCH_OK) {
            if (req.route != &routes[tc->route])
                fail_msg("%s: matched route %td (%s), want %d (%s)", ctx,
                         req.route ? req.route - routes : -1,
                         req.route ? req.route->path : "-", tc->route,
                         routes[tc->route].path);
            size_t nparams = 0;
            while (nparams < 4 && tc->params[nparams])
                nparams += 2;
            nparams /= 2;
            if (req.nparams != nparams)
                fail_msg("%s: %zu params, want %zu", ctx, req.nparams, nparams);
            for (size_t k = 0; k < nparams; k++) {
                assert_kstr_eq_in(ctx, req.params[k].name, tc->params[2 * k]);
                assert_kstr_eq_in(ctx, req.params[k].value, tc->params[2 * k + 1]);
                assert_kstr_eq_in(ctx, kiln_req_param(&req, tc->params[2 * k]),
                                  tc->params[2 * k + 1]);
            }
        } else {
            if (req.route)
                fail_msg("%s: route set on %s", ctx, match_name(m));
        }
        unsigned want_allow = tc->match == KILN_MATCH_METHOD ? tc->allow : 0;
        if (m == KILN_MATCH_METHOD || m == KILN_MATCH_NOT_FOUND || m == KILN_MATCH_BAD_PATH) {
            if (allow != want_allow)
                fail_msg("%s: allow 0x%x, want 0x%x", ctx, allow, want_allow);
        }
    }
}

/* A query that does not decode is refused whole: a NUL (%00) would cut a
 * value short on the way to the database, and a broken escape would make a
 * parameter silently absent. */
static const struct query_case {
    const char *query;
    bool valid;
} query_cases[] = {
    { "", true },
    { "search=a", true },
    { "search=a%20b&limit=5", true },
    { "search=caf%C3%A9+x", true },
    { "a=%2F%3f", true },
    { "search=a%00zzz", false },
    { "search=a%0", false },
    { "search=a%", false },
    { "search=%zz", false },
    { "search=%g0", false },
    { "%00=x", false },
};

static void test_query_validity(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(query_cases); i++) {
        const struct query_case *tc = &query_cases[i];
        struct kiln_req req;
        unsigned allow;
        kiln_arena_reset(f->arena);
        memset(&req, 0, sizeof req);
        req.arena = f->arena;
        req.method = KILN_GET;
        req.path = KILN_STR("/livez");
        req.query = kiln_str_c(tc->query);
        if (kiln_query_valid(req.query) != tc->valid)
            fail_msg("query %s: valid %d, want %d", tc->query, !tc->valid, tc->valid);
        enum kiln_match m = kiln_router_match(f->router, &req, &allow);
        enum kiln_match want = tc->valid ? KILN_MATCH_OK : KILN_MATCH_BAD_QUERY;
        if (m != want)
            fail_msg("query %s: %s, want %s", tc->query, match_name(m), match_name(want));
    }
    /* a raw NUL inside the query's length */
    assert_false(kiln_query_valid((kiln_str){ "a=b\0c", 5 }));
}

/* A parameter value that needs no decoding still reads back through
 * kiln_req_param, and an unknown name is {NULL, 0}. */
static void test_param_lookup(void **state)
{
    struct fx *f = *state;
    struct kiln_req req;
    unsigned allow;
    memset(&req, 0, sizeof req);
    req.arena = f->arena;
    req.method = KILN_GET;
    req.path = KILN_STR("/api/notes/5/comments/6");
    assert_int_equal(kiln_router_match(f->router, &req, &allow), KILN_MATCH_OK);
    assert_kstr_eq(kiln_req_param(&req, "note_id"), "5");
    assert_kstr_eq(kiln_req_param(&req, "comment_id"), "6");
    assert_null(kiln_req_param(&req, "id").p);
    assert_null(kiln_req_param(&req, "").p);
}

static const struct allow_case {
    unsigned allow;
    const char *text;
} allow_cases[] = {
    { 0, "" },
    { KILN_GET, "GET" },
    { KILN_GET | KILN_HEAD | KILN_POST, "GET, HEAD, POST" },
    { KILN_DELETE | KILN_GET | KILN_HEAD, "GET, HEAD, DELETE" },
    { KILN_OPTIONS | KILN_PUT, "PUT, OPTIONS" },
    { KILN_GET | KILN_HEAD | KILN_POST | KILN_PUT | KILN_PATCH | KILN_DELETE | KILN_OPTIONS,
      "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" },
};

static void test_allow_header(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < ARRAY_LEN(allow_cases); i++)
        assert_string_equal(kiln_allow_header(f->arena, allow_cases[i].allow),
                            allow_cases[i].text);
}

/* The 405 path end to end: the mask from a match gives the Allow text. */
static void test_allow_header_from_match(void **state)
{
    struct fx *f = *state;
    struct kiln_req req;
    unsigned allow;
    memset(&req, 0, sizeof req);
    req.arena = f->arena;
    req.method = KILN_PATCH;
    req.path = KILN_STR("/api/v1/notes");
    assert_int_equal(kiln_router_match(f->router, &req, &allow), KILN_MATCH_METHOD);
    assert_string_equal(kiln_allow_header(f->arena, allow), "GET, HEAD, POST, OPTIONS");
}

/* An empty table finds nothing and allocates nothing. */
static void test_empty_table(void **state)
{
    struct fx *f = *state;
    struct kiln_router *r = kiln_router_new(routes, 0, true);
    struct kiln_req req;
    unsigned allow;
    memset(&req, 0, sizeof req);
    req.arena = f->arena;
    req.method = KILN_GET;
    req.path = KILN_STR("/");
    assert_int_equal(kiln_router_match(r, &req, &allow), KILN_MATCH_NOT_FOUND);
    assert_int_equal(allow, 0);
    kiln_router_free(r);
    kiln_router_free(NULL);
}

/* Test-only routes (KILN_ROUTE_INTERNAL) exist only when asked for. */
static void test_internal_routes(void **state)
{
    struct fx *f = *state;
    static const struct kiln_route table[] = {
        { KILN_GET, KILN_SCOPE_ROOT, "/_test/sleep", NULL, handler, KILN_ROUTE_INTERNAL, NULL },
        { KILN_GET, KILN_SCOPE_ROOT, "/livez", NULL, handler, 0, NULL },
    };
    for (int with = 0; with <= 1; with++) {
        struct kiln_router *r = kiln_router_new(table, ARRAY_LEN(table), with);
        struct kiln_req req;
        unsigned allow;
        memset(&req, 0, sizeof req);
        req.arena = f->arena;
        req.method = KILN_GET;
        req.path = KILN_STR("/_test/sleep");
        assert_int_equal(kiln_router_match(r, &req, &allow),
                         with ? KILN_MATCH_OK : KILN_MATCH_NOT_FOUND);
        req.path = KILN_STR("/livez");
        assert_int_equal(kiln_router_match(r, &req, &allow), KILN_MATCH_OK);
        kiln_router_free(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_match_table),
        T(test_query_validity),
        T(test_param_lookup),
        T(test_allow_header),
        T(test_allow_header_from_match),
        T(test_empty_table),
        T(test_internal_routes),
#undef T
    };
    return cmocka_run_group_tests_name("http/router", tests, NULL, NULL);
}
