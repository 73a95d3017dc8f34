/*
 * The OpenAPI 3.1 document, generated, and the page that renders it.
 *
 * Nothing in the document is written twice. It is built once, on first use,
 * from:
 *
 * - THE route table (api_routes(), routes.c): one operation per route that
 *   is not KILN_ROUTE_INTERNAL, at /api/v1<path> for KILN_SCOPE_API routes
 *   (the /api alias is said once, in info.description), ":id" and "*key"
 *   written "{id}" and "{key}"; its security from the route's guard;
 * - the resource declarations (declare.h, app/src/api/resources/) for the
 *   engine's routes (route->data is the resource): schemas, bounds, list
 *   parameters, responses and their error codes, all read from the same
 *   structs the engine validates with, so a declared bound cannot differ
 *   from the documented one;
 * - app/docs/operations.json (embedded at build time, scripts/embed-docs.sh)
 *   for the handlers written by hand: their summaries, descriptions,
 *   parameters, bodies, success responses and schemas, keyed by handler
 *   name and method; and the document's `webhooks` (OpenAPI 3.1: the
 *   requests Kiln sends to the users' webhook endpoints), copied as is. A JSON file rather than a C table because those docs
 *   are JSON already (nested schemas, long prose with quotes and
 *   backticks), which C string literals or json_pack calls would make hard
 *   to read and review; C has no names for its functions at run time, so
 *   `handlers` below maps each handler to its key, and the bounds those
 *   handlers enforce in C are written into it from their constants
 *   (`bounds` below), never typed into the JSON;
 * - the answers of the guard and of the server (`shared` below), written
 *   once as components/responses and listed on every operation they apply
 *   to, so that each operation lists every status it can answer.
 *
 * What is left out, and why:
 * - 405 method_not_allowed is the answer to a method a path has no
 *   operation for; OpenAPI lists answers per operation, so it belongs to
 *   none (info.description says it, as it says 404 for unknown paths).
 * - HEAD is served wherever GET is (RFC 9110 9.3.2: GET's answer without
 *   the body); OpenAPI has no way to say "as GET" but a copy, and the
 *   route table has no HEAD routes to compare it with.
 * - 505 (HTTP versions other than 1.0 and 1.1) is an answer to a request
 *   that is no HTTP/1 request for any operation.
 * - 409 conflict, which the store error map (http/response.h) gives a
 *   constraint violation: no declared table has a constraint the engine
 *   does not check first (references are checked in the writing
 *   statement), so no operation answers it.
 *
 * app/tests/unit/api_openapi.c compares the document with the route table
 * both ways and the declarations' bounds with the schemas; the black-box
 * suite validates every JSON response it receives against it
 * (app/tests/http/openapi_check.py); `make openapi-lint` lints it with
 * Redocly's recommended rules.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/declare.h"
#include "api/engine.h"
#include "auth/guard.h"
#include "auth/password.h"
#include "aws/s3.h"
#include "core/egress.h"
#include "mail/mail.h"
#include "webhooks/webhooks.h"

extern const char kiln__operations_json[];
extern const size_t kiln__operations_json_len;
extern const char kiln__docs_html[];
extern const size_t kiln__docs_html_len;

#define UUID_PATTERN "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#define TIME_PATTERN "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{6}Z$"
#define DATE_PATTERN "^\\d{4}-\\d{2}-\\d{2}$"

/* ---- what the hand-written handlers are called in operations.json ---- */

#define HANDLER(fn) { fn, #fn }
static const struct {
    kiln_handler_fn fn;
    const char *name;
} handlers[] = {
    HANDLER(api_root),           HANDLER(api_livez),          HANDLER(api_readyz),
    HANDLER(api_healthz),        HANDLER(api_openapi),        HANDLER(api_docs),
    HANDLER(api_auth_logout),    HANDLER(api_dev_login),      HANDLER(api_auth_request),
    HANDLER(api_auth_callback),  HANDLER(api_me),             HANDLER(api_profile),
    HANDLER(api_sessions_list),  HANDLER(api_sessions_delete), HANDLER(api_sessions_delete_others),
    HANDLER(api_dashboard),      HANDLER(api_uploads_list),   HANDLER(api_uploads_presign),
    HANDLER(api_uploads_types),  HANDLER(api_uploads_show),   HANDLER(api_uploads_delete),
    HANDLER(api_uploads_download), HANDLER(api_events_stream), HANDLER(api_audit_list),
    HANDLER(api_webhooks_create), HANDLER(api_webhooks_list),  HANDLER(api_webhooks_show),
    HANDLER(api_webhooks_update), HANDLER(api_webhooks_delete), HANDLER(api_webhooks_rotate),
    HANDLER(api_webhooks_test),  HANDLER(api_webhooks_deliveries), HANDLER(api_webhooks_retry),
    HANDLER(api_password_register), HANDLER(api_password_login), HANDLER(api_password_verify),
    HANDLER(api_password_change), HANDLER(api_email_code), HANDLER(api_email_verify),
    HANDLER(api_password_reset), HANDLER(api_password_reset_confirm),
    HANDLER(api_totp_show), HANDLER(api_totp_enrol), HANDLER(api_totp_confirm),
    HANDLER(api_totp_disable), HANDLER(api_mfa_verify), HANDLER(api_passkeys_options),
    HANDLER(api_passkeys_create), HANDLER(api_passkeys_list), HANDLER(api_passkeys_delete),
    HANDLER(api_passkey_login_options), HANDLER(api_passkey_login),
};
#undef HANDLER

/*
 * Bounds the hand-written handlers enforce, from the constants they use,
 * written into operations.json at `at`: '/'-separated keys, where a
 * segment in an array picks the element whose "name" it is (a parameter).
 */
static const struct {
    const char *at, *keyword;
    long long value;
} bounds[] = {
    { "operations/api_dashboard/get/parameters/recent_limit/schema", "minimum", 1 },
    { "operations/api_dashboard/get/parameters/recent_limit/schema", "maximum",
      API_DASHBOARD_RECENT_MAX },
    { "operations/api_dashboard/get/parameters/recent_limit/schema", "default",
      API_DASHBOARD_RECENT_DEFAULT },
    { "operations/api_uploads_list/get/parameters/limit/schema", "minimum", 1 },
    { "operations/api_uploads_list/get/parameters/limit/schema", "maximum", KILN_S3_LIST_MAX },
    { "operations/api_uploads_list/get/parameters/limit/schema", "default",
      API_UPLOADS_LIST_DEFAULT },
    { "operations/api_audit_list/get/parameters/limit/schema", "minimum", 1 },
    { "operations/api_audit_list/get/parameters/limit/schema", "maximum", API_AUDIT_PAGE_MAX },
    { "operations/api_audit_list/get/parameters/limit/schema", "default",
      API_AUDIT_PAGE_DEFAULT },
    { "operations/api_audit_list/get/parameters/offset/schema", "maximum",
      API_AUDIT_OFFSET_MAX },
    { "schemas/UploadPresignInput/properties/filename", "minLength", 1 },
    { "schemas/UploadPresignInput/properties/filename", "maxLength", API_UPLOADS_FILENAME_MAX },
    { "schemas/SessionList/properties/data", "maxItems", KILN_SESSION_LIST_MAX },
    { "schemas/Session/properties/user_agent", "maxLength", KILN_SESSION_USER_AGENT_MAX },
    { "operations/api_webhooks_deliveries/get/parameters/limit/schema", "minimum", 1 },
    { "operations/api_webhooks_deliveries/get/parameters/limit/schema", "maximum",
      API_WEBHOOK_DELIVERIES_MAX },
    { "operations/api_webhooks_deliveries/get/parameters/limit/schema", "default",
      API_WEBHOOK_DELIVERIES_DEFAULT },
    { "schemas/WebhookUrl", "minLength", 1 },
    { "schemas/WebhookUrl", "maxLength", KILN_EGRESS_MAX_URL },
    { "schemas/WebhookEventPatterns", "minItems", 1 },
    { "schemas/WebhookEventPatterns", "maxItems", KILN_WEBHOOK_MAX_PATTERNS },
    { "schemas/WebhookDescription", "maxLength", KILN_WEBHOOK_MAX_DESCRIPTION },
    { "schemas/WebhookList/properties/data", "maxItems", KILN_WEBHOOKS_PER_USER },
    { "schemas/AccountEmail", "maxLength", KILN_MAIL_ADDRESS_MAX },
    { "schemas/AccountName", "maxLength", API_ACCOUNT_NAME_MAX },
    { "schemas/NewPassword", "minLength", KILN_PASSWORD_MIN_FLOOR },
    { "schemas/NewPassword", "maxLength", KILN_PASSWORD_MAX_CHARS },
    { "schemas/EmailCode", "maxLength", API_EMAIL_CODE_MAX },
    { "schemas/PasskeyName", "maxLength", API_PASSKEY_NAME_MAX },
};

/* ---- the answers of the server and the guard ---- */

enum applies {
    EVERY,          /* the server's, before or around any handler */
    RATE_LIMITED,   /* routes with a guard (both count requests) */
    SESSION,        /* kiln_guard_session */
    SESSION_WRITE,  /* kiln_guard_session, POST/PUT/PATCH/DELETE: the CSRF check */
};

static const struct shared {
    const char *status, *name, *code;
    enum applies applies;
    const char *description;
    /* appended when the operation describes the same status itself */
    const char *also;
} shared[] = {
    { "400", "BadRequest", "invalid_request", EVERY,
      "`invalid_request`: the request is malformed (a path or query that is not valid "
      "percent-encoding, an encoded `/` in a path segment, an invalid header).",
      "Or `invalid_request`: the request is malformed (path or query encoding, headers)." },
    { "401", "AuthenticationRequired", "authentication_required", SESSION,
      "No valid session (`authentication_required`): no `_backend_session` cookie or Bearer "
      "token, or one that names no live session.",
      NULL },
    { "403", "OriginForbidden", "forbidden", SESSION_WRITE,
      "A cookie-authenticated write from an `Origin` that is neither PUBLIC_URL nor in "
      "ALLOWED_ORIGINS (`forbidden`).",
      "Or a cookie-authenticated write from an `Origin` that is not allowed." },
    { "408", "RequestTimeout", "request_timeout", EVERY,
      "The headers or the body arrived too slowly (`request_timeout`: HEADER_TIMEOUT_SECONDS, "
      "BODY_TIMEOUT_SECONDS); the connection closes.",
      NULL },
    { "413", "PayloadTooLarge", "payload_too_large", EVERY,
      "The body is larger than MAX_REQUEST_BODY_BYTES (`payload_too_large`): a larger "
      "`Content-Length` is answered before the body is read, a chunked body when it crosses "
      "the limit; the connection closes.",
      NULL },
    { "415", "UnsupportedMediaType", "unsupported_media_type", SESSION_WRITE,
      "A cookie-authenticated write with a body, or a declared type, that is not "
      "`application/json` (`unsupported_media_type`).",
      NULL },
    { "429", "RateLimited", "rate_limit_exceeded", RATE_LIMITED,
      "Rate limit exceeded (`rate_limit_exceeded`, `details`: the limit and its window); "
      "retry after `retry-after` seconds.",
      NULL },
    { "431", "RequestHeaderFieldsTooLarge", "request_header_fields_too_large", EVERY,
      "The request line or headers are too large (`request_header_fields_too_large`); the "
      "connection closes.",
      NULL },
    { "500", "InternalError", "internal_error", EVERY,
      "A bug (`internal_error`): never a stack or SQL text; the log says what failed.", NULL },
    { "503", "ServiceUnavailable", "service_unavailable", EVERY,
      "A store or service the operation needs is unreachable, or the server is at capacity "
      "(`service_unavailable`); retry after `retry-after` seconds.",
      "Or, as for every operation, a store is unreachable or the server is at capacity." },
};

/* ---- the generator ---- */

struct gen {
    json_t *ops;        /* operations.json, bounds applied */
    json_t *used;       /* "handler method" of every operation a route used */
    json_t *ids;        /* operationIds given so far */
    char problem[512];  /* the first thing found wrong */
};

static void problem(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct gen *g, const char *fmt, ...)
{
    if (g->problem[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->problem, sizeof g->problem, fmt, ap);
    va_end(ap);
}

static char *capitalized(const char *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s", s);
    out[0] = (char)toupper((unsigned char)out[0]);
    return out;
}

/* "#/components/<kind>/<name>" as {"$ref": ...} */
static json_t *ref(const char *kind, const char *name)
{
    char s[256];
    snprintf(s, sizeof s, "#/components/%s/%s", kind, name);
    return json_pack("{s:s}", "$ref", s);
}

static json_t *json_content(json_t *schema)
{
    return json_pack("{s:{s:o}}", "application/json", "schema", schema);
}

/* {"data": schema} */
static json_t *data_of(json_t *schema)
{
    return json_pack("{s:s, s:[s], s:b, s:{s:o}}", "type", "object", "required", "data",
                     "additionalProperties", 0, "properties", "data", schema);
}

/* The error envelope with its code one of codes (a JSON array). */
static json_t *error_schema(json_t *codes, const char *status)
{
    json_t *props = json_object();
    json_object_set_new(props, "code",
                        json_array_size(codes) == 1
                            ? json_pack("{s:O}", "const", json_array_get(codes, 0))
                            : json_pack("{s:O}", "enum", codes));
    if (!strcmp(status, "422"))
        json_object_set_new(props, "details",
                            json_pack("{s:s, s:s, s:{s:s, s:{s:s}}}", "description",
                                      "The messages of each field that failed.", "type",
                                      "object", "additionalProperties", "type", "array",
                                      "items", "type", "string"));
    if (!strcmp(status, "429"))
        json_object_set_new(props, "details",
                            json_pack("{s:s, s:[s,s], s:{s:{s:s}, s:{s:s}}}", "type", "object",
                                      "required", "limit", "window_seconds", "properties",
                                      "limit", "type", "integer", "window_seconds", "type",
                                      "integer"));
    return json_pack("{s:[o, {s:o}]}", "allOf", ref("schemas", "Error"), "properties", props);
}

/* An error response in the generator's own form, which finish() expands:
 * a description and the codes it carries. */
static json_t *error_response(const char *description, const char *code, ...)
{
    json_t *codes = json_array();
    va_list ap;
    va_start(ap, code);
    for (const char *c = code; c; c = va_arg(ap, const char *))
        json_array_append_new(codes, json_string(c));
    va_end(ap);
    return json_pack("{s:s, s:o}", "description", description, "x-codes", codes);
}

static bool is_write(enum kiln_method m)
{
    return (m & (KILN_POST | KILN_PUT | KILN_PATCH | KILN_DELETE)) != 0;
}

static bool applies(const struct shared *s, const struct kiln_route *rt)
{
    switch (s->applies) {
    case EVERY: return true;
    case RATE_LIMITED: return rt->guard != NULL;
    case SESSION: return rt->guard == kiln_guard_session;
    case SESSION_WRITE: return rt->guard == kiln_guard_session && is_write(rt->method);
    }
    return false;
}

static json_t *header_refs(const char *status, bool rate_limited)
{
    json_t *h = json_object();
    if (rate_limited) {
        json_object_set_new(h, "x-ratelimit-limit", ref("headers", "RateLimitLimit"));
        json_object_set_new(h, "x-ratelimit-remaining", ref("headers", "RateLimitRemaining"));
        json_object_set_new(h, "x-ratelimit-reset", ref("headers", "RateLimitReset"));
    }
    if (!strcmp(status, "429") || !strcmp(status, "503"))
        json_object_set_new(h, "retry-after", ref("headers", "RetryAfter"));
    return h;
}

/* Expand one response of the generator's form (x-codes) into OpenAPI's,
 * and add the headers its status carries. */
static void finish_response(json_t *r, const char *status, bool rate_limited)
{
    json_t *codes = json_object_get(r, "x-codes");
    if (codes) {
        json_object_set_new(r, "content", json_content(error_schema(codes, status)));
        json_object_del(r, "x-codes");
    }
    if (json_object_get(r, "$ref"))
        return;
    /* Success and redirects carry the rate-limit headers on a guarded
     * route; errors answered before the counter ran do not, except 429. */
    json_t *h = header_refs(status, rate_limited && (status[0] < '4' || !strcmp(status, "429")));
    if (json_object_size(h)) {
        json_t *have = json_object_get(r, "headers");
        if (have)
            json_object_update_missing(have, h);
        else
            json_object_set(r, "headers", h);
    }
    json_decref(h);
}

/* Add the shared answers that apply to route rt to responses (a status the
 * operation describes itself keeps its words, the shared code and its
 * sentence added), expand them, and order them by status. */
static json_t *finish_responses(json_t *responses, const struct kiln_route *rt)
{
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        const struct shared *s = &shared[i];
        if (!applies(s, rt))
            continue;
        json_t *own = json_object_get(responses, s->status);
        if (!own) {
            json_object_set_new(responses, s->status, ref("responses", s->name));
            continue;
        }
        json_t *codes = json_object_get(own, "x-codes");
        if (!codes)
            continue; /* a schema of its own (health's 503), which says it */
        bool known = false;
        for (size_t c = 0; c < json_array_size(codes); c++)
            known |= !strcmp(json_string_value(json_array_get(codes, c)), s->code);
        if (!known)
            json_array_append_new(codes, json_string(s->code));
        if (s->also) {
            char *d = NULL;
            if (asprintf(&d, "%s %s", json_string_value(json_object_get(own, "description")),
                         s->also) > 0) {
                json_object_set_new(own, "description", json_string(d));
                free(d);
            }
        }
    }
    /* Ordered by status: the keys are three digits. */
    const char *keys[64];
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(responses, k, v) if (n < sizeof keys / sizeof keys[0]) keys[n++] = k;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    json_t *out = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_object_get(responses, keys[i]);
        finish_response(r, keys[i], rt->guard != NULL);
        json_object_set(out, keys[i], r);
    }
    json_decref(responses);
    return out;
}

static json_t *path_parameter(const char *name, json_t *schema, const char *description)
{
    json_t *p = json_pack("{s:s, s:s, s:b, s:o}", "name", name, "in", "path", "required", 1,
                          "schema", schema);
    if (description)
        json_object_set_new(p, "description", json_string(description));
    return p;
}

/* "/notes/:id" in scope API -> "/api/v1/notes/{id}" */
static void doc_path(const struct kiln_route *rt, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "%s", rt->scope == KILN_SCOPE_API ? "/api/v1" : "");
    for (const char *p = rt->path; *p && o + 2 < cap; p++) {
        if ((*p == ':' || *p == '*') && (p == rt->path || p[-1] == '/')) {
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

/* ---- schemas of a declaration ---- */

/* A field's default (declared as SQL text) as JSON. */
static json_t *default_value(const struct kiln_field *f)
{
    if (!f->def)
        return NULL;
    switch (f->type) {
    case KILN_BOOLEAN: return json_boolean(!strcmp(f->def, "1"));
    case KILN_INTEGER: return json_integer(strtoll(f->def, NULL, 10));
    case KILN_JSON: return json_loads(f->def, JSON_DECODE_ANY, NULL);
    default: return json_string(f->def);
    }
}

/* The schema of a field as shown (input false) or as taken in a body. */
static json_t *field_schema(const struct kiln_field *f, bool input, bool create)
{
    json_t *s = json_object();
    bool nullable = (f->flags & KILN_NULLABLE) || (input && (f->flags & KILN_NULL_IS_DEFAULT));
    const char *type = NULL, *format = NULL, *pattern = NULL;
    switch (f->type) {
    case KILN_TEXT: type = "string"; break;
    case KILN_ENUM: type = "string"; break;
    case KILN_INTEGER: type = "integer"; format = "int64"; break;
    case KILN_BOOLEAN: type = "boolean"; break;
    case KILN_DATE: type = "string"; format = "date"; pattern = input ? NULL : DATE_PATTERN; break;
    case KILN_TIMESTAMP:
        type = "string";
        format = "date-time";
        pattern = input ? NULL : TIME_PATTERN;
        break;
    case KILN_UUID:
    case KILN_REFERENCE:
        /* taken in any case, stored and shown lower-cased */
        type = "string";
        format = "uuid";
        pattern = input ? NULL : UUID_PATTERN;
        break;
    case KILN_JSON: break; /* any JSON value: no type */
    }
    if (type)
        json_object_set_new(s, "type", nullable ? json_pack("[s,s]", type, "null")
                                                : json_string(type));
    if (format)
        json_object_set_new(s, "format", json_string(format));
    if (pattern)
        json_object_set_new(s, "pattern", json_string(pattern));
    if (f->type == KILN_ENUM) {
        json_t *e = json_array();
        for (const char *const *v = f->values; v && *v; v++)
            json_array_append_new(e, json_string(*v));
        if (nullable)
            json_array_append_new(e, json_null());
        json_object_set_new(s, "enum", e);
    }
    if (f->type == KILN_TEXT) {
        if (f->min_len)
            json_object_set_new(s, "minLength", json_integer((json_int_t)f->min_len));
        if (f->max_len)
            json_object_set_new(s, "maxLength", json_integer((json_int_t)f->max_len));
    }
    if (f->type == KILN_INTEGER && (f->flags & KILN_BOUNDED)) {
        json_object_set_new(s, "minimum", json_integer(f->min));
        json_object_set_new(s, "maximum", json_integer(f->max));
    }
    if (!input && (f->flags & KILN_READ_ONLY))
        json_object_set_new(s, "readOnly", json_true());
    if (input && create) {
        json_t *d = default_value(f);
        if (d)
            json_object_set_new(s, "default", d);
    }
    if (f->doc)
        json_object_set_new(s, "description", json_string(f->doc));
    return s;
}

static json_t *standard_column(const char *format, const char *pattern, const char *doc)
{
    return json_pack("{s:s, s:s, s:s, s:b, s:s}", "type", "string", "format", format, "pattern",
                     pattern, "readOnly", 1, "description", doc);
}

/* The row as shown: id, the fields in order, the timestamps. */
static json_t *resource_schema(const struct kiln_resource *r)
{
    json_t *props = json_object(), *req = json_array();
    json_object_set_new(props, "id", standard_column("uuid", UUID_PATTERN, "Made by Kiln."));
    json_array_append_new(req, json_string("id"));
    for (size_t f = 0; f < r->nfields; f++) {
        json_object_set_new(props, r->fields[f].name, field_schema(&r->fields[f], false, false));
        json_array_append_new(req, json_string(r->fields[f].name));
    }
    json_object_set_new(props, "inserted_at",
                        standard_column("date-time", TIME_PATTERN, "When it was created (UTC)."));
    json_object_set_new(props, "updated_at",
                        standard_column("date-time", TIME_PATTERN,
                                        "When it was last written (UTC)."));
    json_array_append_new(req, json_string("inserted_at"));
    json_array_append_new(req, json_string("updated_at"));
    return json_pack("{s:s, s:o, s:b, s:o}", "type", "object", "required", req,
                     "additionalProperties", 0, "properties", props);
}

/* A body of a create (required: the REQUIRED fields) or an update. Other
 * members are ignored, so additional properties are allowed. */
static json_t *input_schema(const struct kiln_resource *r, bool create)
{
    json_t *props = json_object(), *req = json_array();
    for (size_t f = 0; f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        if (fd->flags & KILN_READ_ONLY)
            continue;
        json_object_set_new(props, fd->name, field_schema(fd, true, create));
        if (create && (fd->flags & KILN_REQUIRED))
            json_array_append_new(req, json_string(fd->name));
    }
    json_t *s = json_pack("{s:s}", "type", "object");
    if (json_array_size(req))
        json_object_set_new(s, "required", req);
    else
        json_decref(req);
    json_object_set_new(s, "properties", props);
    if (!create)
        json_object_set_new(s, "description",
                            json_string("A partial update: only the members given are written "
                                        "(PUT and PATCH alike)."));
    return s;
}

static json_t *list_schema(const struct kiln_resource *r, const char *item)
{
    json_t *s = json_pack("{s:s, s:[s], s:b, s:{s:{s:s, s:o}}}", "type", "object", "required",
                          "data", "additionalProperties", 0, "properties", "data", "type",
                          "array", "items", ref("schemas", item));
    if (!r->page_max)
        return s;
    json_array_append_new(json_object_get(s, "required"), json_string("meta"));
    json_object_set_new(
        json_object_get(s, "properties"), "meta",
        json_pack("{s:s, s:[s,s,s,s], s:b, s:{s:{s:s, s:i, s:i, s:s}, s:{s:s, s:i, s:s},"
                  " s:{s:s, s:i, s:i}, s:{s:s, s:i, s:I}}}",
                  "type", "object", "required", "count", "total", "limit", "offset",
                  "additionalProperties", 0, "properties", "count", "type", "integer",
                  "minimum", 0, "maximum", (int)r->page_max, "description",
                  "Rows in this page.", "total", "type", "integer", "minimum", 0, "description",
                  "Rows that match, on every page.", "limit", "type", "integer", "minimum", 1,
                  "maximum", (int)r->page_max, "offset", "type", "integer", "minimum", 0,
                  "maximum", (json_int_t)KILN_ENGINE_OFFSET_MAX));
    return s;
}

/* Schema names of a resource: "Note", "NoteCreate", ... */
struct names {
    char one[64], create[80], update[80], list[80], show[160];
};

static void names_of(const struct kiln_resource *r, struct names *n)
{
    capitalized(r->singular, n->one, sizeof n->one);
    snprintf(n->create, sizeof n->create, "%sCreate", n->one);
    snprintf(n->update, sizeof n->update, "%sUpdate", n->one);
    snprintf(n->list, sizeof n->list, "%sList", n->one);
    if (r->show_extra_name) {
        char extra[64];
        snprintf(n->show, sizeof n->show, "%sWith%s", n->one,
                 capitalized(r->show_extra_name, extra, sizeof extra));
    } else {
        snprintf(n->show, sizeof n->show, "%s", n->one);
    }
}

static void resource_schemas(struct gen *g, json_t *schemas, const struct kiln_resource *r)
{
    struct names n;
    names_of(r, &n);
    json_object_set_new(schemas, n.one, resource_schema(r));
    if (r->show_extra_name) {
        const struct kiln_resource *of = kiln_resource_find(r->show_extra_of);
        if (!of) {
            problem(g, "resource %s: show_extra_of \"%s\" is not declared", r->name,
                    r->show_extra_of ? r->show_extra_of : "");
        } else {
            struct names on;
            names_of(of, &on);
            json_t *s = resource_schema(r);
            json_array_append_new(json_object_get(s, "required"),
                                  json_string(r->show_extra_name));
            json_object_set_new(json_object_get(s, "properties"), r->show_extra_name,
                                json_pack("{s:s, s:o}", "type", "array", "items",
                                          ref("schemas", on.one)));
            json_object_set_new(schemas, n.show, s);
        }
    }
    json_object_set_new(schemas, n.create, input_schema(r, true));
    json_object_set_new(schemas, n.update, input_schema(r, false));
    json_object_set_new(schemas, n.list, list_schema(r, n.one));
}

/* ---- operations of a declaration ---- */

static json_t *filter_parameter(const struct kiln_field *f)
{
    json_t *s = json_object();
    switch (f->type) {
    case KILN_BOOLEAN: json_object_set_new(s, "type", json_string("boolean")); break;
    case KILN_INTEGER: json_object_set_new(s, "type", json_string("integer")); break;
    case KILN_UUID:
    case KILN_REFERENCE:
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format", json_string("uuid"));
        break;
    case KILN_DATE:
    case KILN_TIMESTAMP:
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format",
                            json_string(f->type == KILN_DATE ? "date" : "date-time"));
        break;
    case KILN_ENUM: {
        json_t *e = json_array();
        for (const char *const *v = f->values; v && *v; v++)
            json_array_append_new(e, json_string(*v));
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "enum", e);
        break;
    }
    default: json_object_set_new(s, "type", json_string("string")); break;
    }
    if (f->filter_def) {
        json_t *d = f->type == KILN_BOOLEAN ? json_boolean(!strcmp(f->filter_def, "true"))
                                            : json_string(f->filter_def);
        json_object_set_new(s, "default", d);
    }
    char doc[256];
    snprintf(doc, sizeof doc, "Only rows whose `%s` is this (exact match)%s.", f->name,
             f->filter_def ? "; absent or empty: the default" : "; absent or empty: any");
    return json_pack("{s:s, s:s, s:o, s:s}", "name", f->name, "in", "query", "schema", s,
                     "description", doc);
}

static json_t *list_parameters(const struct kiln_resource *r)
{
    json_t *ps = json_array();
    kiln_buf search;
    kiln_buf_init(&search, 1 << 16);
    for (size_t f = 0; f < r->nfields; f++) {
        if (r->fields[f].flags & KILN_FILTER)
            json_array_append_new(ps, filter_parameter(&r->fields[f]));
        if (r->fields[f].flags & KILN_SEARCH)
            kiln_buf_printf(&search, "%s`%s`", search.len ? " or " : "", r->fields[f].name);
    }
    if (search.len) {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "Rows whose %.*s holds this text, case-blind (`%%` and `_` are plain "
                 "characters).",
                 (int)search.len, search.p);
        json_array_append_new(ps, json_pack("{s:s, s:s, s:{s:s, s:I}, s:s}", "name", "search",
                                            "in", "query", "schema", "type", "string",
                                            "maxLength", (json_int_t)r->search_max,
                                            "description", doc));
    }
    kiln_buf_free(&search);

    json_t *sorts = json_array();
    for (size_t f = 0; f < r->nfields; f++)
        if (r->fields[f].flags & KILN_SORT) {
            char minus[80];
            snprintf(minus, sizeof minus, "-%s", r->fields[f].name);
            json_array_append_new(sorts, json_string(r->fields[f].name));
            json_array_append_new(sorts, json_string(minus));
        }
    static const char *const stamps[] = { "inserted_at", "-inserted_at", "updated_at",
                                          "-updated_at" };
    for (size_t i = 0; i < 4; i++)
        json_array_append_new(sorts, json_string(stamps[i]));
    /* The declared order as a sort value, when it is one. */
    const char *order = r->order ? r->order : "inserted_at DESC";
    char col[80], def[96];
    snprintf(col, sizeof col, "%.*s", (int)strcspn(order, " "), order);
    snprintf(def, sizeof def, "%s%s", strstr(order, " DESC") ? "-" : "", col);
    json_t *sort = json_pack("{s:s, s:o}", "type", "string", "enum", sorts);
    bool listed = false;
    for (size_t i = 0; i < json_array_size(sorts); i++)
        listed |= !strcmp(json_string_value(json_array_get(sorts, i)), def);
    if (listed)
        json_object_set_new(sort, "default", json_string(def));
    json_array_append_new(ps, json_pack("{s:s, s:s, s:o, s:s}", "name", "sort", "in", "query",
                                        "schema", sort, "description",
                                        "The order: a field, descending when it starts with "
                                        "`-`; the id breaks ties."));
    if (r->page_max) {
        json_array_append_new(
            ps, json_pack("{s:s, s:s, s:{s:s, s:i, s:i, s:i}, s:s}", "name", "limit", "in",
                          "query", "schema", "type", "integer", "minimum", 1, "maximum",
                          (int)r->page_max, "default", (int)r->page_default, "description",
                          "Rows per page; a larger number is capped to the maximum."));
        json_array_append_new(
            ps, json_pack("{s:s, s:s, s:{s:s, s:i, s:I, s:i}, s:s}", "name", "offset", "in",
                          "query", "schema", "type", "integer", "minimum", 0, "maximum",
                          (json_int_t)KILN_ENGINE_OFFSET_MAX, "default", 0, "description",
                          "Rows to skip; a larger number is capped to the maximum."));
    }
    return ps;
}

static json_t *id_parameter(const struct kiln_resource *r)
{
    char doc[256];
    snprintf(doc, sizeof doc,
             "The %s's id. One that is no UUID, or names another user's %s, answers as a "
             "missing one: 404 `%s`.",
             r->singular, r->singular, r->not_found_code);
    return path_parameter("id", json_pack("{s:s, s:s}", "type", "string", "format", "uuid"),
                          doc);
}

/* 404 for the row in the path and, when refs, for the rows the body's
 * references name. */
static json_t *not_found_response(const struct kiln_resource *r, bool row, bool refs)
{
    kiln_buf d;
    kiln_buf_init(&d, 1 << 16);
    json_t *codes = json_array();
    if (row) {
        kiln_buf_printf(&d, "`%s`: no %s of the user's has this id.", r->not_found_code,
                        r->singular);
        json_array_append_new(codes, json_string(r->not_found_code));
    }
    for (size_t f = 0; refs && f < r->nfields; f++) {
        const struct kiln_resource *to = r->fields[f].type == KILN_REFERENCE
                                             ? kiln_resource_find(r->fields[f].ref)
                                             : NULL;
        if (!to)
            continue;
        kiln_buf_printf(&d, "%s`%s`: `%s` names no %s of the user's.", d.len ? " " : "",
                        to->not_found_code, r->fields[f].name, to->singular);
        bool known = false;
        for (size_t c = 0; c < json_array_size(codes); c++)
            known |= !strcmp(json_string_value(json_array_get(codes, c)), to->not_found_code);
        if (!known)
            json_array_append_new(codes, json_string(to->not_found_code));
    }
    json_t *out = NULL;
    if (json_array_size(codes))
        out = json_pack("{s:s#, s:O}", "description", d.p, (int)d.len, "x-codes", codes);
    json_decref(codes);
    kiln_buf_free(&d);
    return out;
}

static json_t *body_bad_request(const struct kiln_resource *r, bool create)
{
    kiln_buf d;
    kiln_buf_init(&d, 1 << 16);
    kiln_buf_append_c(&d, "`invalid_json`: the body is not JSON. `invalid_request`: it is not "
                          "a JSON object");
    for (size_t f = 0; create && f < r->nfields; f++)
        if (r->fields[f].type == KILN_REFERENCE && (r->fields[f].flags & KILN_REQUIRED))
            kiln_buf_printf(&d, ", or `%s` is missing or null", r->fields[f].name);
    kiln_buf_append_c(&d, ".");
    json_t *out = json_pack("{s:s#, s:[s,s]}", "description", d.p, (int)d.len, "x-codes",
                            "invalid_json", "invalid_request");
    kiln_buf_free(&d);
    return out;
}

static bool has_required(const struct kiln_resource *r)
{
    for (size_t f = 0; f < r->nfields; f++)
        if (r->fields[f].flags & KILN_REQUIRED)
            return true;
    return false;
}

static json_t *success(const char *description, json_t *schema)
{
    return json_pack("{s:s, s:o}", "description", description, "content", json_content(schema));
}

static const struct kiln_action *route_action(const struct kiln_route *rt,
                                              const struct kiln_resource *r)
{
    const char *slash = strrchr(rt->path, '/');
    for (size_t i = 0; slash && i < r->nactions; i++)
        if (!strcmp(r->actions[i].name, slash + 1))
            return &r->actions[i];
    return NULL;
}

static json_t *engine_operation(struct gen *g, const struct kiln_route *rt,
                                const struct kiln_resource *r)
{
    struct names n;
    names_of(r, &n);
    char id[160], summary[256], plural[64];
    capitalized(r->name, plural, sizeof plural);
    json_t *op = json_object(), *params = json_array(), *resp = json_object();
    json_t *body = NULL, *description = NULL;
    const char *a = strchr("aeiou", r->singular[0]) ? "an" : "a";
    kiln_handler_fn h = rt->handler;
    if (h == kiln_engine_list) {
        snprintf(id, sizeof id, "list%s", plural);
        snprintf(summary, sizeof summary, "List the user's %s", r->name);
        json_decref(params);
        params = list_parameters(r);
        json_object_set_new(resp, "200", success(r->page_max ? "One page." : "The whole list.",
                                                 ref("schemas", n.list)));
        json_object_set_new(resp, "400",
                            error_response("`invalid_request`: a query parameter is "
                                           "malformed (a filter or `sort` value its schema "
                                           "does not list, a `search` longer than its "
                                           "maxLength or not UTF-8, a `limit` or `offset` "
                                           "that is no number or below its minimum; a larger "
                                           "one is capped).",
                                           "invalid_request", NULL));
    } else if (h == kiln_engine_create) {
        snprintf(id, sizeof id, "create%s", n.one);
        snprintf(summary, sizeof summary, "Create %s %s", a, r->singular);
        body = json_pack("{s:b, s:o}", "required", has_required(r), "content",
                         json_content(ref("schemas", n.create)));
        json_object_set_new(resp, "201", success("Created.", data_of(ref("schemas", n.one))));
        json_object_set_new(resp, "400", body_bad_request(r, true));
        json_t *nf = not_found_response(r, false, true);
        if (nf)
            json_object_set_new(resp, "404", nf);
        json_object_set_new(resp, "422",
                            error_response("`validation_failed`, with `details` per field.",
                                           "validation_failed", NULL));
    } else if (h == kiln_engine_show) {
        snprintf(id, sizeof id, "show%s", n.one);
        snprintf(summary, sizeof summary, "Show %s %s", a, r->singular);
        json_array_append_new(params, id_parameter(r));
        json_object_set_new(resp, "200", success("Found.", data_of(ref("schemas", n.show))));
        json_object_set_new(resp, "404", not_found_response(r, true, false));
    } else if (h == kiln_engine_update) {
        bool put = rt->method == KILN_PUT;
        snprintf(id, sizeof id, "%s%s", put ? "update" : "patch", n.one);
        snprintf(summary, sizeof summary, "Update %s %s (partial, %s)", a, r->singular,
                 put ? "as PATCH" : "as PUT");
        json_array_append_new(params, id_parameter(r));
        body = json_pack("{s:b, s:o}", "required", 0, "content",
                         json_content(ref("schemas", n.update)));
        json_object_set_new(resp, "200", success("Updated.", data_of(ref("schemas", n.one))));
        json_object_set_new(resp, "400", body_bad_request(r, false));
        json_object_set_new(resp, "404", not_found_response(r, true, true));
        json_object_set_new(resp, "422",
                            error_response("`validation_failed`, with `details` per field.",
                                           "validation_failed", NULL));
    } else if (h == kiln_engine_delete) {
        snprintf(id, sizeof id, "delete%s", n.one);
        snprintf(summary, sizeof summary, "Delete %s %s", a, r->singular);
        json_array_append_new(params, id_parameter(r));
        json_object_set_new(resp, "204", json_pack("{s:s}", "description", "Deleted; no body."));
        json_object_set_new(resp, "404", not_found_response(r, true, false));
        /* What a reference to it takes along (ON DELETE CASCADE, which
         * every reference's migration declares: docs/RESOURCES.md). */
        kiln_buf d;
        kiln_buf_init(&d, 1 << 16);
        for (size_t i = 0; i < kiln_resources_count; i++)
            for (size_t f = 0; f < kiln_resources[i]->nfields; f++) {
                const struct kiln_field *fd = &kiln_resources[i]->fields[f];
                if (fd->type == KILN_REFERENCE && fd->ref && !strcmp(fd->ref, r->name))
                    kiln_buf_printf(&d, "%s%s (`%s.%s`)", d.len ? ", " : "The ",
                                    kiln_resources[i]->name, kiln_resources[i]->name, fd->name);
            }
        if (d.len) {
            kiln_buf_printf(&d, " that reference it are deleted with it, in the same statement.");
            description = json_stringn(d.p, d.len);
        }
        kiln_buf_free(&d);
    } else {
        /* A declared action, or one written in C that answers as the
         * engine does (the row, or its 404). */
        const struct kiln_action *ac = route_action(rt, r);
        if (!ac) {
            problem(g, "%s %s: an engine route of resource %s that is no declared action",
                    kiln_method_name(rt->method), rt->path, r->name);
            json_decref(op);
            json_decref(params);
            json_decref(resp);
            return NULL;
        }
        char act[64];
        snprintf(id, sizeof id, "%s%s", ac->name, n.one);
        snprintf(summary, sizeof summary, "%s", ac->doc ? ac->doc : capitalized(ac->name, act,
                                                                                 sizeof act));
        json_array_append_new(params, id_parameter(r));
        json_object_set_new(resp, "200", success("Done.", data_of(ref("schemas", n.one))));
        json_object_set_new(resp, "404", not_found_response(r, true, false));
    }
    json_object_set_new(op, "operationId", json_string(id));
    json_object_set_new(op, "summary", json_string(summary));
    json_object_set_new(op, "tags", json_pack("[s]", r->name));
    if (h == kiln_engine_list) {
        const char *order = r->order ? r->order : "inserted_at DESC";
        char desc[512];
        snprintf(desc, sizeof desc,
                 "%s Ordered by `%s` unless `sort` says otherwise.%s",
                 r->page_max ? "Paged (`limit`, `offset`); `meta.total` counts every row that "
                               "matches."
                             : "The whole list, as a bare `{\"data\": [...]}`.",
                 order, r->cache ? " Answers are cached for CACHE_TTL_SECONDS; a write is "
                                   "seen by the next read on any instance." : "");
        description = json_string(desc);
    }
    if (description)
        json_object_set_new(op, "description", description);
    if (json_array_size(params))
        json_object_set_new(op, "parameters", params);
    else
        json_decref(params);
    if (body)
        json_object_set_new(op, "requestBody", body);
    json_object_set_new(op, "responses", resp);
    return op;
}

/* ---- operations written by hand ---- */

static const char *handler_name(kiln_handler_fn fn)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        if (handlers[i].fn == fn)
            return handlers[i].name;
    return NULL;
}

/* Does the operation describe path parameter name itself? Then that one
 * stands for it, not the shared one of the same name ("id" is a webhook's
 * UUID in "parameters", and a session's id is no UUID). */
static bool own_path_parameter(json_t *op, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(op, "parameters"), i, p) {
        const char *in = json_string_value(json_object_get(p, "in"));
        const char *pn = json_string_value(json_object_get(p, "name"));
        if (in && pn && strcmp(in, "path") == 0 && strcmp(pn, name) == 0)
            return true;
    }
    return false;
}

static json_t *hand_operation(struct gen *g, const struct kiln_route *rt, const char *method)
{
    const char *name = handler_name(rt->handler);
    if (!name) {
        problem(g, "%s %s: its handler is not in openapi.c's handlers[]",
                kiln_method_name(rt->method), rt->path);
        return NULL;
    }
    json_t *src = json_object_get(json_object_get(json_object_get(g->ops, "operations"), name),
                                  method);
    if (!src) {
        problem(g, "%s %s: app/docs/operations.json has no operations.%s.%s",
                kiln_method_name(rt->method), rt->path, name, method);
        return NULL;
    }
    char used[128];
    snprintf(used, sizeof used, "%s %s", name, method);
    json_object_set_new(g->used, used, json_true());
    json_t *op = json_deep_copy(src);
    /* The same handler on another path (an upload key spelled as the path
     * itself) needs an operationId of its own. */
    json_t *ids = json_object_get(op, "x-operation-ids");
    json_t *other = json_object_get(ids, rt->path);
    if (other)
        json_object_set(op, "operationId", other);
    json_object_del(op, "x-operation-ids");

    /* Path parameters, from the route's path, described in
     * operations.json's "parameters" by name (unless the operation
     * describes one itself); then the operation's own. */
    json_t *params = json_array();
    json_t *known = json_object_get(g->ops, "parameters");
    for (const char *p = rt->path; *p; p++) {
        if ((*p != ':' && *p != '*') || p == rt->path || p[-1] != '/')
            continue;
        char pname[64];
        size_t len = strcspn(p + 1, "/");
        snprintf(pname, sizeof pname, "%.*s", (int)len, p + 1);
        if (own_path_parameter(op, pname))
            continue;
        json_t *d = json_object_get(known, pname);
        if (!d) {
            problem(g, "%s %s: path parameter %s is not in operations.json's parameters",
                    kiln_method_name(rt->method), rt->path, pname);
            continue;
        }
        json_t *schema = json_object_get(d, "schema");
        json_array_append_new(params,
                              path_parameter(pname,
                                             schema ? json_deep_copy(schema)
                                                    : json_pack("{s:s}", "type", "string"),
                                             json_string_value(json_object_get(d,
                                                                               "description"))));
    }
    json_array_extend(params, json_object_get(op, "parameters"));
    if (json_array_size(params))
        json_object_set_new(op, "parameters", params);
    else
        json_decref(params);
    if (!json_object_get(op, "responses"))
        json_object_set_new(op, "responses", json_object());
    return op;
}

/* ---- the document ---- */

/* operations.json's node at `at` (see bounds[]). */
static json_t *walk(json_t *node, const char *at)
{
    char seg[128];
    while (node && *at) {
        size_t n = strcspn(at, "/");
        snprintf(seg, sizeof seg, "%.*s", (int)n, at);
        at += n + (at[n] == '/');
        if (json_is_array(node)) {
            json_t *found = NULL;
            for (size_t i = 0; i < json_array_size(node) && !found; i++) {
                const char *name = json_string_value(json_object_get(json_array_get(node, i),
                                                                     "name"));
                if (name && !strcmp(name, seg))
                    found = json_array_get(node, i);
            }
            node = found;
        } else {
            node = json_object_get(node, seg);
        }
    }
    return node;
}

static json_t *security_of(const struct kiln_route *rt)
{
    if (rt->guard == kiln_guard_session)
        return json_pack("[{s:[]}, {s:[]}]", "session_cookie", "bearer");
    /* Public: said explicitly, so that a reader (and Redocly's
     * security-defined rule) sees it was meant. */
    return json_array();
}

static json_t *components(struct gen *g)
{
    json_t *schemas = json_object();
    json_object_set_new(
        schemas, "Error",
        json_pack("{s:s, s:s, s:[s,s,s,s], s:b, s:{s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s},"
                  " s:{s:s, s:s}, s:{s:s, s:s}}}",
                  "description", "The envelope of every error answer (API.md).", "type",
                  "object", "required", "error", "code", "message", "request_id",
                  "additionalProperties", 0, "properties", "error", "type", "string",
                  "description", "The message (the original's member).", "code", "type",
                  "string", "description", "What went wrong, for programs.", "message", "type",
                  "string", "description", "The message, for people.", "request_id", "type",
                  "string", "description", "The `x-request-id` of the answer.", "details",
                  "type", "object", "description", "Only when there is something to say."));
    for (size_t i = 0; i < kiln_resources_count; i++)
        resource_schemas(g, schemas, kiln_resources[i]);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(g->ops, "schemas"), k, v) {
        if (json_object_get(schemas, k))
            problem(g, "operations.json's schema %s has the name of a generated one", k);
        else
            json_object_set(schemas, k, v);
    }

    json_t *responses = json_object();
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        json_t *r = error_response(shared[i].description, shared[i].code, NULL);
        finish_response(r, shared[i].status, !strcmp(shared[i].status, "429"));
        json_object_set_new(responses, shared[i].name, r);
    }

    json_t *headers = json_pack(
        "{s:{s:s, s:{s:s, s:i}}, s:{s:s, s:{s:s, s:i}}, s:{s:s, s:{s:s}}, s:{s:s, s:{s:s, s:i}}}",
        "RateLimitLimit", "description",
        "Requests allowed in the window (60 s) on this route, for this user or address.",
        "schema", "type", "integer", "minimum", 1, "RateLimitRemaining", "description",
        "Requests left in the window.", "schema", "type", "integer", "minimum", 0,
        "RateLimitReset", "description", "When the window ends (seconds since the epoch).",
        "schema", "type", "integer", "RetryAfter", "description",
        "Seconds to wait before trying again.", "schema", "type", "integer", "minimum", 0);

    json_t *security = json_pack(
        "{s:{s:s, s:s, s:s, s:s}, s:{s:s, s:s, s:s}}", "session_cookie", "type", "apiKey", "in",
        "cookie", "name", "_backend_session", "description",
        "The session cookie that login sets. Cookie-authenticated writes must send "
        "`Content-Type: application/json` (or no body) and an allowed `Origin`, if any.",
        "bearer", "type", "http", "scheme", "bearer", "description",
        "The session cookie's value, for clients that are not browsers.");
    return json_pack("{s:o, s:o, s:o, s:o}", "schemas", schemas, "responses", responses,
                     "headers", headers, "securitySchemes", security);
}

static json_t *build_document(struct gen *g)
{
    json_error_t e;
    g->ops = json_loadb(kiln__operations_json, kiln__operations_json_len, 0, &e);
    g->used = json_object();
    g->ids = json_object();
    if (!g->ops) {
        problem(g, "app/docs/operations.json does not parse: line %d: %s", e.line, e.text);
        g->ops = json_object();
    }
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        json_t *at = walk(g->ops, bounds[i].at);
        if (!json_is_object(at))
            problem(g, "openapi.c bounds[]: operations.json has no %s", bounds[i].at);
        else
            json_object_set_new(at, bounds[i].keyword, json_integer(bounds[i].value));
    }

    json_t *doc = json_object();
    json_object_set_new(doc, "openapi", json_string("3.1.0"));
    json_object_set_new(
        doc, "info",
        json_pack("{s:s, s:s, s:s}", "title", "Kiln API", "version", "1", "description",
                  "Every path under /api/v1 is also served under /api (the original's alias), "
                  "with the same behaviour. Errors share one envelope (Error). Protected "
                  "routes need the `_backend_session` cookie or the same value as a Bearer "
                  "token; cookie-authenticated writes must send `Content-Type: "
                  "application/json`, and an `Origin`, if any, must be allowed. Rate-limited "
                  "responses carry x-ratelimit-limit, x-ratelimit-remaining and "
                  "x-ratelimit-reset. HEAD is answered wherever GET is. A path that exists "
                  "asked with a method it has no operation for answers 405 "
                  "`method_not_allowed` with an `allow` header; a path that does not exist, "
                  "404 `not_found`."));
    json_object_set_new(doc, "servers",
                        json_pack("[{s:s, s:s}]", "url", "/", "description",
                                  "The server that serves this document."));

    json_t *tags = json_deep_copy(json_object_get(g->ops, "tags"));
    if (!json_is_array(tags)) {
        json_decref(tags);
        tags = json_array();
    }
    for (size_t i = 0; i < kiln_resources_count; i++)
        json_array_append_new(tags, json_pack("{s:s, s:s}", "name", kiln_resources[i]->name,
                                              "description",
                                              kiln_resources[i]->doc ? kiln_resources[i]->doc
                                                                     : kiln_resources[i]->name));
    json_object_set_new(doc, "tags", tags);

    json_t *paths = json_object();
    size_t nroutes;
    const struct kiln_route *routes = api_routes(&nroutes);
    for (size_t i = 0; i < nroutes; i++) {
        const struct kiln_route *rt = &routes[i];
        if (rt->flags & KILN_ROUTE_INTERNAL)
            continue;
        char path[512], method[16];
        doc_path(rt, path, sizeof path);
        snprintf(method, sizeof method, "%s", kiln_method_name(rt->method));
        for (char *c = method; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        const struct kiln_resource *r = NULL;
        for (size_t j = 0; rt->data && j < kiln_resources_count; j++)
            if (rt->data == kiln_resources[j])
                r = kiln_resources[j];
        json_t *op = r ? engine_operation(g, rt, r) : hand_operation(g, rt, method);
        if (!op)
            continue;
        const char *id = json_string_value(json_object_get(op, "operationId"));
        if (!id)
            problem(g, "%s %s has no operationId", method, path);
        else if (json_object_get(g->ids, id))
            problem(g, "operationId %s is given twice (%s %s)", id, method, path);
        else
            json_object_set_new(g->ids, id, json_true());
        json_object_set_new(op, "security", security_of(rt));
        json_object_set_new(op, "responses",
                            finish_responses(json_incref(json_object_get(op, "responses")), rt));
        json_t *item = json_object_get(paths, path);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, path, item);
        }
        if (json_object_get(item, method))
            problem(g, "%s %s is routed twice", method, path);
        json_object_set_new(item, method, op);
    }
    json_object_set_new(doc, "paths", paths);
    /* What Kiln sends (OpenAPI 3.1): the webhook deliveries' request, as
     * operations.json writes it. */
    json_t *webhooks = json_object_get(g->ops, "webhooks");
    if (webhooks)
        json_object_set(doc, "webhooks", webhooks);
    json_object_set_new(doc, "components", components(g));

    /* Docs no route uses are stale: a handler renamed or a route removed. */
    const char *hname, *m;
    json_t *ms, *v;
    json_object_foreach(json_object_get(g->ops, "operations"), hname, ms) {
        json_object_foreach(ms, m, v) {
            char used[128];
            snprintf(used, sizeof used, "%s %s", hname, m);
            if (!json_object_get(g->used, used))
                problem(g, "operations.json documents operations.%s.%s, which no route serves",
                        hname, m);
        }
    }
    return doc;
}

static json_t *document;
static char *served;
static size_t served_len;
static char first_problem[512];

static void build(void)
{
    struct gen g = { 0 };
    document = build_document(&g);
    snprintf(first_problem, sizeof first_problem, "%s", g.problem);
    json_decref(g.ops);
    json_decref(g.used);
    json_decref(g.ids);
    served = json_dumps(document, JSON_COMPACT);
    served_len = served ? strlen(served) : 0;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

const json_t *api_openapi_document(void)
{
    pthread_once(&once, build);
    return document;
}

const char *api_openapi_problem(void)
{
    pthread_once(&once, build);
    return first_problem[0] ? first_problem : NULL;
}

int api_openapi_write(FILE *out)
{
    const char *p = api_openapi_problem();
    if (p) {
        fprintf(stderr, "kiln openapi: %s\n", p);
        return 1;
    }
    if (json_dumpf(document, out, JSON_INDENT(2)) != 0 || fputc('\n', out) == EOF ||
        fflush(out) != 0) {
        fprintf(stderr, "kiln openapi: writing the document failed\n");
        return 1;
    }
    return 0;
}

void api_openapi(struct kiln_req *req, struct kiln_res *res)
{
    (void)req;
    pthread_once(&once, build);
    kiln_res_json_text(res, 200, (kiln_str){ served, served_len });
    kiln_res_header(res, "cache-control", "public, max-age=300");
}

void api_docs(struct kiln_req *req, struct kiln_res *res)
{
    (void)req;
    res->status = 200;
    res->content_type = KILN_STR("text/html; charset=utf-8");
    res->body = (kiln_str){ kiln__docs_html, kiln__docs_html_len };
    /* The page's own inline script and style, and fetches to this origin;
     * nothing else loads. */
    kiln_res_header(res, "content-security-policy",
                    "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'");
    kiln_res_header(res, "cache-control", "public, max-age=300");
}
