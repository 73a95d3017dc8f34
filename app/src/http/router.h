/*
 * The router: matches a method and path against the one route table
 * (app/src/api/routes.c). Paths are split on '/', empty segments ignored
 * (as Phoenix does: "/livez/" is "/livez"), segments percent-decoded, and
 * ":name" segments captured as parameters. An encoded '/' (%2F) is refused
 * (400) except in a "*name" parameter, which captures one segment whose
 * value may hold it (an upload key sent as one segment). Routes in the API scope are
 * mounted twice, at /api/v1 (canonical) and /api (compatibility alias).
 * A built router is immutable and shared by every thread.
 */
#ifndef KILN_HTTP_ROUTER_H
#define KILN_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"

struct kiln_res;

/* Runs the handler; sets res (status, body). Runs on the event loop with
 * KILN_ROUTE_LOOP, on the worker pool with KILN_ROUTE_BLOCKING or when the
 * loops have no stores of their own (http/server.h), and otherwise on a
 * fiber of the connection's loop (core/fiber.h). */
typedef void (*kiln_handler_fn)(struct kiln_req *req, struct kiln_res *res);
/* Returns 0 to let the request through, or sets res and returns non-zero. */
typedef int (*kiln_guard_fn)(struct kiln_req *req, struct kiln_res *res);

enum kiln_scope {
    KILN_SCOPE_ROOT, /* path as written */
    KILN_SCOPE_API,  /* /api/v1<path> and /api<path> */
};

enum kiln_route_flags {
    /* Never blocks (no database, network or disk): answer on the event loop
     * instead of paying a hop to the worker pool. */
    KILN_ROUTE_LOOP = 1 << 0,
    /* Not part of the public API (test-only routes); hidden from docs. */
    KILN_ROUTE_INTERNAL = 1 << 1,
    /* Blocks its thread (outbound HTTPS through libcurl, sleeping): always
     * runs on the worker pool, never on a loop's fiber. */
    KILN_ROUTE_BLOCKING = 1 << 2,
};

struct kiln_route {
    enum kiln_method method;
    enum kiln_scope scope;
    const char *path;        /* "/notes/:id" */
    kiln_guard_fn guard;     /* NULL: public */
    kiln_handler_fn handler;
    unsigned flags;
    /* What the handler serves, for handlers shared by many routes (the
     * resource engine: its struct kiln_resource). */
    const void *data;
};

enum kiln_match {
    KILN_MATCH_OK,
    KILN_MATCH_NOT_FOUND,
    KILN_MATCH_METHOD,       /* path known, method not: see *allow */
    KILN_MATCH_BAD_PATH,     /* malformed percent-encoding, or an encoded '/'
                                where no "*name" parameter takes it */
    KILN_MATCH_BAD_QUERY,    /* malformed percent-encoding or NUL in the query */
};

#define KILN_ROUTER_MAX_SEGMENTS 32

struct kiln_router;

/* Routes are referenced, not copied: the table must outlive the router.
 * Routes flagged KILN_ROUTE_INTERNAL are left out unless with_internal. */
struct kiln_router *kiln_router_new(const struct kiln_route *routes, size_t n,
                                    bool with_internal);
void kiln_router_free(struct kiln_router *r);

/*
 * Match req->method and req->path. On OK sets req->route and req->params.
 * On METHOD sets *allow to the mask of methods the path accepts (HEAD
 * included wherever GET is).
 */
enum kiln_match kiln_router_match(const struct kiln_router *r, struct kiln_req *req,
                                  unsigned *allow);

/* "GET, HEAD, POST" for an allow mask; into the arena. */
const char *kiln_allow_header(kiln_arena *a, unsigned allow);

#endif
