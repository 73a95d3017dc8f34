/*
 * Cookie header parsing (RFC 6265 section 5.4 as browsers send it) and
 * Set-Cookie building. The Cookie header is client input: parsing is bounded
 * and never fails hard; a malformed pair is skipped.
 */
#ifndef KILN_HTTP_COOKIE_H
#define KILN_HTTP_COOKIE_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/str.h"
#include "http/request.h"

/*
 * The value of the first cookie called name in req's Cookie header(s), with
 * surrounding double quotes removed; false when absent.
 */
bool kiln_cookie_get(const struct kiln_req *req, const char *name, kiln_str *out);
/* The same over one header value (for tests and the fuzzer). */
bool kiln_cookie_find(kiln_str header, const char *name, kiln_str *out);

struct kiln_cookie_attrs {
    const char *path;        /* "/" when NULL */
    long max_age;            /* seconds; < 0: session cookie; 0: expire now */
    bool http_only;
    bool secure;
    const char *same_site;   /* "Lax", "Strict", "None" or NULL */
};

/* "name=value; Path=/; Max-Age=…; HttpOnly; Secure; SameSite=Lax", in the
 * arena. value must already be cookie-safe (we only write base64url). */
const char *kiln_cookie_build(kiln_arena *a, const char *name, kiln_str value,
                              const struct kiln_cookie_attrs *attrs);

#endif
