/*
 * The OpenAPI document (app/docs/openapi.json, served at /api/openapi)
 * against THE route table (app/src/api/routes.c): every public route is
 * documented, every documented operation is a route, protected routes
 * declare the session security, and every $ref resolves. Adding a route
 * without documenting it, or the reverse, fails here.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>

#include "test_util.h"

#include "api/api.h"
#include "auth/guard.h"

extern const char kiln__openapi_json[];
extern const size_t kiln__openapi_json_len;

static json_t *doc;

static int load(void **state)
{
    (void)state;
    json_error_t e;
    doc = json_loadb(kiln__openapi_json, kiln__openapi_json_len, 0, &e);
    if (!doc)
        fail_msg("openapi.json does not parse: line %d: %s", e.line, e.text);
    return 0;
}

static int unload(void **state)
{
    (void)state;
    json_decref(doc);
    return 0;
}

/* "/notes/:id" in scope API -> "/api/v1/notes/{id}" (OpenAPI templating);
 * "*key" (a parameter that may hold an encoded '/') is "{key}" too. */
static void doc_path(const struct kiln_route *r, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "%s", r->scope == KILN_SCOPE_API ? "/api/v1" : "");
    for (const char *p = r->path; *p && o + 2 < cap; p++) {
        if ((*p == ':' || *p == '*') && (p == r->path || p[-1] == '/')) {
            out[o++] = '{';
            while (p[1] && p[1] != '/' && o + 2 < cap)
                out[o++] = *++p;
            out[o++] = '}';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void lower(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

static void test_every_route_is_documented(void **state)
{
    (void)state;
    json_t *paths = json_object_get(doc, "paths");
    assert_non_null(paths);
    size_t nroutes;
    const struct kiln_route *routes = api_routes(&nroutes);
    for (size_t i = 0; i < nroutes; i++) {
        const struct kiln_route *r = &routes[i];
        if (r->flags & KILN_ROUTE_INTERNAL)
            continue;
        char path[256], method[16];
        doc_path(r, path, sizeof path);
        lower(kiln_method_name(r->method), method, sizeof method);
        json_t *op = json_object_get(json_object_get(paths, path), method);
        if (!op)
            fail_msg("route %s %s is not in app/docs/openapi.json", method, path);
        if (!json_object_size(json_object_get(op, "responses")))
            fail_msg("%s %s documents no responses", method, path);
        bool secured = json_array_size(json_object_get(op, "security")) > 0;
        if ((r->guard == kiln_guard_session) != secured)
            fail_msg("%s %s: security in the document (%s) disagrees with the route's guard",
                     method, path, secured ? "session" : "none");
    }
}

static void test_every_documented_operation_is_a_route(void **state)
{
    (void)state;
    const char *path;
    json_t *ops;
    json_object_foreach(json_object_get(doc, "paths"), path, ops) {
        const char *method;
        json_t *op;
        json_object_foreach(ops, method, op) {
            bool found = false;
            size_t nroutes;
            const struct kiln_route *routes = api_routes(&nroutes);
            for (size_t i = 0; i < nroutes && !found; i++) {
                const struct kiln_route *r = &routes[i];
                char p[256], m[16];
                doc_path(r, p, sizeof p);
                lower(kiln_method_name(r->method), m, sizeof m);
                found = !(r->flags & KILN_ROUTE_INTERNAL) && !strcmp(p, path) &&
                        !strcmp(m, method);
            }
            if (!found)
                fail_msg("app/docs/openapi.json documents %s %s, which routes.c does not serve",
                         method, path);
        }
    }
}

/* Every {"$ref": "#/components/schemas/X"} names an existing schema. */
static void check_refs(json_t *node, const char *where)
{
    if (json_is_object(node)) {
        const char *ref = json_string_value(json_object_get(node, "$ref"));
        if (ref) {
            const char *prefix = "#/components/schemas/";
            if (strncmp(ref, prefix, strlen(prefix)) != 0 ||
                !json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"),
                                 ref + strlen(prefix)))
                fail_msg("%s: $ref %s does not resolve", where, ref);
        }
        const char *k;
        json_t *v;
        json_object_foreach(node, k, v) check_refs(v, where);
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v) check_refs(v, where);
    }
}

static void test_refs_resolve_and_version(void **state)
{
    (void)state;
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    check_refs(doc, "openapi.json");
    json_t *schemes = json_object_get(json_object_get(doc, "components"), "securitySchemes");
    assert_non_null(json_object_get(schemes, "session_cookie"));
    assert_non_null(json_object_get(schemes, "bearer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_is_documented),
        cmocka_unit_test(test_every_documented_operation_is_a_route),
        cmocka_unit_test(test_refs_resolve_and_version),
    };
    return cmocka_run_group_tests(tests, load, unload);
}
