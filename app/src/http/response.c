/* Response building and serialization; see response.h. */
#include "http/response.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

const char *kiln_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}

static const kiln_str json_content_type = KILN_STR("application/json; charset=utf-8");

void kiln_res_header(struct kiln_res *res, const char *name, const char *value)
{
    if (res->nheaders == KILN_RES_MAX_HEADERS)
        return;
    res->headers[res->nheaders].name = kiln_str_c(name);
    res->headers[res->nheaders].value = kiln_str_c(value);
    res->nheaders++;
}

void kiln_res_json_text(struct kiln_res *res, int status, kiln_str json)
{
    res->status = status;
    res->content_type = json_content_type;
    res->body = json;
}

void kiln_res_json(struct kiln_req *req, struct kiln_res *res, int status, json_t *obj)
{
    if (!obj) {
        kiln_res_error(req, res, 500, "internal_error", "Internal server error", NULL);
        return;
    }
    size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    char *p = kiln_arena_alloc(req->arena, n ? n : 1);
    if (n)
        json_dumpb(obj, p, n, JSON_COMPACT);
    json_decref(obj);
    kiln_res_json_text(res, status, (kiln_str){ p, n });
}

void kiln_res_error(struct kiln_req *req, struct kiln_res *res, int status,
                    const char *code, const char *message, json_t *details)
{
    kiln_buf b;
    /* Built by hand, not with jansson: this path also serves "out of memory
     * for a JSON object" and must not depend on it. */
    kiln_buf_init(&b, 64 * 1024);
    kiln_buf_append_c(&b, "{\"error\":\"");
    kiln_buf_append_json_str(&b, message, strlen(message));
    kiln_buf_append_c(&b, "\",\"code\":\"");
    kiln_buf_append_json_str(&b, code, strlen(code));
    kiln_buf_append_c(&b, "\",\"message\":\"");
    kiln_buf_append_json_str(&b, message, strlen(message));
    kiln_buf_append_c(&b, "\",\"request_id\":\"");
    kiln_buf_append_json_str(&b, req->request_id, req->request_id_len);
    kiln_buf_append_c(&b, "\"");
    if (details) {
        char *d = json_dumps(details, JSON_COMPACT);
        size_t mark = b.len;
        /* Key and value go in together or not at all: half is not JSON. */
        if (d && (kiln_buf_append_c(&b, ",\"details\":") || kiln_buf_append_c(&b, d)))
            b.len = mark;
        free(d);
        json_decref(details);
    }
    kiln_buf_append_c(&b, "}");
    char *p = kiln_arena_strndup(req->arena, b.p ? b.p : "{}", b.p ? b.len : 2);
    kiln_res_json_text(res, status, (kiln_str){ p, b.p ? b.len : 2 });
    kiln_buf_free(&b);
}

/* The table behind kiln_res_fail (http/response.h); an error not listed
 * is a bug. */
static const struct {
    int err;
    int status;
    const char *code, *message; /* message NULL: "<dependency> unavailable" */
} fail_map[] = {
    { KILN_EUNAVAILABLE, 503, "service_unavailable", NULL },
    { KILN_ETIMEDOUT, 503, "service_unavailable", NULL },
    { KILN_ECLOSED, 503, "service_unavailable", NULL },
    { KILN_EIO, 503, "service_unavailable", NULL },
    { KILN_ETLS, 503, "service_unavailable", NULL },
    { KILN_EPROTO, 503, "service_unavailable", NULL },
    { KILN_EAUTH, 503, "service_unavailable", NULL },
    { KILN_EBUSY, 503, "service_unavailable", NULL },
    { KILN_ENOTFOUND, 404, "not_found", "Not found" },
    { KILN_ECONFLICT, 409, "conflict", "Conflict" },
    { KILN_ETOOBIG, 413, "payload_too_large", "Payload too large" },
    { KILN_EINVAL, 422, "validation_failed", "Validation failed" },
};

int kiln_err_status(int err)
{
    for (size_t i = 0; i < sizeof fail_map / sizeof fail_map[0]; i++)
        if (fail_map[i].err == err)
            return fail_map[i].status;
    return 500;
}

void kiln_res_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *dependency,
                   const char *what, const char *detail)
{
    for (size_t i = 0; i < sizeof fail_map / sizeof fail_map[0]; i++) {
        if (fail_map[i].err != err)
            continue;
        if (fail_map[i].status == 503) {
            kiln_log_outage(dependency, detail ? detail : kiln_err_message(err));
            kiln_res_error(req, res, 503, fail_map[i].code,
                           kiln_arena_sprintf(req->arena, "%s unavailable", dependency), NULL);
            kiln_res_header(res, "retry-after", "1");
        } else {
            kiln_res_error(req, res, fail_map[i].status, fail_map[i].code,
                           fail_map[i].message, NULL);
        }
        return;
    }
    /* A bug: loud, every time, with what the driver said (never parameter
     * values: drivers do not put them in their errors). */
    kiln_log(KILN_LOG_ERROR, "internal error", "dependency", dependency, "what", what, "code",
             kiln_err_name(err), "error", detail, "request_id", req->request_id, "user_id",
             req->user_id, NULL);
    kiln_res_error(req, res, 500, "internal_error", "Internal server error", NULL);
}

static bool has_body(const struct kiln_req *req, int status)
{
    return req->method != KILN_HEAD && status != 204 && status != 304 &&
           !(status >= 100 && status < 200);
}

int kiln_res_serialize(const struct kiln_req *req, const struct kiln_res *res,
                       bool keep_alive, const char *date, kiln_buf *out)
{
    size_t start = out->len;
    int err = 0;
    int status = res->status ? res->status : 500;

    err |= kiln_buf_append_c(out, "HTTP/1.1 ");
    err |= kiln_buf_append_u64(out, (uint64_t)status);
    err |= kiln_buf_append_c(out, " ");
    err |= kiln_buf_append_c(out, kiln_status_reason(status));
    if (res->content_type.len) {
        err |= kiln_buf_append_c(out, "\r\ncontent-type: ");
        err |= kiln_buf_append(out, res->content_type.p, res->content_type.len);
    }
    if (res->stream) {
        /* A stream's body has no length: chunked on HTTP/1.1 (keep_alive
         * says the connection could have been reused), else it ends at
         * the close. */
        if (keep_alive)
            err |= kiln_buf_append_c(out, "\r\ntransfer-encoding: chunked");
    } else if (status != 204 && status != 304) {
        /* HEAD carries the length GET would have (RFC 9110 9.3.2). */
        err |= kiln_buf_append_c(out, "\r\ncontent-length: ");
        err |= kiln_buf_append_u64(out, res->body.len);
    }
    err |= kiln_buf_append_c(out, "\r\nx-request-id: ");
    err |= kiln_buf_append(out, req->request_id, req->request_id_len);
    err |= kiln_buf_append_c(out, "\r\nx-content-type-options: nosniff\r\ndate: ");
    err |= kiln_buf_append(out, date, KILN_HTTP_DATE_LEN);
    if (!keep_alive || (res->stream && req->http_minor == 0))
        err |= kiln_buf_append_c(out, "\r\nconnection: close");
    else if (req->http_minor == 0)
        err |= kiln_buf_append_c(out, "\r\nconnection: keep-alive");
    for (size_t i = 0; i < res->nheaders; i++) {
        err |= kiln_buf_append_c(out, "\r\n");
        err |= kiln_buf_append(out, res->headers[i].name.p, res->headers[i].name.len);
        err |= kiln_buf_append_c(out, ": ");
        err |= kiln_buf_append(out, res->headers[i].value.p, res->headers[i].value.len);
    }
    err |= kiln_buf_append_c(out, "\r\n\r\n");
    if (has_body(req, status) && !res->stream)
        err |= kiln_buf_append(out, res->body.p, res->body.len);
    if (err)
        out->len = start;
    return err ? -1 : 0;
}
