/* Cookie parsing and Set-Cookie building; see cookie.h. */
#include "http/cookie.h"

#include <stdio.h>
#include <string.h>

bool kiln_cookie_find(kiln_str header, const char *name, kiln_str *out)
{
    size_t nlen = strlen(name);
    const char *p = header.p, *end = header.p + header.len;
    if (!p)
        return false;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        kiln_str pair = kiln_str_trim((kiln_str){ p, (size_t)(pe - p) });
        const char *eq = pair.len ? memchr(pair.p, '=', pair.len) : NULL;
        if (eq) {
            kiln_str key = kiln_str_trim((kiln_str){ pair.p, (size_t)(eq - pair.p) });
            kiln_str val = kiln_str_trim(
                (kiln_str){ eq + 1, (size_t)(pair.p + pair.len - eq - 1) });
            if (key.len == nlen && memcmp(key.p, name, nlen) == 0) {
                if (val.len >= 2 && val.p[0] == '"' && val.p[val.len - 1] == '"') {
                    val.p++;
                    val.len -= 2;
                }
                *out = val;
                return true;
            }
        }
        p = semi ? semi + 1 : end;
    }
    return false;
}

bool kiln_cookie_get(const struct kiln_req *req, const char *name, kiln_str *out)
{
    /* Several Cookie fields are allowed over HTTP/1.1 by some clients. */
    for (size_t i = 0; i < req->nheaders; i++)
        if (kiln_str_eq_c(req->headers[i].name, "cookie") &&
            kiln_cookie_find(req->headers[i].value, name, out))
            return true;
    return false;
}

const char *kiln_cookie_build(kiln_arena *a, const char *name, kiln_str value,
                              const struct kiln_cookie_attrs *attrs)
{
    char max_age[48] = "";
    if (attrs->max_age >= 0)
        snprintf(max_age, sizeof max_age, "; Max-Age=%ld", attrs->max_age);
    return kiln_arena_sprintf(a, "%s=%.*s; Path=%s%s%s%s%s%s", name, (int)value.len,
                              value.p ? value.p : "", attrs->path ? attrs->path : "/", max_age,
                              attrs->http_only ? "; HttpOnly" : "",
                              attrs->secure ? "; Secure" : "",
                              attrs->same_site ? "; SameSite=" : "",
                              attrs->same_site ? attrs->same_site : "");
}
