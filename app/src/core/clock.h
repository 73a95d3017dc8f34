/* Clocks and the two timestamp formats Kiln emits. Thread-safe. */
#ifndef KILN_CLOCK_H
#define KILN_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds, for deadlines and durations. */
uint64_t kiln_now_ms(void);
/* Monotonic nanoseconds. */
uint64_t kiln_now_ns(void);

#define KILN_RFC3339_LEN 27 /* 2026-02-13T17:54:34.599935Z */
/* RFC 3339 UTC with microseconds (API.md); out gets a NUL at [27]. */
void kiln_time_rfc3339(char out[KILN_RFC3339_LEN + 1], const struct timespec *ts);
/* The current wall-clock time in that format. */
void kiln_time_rfc3339_now(char out[KILN_RFC3339_LEN + 1]);

/* Days since 1970-01-01 (those of any int64_t Unix time) to a proleptic
 * Gregorian date: month 1-12, day 1-31. */
void kiln_civil_from_days(int64_t days, int64_t *year, unsigned *month, unsigned *day);

#define KILN_HTTP_DATE_LEN 29 /* Wed, 25 Nov 2026 17:06:14 GMT */
/* IMF-fixdate (RFC 9110 5.6.7); out gets a NUL at [29]. */
void kiln_time_http_date(char out[KILN_HTTP_DATE_LEN + 1], time_t t);

#endif
