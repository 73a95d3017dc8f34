/*
 * libFuzzer target for the cron parser (jobs/cron.c): any bytes as an
 * expression, as a fork's registration or an environment variable would
 * hand it over.
 *
 * Oracles: the parse returns 0 or KILN_EINVAL and reads nothing past the
 * NUL (the input sits in a heap block of its exact size, under ASan); a
 * refusal leaves a NUL-terminated, non-empty sentence and the schedule
 * untouched. An accepted schedule has at least one value in every field,
 * and from a spread of times t (around the epoch, now, leap days, year
 * ends, the ends of int64_t) kiln_cron_next gives -1 or a multiple of 60
 * after t that kiln_cron_matches; when the answer is under 3 days away, no
 * minute between t and it matches (checked one by one).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "jobs/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GAP_CHECKED (3 * 86400)

static const int64_t TIMES[] = {
    INT64_MIN,
    -86400 * 366LL - 1,   /* 1968-12-31 23:59:59 */
    -1,
    0,
    951782399,            /* 2000-02-28 23:59:59 */
    1767225599,           /* 2025-12-31 23:59:59 */
    1771000000,           /* 2026-02-13 16:26:40 */
    4107542399,           /* 2100-02-28 23:59:59 */
    INT64_MAX - 86400 * 400LL,
    INT64_MAX,
};

static void check_next(const struct kiln_cron *c, int64_t t)
{
    int64_t n = kiln_cron_next(c, t);
    if (n == -1)
        return;
    if (n <= t || n % 60 != 0 || !kiln_cron_matches(c, n))
        abort();
    /* The first minute after t, added in this order so that t near
     * INT64_MIN does not overflow (and it is at most n). */
    int64_t first = t + (60 - ((t % 60) + 60) % 60);
    if (n - first < GAP_CHECKED)
        for (int64_t m = first; m < n; m += 60)
            if (kiln_cron_matches(c, m))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *expr = malloc(size + 1);
    memcpy(expr, data, size);
    expr[size] = '\0';
    struct kiln_cron c, before;
    memset(&c, 0xa5, sizeof c);
    memcpy(&before, &c, sizeof c); /* padding too: the check compares bytes */
    char err[128];
    memset(err, 'x', sizeof err);
    int rc = kiln_cron_parse(&c, expr, err, sizeof err);
    if (rc != 0) {
        if (rc != KILN_EINVAL || !memchr(err, '\0', sizeof err) || err[0] == '\0' ||
            memcmp(&c, &before, sizeof c) != 0)
            abort();
        free(expr);
        return 0;
    }
    if (!c.minutes || !c.hours || !c.mdays || !c.months || !c.wdays)
        abort();
    for (size_t i = 0; i < sizeof TIMES / sizeof TIMES[0]; i++)
        check_next(&c, TIMES[i]);
    free(expr);
    return 0;
}
