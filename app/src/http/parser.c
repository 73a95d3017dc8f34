/*
 * llhttp glue. llhttp checks the grammar (request line, tokens, chunk
 * framing, Content-Length vs Transfer-Encoding); this file adds the rules it
 * leaves to the server: Host (RFC 9112 3.2), Expect (RFC 9110 10.1.1), the
 * version we speak, size limits, and where each piece of the request lives.
 * Spans from llhttp point into the caller's read buffer, which is reused, so
 * every span is copied into the request's arena as it arrives.
 *
 * The one decision to know: llhttp is not trusted with line endings. The
 * build compiles its loose variant (LLHTTP_STRICT_MODE is 0), which ends a
 * header section at "\r\n\r" plus any byte, and neither variant refuses
 * every bare CR, LF-only line or doubled space. So every byte that is not
 * body data is read a second time by the framing scan below, and a request
 * is handed on only when both readings agree.
 */
#include "http/parser.h"

#include <string.h>

#include "core/random.h"

static int fail(struct kiln_parser *p, int status, const char *code, const char *message)
{
    if (!p->error_status) {
        p->error_status = status;
        p->error_code = code;
        p->error_message = message;
    }
    p->state = KILN_PARSER_ERROR;
    return -1;
}

static int too_large_headers(struct kiln_parser *p)
{
    return fail(p, 431, "request_header_fields_too_large",
                "Request header fields too large");
}

/* Append a span to the value being assembled, counting header bytes. */
static int acc_append(struct kiln_parser *p, const char *at, size_t len)
{
    p->header_bytes += len;
    if (p->header_bytes > p->limits.max_header_bytes)
        return too_large_headers(p);
    if (len == 0)
        return 0;
    if (p->acc_len + len > p->acc_cap) {
        size_t cap = p->acc_cap ? p->acc_cap * 2 : len + 32;
        if (cap < p->acc_len + len)
            cap = p->acc_len + len;
        char *n = kiln_arena_alloc(p->req->arena, cap);
        if (p->acc_len)
            memcpy(n, p->acc, p->acc_len);
        p->acc = n;
        p->acc_cap = cap;
    }
    memcpy(p->acc + p->acc_len, at, len);
    p->acc_len += len;
    return 0;
}

static kiln_str acc_take(struct kiln_parser *p)
{
    kiln_str s = { p->acc ? p->acc : "", p->acc_len };
    p->acc = NULL;
    p->acc_len = p->acc_cap = 0;
    return s;
}

static struct kiln_parser *P(llhttp_t *ll) { return ll->data; }

static int on_message_begin(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    p->state = KILN_PARSER_HEADERS;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    return acc_append(P(ll), at, len);
}

static int on_url_complete(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    p->req->target = acc_take(p);
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    return acc_append(P(ll), at, len);
}

static bool is_tchar(unsigned char c)
{
    /* RFC 9110 5.6.2 token characters. */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    kiln_str f = acc_take(p);
    if (f.len == 0)
        return fail(p, 400, "invalid_request", "Malformed request: empty header name");
    for (size_t i = 0; i < f.len; i++)
        if (!is_tchar((unsigned char)f.p[i]))
            return fail(p, 400, "invalid_request", "Malformed request: invalid header name");
    char *lower = (char *)f.p; /* arena memory we own */
    for (size_t i = 0; i < f.len; i++)
        if (lower[i] >= 'A' && lower[i] <= 'Z')
            lower[i] = (char)(lower[i] + 32);
    p->field = f;
    /* ": " and CRLF count toward the header section size too. */
    p->header_bytes += 4;
    if (p->req->nheaders >= p->limits.max_fields)
        return too_large_headers(p);
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    return acc_append(P(ll), at, len);
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    struct kiln_req *req = p->req;
    kiln_str v = kiln_str_trim(acc_take(p));
    /* RFC 9110 5.5: no control characters in a field value except HTAB.
     * llhttp 8.1 refuses them itself unless lenient headers are set (they
     * are not); checked here too so that no llhttp setting or version can
     * let one through to a handler or a log line. Trailers as well. */
    for (size_t i = 0; i < v.len; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7F)
            return fail(p, 400, "invalid_request", "Malformed request: invalid header value");
    }
    /* Trailer fields after a chunked body: RFC 9110 6.5.1 forbids merging
     * them into the header section, and nothing here reads them. */
    if (p->state == KILN_PARSER_BODY) {
        p->field = KILN_STR_NULL;
        return 0;
    }
    if (req->nheaders == req->headers_cap) {
        size_t cap = req->headers_cap ? req->headers_cap * 2 : 16;
        struct kiln_header *h = kiln_arena_alloc(req->arena, cap * sizeof *h);
        if (req->nheaders)
            memcpy(h, req->headers, req->nheaders * sizeof *h);
        req->headers = h;
        req->headers_cap = cap;
    }
    req->headers[req->nheaders].name = p->field;
    req->headers[req->nheaders].value = v;
    req->nheaders++;
    if (kiln_str_eq_c(p->field, "host"))
        p->host_count++;
    p->field = KILN_STR_NULL;
    return 0;
}

/* Split the request target (RFC 9112 3.2) into path and query. */
static int split_target(struct kiln_parser *p)
{
    struct kiln_req *req = p->req;
    kiln_str t = req->target;
    const char *s = t.p, *end = t.p + t.len;
    if (t.len >= 7 && (strncasecmp(s, "http://", 7) == 0 ||
                       (t.len >= 8 && strncasecmp(s, "https://", 8) == 0))) {
        /* absolute-form: the authority is the Host; routing uses the path. */
        s = memchr(s, ':', t.len) + 3;
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *q = memchr(s, '?', (size_t)(end - s));
        if (!slash || (q && q < slash)) {
            req->path = KILN_STR("/");
            s = q ? q : end;
        } else {
            s = slash;
        }
    } else if (t.len == 1 && s[0] == '*') {
        req->path = t; /* asterisk-form; only meaningful for OPTIONS */
        req->query = KILN_STR("");
        return 0;
    } else if (t.len == 0 || s[0] != '/') {
        return fail(p, 400, "invalid_request", "Malformed request: invalid request target");
    }
    const char *q = memchr(s, '?', (size_t)(end - s));
    if (s != end && s[0] == '/')
        req->path = (kiln_str){ s, (size_t)((q ? q : end) - s) };
    req->query = q ? (kiln_str){ q + 1, (size_t)(end - q - 1) } : KILN_STR("");
    if (memchr(t.p, '#', t.len))
        return fail(p, 400, "invalid_request", "Malformed request: fragment in request target");
    return 0;
}

/*
 * End of the header section: llhttp pauses here (on_headers_complete) so
 * that feed scans the section's bytes first; only a section that passed the
 * scan gets here, before llhttp reads on into the body. A malformed request
 * line is thus always 400, never 505 or 417 for what llhttp made of it.
 */
static int head_complete(struct kiln_parser *p)
{
    llhttp_t *ll = &p->ll;
    struct kiln_req *req = p->req;

    req->http_major = ll->http_major;
    req->http_minor = ll->http_minor;
    req->method_name = kiln_str_c(llhttp_method_name((llhttp_method_t)ll->method));
    req->method = kiln_method_parse(req->method_name);
    req->keep_alive = llhttp_should_keep_alive(ll);

    kiln_str id = kiln_req_header(req, "x-request-id");
    if (kiln_request_id_valid(id)) {
        memcpy(req->request_id, id.p, id.len);
        req->request_id[id.len] = '\0';
        req->request_id_len = id.len;
    }
    req->trace_id = kiln_req_header(req, "x-amzn-trace-id");
    if (!req->trace_id.p)
        req->trace_id = kiln_req_header(req, "traceparent");

    if (ll->http_major != 1 || ll->http_minor > 1)
        return fail(p, 505, "http_version_not_supported", "HTTP version not supported");
    if (ll->method == HTTP_CONNECT)
        return fail(p, 400, "invalid_request", "Malformed request: CONNECT is not supported");
    if (p->host_count > 1 || (p->host_count == 0 && ll->http_minor == 1))
        return fail(p, 400, "invalid_request", "Malformed request: exactly one Host header is required");
    if (split_target(p) != 0)
        return -1;

    bool chunked = (ll->flags & F_CHUNKED) != 0;
    bool has_length = (ll->flags & F_CONTENT_LENGTH) != 0;
    if (ll->flags & F_TRANSFER_ENCODING) {
        /* RFC 9112 6.1: we decode no coding but chunked, so the only
         * acceptable field is one "chunked" (and never in HTTP/1.0). */
        size_t te = 0;
        bool only_chunked = true;
        for (size_t i = 0; i < req->nheaders; i++) {
            if (kiln_str_eq_c(req->headers[i].name, "transfer-encoding")) {
                te++;
                only_chunked = only_chunked &&
                               kiln_str_caseeq(req->headers[i].value, KILN_STR("chunked"));
            }
        }
        if (!chunked || te != 1 || !only_chunked || ll->http_minor == 0)
            return fail(p, 400, "invalid_request",
                        "Malformed request: unsupported transfer coding");
    }
    if (has_length && ll->content_length > p->limits.max_body)
        return fail(p, 413, "payload_too_large", "Request body too large");
    req->has_body = chunked || (has_length && ll->content_length > 0);

    kiln_str expect = kiln_req_header(req, "expect");
    if (expect.p) {
        if (!kiln_str_caseeq(expect, KILN_STR("100-continue")))
            return fail(p, 417, "expectation_failed", "Expectation not supported");
        /* RFC 9110 10.1.1: only HTTP/1.1 clients wait for 100. */
        req->expect_continue = ll->http_minor == 1 && req->has_body;
    }

    if (has_length && ll->content_length > 0) {
        p->body_cap = (size_t)ll->content_length;
        p->body = kiln_arena_alloc(req->arena, p->body_cap);
    }
    /* Upgrade (e.g. websocket) is not spoken: answer, then close. */
    if (ll->upgrade)
        req->keep_alive = false;
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    p->state = KILN_PARSER_BODY;
    p->headers_paused = true;
    return HPE_PAUSED;
}

/*
 * The framing scan. Where two parsers split one byte stream differently,
 * the bytes one takes for a line end or a body the other takes for a
 * request: smuggling. llhttp's loose build reads "\r\n\rX" as the end of a
 * header section, a CR and any byte as the end of a chunk-size line, the two
 * bytes after chunk data unread; and no build of it refuses "GET  / HTTP/1.1"
 * or "GET / RTSP/1.0". So every byte of a request that is not body data is
 * read here too, after llhttp and before the request is handed on, and must
 * fit RFC 9112's lines:
 *   - a CR is followed by LF, and an LF preceded by CR (2.2: a recipient
 *     MUST treat a bare CR as invalid or replace it with SP; it MAY take a
 *     bare LF as a line end, and kiln does not, because the ALB or any proxy
 *     in front need not read it the same way, and HTTP clients send CRLF);
 *   - request-line = method SP request-target SP HTTP-version with one SP
 *     each and nothing but visible ASCII (3; a parser that splits on HTAB,
 *     VT, FF, CR (3 allows it) or on 0x85/0xA0 after decoding would find
 *     other parts), the version "HTTP/" DIGIT "." DIGIT (2.3);
 *   - no field line, header or trailer, starts with SP or HTAB (obs-fold,
 *     5.2; whitespace before the first field, 2.2);
 *   - chunk data is followed by CRLF (7.1);
 *   - a chunk-size line is at most KILN_MAX_CHUNK_LINE_BYTES, and its
 *     extensions count toward the header section's limit (7.1.1 sets no
 *     bound; llhttp reads any length, so without one a client could stream
 *     extension bytes for ever without sending a byte of body).
 * The scan keeps its place across feeds (a CR that ends one read and the LF
 * that starts the next are one line end), and it must agree with llhttp on
 * where the header section, each chunk's data and the message end; where it
 * does not, the request is refused, not trusted.
 */
enum line {
    LINE_LEAD,       /* before the request line: empty lines only */
    LINE_REQUEST,    /* the request line */
    LINE_FIELD,      /* a header field line, or the empty line ending them */
    LINE_BODY,       /* after the header section, not chunked: body data only */
    LINE_CHUNK_SIZE, /* chunk-size [ chunk-ext ] */
    LINE_CHUNK_DATA, /* chunk data (never scanned), then its CRLF */
    LINE_TRAILER,    /* a trailer field line, or the empty line ending them */
    LINE_END,        /* the message is complete */
};

static int bad_framing(struct kiln_parser *p, const char *message)
{
    return fail(p, 400, "invalid_request", message);
}

/* Byte i of the version part of the request line: "HTTP/" DIGIT "." DIGIT. */
static bool version_byte_ok(size_t i, unsigned char c)
{
    static const char pattern[] = "HTTP/#.#"; /* #: any digit */
    if (i >= sizeof pattern - 1)
        return false;
    return pattern[i] == '#' ? c >= '0' && c <= '9' : c == (unsigned char)pattern[i];
}

static int request_line_byte(struct kiln_parser *p, unsigned char c)
{
    if (c == ' ') {
        /* One SP between two parts: none first, none doubled, two in all. */
        if (p->line_len == p->part_start || ++p->spaces > 2)
            return bad_framing(p, "Malformed request: invalid request line");
        p->part_start = p->line_len + 1;
    } else if (c < 0x21 || c > 0x7E) {
        return bad_framing(p, "Malformed request: invalid request line");
    } else if (p->spaces == 2 && !version_byte_ok(p->line_len - p->part_start, c)) {
        return bad_framing(p, "Malformed request: invalid HTTP version");
    }
    p->line_len++;
    return 0;
}

/* A byte of a line other than CR and LF. */
static int line_byte(struct kiln_parser *p, unsigned char c)
{
    switch ((enum line)p->line) {
    case LINE_LEAD:
        p->line = LINE_REQUEST;
        return request_line_byte(p, c);
    case LINE_REQUEST:
        return request_line_byte(p, c);
    case LINE_FIELD:
    case LINE_TRAILER:
        if (p->line_len == 0 && (c == ' ' || c == '\t'))
            return bad_framing(p, "Malformed request: obsolete line folding");
        p->line_len++;
        return 0;
    case LINE_CHUNK_SIZE:
        if (++p->line_len > KILN_MAX_CHUNK_LINE_BYTES)
            return bad_framing(p, "Malformed request: chunk-size line too long");
        if (c == ';')
            p->chunk_ext = true;
        if (p->chunk_ext) {
            if (++p->header_bytes > p->limits.max_header_bytes)
                return bad_framing(p, "Malformed request: chunk extensions too long");
        } else if (c != '0') {
            p->chunk_nonzero = true; /* llhttp has checked it is a hex digit */
        }
        return 0;
    case LINE_CHUNK_DATA:
        /* The first byte after a chunk's data, and not CR. */
        return bad_framing(p, "Malformed request: invalid chunk framing");
    case LINE_BODY:
    case LINE_END:
        break;
    }
    return bad_framing(p, "Malformed request: invalid message framing");
}

/* A CRLF: the line before it is complete. */
static int line_end(struct kiln_parser *p)
{
    size_t len = p->line_len;
    p->line_len = 0;
    switch ((enum line)p->line) {
    case LINE_LEAD:
        /* RFC 9112 2.2: empty lines before the request line are ignored;
         * they count toward the header limit so that they end. */
        p->header_bytes += 2;
        if (p->header_bytes > p->limits.max_header_bytes)
            return bad_framing(p, "Malformed request: too many empty lines");
        return 0;
    case LINE_REQUEST:
        if (p->spaces != 2 || len - p->part_start != sizeof "HTTP/1.1" - 1)
            return bad_framing(p, "Malformed request: invalid request line");
        p->line = LINE_FIELD;
        return 0;
    case LINE_FIELD:
        /* The empty line: llhttp has called on_headers_complete already (the
         * scan always follows it), so its framing decision is known. */
        if (len == 0)
            p->line = (p->ll.flags & F_CHUNKED) ? LINE_CHUNK_SIZE : LINE_BODY;
        return 0;
    case LINE_CHUNK_SIZE:
        p->line = p->chunk_nonzero ? LINE_CHUNK_DATA : LINE_TRAILER;
        p->chunk_nonzero = p->chunk_ext = false;
        return 0;
    case LINE_CHUNK_DATA:
        p->line = LINE_CHUNK_SIZE;
        return 0;
    case LINE_TRAILER:
        if (len == 0)
            p->line = LINE_END;
        return 0;
    case LINE_BODY:
    case LINE_END:
        break;
    }
    return bad_framing(p, "Malformed request: invalid message framing");
}

/* Scan [from, to): bytes llhttp has read that are not body data. */
static int scan(struct kiln_parser *p, const char *from, const char *to)
{
    for (const char *s = from; s < to; s++) {
        unsigned char c = (unsigned char)*s;
        if (p->cr) {
            p->cr = false;
            if (c != '\n')
                return bad_framing(p, "Malformed request: CR without LF");
            if (line_end(p) != 0)
                return -1;
        } else if (c == '\r') {
            p->cr = true;
        } else if (c == '\n') {
            return bad_framing(p, "Malformed request: LF without CR");
        } else if (line_byte(p, c) != 0) {
            return -1;
        }
    }
    p->scan_from = to;
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct kiln_parser *p = P(ll);
    struct kiln_req *req = p->req;
    /* What came before this data (a chunk-size line, the CRLF after the
     * previous chunk) is framing: scanned now, and it must end where llhttp
     * says the data starts. */
    if (scan(p, p->scan_from, at) != 0)
        return -1;
    if (p->cr || (p->line != LINE_BODY && p->line != LINE_CHUNK_DATA))
        return bad_framing(p, "Malformed request: invalid message framing");
    p->scan_from = at + len;
    size_t have = req->body.len;
    if (len > p->limits.max_body - have)
        return fail(p, 413, "payload_too_large", "Request body too large");
    if (have + len > p->body_cap) {
        /* Chunked: grow geometrically; the cap above bounds the waste. */
        size_t cap = p->body_cap ? p->body_cap * 2 : 1024;
        if (cap < have + len)
            cap = have + len;
        if (cap > p->limits.max_body)
            cap = p->limits.max_body;
        char *n = kiln_arena_alloc(req->arena, cap);
        if (have)
            memcpy(n, p->body, have);
        p->body = n;
        p->body_cap = cap;
    }
    memcpy(p->body + have, at, len);
    req->body = (kiln_str){ p->body, have + len };
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct kiln_parser *p = P(ll);
    p->state = KILN_PARSER_DONE;
    if (!p->req->body.p)
        p->req->body = KILN_STR("");
    /* Stop here: the bytes after this request wait for its response. */
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void kiln_parser_init(struct kiln_parser *p, const struct kiln_parser_limits *limits)
{
    memset(p, 0, sizeof *p);
    llhttp_init(&p->ll, HTTP_REQUEST, &settings);
    p->ll.data = p;
    p->limits = *limits;
}

void kiln_parser_begin(struct kiln_parser *p, struct kiln_req *req)
{
    if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
        llhttp_resume(&p->ll);
    p->req = req;
    p->state = KILN_PARSER_IDLE;
    p->header_bytes = 0;
    p->host_count = 0;
    p->acc = NULL;
    p->acc_len = p->acc_cap = 0;
    p->field = KILN_STR_NULL;
    p->headers_paused = false;
    p->body = NULL;
    p->body_cap = 0;
    p->scan_from = NULL;
    p->line = LINE_LEAD;
    p->cr = p->chunk_ext = p->chunk_nonzero = false;
    p->spaces = 0;
    p->line_len = p->part_start = 0;
    req->path = KILN_STR("/");
    req->query = KILN_STR("");
}

static const char *error_message(llhttp_errno_t e)
{
    /* Our own words: llhttp's reasons name its internals. */
    switch (e) {
    case HPE_INVALID_VERSION: return "Malformed request: invalid HTTP version";
    case HPE_INVALID_METHOD: return "Malformed request: invalid method";
    case HPE_UNEXPECTED_CONTENT_LENGTH:
    case HPE_INVALID_CONTENT_LENGTH: return "Malformed request: invalid Content-Length";
    case HPE_INVALID_TRANSFER_ENCODING: return "Malformed request: invalid Transfer-Encoding";
    case HPE_INVALID_CHUNK_SIZE: return "Malformed request: invalid chunk size";
    case HPE_INVALID_HEADER_TOKEN: return "Malformed request: invalid header";
    case HPE_INVALID_URL: return "Malformed request: invalid request target";
    default: return "Malformed request";
    }
}

enum kiln_parse_result kiln_parser_feed(struct kiln_parser *p, const char *data,
                                        size_t len, size_t *consumed)
{
    const char *cur = data, *end = data + len;
    *consumed = 0;
    if (p->state == KILN_PARSER_ERROR)
        return KILN_PARSE_ERROR;
    for (;;) {
        p->scan_from = cur;
        llhttp_errno_t e = llhttp_execute(&p->ll, cur, (size_t)(end - cur));
        const char *pos = e == HPE_OK ? end : llhttp_get_error_pos(&p->ll);
        if (!pos || pos < cur || pos > end)
            pos = end;
        *consumed = (size_t)(pos - data);
        if (e != HPE_OK && e != HPE_PAUSED)
            break;
        /* Whatever llhttp has read, the scan reads too, before a request
         * or any part of it (a 100 Continue) goes further. */
        if (scan(p, p->scan_from, pos) != 0)
            break;
        if (e == HPE_OK)
            return KILN_PARSE_MORE;
        if (p->headers_paused) {
            p->headers_paused = false;
            /* llhttp and the scan must agree where the section ends. */
            if (p->cr || p->line_len != 0 ||
                (p->line != LINE_BODY && p->line != LINE_CHUNK_SIZE)) {
                bad_framing(p, "Malformed request: invalid message framing");
                break;
            }
            if (head_complete(p) != 0)
                break;
            llhttp_resume(&p->ll);
            cur = pos;
            continue;
        }
        if (p->state == KILN_PARSER_DONE) {
            /* ... and where the message ends. */
            if (p->cr || (p->line != LINE_BODY && p->line != LINE_END)) {
                bad_framing(p, "Malformed request: invalid message framing");
                break;
            }
            return KILN_PARSE_DONE;
        }
        break;
    }
    if (!p->error_status)
        fail(p, 400, "invalid_request", error_message(llhttp_get_errno(&p->ll)));
    p->state = KILN_PARSER_ERROR;
    return KILN_PARSE_ERROR;
}
