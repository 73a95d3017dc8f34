/*
 * libFuzzer target for what the resource handlers make of client input
 * (api/resource.c, api/engine.c): any bytes as a JSON body through the
 * field validators, and through the engine's validation of every declared
 * resource (create and update), and any bytes as a due date, an id and a
 * search term. The engine's oracle: every value it accepts is one its
 * field's declaration allows (type, bounds, enum values). Oracles: a value res_string accepts is a NUL-free string
 * within its character limits; a date res_calendar_date accepts round-trips
 * through timegm unchanged; a LIKE pattern has every %, _ and \ of the term
 * escaped.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/engine.h"
#include "api/resource.h"
#include "core/arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t chars(const char *s)
{
    size_t c = 0;
    for (; *s; s++)
        c += ((unsigned char)*s & 0xC0) != 0x80;
    return c;
}

static void fields(const char *text, size_t len)
{
    json_error_t e;
    json_t *in = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!json_is_object(in)) {
        json_decref(in);
        return;
    }
    static const struct { const char *field; size_t min, max; } rules[] = {
        { "title", 1, 255 }, { "content", 0, 10000 }, { "name", 1, 120 }, { "status", 1, 20 },
    };
    struct res_errors errs = { 0 };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const char *out = NULL;
        if (res_string(in, rules[i].field, i % 2 == 1, rules[i].min, rules[i].max, &errs,
                       &out) &&
            out) {
            json_t *v = json_object_get(in, rules[i].field);
            size_t n = chars(out);
            if (strlen(out) != json_string_length(v) || n < rules[i].min || n > rules[i].max)
                abort(); /* accepted a NUL or a length outside the limits */
        }
    }
    bool b;
    res_bool(in, "archived", &errs, &b);
    json_decref(errs.details);
    json_decref(in);
}

/* A value kiln_resource_input accepted for field f, checked against the
 * declaration. */
static void allowed(kiln_arena *a, const struct kiln_field *f, const char *v)
{
    if (!v) {
        if (!(f->flags & KILN_NULLABLE) && f->def)
            abort(); /* NULL where the declaration has a default */
        return;
    }
    size_t n = strlen(v);
    switch (f->type) {
    case KILN_TEXT:
        if (chars(v) < f->min_len || (f->max_len && chars(v) > f->max_len))
            abort();
        break;
    case KILN_ENUM: {
        bool known = false;
        for (const char *const *e = f->values; *e; e++)
            known |= !strcmp(*e, v);
        if (!known)
            abort();
        break;
    }
    case KILN_BOOLEAN:
        if (strcmp(v, "0") && strcmp(v, "1"))
            abort();
        break;
    case KILN_DATE:
        if (!res_calendar_date(kiln_str_c(v)))
            abort();
        break;
    case KILN_INTEGER: {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (*end || ((f->flags & KILN_BOUNDED) && (x < f->min || x > f->max)))
            abort();
        break;
    }
    case KILN_UUID:
        if (n != 36 || !res_uuid(a, kiln_str_c(v)))
            abort();
        break;
    default:
        break;
    }
}

static void declared(const char *text, size_t len, bool create)
{
    json_t *in = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        return;
    }
    kiln_arena *a = kiln_arena_new(4096);
    for (size_t i = 0; i < kiln_resources_count; i++) {
        const struct kiln_resource *r = kiln_resources[i];
        struct kiln_values v;
        struct res_errors e = { 0 };
        const char *missing;
        bool ok = kiln_resource_input(a, r, in, create, &v, &e, &missing);
        if (ok != (e.details == NULL && missing == NULL))
            abort(); /* refused without saying why, or the reverse */
        for (size_t f = 0; ok && f < r->nfields; f++)
            if (v.set[f] && r->fields[f].type != KILN_REFERENCE)
                allowed(a, &r->fields[f], v.values[f]);
        json_decref(e.details);
    }
    kiln_arena_free(a);
    json_decref(in);
}

static void date(kiln_str s)
{
    if (!res_calendar_date(s))
        return;
    struct tm tm = { 0 };
    char buf[11];
    memcpy(buf, s.p, 10);
    buf[10] = '\0';
    tm.tm_year = atoi(buf) - 1900;
    tm.tm_mon = atoi(buf + 5) - 1;
    tm.tm_mday = atoi(buf + 8);
    time_t t = timegm(&tm);
    struct tm back;
    char again[32];
    gmtime_r(&t, &back);
    snprintf(again, sizeof again, "%04d-%02d-%02d", back.tm_year + 1900, back.tm_mon + 1,
             back.tm_mday);
    if (strcmp(again, buf) != 0)
        abort(); /* accepted a day that does not exist */
}

static void pattern(kiln_str s)
{
    kiln_arena *a = kiln_arena_new(256);
    const char *p = res_like_pattern(a, s);
    size_t n = strlen(p);
    if (n < 2 || p[0] != '%' || p[n - 1] != '%')
        abort();
    /* Between the outer %, every %, _ and \ comes escaped. */
    for (size_t i = 1; i + 1 < n; i++) {
        if (p[i] == '\\') {
            if (p[i + 1] != '%' && p[i + 1] != '_' && p[i + 1] != '\\')
                abort();
            i++;
        } else if (p[i] == '%' || p[i] == '_') {
            abort();
        }
    }
    kiln_arena_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kiln_str in = { (const char *)data + 1, size - 1 };
    switch (data[0] % 5) {
    case 0:
        fields(in.p, in.len);
        break;
    case 3:
    case 4:
        declared(in.p, in.len, data[0] % 5 == 3);
        break;
    case 1:
        date(in);
        break;
    default:
        if (!memchr(in.p, '\0', in.len))
            pattern(in);
        break;
    }
    return 0;
}
