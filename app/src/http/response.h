/*
 * Responses. A handler fills a struct kiln_res through these helpers; the
 * server serializes it (kiln_res_serialize) with the headers every response
 * carries: content-type, content-length, x-request-id, date, connection.
 * Every error leaves through kiln_res_error so that all of them share the
 * envelope of API.md. Same threading as the request it answers.
 */
#ifndef KILN_HTTP_RESPONSE_H
#define KILN_HTTP_RESPONSE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/buf.h"
#include "http/request.h"

#define KILN_RES_MAX_HEADERS 16

struct kiln_res {
    int status;               /* 0 until a helper sets it */
    kiln_str content_type;
    kiln_str body;            /* arena or static memory */
    struct kiln_header headers[KILN_RES_MAX_HEADERS];
    size_t nheaders;
    bool close;               /* close the connection after this response */
    /* A long-lived body (http/stream.h, kiln_res_stream); NULL: none. */
    const struct kiln_stream_ops *stream;
    void *stream_arg;
    unsigned stream_heartbeat_ms;
};

/* Reason phrase for a status code ("Unknown" for codes we never send). */
const char *kiln_status_reason(int status);

/* Add a header (name lower-case, both static or arena). Silently ignored
 * past KILN_RES_MAX_HEADERS, which only a programming error reaches. */
void kiln_res_header(struct kiln_res *res, const char *name, const char *value);

/* A JSON body that is already text (static or arena). */
void kiln_res_json_text(struct kiln_res *res, int status, kiln_str json);
/* Serialize obj into the arena and release the reference (obj may be NULL:
 * then 500). */
void kiln_res_json(struct kiln_req *req, struct kiln_res *res, int status, json_t *obj);
/*
 * The error envelope: {"error": message, "code", "message", "request_id",
 * "details"?}. details (may be NULL) is consumed.
 */
void kiln_res_error(struct kiln_req *req, struct kiln_res *res, int status,
                    const char *code, const char *message, json_t *details);

/*
 * THE map from errors to answers: every kiln_err a handler gets from a store
 * or a service becomes its answer here, and nowhere else.
 *
 *   the dependency failed (EUNAVAILABLE, ETIMEDOUT, ECLOSED, EIO, ETLS,
 *   EPROTO, EAUTH, EBUSY)        503 service_unavailable, "<Dependency>
 *                                unavailable", retry-after: 1, and
 *                                kiln_log_outage (one line per dependency
 *                                per second, with a count)
 *   ENOTFOUND                    404 not_found
 *   ECONFLICT                    409 conflict
 *   ETOOBIG                      413 payload_too_large
 *   EINVAL                       422 validation_failed
 *   anything else (EDB, a bug)   500 internal_error, and an error line
 *                                naming what failed and why
 *
 * dependency names what was called, capitalised, static ("Database",
 * "Session store", "File storage"); detail is the driver's or service's
 * error text for the log (never shown to the client; NULL allowed); what
 * says which operation failed ("notes create"), for the log.
 */
void kiln_res_fail(struct kiln_req *req, struct kiln_res *res, int err, const char *dependency,
                   const char *what, const char *detail);
/* The status kiln_res_fail answers err with (500 for a bug). */
int kiln_err_status(int err);

/*
 * Append the whole response to out: status line, headers, body (not for HEAD
 * or 204/304). keep_alive false adds "connection: close"; a keep-alive
 * HTTP/1.0 request gets "connection: keep-alive". date is the cached
 * IMF-fixdate of the current second.
 */
int kiln_res_serialize(const struct kiln_req *req, const struct kiln_res *res,
                       bool keep_alive, const char *date, kiln_buf *out);

#endif
