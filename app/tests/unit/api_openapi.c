/*
 * The generated OpenAPI document (api/openapi.c, served at /api/openapi)
 * against what it is generated from and what the server does:
 * - THE route table (app/src/api/routes.c): every public route is
 *   documented, every documented operation is a route, and the security
 *   of each matches its guard;
 * - the resource declarations (declare.h): every declared bound, enum,
 *   required field and list parameter is the document's, read back;
 * - the server and the guard: every operation lists the statuses they can
 *   answer it with;
 * - itself: every $ref resolves, every operationId is unique, and the
 *   generator found nothing wrong (a route without its operation in
 *   app/docs/operations.json, or the reverse).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>

#include "test_util.h"

#include "api/api.h"
#include "api/declare.h"
#include "api/engine.h"
#include "auth/guard.h"
#include "aws/s3.h"
#include "core/egress.h"
#include "webhooks/webhooks.h"

static const json_t *doc;

static int load(void **state)
{
    (void)state;
    doc = api_openapi_document();
    if (!doc)
        fail_msg("no document");
    return 0;
}

/* "/notes/:id" in scope API -> "/api/v1/notes/{id}" (OpenAPI templating);
 * "*key" (a parameter that may hold an encoded '/') is "{key}" too. Written
 * again here, not shared with openapi.c, so that a mistake there shows. */
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

static json_t *get(const json_t *o, const char *k)
{
    return json_object_get(o, k);
}

static json_t *schema(const char *name)
{
    json_t *s = get(get(get(doc, "components"), "schemas"), name);
    if (!s)
        fail_msg("components.schemas.%s is missing", name);
    return s;
}

static json_t *operation_of(const struct kiln_route *r)
{
    char path[256], method[16];
    doc_path(r, path, sizeof path);
    lower(kiln_method_name(r->method), method, sizeof method);
    return get(get(get(doc, "paths"), path), method);
}

static void test_the_generator_found_nothing_wrong(void **state)
{
    (void)state;
    const char *p = api_openapi_problem();
    if (p)
        fail_msg("%s", p);
    assert_string_equal(json_string_value(get(doc, "openapi")), "3.1.0");
}

static void test_every_route_is_documented(void **state)
{
    (void)state;
    size_t nroutes;
    const struct kiln_route *routes = api_routes(&nroutes);
    for (size_t i = 0; i < nroutes; i++) {
        const struct kiln_route *r = &routes[i];
        if (r->flags & KILN_ROUTE_INTERNAL)
            continue;
        char path[256];
        doc_path(r, path, sizeof path);
        json_t *op = operation_of(r);
        if (!op)
            fail_msg("route %s %s is not in the document", kiln_method_name(r->method), path);
        if (!json_object_size(get(op, "responses")))
            fail_msg("%s %s documents no responses", kiln_method_name(r->method), path);
        if (!json_is_array(get(op, "security")))
            fail_msg("%s %s does not say its security", kiln_method_name(r->method), path);
        bool secured = json_array_size(get(op, "security")) > 0;
        if ((r->guard == kiln_guard_session) != secured)
            fail_msg("%s %s: security in the document (%s) disagrees with the route's guard",
                     kiln_method_name(r->method), path, secured ? "session" : "none");
    }
}

static void test_every_documented_operation_is_a_route(void **state)
{
    (void)state;
    const char *path;
    json_t *ops;
    json_object_foreach(get(doc, "paths"), path, ops) {
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
                fail_msg("the document has %s %s, which routes.c does not serve", method, path);
        }
    }
}

/* Every statuses the server and the guard can answer an operation with
 * (http/server.c, http/parser.c, auth/guard.c) is listed on it. */
static void test_every_operation_lists_the_server_and_guard_answers(void **state)
{
    (void)state;
    size_t nroutes;
    const struct kiln_route *routes = api_routes(&nroutes);
    for (size_t i = 0; i < nroutes; i++) {
        const struct kiln_route *r = &routes[i];
        if (r->flags & KILN_ROUTE_INTERNAL)
            continue;
        json_t *resp = get(operation_of(r), "responses");
        const char *every[] = { "400", "408", "413", "431", "500", "503" };
        const char *session[] = { "401", "429" };
        const char *write[] = { "403", "415" };
        for (size_t s = 0; s < ARRAY_LEN(every); s++)
            if (!get(resp, every[s]))
                fail_msg("%s %s lacks %s", kiln_method_name(r->method), r->path, every[s]);
        if (r->guard && !get(resp, "429"))
            fail_msg("%s %s is rate limited but lacks 429", kiln_method_name(r->method),
                     r->path);
        if (r->guard != kiln_guard_session)
            continue;
        for (size_t s = 0; s < ARRAY_LEN(session); s++)
            if (!get(resp, session[s]))
                fail_msg("%s %s lacks %s", kiln_method_name(r->method), r->path, session[s]);
        if (r->method & (KILN_POST | KILN_PUT | KILN_PATCH | KILN_DELETE))
            for (size_t s = 0; s < ARRAY_LEN(write); s++)
                if (!get(resp, write[s]))
                    fail_msg("%s %s (a cookie write) lacks %s", kiln_method_name(r->method),
                             r->path, write[s]);
    }
}

/* Every {"$ref": "#/components/<kind>/X"} names an existing component. */
static void check_refs(const json_t *node, const char *where)
{
    if (json_is_object(node)) {
        const char *ref = json_string_value(get(node, "$ref"));
        if (ref) {
            char kind[64], name[128];
            if (sscanf(ref, "#/components/%63[^/]/%127s", kind, name) != 2 ||
                !get(get(get(doc, "components"), kind), name))
                fail_msg("%s: $ref %s does not resolve", where, ref);
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)node, k, v) check_refs(v, k);
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v) check_refs(v, where);
    }
}

static void test_refs_resolve_and_operation_ids_are_unique(void **state)
{
    (void)state;
    check_refs(doc, "document");
    json_t *schemes = get(get(doc, "components"), "securitySchemes");
    assert_non_null(get(schemes, "session_cookie"));
    assert_non_null(get(schemes, "bearer"));
    json_t *seen = json_object();
    const char *path, *method;
    json_t *ops, *op;
    json_object_foreach(get(doc, "paths"), path, ops) {
        json_object_foreach(ops, method, op) {
            const char *id = json_string_value(get(op, "operationId"));
            if (!id)
                fail_msg("%s %s has no operationId", method, path);
            if (get(seen, id))
                fail_msg("operationId %s twice", id);
            json_object_set_new(seen, id, json_true());
        }
    }
    json_decref(seen);
}

static json_int_t integer(const json_t *o, const char *k, const char *where)
{
    json_t *v = get(o, k);
    if (!json_is_integer(v))
        fail_msg("%s: %s is not an integer", where, k);
    return json_integer_value(v);
}

static bool listed(const json_t *array, const char *s)
{
    for (size_t i = 0; i < json_array_size(array); i++) {
        const char *v = json_string_value(json_array_get(array, i));
        if (v && !strcmp(v, s))
            return true;
    }
    return false;
}

static void capital(const char *s, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "%c%s%s", toupper((unsigned char)s[0]), s + 1, suffix);
}

/* A field's declaration against its schema in the row and in the bodies. */
static void check_field(const struct kiln_resource *r, const struct kiln_field *f,
                        const json_t *s, const char *where)
{
    if (!s)
        fail_msg("%s: field %s.%s is missing", where, r->name, f->name);
    if (f->type == KILN_TEXT) {
        if (f->max_len && integer(s, "maxLength", where) != (json_int_t)f->max_len)
            fail_msg("%s: %s.%s maxLength is not the declared %zu", where, r->name, f->name,
                     f->max_len);
        if (!f->max_len && get(s, "maxLength"))
            fail_msg("%s: %s.%s has a maxLength it does not declare", where, r->name, f->name);
        if (f->min_len && integer(s, "minLength", where) != (json_int_t)f->min_len)
            fail_msg("%s: %s.%s minLength is not the declared %zu", where, r->name, f->name,
                     f->min_len);
    }
    if (f->type == KILN_INTEGER && (f->flags & KILN_BOUNDED) &&
        (integer(s, "minimum", where) != f->min || integer(s, "maximum", where) != f->max))
        fail_msg("%s: %s.%s bounds are not the declared ones", where, r->name, f->name);
    if (f->type == KILN_ENUM)
        for (const char *const *v = f->values; *v; v++)
            if (!listed(get(s, "enum"), *v))
                fail_msg("%s: %s.%s enum lacks %s", where, r->name, f->name, *v);
    json_t *type = get(s, "type");
    bool null_ok = json_is_array(type) && listed(type, "null");
    if ((f->flags & KILN_NULLABLE) && f->type != KILN_JSON && !null_ok)
        fail_msg("%s: %s.%s is nullable but its type says no null", where, r->name, f->name);
}

static void test_declared_bounds_are_the_documents(void **state)
{
    (void)state;
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        char one[96], create[96], update[96], list[96];
        capital(r->singular, "", one, sizeof one);
        capital(r->singular, "Create", create, sizeof create);
        capital(r->singular, "Update", update, sizeof update);
        capital(r->singular, "List", list, sizeof list);
        json_t *row = get(schema(one), "properties");
        json_t *in = schema(create), *up = schema(update);
        json_t *required = get(in, "required");
        assert_true(listed(get(schema(one), "required"), "id"));
        for (size_t f = 0; f < r->nfields; f++) {
            const struct kiln_field *fd = &r->fields[f];
            check_field(r, fd, get(row, fd->name), one);
            if (!listed(get(schema(one), "required"), fd->name))
                fail_msg("%s: %s is not required in the row", one, fd->name);
            if (fd->flags & KILN_READ_ONLY) {
                if (get(get(in, "properties"), fd->name))
                    fail_msg("%s: read-only %s is in the body", create, fd->name);
                continue;
            }
            check_field(r, fd, get(get(in, "properties"), fd->name), create);
            check_field(r, fd, get(get(up, "properties"), fd->name), update);
            if (((fd->flags & KILN_REQUIRED) != 0) != listed(required, fd->name))
                fail_msg("%s: %s is %srequired in the declaration", create, fd->name,
                         fd->flags & KILN_REQUIRED ? "" : "not ");
            if (get(up, "required"))
                fail_msg("%s: an update requires nothing", update);
        }

        /* The list's parameters. */
        struct kiln_route rt = { KILN_GET, KILN_SCOPE_API, NULL, kiln_guard_session,
                                 kiln_engine_list, 0, r };
        char path[96];
        snprintf(path, sizeof path, "/%s", r->name);
        rt.path = path;
        json_t *params = get(operation_of(&rt), "parameters");
        json_t *by = json_object();
        size_t k;
        json_t *p;
        json_array_foreach(params, k, p) json_object_set(by, json_string_value(get(p, "name")), p);
        bool search = false;
        for (size_t f = 0; f < r->nfields; f++) {
            search |= (r->fields[f].flags & KILN_SEARCH) != 0;
            if ((r->fields[f].flags & KILN_FILTER) && !get(by, r->fields[f].name))
                fail_msg("GET /%s: filter %s is not a parameter", r->name, r->fields[f].name);
            if (r->fields[f].flags & KILN_SORT) {
                char minus[96];
                snprintf(minus, sizeof minus, "-%s", r->fields[f].name);
                json_t *e = get(get(get(by, "sort"), "schema"), "enum");
                if (!listed(e, r->fields[f].name) || !listed(e, minus))
                    fail_msg("GET /%s: sort lacks %s", r->name, r->fields[f].name);
            }
        }
        if (search != (get(by, "search") != NULL))
            fail_msg("GET /%s: search is %sdocumented", r->name, search ? "not " : "");
        if (search && integer(get(get(by, "search"), "schema"), "maxLength", r->name) !=
                          (json_int_t)r->search_max)
            fail_msg("GET /%s: search maxLength is not the declared %zu", r->name,
                     r->search_max);
        if (r->page_max) {
            json_t *limit = get(get(by, "limit"), "schema");
            json_t *offset = get(get(by, "offset"), "schema");
            assert_int_equal(integer(limit, "maximum", "limit"), r->page_max);
            assert_int_equal(integer(limit, "default", "limit"), r->page_default);
            assert_int_equal(integer(limit, "minimum", "limit"), 1);
            assert_int_equal(integer(offset, "maximum", "offset"), KILN_ENGINE_OFFSET_MAX);
            assert_non_null(get(get(get(schema(list), "properties"), "meta"), "properties"));
        } else {
            if (get(by, "limit") || get(by, "offset"))
                fail_msg("GET /%s is unpaged but documents limit or offset", r->name);
            if (get(get(schema(list), "properties"), "meta"))
                fail_msg("%s: an unpaged list has no meta", list);
        }
        json_decref(by);

        /* The 404 of a show names the resource's code. */
        char item[96];
        snprintf(item, sizeof item, "/%s/:id", r->name);
        struct kiln_route show = { KILN_GET, KILN_SCOPE_API, item, kiln_guard_session,
                                   kiln_engine_show, 0, r };
        char *text = json_dumps(get(get(operation_of(&show), "responses"), "404"), 0);
        if (!text || !strstr(text, r->not_found_code))
            fail_msg("GET /%s/{id}: 404 does not name %s", r->name, r->not_found_code);
        free(text);
    }
}

/* A bound a hand-written handler enforces, stated from its constant. */
static json_t *query_schema(const char *path, const char *name)
{
    json_t *op = get(get(get(doc, "paths"), path), "get");
    json_t *params = get(op, "parameters");
    for (size_t i = 0; i < json_array_size(params); i++) {
        const char *n = json_string_value(get(json_array_get(params, i), "name"));
        if (n && !strcmp(n, name))
            return get(json_array_get(params, i), "schema");
    }
    fail_msg("GET %s has no parameter %s", path, name);
    return NULL;
}

static void test_handler_bounds_are_the_documents(void **state)
{
    (void)state;
    json_t *s = query_schema("/api/v1/dashboard", "recent_limit");
    assert_int_equal(integer(s, "maximum", "recent_limit"), API_DASHBOARD_RECENT_MAX);
    assert_int_equal(integer(s, "default", "recent_limit"), API_DASHBOARD_RECENT_DEFAULT);
    assert_int_equal(integer(s, "minimum", "recent_limit"), 1);
    s = query_schema("/api/v1/uploads", "limit");
    assert_int_equal(integer(s, "maximum", "limit"), KILN_S3_LIST_MAX);
    assert_int_equal(integer(s, "default", "limit"), API_UPLOADS_LIST_DEFAULT);
    s = get(get(schema("UploadPresignInput"), "properties"), "filename");
    assert_int_equal(integer(s, "maxLength", "filename"), API_UPLOADS_FILENAME_MAX);
    s = query_schema("/api/v1/webhooks/{id}/deliveries", "limit");
    assert_int_equal(integer(s, "maximum", "limit"), API_WEBHOOK_DELIVERIES_MAX);
    assert_int_equal(integer(s, "default", "limit"), API_WEBHOOK_DELIVERIES_DEFAULT);
    assert_int_equal(integer(s, "minimum", "limit"), 1);
    assert_int_equal(integer(schema("WebhookUrl"), "maxLength", "url"), KILN_EGRESS_MAX_URL);
    assert_int_equal(integer(schema("WebhookEventPatterns"), "maxItems", "events"),
                     KILN_WEBHOOK_MAX_PATTERNS);
    assert_int_equal(integer(schema("WebhookEventPatterns"), "minItems", "events"), 1);
    assert_int_equal(integer(schema("WebhookDescription"), "maxLength", "description"),
                     KILN_WEBHOOK_MAX_DESCRIPTION);
    s = get(get(schema("WebhookList"), "properties"), "data");
    assert_int_equal(integer(s, "maxItems", "webhooks"), KILN_WEBHOOKS_PER_USER);
}

/* What Kiln sends to webhook endpoints: the document's webhooks section
 * (OpenAPI 3.1) describes the request, its body the payload schema, whose
 * event is the change feed's. */
static void test_webhook_deliveries_are_described(void **state)
{
    (void)state;
    json_t *post = get(get(get(doc, "webhooks"), "delivery"), "post");
    if (!post)
        fail_msg("the document has no webhooks.delivery.post");
    json_t *body = get(get(get(get(post, "requestBody"), "content"), "application/json"),
                       "schema");
    assert_string_equal(json_string_value(get(body, "$ref")),
                        "#/components/schemas/WebhookPayload");
    const char *want[] = { "webhook-id", "webhook-timestamp", "webhook-signature" };
    json_t *params = get(post, "parameters");
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(params); i++) {
            json_t *p = json_array_get(params, i);
            found |= !strcmp(json_string_value(get(p, "name")), want[w]) &&
                     !strcmp(json_string_value(get(p, "in")), "header");
        }
        if (!found)
            fail_msg("webhooks.delivery.post does not name the %s header", want[w]);
    }
    json_t *data = get(get(schema("WebhookEventPayload"), "properties"), "data");
    assert_string_equal(json_string_value(get(data, "$ref")), "#/components/schemas/Event");
    assert_non_null(get(schema("WebhookTestPayload"), "properties"));
    /* The secret is in the answers that make one, never in Webhook. */
    assert_null(get(get(schema("Webhook"), "properties"), "secret"));
    assert_non_null(get(get(schema("WebhookCreated"), "properties"), "secret"));
    assert_non_null(get(get(schema("WebhookRotated"), "properties"), "secret"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_generator_found_nothing_wrong),
        cmocka_unit_test(test_every_route_is_documented),
        cmocka_unit_test(test_every_documented_operation_is_a_route),
        cmocka_unit_test(test_every_operation_lists_the_server_and_guard_answers),
        cmocka_unit_test(test_refs_resolve_and_operation_ids_are_unique),
        cmocka_unit_test(test_declared_bounds_are_the_documents),
        cmocka_unit_test(test_handler_bounds_are_the_documents),
        cmocka_unit_test(test_webhook_deliveries_are_described),
    };
    return cmocka_run_group_tests(tests, load, NULL);
}
