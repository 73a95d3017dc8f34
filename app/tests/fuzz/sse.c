/*
 * libFuzzer target for the change feed's untrusted input and output
 * (events/feed.c): any bytes as a Last-Event-ID, as a ?resources= list,
 * and as the stored JSON of an event framed into a server-sent event.
 *
 * Oracles: an id is accepted exactly when it is 1..19 digits, with the
 * value strtoll reads (-1 past INT64_MAX: it names no event); a resources
 * list exactly when each comma-separated name is a known resource, with
 * the bit of each; a frame
 * read back by an SSE parser written here from the WHATWG rules (lines end
 * at CR, LF or CRLF; "field: value"; a blank line dispatches) is exactly
 * one message with the event's id and one data line, and when the stored
 * data was JSON, that line is JSON whose "data" equals it.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "events/feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = { "notes", "projects", "tasks" };

static void check_id(const char *p, size_t n)
{
    int64_t v = -1;
    bool ok = kiln_feed_parse_id((kiln_str){ p, n }, &v);
    bool digits = n >= 1 && n <= 19;
    for (size_t i = 0; digits && i < n; i++)
        digits = p[i] >= '0' && p[i] <= '9';
    char buf[32];
    long long want = -1;
    if (digits) {
        memcpy(buf, p, n);
        buf[n] = '\0';
        errno = 0;
        want = strtoll(buf, NULL, 10);
        if (errno)
            want = -1; /* past INT64_MAX: no event */
    }
    if (ok != digits || (ok && v != want))
        abort();
}

static void check_filter(const char *p, size_t n)
{
    if (memchr(p, '\0', n))
        return; /* a query value never holds NUL: the router refuses %00 */
    kiln_arena *a = kiln_arena_new(1024);
    char *text = kiln_arena_strndup(a, p, n);
    uint64_t mask = 0, want = 0;
    const char *bad = NULL;
    bool ok = kiln_feed_filter(a, text, &mask, &bad);
    bool known = true;
    for (const char *s = text;;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        int found = -1;
        for (int i = 0; i < 3; i++)
            if (strlen(names[i]) == len && !memcmp(names[i], s, len))
                found = i;
        if (found < 0)
            known = false;
        else
            want |= 1ull << found;
        if (!end)
            break;
        s = end + 1;
    }
    if (ok != known || (ok && mask != want) || (!ok && !bad))
        abort();
    kiln_arena_free(a);
}

/* One message of an event stream, read by the WHATWG rules. */
struct sse_msg {
    char id[64];
    char *data;
    size_t data_lines, messages;
};

static void sse_parse(const char *p, size_t n, struct sse_msg *m)
{
    size_t i = 0;
    memset(m, 0, sizeof *m);
    kiln_buf data;
    kiln_buf_init(&data, (size_t)1 << 28);
    while (i < n) {
        size_t start = i;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        size_t len = i - start;
        if (i < n && p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            i += 2;
        else if (i < n)
            i++;
        const char *line = p + start;
        if (len == 0) {
            if (data.len || m->data_lines)
                m->messages++;
            continue;
        }
        if (line[0] == ':')
            continue;
        const char *colon = memchr(line, ':', len);
        size_t flen = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        if (colon && v < line + len && *v == ' ')
            v++;
        size_t vlen = (size_t)(line + len - v);
        if (flen == 4 && !memcmp(line, "data", 4)) {
            if (m->data_lines)
                kiln_buf_append_c(&data, "\n");
            kiln_buf_append(&data, v, vlen);
            m->data_lines++;
        } else if (flen == 2 && !memcmp(line, "id", 2) && vlen < sizeof m->id) {
            memcpy(m->id, v, vlen);
            m->id[vlen] = '\0';
        }
    }
    kiln_buf_append_c(&data, "");
    m->data = strndup(data.p ? data.p : "", data.len);
    kiln_buf_free(&data);
}

static void check_frame(const char *p, size_t n)
{
    kiln_buf out;
    kiln_buf_init(&out, (size_t)1 << 28);
    int64_t id = (int64_t)(n * 7919u) + 1;
    kiln__feed_frame(&out, id, kiln_str_c("notes"), kiln_str_c("created"),
                     (kiln_str){ p, n > 36 ? 36 : n }, (kiln_str){ p, n },
                     kiln_str_c("00000000-0000-4000-8000-000000000000"),
                     "2026-12-07T00:00:00.000000Z");
    struct sse_msg m;
    sse_parse(out.p, out.len, &m);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)id);
    if (m.messages != 1 || m.data_lines != 1 || strcmp(m.id, want))
        abort();
    json_error_t e;
    /* The outbox never holds NUL (neither store takes it). */
    json_t *in = memchr(p, '\0', n) ? NULL : json_loadb(p, n, JSON_DECODE_ANY, &e);
    if (in) {
        json_t *msg = json_loads(m.data, JSON_DECODE_ANY, &e);
        if (!msg || !json_equal(json_object_get(msg, "data"), in))
            abort();
        json_decref(msg);
        json_decref(in);
    }
    free(m.data);
    kiln_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kiln__feed_set_resources(names, 3);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0:
        check_id(p, n);
        break;
    case 1:
        check_filter(p, n);
        break;
    default:
        check_frame(p, n);
        break;
    }
    return 0;
}
