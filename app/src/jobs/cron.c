/*
 * Cron expressions (jobs/cron.h). The parser walks each field once and
 * names the field and the fragment it stopped at; kiln_cron_next skips
 * whole months and days that cannot match and picks the hour and minute
 * from the bit sets, so a 5-year search that finds nothing takes a step
 * per month ruled out and per day in the others (a few microseconds for
 * "0 0 31 2,4,6,9,11 *"), not 2.6 million minutes. Dates come from
 * core/clock.h's civil arithmetic: UTC only, no time-zone lock, no DST.
 */
#include "jobs/cron.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/err.h"

/* "Within 5 years": the day of the minute after t and the 1826 after it
 * (5 x 365.25). */
#define HORIZON_DAYS 1827
/* Fragments of the expression quoted in messages keep their last
 * QUOTE_MAX bytes, each shown as up to 4 ("\xNN"). */
#define QUOTE_MAX 40
#define QUOTE_BUF (QUOTE_MAX * 4 + 6)

struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* the names of lo, lo + 1, ...; NULL: numbers only */
    int nnames;
};

static const char *const MONTH_NAMES[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                           "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
static const char *const WDAY_NAMES[] = { "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT" };

/* Day of week 0-7 as in Vixie cron: '*' and "a/n" run to 7, which is
 * Sunday again, so "*" and "0-7" are the same set. */
static const struct field FIELDS[5] = {
    { "minute", 0, 59, NULL, 0 },
    { "hour", 0, 23, NULL, 0 },
    { "day-of-month", 1, 31, NULL, 0 },
    { "month", 1, 12, MONTH_NAMES, 12 },
    { "day-of-week", 0, 7, WDAY_NAMES, 7 },
};

static const struct {
    const char *name, *expansion;
} MACROS[] = {
    { "@yearly", "0 0 1 1 *" },  { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
    { "@weekly", "0 0 * * 0" },  { "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
    { "@hourly", "0 * * * *" },
};

/* One field being read: its rules, its text and where messages go. */
struct reader {
    const struct field *f;
    const char *start, *end;
    char *err;
    size_t errlen;
};

/* A value as written: its text stays for the messages. */
struct tok {
    int v;
    const char *s;
    int n;
};

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static int vfail(char *err, size_t errlen, const char *prefix, const char *fmt, va_list ap)
{
    if (errlen) {
        int n = snprintf(err, errlen, "%s", prefix);
        if (n >= 0 && (size_t)n < errlen)
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    }
    return KILN_EINVAL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(err, errlen, "", fmt, ap);
    va_end(ap);
    return rc;
}

/* A message about the field being read: "minute field: ...". */
static int field_fail(const struct reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int field_fail(const struct reader *r, const char *fmt, ...)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s field: ", r->f->name);
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(r->err, r->errlen, prefix, fmt, ap);
    va_end(ap);
    return rc;
}

/* p[0..n) in double quotes, its last QUOTE_MAX bytes after "..." when
 * longer (the end is where the trouble is). The text is untrusted and the
 * message may reach a log or a response: bytes outside printable ASCII
 * show as \xNN. */
static const char *quote(char out[QUOTE_BUF], const char *p, size_t n)
{
    size_t o = 0;
    out[o++] = '"';
    if (n > QUOTE_MAX) {
        memcpy(out + o, "...", 3);
        o += 3;
        p += n - QUOTE_MAX;
        n = QUOTE_MAX;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\')
            o += (size_t)snprintf(out + o, QUOTE_BUF - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* The field's text up to and including p, quoted: where reading stopped. */
static const char *upto(char out[QUOTE_BUF], const struct reader *r, const char *p)
{
    return quote(out, r->start, (size_t)(p < r->end ? p + 1 - r->start : r->end - r->start));
}

static int unexpected(const struct reader *r, const char *p)
{
    char q1[QUOTE_BUF], q2[QUOTE_BUF];
    return field_fail(r, "unexpected %s in %s", quote(q1, p, 1), upto(q2, r, p));
}

/* A token's text for a message: letters and digits only, cut at
 * QUOTE_MAX. */
#define TOK_FMT "%.*s%s"
#define TOK_ARGS(t) ((t).n > QUOTE_MAX ? QUOTE_MAX : (t).n), (t).s, ((t).n > QUOTE_MAX ? "..." : "")

/* The run of digits at *p (what: "" or "step ", for the message). The
 * value stops growing at 100, past every field's largest: the text shows
 * the rest. */
static int read_digits(const struct reader *r, const char **p, const char *what, struct tok *t)
{
    *t = (struct tok){ 0, *p, 0 };
    for (; *p < r->end && is_digit(**p); ++*p) {
        if (t->v < 100)
            t->v = t->v * 10 + (**p - '0');
        t->n++;
    }
    /* 3 digits never fit (the largest is 59); with a leading 0 that says
     * more than "out of range" would. */
    if (t->n > 2 && t->s[0] == '0')
        return field_fail(r, "%s" TOK_FMT " has more than 2 digits", what, TOK_ARGS(*t));
    return 0;
}

/* A number or a name in the field's range at *p. missing says what is
 * absent when the item ends there. */
static int read_value(const struct reader *r, const char **p, const char *missing, struct tok *t)
{
    const struct field *f = r->f;
    char q[QUOTE_BUF];
    if (*p < r->end && is_digit(**p)) {
        int rc = read_digits(r, p, "", t);
        if (rc)
            return rc;
        if (t->v < f->lo || t->v > f->hi)
            return field_fail(r, TOK_FMT " is out of range %d-%d", TOK_ARGS(*t), f->lo, f->hi);
        return 0;
    }
    if (*p < r->end && is_alpha(**p)) {
        *t = (struct tok){ 0, *p, 0 };
        for (; *p < r->end && is_alpha(**p); ++*p)
            t->n++;
        if (!f->names)
            return field_fail(r, TOK_FMT " is not a number", TOK_ARGS(*t));
        for (int i = 0; i < f->nnames; i++)
            if (t->n == 3 && strncasecmp(t->s, f->names[i], 3) == 0) {
                t->v = f->lo + i;
                return 0;
            }
        return field_fail(r, "unknown name " TOK_FMT " (%s-%s)", TOK_ARGS(*t), f->names[0],
                          f->names[f->nnames - 1]);
    }
    if (*p == r->end || **p == ',')
        return field_fail(r, "%s in %s", missing, upto(q, r, *p));
    return unexpected(r, *p);
}

/* One field: a comma-separated list of "*", "a", "a-b", each with an
 * optional "/step", and "a/step" (a to the field's end). */
static int read_field(const struct reader *r, uint64_t *bits)
{
    const struct field *f = r->f;
    const char *p = r->start;
    *bits = 0;
    for (;;) {
        struct tok a = { f->lo, NULL, 0 }, b = { f->hi, NULL, 0 };
        int rc;
        if (p < r->end && *p == '*') {
            p++;
        } else {
            if ((rc = read_value(r, &p, "empty item", &a)))
                return rc;
            if (p < r->end && *p == '-') {
                p++;
                if ((rc = read_value(r, &p, "missing the end of the range", &b)))
                    return rc;
                if (b.v < a.v)
                    return field_fail(r, "range " TOK_FMT "-" TOK_FMT " runs backwards",
                                      TOK_ARGS(a), TOK_ARGS(b));
            } else if (p < r->end && *p == '/') {
                b.v = f->hi;
            } else {
                b = a;
            }
        }
        int step = 1;
        if (p < r->end && *p == '/') {
            p++;
            char q[QUOTE_BUF];
            if (p == r->end || *p == ',')
                return field_fail(r, "missing the step in %s", upto(q, r, p));
            if (!is_digit(*p))
                return unexpected(r, p);
            struct tok s;
            if ((rc = read_digits(r, &p, "step ", &s)))
                return rc;
            if (s.v == 0)
                return field_fail(r, "step " TOK_FMT " is not allowed", TOK_ARGS(s));
            /* A step that reaches no second value is a mistake ("* /60"
             * for hourly), not a schedule. */
            if (s.v > b.v - a.v)
                return field_fail(r, "step " TOK_FMT " is larger than the range %d-%d",
                                  TOK_ARGS(s), a.v, b.v);
            step = s.v;
        }
        for (int v = a.v; v <= b.v; v += step)
            *bits |= (uint64_t)1 << v;
        if (p == r->end)
            return 0;
        if (*p != ',')
            return unexpected(r, p);
        p++;
    }
}

static int read_macro(struct kiln_cron *c, const char *p, const char *end, char *err,
                      size_t errlen)
{
    const char *s = p;
    while (p < end && !is_blank(*p))
        p++;
    size_t n = (size_t)(p - s);
    while (p < end && is_blank(*p))
        p++;
    char q[QUOTE_BUF];
    for (size_t i = 0; i < sizeof MACROS / sizeof MACROS[0]; i++)
        if (strlen(MACROS[i].name) == n && strncasecmp(s, MACROS[i].name, n) == 0) {
            if (p < end)
                return fail(err, errlen, "%s takes no fields after it: %s", MACROS[i].name,
                            quote(q, p, (size_t)(end - p)));
            return kiln_cron_parse(c, MACROS[i].expansion, err, errlen);
        }
    return fail(err, errlen,
                "unknown macro %s (@yearly, @annually, @monthly, @weekly, @daily, @midnight, "
                "@hourly)",
                quote(q, s, n));
}

int kiln_cron_parse(struct kiln_cron *c, const char *expr, char *err, size_t errlen)
{
    if (!expr)
        return fail(err, errlen, "the expression is empty");
    size_t len = strnlen(expr, KILN_CRON_MAX_LEN + 1);
    if (len > KILN_CRON_MAX_LEN)
        return fail(err, errlen, "the expression is longer than %d bytes", KILN_CRON_MAX_LEN);
    const char *p = expr, *end = expr + len;
    while (p < end && is_blank(*p))
        p++;
    if (p == end)
        return fail(err, errlen, "the expression is empty");
    if (*p == '@')
        return read_macro(c, p, end, err, errlen);

    const char *starts[5], *ends[5];
    int n = 0;
    while (p < end) {
        const char *s = p;
        while (p < end && !is_blank(*p))
            p++;
        if (n < 5) {
            starts[n] = s;
            ends[n] = p;
        }
        n++;
        while (p < end && is_blank(*p))
            p++;
    }
    if (n != 5)
        return fail(err, errlen, "expected 5 fields, got %d", n);

    uint64_t bits[5];
    for (int i = 0; i < 5; i++) {
        struct reader r = { &FIELDS[i], starts[i], ends[i], err, errlen };
        int rc = read_field(&r, &bits[i]);
        if (rc)
            return rc;
    }
    /* c is written only now: a failed parse leaves the caller's schedule
     * as it was. */
    *c = (struct kiln_cron){
        .minutes = bits[0],
        .hours = (uint32_t)bits[1],
        .mdays = (uint32_t)bits[2],
        .months = (uint16_t)bits[3],
        .wdays = (uint8_t)((bits[4] | bits[4] >> 7) & 0x7f), /* 7 is Sunday */
        .mday_star = *starts[2] == '*',
        .wday_star = *starts[4] == '*',
    };
    return 0;
}

/* ---- matching ---- */

/* a / b rounded down, with the remainder in [0, b): no overflow at
 * INT64_MIN, unlike b * (a / b) after the rounding. */
static int64_t floor_div(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        r += b;
        q--;
    }
    *rem = r;
    return q;
}

static unsigned month_days(int64_t year, unsigned month)
{
    static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    return days[month - 1] + (month == 2 && leap);
}

/* 1970-01-01 was a Thursday. */
static unsigned weekday(int64_t day)
{
    return (unsigned)((day % 7 + 11) % 7);
}

/* Vixie cron's rule: with either day field starting with '*', a day must
 * match both (so "* /2" in one still restricts); with both restricted,
 * either is enough ("1,15 * MON": the 1st, the 15th and every Monday). */
static bool day_matches(const struct kiln_cron *c, unsigned mday, unsigned wday)
{
    bool dom = c->mdays >> mday & 1, dow = c->wdays >> wday & 1;
    return c->mday_star || c->wday_star ? dom && dow : dom || dow;
}

/* The lowest bit of set at from or above, or -1. */
static int next_bit(uint64_t set, int from)
{
    if (from > 63 || !(set >>= from))
        return -1;
    return from + __builtin_ctzll(set);
}

/* The first matching minute of a matching day at hour:minute or later, in
 * minutes into the day, or -1. */
static int first_in_day(const struct kiln_cron *c, int hour, int minute)
{
    for (int h = next_bit(c->hours, hour); h >= 0; h = next_bit(c->hours, h + 1)) {
        int m = next_bit(c->minutes, h == hour ? minute : 0);
        if (m >= 0)
            return h * 60 + m;
    }
    return -1;
}

int64_t kiln_cron_next(const struct kiln_cron *c, int64_t t)
{
    int64_t rem;
    int64_t minute = floor_div(t, 60, &rem) + 1; /* the first minute after t */
    int64_t day = floor_div(minute, 1440, &rem);
    int hour = (int)rem / 60, min = (int)rem % 60;
    int64_t year;
    unsigned month, mday, wday = weekday(day);
    kiln_civil_from_days(day, &year, &month, &mday);
    for (int64_t last = day + HORIZON_DAYS; day < last;) {
        unsigned mdays = month_days(year, month), skip = 1;
        if (!(c->months >> month & 1)) {
            skip = mdays - mday + 1; /* to the 1st of the next month */
        } else if (day_matches(c, mday, wday)) {
            int x = first_in_day(c, hour, min);
            /* An answer past INT64_MAX seconds is no answer. */
            if (x >= 0)
                return day <= (INT64_MAX / 60 - x) / 1440 ? (day * 1440 + x) * 60 : -1;
        }
        day += skip;
        wday = (wday + skip) % 7;
        hour = min = 0;
        if ((mday += skip) > mdays) {
            mday = 1;
            if (++month > 12) {
                month = 1;
                year++;
            }
        }
    }
    return -1;
}

bool kiln_cron_matches(const struct kiln_cron *c, int64_t t)
{
    int64_t secs, year;
    int64_t day = floor_div(t, 86400, &secs);
    unsigned month, mday;
    kiln_civil_from_days(day, &year, &month, &mday);
    return (c->minutes >> (secs / 60 % 60) & 1) && (c->hours >> (secs / 3600) & 1) &&
           (c->months >> month & 1) && day_matches(c, mday, weekday(day));
}
