/*
 * The Lambda Runtime API (docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html),
 * version 2018-06-01, over core/http_client.h:
 *
 *   GET  /2018-06-01/runtime/invocation/next          → event, request id
 *   POST /2018-06-01/runtime/invocation/<id>/response
 *   POST /2018-06-01/runtime/invocation/<id>/error    {"errorMessage","errorType"}
 *   POST /2018-06-01/runtime/init/error               (configuration problems)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/err.h"
#include "core/http_client.h"
#include "rotate.h"

#define API_VERSION "2018-06-01"
/* The next-invocation call is a long poll: Lambda answers it when there is
 * an event, which may be much later (the environment is frozen meanwhile).
 * AWS: "do not set a timeout on the GET call". ~49 days is as good as none. */
#define NO_TIMEOUT_MS 0xFFFFFFFFu
#define MAX_EVENT (1u << 20)

int rt_next(const char *api, struct rt_invocation *inv, char *err, size_t errcap)
{
    char url[512];
    memset(inv, 0, sizeof *inv);
    kiln_buf_init(&inv->event, MAX_EVENT + 1);
    snprintf(url, sizeof url, "http://%s/" API_VERSION "/runtime/invocation/next", api);
    struct kiln_http_request req = {
        .url = url, .method = "GET", .timeout_ms = NO_TIMEOUT_MS, .max_body = MAX_EVENT,
    };
    struct kiln_http_response res;
    int rc = kiln_http_fetch(&req, &res);
    if (rc) {
        snprintf(err, errcap, "runtime API next: %s", res.error);
        kiln_http_response_free(&res);
        return rc;
    }
    if (res.status != 200 ||
        !kiln_http_response_header(&res, "Lambda-Runtime-Aws-Request-Id", inv->request_id,
                                   sizeof inv->request_id) ||
        !inv->request_id[0]) {
        snprintf(err, errcap, "runtime API next answered %ld%s", res.status,
                 res.status == 200 ? " without Lambda-Runtime-Aws-Request-Id" : "");
        kiln_http_response_free(&res);
        return KILN_EPROTO;
    }
    /* It goes into URLs: a UUID in practice; refuse anything else. */
    for (const char *c = inv->request_id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.')) {
            snprintf(err, errcap, "runtime API next: unexpected characters in the request id");
            kiln_http_response_free(&res);
            return KILN_EPROTO;
        }
    char deadline[32];
    if (kiln_http_response_header(&res, "Lambda-Runtime-Deadline-Ms", deadline, sizeof deadline))
        inv->deadline_ms = strtoull(deadline, NULL, 10);
    kiln_buf_append(&inv->event, res.body.p ? res.body.p : "", res.body.len);
    kiln_buf_append(&inv->event, "", 1);
    inv->event.len--;
    kiln_http_response_free(&res);
    return 0;
}

static int post(const char *url, const char *body, const char *error_type, char *err,
                size_t errcap)
{
    char hdr[128];
    const char *hdrs[1];
    size_t nh = 0;
    if (error_type) {
        snprintf(hdr, sizeof hdr, "Lambda-Runtime-Function-Error-Type: %s", error_type);
        hdrs[nh++] = hdr;
    }
    struct kiln_http_request req = {
        .url = url, .method = "POST", .body = body, .body_len = strlen(body),
        .content_type = "application/json", .headers = hdrs, .nheaders = nh,
        .timeout_ms = 10000,
    };
    struct kiln_http_response res;
    int rc = kiln_http_fetch(&req, &res);
    if (rc)
        snprintf(err, errcap, "runtime API: %s", res.error);
    else if (res.status != 202 && res.status != 200) {
        snprintf(err, errcap, "runtime API answered %ld to %s", res.status, url);
        rc = KILN_EPROTO;
    }
    kiln_http_response_free(&res);
    return rc;
}

int rt_respond(const char *api, const char *request_id, const char *json, char *err,
               size_t errcap)
{
    char url[512];
    snprintf(url, sizeof url, "http://%s/" API_VERSION "/runtime/invocation/%s/response", api,
             request_id);
    return post(url, json, NULL, err, errcap);
}

static char *error_body(const struct rot_error *e)
{
    json_t *o = json_pack("{s:s, s:s}", "errorMessage", e->message, "errorType", e->type);
    if (!o)   /* not UTF-8: say so rather than nothing */
        o = json_pack("{s:s, s:s}", "errorMessage", "(error text not UTF-8)", "errorType",
                      e->type);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        kiln_fatal("out of memory");
    return s;
}

int rt_error(const char *api, const char *request_id, const struct rot_error *e, char *err,
             size_t errcap)
{
    char url[512];
    snprintf(url, sizeof url, "http://%s/" API_VERSION "/runtime/invocation/%s/error", api,
             request_id);
    char *body = error_body(e);
    int rc = post(url, body, e->type, err, errcap);
    free(body);
    return rc;
}

int rt_init_error(const char *api, const struct rot_error *e, char *err, size_t errcap)
{
    char url[512];
    snprintf(url, sizeof url, "http://%s/" API_VERSION "/runtime/init/error", api);
    char *body = error_body(e);
    int rc = post(url, body, e->type, err, errcap);
    free(body);
    return rc;
}

void rt_invocation_free(struct rt_invocation *inv)
{
    kiln_buf_free(&inv->event);
}
