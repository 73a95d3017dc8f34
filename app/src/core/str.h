/*
 * Strings that carry their length. Request data is not NUL-terminated where
 * it sits (parser buffers, arena slices), so everything that reads client
 * input takes a kiln_str.
 */
#ifndef KILN_STR_H
#define KILN_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct kiln_str {
    const char *p;
    size_t len;
} kiln_str;

#define KILN_STR(lit) ((kiln_str){ (lit), sizeof(lit) - 1 })
#define KILN_STR_NULL ((kiln_str){ NULL, 0 })

static inline kiln_str kiln_str_c(const char *s)
{
    return (kiln_str){ s, s ? strlen(s) : 0 };
}

static inline bool kiln_str_eq(kiln_str a, kiln_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool kiln_str_eq_c(kiln_str a, const char *b)
{
    return kiln_str_eq(a, kiln_str_c(b));
}

/* ASCII case-insensitive comparison (header names, tokens). */
bool kiln_str_caseeq(kiln_str a, kiln_str b);

/* Trim spaces and horizontal tabs (RFC 9110 OWS) from both ends. */
kiln_str kiln_str_trim(kiln_str s);

/*
 * Parse a decimal unsigned integer that must fill the whole string, with no
 * sign, no spaces and no overflow past max. Returns true on success.
 */
bool kiln_str_to_u64(kiln_str s, uint64_t max, uint64_t *out);

/* Lower-case hex of n bytes; out needs 2n + 1 bytes (NUL-terminated). */
void kiln_hex_encode(const void *data, size_t n, char *out);

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0 if there is none.
 */
size_t kiln_utf8_len(const unsigned char *s, size_t n);
/* The whole string is well-formed UTF-8. */
bool kiln_utf8_valid(kiln_str s);

#endif
