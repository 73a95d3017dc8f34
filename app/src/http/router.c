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

/* A pattern segment that captures: ":name" (one segment, no '/') or
 * "*name" (one segment whose value may hold an encoded '/'). */
static bool is_param(kiln_str pat)
{
    return pat.len > 1 && (pat.p[0] == ':' || pat.p[0] == '*');
}

static bool match_segments(const struct compiled *c, const kiln_str *seg, const bool *slash,
                           size_t nseg)
{
    if (c->nseg != nseg)
        return false;
    for (size_t i = 0; i < nseg; i++) {
        if (is_param(c->seg[i])) {
            if (slash[i] && c->seg[i].p[0] != '*')
                return false;
            continue;
        }
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
    bool slash[KILN_ROUTER_MAX_SEGMENTS];
    bool any_slash = false;
    int n = split(req->path, raw);
    *allow = 0;
    if (n < 0)
        return KILN_MATCH_NOT_FOUND;
    /* A query that does not decode is refused whole, before any handler
     * could read a value cut short or silently missing (Plug refuses it
     * too). */
    if (!kiln_query_valid(req->query))
        return KILN_MATCH_BAD_QUERY;
    for (int i = 0; i < n; i++) {
        slash[i] = false;
        if (memchr(raw[i].p, '%', raw[i].len)) {
            if (!kiln_url_decode(req->arena, raw[i], false, &seg[i]))
                return KILN_MATCH_BAD_PATH;
            /* An encoded '/' stays inside its segment; only a "*name"
             * parameter may take such a segment. */
            slash[i] = memchr(seg[i].p, '/', seg[i].len) != NULL;
            any_slash |= slash[i];
        } else {
            seg[i] = raw[i];
        }
    }

    /* Where the API scope's routes start in this path, if anywhere. */
    size_t api_at = 0;
    bool is_api = false;
    if (n >= 1 && kiln_str_eq_c(seg[0], "api") && !slash[0]) {
        is_api = true;
        api_at = (n >= 2 && kiln_str_eq_c(seg[1], "v1")) ? 2 : 1;
    }

    const struct compiled *found = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const struct compiled *c = &r->routes[i];
        const kiln_str *s = seg;
        const bool *sl = slash;
        size_t ns = (size_t)n;
        if (c->route->scope == KILN_SCOPE_API) {
            if (!is_api)
                continue;
            s = seg + api_at;
            sl = slash + api_at;
            ns = (size_t)n - api_at;
        }
        if (!match_segments(c, s, sl, ns))
            continue;
        unsigned bits = method_bits(c->route->method);
        *allow |= bits;
        if (!found && (bits & (unsigned)req->method)) {
            found = c;
            req->nparams = 0;
            for (size_t k = 0; k < c->nseg && req->nparams < KILN_MAX_PARAMS; k++) {
                if (is_param(c->seg[k])) {
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
    if (*allow)
        return KILN_MATCH_METHOD;
    /* An encoded '/' where no route takes one: malformed, as before. */
    return any_slash ? KILN_MATCH_BAD_PATH : KILN_MATCH_NOT_FOUND;
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
