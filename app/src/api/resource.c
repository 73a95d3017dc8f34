/* Helpers shared by the resource handlers; see resource.h. */
#include "api/resource.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/app.h"
#include "auth/session.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/uuid.h"

const char *res_user_id(const struct kiln_req *req)
{
    const struct kiln_session *s = req->session;
    return s ? s->user_id : NULL;
}

json_t *res_body_object(struct kiln_req *req, struct kiln_res *res)
{
    json_error_t jerr;
    /* No body at all reads as {}, as Plug's JSON parser reads it: the
     * original's clients send bodyless writes (guard.c lets them through
     * the CSRF check), and a bodyless update changes nothing. */
    if (req->body.len == 0)
        return json_object();
    /* Any JSON value parses (a scalar is then "not an object", not "not
     * JSON"); strings may hold \u0000, which res_string refuses with a 422. */
    json_t *in = json_loadb(req->body.p, req->body.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!in) {
        kiln_res_error(req, res, 400, "invalid_json", "Invalid JSON", NULL);
        return NULL;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        kiln_res_error(req, res, 400, "invalid_request", "Body must be a JSON object", NULL);
        return NULL;
    }
    return in;
}

void res_error(struct res_errors *e, const char *field, const char *message)
{
    if (!e->details)
        e->details = json_object();
    json_t *list = json_object_get(e->details, field);
    if (!list) {
        list = json_array();
        json_object_set_new(e->details, field, list);
    }
    json_array_append_new(list, json_string(message));
}

bool res_errors_answer(struct kiln_req *req, struct kiln_res *res, struct res_errors *e)
{
    if (!e->details)
        return false;
    kiln_res_error(req, res, 422, "validation_failed", "Validation failed", e->details);
    e->details = NULL;
    return true;
}

/* Code points in well-formed UTF-8 (jansson's strings are). */
static size_t chars_of(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Unicode White_Space beyond ASCII (NEL, no-break, ogham, the U+2000
 * spaces, line/paragraph separators, narrow no-break, math, ideographic). */
static bool unicode_space(uint32_t c)
{
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Only whitespace, as Ecto's validate_required sees blank (well-formed
 * UTF-8 assumed: jansson's strings are). */
static bool blank(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        uint32_t c = *p;
        size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (len > (size_t)(end - p))
            return false;
        if (len == 2)
            c = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
        else if (len == 3)
            c = (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
        else if (len == 4)
            c = 0x10000; /* no space above the BMP */
        if (len == 1 ? !isspace((int)c) : !unicode_space(c))
            return false;
        p += len;
    }
    return true;
}

bool res_string(json_t *obj, const char *field, bool null_ok, size_t min, size_t max,
                struct res_errors *e, const char **out)
{
    json_t *v = json_object_get(obj, field);
    *out = NULL;
    if (!v)
        return false;
    if (json_is_null(v)) {
        if (null_ok)
            return true; /* present, *out NULL */
        res_error(e, field, min > 0 ? "can't be blank" : "is invalid");
        return false;
    }
    if (!json_is_string(v)) {
        res_error(e, field, "is invalid");
        return false;
    }
    const char *s = json_string_value(v);
    size_t bytes = json_string_length(v);
    /* Lengths count characters, as the original's validations do. */
    size_t chars = chars_of(s, bytes);
    if (memchr(s, '\0', bytes)) {
        res_error(e, field, "is invalid"); /* \u0000: text columns cannot hold it */
        return false;
    }
    if (min > 0 && (bytes == 0 || blank(s, bytes))) {
        res_error(e, field, "can't be blank");
        return false;
    }
    if (chars < min || chars > max) {
        char msg[96];
        if (chars < min)
            snprintf(msg, sizeof msg, "should be at least %zu character(s)", min);
        else
            snprintf(msg, sizeof msg, "should be at most %zu character(s)", max);
        res_error(e, field, msg);
        return false;
    }
    *out = s;
    return true;
}

bool res_bool(json_t *obj, const char *field, struct res_errors *e, bool *out)
{
    json_t *v = json_object_get(obj, field);
    if (!v)
        return false;
    if (!json_is_boolean(v)) {
        res_error(e, field, "is invalid");
        return false;
    }
    *out = json_is_true(v);
    return true;
}

void res_not_found(struct kiln_req *req, struct kiln_res *res, const char *code,
                   const char *message)
{
    kiln_res_error(req, res, 404, code, message, NULL);
}

/* Lower case: SQLite compares the stored text byte for byte. */
const char *res_uuid(kiln_arena *a, kiln_str s)
{
    if (!s.p || s.len != KILN_UUID_LEN || !kiln_uuid_valid(s))
        return NULL;
    char *out = kiln_arena_strndup(a, s.p, s.len);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

const char *res_id(struct kiln_req *req, struct kiln_res *res, const char *code,
                   const char *message)
{
    const char *id = res_uuid(req->arena, kiln_req_param(req, "id"));
    if (!id)
        res_not_found(req, res, code, message);
    return id;
}

bool res_query_uint(struct kiln_req *req, struct kiln_res *res, const char *name,
                    unsigned def, unsigned min, unsigned max, unsigned *out)
{
    kiln_str v;
    uint64_t n;
    if (!kiln_req_query(req, name, &v) || v.len == 0) {
        *out = def;
        return true;
    }
    if (!kiln_str_to_u64(v, UINT64_MAX, &n) || n < min) {
        kiln_res_error(req, res, 400, "invalid_request",
                       kiln_arena_sprintf(req->arena, "%s must be an integer of at least %u",
                                          name, min),
                       NULL);
        return false;
    }
    *out = n > max ? max : (unsigned)n;
    return true;
}

bool res_time_text(const struct kiln_db_rows *r, size_t row, size_t col,
                   char out[KILN_RFC3339_LEN + 1])
{
    int64_t us;
    if (!kiln_db_timestamp(r, row, col, &us))
        return false;
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
    kiln_time_rfc3339(out, &ts);
    return true;
}

const char *res_now(kiln_arena *a)
{
    char *out = kiln_arena_alloc(a, KILN_RFC3339_LEN + 1);
    kiln_time_rfc3339_now(out);
    return out;
}

const char *res_audit_text(kiln_arena *a, kiln_str s)
{
    if (!s.p)
        return NULL;
    size_t n = s.len < RES_AUDIT_TEXT_MAX ? s.len : RES_AUDIT_TEXT_MAX;
    char *out = kiln_arena_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[n] = '\0';
    return out;
}

void res_store_error(struct kiln_req *req, struct kiln_res *res, int err, const char *what)
{
    kiln_res_fail(req, res, err, "Database", what, kiln_db_last_error(app_db(req)));
}

void res_no_content(struct kiln_res *res)
{
    res->status = 204;
    res->body = (kiln_str){ "", 0 };
}

bool res_fetch_owned(struct kiln_req *req, struct kiln_res *res, const char *table,
                     const char *columns, const char *code, const char *message,
                     struct kiln_db_rows *row)
{
    const char *id = res_id(req, res, code, message);
    if (!id)
        return false;
    kiln_str p[2] = { kiln_str_c(id), kiln_str_c(res_user_id(req)) };
    int err = kiln_db_query(app_db(req), req->arena,
                            kiln_arena_sprintf(req->arena,
                                               "SELECT %s FROM %s WHERE id = $1 AND user_id = $2",
                                               columns, table),
                            p, 2, row);
    if (err) {
        res_store_error(req, res, err, kiln_arena_sprintf(req->arena, "%s show", table));
        return false;
    }
    if (row->nrows == 0) {
        res_not_found(req, res, code, message);
        return false;
    }
    return true;
}

static bool digits(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *out = *out * 10 + (s[i] - '0');
    }
    return true;
}

bool res_calendar_date(kiln_str s)
{
    static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, m, d;
    if (s.len != 10 || s.p[4] != '-' || s.p[7] != '-' || !digits(s.p, 4, &y) ||
        !digits(s.p + 5, 2, &m) || !digits(s.p + 8, 2, &d))
        return false;
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap);
}

const char *res_like_pattern(kiln_arena *a, kiln_str s)
{
    char *out = kiln_arena_alloc(a, 2 * s.len + 3), *w = out;
    *w++ = '%';
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (c == '%' || c == '_' || c == '\\')
            *w++ = '\\';
        *w++ = c;
    }
    *w++ = '%';
    *w = '\0';
    return out;
}
