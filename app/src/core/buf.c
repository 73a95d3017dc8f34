/* Bounded growable buffer; see buf.h. */
#include "core/buf.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/str.h"

void kiln_buf_init(kiln_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void kiln_buf_free(kiln_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static int reserve(kiln_buf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return KILN_ETOOBIG;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max)
        cap = b->max;
    b->p = kiln_realloc(b->p, cap);
    b->cap = cap;
    return 0;
}

int kiln_buf_append(kiln_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    int err = reserve(b, n);
    if (err)
        return err;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

int kiln_buf_append_c(kiln_buf *b, const char *s)
{
    return kiln_buf_append(b, s, strlen(s));
}

int kiln_buf_append_u64(kiln_buf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return kiln_buf_append(b, tmp + i, sizeof tmp - i);
}

int kiln_buf_printf(kiln_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KILN_EINVAL;
    if ((size_t)n < sizeof small)
        return kiln_buf_append(b, small, (size_t)n);
    /* Longer: format into a temporary, so that vsnprintf's terminator never
     * counts against the buffer's maximum. */
    if ((size_t)n > b->max - b->len)
        return KILN_ETOOBIG;
    char *tmp = kiln_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int err = kiln_buf_append(b, tmp, (size_t)n);
    free(tmp);
    return err;
}

void kiln_buf_consume(kiln_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

int kiln_buf_append_json_str(kiln_buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t start = b->len;
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    int err = 0;
    for (size_t i = 0; i < n && !err;) {
        unsigned char c = s[i];
        const char *esc = NULL;
        char u[6];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7F) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
            u[4] = hex[c >> 4]; u[5] = hex[c & 15];
        } else if (c >= 0x80) {
            adv = kiln_utf8_len(s + i, n - i);
            if (adv == 0) {
                esc = "\\ufffd";
                adv = 1;
            } else {
                i += adv;
                continue;
            }
        } else {
            i++;
            continue;
        }
        err = kiln_buf_append(b, s + run, i - run);
        if (!err)
            err = esc ? kiln_buf_append_c(b, esc) : kiln_buf_append(b, u, 6);
        i += adv;
        run = i;
    }
    if (!err)
        err = kiln_buf_append(b, s + run, n - run);
    if (err)
        b->len = start;
    return err;
}
