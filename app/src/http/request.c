/* Accessors and decoding for struct kiln_req. */
#include "http/request.h"

#include <string.h>

kiln_str kiln_req_header(const struct kiln_req *req, const char *name)
{
    kiln_str n = kiln_str_c(name);
    for (size_t i = 0; i < req->nheaders; i++)
        if (kiln_str_eq(req->headers[i].name, n))
            return req->headers[i].value;
    return KILN_STR_NULL;
}

kiln_str kiln_req_param(const struct kiln_req *req, const char *name)
{
    kiln_str n = kiln_str_c(name);
    for (size_t i = 0; i < req->nparams; i++)
        if (kiln_str_eq(req->params[i].name, n))
            return req->params[i].value;
    return KILN_STR_NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool kiln_url_decode(kiln_arena *a, kiln_str s, bool plus_is_space, kiln_str *out)
{
    char *d = kiln_arena_alloc(a, s.len + 1);
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= s.len)
                return false;
            hi = hexval(s.p[i + 1]);
            lo = hexval(s.p[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            d[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '\0') {
            return false; /* raw or encoded, NUL never reaches a handler */
        } else if (c == '+' && plus_is_space) {
            d[n++] = ' ';
        } else {
            d[n++] = c;
        }
    }
    d[n] = '\0';
    *out = (kiln_str){ d, n };
    return true;
}

bool kiln_query_valid(kiln_str q)
{
    for (size_t i = 0; i < q.len; i++) {
        if (q.p[i] == '\0')
            return false;
        if (q.p[i] != '%')
            continue;
        if (i + 2 >= q.len)
            return false;
        int hi = hexval(q.p[i + 1]), lo = hexval(q.p[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return false;
        i += 2;
    }
    return true;
}

bool kiln_form_value(kiln_arena *a, kiln_str data, const char *name, kiln_str *out)
{
    size_t nlen = strlen(name);
    if (!data.p)
        return false;
    const char *p = data.p, *end = p + data.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        kiln_str key = { p, (size_t)((eq ? eq : pe) - p) };
        kiln_str dkey;
        /* Keys are compared decoded, so "detail%65d" is "detailed". */
        if (kiln_url_decode(a, key, true, &dkey) && dkey.len == nlen &&
            memcmp(dkey.p, name, nlen) == 0) {
            kiln_str val = eq ? (kiln_str){ eq + 1, (size_t)(pe - eq - 1) } : KILN_STR("");
            return kiln_url_decode(a, val, true, out);
        }
        p = amp ? amp + 1 : end;
    }
    return false;
}

bool kiln_req_query(const struct kiln_req *req, const char *name, kiln_str *out)
{
    return kiln_form_value(req->arena, req->query, name, out);
}

static const struct {
    const char *name;
    enum kiln_method m;
} methods[] = {
    { "GET", KILN_GET }, { "HEAD", KILN_HEAD }, { "POST", KILN_POST },
    { "PUT", KILN_PUT }, { "PATCH", KILN_PATCH }, { "DELETE", KILN_DELETE },
    { "OPTIONS", KILN_OPTIONS },
};

enum kiln_method kiln_method_parse(kiln_str name)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (kiln_str_eq_c(name, methods[i].name))
            return methods[i].m;
    return KILN_METHOD_OTHER;
}

const char *kiln_method_name(enum kiln_method m)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].m == m)
            return methods[i].name;
    return "OTHER";
}

bool kiln_request_id_valid(kiln_str id)
{
    if (id.len == 0 || id.len > KILN_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        char c = id.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}
