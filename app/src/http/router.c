/*
 * Segment-by-segment matcher over a compiled copy of the route table. The
 * table is small (tens of routes) and a linear scan over pre-split segments
 * costs less than one header lookup, so there is no trie.
 */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

struct compiled {
    const struct kiln_route *route;
    size_t nseg;
    kiln_str seg[KILN_ROUTER_MAX_SEGMENTS]; /* ":x" kept as is */
};

struct kiln_router {
    struct compiled *routes;
    size_t n;
};

/* Split on '/', skipping empty segments. Returns count or -1 if too many. */
static int split(kiln_str path, kiln_str *seg)
{
    int n = 0;
    size_t i = 0;
    while (i < path.len) {
        while (i < path.len && path.p[i] == '/')
            i++;
        size_t start = i;
        while (i < path.len && path.p[i] != '/')
            i++;
        if (i > start) {
            if (n == KILN_ROUTER_MAX_SEGMENTS)
                return -1;
            seg[n++] = (kiln_str){ path.p + start, i - start };
        }
    }
    return n;
}

struct kiln_router *kiln_router_new(const struct kiln_route *routes, size_t n,
                                    bool with_internal)
{
    struct kiln_router *r = kiln_calloc(1, sizeof *r);
    r->routes = kiln_calloc(n ? n : 1, sizeof *r->routes);
    for (size_t i = 0; i < n; i++) {
        if ((routes[i].flags & KILN_ROUTE_INTERNAL) && !with_internal)
            continue;
        struct compiled *c = &r->routes[r->n++];
        int nseg = split(kiln_str_c(routes[i].path), c->seg);
        if (nseg < 0)
            kiln_fatal("route table: too many path segments");
        c->nseg = (size_t)nseg;
        c->route = &routes[i];
    }
    return r;
}

void kiln_router_free(struct kiln_router *r)
{
    if (!r)
        return;
    free(r->routes);
    free(r);
}

static bool match_segments(const struct compiled *c, const kiln_str *seg, size_t nseg)
{
    if (c->nseg != nseg)
        return false;
    for (size_t i = 0; i < nseg; i++) {
        if (c->seg[i].len && c->seg[i].p[0] == ':')
            continue;
        if (!kiln_str_eq(c->seg[i], seg[i]))
            return false;
    }
    return true;
}

static unsigned method_bits(enum kiln_method m)
{
    /* HEAD is answered by GET handlers without the body (RFC 9110 9.3.2). */
    return m == KILN_GET ? (KILN_GET | KILN_HEAD) : (unsigned)m;
}

enum kiln_match kiln_router_match(const struct kiln_router *r, struct kiln_req *req,
                                  unsigned *allow)
{
    kiln_str raw[KILN_ROUTER_MAX_SEGMENTS], seg[KILN_ROUTER_MAX_SEGMENTS];
    int n = split(req->path, raw);
    *allow = 0;
    if (n < 0)
        return KILN_MATCH_NOT_FOUND;
    for (int i = 0; i < n; i++) {
        if (memchr(raw[i].p, '%', raw[i].len)) {
            if (!kiln_url_decode(req->arena, raw[i], false, &seg[i]) ||
                memchr(seg[i].p, '/', seg[i].len))
                return KILN_MATCH_BAD_PATH;
        } else {
            seg[i] = raw[i];
        }
    }

    /* Where the API scope's routes start in this path, if anywhere. */
    size_t api_at = 0;
    bool is_api = false;
    if (n >= 1 && kiln_str_eq_c(seg[0], "api")) {
        is_api = true;
        api_at = (n >= 2 && kiln_str_eq_c(seg[1], "v1")) ? 2 : 1;
    }

    const struct compiled *found = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const struct compiled *c = &r->routes[i];
        const kiln_str *s = seg;
        size_t ns = (size_t)n;
        if (c->route->scope == KILN_SCOPE_API) {
            if (!is_api)
                continue;
            s = seg + api_at;
            ns = (size_t)n - api_at;
        }
        if (!match_segments(c, s, ns))
            continue;
        unsigned bits = method_bits(c->route->method);
        *allow |= bits;
        if (!found && (bits & (unsigned)req->method)) {
            found = c;
            req->nparams = 0;
            for (size_t k = 0; k < c->nseg && req->nparams < KILN_MAX_PARAMS; k++) {
                if (c->seg[k].len && c->seg[k].p[0] == ':') {
                    req->params[req->nparams].name =
                        (kiln_str){ c->seg[k].p + 1, c->seg[k].len - 1 };
                    req->params[req->nparams].value = s[k];
                    req->nparams++;
                }
            }
        }
    }
    if (found) {
        req->route = found->route;
        return KILN_MATCH_OK;
    }
    return *allow ? KILN_MATCH_METHOD : KILN_MATCH_NOT_FOUND;
}

const char *kiln_allow_header(kiln_arena *a, unsigned allow)
{
    static const enum kiln_method order[] = { KILN_GET, KILN_HEAD, KILN_POST, KILN_PUT,
                                              KILN_PATCH, KILN_DELETE, KILN_OPTIONS };
    char *out = kiln_arena_alloc(a, 64);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (!(allow & (unsigned)order[i]))
            continue;
        const char *name = kiln_method_name(order[i]);
        size_t nl = strlen(name);
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, name, nl);
        len += nl;
    }
    out[len] = '\0';
    return out;
}
