/*
 * Growable byte buffer with a maximum size fixed at init: appending past the
 * maximum fails with KILN_ETOOBIG and leaves the buffer unchanged, so a
 * buffer fed by a client can never grow without bound.
 * Not thread-safe; one owner at a time.
 */
#ifndef KILN_BUF_H
#define KILN_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kiln_buf {
    char *p;    /* NULL until the first append; owned, freed by kiln_buf_free */
    size_t len;
    size_t cap;
    size_t max;
} kiln_buf;

void kiln_buf_init(kiln_buf *b, size_t max);
void kiln_buf_free(kiln_buf *b);          /* back to the empty state */
static inline void kiln_buf_reset(kiln_buf *b) { b->len = 0; }

int kiln_buf_append(kiln_buf *b, const void *data, size_t n);
int kiln_buf_append_c(kiln_buf *b, const char *s);
int kiln_buf_append_u64(kiln_buf *b, uint64_t v);
int kiln_buf_printf(kiln_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes (consumed input). */
void kiln_buf_consume(kiln_buf *b, size_t n);

/*
 * Append s as the inside of a JSON string (no quotes): escapes quotes,
 * backslashes and control bytes, and replaces invalid UTF-8 with U+FFFD, so
 * the output is valid JSON whatever the client sent.
 */
int kiln_buf_append_json_str(kiln_buf *b, const char *s, size_t n);

#endif
