/*
 * The request parser: llhttp glue that turns bytes into a struct kiln_req and
 * enforces every limit and framing rule of RFC 9112 that stands between a
 * client and request smuggling. It owns no socket and no timer, so unit tests
 * and the fuzzer drive it exactly as the server does.
 *
 * Use: kiln_parser_init once per connection; kiln_parser_begin with a fresh
 * request before feeding the bytes of each request; kiln_parser_feed until it
 * says DONE (the request is complete; *consumed tells where the next one
 * starts) or ERROR (answer error_status and close: after an error the byte
 * stream can no longer be trusted to be in sync). Every byte outside body
 * data must fit RFC 9112's lines exactly (no bare CR or LF, one SP between
 * the parts of the request line): see "The framing scan" in parser.c.
 * Single-threaded: the thread that owns the connection.
 */
#ifndef KILN_HTTP_PARSER_H
#define KILN_HTTP_PARSER_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"

#define KILN_MAX_HEADER_BYTES (16 * 1024)
#define KILN_MAX_HEADER_FIELDS 100
/*
 * One chunk-size line, size and extensions, CRLF excluded (RFC 9112 7.1.1
 * sets no bound). Extensions also count toward max_header_bytes, so all of
 * a request's extensions together weigh no more than a header section.
 */
#define KILN_MAX_CHUNK_LINE_BYTES 256

struct kiln_parser_limits {
    size_t max_body;         /* MAX_REQUEST_BODY_BYTES */
    size_t max_header_bytes; /* request line + header section */
    size_t max_fields;
};

enum kiln_parse_state {
    KILN_PARSER_IDLE,     /* no byte of the current request yet */
    KILN_PARSER_HEADERS,  /* request line or headers in progress */
    KILN_PARSER_BODY,     /* headers complete, body in progress */
    KILN_PARSER_DONE,     /* request complete */
    KILN_PARSER_ERROR,
};

enum kiln_parse_result {
    KILN_PARSE_MORE,      /* all input consumed; request incomplete */
    KILN_PARSE_DONE,      /* request complete */
    KILN_PARSE_ERROR,     /* see error_status / error_code / error_message */
};

struct kiln_parser {
    llhttp_t ll;
    struct kiln_req *req;
    struct kiln_parser_limits limits;
    enum kiln_parse_state state;
    size_t header_bytes;     /* header section, trailers and chunk extensions */
    unsigned host_count;
    char *acc;               /* span being assembled (url, field or value) */
    size_t acc_len, acc_cap;
    kiln_str field;          /* completed field name awaiting its value */
    bool headers_paused;     /* paused at the end of the headers */
    char *body;
    size_t body_cap;

    /* The framing scan (parser.c): every byte that is not body data, in
     * RFC 9112's lines, carried across feeds. */
    const char *scan_from;   /* first byte of this feed not scanned yet */
    unsigned char line;      /* which line the scan is in (parser.c) */
    bool cr;                 /* the last byte scanned was CR: LF must follow */
    bool chunk_ext;          /* chunk-size line: in its extensions */
    bool chunk_nonzero;      /* chunk-size line: the size is not 0 */
    unsigned char spaces;    /* request line: SPs so far */
    size_t line_len;         /* bytes of the current line, CRLF excluded */
    size_t part_start;       /* request line: where the current part starts */

    int error_status;        /* set when feed returns ERROR */
    const char *error_code;  /* API.md error code, static */
    const char *error_message; /* static */
};

void kiln_parser_init(struct kiln_parser *p, const struct kiln_parser_limits *limits);
/* Bind a fresh request (its arena set) for the next bytes. */
void kiln_parser_begin(struct kiln_parser *p, struct kiln_req *req);
/*
 * Feed bytes. *consumed is how many belong to this request (all of them for
 * MORE; the rest, after DONE, starts the next request).
 */
enum kiln_parse_result kiln_parser_feed(struct kiln_parser *p, const char *data,
                                        size_t len, size_t *consumed);

#endif
