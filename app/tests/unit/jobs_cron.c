/*
 * Unit tests for app/src/jobs/cron.c: every form of the syntax read into
 * its bit sets, each refusal with its sentence, and kiln_cron_next on the
 * calendar's edges (month and year ends, leap days, 5-year misses).
 * kiln_cron_next skips months and days, so it is checked against a
 * minute-by-minute search over glibc's gmtime_r for random expressions,
 * generated with the sets they must parse to.
 */
#include <limits.h>
#include <stdlib.h>
#include <time.h>

#include "test_util.h"

#include "core/err.h"
#include "jobs/cron.h"

#define ALL_MINUTES ((UINT64_C(1) << 60) - 1)
#define ALL_HOURS ((UINT32_C(1) << 24) - 1)
#define ALL_MDAYS UINT32_C(0xfffffffe)
#define ALL_MONTHS UINT16_C(0x1ffe)
#define ALL_WDAYS UINT8_C(0x7f)
#define DAY 86400

/* ---- helpers ---- */

static int64_t at(int year, int month, int day, int hour, int minute)
{
    struct tm tm = { .tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day,
                     .tm_hour = hour, .tm_min = minute };
    return (int64_t)timegm(&tm);
}

/* t as a UTC date for messages (the number itself past gmtime_r's years). */
static const char *show(char out[80], int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t == -1 || !gmtime_r(&tt, &tm))
        snprintf(out, 80, "%lld", (long long)t);
    else
        snprintf(out, 80, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return out;
}

static struct kiln_cron parse_ok(const char *expr)
{
    struct kiln_cron c;
    char err[256] = "";
    int rc = kiln_cron_parse(&c, expr, err, sizeof err);
    if (rc != 0)
        fail_msg("\"%s\": %s", expr, err);
    return c;
}

static void check_next(const char *expr, int64_t from, int64_t want)
{
    struct kiln_cron c = parse_ok(expr);
    int64_t got = kiln_cron_next(&c, from);
    char a[80], b[80], d[80];
    if (got != want)
        fail_msg("\"%s\" after %s: got %s, want %s", expr, show(a, from), show(b, got),
                 show(d, want));
}

static void check_error(const char *expr, const char *want)
{
    struct kiln_cron c;
    char err[256] = "";
    char e[512];
    int rc = kiln_cron_parse(&c, expr, err, sizeof err);
    if (rc != KILN_EINVAL || strcmp(err, want) != 0)
        fail_msg("\"%s\": rc %d, error \"%s\", want \"%s\"", tu_escape(e, sizeof e, expr,
                 strlen(expr)), rc, err, want);
}

static void assert_same(const struct kiln_cron *a, const struct kiln_cron *b)
{
    assert_true(a->minutes == b->minutes);
    assert_int_equal(a->hours, b->hours);
    assert_int_equal(a->mdays, b->mdays);
    assert_int_equal(a->months, b->months);
    assert_int_equal(a->wdays, b->wdays);
    assert_int_equal(a->mday_star, b->mday_star);
    assert_int_equal(a->wday_star, b->wday_star);
}

/* ---- syntax ---- */

static void test_every_form(void **state)
{
    struct kiln_cron c = parse_ok("* * * * *");
    assert_true(c.minutes == ALL_MINUTES);
    assert_int_equal(c.hours, ALL_HOURS);
    assert_int_equal(c.mdays, ALL_MDAYS);
    assert_int_equal(c.months, ALL_MONTHS);
    assert_int_equal(c.wdays, ALL_WDAYS);
    assert_true(c.mday_star && c.wday_star);

    c = parse_ok("5 0 1 12 6");
    assert_true(c.minutes == UINT64_C(1) << 5);
    assert_int_equal(c.hours, 1);
    assert_int_equal(c.mdays, 1u << 1);
    assert_int_equal(c.months, 1u << 12);
    assert_int_equal(c.wdays, 1u << 6);
    assert_false(c.mday_star || c.wday_star);

    /* ranges, lists, and lists of ranges */
    c = parse_ok("1-3 22-23 1,15,31 1-2,11-12 1-5");
    assert_true(c.minutes == 0xe);
    assert_int_equal(c.hours, 3u << 22);
    assert_int_equal(c.mdays, 1u << 1 | 1u << 15 | 1u << 31);
    assert_int_equal(c.months, 0x1806);
    assert_int_equal(c.wdays, 0x3e);

    /* steps: over '*', over a range, from a value to the field's end (for
     * the day of week, 7) */
    c = parse_ok("*/15 10-20/5 2/10 */3 1/2");
    assert_true(c.minutes == (UINT64_C(1) | UINT64_C(1) << 15 | UINT64_C(1) << 30 |
                              UINT64_C(1) << 45));
    assert_int_equal(c.hours, 1u << 10 | 1u << 15 | 1u << 20);
    assert_int_equal(c.mdays, 1u << 2 | 1u << 12 | 1u << 22);
    assert_int_equal(c.months, 1u << 1 | 1u << 4 | 1u << 7 | 1u << 10);
    assert_int_equal(c.wdays, 1u << 1 | 1u << 3 | 1u << 5 | 1u); /* 1,3,5,7 */
    assert_false(c.mday_star || c.wday_star);
    /* a stepped '*' is still a '*' for the day rule (Vixie's DOM_STAR) */
    c = parse_ok("50/3,7 * */2 * */2");
    assert_true(c.minutes == (UINT64_C(1) << 50 | UINT64_C(1) << 53 | UINT64_C(1) << 56 |
                              UINT64_C(1) << 59 | UINT64_C(1) << 7));
    assert_true(c.mday_star && c.wday_star);
    assert_int_equal(c.wdays, 0x55);

    /* extremes of each field; leading zeros up to 2 digits */
    c = parse_ok("0,59 00,23 01,31 1,12 0");
    assert_true(c.minutes == (UINT64_C(1) | UINT64_C(1) << 59));
    assert_int_equal(c.hours, 1u | 1u << 23);
    assert_int_equal(c.mdays, 1u << 1 | 1u << 31);
    assert_int_equal(c.months, 1u << 1 | 1u << 12);

    /* a '*' as one item of a list, and a one-value range */
    c = parse_ok("*/05 * * * *");
    assert_true(c.minutes == parse_ok("*/5 * * * *").minutes);
    c = parse_ok("*,5 5-5 * * *");
    assert_true(c.minutes == ALL_MINUTES);
    assert_int_equal(c.hours, 1u << 5);
    c = parse_ok("0-59/59 0-23/23 1-31/30 1-12/11 0-6/6");
    assert_true(c.minutes == (UINT64_C(1) | UINT64_C(1) << 59));
    assert_int_equal(c.hours, 1u | 1u << 23);
    assert_int_equal(c.mdays, 1u << 1 | 1u << 31);
    assert_int_equal(c.months, 1u << 1 | 1u << 12);
    assert_int_equal(c.wdays, 1u | 1u << 6);
}

static void test_blanks(void **state)
{
    struct kiln_cron a = parse_ok("1 2 3 4 5");
    const char *same[] = { "  1 2 3 4 5", "1 2 3 4 5  ", "1\t2\t3\t4\t5", "\t 1  \t 2 3\t\t4 5 \t",
                           " \t1 2 3 4 5\t " };
    for (size_t i = 0; i < ARRAY_LEN(same); i++) {
        struct kiln_cron b = parse_ok(same[i]);
        assert_same(&a, &b);
    }
}

static void test_names(void **state)
{
    static const char *const months[] = { "JAN", "feb", "Mar", "aPr", "MAY", "jun",
                                          "JUL", "aug", "SEP", "oct", "NOV", "dec" };
    static const char *const days[] = { "SUN", "mon", "Tue", "wED", "THU", "fri", "Sat" };
    char expr[64];
    for (int i = 0; i < 12; i++) {
        snprintf(expr, sizeof expr, "0 0 1 %s *", months[i]);
        struct kiln_cron c = parse_ok(expr);
        assert_int_equal(c.months, 1u << (i + 1));
    }
    for (int i = 0; i < 7; i++) {
        snprintf(expr, sizeof expr, "0 0 * * %s", days[i]);
        struct kiln_cron c = parse_ok(expr);
        assert_int_equal(c.wdays, 1u << i);
    }
    struct kiln_cron c = parse_ok("0 0 * jan-MAR,Oct,nov-dec/1 MON-FRI");
    assert_int_equal(c.months, 0xe | 1u << 10 | 1u << 11 | 1u << 12);
    assert_int_equal(c.wdays, 0x3e);
    /* names and numbers mix, and start a step */
    c = parse_ok("0 0 * 2-APR,JUN/3 sun,3-FRI/2");
    assert_int_equal(c.months, 0x1c | 1u << 6 | 1u << 9 | 1u << 12);
    assert_int_equal(c.wdays, 1u | 1u << 3 | 1u << 5);
    c = parse_ok("0 0 * * SUN/2");
    assert_int_equal(c.wdays, 0x55); /* 0,2,4,6 */
}

static void test_sunday_is_0_and_7(void **state)
{
    struct kiln_cron a = parse_ok("0 0 * * 0"), b = parse_ok("0 0 * * 7"), s = parse_ok("0 0 * * SUN");
    assert_same(&a, &b);
    assert_same(&a, &s);
    struct kiln_cron c = parse_ok("0 0 * * 5-7");
    assert_int_equal(c.wdays, 1u | 1u << 5 | 1u << 6);
    c = parse_ok("0 0 * * 0-7");
    assert_int_equal(c.wdays, ALL_WDAYS);
    c = parse_ok("0 0 * * 0,7");
    assert_int_equal(c.wdays, 1);
    /* 2026-03-01 is a Sunday. */
    check_next("0 12 * * 7", at(2026, 2, 26, 0, 0), at(2026, 3, 1, 12, 0));
    check_next("0 12 * * 0", at(2026, 2, 26, 0, 0), at(2026, 3, 1, 12, 0));
}

static void test_macros(void **state)
{
    static const struct {
        const char *macro, *expansion;
    } cases[] = {
        { "@yearly", "0 0 1 1 *" },  { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
        { "@weekly", "0 0 * * 0" },  { "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
        { "@hourly", "0 * * * *" },  { "  @Daily\t ", "0 0 * * *" }, { "@HOURLY", "0 * * * *" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct kiln_cron a = parse_ok(cases[i].macro), b = parse_ok(cases[i].expansion);
        assert_same(&a, &b);
    }
    check_next("@weekly", at(2026, 2, 26, 0, 0), at(2026, 3, 1, 0, 0));
    check_next("@yearly", at(2026, 2, 26, 0, 0), at(2027, 1, 1, 0, 0));
}

static void test_errors(void **state)
{
    static const struct {
        const char *expr, *err;
    } cases[] = {
        /* the whole expression */
        { "", "the expression is empty" },
        { " \t  ", "the expression is empty" },
        { "* * * *", "expected 5 fields, got 4" },
        { "*", "expected 5 fields, got 1" },
        { "* * * * * *", "expected 5 fields, got 6" },
        { "0 0 * * * /usr/bin/true", "expected 5 fields, got 6" },
        { "* * * *\n*", "expected 5 fields, got 4" },
        /* out of range, per field */
        { "60 * * * *", "minute field: 60 is out of range 0-59" },
        { "* 24 * * *", "hour field: 24 is out of range 0-23" },
        { "* * 0 * *", "day-of-month field: 0 is out of range 1-31" },
        { "* * 32 * *", "day-of-month field: 32 is out of range 1-31" },
        { "* * * 0 *", "month field: 0 is out of range 1-12" },
        { "* * * 13 *", "month field: 13 is out of range 1-12" },
        { "* * * * 8", "day-of-week field: 8 is out of range 0-7" },
        { "1-60 * * * *", "minute field: 60 is out of range 0-59" },
        { "100 * * * *", "minute field: 100 is out of range 0-59" },
        { "99999999999999999999 * * * *",
          "minute field: 99999999999999999999 is out of range 0-59" },
        { "007 * * * *", "minute field: 007 has more than 2 digits" },
        { "* 0000000000000000000000000000000000000000000001 * * *",
          "hour field: 0000000000000000000000000000000000000000... has more than 2 digits" },
        /* empty items, missing parts */
        { "1,,2 * * * *", "minute field: empty item in \"1,,\"" },
        { "1, * * * *", "minute field: empty item in \"1,\"" },
        { ",1 * * * *", "minute field: empty item in \",\"" },
        { "* * , * *", "day-of-month field: empty item in \",\"" },
        { "1- * * * *", "minute field: missing the end of the range in \"1-\"" },
        { "1-,3 * * * *", "minute field: missing the end of the range in \"1-,\"" },
        { "*/ * * * *", "minute field: missing the step in \"*/\"" },
        { "1-5/,7 * * * *", "minute field: missing the step in \"1-5/,\"" },
        /* steps */
        { "*/0 * * * *", "minute field: step 0 is not allowed" },
        { "* 1-5/00 * * *", "hour field: step 00 is not allowed" },
        { "*/007 * * * *", "minute field: step 007 has more than 2 digits" },
        { "*/60 * * * *", "minute field: step 60 is larger than the range 0-59" },
        { "*/100 * * * *", "minute field: step 100 is larger than the range 0-59" },
        { "* */24 * * *", "hour field: step 24 is larger than the range 0-23" },
        { "* * */31 * *", "day-of-month field: step 31 is larger than the range 1-31" },
        { "* * * */12 *", "month field: step 12 is larger than the range 1-12" },
        { "* * * * */8", "day-of-week field: step 8 is larger than the range 0-7" },
        { "10-20/11 * * * *", "minute field: step 11 is larger than the range 10-20" },
        { "50/10 * * * *", "minute field: step 10 is larger than the range 50-59" },
        { "5-5/1 * * * *", "minute field: step 1 is larger than the range 5-5" },
        { "* * * * 7/1", "day-of-week field: step 1 is larger than the range 7-7" },
        { "* * * * MON-FRI/5", "day-of-week field: step 5 is larger than the range 1-5" },
        /* backwards ranges */
        { "30-10 * * * *", "minute field: range 30-10 runs backwards" },
        { "* 23-0 * * *", "hour field: range 23-0 runs backwards" },
        { "* * * DEC-JAN *", "month field: range DEC-JAN runs backwards" },
        { "* * * * FRI-MON", "day-of-week field: range FRI-MON runs backwards" },
        { "* * * * SAT-SUN", "day-of-week field: range SAT-SUN runs backwards" },
        /* trailing garbage and stray characters */
        { "5x * * * *", "minute field: unexpected \"x\" in \"5x\"" },
        { "1-5-7 * * * *", "minute field: unexpected \"-\" in \"1-5-\"" },
        { "*/5/2 * * * *", "minute field: unexpected \"/\" in \"*/5/\"" },
        { "** * * * *", "minute field: unexpected \"*\" in \"**\"" },
        { "*5 * * * *", "minute field: unexpected \"5\" in \"*5\"" },
        { "-1 * * * *", "minute field: unexpected \"-\" in \"-\"" },
        { "/5 * * * *", "minute field: unexpected \"/\" in \"/\"" },
        { "5/* * * * *", "minute field: unexpected \"*\" in \"5/*\"" },
        { "*-5 * * * *", "minute field: unexpected \"-\" in \"*-\"" },
        { "5-* * * * *", "minute field: unexpected \"*\" in \"5-*\"" },
        { "*/x * * * *", "minute field: unexpected \"x\" in \"*/x\"" },
        { "* * * * */MON", "day-of-week field: unexpected \"M\" in \"*/M\"" },
        { "? * * * *", "minute field: unexpected \"?\" in \"?\"" },
        { "* * * * 1#2", "day-of-week field: unexpected \"#\" in \"1#\"" },
        { "* * * * 5L", "day-of-week field: unexpected \"L\" in \"5L\"" },
        { "* * * JAN1 *", "month field: unexpected \"1\" in \"JAN1\"" },
        { "* * * * *\n", "day-of-week field: unexpected \"\\x0a\" in \"*\\x0a\"" },
        { "* * * * 1\r", "day-of-week field: unexpected \"\\x0d\" in \"1\\x0d\"" },
        { "* * * * *\xc3\xa9", "day-of-week field: unexpected \"\\xc3\" in \"*\\xc3\"" },
        { "1\"\\ * * * *", "minute field: unexpected \"\\x22\" in \"1\\x22\"" },
        { "* * * * @daily", "day-of-week field: unexpected \"@\" in \"@\"" },
        { "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,? * * * *",
          "minute field: unexpected \"?\" in \"...,6,7,8,9,10,11,12,13,14,15,16,17,18,19,?\"" },
        /* names */
        { "JAN * * * *", "minute field: JAN is not a number" },
        { "* * L * *", "day-of-month field: L is not a number" },
        { "* * * FOO *", "month field: unknown name FOO (JAN-DEC)" },
        { "* * * JANUARY *", "month field: unknown name JANUARY (JAN-DEC)" },
        { "* * * * MONDAY", "day-of-week field: unknown name MONDAY (SUN-SAT)" },
        { "* * * * JAN", "day-of-week field: unknown name JAN (SUN-SAT)" },
        { "* * * MON *", "month field: unknown name MON (JAN-DEC)" },
        { "* * * * */SUN", "day-of-week field: unexpected \"S\" in \"*/S\"" },
        /* macros */
        { "@reboot", "unknown macro \"@reboot\" (@yearly, @annually, @monthly, @weekly, "
                     "@daily, @midnight, @hourly)" },
        { "@", "unknown macro \"@\" (@yearly, @annually, @monthly, @weekly, @daily, "
               "@midnight, @hourly)" },
        { "@dailyx", "unknown macro \"@dailyx\" (@yearly, @annually, @monthly, @weekly, "
                     "@daily, @midnight, @hourly)" },
        { "@daily *", "@daily takes no fields after it: \"*\"" },
        { " @weekly  0 0", "@weekly takes no fields after it: \"0 0\"" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        check_error(cases[i].expr, cases[i].err);
}

static void test_length_bound(void **state)
{
    char expr[KILN_CRON_MAX_LEN + 2];
    /* 256 bytes: "* * * * *" and blanks */
    memset(expr, ' ', sizeof expr);
    memcpy(expr, "* * * * *", 9);
    expr[KILN_CRON_MAX_LEN] = '\0';
    struct kiln_cron c = parse_ok(expr);
    assert_true(c.minutes == ALL_MINUTES);
    expr[KILN_CRON_MAX_LEN] = ' ';
    expr[KILN_CRON_MAX_LEN + 1] = '\0';
    check_error(expr, "the expression is longer than 256 bytes");

    /* Nothing is read past the NUL or past the bound: ASan would see a
     * read beyond these exact-size heap blocks. */
    char *exact = malloc(10);
    memcpy(exact, "0 0 * * 1", 10);
    c = parse_ok(exact);
    assert_int_equal(c.wdays, 2);
    free(exact);
    char *unterminated = malloc(KILN_CRON_MAX_LEN + 1);
    memset(unterminated, '1', KILN_CRON_MAX_LEN + 1);
    char err[128];
    assert_int_equal(kiln_cron_parse(&c, unterminated, err, sizeof err), KILN_EINVAL);
    assert_string_equal(err, "the expression is longer than 256 bytes");
    free(unterminated);
}

static void test_error_buffer(void **state)
{
    struct kiln_cron c, before;
    memset(&c, 0x5a, sizeof c);
    memcpy(&before, &c, sizeof c); /* padding too: the check compares bytes */
    /* a failed parse leaves the schedule alone */
    char err[64];
    assert_int_equal(kiln_cron_parse(&c, "60 * * * *", err, sizeof err), KILN_EINVAL);
    assert_memory_equal(&c, &before, sizeof c);
    /* short buffers get a truncated, terminated sentence */
    char small[8];
    memset(small, 'x', sizeof small);
    assert_int_equal(kiln_cron_parse(&c, "60 * * * *", small, sizeof small), KILN_EINVAL);
    assert_string_equal(small, "minute ");
    memset(small, 'x', sizeof small);
    assert_int_equal(kiln_cron_parse(&c, "* * *", small, sizeof small), KILN_EINVAL);
    assert_string_equal(small, "expecte");
    memset(small, 'x', sizeof small);
    assert_int_equal(kiln_cron_parse(&c, "* * *", small, 1), KILN_EINVAL);
    assert_int_equal(small[0], '\0');
    assert_int_equal(small[1], 'x');
    /* no buffer at all, and no expression */
    assert_int_equal(kiln_cron_parse(&c, "* * *", NULL, 0), KILN_EINVAL);
    assert_int_equal(kiln_cron_parse(&c, NULL, err, sizeof err), KILN_EINVAL);
    assert_string_equal(err, "the expression is empty");
    assert_memory_equal(&c, &before, sizeof c);
}

/* ---- the day rule ---- */

static void test_vixie_day_rule(void **state)
{
    /* Both restricted: either. 2026-01-01 is a Thursday; the 13th of
     * January is a Tuesday, February's a Friday. */
    check_next("0 12 13 * FRI", at(2026, 1, 1, 0, 0), at(2026, 1, 2, 12, 0));
    check_next("0 12 13 * FRI", at(2026, 1, 10, 0, 0), at(2026, 1, 13, 12, 0));
    check_next("0 12 13 * FRI", at(2026, 1, 13, 12, 0), at(2026, 1, 16, 12, 0));
    check_next("0 0 1,15 * MON", at(2026, 1, 13, 0, 0), at(2026, 1, 15, 0, 0));
    check_next("0 0 1,15 * MON", at(2026, 1, 15, 0, 0), at(2026, 1, 19, 0, 0));
    /* One is '*': both, so the other decides. */
    check_next("0 12 13 * *", at(2026, 1, 1, 0, 0), at(2026, 1, 13, 12, 0));
    check_next("0 12 * * FRI", at(2026, 1, 3, 0, 0), at(2026, 1, 9, 12, 0));
    /* A stepped '*' still counts as '*': odd days that are Fridays, not
     * odd days or Fridays. */
    check_next("0 12 */2 * FRI", at(2026, 1, 1, 0, 0), at(2026, 1, 9, 12, 0));
    check_next("0 12 13 * */2", at(2026, 1, 1, 0, 0), at(2026, 1, 13, 12, 0));
    /* Sunday, Wednesday or Saturday and the 13th: January's is a Tuesday,
     * February's and March's Fridays, April's a Monday, May's a Wednesday. */
    check_next("0 12 13 * */3", at(2026, 1, 1, 0, 0), at(2026, 5, 13, 12, 0));
    /* Friday the 13th with a '*' in neither field is either: not the AND. */
    struct kiln_cron c = parse_ok("0 0 13 * 5");
    assert_true(kiln_cron_matches(&c, at(2026, 1, 13, 0, 0))); /* a Tuesday */
    assert_true(kiln_cron_matches(&c, at(2026, 1, 16, 0, 0))); /* a Friday */
    assert_false(kiln_cron_matches(&c, at(2026, 1, 14, 0, 0)));
    c = parse_ok("0 0 * * 5");
    assert_false(kiln_cron_matches(&c, at(2026, 1, 13, 0, 0)));
}

/* ---- next ---- */

static void test_next_basics(void **state)
{
    int64_t t = at(2026, 7, 14, 9, 41);
    check_next("* * * * *", t, t + 60);
    check_next("* * * * *", t + 1, t + 60);
    check_next("* * * * *", t + 59, t + 60);
    check_next("* * * * *", t - 1, t);
    check_next("41 9 * * *", t, t + DAY);
    check_next("42 9 * * *", t, t + 60);
    check_next("0 10 * * *", t, at(2026, 7, 14, 10, 0));
    check_next("0 9 * * *", t, at(2026, 7, 15, 9, 0));
    check_next("*/15 * * * *", t, at(2026, 7, 14, 9, 45));
    check_next("*/15 * * * *", at(2026, 7, 14, 9, 45), at(2026, 7, 14, 10, 0));
    /* the hour matches but no minute is left in it */
    check_next("10-20 9,11 * * *", t, at(2026, 7, 14, 11, 10));
    /* none left in the day */
    check_next("10-20 0,9 * * *", t, at(2026, 7, 15, 0, 10));
    check_next("30 2 * * *", t, at(2026, 7, 15, 2, 30));
}

static void test_next_month_and_year_ends(void **state)
{
    check_next("0 0 31 * *", at(2026, 4, 15, 0, 0), at(2026, 5, 31, 0, 0));
    check_next("0 0 31 * *", at(2026, 5, 31, 0, 0), at(2026, 7, 31, 0, 0));
    check_next("0 0 1 * *", at(2026, 1, 31, 23, 59), at(2026, 2, 1, 0, 0));
    check_next("0 0 30 * *", at(2026, 1, 30, 0, 0), at(2026, 3, 30, 0, 0));
    check_next("59 23 28-31 2 *", at(2026, 2, 1, 0, 0), at(2026, 2, 28, 23, 59));
    check_next("59 23 28-31 2 *", at(2026, 2, 28, 23, 59), at(2027, 2, 28, 23, 59));
    check_next("0 0 1 1 *", at(2026, 12, 31, 23, 59) + 59, at(2027, 1, 1, 0, 0));
    check_next("59 23 31 12 *", at(2026, 6, 1, 0, 0), at(2026, 12, 31, 23, 59));
    check_next("59 23 31 12 *", at(2026, 12, 31, 23, 59), at(2027, 12, 31, 23, 59));
    check_next("* * * * *", at(2026, 12, 31, 23, 59), at(2027, 1, 1, 0, 0));
    check_next("0 0 * 1 *", at(2026, 2, 1, 0, 0), at(2027, 1, 1, 0, 0));
    check_next("0 0 * JAN MON", at(2026, 2, 1, 0, 0), at(2027, 1, 4, 0, 0));
    check_next("0 0 1 * *", at(1999, 12, 31, 12, 0), at(2000, 1, 1, 0, 0));
}

static void test_next_leap_years(void **state)
{
    check_next("0 0 29 2 *", at(2026, 1, 1, 0, 0), at(2028, 2, 29, 0, 0));
    check_next("0 0 29 2 *", at(2028, 2, 29, 0, 0), at(2032, 2, 29, 0, 0));
    check_next("0 0 29 2 *", at(2024, 3, 1, 0, 0), at(2028, 2, 29, 0, 0));
    /* 2000 is a leap year (divisible by 400) */
    check_next("0 0 29 2 *", at(1997, 3, 1, 0, 0), at(2000, 2, 29, 0, 0));
    /* 2100 is not, and 2104 is more than 5 years after 2096-03-01 */
    check_next("0 0 29 2 *", at(2096, 3, 1, 0, 0), -1);
    check_next("0 0 29 2 *", at(2096, 2, 28, 0, 0), at(2096, 2, 29, 0, 0));
    check_next("0 0 * 2 *", at(2100, 2, 28, 0, 0), at(2101, 2, 1, 0, 0));
    check_next("0 0 1 3 *", at(2028, 2, 28, 0, 0), at(2028, 3, 1, 0, 0));
    /* or a Monday, in February */
    check_next("0 0 29 2 1", at(2026, 1, 1, 0, 0), at(2026, 2, 2, 0, 0));
}

static void test_next_never(void **state)
{
    int64_t t = at(2026, 1, 1, 0, 0);
    check_next("0 0 30 2 *", t, -1);
    check_next("0 0 31 2 *", t, -1);
    check_next("0 0 31 4 *", t, -1);
    check_next("0 0 31 2,4,6,9,11 *", t, -1);
    check_next("* * 30-31 FEB *", t, -1);
    /* but with the day of week restricted too, the OR finds a day */
    check_next("0 0 30 2 MON", t, at(2026, 2, 2, 0, 0));
    /* while '*' in the day of week keeps the AND */
    check_next("0 0 30 2 */1", t, -1);
}

static void test_next_is_utc(void **state)
{
    /* The local zone changes nothing, not even on the days its clocks
     * change: every answer of a daily schedule is 24 hours after the last. */
    setenv("TZ", "America/New_York", 1);
    tzset();
    struct kiln_cron c = parse_ok("30 2 * * *");
    int64_t t = at(2026, 1, 1, 0, 0);
    int64_t prev = kiln_cron_next(&c, t);
    assert_true(prev == at(2026, 1, 1, 2, 30));
    for (int i = 0; i < 400; i++) {
        int64_t n = kiln_cron_next(&c, prev);
        assert_true(n == prev + DAY);
        prev = n;
    }
    /* the US and EU spring-forward dates of 2026, in UTC */
    check_next("30 2 * * *", at(2026, 3, 8, 0, 0), at(2026, 3, 8, 2, 30));
    check_next("30 1 * * *", at(2026, 3, 29, 0, 0), at(2026, 3, 29, 1, 30));
    unsetenv("TZ");
    tzset();
}

static void test_next_extremes(void **state)
{
    struct kiln_cron all = parse_ok("* * * * *"), yearly = parse_ok("@yearly");
    /* before the epoch */
    check_next("0 0 1 1 *", -1, 0);
    check_next("0 0 1 1 *", -60, 0);
    check_next("* * * * *", -61, -60);
    check_next("0 0 29 2 *", at(1900, 1, 1, 0, 0), at(1904, 2, 29, 0, 0));
    /* the ends of int64_t: an answer or -1, never an overflow */
    int64_t lo = kiln_cron_next(&all, INT64_MIN);
    assert_true(lo > INT64_MIN && lo % 60 == 0 && lo - INT64_MIN <= 60);
    assert_true(kiln_cron_matches(&all, lo));
    lo = kiln_cron_next(&yearly, INT64_MIN);
    assert_true(lo > INT64_MIN && lo % 60 == 0 && kiln_cron_matches(&yearly, lo));
    assert_true(kiln_cron_next(&all, INT64_MAX) == -1);
    int64_t hi = kiln_cron_next(&yearly, INT64_MAX - 800LL * DAY);
    assert_true(hi > INT64_MAX - 800LL * DAY && hi % 60 == 0 && kiln_cron_matches(&yearly, hi));
    /* the last whole minute before INT64_MAX */
    int64_t last = INT64_MAX / 60 * 60;
    assert_true(kiln_cron_next(&all, last - 60) == last);
    assert_true(kiln_cron_next(&all, last) == -1);
    (void)kiln_cron_matches(&all, INT64_MAX);
    (void)kiln_cron_matches(&all, INT64_MIN);
}

/* ---- against a brute force ---- */

/* The sets' meaning, from glibc's calendar rather than cron.c's. */
static bool ref_matches(const struct kiln_cron *c, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    bool dom = c->mdays >> tm.tm_mday & 1, dow = c->wdays >> tm.tm_wday & 1;
    bool day = c->mday_star || c->wday_star ? dom && dow : dom || dow;
    return (c->minutes >> tm.tm_min & 1) && (c->hours >> tm.tm_hour & 1) &&
           (c->months >> (tm.tm_mon + 1) & 1) && day;
}

/* Every minute after t for up to limit seconds; -1 when none matches. */
static int64_t ref_next(const struct kiln_cron *c, int64_t t, int64_t limit)
{
    int64_t m = t - ((t % 60) + 60) % 60 + 60;
    for (; m <= t + limit; m += 60)
        if (ref_matches(c, m))
            return m;
    return -1;
}

static unsigned rnd(unsigned n)
{
    return (unsigned)rand() % n;
}

static const char *const MONTHS[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                      "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
static const char *const WDAYS[] = { "sun", "Mon", "TUE", "wed", "Thu", "FRI", "sat" };

/* A value of the field, as a number or (month, day of week) a name. */
static int put_value(char *p, int v, int lo, const char *const *names, int nnames)
{
    if (names && v - lo < nnames && rnd(2))
        return sprintf(p, "%s", names[v - lo]);
    return sprintf(p, "%d", v);
}

/* A random valid field over lo..hi into out, with the set it stands for. */
static uint64_t gen_field(char *out, int lo, int hi, const char *const *names, int nnames)
{
    uint64_t bits = 0;
    char *p = out;
    if (rnd(3) == 0) {
        strcpy(out, "*");
        for (int v = lo; v <= hi; v++)
            bits |= UINT64_C(1) << v;
        return bits;
    }
    int items = 1 + (int)rnd(3);
    for (int i = 0; i < items; i++) {
        if (i)
            *p++ = ',';
        int a = lo + (int)rnd((unsigned)(hi - lo + 1)), b = a, step = 1;
        switch (rnd(6)) {
        case 0: /* a */
            p += put_value(p, a, lo, names, nnames);
            break;
        case 1: /* a-b */
            b = a + (int)rnd((unsigned)(hi - a + 1));
            p += put_value(p, a, lo, names, nnames);
            *p++ = '-';
            p += put_value(p, b, lo, names, nnames);
            break;
        case 2: /* a-b/s */
            if (a == hi)
                a--;
            b = a + 1 + (int)rnd((unsigned)(hi - a));
            step = 1 + (int)rnd((unsigned)(b - a));
            p += put_value(p, a, lo, names, nnames);
            *p++ = '-';
            p += put_value(p, b, lo, names, nnames);
            p += sprintf(p, "/%d", step);
            break;
        case 3: /* a/s */
            if (a == hi)
                a--;
            b = hi;
            step = 1 + (int)rnd((unsigned)(b - a));
            p += put_value(p, a, lo, names, nnames);
            p += sprintf(p, "/%d", step);
            break;
        case 4: /* * /s */
            a = lo;
            b = hi;
            step = 1 + (int)rnd((unsigned)(b - a));
            p += sprintf(p, "*/%d", step);
            break;
        default: /* * */
            a = lo;
            b = hi;
            p += sprintf(p, "*");
            break;
        }
        for (int v = a; v <= b; v += step)
            bits |= UINT64_C(1) << v;
    }
    *p = '\0';
    return bits;
}

static void test_next_against_brute_force(void **state)
{
    enum { CASES = 600 };
    const int64_t limit = 400LL * DAY;
    srand(20260214);
    int found = 0, none = 0;
    for (int i = 0; i < CASES; i++) {
        char f[5][64], expr[400];
        uint64_t want[5];
        want[0] = gen_field(f[0], 0, 59, NULL, 0);
        want[1] = gen_field(f[1], 0, 23, NULL, 0);
        want[2] = gen_field(f[2], 1, 31, NULL, 0);
        want[3] = gen_field(f[3], 1, 12, MONTHS, 12);
        want[4] = gen_field(f[4], 0, 7, WDAYS, 7);
        /* Every fourth case asks for the end of short months, for the
         * rare and missing days. */
        if (i % 4 == 3) {
            strcpy(f[2], rnd(2) ? "29-31" : "30,31");
            want[2] = f[2][0] == '2' ? 7u << 29 : 3u << 30;
            strcpy(f[3], rnd(2) ? "2" : "FEB,4-6/2,sep");
            want[3] = f[3][0] == '2' ? 1u << 2 : 1u << 2 | 1u << 4 | 1u << 6 | 1u << 9;
        }
        snprintf(expr, sizeof expr, "%s %s %s %s %s", f[0], f[1], f[2], f[3], f[4]);
        struct kiln_cron c = parse_ok(expr);
        if (c.minutes != want[0] || c.hours != want[1] || c.mdays != want[2] ||
            c.months != want[3] || c.wdays != (uint8_t)((want[4] | want[4] >> 7) & 0x7f) ||
            c.mday_star != (f[2][0] == '*') || c.wday_star != (f[4][0] == '*'))
            fail_msg("\"%s\": parsed to other sets", expr);

        /* From 1901 to 2099, now and then on a month's last minutes. */
        int64_t t = at(1901, 1, 1, 0, 0) + (int64_t)((uint64_t)rand() * 7919 % (198ULL * 365 * DAY));
        if (i % 5 == 0) {
            time_t tt = (time_t)t;
            struct tm tm;
            gmtime_r(&tt, &tm);
            t = at(tm.tm_year + 1900, tm.tm_mon + 2, 1, 0, 0) - 1 - (int64_t)rnd(3600);
        }
        int64_t got = kiln_cron_next(&c, t), ref = ref_next(&c, t, limit);
        char a[80], b[80], d[80];
        if (ref != -1 ? got != ref : got != -1 && got <= t + limit)
            fail_msg("\"%s\" after %s: got %s, brute force %s", expr, show(a, t), show(b, got),
                     show(d, ref));
        if (got != -1 && (!kiln_cron_matches(&c, got) || got % 60 != 0))
            fail_msg("\"%s\": %s does not match", expr, show(a, got));
        if (ref != -1)
            found++;
        else
            none++;

        /* kiln_cron_matches agrees with the reference minute by minute
         * around the answer and at random times before the epoch. */
        for (int k = 0; k < 20; k++) {
            int64_t m = (ref != -1 ? ref : t) + ((int64_t)rnd(121) - 60) * 60 + (int64_t)rnd(60);
            int64_t old = -(int64_t)rnd(1u << 30) * 4;
            if (kiln_cron_matches(&c, m) != ref_matches(&c, m) ||
                kiln_cron_matches(&c, old) != ref_matches(&c, old))
                fail_msg("\"%s\": kiln_cron_matches differs near %s or at %s", expr,
                         show(a, m), show(b, old));
        }
    }
    /* the generator reaches both outcomes */
    assert_true(found > CASES / 2);
    assert_true(none > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_form),
        cmocka_unit_test(test_blanks),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_sunday_is_0_and_7),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_length_bound),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_vixie_day_rule),
        cmocka_unit_test(test_next_basics),
        cmocka_unit_test(test_next_month_and_year_ends),
        cmocka_unit_test(test_next_leap_years),
        cmocka_unit_test(test_next_never),
        cmocka_unit_test(test_next_is_utc),
        cmocka_unit_test(test_next_extremes),
        cmocka_unit_test(test_next_against_brute_force),
    };
    return cmocka_run_group_tests_name("jobs/cron", tests, NULL, NULL);
}
