/*
 * The resource engine: list, show, create, update (PUT and PATCH, both
 * partial), delete and declared actions for every declaration in
 * app/src/api/resources/ (declare.h), on both databases.
 *
 * What it keeps from the hand-written handlers it replaced, because they
 * are the contract (API.md):
 * - every statement is scoped by the owner column: another owner's id
 *   answers exactly like a missing one, and a non-UUID id is 404 before
 *   any query;
 * - validation collects every field's message into one 422 (Ecto's
 *   words); a required reference that is absent is 400 invalid_request
 *   (tasks.project_id), checked before anything else;
 * - a reference is checked in the statement that writes it (INSERT ...
 *   SELECT ... WHERE EXISTS, UPDATE ... WHERE EXISTS), FOR KEY SHARE on
 *   PostgreSQL, so a referenced row deleted at that moment is a 404, never
 *   a foreign-key 500 (see docs/RESOURCES.md);
 * - a paged list is one statement (the page, and the total as an
 *   uncorrelated subquery in the same snapshot); a bare list is the whole
 *   list, as the original's projects and tasks;
 * - rows are written as JSON text straight from the result (a jansson tree
 *   per row cost more CPU than the database did on the notes list);
 * - a cached list lives under the owner's generation of the resource, a
 *   random token every write replaces: the next read from any instance
 *   sees the write, and no key is ever searched for.
 *
 * SQL is built per request from constant names of the declaration and
 * numbered parameters; no request text is ever part of it.
 */
#include "api/engine.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/app.h"
#include "api/resource.h"
#include "auth/guard.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fiber.h"
#include "core/log.h"
#include "core/random.h"
#include "core/str.h"
#include "core/uuid.h"
#include "events/feed.h"
#include "jobs/jobs.h"
#include "store/kv.h"

#define OWNER_COLUMN "user_id"
#define OFFSET_MAX KILN_ENGINE_OFFSET_MAX
#define GENERATION_TTL_MS (24ull * 3600 * 1000)
#define JSON_MAX_BYTES (1024 * 1024)

/* A formatted string on the heap, kept for the life of the process (the
 * route table's paths). */
static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *out = kiln_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

/* ---- declarations at run time ---- */

/* What the engine derives once from a declaration. */
struct rt {
    const struct kiln_resource *r;
    char *columns;                        /* "id, f1, ..., inserted_at, updated_at" */
    const struct kiln_resource **refs;    /* per field: the referenced resource */
    /* the resources whose rows a delete of this one's can remove (ON
     * DELETE CASCADE, through any chain of references): their cached
     * lists go stale with it */
    const struct kiln_resource **cascade;
    size_t ncascade;
};

static struct rt *rts;
static pthread_once_t rts_once = PTHREAD_ONCE_INIT;

static void rts_build(void)
{
    rts = kiln_calloc(kiln_resources_count ? kiln_resources_count : 1, sizeof *rts);
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        struct rt *t = &rts[i];
        t->r = r;
        kiln_buf b;
        kiln_buf_init(&b, 1 << 20);
        kiln_buf_append_c(&b, "id");
        for (size_t f = 0; f < r->nfields; f++) {
            kiln_buf_append_c(&b, ", ");
            kiln_buf_append_c(&b, r->fields[f].name);
        }
        kiln_buf_append_c(&b, ", inserted_at, updated_at");
        t->columns = kiln_strndup(b.p, b.len);
        kiln_buf_free(&b);
        t->refs = kiln_calloc(r->nfields ? r->nfields : 1, sizeof *t->refs);
        for (size_t f = 0; f < r->nfields; f++)
            if (r->fields[f].type == KILN_REFERENCE)
                t->refs[f] = kiln_resource_find(r->fields[f].ref);
    }
    /* The closure of "references": a resource joins j's cascade when one
     * of its fields references j or a resource already in it. */
    size_t n = kiln_resources_count;
    for (size_t j = 0; j < n; j++) {
        rts[j].cascade = kiln_calloc(n ? n : 1, sizeof *rts[j].cascade);
        bool *in = kiln_calloc(n ? n : 1, sizeof *in);
        for (bool grew = true; grew;) {
            grew = false;
            for (size_t i = 0; i < n; i++)
                for (size_t f = 0; !in[i] && f < kiln_resources[i]->nfields; f++) {
                    const struct kiln_resource *to = rts[i].refs[f];
                    for (size_t k = 0; to && k < n && !in[i]; k++)
                        if (kiln_resources[k] == to && (k == j || in[k]) && i != j) {
                            in[i] = grew = true;
                            rts[j].cascade[rts[j].ncascade++] = kiln_resources[i];
                        }
                }
        }
        free(in);
    }
}

static const struct rt *rt_of(const struct kiln_resource *r)
{
    pthread_once(&rts_once, rts_build);
    for (size_t i = 0; i < kiln_resources_count; i++)
        if (rts[i].r == r)
            return &rts[i];
    return NULL;
}

const struct kiln_resource *kiln_resource_find(const char *name)
{
    for (size_t i = 0; name && i < kiln_resources_count; i++)
        if (!strcmp(kiln_resources[i]->name, name))
            return kiln_resources[i];
    return NULL;
}

const struct kiln_resource *kiln_route_resource(const struct kiln_req *req)
{
    return req->route ? req->route->data : NULL;
}

size_t kiln_resource_cascade(const struct kiln_resource *r,
                             const struct kiln_resource *const **out)
{
    const struct rt *t = rt_of(r);
    *out = t->cascade;
    return t->ncascade;
}

const char *kiln_resource_columns(const struct kiln_resource *r)
{
    return rt_of(r)->columns;
}

int kiln_resource_field(const struct kiln_resource *r, const char *name)
{
    for (size_t f = 0; f < r->nfields; f++)
        if (!strcmp(r->fields[f].name, name))
            return (int)f;
    return -1;
}

/* ---- checks of a declaration ---- */

static bool identifier(const char *s)
{
    if (!s || !*s || strlen(s) > 63 || !(islower((unsigned char)*s)))
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

static const char *const RESERVED[] = { "id", OWNER_COLUMN, "inserted_at", "updated_at",
                                        "limit", "offset", "search", "sort", NULL };

int kiln_resource_check(const struct kiln_resource *r, char *err, size_t errlen)
{
#define BAD(...) return snprintf(err, errlen, __VA_ARGS__), -1
    if (!identifier(r->name))
        BAD("resource \"%s\": name must be a lower-case SQL identifier", r->name ? r->name : "");
    if (!identifier(r->singular))
        BAD("resource %s: singular must be a lower-case identifier", r->name);
    if (!r->not_found_code || !r->not_found_message)
        BAD("resource %s: not_found_code and not_found_message are required", r->name);
    if (r->page_default > r->page_max || (r->page_max && !r->page_default))
        BAD("resource %s: page_default must be 1..page_max (both 0: unpaged)", r->name);
    if (r->cache && !r->page_max)
        BAD("resource %s: only paged lists are cached", r->name);
    if (r->order) {
        char col[64];
        const char *sp = strchr(r->order, ' ');
        size_t n = sp ? (size_t)(sp - r->order) : strlen(r->order);
        if (n >= sizeof col)
            BAD("resource %s: order \"%s\" names no column", r->name, r->order);
        memcpy(col, r->order, n);
        col[n] = '\0';
        if (strcmp(col, "inserted_at") && strcmp(col, "updated_at") && strcmp(col, "id") &&
            kiln_resource_field(r, col) < 0)
            BAD("resource %s: order \"%s\" names no column", r->name, r->order);
        if (sp && strcmp(sp, " ASC") && strcmp(sp, " DESC"))
            BAD("resource %s: order \"%s\" must end in ASC or DESC", r->name, r->order);
    }
    bool searchable = false;
    for (size_t f = 0; f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        if (!identifier(fd->name))
            BAD("resource %s: field \"%s\" must be a lower-case SQL identifier", r->name,
                fd->name ? fd->name : "");
        for (const char *const *w = RESERVED; *w; w++)
            if (!strcmp(fd->name, *w))
                BAD("resource %s: field %s is a name the engine uses", r->name, fd->name);
        for (size_t g = 0; g < f; g++)
            if (!strcmp(r->fields[g].name, fd->name))
                BAD("resource %s: field %s is declared twice", r->name, fd->name);
        if (fd->type == KILN_ENUM && (!fd->values || !fd->values[0]))
            BAD("resource %s: enum field %s has no values", r->name, fd->name);
        if (fd->type == KILN_REFERENCE && !kiln_resource_find(fd->ref))
            BAD("resource %s: field %s references \"%s\", which is not declared", r->name,
                fd->name, fd->ref ? fd->ref : "");
        if (fd->type == KILN_TEXT && fd->max_len && fd->min_len > fd->max_len)
            BAD("resource %s: field %s has min_len above max_len", r->name, fd->name);
        if ((fd->flags & KILN_BOUNDED) && fd->min > fd->max)
            BAD("resource %s: field %s has min above max", r->name, fd->name);
        if ((fd->flags & KILN_BOUNDED) && fd->type != KILN_INTEGER)
            BAD("resource %s: field %s: bounds are for integers", r->name, fd->name);
        if ((fd->flags & KILN_SEARCH) && fd->type != KILN_TEXT)
            BAD("resource %s: field %s: only text fields are searchable", r->name, fd->name);
        if ((fd->flags & KILN_FILTER) && fd->type == KILN_JSON)
            BAD("resource %s: field %s: a json field cannot be a filter", r->name, fd->name);
        if ((fd->flags & KILN_NULL_IS_DEFAULT) && !fd->def)
            BAD("resource %s: field %s: null stores the default, but there is none", r->name,
                fd->name);
        if ((fd->flags & KILN_REQUIRED) && (fd->flags & KILN_READ_ONLY))
            BAD("resource %s: field %s cannot be both required and read-only", r->name,
                fd->name);
        if (fd->type == KILN_ENUM && fd->def) {
            bool known = false;
            for (const char *const *v = fd->values; *v; v++)
                known |= !strcmp(*v, fd->def);
            if (!known)
                BAD("resource %s: field %s: default \"%s\" is not one of its values", r->name,
                    fd->name, fd->def);
        }
        searchable |= (fd->flags & KILN_SEARCH) != 0;
    }
    if ((r->show_extra_name || r->show_extra_of) &&
        (!r->show_extra || !identifier(r->show_extra_name) ||
         !kiln_resource_find(r->show_extra_of)))
        BAD("resource %s: show_extra_name and show_extra_of must name a member and a declared "
            "resource, for a show_extra hook",
            r->name);
    if (searchable && !r->search_max)
        BAD("resource %s: searchable fields need search_max", r->name);
    for (size_t a = 0; a < r->nactions; a++) {
        const struct kiln_action *ac = &r->actions[a];
        if (!identifier(ac->name))
            BAD("resource %s: action \"%s\" must be a lower-case identifier", r->name,
                ac->name ? ac->name : "");
        if (!ac->handler && (!ac->field || kiln_resource_field(r, ac->field) < 0))
            BAD("resource %s: action %s sets no declared field", r->name, ac->name);
        if (ac->event && !identifier(ac->event))
            BAD("resource %s: action %s: event \"%s\" must be a lower-case identifier",
                r->name, ac->name, ac->event);
    }
    return 0;
#undef BAD
}

int kiln_resources_check(char *err, size_t errlen)
{
    for (size_t i = 0; i < kiln_resources_count; i++) {
        if (kiln_resource_check(kiln_resources[i], err, errlen))
            return -1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(kiln_resources[i]->name, kiln_resources[j]->name))
                return snprintf(err, errlen, "resource %s is declared twice",
                                kiln_resources[i]->name),
                       -1;
    }
    return 0;
}

/* ---- JSON out ---- */

static void append_string(kiln_buf *b, kiln_str s)
{
    if (!s.p) {
        kiln_buf_append_c(b, "null");
        return;
    }
    kiln_buf_append_c(b, "\"");
    kiln_buf_append_json_str(b, s.p, s.len);
    kiln_buf_append_c(b, "\"");
}

static void append_time(kiln_buf *b, const struct kiln_db_rows *r, size_t i, size_t col)
{
    char t[KILN_RFC3339_LEN + 1];
    if (res_time_text(r, i, col, t)) {
        kiln_buf_append_c(b, "\"");
        kiln_buf_append(b, t, KILN_RFC3339_LEN);
        kiln_buf_append_c(b, "\"");
    } else {
        kiln_buf_append_c(b, "null");
    }
}

static void append_value(kiln_buf *b, const struct kiln_field *f,
                         const struct kiln_db_rows *r, size_t i, size_t col)
{
    kiln_str s = kiln_db_text(r, i, col);
    if (!s.p) {
        kiln_buf_append_c(b, "null");
        return;
    }
    switch (f->type) {
    case KILN_BOOLEAN: {
        bool v = false;
        kiln_db_bool(r, i, col, &v);
        kiln_buf_append_c(b, v ? "true" : "false");
        return;
    }
    case KILN_INTEGER: {
        int64_t v = 0;
        kiln_db_int64(r, i, col, &v);
        kiln_buf_printf(b, "%lld", (long long)v);
        return;
    }
    case KILN_TIMESTAMP:
        append_time(b, r, i, col);
        return;
    case KILN_JSON:
        /* jsonb's text on PostgreSQL, the compact text Kiln stored on
         * SQLite: JSON either way. */
        kiln_buf_append(b, s.p, s.len);
        return;
    default:
        append_string(b, s);
        return;
    }
}

/* The object without its closing brace: a show hook may add members. */
static void append_open(const struct kiln_resource *r, kiln_buf *b,
                        const struct kiln_db_rows *rows, size_t i)
{
    kiln_buf_append_c(b, "{\"id\":");
    append_string(b, kiln_db_text(rows, i, 0));
    for (size_t f = 0; f < r->nfields; f++) {
        kiln_buf_append_c(b, ",\"");
        kiln_buf_append_c(b, r->fields[f].name);
        kiln_buf_append_c(b, "\":");
        append_value(b, &r->fields[f], rows, i, f + 1);
    }
    kiln_buf_append_c(b, ",\"inserted_at\":");
    append_time(b, rows, i, r->nfields + 1);
    kiln_buf_append_c(b, ",\"updated_at\":");
    append_time(b, rows, i, r->nfields + 2);
}

void kiln_resource_append_json(const struct kiln_resource *r, kiln_buf *out,
                               const struct kiln_db_rows *rows, size_t i)
{
    append_open(r, out, rows, i);
    kiln_buf_append_c(out, "}");
}

json_t *kiln_resource_json(const struct kiln_resource *r, const struct kiln_db_rows *rows,
                           size_t i)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_resource_append_json(r, &b, rows, i);
    json_t *v = json_loadb(b.p, b.len, JSON_ALLOW_NUL, NULL);
    kiln_buf_free(&b);
    return v;
}

/* {"data": <row 0>} with status; a show adds the show hook's members. */
static void answer_row(struct kiln_req *req, struct kiln_res *res, const struct kiln_resource *r,
                       int status, const struct kiln_db_rows *rows, bool show)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_buf_append_c(&b, "{\"data\":");
    append_open(r, &b, rows, 0);
    if (r->show_extra && show) {
        kiln_str id = kiln_db_text(rows, 0, 0);
        int err = r->show_extra(req, r, kiln_arena_strndup(req->arena, id.p, id.len), &b);
        if (err) {
            kiln_buf_free(&b);
            res_store_error(req, res, err,
                            kiln_arena_sprintf(req->arena, "%s show", r->name));
            return;
        }
    }
    kiln_buf_append_c(&b, "}}");
    kiln_str out = { kiln_arena_strndup(req->arena, b.p, b.len), b.len };
    kiln_buf_free(&b);
    kiln_res_json_text(res, status, out);
}

/* ---- the list cache ---- */

static const char *generation_key(struct kiln_req *req, const struct kiln_resource *r)
{
    return kiln_arena_sprintf(req->arena, "%s_gen:%s", r->name, res_user_id(req));
}

/* A new generation after a write. Best effort: if the kv store is down,
 * cached lists expire within CACHE_TTL_SECONDS. */
static void cache_invalidate(struct kiln_req *req, const struct kiln_resource *r)
{
    struct kiln_kv *kv = app_kv(req);
    if (!r->cache || !kv || !req->config->cache_ttl_s)
        return;
    unsigned char rnd[12];
    char token[25];
    kiln_random_bytes(rnd, sizeof rnd);
    kiln_hex_encode(rnd, sizeof rnd, token);
    token[24] = '\0';
    kiln_kv_set(kv, kiln_str_c(generation_key(req, r)), kiln_str_c(token), GENERATION_TTL_MS);
}

/* The cache key of a list whose parameters are spelled in `shape`, or
 * NULL (no cache, kv down). The shape is hashed: keys stay short and carry
 * no user text. */
static const char *cache_key(struct kiln_req *req, const struct kiln_resource *r,
                             const char *shape, size_t shape_len)
{
    struct kiln_kv *kv = app_kv(req);
    if (!r->cache || !kv || !req->config->cache_ttl_s)
        return NULL;
    kiln_str gen;
    int err = kiln_kv_get(kv, req->arena, kiln_str_c(generation_key(req, r)), &gen);
    if (err == KILN_ENOTFOUND)
        gen = KILN_STR("0"); /* no write for a day: any token a write makes differs */
    else if (err)
        return NULL;
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[65];
    EVP_Digest(shape, shape_len, md, &mdlen, EVP_sha256(), NULL);
    kiln_hex_encode(md, 16, hex);
    hex[32] = '\0';
    return kiln_arena_sprintf(req->arena, "%s:%s:%.*s:%s", r->name, res_user_id(req),
                              (int)gen.len, gen.p, hex);
}

/* ---- input ---- */

/* An RFC 3339 date-time with an offset, as microseconds since the epoch. */
static bool parse_timestamp(kiln_str s, int64_t *us)
{
    if (s.len < 20 || s.len > 40 || !res_calendar_date((kiln_str){ s.p, 10 }))
        return false;
    char last = s.p[s.len - 1];
    if (last != 'Z' && last != 'z' && !(s.len > 6 && (s.p[s.len - 6] == '+' ||
                                                       s.p[s.len - 6] == '-')))
        return false;
    kiln_str cell = s;
    struct kiln_db_rows one = { .nrows = 1, .ncols = 1, .cells = &cell };
    return kiln_db_timestamp(&one, 0, 0, us);
}

static const char *timestamp_text(kiln_arena *a, int64_t us)
{
    char *out = kiln_arena_alloc(a, KILN_RFC3339_LEN + 1);
    int64_t s = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        s -= 1;
    }
    struct timespec ts = { (time_t)s, (long)frac * 1000 };
    kiln_time_rfc3339(out, &ts);
    return out;
}

static bool is_enum_value(const struct kiln_field *f, kiln_str s)
{
    for (const char *const *v = f->values; *v; v++)
        if (kiln_str_eq_c(s, *v))
            return true;
    return false;
}

/*
 * A present value v of field f as the text parameter to write (*out;
 * NULL for SQL NULL). false after adding the field's message to e.
 * References keep any string here: a string that is no UUID names no row,
 * which is the referenced resource's 404, decided by the caller.
 */
static bool field_value(kiln_arena *a, const struct kiln_field *f, json_t *obj,
                        struct res_errors *e, const char **out)
{
    json_t *v = json_object_get(obj, f->name);
    *out = NULL;
    if (json_is_null(v) && f->type != KILN_JSON) {
        if (f->flags & KILN_NULLABLE)
            return true;
        if (f->flags & KILN_NULL_IS_DEFAULT) {
            *out = f->def;
            return true;
        }
        /* Ecto's words: blank for what must hold something, invalid for
         * a value of the wrong kind (a reference's null among them). */
        bool blank = f->type == KILN_REFERENCE ? false
                     : f->type == KILN_TEXT   ? f->min_len > 0 || (f->flags & KILN_REQUIRED)
                     : f->type == KILN_ENUM   ? true
                                              : (f->flags & KILN_REQUIRED) != 0;
        res_error(e, f->name, blank ? "can't be blank" : "is invalid");
        return false;
    }
    switch (f->type) {
    case KILN_TEXT:
        return res_string(obj, f->name, false, f->min_len, f->max_len ? f->max_len : SIZE_MAX,
                          e, out);
    case KILN_ENUM:
        if (!res_string(obj, f->name, false, 1, SIZE_MAX, e, out))
            return false;
        if (!is_enum_value(f, kiln_str_c(*out))) {
            res_error(e, f->name, "is invalid");
            *out = NULL;
            return false;
        }
        return true;
    case KILN_REFERENCE:
        return res_string(obj, f->name, false, 0, SIZE_MAX, e, out);
    case KILN_UUID:
        if (json_is_string(v) &&
            (*out = res_uuid(a, (kiln_str){ json_string_value(v), json_string_length(v) })))
            return true;
        break;
    case KILN_BOOLEAN:
        if (json_is_boolean(v)) {
            *out = json_is_true(v) ? "1" : "0";
            return true;
        }
        break;
    case KILN_DATE:
        if (json_is_string(v) &&
            res_calendar_date((kiln_str){ json_string_value(v), json_string_length(v) })) {
            *out = json_string_value(v);
            return true;
        }
        break;
    case KILN_TIMESTAMP: {
        int64_t us;
        if (json_is_string(v) &&
            parse_timestamp((kiln_str){ json_string_value(v), json_string_length(v) }, &us)) {
            *out = timestamp_text(a, us);
            return true;
        }
        break;
    }
    case KILN_INTEGER:
        if (json_is_integer(v)) {
            json_int_t n = json_integer_value(v);
            if ((f->flags & KILN_BOUNDED) && n < f->min) {
                res_error(e, f->name,
                          kiln_arena_sprintf(a, "must be greater than or equal to %lld",
                                             (long long)f->min));
                return false;
            }
            if ((f->flags & KILN_BOUNDED) && n > f->max) {
                res_error(e, f->name,
                          kiln_arena_sprintf(a, "must be less than or equal to %lld",
                                             (long long)f->max));
                return false;
            }
            *out = kiln_arena_sprintf(a, "%lld", (long long)n);
            return true;
        }
        break;
    case KILN_JSON: {
        if (json_is_null(v) && (f->flags & KILN_NULLABLE))
            return true; /* SQL NULL: a nullable json field's null is NULL */
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            break;
        size_t n = strlen(text);
        /* PostgreSQL's jsonb refuses \u0000; refused on both alike. */
        if (n > (f->max_len ? f->max_len : JSON_MAX_BYTES) || strstr(text, "\\u0000")) {
            free(text);
            break;
        }
        *out = kiln_arena_strndup(a, text, n);
        free(text);
        return true;
    }
    }
    res_error(e, f->name, "is invalid");
    return false;
}

/* Nothing written yet: every field unset (one spare slot: r may have no
 * fields). */
static void values_init(kiln_arena *a, const struct kiln_resource *r, struct kiln_values *v)
{
    v->values = kiln_arena_alloc(a, (r->nfields + 1) * sizeof *v->values);
    v->set = kiln_arena_alloc(a, (r->nfields + 1) * sizeof *v->set);
    memset(v->values, 0, (r->nfields + 1) * sizeof *v->values);
    memset(v->set, 0, (r->nfields + 1) * sizeof *v->set);
}

bool kiln_resource_input(kiln_arena *a, const struct kiln_resource *r, json_t *in,
                         bool create, struct kiln_values *out, struct res_errors *e,
                         const char **missing)
{
    values_init(a, r, out);
    *missing = NULL;
    /* The contract's 400 for a required reference comes before any 422. */
    for (size_t f = 0; create && f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        json_t *v = json_object_get(in, fd->name);
        if (fd->type == KILN_REFERENCE && (fd->flags & KILN_REQUIRED) &&
            (!v || json_is_null(v))) {
            *missing = fd->name;
            return false;
        }
    }
    bool ok = true;
    for (size_t f = 0; f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        if (fd->flags & KILN_READ_ONLY) {
            if (create && fd->def) {
                out->values[f] = fd->def;
                out->set[f] = true;
            }
            continue;
        }
        if (!json_object_get(in, fd->name)) {
            if (!create)
                continue;
            if (fd->flags & KILN_REQUIRED) {
                res_error(e, fd->name, "can't be blank");
                ok = false;
                continue;
            }
            /* NULL default on a NOT NULL column: the column's own */
            if (fd->def || (fd->flags & KILN_NULLABLE)) {
                out->values[f] = fd->def;
                out->set[f] = true;
            }
            continue;
        }
        if (field_value(a, fd, in, e, &out->values[f])) {
            /* The strings point into the body: copy them into the arena,
             * which outlives it. */
            if (out->values[f])
                out->values[f] = kiln_arena_strndup(a, out->values[f], strlen(out->values[f]));
            out->set[f] = true;
        } else {
            ok = false;
        }
    }
    return ok;
}

/* kiln_resource_input, answered: false after a 400 or a 422. */
static bool read_input(struct kiln_req *req, struct kiln_res *res,
                       const struct kiln_resource *r, json_t *in, bool create,
                       struct kiln_values *out)
{
    struct res_errors e = { 0 };
    const char *missing;
    if (kiln_resource_input(req->arena, r, in, create, out, &e, &missing))
        return true;
    if (missing) {
        json_decref(e.details);
        kiln_res_error(req, res, 400, "invalid_request",
                       kiln_arena_sprintf(req->arena, "%s is required", missing), NULL);
        return false;
    }
    return !res_errors_answer(req, res, &e);
}

bool kiln_write_set(struct kiln_write *w, const char *name, const char *value)
{
    int f = kiln_resource_field(w->resource, name);
    if (f < 0)
        return false;
    w->values[f] = value ? kiln_arena_strndup(w->req->arena, value, strlen(value)) : NULL;
    w->set[f] = true;
    return true;
}

/* ---- statements ---- */

/* Parameters of one statement, numbered from $1. */
struct params {
    kiln_str *v;
    size_t n, cap;
};

static void params_init(struct params *p, kiln_arena *a, size_t cap)
{
    p->v = kiln_arena_alloc(a, cap * sizeof *p->v);
    p->n = 0;
    p->cap = cap;
}

/* Add a parameter; its number. */
static size_t param(struct params *p, const char *v)
{
    p->v[p->n++] = v ? kiln_str_c(v) : KILN_STR_NULL;
    return p->n;
}

/* A reference value the body gave, as a UUID; or the reason it names no
 * row: *bad set (a string that is no UUID). NULL value: not set. */
static const char *ref_uuid(kiln_arena *a, const char *v, bool *bad)
{
    if (!v)
        return NULL;
    const char *u = res_uuid(a, kiln_str_c(v));
    if (!u)
        *bad = true;
    return u;
}

/* ---- SQL, from the declaration (pure: unit-tested per dialect) ---- */

/* " AND EXISTS (an owned row of the referenced table)" for each reference
 * v sets to a row; first is the number of the first field parameter, owner
 * the owner's. */
static void append_ref_checks(kiln_buf *b, const struct kiln_resource *r, bool pg,
                              const struct kiln_values *v, size_t first, size_t owner)
{
    const struct rt *t = rt_of(r);
    size_t n = first;
    for (size_t f = 0; f < r->nfields; f++) {
        if (!v->set[f])
            continue;
        if (t->refs[f] && v->values[f])
            kiln_buf_printf(b,
                            " AND EXISTS (SELECT 1 FROM %s WHERE %s.id = $%zu AND "
                            "%s." OWNER_COLUMN " = $%zu%s)",
                            t->refs[f]->name, t->refs[f]->name, n, t->refs[f]->name, owner,
                            pg ? " FOR KEY SHARE" : "");
        n++;
    }
}

static const char *buf_text(kiln_arena *a, kiln_buf *b)
{
    const char *out = kiln_arena_strndup(a, b->p ? b->p : "", b->len);
    kiln_buf_free(b);
    return out;
}

static bool sets_ref(const struct kiln_resource *r, const struct kiln_values *v)
{
    const struct rt *t = rt_of(r);
    for (size_t f = 0; f < r->nfields; f++)
        if (t->refs[f] && v->set[f] && v->values[f])
            return true;
    return false;
}

const char *kiln_sql_insert(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const struct kiln_values *v)
{
    kiln_buf cols, vals, sql;
    kiln_buf_init(&cols, 1 << 20);
    kiln_buf_init(&vals, 1 << 20);
    kiln_buf_init(&sql, 1 << 20);
    kiln_buf_append_c(&cols, "id, " OWNER_COLUMN ", inserted_at, updated_at");
    kiln_buf_append_c(&vals, "$1, $2, $3, $3");
    size_t n = 4;
    for (size_t f = 0; f < r->nfields; f++)
        if (v->set[f]) {
            kiln_buf_printf(&cols, ", %s", r->fields[f].name);
            kiln_buf_printf(&vals, ", $%zu", n++);
        }
    /* With references, INSERT ... SELECT ... WHERE EXISTS: the referenced
     * rows are checked (and on PostgreSQL held) by the statement that
     * writes. */
    bool refs = sets_ref(r, v);
    kiln_buf_printf(&sql, "INSERT INTO %s (%.*s) %s%.*s%s", r->name, (int)cols.len, cols.p,
                    refs ? "SELECT " : "VALUES (", (int)vals.len, vals.p,
                    refs ? " WHERE 1 = 1" : ")");
    if (refs)
        append_ref_checks(&sql, r, d == KILN_DB_POSTGRES, v, 4, 2);
    kiln_buf_printf(&sql, " RETURNING %s", rt_of(r)->columns);
    kiln_buf_free(&cols);
    kiln_buf_free(&vals);
    return buf_text(a, &sql);
}

const char *kiln_sql_update(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const struct kiln_values *v)
{
    kiln_buf sql;
    kiln_buf_init(&sql, 1 << 20);
    kiln_buf_printf(&sql, "UPDATE %s SET ", r->name);
    size_t n = 3;
    for (size_t f = 0; f < r->nfields; f++)
        if (v->set[f])
            kiln_buf_printf(&sql, "%s = $%zu, ", r->fields[f].name, n++);
    kiln_buf_printf(&sql, "updated_at = $%zu WHERE id = $1 AND " OWNER_COLUMN " = $2", n);
    append_ref_checks(&sql, r, d == KILN_DB_POSTGRES, v, 3, 1 + 1);
    kiln_buf_printf(&sql, " RETURNING %s", rt_of(r)->columns);
    return buf_text(a, &sql);
}

/* " FROM t WHERE owner = $1 AND f = $2 ... AND (search)" */
static void append_where(kiln_buf *b, const struct kiln_resource *r, const bool *filtered,
                         bool search)
{
    kiln_buf_printf(b, " FROM %s WHERE " OWNER_COLUMN " = $1", r->name);
    size_t n = 2;
    for (size_t f = 0; f < r->nfields; f++)
        if (filtered[f])
            kiln_buf_printf(b, " AND %s = $%zu", r->fields[f].name, n++);
    if (!search)
        return;
    /* lower() on both sides: case-blind on both databases; ESCAPE makes %
     * and _ in the term plain characters. */
    kiln_buf_append_c(b, " AND (");
    bool first = true;
    for (size_t f = 0; f < r->nfields; f++)
        if (r->fields[f].flags & KILN_SEARCH) {
            kiln_buf_printf(b, "%slower(%s) LIKE lower(CAST($%zu AS TEXT)) ESCAPE '\\'",
                            first ? "" : " OR ", r->fields[f].name, n);
            first = false;
        }
    kiln_buf_append_c(b, ")");
}

const char *kiln_sql_list(kiln_arena *a, const struct kiln_resource *r, const bool *filtered,
                          bool search, const char *col, const char *dir)
{
    kiln_buf where, sql;
    kiln_buf_init(&where, 1 << 20);
    kiln_buf_init(&sql, 1 << 20);
    append_where(&where, r, filtered, search);
    size_t n = 2 + (size_t)search;
    for (size_t f = 0; f < r->nfields; f++)
        n += filtered[f];
    if (r->page_max)
        /* One statement: the page, and the total as an uncorrelated
         * subquery (computed once, in the same snapshot as the page): one
         * round trip per list. */
        kiln_buf_printf(&sql,
                        "SELECT %s, (SELECT count(*)%.*s) AS total%.*s ORDER BY %s %s, id %s "
                        "LIMIT $%zu OFFSET $%zu",
                        rt_of(r)->columns, (int)where.len, where.p, (int)where.len, where.p, col,
                        dir, dir, n, n + 1);
    else
        kiln_buf_printf(&sql, "SELECT %s%.*s ORDER BY %s %s, id %s", rt_of(r)->columns,
                        (int)where.len, where.p, col, dir, dir);
    kiln_buf_free(&where);
    return buf_text(a, &sql);
}

const char *kiln_sql_count(kiln_arena *a, const struct kiln_resource *r, const bool *filtered,
                           bool search)
{
    kiln_buf sql;
    kiln_buf_init(&sql, 1 << 20);
    kiln_buf_append_c(&sql, "SELECT count(*)");
    append_where(&sql, r, filtered, search);
    return buf_text(a, &sql);
}

/* Whether row id of r exists for this owner (to name the right 404). */
/* ---- the outbox: an event and an audit row with every change ---- */

/*
 * Every create, update, delete and declared action writes, with the change
 * and in its transaction, one row of `events` (the change feed,
 * events/feed.c) and one of `audit`. On PostgreSQL the three are one
 * statement (data-modifying CTEs: one round trip, no transaction held open
 * across round trips, so the pool's pipelining is untouched); on SQLite a
 * BEGIN IMMEDIATE ... COMMIT on the worker's own connection. A statement
 * that changes nothing inserts nothing, and a failed one rolls back all.
 */


/* The event's action: created, updated, deleted, or the action's event. */
static const char *event_action(const struct kiln_resource *r, enum kiln_op op,
                                const char *action)
{
    switch (op) {
    case KILN_OP_CREATE:
        return "created";
    case KILN_OP_UPDATE:
        return "updated";
    case KILN_OP_DELETE:
        return "deleted";
    case KILN_OP_ACTION:
        break;
    }
    for (size_t i = 0; i < r->nactions; i++)
        if (!strcmp(r->actions[i].name, action))
            return r->actions[i].event ? r->actions[i].event : action;
    return action;
}

const char *kiln_sql_row_json(kiln_arena *a, const struct kiln_resource *r, const char *alias)
{
    (void)r;
    /* One function call in the write's statement: what the API shows is
     * made from it when the event is read (kiln_resource_event_json), off
     * the write's path. */
    return kiln_arena_sprintf(a, "row_to_json(%s)::text", alias);
}

/* A member of an event's stored row as the API writes it. */
static void append_event_value(kiln_buf *b, int type, json_t *v)
{
    if (type == KILN_TIMESTAMP && json_is_string(v)) {
        kiln_str cell = { json_string_value(v), json_string_length(v) };
        struct kiln_db_rows one = { .nrows = 1, .ncols = 1, .cells = &cell };
        int64_t us;
        if (kiln_db_timestamp(&one, 0, 0, &us)) {
            char t[KILN_RFC3339_LEN + 1];
            struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
            kiln_time_rfc3339(t, &ts);
            kiln_buf_printf(b, "\"%s\"", t);
            return;
        }
    }
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17))
                   : NULL;
    kiln_buf_append_c(b, text ? text : "null");
    free(text);
}

bool kiln_resource_event_json(const char *resource, kiln_str data, kiln_buf *out)
{
    const struct kiln_resource *r = kiln_resource_find(resource);
    return r && kiln_resource_event_json_of(r, data, out);
}

bool kiln_resource_event_json_of(const struct kiln_resource *r, kiln_str data, kiln_buf *out)
{
    if (!data.p)
        return false;
    json_error_t e;
    json_t *o = json_loadb(data.p, data.len, 0, &e);
    if (!json_is_object(o)) {
        json_decref(o);
        return false;
    }
    kiln_buf_append_c(out, "{\"id\":");
    append_event_value(out, KILN_UUID, json_object_get(o, "id"));
    for (size_t f = 0; f < r->nfields; f++) {
        kiln_buf_printf(out, ",\"%s\":", r->fields[f].name);
        append_event_value(out, r->fields[f].type, json_object_get(o, r->fields[f].name));
    }
    kiln_buf_append_c(out, ",\"inserted_at\":");
    append_event_value(out, KILN_TIMESTAMP, json_object_get(o, "inserted_at"));
    kiln_buf_append_c(out, ",\"updated_at\":");
    append_event_value(out, KILN_TIMESTAMP, json_object_get(o, "updated_at"));
    kiln_buf_append_c(out, "}");
    json_decref(o);
    return true;
}

#define PG_TX "pg_current_xact_id()::text::bigint"

/* " a AS (INSERT INTO audit ... SELECT ... FROM src)" */
static void append_pg_audit(kiln_buf *b, const struct kiln_resource *r, const char *action,
                            const char *src, size_t owner, size_t first)
{
    kiln_buf_printf(b,
                    "a AS (INSERT INTO audit (actor, action, target, ip, user_agent, "
                    "request_id) SELECT $%zu, '%s.%s', '%s/' || %s.id, $%zu, $%zu, $%zu FROM "
                    "%s)",
                    owner, r->name, action, r->name, src, first, first + 1, first + 2, src);
}

const char *kiln_sql_outbox(kiln_arena *a, const struct kiln_resource *r, const char *stmt,
                            const char *action, size_t owner, size_t first_audit,
                            const char *more)
{
    kiln_buf b;
    kiln_buf_init(&b, 1 << 20);
    kiln_buf_printf(&b,
                    "WITH w AS (%s), e AS (INSERT INTO events (tx, resource, action, row_id, "
                    "owner, data) SELECT " PG_TX ", '%s', '%s', w.id, $%zu, %s FROM w), ",
                    stmt, r->name, action, owner, kiln_sql_row_json(a, r, "w"));
    append_pg_audit(&b, r, action, "w", owner, first_audit);
    if (more)
        kiln_buf_append_c(&b, more);
    kiln_buf_append_c(&b, " SELECT * FROM w");
    return buf_text(a, &b);
}

size_t kiln_sql_insert_width(const struct kiln_resource *r, const struct kiln_values *v)
{
    size_t k = 6; /* id, owner, now; ip, user agent, request id */
    for (size_t f = 0; f < r->nfields; f++)
        k += v->set[f];
    return k;
}

const char *kiln_sql_insert_many(kiln_arena *a, const struct kiln_resource *r,
                                 const struct kiln_values *v, size_t n)
{
    size_t k = kiln_sql_insert_width(r, v);
    kiln_buf b;
    kiln_buf_init(&b, 1 << 20);
    /* v: what the event and the audit row take from each request. */
    kiln_buf_append_c(&b, "WITH v (id, owner, ip, ua, rid) AS (VALUES ");
    for (size_t m = 0; m < n; m++) {
        size_t base = m * k;
        kiln_buf_printf(&b, "%s($%zu::uuid, $%zu::uuid, $%zu::text, $%zu::text, $%zu::text)",
                        m ? ", " : "", base + 1, base + 2, base + k - 2, base + k - 1, base + k);
    }
    kiln_buf_printf(&b, "), w AS (INSERT INTO %s (id, " OWNER_COLUMN ", inserted_at, updated_at",
                    r->name);
    for (size_t f = 0; f < r->nfields; f++)
        if (v->set[f])
            kiln_buf_printf(&b, ", %s", r->fields[f].name);
    /* A multi-row VALUES of an INSERT takes each parameter's type from its
     * column, as the single create's does. */
    kiln_buf_append_c(&b, ") VALUES ");
    for (size_t m = 0; m < n; m++) {
        size_t base = m * k;
        kiln_buf_printf(&b, "%s($%zu, $%zu, $%zu, $%zu", m ? ", " : "", base + 1, base + 2,
                        base + 3, base + 3);
        for (size_t i = 4; i <= k - 3; i++)
            kiln_buf_printf(&b, ", $%zu", base + i);
        kiln_buf_append_c(&b, ")");
    }
    kiln_buf_printf(&b,
                    " RETURNING %s), e AS (INSERT INTO events (tx, resource, action, row_id, "
                    "owner, data) SELECT " PG_TX ", '%s', 'created', w.id, v.owner, %s FROM w "
                    "JOIN v ON v.id = w.id), a AS (INSERT INTO audit (actor, action, target, ip, "
                    "user_agent, request_id) SELECT v.owner, '%s.created', '%s/' || w.id, v.ip, "
                    "v.ua, v.rid FROM w JOIN v ON v.id = w.id) SELECT * FROM w",
                    rt_of(r)->columns, r->name, kiln_sql_row_json(a, r, "w"), r->name, r->name);
    return buf_text(a, &b);
}

/* The ids of the rows of cascade[k] that deleting row $1 (owner $2) of r
 * removes through ON DELETE CASCADE; base selects the deleted row's id. */
static void append_cascade_ids(kiln_buf *b, const struct rt *t, size_t k, const char *base)
{
    const struct kiln_resource *c = t->cascade[k];
    const struct rt *ct = rt_of(c);
    kiln_buf_printf(b, "SELECT id FROM %s WHERE false", c->name);
    for (size_t f = 0; f < c->nfields; f++) {
        const struct kiln_resource *to = ct->refs[f];
        if (!to)
            continue;
        if (to == t->r) {
            kiln_buf_printf(b, " OR %s IN (%s)", c->fields[f].name, base);
            continue;
        }
        /* Only resources before k: the closure adds a resource after
         * what it references, so every chain is found; a cycle back to a
         * later one is not followed. */
        for (size_t j = 0; j < k; j++)
            if (t->cascade[j] == to) {
                kiln_buf_printf(b, " OR %s IN (", c->fields[f].name);
                append_cascade_ids(b, t, j, base);
                kiln_buf_append_c(b, ")");
            }
    }
}

const char *kiln_sql_delete(kiln_arena *a, const struct kiln_resource *r,
                            enum kiln_db_dialect d, const char *more)
{
    kiln_buf b;
    kiln_buf_init(&b, 1 << 20);
    if (d != KILN_DB_POSTGRES) {
        kiln_buf_printf(&b, "DELETE FROM %s WHERE id = $1 AND " OWNER_COLUMN " = $2", r->name);
        return buf_text(a, &b);
    }
    /* Parameters: id, owner, then the audit's ip, user agent, request id.
     * The rows the cascade removes get their own deleted events, read
     * (from d, so only when this statement deleted the row) with the
     * statement's snapshot, before the cascade runs. */
    const struct rt *t = rt_of(r);
    kiln_buf_printf(&b,
                    "WITH d AS (DELETE FROM %s WHERE id = $1 AND " OWNER_COLUMN
                    " = $2 RETURNING id), e AS (INSERT INTO events (tx, resource, action, row_id, "
                    "owner) SELECT " PG_TX ", '%s', 'deleted', d.id, $2 FROM d",
                    r->name, r->name);
    for (size_t k = 0; k < t->ncascade; k++) {
        kiln_buf_printf(&b, " UNION ALL SELECT " PG_TX ", '%s', 'deleted', c.id, $2 FROM (",
                        t->cascade[k]->name);
        append_cascade_ids(&b, t, k, "SELECT id FROM d");
        kiln_buf_append_c(&b, ") c");
    }
    kiln_buf_append_c(&b, "), ");
    append_pg_audit(&b, r, "deleted", "d", 2, 3);
    if (more)
        kiln_buf_append_c(&b, more);
    kiln_buf_append_c(&b, " SELECT count(*) FROM d");
    return buf_text(a, &b);
}

/* The audit's ip, user agent and request id, as three more parameters. */
static void audit_params(struct kiln_req *req, struct params *p)
{
    param(p, kiln_client_ip(req)); /* the client's, behind TRUSTED_PROXY_HOPS proxies */
    param(p, res_audit_text(req->arena, kiln_req_header(req, "user-agent")));
    param(p, kiln_arena_strndup(req->arena, req->request_id, req->request_id_len));
}

int kiln_write_enqueue(struct kiln_write *w, const char *kind, const char *args)
{
    if (!kiln_job_kind_find(kind) || w->njobs == KILN_WRITE_MAX_JOBS)
        return KILN_EINVAL;
    kiln_arena *a = w->req->arena;
    w->job_kind[w->njobs] = kiln_arena_strndup(a, kind, strlen(kind));
    args = args ? args : "{}";
    w->job_args[w->njobs] = kiln_arena_strndup(a, args, strlen(args));
    w->njobs++;
    return 0;
}

/* PostgreSQL: the hooks' jobs as more parts of the change's statement
 * (kiln_sql_outbox's and kiln_sql_delete's `more`), one row each from src
 * (the written row: none when nothing was written); their parameters
 * appended to p. NULL when the hooks enqueued none. */
static const char *pg_jobs(kiln_arena *a, const char *src, const struct kiln_write *w,
                           struct params *p)
{
    if (!w->njobs)
        return NULL;
    kiln_buf b;
    kiln_buf_init(&b, 1 << 20);
    for (size_t j = 0; j < w->njobs; j++) {
        const struct kiln_job_kind *k = kiln_job_kind_find(w->job_kind[j]);
        kiln_buf_printf(&b,
                        ", j%zu AS (INSERT INTO jobs (kind, args, max_attempts) SELECT $%zu, $%zu, "
                        "%d FROM %s)",
                        j, p->n + 1, p->n + 2, k ? k->max_attempts : 10, src);
        param(p, w->job_kind[j]);
        param(p, w->job_args[j]);
    }
    return buf_text(a, &b);
}

/* SQLite: the hooks' jobs, inside the change's transaction. */
static int lite_jobs(struct kiln_req *req, const struct kiln_write *w)
{
    int err = 0;
    for (size_t j = 0; !err && w && j < w->njobs; j++)
        err = kiln_job_enqueue(app_db(req), req->arena, w->job_kind[j], w->job_args[j], NULL,
                               NULL);
    return err;
}

/* SQLite: the event and the audit row of a change, inside its
 * transaction. data: the row's JSON (NULL for a delete). */
static int lite_event_data(struct kiln_req *req, const struct kiln_resource *r,
                           const char *action, const char *row_id, const char *data)
{
    kiln_str ev[6] = { kiln_str_c(r->name), kiln_str_c(action), kiln_str_c(row_id),
                       kiln_str_c(res_user_id(req)), data ? kiln_str_c(data) : KILN_STR_NULL,
                       kiln_str_c(res_now(req->arena)) };
    return kiln_db_query(app_db(req), req->arena,
                         "INSERT INTO events (resource, action, row_id, owner, data, at) "
                         "VALUES ($1, $2, $3, $4, $5, $6)",
                         ev, 6, NULL);
}

static int lite_event(struct kiln_req *req, const struct kiln_resource *r, const char *action,
                      const char *row_id)
{
    return lite_event_data(req, r, action, row_id, NULL);
}

static int lite_record(struct kiln_req *req, const struct kiln_resource *r, const char *action,
                       const char *row_id, const char *data)
{
    kiln_arena *a = req->arena;
    struct kiln_db *db = app_db(req);
    const char *now = res_now(a);
    int err = lite_event_data(req, r, action, row_id, data);
    if (err)
        return err;
    struct params p;
    params_init(&p, a, 7);
    param(&p, now);
    param(&p, res_user_id(req));
    param(&p, kiln_arena_sprintf(a, "%s.%s", r->name, action));
    param(&p, kiln_arena_sprintf(a, "%s/%s", r->name, row_id));
    audit_params(req, &p);
    return kiln_db_query(db, a,
                         "INSERT INTO audit (at, actor, action, target, ip, user_agent, "
                         "request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                         p.v, p.n, NULL);
}

static bool is_pg(struct kiln_req *req)
{
    return kiln_db_dialect(app_db(req)) == KILN_DB_POSTGRES;
}

/* SQLite: open the change's transaction (IMMEDIATE: a delete reads its
 * cascade before it writes, and must not meet a writer in between). */
static int lite_begin(struct kiln_req *req)
{
    return is_pg(req) ? 0 : kiln_db_exec(app_db(req), "BEGIN IMMEDIATE");
}

/* SQLite: commit when keep and no error, else roll back; the error. */
static int lite_end(struct kiln_req *req, int err, bool keep)
{
    if (is_pg(req))
        return err;
    struct kiln_db *db = app_db(req);
    if (!err && keep && !(err = kiln_db_exec(db, "COMMIT")))
        return 0;
    kiln_db_exec(db, "ROLLBACK");
    return err;
}

/* SQLite: the row's JSON and its records, then the commit. */
/* SQLite: the event, audit row and jobs of a write that wrote rows. */
static int lite_after(struct kiln_req *req, const struct kiln_resource *r, const char *action,
                      const struct kiln_db_rows *rows, const struct kiln_write *w)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_resource_append_json(r, &b, rows, 0);
    const char *json = buf_text(req->arena, &b);
    kiln_str id = kiln_db_text(rows, 0, 0);
    int err = lite_record(req, r, action, kiln_arena_strndup(req->arena, id.p, id.len), json);
    if (!err)
        err = lite_jobs(req, w);
    return err;
}

static int lite_finish(struct kiln_req *req, const struct kiln_resource *r, const char *action,
                       const struct kiln_db_rows *rows, const struct kiln_write *w)
{
    if (is_pg(req))
        return 0;
    return lite_end(req, lite_after(req, r, action, rows, w), true);
}

static int row_exists(struct kiln_req *req, const struct kiln_resource *r, const char *id,
                      bool *exists)
{
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT 1 FROM %s WHERE id = $1 AND " OWNER_COLUMN
                                               " = $2",
                                               r->name),
                            p, 2, &rows);
    *exists = !err && rows.nrows;
    return err;
}

/* After a write that touched no row although the row (when checked) is
 * there: which reference named no row of the owner. NULL: none did (the
 * row itself is missing). */
static const struct kiln_resource *missing_ref(struct kiln_req *req,
                                               const struct kiln_resource *r,
                                               const struct kiln_values *in, int *err)
{
    const struct rt *t = rt_of(r);
    const struct kiln_resource *only = NULL;
    size_t asked = 0;
    for (size_t f = 0; f < r->nfields; f++)
        if (t->refs[f] && in->set[f] && in->values[f]) {
            asked++;
            only = t->refs[f];
        }
    if (asked <= 1)
        return only;
    for (size_t f = 0; f < r->nfields; f++) {
        if (!t->refs[f] || !in->set[f] || !in->values[f])
            continue;
        bool exists;
        if ((*err = row_exists(req, t->refs[f], in->values[f], &exists)))
            return NULL;
        if (!exists)
            return t->refs[f];
    }
    return NULL;
}

static void not_found(struct kiln_req *req, struct kiln_res *res, const struct kiln_resource *r)
{
    res_not_found(req, res, r->not_found_code, r->not_found_message);
}

static void store_error(struct kiln_req *req, struct kiln_res *res,
                        const struct kiln_resource *r, int err, const char *op)
{
    res_store_error(req, res, err, kiln_arena_sprintf(req->arena, "%s %s", r->name, op));
}

/* The declarations were compared with the database (once per process);
 * false after answering 503 while the database has no migrations. */
static bool schema_ready(struct kiln_req *req, struct kiln_res *res)
{
    if (kiln_resources_verify_once(app_db(req)))
        return true;
    kiln_res_fail(req, res, KILN_EUNAVAILABLE, "Database", "resources",
                  "the database has no migrations applied");
    return false;
}

/* ---- list ---- */

/* A filter's value from the query (or its declared default) as the text
 * to compare with; NULL: no filter. false after a 400. */
static bool filter_value(struct kiln_req *req, struct kiln_res *res, const struct kiln_field *f,
                         const char **out)
{
    kiln_str v;
    *out = NULL;
    if (!kiln_req_query(req, f->name, &v) || v.len == 0) {
        if (!f->filter_def)
            return true;
        v = kiln_str_c(f->filter_def);
    }
    kiln_arena *a = req->arena;
    const char *bad = NULL;
    switch (f->type) {
    case KILN_BOOLEAN:
        if (kiln_str_eq_c(v, "true") || kiln_str_eq_c(v, "false"))
            *out = v.p[0] == 't' ? "1" : "0";
        else
            bad = kiln_arena_sprintf(a, "%s must be true or false", f->name);
        break;
    case KILN_UUID:
    case KILN_REFERENCE:
        if (!(*out = res_uuid(a, v)))
            bad = kiln_arena_sprintf(a, "%s must be a UUID", f->name);
        break;
    case KILN_ENUM:
        if (is_enum_value(f, v)) {
            *out = kiln_arena_strndup(a, v.p, v.len);
        } else {
            kiln_buf b;
            kiln_buf_init(&b, 1 << 16);
            for (const char *const *e = f->values; *e; e++)
                kiln_buf_printf(&b, "%s%s", e == f->values ? "" : ", ", *e);
            bad = kiln_arena_sprintf(a, "%s must be one of %.*s", f->name, (int)b.len, b.p);
            kiln_buf_free(&b);
        }
        break;
    case KILN_INTEGER: {
        bool neg = v.len && v.p[0] == '-';
        uint64_t n;
        if (kiln_str_to_u64(neg ? (kiln_str){ v.p + 1, v.len - 1 } : v, (uint64_t)INT64_MAX, &n))
            *out = kiln_arena_sprintf(a, "%s%llu", neg ? "-" : "", (unsigned long long)n);
        else
            bad = kiln_arena_sprintf(a, "%s must be an integer", f->name);
        break;
    }
    case KILN_DATE:
        if (res_calendar_date(v))
            *out = kiln_arena_strndup(a, v.p, v.len);
        else
            bad = kiln_arena_sprintf(a, "%s must be a date (YYYY-MM-DD)", f->name);
        break;
    case KILN_TIMESTAMP: {
        int64_t us;
        if (parse_timestamp(v, &us))
            *out = timestamp_text(a, us);
        else
            bad = kiln_arena_sprintf(a, "%s must be an RFC 3339 timestamp", f->name);
        break;
    }
    default:
        if (kiln_utf8_valid(v) && !memchr(v.p, '\0', v.len))
            *out = kiln_arena_strndup(a, v.p, v.len);
        else
            bad = kiln_arena_sprintf(a, "%s must be UTF-8 text", f->name);
        break;
    }
    if (bad) {
        kiln_res_error(req, res, 400, "invalid_request", bad, NULL);
        return false;
    }
    return true;
}

/* The ORDER BY of a list: ?sort=name or -name on a sortable field (or a
 * timestamp), else the declared order. false after a 400. */
static bool list_order(struct kiln_req *req, struct kiln_res *res, const struct kiln_resource *r,
                       const char **col, const char **dir)
{
    kiln_str v;
    if (!kiln_req_query(req, "sort", &v) || v.len == 0) {
        const char *order = r->order ? r->order : "inserted_at DESC";
        const char *sp = strchr(order, ' ');
        *col = sp ? kiln_arena_strndup(req->arena, order, (size_t)(sp - order)) : order;
        *dir = sp && !strcmp(sp + 1, "DESC") ? "DESC" : "ASC";
        return true;
    }
    bool desc = v.p[0] == '-';
    kiln_str name = desc ? (kiln_str){ v.p + 1, v.len - 1 } : v;
    if (kiln_str_eq_c(name, "inserted_at") || kiln_str_eq_c(name, "updated_at")) {
        *col = kiln_str_eq_c(name, "inserted_at") ? "inserted_at" : "updated_at";
        *dir = desc ? "DESC" : "ASC";
        return true;
    }
    for (size_t f = 0; f < r->nfields; f++)
        if ((r->fields[f].flags & KILN_SORT) && kiln_str_eq_c(name, r->fields[f].name)) {
            *col = r->fields[f].name;
            *dir = desc ? "DESC" : "ASC";
            return true;
        }
    kiln_buf b;
    kiln_buf_init(&b, 1 << 16);
    for (size_t f = 0; f < r->nfields; f++)
        if (r->fields[f].flags & KILN_SORT)
            kiln_buf_printf(&b, "%s, ", r->fields[f].name);
    kiln_res_error(req, res, 400, "invalid_request",
                   kiln_arena_sprintf(req->arena,
                                      "sort must be one of %.*sinserted_at, updated_at, "
                                      "each optionally prefixed with -",
                                      (int)b.len, b.p),
                   NULL);
    kiln_buf_free(&b);
    return false;
}

void kiln_engine_list(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    kiln_arena *a = req->arena;
    bool paged = r->page_max > 0;
    unsigned limit = 0, offset = 0;
    if (paged && (!res_query_uint(req, res, "limit", r->page_default, 1, r->page_max, &limit) ||
                  !res_query_uint(req, res, "offset", 0, 0, OFFSET_MAX, &offset)))
        return;
    /* Parameters in kiln_sql_list's order: owner, each filter given in
     * declaration order, the search pattern, limit, offset. The shape
     * spells the same for the cache key. */
    struct params p;
    params_init(&p, a, r->nfields + 4);
    param(&p, res_user_id(req));
    bool *filtered = kiln_arena_alloc(a, (r->nfields + 1) * sizeof *filtered);
    memset(filtered, 0, (r->nfields + 1) * sizeof *filtered);
    kiln_buf shape;
    kiln_buf_init(&shape, 1 << 20);
    bool searchable = false;
    for (size_t f = 0; f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        searchable |= (fd->flags & KILN_SEARCH) != 0;
        if (!(fd->flags & KILN_FILTER))
            continue;
        const char *v;
        if (!filter_value(req, res, fd, &v))
            goto out;
        if (!v)
            continue; /* only the filters given: each combination its index */
        filtered[f] = true;
        param(&p, v);
        kiln_buf_printf(&shape, "%s=%s\n", fd->name, v);
    }
    kiln_str search = KILN_STR_NULL;
    if (searchable && kiln_req_query(req, "search", &search) && search.len) {
        size_t chars = 0;
        for (size_t i = 0; i < search.len; i++)
            chars += ((unsigned char)search.p[i] & 0xC0) != 0x80;
        if (!kiln_utf8_valid(search) || memchr(search.p, '\0', search.len) ||
            chars > r->search_max) {
            kiln_res_error(req, res, 400, "invalid_request",
                           kiln_arena_sprintf(a,
                                              "search must be UTF-8 text of at most %zu "
                                              "characters",
                                              r->search_max),
                           NULL);
            goto out;
        }
        param(&p, res_like_pattern(a, search));
        kiln_buf_printf(&shape, "search=%.*s\n", (int)search.len, search.p);
    } else {
        search = KILN_STR_NULL;
    }
    const char *col, *dir;
    if (!list_order(req, res, r, &col, &dir))
        goto out;
    kiln_buf_printf(&shape, "sort=%s %s\nlimit=%u\noffset=%u\n", col, dir, limit, offset);

    const char *key = cache_key(req, r, shape.p ? shape.p : "", shape.len);
    struct kiln_kv *kv = app_kv(req);
    kiln_str cached;
    if (key && kiln_kv_get(kv, a, kiln_str_c(key), &cached) == 0) {
        kiln_res_json_text(res, 200, cached);
        goto out;
    }
    size_t nwhere = p.n;
    if (paged) {
        param(&p, kiln_arena_sprintf(a, "%u", limit));
        param(&p, kiln_arena_sprintf(a, "%u", offset));
    }
    struct kiln_db_rows rows, count;
    int err = kiln_db_query(app_db(req), a,
                            kiln_sql_list(a, r, filtered, search.p != NULL, col, dir), p.v, p.n,
                            &rows);
    int64_t total = 0;
    /* Past the last page no row carries the total, and a count says it. */
    if (paged && !err && rows.nrows)
        kiln_db_int64(&rows, 0, r->nfields + 3, &total);
    else if (paged && !err && offset > 0 &&
             !(err = kiln_db_query(app_db(req), a,
                                   kiln_sql_count(a, r, filtered, search.p != NULL), p.v, nwhere,
                                   &count)))
        kiln_db_int64(&count, 0, 0, &total);
    if (err) {
        store_error(req, res, r, err, "list");
        goto out;
    }
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024 * 1024);
    kiln_buf_append_c(&b, "{\"data\":[");
    for (size_t i = 0; i < rows.nrows; i++) {
        if (i)
            kiln_buf_append_c(&b, ",");
        kiln_resource_append_json(r, &b, &rows, i);
    }
    if (paged)
        kiln_buf_printf(&b,
                        "],\"meta\":{\"count\":%zu,\"total\":%lld,\"limit\":%u,\"offset\":%u}}",
                        rows.nrows, (long long)total, limit, offset);
    else
        kiln_buf_append_c(&b, "]}");
    kiln_str body = { kiln_arena_strndup(a, b.p, b.len), b.len };
    kiln_buf_free(&b);
    if (key)
        kiln_kv_set(kv, kiln_str_c(key), body, (uint64_t)req->config->cache_ttl_s * 1000);
    kiln_res_json_text(res, 200, body);
out:
    kiln_buf_free(&shape);
}

/* ---- show ---- */

void kiln_engine_show(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    struct kiln_db_rows rows;
    if (res_fetch_owned(req, res, r->name, rt_of(r)->columns, r->not_found_code,
                        r->not_found_message, &rows))
        answer_row(req, res, r, 200, &rows, true);
}

/* ---- create ---- */

static int run_hook(kiln_write_hook hook, struct kiln_write *w)
{
    return hook ? hook(w) : 0;
}

/*
 * Creates combined. On PostgreSQL a create is one statement writing three
 * rows (the row, its event, its audit row), and the server's cost per
 * statement (parse, plan, executor start, three index-maintaining inserts
 * one row at a time) is most of a write's cost. Creates of the same shape
 * that wait on the same loop therefore go out as one statement: a loop
 * runs at most COMBINE_INFLIGHT creates of a shape at once; one that
 * arrives while those run queues, and when one ends, the oldest queued
 * leads everything queued then (up to COMBINE_MAX) as one statement and
 * hands each its row. A create that finds a free place runs alone at once,
 * so a lone write waits for nothing. The combined statement is one
 * transaction: all its writes commit together before any is answered, and
 * if it fails, each runs again alone, so an error is its own request's
 * (unless the database is unavailable: that answer is everyone's at once).
 * Only creates without references or jobs combine (a reference's check
 * and a job's row belong to one request's statement); updates and deletes
 * run alone.
 */
#define COMBINE_MAX 32
#define COMBINE_INFLIGHT 2
#define COMBINE_SHAPES 8

enum combine_state { COMBINE_WAIT, COMBINE_LEAD, COMBINE_DONE, COMBINE_ALONE };

struct combine_wait {
    struct kiln_fiber *fiber;
    kiln_arena *arena;
    const kiln_str *params; /* the single create's */
    const char *id;
    enum combine_state state;
    int err;
    struct kiln_db_rows rows;
    struct combine_wait *next;
};

/* One shape's queue on one loop: the resource and the single create's
 * statement's hash (the fields it sets). */
struct combine_q {
    const struct kiln_resource *r;
    uint64_t hash;
    unsigned inflight;
    struct combine_wait *head, *tail;
};

static _Thread_local struct combine_q combine_qs[COMBINE_SHAPES];

static struct combine_q *combine_queue(const struct kiln_resource *r, uint64_t hash)
{
    struct combine_q *idle = NULL;
    for (size_t i = 0; i < COMBINE_SHAPES; i++) {
        struct combine_q *q = &combine_qs[i];
        if (q->r == r && q->hash == hash)
            return q;
        if (!idle && (!q->r || (!q->inflight && !q->head)))
            idle = q;
    }
    if (idle)
        *idle = (struct combine_q){ .r = r, .hash = hash };
    return idle; /* NULL: every place busy with another shape; run alone */
}

/* A create of q ended: the oldest queued one leads the next statement. */
static void combine_next(struct combine_q *q)
{
    q->inflight--;
    struct combine_wait *lead = q->head;
    if (!lead)
        return;
    q->head = lead->next;
    if (!q->head)
        q->tail = NULL;
    q->inflight++;
    lead->state = COMBINE_LEAD;
    kiln_fiber_wake(lead->fiber);
}

/* Row `row` of from as a one-row result in a's memory. */
static void rows_copy_one(kiln_arena *a, const struct kiln_db_rows *from, size_t row,
                          struct kiln_db_rows *to)
{
    size_t nc = from->ncols;
    to->nrows = 1;
    to->ncols = nc;
    to->affected = 1;
    to->cells = kiln_arena_alloc(a, (nc ? nc : 1) * sizeof *to->cells);
    to->names = kiln_arena_alloc(a, (nc ? nc : 1) * sizeof *to->names);
    for (size_t c = 0; c < nc; c++) {
        kiln_str v = from->cells[row * nc + c];
        to->cells[c] = (kiln_str){ v.p ? kiln_arena_strndup(a, v.p, v.len) : NULL, v.len };
        to->names[c] = kiln_arena_strndup(a, from->names[c], strlen(from->names[c]));
    }
}

/* The lead runs its own create and those queued behind it as one; each
 * ends DONE with its row (none if the statement wrote none), or ALONE when
 * it must run alone (the statement failed, or nobody else was queued). */
static void combine_lead(struct kiln_req *req, const struct kiln_resource *r,
                         const struct kiln_values *in, struct combine_q *q,
                         struct combine_wait *me, size_t width)
{
    kiln_arena *a = req->arena;
    struct combine_wait *batch[COMBINE_MAX];
    size_t n = 0;
    batch[n++] = me;
    size_t max = KILN_DB_MAX_PARAMS / width < COMBINE_MAX ? KILN_DB_MAX_PARAMS / width : COMBINE_MAX;
    while (n < max && q->head) {
        batch[n++] = q->head;
        q->head = q->head->next;
    }
    if (!q->head)
        q->tail = NULL;
    if (n == 1) {
        me->state = COMBINE_ALONE;
        return;
    }
    kiln_str *params = kiln_arena_alloc(a, n * width * sizeof *params);
    for (size_t m = 0; m < n; m++)
        memcpy(params + m * width, batch[m]->params, width * sizeof *params);
    struct kiln_db_rows rows;
    int err = kiln_db_query(app_db(req), a, kiln_sql_insert_many(a, r, in, n), params, n * width,
                            &rows);
    /* Each then runs alone, and its own error, if any, is answered and
     * logged as usual; this says why they did not go together. */
    if (err && kiln_err_status(err) != 503)
        kiln_log(KILN_LOG_WARNING, "combined creates failed; each runs alone", "resource",
                 r->name, "error", kiln_db_last_error(app_db(req)), NULL);
    /* The database unavailable (503: a timeout, a lost connection) is
     * everyone's answer at once: alone, each would wait out the same
     * timeout again. */
    bool outage = err && kiln_err_status(err) == 503;
    for (size_t m = 0; m < n; m++) {
        struct combine_wait *w = batch[m];
        if (outage) {
            w->state = COMBINE_DONE;
            w->err = err;
            w->rows = (struct kiln_db_rows){ 0 };
        } else if (err) {
            w->state = COMBINE_ALONE;
        } else {
            w->state = COMBINE_DONE;
            w->err = 0;
            w->rows = (struct kiln_db_rows){ 0 }; /* its row, if the statement wrote one */
            for (size_t i = 0; i < rows.nrows; i++) {
                kiln_str id = rows.cells[i * rows.ncols];
                if (id.p && id.len == strlen(w->id) && !memcmp(id.p, w->id, id.len)) {
                    rows_copy_one(w->arena, &rows, i, &w->rows);
                    break;
                }
            }
        }
        if (w != me)
            kiln_fiber_wake(w->fiber);
    }
}

/* Run the create (sql with p) alone or with others of its shape. */
static int create_query(struct kiln_req *req, const struct kiln_resource *r,
                        const struct kiln_values *in, const char *id, const char *sql,
                        const struct params *p, struct kiln_db_rows *rows)
{
    struct kiln_db *db = app_db(req);
    /* Combined only on a loop's fiber, and only with the parameters the
     * combined statement numbers (a create with job rows has more). */
    struct combine_q *q = kiln_fiber_self() && p->n == kiln_sql_insert_width(r, in)
                              ? combine_queue(r, kiln_db_sql_hash(sql))
                              : NULL;
    if (!q)
        return kiln_db_query(db, req->arena, sql, p->v, p->n, rows);
    if (q->inflight < COMBINE_INFLIGHT && !q->head) {
        q->inflight++;
        int err = kiln_db_query(db, req->arena, sql, p->v, p->n, rows);
        combine_next(q);
        return err;
    }
    struct combine_wait me = { .fiber = kiln_fiber_self(), .arena = req->arena, .params = p->v,
                               .id = id, .state = COMBINE_WAIT };
    if (q->tail)
        q->tail->next = &me;
    else
        q->head = &me;
    q->tail = &me;
    kiln_fiber_park();
    bool lead = me.state == COMBINE_LEAD;
    if (lead)
        combine_lead(req, r, in, q, &me, p->n);
    if (me.state == COMBINE_DONE) {
        if (lead)
            combine_next(q);
        *rows = me.rows;
        return me.err;
    }
    /* Alone: the lead keeps its place meanwhile; after a failed combined
     * statement each runs again by itself, for its own error. */
    int err = kiln_db_query(db, req->arena, sql, p->v, p->n, rows);
    if (lead)
        combine_next(q);
    return err;
}

/*
 * SQLite: creates share a commit. With synchronous=FULL each commit waits
 * for the disk, and every write is its own transaction (the row, its event
 * and its audit row). Writers on the worker threads therefore queue for
 * one: the first runs at once; those that arrive while it runs wait, and
 * the oldest of them then runs all that waited, one SAVEPOINT each, in one
 * BEGIN IMMEDIATE ... COMMIT on its own connection. A savepoint rolled back
 * undoes only its own create (its error is its own); the COMMIT answers
 * for all (nothing is answered before it).
 */
#define LITE_GROUP_MAX 64

struct lite_wait {
    struct kiln_req *req;
    const struct kiln_resource *r;
    const char *sql;
    const struct params *p;
    const struct kiln_write *w;
    struct kiln_db_rows *rows;
    int err;
    enum combine_state state;
    struct lite_wait *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy;
    struct lite_wait *head, *tail;
} lite_group = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, NULL, NULL };

/* One create inside the group's transaction (on db, the lead's). */
static int lite_group_one(struct kiln_db *db, struct lite_wait *m)
{
    int err = kiln_db_exec(db, "SAVEPOINT kiln_create");
    if (err)
        return err;
    err = kiln_db_query(db, m->req->arena, m->sql, m->p->v, m->p->n, m->rows);
    if (!err && m->rows->nrows)
        err = lite_after(m->req, m->r, "created", m->rows, m->w);
    if (err)
        kiln_db_exec(db, "ROLLBACK TO kiln_create");
    kiln_db_exec(db, "RELEASE kiln_create");
    return err;
}

static int lite_create(struct kiln_req *req, const struct kiln_resource *r, const char *sql,
                       const struct params *p, const struct kiln_write *w,
                       struct kiln_db_rows *rows)
{
    struct lite_wait me = { .req = req, .r = r, .sql = sql, .p = p, .w = w, .rows = rows,
                            .state = COMBINE_WAIT };
    pthread_mutex_lock(&lite_group.mu);
    if (lite_group.busy) {
        if (lite_group.tail)
            lite_group.tail->next = &me;
        else
            lite_group.head = &me;
        lite_group.tail = &me;
        while (me.state == COMBINE_WAIT)
            pthread_cond_wait(&lite_group.cv, &lite_group.mu);
        if (me.state == COMBINE_DONE) {
            pthread_mutex_unlock(&lite_group.mu);
            return me.err;
        }
    } else {
        lite_group.busy = true;
    }
    /* The lead: itself and every create queued now. */
    struct lite_wait *batch[LITE_GROUP_MAX];
    size_t n = 0;
    batch[n++] = &me;
    while (n < LITE_GROUP_MAX && lite_group.head) {
        batch[n++] = lite_group.head;
        lite_group.head = lite_group.head->next;
    }
    if (!lite_group.head)
        lite_group.tail = NULL;
    pthread_mutex_unlock(&lite_group.mu);

    struct kiln_db *db = app_db(req);
    int err = kiln_db_exec(db, "BEGIN IMMEDIATE");
    bool begin_failed = err != 0;
    for (size_t m = 0; m < n; m++) {
        /* A waiting request's statements run on the lead's connection
         * (app_db reads the request's context): its thread is parked until
         * this is done, so its request and arena are the lead's to use
         * meanwhile. */
        void *own = batch[m]->req->context;
        batch[m]->req->context = req->context;
        batch[m]->err = err ? err : lite_group_one(db, batch[m]);
        batch[m]->req->context = own;
        if (batch[m]->err)
            kiln_db_copy_error(app_db(batch[m]->req), db);
    }
    if (!err && (err = kiln_db_exec(db, "COMMIT")) != 0) {
        for (size_t m = 0; m < n; m++) {
            batch[m]->err = err;
            kiln_db_copy_error(app_db(batch[m]->req), db);
        }
        kiln_db_exec(db, "ROLLBACK");
    }

    pthread_mutex_lock(&lite_group.mu);
    for (size_t m = 0; m < n; m++)
        batch[m]->state = COMBINE_DONE;
    /* The write lock was not to be had for the whole busy timeout (or the
     * database is gone): those queued meanwhile get the same answer now,
     * instead of each group waiting out the timeout in turn. */
    while (begin_failed && lite_group.head) {
        struct lite_wait *q = lite_group.head;
        lite_group.head = q->next;
        q->err = err;
        kiln_db_copy_error(app_db(q->req), db);
        q->state = COMBINE_DONE;
    }
    if (!lite_group.head)
        lite_group.tail = NULL;
    if (lite_group.head) {
        struct lite_wait *lead = lite_group.head;
        lite_group.head = lead->next;
        if (!lite_group.head)
            lite_group.tail = NULL;
        lead->state = COMBINE_LEAD;
    } else {
        lite_group.busy = false;
    }
    pthread_cond_broadcast(&lite_group.cv);
    pthread_mutex_unlock(&lite_group.mu);
    return me.err;
}

void kiln_engine_create(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    const struct rt *t = rt_of(r);
    kiln_arena *a = req->arena;
    json_t *body = res_body_object(req, res);
    if (!body)
        return;
    struct kiln_values in;
    if (!read_input(req, res, r, body, true, &in)) {
        json_decref(body);
        return;
    }
    char *id = kiln_arena_alloc(a, KILN_UUID_LEN + 1);
    kiln_uuid_v4(id);
    struct kiln_write w = { .req = req, .res = res, .resource = r, .op = KILN_OP_CREATE, .id = id,
                            .body = body, .values = in.values, .set = in.set };
    if (run_hook(r->before_create, &w)) {
        json_decref(body);
        return;
    }
    /* A reference that is no UUID names no row: its 404, no statement. */
    for (size_t f = 0; f < r->nfields; f++) {
        bool bad = false;
        if (t->refs[f] && in.set[f])
            in.values[f] = ref_uuid(a, in.values[f], &bad);
        if (bad) {
            json_decref(body);
            not_found(req, res, t->refs[f]);
            return;
        }
    }
    /* Parameters in kiln_sql_insert's order: id, owner, now, then every
     * field written, in declaration order. */
    struct params p;
    params_init(&p, a, r->nfields + 7 + 2 * KILN_WRITE_MAX_JOBS);
    param(&p, id);
    param(&p, res_user_id(req));
    param(&p, res_now(a));
    for (size_t f = 0; f < r->nfields; f++)
        if (in.set[f])
            param(&p, in.values[f]);
    const char *sql = kiln_sql_insert(a, r, kiln_db_dialect(app_db(req)), &in);
    if (is_pg(req)) {
        size_t first_audit = p.n + 1;
        audit_params(req, &p);
        sql = kiln_sql_outbox(a, r, sql, "created", 2, first_audit, pg_jobs(a, "w", &w, &p));
    }
    struct kiln_db_rows rows = { 0 };
    int err;
    if (!is_pg(req))
        err = lite_create(req, r, sql, &p, &w, &rows);
    else if (!w.njobs && !sets_ref(r, &in))
        err = create_query(req, r, &in, id, sql, &p, &rows);
    else
        err = kiln_db_query(app_db(req), a, sql, p.v, p.n, &rows);
    if (err) {
        json_decref(body);
        store_error(req, res, r, err, "create");
        return;
    }
    kiln_events_notify();
    if (rows.nrows && w.njobs)
        kiln_jobs_notify();
    if (rows.nrows == 0) {
        const struct kiln_resource *ref = missing_ref(req, r, &in, &err);
        json_decref(body);
        if (err)
            store_error(req, res, r, err, "create");
        else
            not_found(req, res, ref ? ref : r);
        return;
    }
    cache_invalidate(req, r);
    w.row = &rows;
    if (!run_hook(r->after_create, &w))
        answer_row(req, res, r, 201, &rows, false);
    json_decref(body);
}

/* ---- update and actions ---- */

/* UPDATE the fields in `in` (and updated_at) of row id; answers. */
static void update_row(struct kiln_req *req, struct kiln_res *res, const struct kiln_resource *r,
                       const char *id, struct kiln_values *in, struct kiln_write *w)
{
    const struct rt *t = rt_of(r);
    kiln_arena *a = req->arena;
    if (run_hook(r->before_update, w))
        return;
    bool bad_ref = false;
    const struct kiln_resource *bad = NULL;
    for (size_t f = 0; f < r->nfields; f++)
        if (t->refs[f] && in->set[f]) {
            bool b = false;
            in->values[f] = ref_uuid(a, in->values[f], &b);
            if (b && !bad)
                bad = t->refs[f];
            bad_ref |= b;
        }
    int err;
    if (bad_ref) {
        /* A reference that is no UUID names no row: the row in the path is
         * named first, then the reference. */
        bool exists;
        if ((err = row_exists(req, r, id, &exists)))
            store_error(req, res, r, err, "update");
        else
            not_found(req, res, exists ? bad : r);
        return;
    }
    /* Parameters in kiln_sql_update's order: id, owner, every field
     * written in declaration order, then now. */
    struct params p;
    params_init(&p, a, r->nfields + 7 + 2 * KILN_WRITE_MAX_JOBS);
    param(&p, id);
    param(&p, res_user_id(req));
    for (size_t f = 0; f < r->nfields; f++)
        if (in->set[f])
            param(&p, in->values[f]);
    param(&p, res_now(a));
    bool refs = sets_ref(r, in);
    const char *action = event_action(r, w->op, w->action);
    const char *sql = kiln_sql_update(a, r, kiln_db_dialect(app_db(req)), in);
    if (is_pg(req)) {
        size_t first_audit = p.n + 1;
        audit_params(req, &p);
        sql = kiln_sql_outbox(a, r, sql, action, 2, first_audit, pg_jobs(a, "w", w, &p));
    }
    struct kiln_db_rows rows;
    err = lite_begin(req);
    if (!err)
        err = kiln_db_query(app_db(req), a, sql, p.v, p.n, &rows);
    if (!err && rows.nrows)
        err = lite_finish(req, r, action, &rows, w);
    else
        err = lite_end(req, err, false);
    if (err) {
        store_error(req, res, r, err, "update");
        return;
    }
    if (rows.nrows)
        kiln_events_notify();
    if (rows.nrows && w->njobs)
        kiln_jobs_notify();
    if (rows.nrows == 0) {
        /* The row is missing, or (only when the write set a reference) the
         * referenced row is: the row in the path is named first. */
        bool exists = false;
        const struct kiln_resource *ref = NULL;
        if (refs && !(err = row_exists(req, r, id, &exists)) && exists)
            ref = missing_ref(req, r, in, &err);
        if (err)
            store_error(req, res, r, err, "update");
        else
            not_found(req, res, exists && ref ? ref : r);
        return;
    }
    cache_invalidate(req, r);
    w->row = &rows;
    if (!run_hook(r->after_update, w))
        answer_row(req, res, r, 200, &rows, false);
}

void kiln_engine_update(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    const char *id = res_id(req, res, r->not_found_code, r->not_found_message);
    if (!id)
        return;
    json_t *body = res_body_object(req, res);
    if (!body)
        return;
    struct kiln_values in;
    if (read_input(req, res, r, body, false, &in)) {
        struct kiln_write w = { .req = req, .res = res, .resource = r, .op = KILN_OP_UPDATE,
                                .id = id, .body = body, .values = in.values, .set = in.set };
        update_row(req, res, r, id, &in, &w);
    }
    json_decref(body);
}

/* The action of this route: the last segment of its path. */
static const struct kiln_action *route_action(const struct kiln_req *req,
                                              const struct kiln_resource *r)
{
    const char *slash = strrchr(req->route->path, '/');
    for (size_t i = 0; slash && i < r->nactions; i++)
        if (!strcmp(r->actions[i].name, slash + 1))
            return &r->actions[i];
    return NULL;
}

void kiln_engine_action(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    const struct kiln_action *ac = route_action(req, r);
    const char *id = res_id(req, res, r->not_found_code, r->not_found_message);
    if (!id)
        return;
    struct kiln_values in;
    values_init(req->arena, r, &in);
    int f = kiln_resource_field(r, ac->field);
    in.values[f] = ac->value;
    in.set[f] = true;
    struct kiln_write w = { .req = req, .res = res, .resource = r, .op = KILN_OP_ACTION,
                            .action = ac->name, .id = id, .values = in.values, .set = in.set };
    update_row(req, res, r, id, &in, &w);
}

/* ---- delete ---- */

/* SQLite: the rows the cascade will remove are read first, in the same
 * IMMEDIATE transaction, so each gets its deleted event. */
static int lite_delete(struct kiln_req *req, const struct kiln_resource *r, const char *id,
                       bool *deleted, const struct kiln_write *w)
{
    kiln_arena *a = req->arena;
    struct kiln_db *db = app_db(req);
    const struct rt *t = rt_of(r);
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    int err = lite_begin(req);
    if (err)
        return err;
    struct kiln_db_rows *gone = kiln_arena_alloc(a, (t->ncascade + 1) * sizeof *gone);
    const char *base = kiln_arena_sprintf(a, "SELECT id FROM %s WHERE id = $1 AND " OWNER_COLUMN
                                          " = $2", r->name);
    for (size_t k = 0; !err && k < t->ncascade; k++) {
        kiln_buf b;
        kiln_buf_init(&b, 1 << 20);
        append_cascade_ids(&b, t, k, base);
        err = kiln_db_query(db, a, buf_text(a, &b), p, 2, &gone[k]);
    }
    struct kiln_db_rows rows;
    if (!err)
        err = kiln_db_query(db, a, kiln_sql_delete(a, r, KILN_DB_SQLITE, NULL), p, 2, &rows);
    *deleted = !err && rows.affected > 0;
    if (*deleted)
        err = lite_record(req, r, "deleted", id, NULL);
    for (size_t k = 0; *deleted && !err && k < t->ncascade; k++)
        for (size_t i = 0; !err && i < gone[k].nrows; i++) {
            kiln_str cid = kiln_db_text(&gone[k], i, 0);
            err = lite_event(req, t->cascade[k], "deleted",
                             kiln_arena_strndup(a, cid.p, cid.len));
        }
    if (*deleted && !err)
        err = lite_jobs(req, w);
    err = lite_end(req, err, *deleted);
    if (err)
        *deleted = false;
    return err;
}

void kiln_engine_delete(struct kiln_req *req, struct kiln_res *res)
{
    const struct kiln_resource *r = kiln_route_resource(req);
    if (!schema_ready(req, res))
        return;
    const char *id = res_id(req, res, r->not_found_code, r->not_found_message);
    if (!id)
        return;
    struct kiln_write w = { .req = req, .res = res, .resource = r, .op = KILN_OP_DELETE, .id = id };
    if (run_hook(r->before_delete, &w))
        return;
    kiln_arena *a = req->arena;
    struct params p;
    params_init(&p, a, 5 + 2 * KILN_WRITE_MAX_JOBS);
    param(&p, id);
    param(&p, res_user_id(req));
    struct kiln_db_rows rows;
    bool deleted = false;
    int err;
    if (is_pg(req)) {
        audit_params(req, &p);
        const char *sql = kiln_sql_delete(a, r, KILN_DB_POSTGRES, pg_jobs(a, "d", &w, &p));
        err = kiln_db_query(app_db(req), a, sql, p.v, p.n, &rows);
        int64_t n = 0;
        deleted = !err && rows.nrows == 1 && kiln_db_int64(&rows, 0, 0, &n) && n > 0;
    } else {
        err = lite_delete(req, r, id, &deleted, &w);
    }
    if (err) {
        store_error(req, res, r, err, "delete");
        return;
    }
    if (!deleted) {
        not_found(req, res, r);
        return;
    }
    kiln_events_notify();
    if (w.njobs)
        kiln_jobs_notify();
    /* Rows that referenced it went with it (ON DELETE CASCADE). */
    cache_invalidate(req, r);
    const struct rt *t = rt_of(r);
    for (size_t i = 0; i < t->ncascade; i++)
        cache_invalidate(req, t->cascade[i]);
    if (!run_hook(r->after_delete, &w))
        res_no_content(res);
}

/* ---- routes ---- */

size_t kiln_engine_routes(struct kiln_route *out, size_t cap)
{
    size_t n = 0;
#define ADD(m, path, fn, d)                                                                      \
    do {                                                                                         \
        if (n < cap)                                                                             \
            out[n] = (struct kiln_route){ m, KILN_SCOPE_API, path, kiln_guard_session, fn, 0,  \
                                          d };                                                   \
        n++;                                                                                     \
    } while (0)
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        const struct rt *t = rt_of(r);
        (void)t;
        char *coll = NULL, *item = NULL;
        if (cap) {
            coll = dup_printf("/%s", r->name);
            item = dup_printf("/%s/:id", r->name);
        }
        ADD(KILN_GET, coll, kiln_engine_list, r);
        ADD(KILN_POST, coll, kiln_engine_create, r);
        ADD(KILN_GET, item, kiln_engine_show, r);
        ADD(KILN_PUT, item, kiln_engine_update, r);
        ADD(KILN_PATCH, item, kiln_engine_update, r);
        ADD(KILN_DELETE, item, kiln_engine_delete, r);
        for (size_t j = 0; j < r->nactions; j++) {
            const struct kiln_action *ac = &r->actions[j];
            char *path = cap ? dup_printf("/%s/:id/%s", r->name, ac->name) : NULL;
            ADD(ac->handler ? ac->method : KILN_POST, path,
                ac->handler ? ac->handler : kiln_engine_action, r);
        }
    }
#undef ADD
    return n;
}

/* ---- the database's columns ---- */

/* Whether a column's type as the database names it can hold field type t
 * (or a standard column: t < 0 for uuid, -2 for timestamps). */
static bool type_fits(bool pg, int t, const char *db_type)
{
    char low[64];
    size_t i;
    for (i = 0; db_type[i] && i < sizeof low - 1; i++)
        low[i] = (char)tolower((unsigned char)db_type[i]);
    low[i] = '\0';
    if (!pg) {
        /* SQLite's declared types, by affinity (the migrations use TEXT
         * and INTEGER). */
        bool integer = strstr(low, "int") != NULL;
        bool text = strstr(low, "text") || strstr(low, "char") || strstr(low, "clob");
        switch (t) {
        case KILN_INTEGER:
        case KILN_BOOLEAN: return integer;
        default: return text;
        }
    }
    switch (t) {
    case KILN_TEXT:
    case KILN_ENUM: return !strcmp(low, "text") || !strcmp(low, "character varying");
    case KILN_INTEGER:
        return !strcmp(low, "bigint") || !strcmp(low, "integer") || !strcmp(low, "smallint");
    case KILN_BOOLEAN: return !strcmp(low, "boolean");
    case KILN_DATE: return !strcmp(low, "date");
    case KILN_TIMESTAMP:
    case -2: return !strcmp(low, "timestamp with time zone");
    case KILN_UUID:
    case KILN_REFERENCE:
    case -1: return !strcmp(low, "uuid");
    case KILN_JSON: return !strcmp(low, "jsonb") || !strcmp(low, "json");
    }
    return false;
}

static const char *field_type_name(int t)
{
    static const char *const names[] = { "text", "integer", "boolean", "date", "timestamp",
                                         "uuid", "enum", "json", "reference" };
    if (t == -1)
        return "uuid";
    if (t == -2)
        return "timestamp";
    return t >= 0 && t < (int)(sizeof names / sizeof names[0]) ? names[t] : "?";
}

/* The comparison's statements read the catalogue: quick, or the database
 * is in trouble, and then the next request compares again. Bounded like a
 * health check, so a warm-up never holds a drain for a query timeout. */
#define VERIFY_TIMEOUT_MS 2000

int kiln_resources_verify(struct kiln_db *db, kiln_arena *a, char *err, size_t errlen)
{
    bool pg = kiln_db_dialect(db) == KILN_DB_POSTGRES;
    /* A database never migrated is not a mismatch of code and schema: it
     * is one `kiln migrate` away (store/migrate.h records every migration
     * in schema_migrations). */
    struct kiln_db_rows mig;
    int mrc = kiln_db_query_timeout(db, a,
                            pg ? "SELECT 1 FROM information_schema.tables WHERE table_name = "
                                 "'schema_migrations' AND table_schema = current_schema()"
                               : "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                                 "'schema_migrations'",
                            NULL, 0, &mig, VERIFY_TIMEOUT_MS);
    if (mrc) {
        snprintf(err, errlen, "reading the database's tables failed: %s",
                 kiln_db_last_error(db));
        return mrc;
    }
    if (mig.nrows == 0) {
        snprintf(err, errlen, "the database has no migrations applied (run kiln migrate)");
        return KILN_ENOTFOUND;
    }
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        kiln_str p[1] = { kiln_str_c(r->name) };
        struct kiln_db_rows rows;
        int rc = kiln_db_query_timeout(db, a,
                               pg ? "SELECT column_name, data_type, is_nullable FROM "
                                    "information_schema.columns WHERE table_name = $1 AND "
                                    "table_schema = current_schema()"
                                  : "SELECT name, type, CASE WHEN \"notnull\" = 0 THEN 'YES' "
                                    "ELSE 'NO' END FROM pragma_table_info($1)",
                               p, 1, &rows, VERIFY_TIMEOUT_MS);
        if (rc) {
            snprintf(err, errlen, "resource %s: reading the columns of table %s failed: %s",
                     r->name, r->name, kiln_db_last_error(db));
            return rc;
        }
        if (rows.nrows == 0) {
            snprintf(err, errlen, "resource %s: table %s does not exist (a migration missing?)",
                     r->name, r->name);
            return KILN_EINVAL;
        }
        size_t n = r->nfields + 4;
        for (size_t c = 0; c < n; c++) {
            const char *name;
            int type;
            bool nullable = false;
            if (c < 4) {
                static const char *const std[] = { "id", OWNER_COLUMN, "inserted_at",
                                                   "updated_at" };
                name = std[c];
                type = c < 2 ? -1 : -2;
            } else {
                const struct kiln_field *fd = &r->fields[c - 4];
                name = fd->name;
                type = (int)fd->type;
                nullable = (fd->flags & KILN_NULLABLE) != 0;
            }
            size_t row;
            for (row = 0; row < rows.nrows; row++)
                if (kiln_str_eq_c(kiln_db_text(&rows, row, 0), name))
                    break;
            if (row == rows.nrows) {
                snprintf(err, errlen, "resource %s: column %s.%s does not exist", r->name,
                         r->name, name);
                return KILN_EINVAL;
            }
            kiln_str dt = kiln_db_text(&rows, row, 1);
            char dtype[64];
            snprintf(dtype, sizeof dtype, "%.*s", (int)dt.len, dt.p ? dt.p : "");
            if (!type_fits(pg, type, dtype)) {
                snprintf(err, errlen,
                         "resource %s: column %s.%s is %s, which cannot hold the declared %s",
                         r->name, r->name, name, dtype[0] ? dtype : "untyped",
                         field_type_name(type));
                return KILN_EINVAL;
            }
            if (nullable && kiln_str_eq_c(kiln_db_text(&rows, row, 2), "NO")) {
                snprintf(err, errlen,
                         "resource %s: column %s.%s is NOT NULL, but the field is nullable",
                         r->name, r->name, name);
                return KILN_EINVAL;
            }
        }
    }
    return 0;
}

/* 0: not compared yet, 1: being compared, 2: the columns match. */
static atomic_int schema_state;

void kiln_resources_verified(void)
{
    atomic_store(&schema_state, 2);
}

bool kiln_resources_verify_once(struct kiln_db *db)
{
    static atomic_bool told;
    int expected = 0;
    if (!db || !atomic_compare_exchange_strong(&schema_state, &expected, 1))
        return true; /* compared already, or being compared right now */
    kiln_arena *a = kiln_arena_new(64 * 1024);
    char err[512];
    int rc = kiln_resources_verify(db, a, err, sizeof err);
    kiln_arena_free(a);
    if (rc == KILN_EINVAL) {
        /* The code and the database disagree: every request on that
         * resource would be a 500. Stop now, with the reason, so the
         * deployment fails instead of the requests. */
        kiln_log(KILN_LOG_ERROR, "declared resources do not match the database; exiting",
                 "error", err, NULL);
        _exit(1);
    }
    /* Not migrated yet, or unreachable: compare again with the next
     * request. */
    atomic_store(&schema_state, rc ? 0 : 2);
    if (rc == KILN_ENOTFOUND && !atomic_exchange(&told, true))
        kiln_log(KILN_LOG_WARNING,
                 "the database has no migrations applied: resources answer 503 until "
                 "kiln migrate has run",
                 NULL);
    return rc != KILN_ENOTFOUND;
}
