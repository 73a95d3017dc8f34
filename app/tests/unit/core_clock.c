/*
 * Unit tests for app/src/core/clock.c: RFC 3339 timestamps formatted by
 * arithmetic, checked against glibc's gmtime_r (the reference the formatter
 * replaced) across leap years, century rules, the epoch and before it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

#include "core/clock.h"

static void reference(char out[64], time_t t, long usec)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
}

static void check(time_t t, long usec)
{
    char want[64], got[KILN_RFC3339_LEN + 1];
    struct timespec ts = { t, usec * 1000 };
    reference(want, t, usec);
    kiln_time_rfc3339(got, &ts);
    if (strcmp(got, want) != 0)
        fail_msg("t=%lld: got %s, want %s", (long long)t, got, want);
}

static void test_known_values(void **state)
{
    char got[KILN_RFC3339_LEN + 1];
    struct timespec ts = { 0, 0 };
    kiln_time_rfc3339(got, &ts);
    assert_string_equal(got, "1970-01-01T00:00:00.000000Z");
    ts = (struct timespec){ 951782400, 599935000 }; /* a leap day of a century year */
    kiln_time_rfc3339(got, &ts);
    assert_string_equal(got, "2000-02-29T00:00:00.599935Z");
    ts = (struct timespec){ 4107542399, 999999000 }; /* 2100 is not a leap year */
    kiln_time_rfc3339(got, &ts);
    assert_string_equal(got, "2100-02-28T23:59:59.999999Z");
    ts = (struct timespec){ -1, 0 };
    kiln_time_rfc3339(got, &ts);
    assert_string_equal(got, "1969-12-31T23:59:59.000000Z");
}

static void test_matches_gmtime(void **state)
{
    /* Every day boundary and its neighbours from 1900 to 2200, and a spread
     * of times within days. */
    for (time_t day = -2208988800; day < 7258118400; day += 86400) {
        check(day, 0);
        check(day - 1, 999999);
        check(day + 43210, 123456);
    }
    srand(7);
    for (int i = 0; i < 200000; i++) {
        time_t t = (time_t)(((long long)rand() << 16 ^ rand()) % 9467107200LL) - 2208988800LL;
        check(t, rand() % 1000000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_matches_gmtime),
    };
    return cmocka_run_group_tests_name("core/clock", tests, NULL, NULL);
}
