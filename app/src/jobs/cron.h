/*
 * Cron expressions for scheduled jobs: the five classic fields, read in UTC.
 *
 *   minute (0-59)  hour (0-23)  day of month (1-31)  month (1-12 or JAN-DEC)
 *   day of week (0-7 or SUN-SAT; 0 and 7 are Sunday)
 *
 * Each field: "*", a number, a range "a-b", a list "a,b-c", and steps
 * "* /n", "a-b/n", "a/n" (a to the field's end). Names are case-blind. The
 * macros @yearly (@annually), @monthly, @weekly, @daily (@midnight) and
 * @hourly stand for their usual expansions. As in Vixie cron, when both the
 * day of month and the day of week are restricted (neither starts with
 * "*"), a day matches if either matches.
 *
 * Details the above leaves open: fields are separated by runs of spaces and
 * tabs, and blanks before and after the expression are ignored (no other
 * white space is taken). Names are exactly the 3 letters. A step must reach
 * a second value: 1 to b-a ("* /60" in the minute field is refused, not
 * read as "0"). The day of week's '*' and "a/n" run to 7, like Vixie's.
 * Macros are case-blind too and stand alone; @reboot is refused.
 *
 * The parser reads untrusted text (a fork's registration, an environment
 * variable): it bounds the length (KILN_CRON_MAX_LEN), never reads past the
 * NUL, and says what is wrong. Fuzzed by app/tests/fuzz/cron.c.
 */
#ifndef KILN_JOBS_CRON_H
#define KILN_JOBS_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_CRON_MAX_LEN 256

struct kiln_cron {
    uint64_t minutes;   /* bit m: minute m */
    uint32_t hours;     /* bit h */
    uint32_t mdays;     /* bit d: day d of the month (1-31) */
    uint16_t months;    /* bit m: month m (1-12) */
    uint8_t wdays;      /* bit d: day d of the week (0 = Sunday .. 6) */
    bool mday_star;     /* the day-of-month field started with '*' */
    bool wday_star;     /* the day-of-week field started with '*' */
};

/* 0, or KILN_EINVAL with a sentence in err (errlen bytes, NUL-terminated).
 * c is written only on success; err may be NULL when errlen is 0. */
int kiln_cron_parse(struct kiln_cron *c, const char *expr, char *err, size_t errlen);

/* The first minute strictly after t (Unix seconds, UTC) that c matches, as
 * Unix seconds (a multiple of 60), or -1 when none comes within 5 years
 * (e.g. "0 0 30 2 *"). "Within 5 years": on the day of the minute after t
 * or one of the 1826 days after that; also -1 when the answer would be past
 * INT64_MAX. Takes any int64_t t, before 1970 too. */
int64_t kiln_cron_next(const struct kiln_cron *c, int64_t t);

/* Whether the minute holding t matches. */
bool kiln_cron_matches(const struct kiln_cron *c, int64_t t);

#endif
