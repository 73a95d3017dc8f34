/* JSON-lines logger; see log.h. */
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"

static atomic_int min_level = KILN_LOG_INFO;
static atomic_int log_fd = 1;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "debug", "info", "warning", "error" };

int kiln_log_level_parse(const char *s, enum kiln_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum kiln_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warn") == 0) {
        *out = KILN_LOG_WARNING;
        return 0;
    }
    return KILN_EINVAL;
}

const char *kiln_log_level_name(enum kiln_log_level level)
{
    return level_names[(unsigned)level < 4 ? level : KILN_LOG_ERROR];
}

void kiln_log_set_level(enum kiln_log_level level) { min_level = level; }
bool kiln_log_enabled(enum kiln_log_level level) { return (int)level >= min_level; }
void kiln_log_set_fd(int fd) { log_fd = fd; }

void kiln_log_write(const char *data, size_t len)
{
    pthread_mutex_lock(&write_lock);
    int fd = log_fd;
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; /* a dead log pipe must not take the server down */
        }
        data += n;
        len -= (size_t)n;
    }
    pthread_mutex_unlock(&write_lock);
}

/* {"time":"…","level":"…","message":"… */
static int line_start(kiln_buf *b, enum kiln_log_level level, const char *msg, size_t len)
{
    char now[KILN_RFC3339_LEN + 1];
    int err = 0;
    kiln_time_rfc3339_now(now);
    err |= kiln_buf_append_c(b, "{\"time\":\"");
    err |= kiln_buf_append(b, now, KILN_RFC3339_LEN);
    err |= kiln_buf_append_c(b, "\",\"level\":\"");
    err |= kiln_buf_append_c(b, kiln_log_level_name(level));
    err |= kiln_buf_append_c(b, "\",\"message\":\"");
    err |= kiln_buf_append_json_str(b, msg, len);
    err |= kiln_buf_append_c(b, "\"");
    return err;
}

/* A single value longer than this is cut (and marked), not the line dropped. */
#define VALUE_MAX_BYTES (8 * 1024)

static int field_str(kiln_buf *b, const char *key, kiln_str v)
{
    int err = 0;
    bool cut = v.len > VALUE_MAX_BYTES;
    if (cut)
        v.len = VALUE_MAX_BYTES;
    err |= kiln_buf_append_c(b, ",\"");
    err |= kiln_buf_append_c(b, key);
    if (!v.p)
        return err | kiln_buf_append_c(b, "\":null");
    err |= kiln_buf_append_c(b, "\":\"");
    err |= kiln_buf_append_json_str(b, v.p, v.len);
    if (cut)
        err |= kiln_buf_append_c(b, "...(truncated)");
    err |= kiln_buf_append_c(b, "\"");
    return err;
}

/* Log lines are bounded: values are cut at VALUE_MAX_BYTES (6x for escapes). */
#define LINE_MAX_BYTES (64 * 1024)

void kiln_log(enum kiln_log_level level, const char *message, ...)
{
    if (!kiln_log_enabled(level))
        return;
    kiln_buf b;
    kiln_buf_init(&b, LINE_MAX_BYTES);
    int err = line_start(&b, level, message, strlen(message));
    va_list ap;
    va_start(ap, message);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (val)
            err |= field_str(&b, key, kiln_str_c(val));
    }
    va_end(ap);
    err |= kiln_buf_append_c(&b, "}\n");
    if (!err)
        kiln_log_write(b.p, b.len);
    kiln_buf_free(&b);
}

void kiln_logf(enum kiln_log_level level, const char *fmt, ...)
{
    if (!kiln_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    kiln_buf b;
    kiln_buf_init(&b, LINE_MAX_BYTES);
    int err = line_start(&b, level, msg, strlen(msg));
    err |= kiln_buf_append_c(&b, "}\n");
    if (!err)
        kiln_log_write(b.p, b.len);
    kiln_buf_free(&b);
}

/* A handful of dependencies exist; a fixed table keeps this allocation-free.
 * The lock is taken only on a failure path. */
#define OUTAGE_SLOTS 16
static struct {
    const char *dependency;
    int64_t second;     /* when the last line was written */
    uint64_t unlogged;  /* failures since then */
} outages[OUTAGE_SLOTS];
static pthread_mutex_t outage_lock = PTHREAD_MUTEX_INITIALIZER;

void kiln_log_outage(const char *dependency, const char *error)
{
    int64_t now = (int64_t)(kiln_now_ns() / 1000000000ull);
    uint64_t failures = 0;
    pthread_mutex_lock(&outage_lock);
    size_t i = 0;
    while (i < OUTAGE_SLOTS && outages[i].dependency &&
           strcmp(outages[i].dependency, dependency) != 0)
        i++;
    if (i == OUTAGE_SLOTS) {
        i = OUTAGE_SLOTS - 1; /* more dependencies than slots: share the last */
    } else if (!outages[i].dependency) {
        outages[i].dependency = dependency;
        outages[i].second = now - 1;
    }
    outages[i].unlogged++;
    if (outages[i].second != now) {
        failures = outages[i].unlogged;
        outages[i].unlogged = 0;
        outages[i].second = now;
    }
    pthread_mutex_unlock(&outage_lock);
    if (!failures)
        return;
    char count[24];
    snprintf(count, sizeof count, "%llu", (unsigned long long)failures);
    kiln_log(KILN_LOG_ERROR, "dependency unavailable", "dependency", dependency, "error", error,
             "failures", count, NULL);
}

enum kiln_log_level kiln_log_request_level(int status)
{
    if (status >= 500)
        return KILN_LOG_ERROR;
    if (status >= 400)
        return KILN_LOG_WARNING;
    return KILN_LOG_INFO;
}

int kiln_log_format_request(kiln_buf *out, const struct kiln_log_request *r)
{
    size_t start = out->len;
    int err = 0;
    char num[32];
    /* Appends fail whole, never partly; any failure drops the whole line. */
    err |= line_start(out, kiln_log_request_level(r->status), "request", 7);
    err |= field_str(out, "request_id", r->request_id);
    if (r->trace_id.p)
        err |= field_str(out, "trace_id", r->trace_id);
    err |= field_str(out, "method", r->method);
    err |= field_str(out, "path", r->path);
    snprintf(num, sizeof num, ",\"status\":%d", r->status);
    err |= kiln_buf_append_c(out, num);
    snprintf(num, sizeof num, ",\"duration_ms\":%.3f", r->duration_ms);
    err |= kiln_buf_append_c(out, num);
    if (r->user_id.p)
        err |= field_str(out, "user_id", r->user_id);
    err |= field_str(out, "user_agent", r->user_agent);
    err |= field_str(out, "remote_ip", kiln_str_c(r->remote_ip ? r->remote_ip : ""));
    err |= kiln_buf_append_c(out, "}\n");
    if (err) {
        out->len = start;
        return KILN_ETOOBIG;
    }
    return 0;
}
