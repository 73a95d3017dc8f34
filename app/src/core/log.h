/*
 * JSON-lines logging on stdout (CloudWatch reads it): one object per line,
 * always valid JSON whatever bytes a client sent. Lines are written whole
 * with one write(2) under a process-wide lock, so lines from different
 * threads never interleave. The request log is formatted by the caller into
 * its own buffer (kiln_log_format_request) so that an event loop can batch a
 * loop iteration's lines into one write (kiln_log_write).
 * All functions are thread-safe.
 */
#ifndef KILN_LOG_H
#define KILN_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/str.h"

enum kiln_log_level {
    KILN_LOG_DEBUG = 0,
    KILN_LOG_INFO = 1,
    KILN_LOG_WARNING = 2,
    KILN_LOG_ERROR = 3,
};

/* Accepts debug, info, warning, warn, error. 0 or KILN_EINVAL. */
int kiln_log_level_parse(const char *s, enum kiln_log_level *out);
const char *kiln_log_level_name(enum kiln_log_level level);
void kiln_log_set_level(enum kiln_log_level level);
bool kiln_log_enabled(enum kiln_log_level level);
/* Where lines go (default 1, stdout). For tests. */
void kiln_log_set_fd(int fd);

/*
 * One line {"time","level","message", then the extra string fields}. The
 * variadic part is pairs of (const char *key, const char *value) ended by a
 * NULL key; a NULL value is skipped. Values are escaped.
 */
void kiln_log(enum kiln_log_level level, const char *message, ...);
/* printf-style message, no extra fields. */
void kiln_logf(enum kiln_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A dependency (database, session store, file storage, ...) failed. During
 * an outage every request fails the same way, so this writes at most one
 * line per dependency per second ("dependency unavailable", with the
 * dependency, the latest error and "failures": how many failures the line
 * stands for, itself included); the failures in between are only counted.
 * dependency must be a static string (it is the key); error may be NULL.
 */
void kiln_log_outage(const char *dependency, const char *error);

/* The fields of the one line logged per request (DESIGN.md, Operating it). */
struct kiln_log_request {
    kiln_str request_id;
    kiln_str trace_id;      /* p == NULL: omitted */
    kiln_str method;
    kiln_str path;          /* without the query string: queries carry codes */
    int status;
    double duration_ms;
    kiln_str user_id;       /* p == NULL: omitted */
    kiln_str user_agent;    /* p == NULL: null */
    const char *remote_ip;
};

/* Level for a request line: 5xx error, 4xx warning, otherwise info. */
enum kiln_log_level kiln_log_request_level(int status);
/* Append one complete line (with '\n') to out. 0 or KILN_ETOOBIG. */
int kiln_log_format_request(kiln_buf *out, const struct kiln_log_request *r);
/* Write complete lines as one unit. */
void kiln_log_write(const char *data, size_t len);

#endif
