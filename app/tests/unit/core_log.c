/*
 * Unit tests for app/src/core/log.c. Every line is read back with jansson:
 * the contract is one valid JSON object per line whatever bytes a client
 * sent. kiln_log output goes to a pipe (kiln_log_set_fd) that the test
 * drains after each call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "test_util.h"

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

/* Parse one line (without its '\n') as a JSON object or fail. */
static json_t *parse_line(const char *p, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(p, len, 0, &err);
    if (!j || !json_is_object(j)) {
        char esc[2048];
        fail_msg("not a JSON object (%s): \"%s\"", err.text, tu_escape(esc, sizeof esc, p, len));
    }
    return j;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        fail_msg("\"%s\" is missing or not a string", key);
    return json_string_value(v);
}

/* RFC 3339 UTC with microseconds: 2026-02-13T17:54:34.599935Z */
static void assert_rfc3339(const char *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(t) != sizeof shape - 1)
        fail_msg("time \"%s\": length %zu, want %zu", t, strlen(t), sizeof shape - 1);
    for (size_t i = 0; shape[i]; i++) {
        bool ok = shape[i] == 'd' ? (t[i] >= '0' && t[i] <= '9') : t[i] == shape[i];
        if (!ok)
            fail_msg("time \"%s\" does not look like %s", t, shape);
    }
}

/* One complete line in b (one '\n', at the end), parsed. */
static json_t *single_line(const kiln_buf *b)
{
    assert_true(b->len > 0);
    assert_int_equal(b->p[b->len - 1], '\n');
    assert_null(memchr(b->p, '\n', b->len - 1));
    return parse_line(b->p, b->len - 1);
}

static struct kiln_log_request sample(void)
{
    struct kiln_log_request r = {
        .request_id = KILN_STR("F1a2b3c4d5e6f7g8h9i0"),
        .trace_id = KILN_STR("Root=1-67891233-abcdef012345678912345678"),
        .method = KILN_STR("GET"),
        .path = KILN_STR("/api/v1/notes"),
        .status = 200,
        .duration_ms = 1.25,
        .user_id = KILN_STR("u-42"),
        .user_agent = KILN_STR("curl/8.0"),
        .remote_ip = "10.0.0.1",
    };
    return r;
}

static void test_request_line_fields(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024);
    struct kiln_log_request r = sample();
    assert_int_equal(kiln_log_format_request(&b, &r), 0);

    json_t *j = single_line(&b);
    assert_rfc3339(jstr(j, "time"));
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "message"), "request");
    assert_string_equal(jstr(j, "request_id"), "F1a2b3c4d5e6f7g8h9i0");
    assert_string_equal(jstr(j, "trace_id"), "Root=1-67891233-abcdef012345678912345678");
    assert_string_equal(jstr(j, "method"), "GET");
    assert_string_equal(jstr(j, "path"), "/api/v1/notes");
    assert_true(json_is_integer(json_object_get(j, "status")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_is_number(json_object_get(j, "duration_ms")));
    assert_true(json_number_value(json_object_get(j, "duration_ms")) == 1.25);
    assert_string_equal(jstr(j, "user_id"), "u-42");
    assert_string_equal(jstr(j, "user_agent"), "curl/8.0");
    assert_string_equal(jstr(j, "remote_ip"), "10.0.0.1");
    assert_int_equal(json_object_size(j), 12);
    json_decref(j);
    kiln_buf_free(&b);
}

static void test_request_line_optional_fields(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024);
    struct kiln_log_request r = sample();
    r.trace_id = KILN_STR_NULL;
    r.user_id = KILN_STR_NULL;
    r.user_agent = KILN_STR_NULL;
    r.remote_ip = NULL;
    assert_int_equal(kiln_log_format_request(&b, &r), 0);

    json_t *j = single_line(&b);
    assert_null(json_object_get(j, "trace_id"));
    assert_null(json_object_get(j, "user_id"));
    assert_true(json_is_null(json_object_get(j, "user_agent")));
    assert_string_equal(jstr(j, "remote_ip"), "");
    json_decref(j);
    kiln_buf_free(&b);
}

static const struct level_by_status {
    int status;
    const char *level;
} status_levels[] = {
    { 100, "info" },    { 200, "info" },    { 204, "info" },  { 301, "info" },
    { 399, "info" },    { 400, "warning" }, { 404, "warning" }, { 499, "warning" },
    { 500, "error" },   { 503, "error" },   { 599, "error" },
};

static void test_request_level_by_status(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024);
    for (size_t i = 0; i < ARRAY_LEN(status_levels); i++) {
        struct kiln_log_request r = sample();
        r.status = status_levels[i].status;
        kiln_buf_reset(&b);
        assert_int_equal(kiln_log_format_request(&b, &r), 0);
        json_t *j = single_line(&b);
        if (strcmp(jstr(j, "level"), status_levels[i].level) != 0)
            fail_msg("status %d: level \"%s\", want \"%s\"", r.status, jstr(j, "level"),
                     status_levels[i].level);
        assert_string_equal(kiln_log_level_name(kiln_log_request_level(r.status)),
                            status_levels[i].level);
        json_decref(j);
    }
    kiln_buf_free(&b);
}

/* Client bytes: quotes, backslash, every control byte, DEL, invalid UTF-8. */
static void test_request_line_hostile_user_agent(void **state)
{
    static const char tail[] = "\"q\"\\\x7f\xff\xc3(caf\xc3\xa9\xed\xa0\x80";
    char ua[64 + sizeof tail];
    size_t n = 0;
    for (int c = 1; c < 0x20; c++)
        ua[n++] = (char)c;
    memcpy(ua + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;

    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024);
    struct kiln_log_request r = sample();
    r.user_agent = (kiln_str){ ua, n };
    r.path = KILN_STR("/a\"b\\c");
    assert_int_equal(kiln_log_format_request(&b, &r), 0);

    /* No raw control byte but the final newline. */
    for (size_t i = 0; i + 1 < b.len; i++)
        if ((unsigned char)b.p[i] < 0x20)
            fail_msg("raw control byte 0x%02x at %zu", (unsigned char)b.p[i], i);
    assert_contains(b.p, b.len, "\\u0001");
    assert_contains(b.p, b.len, "\\u001f");

    json_t *j = single_line(&b);
    const char *got = jstr(j, "user_agent");
    for (int c = 1; c < 0x20; c++)
        assert_int_equal((unsigned char)got[c - 1], c);
    /* valid UTF-8 kept, invalid bytes each replaced by U+FFFD */
    assert_string_equal(got + 0x1f, "\"q\"\\\x7f\xef\xbf\xbd\xef\xbf\xbd(caf\xc3\xa9"
                                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(jstr(j, "path"), "/a\"b\\c");
    json_decref(j);
    kiln_buf_free(&b);
}

/* An event loop batches lines into one buffer: each stays whole. */
static void test_request_lines_batch(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 64 * 1024);
    struct kiln_log_request r = sample();
    assert_int_equal(kiln_log_format_request(&b, &r), 0);
    r.status = 503;
    assert_int_equal(kiln_log_format_request(&b, &r), 0);

    const char *nl = memchr(b.p, '\n', b.len);
    assert_non_null(nl);
    size_t first = (size_t)(nl - b.p);
    json_t *a = parse_line(b.p, first);
    json_t *c = parse_line(nl + 1, b.len - first - 2);
    assert_string_equal(jstr(a, "level"), "info");
    assert_string_equal(jstr(c, "level"), "error");
    json_decref(a);
    json_decref(c);
    kiln_buf_free(&b);
}

/* A line that does not fit is dropped whole; what was there stays. */
static void test_request_line_too_big(void **state)
{
    kiln_buf b;
    kiln_buf_init(&b, 120);
    kiln_buf_append_c(&b, "kept\n");
    struct kiln_log_request r = sample();
    assert_int_equal(kiln_log_format_request(&b, &r), KILN_ETOOBIG);
    assert_mem_eq(b.p, b.len, "kept\n", 5);
    kiln_buf_free(&b);
}

static const struct parse_case {
    const char *s;
    int rc;
    enum kiln_log_level level;
} parse_cases[] = {
    { "debug", 0, KILN_LOG_DEBUG },
    { "info", 0, KILN_LOG_INFO },
    { "warning", 0, KILN_LOG_WARNING },
    { "warn", 0, KILN_LOG_WARNING },
    { "error", 0, KILN_LOG_ERROR },
    { "", KILN_EINVAL, 0 },
    { "fatal", KILN_EINVAL, 0 },
    { "err", KILN_EINVAL, 0 },
    { "warn ", KILN_EINVAL, 0 },
    { "information", KILN_EINVAL, 0 },
};

static void test_level_parse(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(parse_cases); i++) {
        const struct parse_case *tc = &parse_cases[i];
        enum kiln_log_level level = (enum kiln_log_level)99;
        int rc = kiln_log_level_parse(tc->s, &level);
        if (rc != tc->rc)
            fail_msg("\"%s\": %d, want %d", tc->s, rc, tc->rc);
        if (rc == 0 && level != tc->level)
            fail_msg("\"%s\": level %d, want %d", tc->s, level, tc->level);
        if (rc != 0 && level != (enum kiln_log_level)99)
            fail_msg("\"%s\": level written on error", tc->s);
    }
    assert_string_equal(kiln_log_level_name(KILN_LOG_DEBUG), "debug");
    assert_string_equal(kiln_log_level_name(KILN_LOG_WARNING), "warning");
    assert_string_equal(kiln_log_level_name(KILN_LOG_ERROR), "error");
}

/* ---- kiln_log / kiln_logf into a pipe --------------------------------- */

struct pipe_fx {
    int fd[2];
    char buf[256 * 1024];
    size_t len;
};

static int pipe_setup(void **state)
{
    struct pipe_fx *f = calloc(1, sizeof *f);
    if (pipe(f->fd) != 0)
        return -1;
    fcntl(f->fd[0], F_SETFL, O_NONBLOCK);
    /* Room for the biggest line a test writes, so write(2) never blocks. */
    fcntl(f->fd[1], F_SETPIPE_SZ, 1024 * 1024);
    kiln_log_set_fd(f->fd[1]);
    kiln_log_set_level(KILN_LOG_INFO);
    *state = f;
    return 0;
}

static int pipe_teardown(void **state)
{
    struct pipe_fx *f = *state;
    kiln_log_set_fd(1);
    kiln_log_set_level(KILN_LOG_INFO);
    close(f->fd[0]);
    close(f->fd[1]);
    free(f);
    return 0;
}

/* Everything written so far; f->len bytes. */
static void drain(struct pipe_fx *f)
{
    f->len = 0;
    for (;;) {
        ssize_t n = read(f->fd[0], f->buf + f->len, sizeof f->buf - f->len);
        if (n > 0) {
            f->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
}

static json_t *drain_one_line(struct pipe_fx *f)
{
    drain(f);
    if (f->len == 0)
        fail_msg("nothing was logged");
    if (f->buf[f->len - 1] != '\n' || memchr(f->buf, '\n', f->len - 1)) {
        char esc[2048];
        fail_msg("want exactly one line: \"%s\"", tu_escape(esc, sizeof esc, f->buf, f->len));
    }
    return parse_line(f->buf, f->len - 1);
}

static void test_log_fields(void **state)
{
    struct pipe_fx *f = *state;
    kiln_log(KILN_LOG_INFO, "listening", "address", "127.0.0.1", "skipped", NULL, "port",
             "4000", NULL);
    json_t *j = drain_one_line(f);
    assert_rfc3339(jstr(j, "time"));
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "message"), "listening");
    assert_string_equal(jstr(j, "address"), "127.0.0.1");
    assert_string_equal(jstr(j, "port"), "4000");
    assert_null(json_object_get(j, "skipped"));
    assert_int_equal(json_object_size(j), 5);
    json_decref(j);
}

static void test_log_escapes_values(void **state)
{
    struct pipe_fx *f = *state;
    kiln_log(KILN_LOG_WARNING, "bad \"input\"\n", "value", "a\\b\x01\xff", NULL);
    json_t *j = drain_one_line(f);
    assert_string_equal(jstr(j, "level"), "warning");
    assert_string_equal(jstr(j, "message"), "bad \"input\"\n");
    assert_string_equal(jstr(j, "value"), "a\\b\x01\xef\xbf\xbd");
    json_decref(j);
}

static void test_logf(void **state)
{
    struct pipe_fx *f = *state;
    kiln_logf(KILN_LOG_ERROR, "worker %d: \"%s\" failed", 3, "db");
    json_t *j = drain_one_line(f);
    assert_string_equal(jstr(j, "level"), "error");
    assert_string_equal(jstr(j, "message"), "worker 3: \"db\" failed");
    json_decref(j);
}

static void test_level_filtering(void **state)
{
    struct pipe_fx *f = *state;

    /* INFO (the default) drops debug only. */
    assert_false(kiln_log_enabled(KILN_LOG_DEBUG));
    assert_true(kiln_log_enabled(KILN_LOG_INFO));
    kiln_log(KILN_LOG_DEBUG, "hidden", NULL);
    kiln_logf(KILN_LOG_DEBUG, "hidden %d", 1);
    drain(f);
    assert_int_equal(f->len, 0);

    kiln_log_set_level(KILN_LOG_ERROR);
    assert_false(kiln_log_enabled(KILN_LOG_INFO));
    assert_false(kiln_log_enabled(KILN_LOG_WARNING));
    assert_true(kiln_log_enabled(KILN_LOG_ERROR));
    kiln_log(KILN_LOG_INFO, "hidden", "k", "v", NULL);
    kiln_log(KILN_LOG_WARNING, "hidden", NULL);
    kiln_logf(KILN_LOG_INFO, "hidden %s", "too");
    drain(f);
    assert_int_equal(f->len, 0);

    kiln_log(KILN_LOG_ERROR, "shown", NULL);
    json_t *j = drain_one_line(f);
    assert_string_equal(jstr(j, "message"), "shown");
    json_decref(j);

    kiln_log_set_level(KILN_LOG_DEBUG);
    kiln_log(KILN_LOG_DEBUG, "debug shown", NULL);
    j = drain_one_line(f);
    assert_string_equal(jstr(j, "level"), "debug");
    json_decref(j);
}

/* Several calls: one valid JSON object per line, in order. */
static void test_log_lines(void **state)
{
    struct pipe_fx *f = *state;
    for (int i = 0; i < 10; i++) {
        char n[8];
        snprintf(n, sizeof n, "%d", i);
        kiln_log(KILN_LOG_INFO, "tick", "n", n, NULL);
    }
    drain(f);
    size_t off = 0;
    for (int i = 0; i < 10; i++) {
        const char *nl = memchr(f->buf + off, '\n', f->len - off);
        assert_non_null(nl);
        json_t *j = parse_line(f->buf + off, (size_t)(nl - (f->buf + off)));
        assert_int_equal(atoi(jstr(j, "n")), i);
        json_decref(j);
        off = (size_t)(nl - f->buf) + 1;
    }
    assert_int_equal(off, f->len);
}

static void test_log_write_raw(void **state)
{
    struct pipe_fx *f = *state;
    kiln_log_write("{\"a\":1}\n{\"b\":2}\n", 16);
    drain(f);
    assert_mem_eq(f->buf, f->len, "{\"a\":1}\n{\"b\":2}\n", 16);
}

/*
 * log.c: "Log lines are bounded: a pathological value is cut, never
 * unbounded." A value past the 64 KiB line cap must still leave a line (cut
 * to fit), not make the whole event vanish: an error logged with a long
 * detail is exactly the one an operator needs.
 */
static void test_log_huge_value_is_cut_not_dropped(void **state)
{
    struct pipe_fx *f = *state;
    size_t n = 100 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    kiln_log(KILN_LOG_ERROR, "upstream failed", "detail", big, NULL);
    free(big);
    json_t *j = drain_one_line(f);
    assert_string_equal(jstr(j, "message"), "upstream failed");
    assert_true(f->len <= 64 * 1024);
    json_decref(j);
}

/* An outage writes one line per dependency per second, and that line
 * counts every failure it stands for; other dependencies are counted apart. */
static void test_outage_once_a_second_with_a_count(void **state)
{
    struct pipe_fx *f = *state;
    /* Start just after a second boundary so the loop below fits in one. */
    struct timespec ts;
    do {
        clock_gettime(CLOCK_MONOTONIC, &ts);
    } while (ts.tv_nsec > 100 * 1000 * 1000);
    for (int i = 0; i < 500; i++)
        kiln_log_outage("Test dependency", "connection refused");
    kiln_log_outage("Other dependency", "timed out");
    drain(f);
    size_t lines = 0;
    for (size_t i = 0; i < f->len; i++)
        lines += f->buf[i] == '\n';
    assert_int_equal(lines, 2);
    json_t *first = parse_line(f->buf, (size_t)((char *)memchr(f->buf, '\n', f->len) - f->buf));
    assert_string_equal(jstr(first, "level"), "error");
    assert_string_equal(jstr(first, "message"), "dependency unavailable");
    assert_string_equal(jstr(first, "dependency"), "Test dependency");
    assert_string_equal(jstr(first, "error"), "connection refused");
    assert_string_equal(jstr(first, "failures"), "1");
    json_decref(first);
    /* The next second's line carries the 499 failures in between, and
     * this one. */
    struct timespec wait = { 1, 50 * 1000 * 1000 };
    nanosleep(&wait, NULL);
    kiln_log_outage("Test dependency", "still refused");
    json_t *next = drain_one_line(f);
    assert_string_equal(jstr(next, "failures"), "500");
    assert_string_equal(jstr(next, "error"), "still refused");
    json_decref(next);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_fields),
        cmocka_unit_test(test_request_line_optional_fields),
        cmocka_unit_test(test_request_level_by_status),
        cmocka_unit_test(test_request_line_hostile_user_agent),
        cmocka_unit_test(test_request_lines_batch),
        cmocka_unit_test(test_request_line_too_big),
        cmocka_unit_test(test_level_parse),
#define T(fn) cmocka_unit_test_setup_teardown(fn, pipe_setup, pipe_teardown)
        T(test_log_fields),
        T(test_log_escapes_values),
        T(test_logf),
        T(test_level_filtering),
        T(test_log_lines),
        T(test_log_write_raw),
        T(test_log_huge_value_is_cut_not_dropped),
        T(test_outage_once_a_second_with_a_count),
#undef T
    };
    return cmocka_run_group_tests_name("core/log", tests, NULL, NULL);
}
