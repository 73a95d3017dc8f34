/*
 * The request and response as handlers see them. Everything in a request
 * (strings, headers, body, params) lives in req->arena and is valid until the
 * response has been written; handlers allocate from the same arena and never
 * free. A request belongs to one thread at a time: the event loop while it is
 * parsed and written, a worker while its handler runs.
 */
#ifndef KILN_HTTP_REQUEST_H
#define KILN_HTTP_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/str.h"

struct kiln_config;
struct kiln_route;

/* Bit flags, so that a route set's methods fit in one `allow` mask. */
enum kiln_method {
    KILN_METHOD_OTHER = 0,
    KILN_GET = 1 << 0,
    KILN_HEAD = 1 << 1,
    KILN_POST = 1 << 2,
    KILN_PUT = 1 << 3,
    KILN_PATCH = 1 << 4,
    KILN_DELETE = 1 << 5,
    KILN_OPTIONS = 1 << 6,
};

struct kiln_header {
    kiln_str name;   /* lower-cased */
    kiln_str value;  /* surrounding whitespace trimmed */
};

struct kiln_param {
    kiln_str name;   /* from the route pattern, without ':' */
    kiln_str value;  /* percent-decoded */
};

#define KILN_MAX_PARAMS 8
#define KILN_REQUEST_ID_MAX 128

struct kiln_req {
    kiln_arena *arena;
    const struct kiln_config *config;

    enum kiln_method method;
    kiln_str method_name;
    kiln_str target;          /* as sent */
    kiln_str path;            /* target without query; absolute-form reduced */
    kiln_str query;           /* after '?', still encoded; len 0 if none */
    unsigned char http_major, http_minor;

    struct kiln_header *headers;
    size_t nheaders;
    size_t headers_cap;

    kiln_str body;
    bool keep_alive;
    bool expect_continue;
    bool has_body;            /* Content-Length > 0 or chunked */

    struct kiln_param params[KILN_MAX_PARAMS];
    size_t nparams;
    const struct kiln_route *route;

    char request_id[KILN_REQUEST_ID_MAX + 1];
    size_t request_id_len;
    kiln_str trace_id;        /* x-amzn-trace-id or traceparent; p NULL if none */
    const char *remote_ip;    /* owned by the connection */
    void *session;            /* set by the session guard (auth/session.h) */
    const char *user_id;      /* the session's internal user id, for logs; NULL if none */
    void *context;            /* the worker's context (stores); NULL on the loop */
    uint64_t start_ns;        /* monotonic, first byte of the request */
};

/* First header with that lower-case name, or {NULL, 0}. */
kiln_str kiln_req_header(const struct kiln_req *req, const char *name);
/* Route parameter by name, or {NULL, 0}. */
kiln_str kiln_req_param(const struct kiln_req *req, const char *name);
/*
 * Query parameter by name, percent-decoded ('+' is a space) into the arena.
 * Returns false when absent or badly encoded. The first occurrence wins.
 */
bool kiln_req_query(const struct kiln_req *req, const char *name, kiln_str *out);

/*
 * A value of an application/x-www-form-urlencoded string (a query or a form
 * body), decoded into the arena; false when absent or badly encoded.
 */
bool kiln_form_value(kiln_arena *a, kiln_str data, const char *name, kiln_str *out);

/*
 * Percent-decode s into the arena. Returns false on a malformed escape or a
 * NUL (encoded or raw). plus_is_space for application/x-www-form-urlencoded.
 */
bool kiln_url_decode(kiln_arena *a, kiln_str s, bool plus_is_space, kiln_str *out);

/* The query string decodes: every '%' starts a two-digit escape, and no
 * escape or byte is NUL. The router refuses a request whose query does not
 * (400), so handlers never see a value cut short or silently missing. */
bool kiln_query_valid(kiln_str query);

/* Method name → enum (exact, case-sensitive per RFC 9110 9.1). */
enum kiln_method kiln_method_parse(kiln_str name);
const char *kiln_method_name(enum kiln_method m);

/* Inbound x-request-id is kept only if 1..128 chars of [A-Za-z0-9._-]. */
bool kiln_request_id_valid(kiln_str id);

#endif
