/*
 * libFuzzer target for the small parsers of client strings: the Cookie
 * header, query strings and form bodies (percent-decoding, the router's
 * query check), and the session token check. The first byte picks which name to look up.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/session.h"
#include "core/arena.h"
#include "core/config.h"
#include "http/cookie.h"
#include "http/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = { "_backend_session", "_kiln_login", "a", "search",
                                         "detailed", "" };
    static int ready;
    if (!ready) {
        static struct kiln_config cfg;
        static char secret[] = "fuzz-secret-key-base-fuzz-secret-key-base-fuzz-secret-key-base!";
        cfg.secret_key_base = secret;
        cfg.secret_key_base_len = sizeof secret - 1;
        kiln_auth_init(&cfg);
        ready = 1;
    }
    if (size < 1)
        return 0;
    const char *name = names[data[0] % (sizeof names / sizeof names[0])];
    kiln_str in = { (const char *)data + 1, size - 1 };
    kiln_arena *a = kiln_arena_new(1024);
    kiln_str out;
    if (kiln_cookie_find(in, name, &out)) {
        if (out.p < in.p || out.p + out.len > in.p + in.len)
            abort(); /* a value must lie inside the header */
        char sid[KILN_SID_LEN + 1];
        kiln_session_token_verify(out, sid);
        kiln_str payload;
        kiln_login_cookie_open(a, out, &payload);
    }
    if (kiln_form_value(a, in, name, &out) && memchr(out.p, '\0', out.len))
        abort(); /* decoding never yields NUL */
    /* A query the router lets through decodes, value by value. */
    if (kiln_query_valid(in) && !kiln_url_decode(a, in, true, &out))
        abort();
    kiln_url_decode(a, in, true, &out);
    kiln_arena_free(a);
    return 0;
}
