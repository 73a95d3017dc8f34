/*
 * libFuzzer target for the request path without a socket: bytes → parser
 * (split into two feeds at a point chosen by the input, since real reads
 * split anywhere) → router → response serialization, for every pipelined
 * request in the input, as the server does. Every request the parser
 * accepts must also pass head_is_strict, an independent reading of RFC 9112's
 * lines (no bare CR or LF, one SP between the request line's parts), so the
 * fuzzer looks for inputs that llhttp and the glue's framing scan let through
 * together.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(struct kiln_req *req, struct kiln_res *res)
{
    kiln_res_json_text(res, 200, KILN_STR("{}"));
    (void)req;
}

static const struct kiln_route routes[] = {
    { KILN_GET, KILN_SCOPE_ROOT, "/", NULL, handler, 0, NULL },
    { KILN_GET, KILN_SCOPE_ROOT, "/livez", NULL, handler, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/notes", NULL, handler, 0, NULL },
    { KILN_POST, KILN_SCOPE_API, "/notes", NULL, handler, 0, NULL },
    { KILN_GET, KILN_SCOPE_API, "/notes/:id", NULL, handler, 0, NULL },
    { KILN_DELETE, KILN_SCOPE_API, "/notes/:id", NULL, handler, 0, NULL },
};

/*
 * The head of an accepted request, read again as simply as possible: empty
 * lines, a request line of three parts split by single SPs in visible ASCII
 * and ending in an HTTP version, then CRLF-terminated lines up to an empty
 * one, with every CR followed by LF and every LF preceded by CR.
 */
static bool head_is_strict(const char *r, size_t n)
{
    size_t i = 0;
    while (i + 1 < n && r[i] == '\r' && r[i + 1] == '\n')
        i += 2;
    size_t start = i, version = 0;
    unsigned spaces = 0;
    for (; i < n && r[i] != '\r'; i++) {
        unsigned char c = (unsigned char)r[i];
        if (c == ' ') {
            if (i == start || r[i - 1] == ' ' || ++spaces > 2)
                return false;
            version = i + 1;
        } else if (c < 0x21 || c > 0x7e) {
            return false;
        }
    }
    if (spaces != 2 || i - version != 8 || memcmp(r + version, "HTTP/", 5) != 0)
        return false;
    for (; i < n; i++) {
        if (r[i] == '\n' && r[i - 1] != '\r')
            return false;
        if (r[i] == '\r' && (i + 1 >= n || r[i + 1] != '\n'))
            return false;
        if (i >= 3 && memcmp(r + i - 3, "\r\n\r\n", 4) == 0)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct kiln_router *router;
    if (!router)
        router = kiln_router_new(routes, sizeof routes / sizeof routes[0], true);
    if (size < 1)
        return 0;
    size_t split = data[0] % (size + 1);
    const char *p = (const char *)data + 1;
    size_t len = size - 1;
    if (split > len)
        split = len;

    struct kiln_parser_limits limits = { 4096, KILN_MAX_HEADER_BYTES, KILN_MAX_HEADER_FIELDS };
    struct kiln_parser parser;
    kiln_parser_init(&parser, &limits);
    kiln_arena *arena = kiln_arena_new(1024);
    kiln_buf out;
    kiln_buf_init(&out, 1 << 20);

    /* Two feeds: [0, split) then the rest, each possibly holding several
     * requests. */
    const char *chunks[2] = { p, p + split };
    size_t lens[2] = { split, len - split };
    struct kiln_req *req = NULL;
    size_t req_start = 0; /* offset in p of the current request */
    for (int ci = 0; ci < 2; ci++) {
        const char *d = chunks[ci];
        size_t n = lens[ci];
        while (n) {
            if (!req) {
                kiln_arena_reset(arena);
                req = kiln_arena_alloc_z(arena, sizeof *req);
                req->arena = arena;
                req->request_id_len = 4;
                memcpy(req->request_id, "fuzz", 4);
                kiln_parser_begin(&parser, req);
            }
            size_t used = 0;
            enum kiln_parse_result r = kiln_parser_feed(&parser, d, n, &used);
            if (used > n)
                abort(); /* the parser must never claim more than it got */
            d += used;
            n -= used;
            struct kiln_res res;
            memset(&res, 0, sizeof res);
            if (r == KILN_PARSE_MORE)
                break;
            if (r == KILN_PARSE_ERROR) {
                if (parser.error_status < 400 || parser.error_status > 599 || !parser.error_code)
                    abort();
                kiln_res_error(req, &res, parser.error_status, parser.error_code,
                               parser.error_message, NULL);
                kiln_res_serialize(req, &res, false, "Thu, 01 Jan 1970 00:00:00 GMT", &out);
                goto done;
            }
            size_t req_end = (size_t)(d - p);
            if (!head_is_strict(p + req_start, req_end - req_start))
                abort(); /* accepted a head that RFC 9112's lines refuse */
            req_start = req_end;
            unsigned allow = 0;
            kiln_str q;
            kiln_req_query(req, "search", &q);
            kiln_req_header(req, "user-agent");
            if (kiln_router_match(router, req, &allow) == KILN_MATCH_OK)
                req->route->handler(req, &res);
            else
                kiln_res_error(req, &res, 404, "not_found", "Not found", NULL);
            kiln_res_serialize(req, &res, req->keep_alive, "Thu, 01 Jan 1970 00:00:00 GMT", &out);
            kiln_buf_reset(&out);
            req = NULL;
        }
    }
done:
    kiln_buf_free(&out);
    kiln_arena_free(arena);
    return 0;
}
