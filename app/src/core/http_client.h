/*
 * Outbound HTTP(S) on libcurl: one blocking request per call, for worker
 * threads (OpenID discovery, JWKS, token exchange). Every request is bounded
 * in time (connect and total timeouts) and in size (a cap on the response
 * body, enforced while it streams in), verifies the TLS peer and host name,
 * speaks only http and https, and never follows a redirect: a provider that
 * redirects its token endpoint is misconfigured, and following would hand
 * the form (which holds the client secret) to another host.
 *
 * Each call uses its own easy handle, so nothing is shared between threads
 * but libcurl's global state, initialised once (kiln_http_client_init).
 * Logins are rare next to API traffic; a connection cache is not worth the
 * shared state.
 *
 * Threads: kiln_http_client_init on the main thread before workers start
 * (kiln_http_fetch also calls it, through pthread_once); kiln_http_fetch
 * from any thread.
 */
#ifndef KILN_CORE_HTTP_CLIENT_H
#define KILN_CORE_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define KILN_HTTP_CONNECT_TIMEOUT_MS 3000
#define KILN_HTTP_TIMEOUT_MS 5000
#define KILN_HTTP_MAX_BODY (1u << 20)

struct kiln_http_request {
    const char *url;             /* http:// or https:// */
    /* POST body, sent as application/x-www-form-urlencoded; NULL: GET. */
    const char *form;
    size_t form_len;
    /* The whole Authorization header value ("Basic …"), or NULL. */
    const char *authorization;
    /* "GET", "POST", "PUT", "HEAD", "DELETE"…; NULL: POST with a form or
     * body, GET otherwise. HEAD reads no body. */
    const char *method;
    /* Any other body (AWS JSON, XML), sent with content_type; used when
     * form is NULL. body may be NULL with body_len 0 for an empty body. */
    const void *body;
    size_t body_len;
    const char *content_type;
    /* Further request headers, each "Name: value" (signed AWS headers). */
    const char *const *headers;
    size_t nheaders;
    unsigned connect_timeout_ms; /* 0: KILN_HTTP_CONNECT_TIMEOUT_MS */
    unsigned timeout_ms;         /* whole transfer; 0: KILN_HTTP_TIMEOUT_MS */
    size_t max_body;             /* 0: KILN_HTTP_MAX_BODY */
    /*
     * For addresses users choose (webhooks; core/egress.h): the
     * "host:port:address" pin from kiln_egress_resolve, or NULL. The
     * connection then goes to that address only: libcurl takes it as a
     * CURLOPT_RESOLVE entry instead of looking the name up again (which a
     * rebinding name could answer otherwise), a socket to any other address
     * is refused before it connects, and no proxy is used, whatever the
     * environment says (a proxy would make its own lookup). A malformed pin
     * fails the request (KILN_EINVAL).
     */
    const char *resolve_pin;
    bool https_only;             /* https:// only (KILN_EINVAL otherwise) */
    /* A body over max_body is cut there and the request still succeeds
     * (res->truncated), instead of failing with KILN_ETOOBIG: for answers
     * that are only logged, where an endless body must not be read forever
     * nor turn a 200 into a failure. */
    bool truncate_body;
    /*
     * Keep the connection for this thread's next keep_alive request to the
     * same host and port (one handle per thread, reset between requests):
     * no TCP and TLS handshake per request to an endpoint called often.
     * Only with resolve_pin, so that an address kept in the handle's cache
     * is always one that was checked; a kept connection went to such an
     * address too.
     */
    bool keep_alive;
};

struct kiln_http_response {
    long status;                 /* HTTP status, 0 when none came back */
    /* The body, NUL-terminated (the NUL not counted in body.len); owned,
     * released by kiln_http_response_free. */
    kiln_buf body;
    /* The response's header lines ("name: value\r\n" each, as received,
     * final response only), NUL-terminated; empty when none. Read them
     * with kiln_http_response_header. */
    kiln_buf headers;
    /* The body stopped at max_body (truncate_body only). */
    bool truncated;
    /* How long the request took (monotonic clock), from the name lookup
     * to the last byte read or the failure, in microseconds; 0 when it
     * never started. */
    long long elapsed_us;
    /* Why the request failed, for logs ("" on success); never holds the
     * request body. */
    char error[256];
};

/* curl_global_init, once per process. 0 or KILN_EIO. */
int kiln_http_client_init(void);
/*
 * Trust this PEM bundle for every request instead of libcurl's built-in
 * path (Debian's /etc/ssl/certs/ca-certificates.crt), for systems that keep
 * theirs elsewhere (Amazon Linux: /etc/pki/tls/certs/ca-bundle.crt). Call at
 * start, before any request; the string is copied. NULL: the default.
 */
void kiln_http_client_set_ca_file(const char *path);

/*
 * Perform req. Returns 0 when a response arrived, whatever its status (the
 * caller judges res->status), or a negative kiln_err when none did:
 * KILN_EINVAL (bad URL or scheme), KILN_ETIMEDOUT, KILN_ETLS, KILN_ETOOBIG
 * (body over the cap) or KILN_EIO (connection refused, DNS, protocol); then
 * res->error says why. res must be released with kiln_http_response_free
 * in every case.
 */
int kiln_http_fetch(const struct kiln_http_request *req, struct kiln_http_response *res);
void kiln_http_response_free(struct kiln_http_response *res);
/* A response header's value (case-blind name, surrounding blanks trimmed),
 * copied into out (cap bytes, NUL-terminated). false when absent or longer. */
bool kiln_http_response_header(const struct kiln_http_response *res, const char *name,
                               char *out, size_t cap);

#endif
