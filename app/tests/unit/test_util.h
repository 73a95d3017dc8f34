/*
 * Shared helpers for the cmocka unit tests: the includes cmocka needs, and
 * asserts that print both sides (the libuv ASSERT_EQ habit) for the types
 * cmocka has no assert for: kiln_str and byte strings that may hold CR, LF or
 * binary. Header only: each test .c is its own program, so everything here is
 * static inline (unused helpers then cost nothing and raise no warning).
 */
#ifndef KILN_TEST_UTIL_H
#define KILN_TEST_UTIL_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/str.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Render up to cap-1 bytes of p[0..n) printable: CR, LF, tab, quote and
 * backslash escaped, other bytes outside 0x20..0x7e as \xNN; "(null)" for
 * NULL. Returns out.
 */
static inline const char *tu_escape(char *out, size_t cap, const char *p, size_t n)
{
    size_t o = 0;
    if (!p) {
        snprintf(out, cap, "(null)");
        return out;
    }
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c < 0x20 || c > 0x7e) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

/* Fail unless got[0..got_len) equals want[0..want_len); prints both sides. */
static inline void tu_assert_mem_eq(const char *got, size_t got_len, const char *want,
                                    size_t want_len, const char *expr, const char *file,
                                    int line)
{
    static char g[4096], w[4096];
    if (got && got_len == want_len && (want_len == 0 || memcmp(got, want, want_len) == 0))
        return;
    if (!got && !want)
        return;
    print_error("%s:%d: %s\n   got (%zu): \"%s\"\n  want (%zu): \"%s\"\n", file, line,
                   expr, got_len, tu_escape(g, sizeof g, got, got_len), want_len,
                   tu_escape(w, sizeof w, want, want_len));
    _fail(file, line);
}

/* A kiln_str equals a C string (NULL want: the str must have p == NULL). */
#define assert_kstr_eq(s, want)                                                   \
    do {                                                                          \
        kiln_str s_ = (s);                                                        \
        const char *w_ = (want);                                                  \
        if (!w_ && s_.p)                                                          \
            tu_assert_mem_eq(s_.p, s_.len, "(null)", 6, #s, __FILE__, __LINE__);  \
        else if (w_)                                                              \
            tu_assert_mem_eq(s_.p, s_.len, w_, strlen(w_), #s, __FILE__, __LINE__); \
    } while (0)

/* The same, naming a table case (ctx) in the failure message. */
#define assert_kstr_eq_in(ctx, s, want)                                           \
    do {                                                                          \
        char x_[512];                                                             \
        kiln_str s_ = (s);                                                        \
        const char *w_ = (want);                                                  \
        snprintf(x_, sizeof x_, "[%s] %s", (ctx), #s);                            \
        if (!w_ && s_.p)                                                          \
            tu_assert_mem_eq(s_.p, s_.len, "(null)", 6, x_, __FILE__, __LINE__);  \
        else if (w_)                                                              \
            tu_assert_mem_eq(s_.p, s_.len, w_, strlen(w_), x_, __FILE__, __LINE__); \
    } while (0)

/* Byte strings with explicit lengths (may contain NUL). */
#define assert_mem_eq(got, got_len, want, want_len) \
    tu_assert_mem_eq((got), (got_len), (want), (want_len), #got, __FILE__, __LINE__)

/* got contains the C string needle; prints the haystack otherwise. */
#define assert_contains(got, got_len, needle)                                      \
    do {                                                                           \
        const char *h_ = (got);                                                    \
        size_t hl_ = (got_len);                                                    \
        const char *n_ = (needle);                                                 \
        if (!h_ || !memmem(h_, hl_, n_, strlen(n_))) {                             \
            static char e_[4096];                                                  \
            print_error("%s:%d: %s does not contain \"%s\":\n  \"%s\"\n",       \
                           __FILE__, __LINE__, #got, n_,                           \
                           tu_escape(e_, sizeof e_, h_, hl_));                     \
            _fail(__FILE__, __LINE__);                                             \
        }                                                                          \
    } while (0)

#define assert_not_contains(got, got_len, needle)                                  \
    do {                                                                           \
        const char *h_ = (got);                                                    \
        size_t hl_ = (got_len);                                                    \
        const char *n_ = (needle);                                                 \
        if (h_ && memmem(h_, hl_, n_, strlen(n_))) {                               \
            static char e_[4096];                                                  \
            print_error("%s:%d: %s must not contain \"%s\":\n  \"%s\"\n",       \
                           __FILE__, __LINE__, #got, n_,                           \
                           tu_escape(e_, sizeof e_, h_, hl_));                     \
            _fail(__FILE__, __LINE__);                                             \
        }                                                                          \
    } while (0)

#endif
