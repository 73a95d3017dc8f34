/* Timestamps without locale or time-zone dependence. */
#include "core/clock.h"

#include <string.h>

uint64_t kiln_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t kiln_now_ms(void)
{
    return kiln_now_ns() / 1000000u;
}

/* Fixed-width decimal, no snprintf: the widths are part of the formats. */
static char *digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/*
 * H. Hinnant's civil_from_days. Pure arithmetic: glibc's gmtime_r takes the
 * time-zone lock on every call, and a page of 50 notes formats 100
 * timestamps, with every loop and worker thread contending for that one
 * lock.
 */
void kiln_civil_from_days(int64_t z, int64_t *year, unsigned *month, unsigned *day)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (int64_t)yoe + era * 400 + (*month <= 2);
}

void kiln_time_rfc3339(char out[KILN_RFC3339_LEN + 1], const struct timespec *ts)
{
    int64_t t = ts->tv_sec;
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    unsigned secs = (unsigned)(t - days * 86400);
    int64_t year;
    unsigned month, day;
    kiln_civil_from_days(days, &year, &month, &day);
    char *p = out;
    p = digits(p, (unsigned)year, 4);
    *p++ = '-';
    p = digits(p, month, 2);
    *p++ = '-';
    p = digits(p, day, 2);
    *p++ = 'T';
    p = digits(p, secs / 3600, 2);
    *p++ = ':';
    p = digits(p, secs / 60 % 60, 2);
    *p++ = ':';
    p = digits(p, secs % 60, 2);
    *p++ = '.';
    p = digits(p, (unsigned)(ts->tv_nsec / 1000), 6);
    *p++ = 'Z';
    *p = '\0';
}

void kiln_time_rfc3339_now(char out[KILN_RFC3339_LEN + 1])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    kiln_time_rfc3339(out, &ts);
}

void kiln_time_http_date(char out[KILN_HTTP_DATE_LEN + 1], time_t t)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    char *p = out;
    gmtime_r(&t, &tm);
    memcpy(p, days[tm.tm_wday % 7], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = digits(p, (unsigned)tm.tm_mday, 2);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon % 12], 3);
    p += 3;
    *p++ = ' ';
    p = digits(p, (unsigned)(tm.tm_year + 1900), 4);
    *p++ = ' ';
    p = digits(p, (unsigned)tm.tm_hour, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_min, 2);
    *p++ = ':';
    p = digits(p, (unsigned)tm.tm_sec, 2);
    memcpy(p, " GMT", 5);
}
